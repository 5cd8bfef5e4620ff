// accelc CUDA emulation: what a CUTLASS GEMM instantiation (accelc_cutlass_gemm.cuh) computes, on the host.
//
// D[b] = act(alpha * A[b] @ B[b] + beta * C[b]) with fp32 accumulation, operands read through the
// instantiation's layouts, leading dimensions and batch strides exactly as GemmOf::arguments passes them to
// CUTLASS. Before computing, it refuses what the GPU would refuse: the extents CUTLASS's can_implement
// rejects for the instantiation's alignments, and operand pointers, leading dimensions or batch strides
// that would make its vector copies misaligned (a fault on the GPU).
//
// The workspace: a single (unbatched) GEMM asks for 256 bytes per 128x128 output tile (CUTLASS's
// stream-K sizes it from the GPU; any non-zero size exercises the same path: the model sizes it at
// create time through accelc_gemm_<key>_workspace) and refuses to run without it.
#pragma once
#include <cmath>
#include <type_traits>
#include <vector>

#include "accelc_cuda_emulation.h"
#include "accelc_gemm_args.h"

namespace accelc_emu {

enum class Act { Identity, ReLu, GELU, GELU_taylor, Sigmoid, Tanh, SiLu };

template <Act A> inline float activate(float x) {
  switch (A) {
    case Act::Identity: return x;
    case Act::ReLu: return x > 0.0f ? x : 0.0f;
    case Act::GELU: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Act::GELU_taylor:
      return 0.5f * x * (1.0f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case Act::Sigmoid: return 1.0f / (1.0f + std::exp(-x));
    case Act::Tanh: return std::tanh(x);
    case Act::SiLu: return x / (1.0f + std::exp(-x));
  }
  return x;
}

inline float tf32(float x) {   // the tensor cores' TF32 operand: 10 explicit mantissa bits, nearest even
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) != 0x7F800000u) u = (u + 0xFFFu + ((u >> 13) & 1u)) & ~0x1FFFu;
  std::memcpy(&x, &u, 4);
  return x;
}

inline bool misaligned(const void* p, long long ld, long long batch_stride, int align, size_t item) {
  const long long bytes = (long long)align * (long long)item;
  return (reinterpret_cast<uintptr_t>(p) % bytes) != 0 || ld % align != 0 || batch_stride % align != 0;
}

inline size_t gemm_workspace(const AccelcGemmArgs& p) {
  return p.batch > 1 ? 0 : size_t(256) * size_t((p.m + 127) / 128) * size_t((p.n + 127) / 128);
}

// acc = A[b][i] . B[b][:, j] in fp32 for every output element, handed to epi(b, i, j, acc)
template <typename TA, bool ColA, typename TB, bool ColB, bool TF32, typename Epilogue>
void multiply(const AccelcGemmArgs& p, Epilogue epi) {
  const long long M = p.m, N = p.n, K = p.k;
  const TA* a = static_cast<const TA*>(p.a);
  const TB* b = static_cast<const TB*>(p.b);
  std::vector<float> bt(size_t(K) * size_t(N));   // B[k][j] widened once per batch, as [j][k]
  std::vector<float> row(K);
  for (long long z = 0; z < p.batch; ++z) {
    const TA* az = a + z * p.batch_stride_a;
    const TB* bz = b + z * p.batch_stride_b;
    for (long long k = 0; k < K; ++k)
      for (long long j = 0; j < N; ++j) {
        float v = float(bz[ColB ? k + j * p.ldb : k * p.ldb + j]);
        bt[size_t(j) * K + k] = TF32 ? tf32(v) : v;
      }
    for (long long i = 0; i < M; ++i) {
      for (long long k = 0; k < K; ++k) {
        float v = float(az[ColA ? i + k * p.lda : i * p.lda + k]);
        row[k] = TF32 ? tf32(v) : v;
      }
      for (long long j = 0; j < N; ++j) {
        const float* col = &bt[size_t(j) * K];
        float acc = 0.0f;
        for (long long k = 0; k < K; ++k) acc += row[k] * col[k];
        epi(z, i, j, acc);
      }
    }
  }
}

template <typename TA, bool ColA, typename TB, bool ColB, typename TC, Act A, int AlignA, int AlignB, int AlignC,
          bool TF32>
cudaError_t gemm(const AccelcGemmArgs& p, const char* name) {
  const long long M = p.m, N = p.n, K = p.k;
  const size_t need = gemm_workspace(p);
  if (need > p.workspace_bytes || (need && !p.workspace)) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: needs %zu bytes of workspace, got %zu at %p", name, need,
                  p.workspace_bytes, p.workspace);
    return cudaErrorInvalidValue;
  }
  // CUTLASS 2.x GemmUniversal::can_implement: the contiguous extent of each operand divides its alignment
  if ((ColA ? M : K) % AlignA || (ColB ? K : N) % AlignB || N % AlignC) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: extents m=%lld n=%lld k=%lld do not fit its alignments "
                  "%d/%d/%d (CUTLASS can_implement fails)", name, M, N, K, AlignA, AlignB, AlignC);
    return cudaErrorInvalidValue;
  }
  if (misaligned(p.a, p.lda, p.batch_stride_a, AlignA, sizeof(TA)) ||
      misaligned(p.b, p.ldb, p.batch_stride_b, AlignB, sizeof(TB)) ||
      misaligned(p.d, p.ldd, p.batch_stride_d, AlignC, sizeof(TC)) ||
      (p.c && misaligned(p.c, p.ldc, p.batch_stride_c, AlignC, sizeof(TC)))) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: an operand pointer, leading dimension or batch stride "
                  "is not a multiple of its vector width (a misaligned access on the GPU)", name);
    return cudaErrorMisalignedAddress;
  }
  const TC* c = static_cast<const TC*>(p.c);
  TC* d = static_cast<TC*>(p.d);
  multiply<TA, ColA, TB, ColB, TF32>(p, [&](long long z, long long i, long long j, float acc) {
    float v = p.alpha * acc;
    if (c) v += p.beta * float(c[z * p.batch_stride_c + i * p.ldc + j]);
    d[z * p.batch_stride_d + i * p.ldd + j] = TC(activate<A>(v));
  });
  return cudaSuccess;
}

