// C entry points over one variant of the kernel library, for tests/test_kernels_cpu.py (ctypes).
// Compiled together with accelc_gemm.cpp and accelc_conv.cpp into one shared library per variant,
// with the variant's flags; the epilogue is passed flat so that Python needs no struct layout.
#include <omp.h>

#include "../accelc_gemm.h"

namespace {

ACCELC_NS::Epilogue make_epilogue(const float* f /*alpha, beta, act_alpha, act_beta*/,
                                  const int* i /*bias_mode, act, ldr*/, const float* bias, const float* residual) {
  ACCELC_NS::Epilogue ep;
  ep.alpha = f[0];
  ep.beta = f[1];
  ep.act_alpha = f[2];
  ep.act_beta = f[3];
  ep.bias_mode = i[0];
  ep.act = static_cast<ACCELC_NS::Act>(i[1]);
  ep.ldr = i[2];
  ep.bias = bias;
  ep.residual = residual;
  return ep;
}

// The work split the f32 GEMM and the NHWC convolutions get (accelc_test_set_blocking); zero = planned.
ACCELC_NS::Blocking g_blocking;

ACCELC_NS::Conv2dShape make_shape(const int* v) {
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
}

}  // namespace

extern "C" {

void accelc_test_set_threads(int n) { omp_set_num_threads(n); }

void accelc_test_set_blocking(int rows, int panels, int shared) {
  g_blocking.rows = rows;
  g_blocking.panels = panels;
  g_blocking.shared = shared;
}

int accelc_test_amx_init(const char** reason) { return ACCELC_NS::amx_init(reason) ? 1 : 0; }

size_t accelc_test_packed_b_elems(int K, int N, int bf16) {
  return bf16 ? ACCELC_NS::packed_b_elems_bf16(K, N) : ACCELC_NS::packed_b_elems_f32(K, N);
}

void accelc_test_pack_b(int K, int N, const float* B, int ldb, int trans, int bf16, void* Bp) {
  if (bf16) ACCELC_NS::pack_b_bf16(K, N, B, ldb, trans != 0, static_cast<uint16_t*>(Bp));
  else ACCELC_NS::pack_b_f32(K, N, B, ldb, trans != 0, static_cast<float*>(Bp));
}

// kind: 0 gemm_f32, 1 gemm_bf16 (fp32 A), 2 gemm_bf16_a16 (bf16-bits A).
void accelc_test_gemm(int kind, int M, int N, int K, const void* A, int lda, const void* Bp, float* C, int ldc,
                      const float* epi_f, const int* epi_i, const float* bias, const float* residual) {
  const ACCELC_NS::Epilogue ep = make_epilogue(epi_f, epi_i, bias, residual);
  if (kind == 0)
    ACCELC_NS::gemm_f32(M, N, K, static_cast<const float*>(A), lda, static_cast<const float*>(Bp), C, ldc, ep,
                        g_blocking);
  else if (kind == 1)
    ACCELC_NS::gemm_bf16(M, N, K, static_cast<const float*>(A), lda, static_cast<const uint16_t*>(Bp), C, ldc, ep);
  else
    ACCELC_NS::gemm_bf16_a16(M, N, K, static_cast<const uint16_t*>(A), lda, static_cast<const uint16_t*>(Bp), C,
                             ldc, ep);
}

size_t accelc_test_conv2d_scratch_elems(const int* shape, int bf16) {
  return ACCELC_NS::conv2d_scratch_elems(make_shape(shape), bf16 != 0);
}

void accelc_test_conv2d(int bf16, const int* shape, const float* x, const void* w, float* y, const float* epi_f,
                        const int* epi_i, const float* bias, const float* residual, void* scratch) {
  const ACCELC_NS::Epilogue ep = make_epilogue(epi_f, epi_i, bias, residual);
  const ACCELC_NS::Conv2dShape s = make_shape(shape);
  if (bf16)
    ACCELC_NS::conv2d_bf16(s, x, static_cast<const uint16_t*>(w), y, ep, static_cast<uint16_t*>(scratch));
  else
    ACCELC_NS::conv2d_f32(s, x, static_cast<const float*>(w), y, ep, static_cast<float*>(scratch));
}

size_t accelc_test_conv_nhwc_packed_elems(const int* shape) {
  return ACCELC_NS::conv_nhwc_packed_elems(make_shape(shape));
}

void accelc_test_pack_conv_nhwc(const int* shape, const float* w, float* packed) {
  ACCELC_NS::pack_conv_nhwc_f32(make_shape(shape), w, packed);
}

void accelc_test_conv2d_nhwc(const int* shape, const float* x, const float* packed, float* y, const float* epi_f,
                             const int* epi_i, const float* bias, const float* residual) {
  ACCELC_NS::conv2d_nhwc_f32(make_shape(shape), x, packed, y, make_epilogue(epi_f, epi_i, bias, residual), g_blocking);
}

size_t accelc_test_winograd_packed_elems(int c, int k, int m) { return ACCELC_NS::winograd_packed_elems(c, k, m); }

int accelc_test_winograd_supported(const int* shape, int m) {
  return ACCELC_NS::winograd_supported(make_shape(shape), m) ? 1 : 0;
}

void accelc_test_conv2d_winograd(const int* shape, int m, const float* x, const float* packed, float* y,
                                 const float* epi_f, const int* epi_i, const float* bias, const float* residual) {
  ACCELC_NS::conv2d_winograd_nhwc_f32(make_shape(shape), m, x, packed, y, make_epilogue(epi_f, epi_i, bias, residual),
                                      g_blocking);
}

}  // extern "C"