// What GemmSm90Of (accelc_cutlass_gemm_sm90.cuh) computes: D = act(beta * C + (alpha * acc + bias[j])), each
// step one fused multiply-add as in CUTLASS's LinCombPerColBiasEltAct, for one problem whose operand rows
// start on 16 bytes (TMA refuses anything else).
template <typename TA, bool ColA, bool ColB, typename TC, typename TD, Act A>
cudaError_t gemm_sm90(const AccelcGemmArgs& p, const char* name) {
  const size_t need = gemm_workspace(p);
  if (p.batch != 1 || (std::is_void<TC>::value && p.c) || need > p.workspace_bytes || (need && !p.workspace)) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: a batch of %d, an unexpected C or too little workspace "
                  "(%zu of %zu bytes)", name, p.batch, p.workspace_bytes, need);
    return cudaErrorInvalidValue;
  }
  constexpr size_t kC = sizeof(typename std::conditional<std::is_void<TC>::value, TD, TC>::type);
  if (misaligned(p.a, p.lda, 0, 16 / sizeof(TA), sizeof(TA)) || misaligned(p.b, p.ldb, 0, 16 / sizeof(TA), sizeof(TA)) ||
      misaligned(p.d, p.ldd, 0, 16 / sizeof(TD), sizeof(TD)) || (p.c && misaligned(p.c, p.ldc, 0, 16 / kC, kC)) ||
      (p.bias && misaligned(p.bias, 0, 0, 4, sizeof(float)))) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: an operand does not start its rows on 16 bytes (TMA "
                  "cannot describe it)", name);
    return cudaErrorMisalignedAddress;
  }
  TD* d = static_cast<TD*>(p.d);
  multiply<TA, ColA, TA, ColB, false>(p, [&](long long, long long i, long long j, float acc) {
    float v = std::fma(p.alpha, acc, p.bias ? p.bias[j] : 0.0f);
    if constexpr (!std::is_void<TC>::value) {
      if (p.c) v = std::fma(p.beta, float(static_cast<const TC*>(p.c)[i * p.ldc + j]), v);
    }
    d[i * p.ldd + j] = TD(activate<A>(v));
  });
  return cudaSuccess;
}

// What GemmBiasOf (accelc_cutlass_gemm.cuh, CUTLASS 2.x with the broadcast epilogue) computes: the arithmetic
// of gemm_sm90, D = act(beta * C + (alpha * acc + bias[j])) with C in D's type, under CUTLASS 2.x's rules:
// extents and pointers fit the alignments, the bias row is read in vectors of AlignC floats, one problem.
template <typename TA, bool ColA, bool ColB, typename TD, Act A, int AlignA, int AlignB, int AlignC>
cudaError_t gemm_bias(const AccelcGemmArgs& p, const char* name) {
  const size_t need = gemm_workspace(p);
  if (p.batch != 1 || !p.bias || need > p.workspace_bytes || (need && !p.workspace)) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: a batch of %d, no bias row or too little workspace "
                  "(%zu of %zu bytes)", name, p.batch, p.workspace_bytes, need);
    return cudaErrorInvalidValue;
  }
  if ((ColA ? p.m : p.k) % AlignA || (ColB ? p.k : p.n) % AlignB || p.n % AlignC) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: extents m=%d n=%d k=%d do not fit its alignments %d/%d/%d "
                  "(CUTLASS can_implement fails)", name, p.m, p.n, p.k, AlignA, AlignB, AlignC);
    return cudaErrorInvalidValue;
  }
  if (misaligned(p.a, p.lda, 0, AlignA, sizeof(TA)) || misaligned(p.b, p.ldb, 0, AlignB, sizeof(TA)) ||
      misaligned(p.d, p.ldd, 0, AlignC, sizeof(TD)) || (p.c && misaligned(p.c, p.ldc, 0, AlignC, sizeof(TD))) ||
      misaligned(p.bias, 0, 0, AlignC, sizeof(float))) {
    std::snprintf(g_message, sizeof g_message, "GEMM %s: an operand pointer, leading dimension or the bias row is "
                  "not a multiple of its vector width (a misaligned access on the GPU)", name);
    return cudaErrorMisalignedAddress;
  }
  TD* d = static_cast<TD*>(p.d);
  const TD* c = static_cast<const TD*>(p.c);
  multiply<TA, ColA, TA, ColB, false>(p, [&](long long, long long i, long long j, float acc) {
    float v = std::fma(p.alpha, acc, p.bias[j]);
    if (c && p.beta != 0.0f) v = std::fma(p.beta, float(c[i * p.ldc + j]), v);
    d[i * p.ldd + j] = TD(activate<A>(v));
  });
  return cudaSuccess;
}

}  // namespace accelc_emu
