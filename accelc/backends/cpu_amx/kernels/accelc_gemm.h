// accelc cpu_amx kernel library: packed-B GEMM and NCHW convolution with a fused epilogue.
//
// Every kernel source (accelc_gemm.cpp, accelc_conv.cpp) is compiled once per ISA variant into its
// own namespace, and the variants are linked side by side into one model.so:
//
//   variant  namespace      defines                  flags
//   amx      accelc_amx     -DACCELC_VARIANT_AMX     -march=sapphirerapids
//   avx512   accelc_avx512  -DACCELC_VARIANT_AVX512  -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c
//   avx2     accelc_avx2    -DACCELC_VARIANT_AVX2    -mavx2 -mfma -mf16c
//
// all with -std=c++17 -DACCELC_NS=<namespace> -O3 -fopenmp -fPIC; the sources of a variant are
// accelc_gemm.cpp, accelc_conv.cpp, accelc_winograd.cpp and accelc_attention.cpp (the other files here are internal
// headers). Because the same source is compiled with different instruction sets and then linked
// into one library, the kernel sources define nothing outside ACCELC_NS and use no out-of-line C++
// library templates: a weak (COMDAT) symbol emitted by two variants would be merged by the linker
// and the AVX2 path could end up running AVX-512 code.
//
// Calling convention: the caller picks the variant (CPU feature check) before calling anything in
// it; no function here may be called on a CPU lacking the variant's ISA. The caller sets the thread
// count (omp_set_num_threads); every kernel parallelises with OpenMP over output tiles and never
// splits K, so results are bitwise independent of the thread count. Called from inside a parallel
// region, the GEMMs and packing routines run on the calling thread.
#pragma once

#include <cstddef>
#include <cstdint>

#ifndef ACCELC_NS
#error "compile the accelc kernels with -DACCELC_NS=accelc_<variant> (see accelc_gemm.h)"
#endif

namespace ACCELC_NS {

// Activation applied last by the epilogue; values match the IR's Activation kinds.
enum class Act : int { None = 0, Relu = 1, LeakyRelu = 2, Gelu = 3, GeluTanh = 4, Sigmoid = 5, Tanh = 6,
                       Silu = 7, Clip = 8 };

// y = act(alpha * acc + beta * bias + residual), applied while the accumulators are in registers.
struct Epilogue {
  float alpha = 1.f, beta = 1.f;
  const float* bias = nullptr;
  int bias_mode = 0;            // 0 none, 1 per column (bias[n]), 2 per row (bias[m]), 3 full M x N with ld = ldc
  const float* residual = nullptr;
  int ldr = 0;                  // residual[m * ldr + n]
  Act act = Act::None;
  float act_alpha = 0.f, act_beta = 0.f;   // LeakyRelu slope = act_alpha; Clip min = act_alpha, max = act_beta
};

// How one call splits its work into tasks; a zero field leaves that choice to the built-in plan
// (tiling.h, accelc_winograd.cpp). Every split gives the same bits: a task owns whole output elements
// and K is never split, so only the speed changes. The compiler's tuner (tuning.py) measures
// candidates per call site and bakes the fastest into model.cpp (accelc_tuning.h).
//   gemm_f32, conv2d_nhwc_f32: rows   = rows (output pixels) per task
//                              panels = 16-column weight panels per task (rounded up to the kernel's
//                                       panel grouping: 2 on AVX-512)
//   conv2d_winograd_nhwc_f32:  rows   = tiles per block
//                              shared = 1: all threads share one block of all tiles, 2: each thread
//                                       runs blocks of its own (see run_shared)
struct Blocking {
  int rows = 0, panels = 0, shared = 0;
};

// ---- packed B ---------------------------------------------------------------------------------
// The layouts are variant-independent, so one weights.bin serves every variant (packing.py writes
// the same bytes at compile time).
//  f32 : panels of 16 columns, N padded to a multiple of 16 with zeros:
//        Bp[(n/16)*K*16 + k*16 + n%16]
//  bf16: panels of 16 columns of VNNI pairs, K padded to Kp = multiple of 32, N to 16, zeros:
//        Bp[(n/16)*(Kp/2)*32 + (k/2)*32 + (n%16)*2 + k%2]   (bf16 bits, rounded to nearest even)
//        One 32-deep K block of a panel is exactly one AMX B tile (16 rows of 64 bytes), and one
//        64-byte row is one vdpbf16ps operand.
size_t packed_b_elems_f32(int K, int N);
size_t packed_b_elems_bf16(int K, int N);
// B[k*ldb + n], or B[n*ldb + k] when trans.
void pack_b_f32(int K, int N, const float* B, int ldb, bool trans, float* Bp);
void pack_b_bf16(int K, int N, const float* B, int ldb, bool trans, uint16_t* Bp);

// ---- GEMM -------------------------------------------------------------------------------------
// C[m*ldc + n] = epilogue(sum_k A[m*lda + k] * B[k, n]) with B packed as above. M, N, K >= 0, any
// values (no multiple-of requirements). C may not alias A, Bp, bias; it may alias the residual when
// ldr == ldc (each element's residual is read before the element is written).
void gemm_f32(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
              const Epilogue& ep, const Blocking& blk = Blocking());
// A rounded to bf16 (nearest even) on the fly, products of bf16 values, fp32 accumulation.
void gemm_bf16(int M, int N, int K, const float* A, int lda, const uint16_t* Bp, float* C, int ldc,
               const Epilogue& ep);
// A given as bf16 bits.
void gemm_bf16_a16(int M, int N, int K, const uint16_t* A, int lda, const uint16_t* Bp, float* C, int ldc,
                   const Epilogue& ep);

// ---- convolution ------------------------------------------------------------------------------
// NCHW, groups, dilation, arbitrary pads and strides; 1-D convolutions are 2-D ones with H = R = 1.
// Computed per image and group as a GEMM C[cout, pixel] = W[cout, ci*R*S] x im2col[ci*R*S, pixel],
// the im2col matrix written straight into packed-B layout (pixels are N) in `scratch`.
struct Conv2dShape {
  int N, C, H, W;        // input batch, channels, height, width
  int K, R, S;           // output channels, kernel height, kernel width
  int OH, OW;            // output height, width
  int stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups;
};
// Elements of `scratch` that conv2d_f32 (bf16 = false) or conv2d_bf16 (bf16 = true) needs.
size_t conv2d_scratch_elems(const Conv2dShape& s, bool bf16);
// w: [K][C/groups*R*S] row-major; y: [N][K][OH][OW]. Epilogue rows are output channels:
// bias_mode 2 = per output channel; residual is output-shaped per image ([K][OH*OW], ldr = OH*OW,
// the pointer given is the one of image 0, images follow each other densely).
void conv2d_f32(const Conv2dShape& s, const float* x, const float* w, float* y, const Epilogue& ep,
                float* scratch);
// w as bf16 bits; x rounded to bf16 (nearest even) while forming im2col; fp32 accumulation.
void conv2d_bf16(const Conv2dShape& s, const float* x, const uint16_t* w, float* y, const Epilogue& ep,
                 uint16_t* scratch);

// ---- NHWC convolution ---------------------------------------------------------------------------
// x: [N][H][W][C] and y: [N][OH][OW][K] (channels innermost); same Conv2dShape fields as above. Computed
// as an implicit GEMM: rows are the N*OH*OW output pixels of all images, columns the output channels of
// a group, k runs over (kernel tap, input channel); each pixel's A row for a tap is read in place from
// x (a tap in the padding reads zeros), so no im2col matrix is formed. Weights are packed once, at
// compile time, by pack_conv_nhwc_f32 (the same bytes packing.py writes):
//   general (not depthwise), Cg = C/groups, Mg = K/groups: group g occupies packed_b_elems_f32(R*S*Cg, Mg)
//     floats at offset g * that, holding pack_b_f32 of Wg[(r*S + s)*Cg + c][m] = w[g*Mg + m][c][r][s];
//   depthwise (Cg == 1 and Mg == 1): dense [R*S][K], wd[(r*S + s)*K + k] = w[k][0][r][s].
// w (unpacked) is the ONNX [K][Cg][R][S]. Epilogue columns are output channels: bias_mode 1 (bias[k]);
// the residual is [N][OH][OW][K] with ldr = K. Deterministic and thread-count independent like the GEMMs.
size_t conv_nhwc_packed_elems(const Conv2dShape& s);
void pack_conv_nhwc_f32(const Conv2dShape& s, const float* w, float* packed);
void conv2d_nhwc_f32(const Conv2dShape& s, const float* x, const float* packed_w, float* y, const Epilogue& ep,
                     const Blocking& blk = Blocking());

// ---- Winograd NHWC convolution (accelc_winograd.cpp) ----------------------------------------------
// F(m x m, 3 x 3), m = 2 or 4, for the 3x3 convolutions with stride 1, dilation 1 and one group, any
// padding: same x, y, epilogue and determinism as conv2d_nhwc_f32, different rounding (see the source).
// The weights are the transformed filters U[pos] = (G w G^T)[pos] of each position pos = i*(m+2) + j,
// each a [C][K] matrix packed by pack_b_f32, one after the other (packing.py, pack_winograd_f32).
bool winograd_supported(const Conv2dShape& s, int m);
size_t winograd_packed_elems(int C, int K, int m);
void conv2d_winograd_nhwc_f32(const Conv2dShape& s, int m, const float* x, const float* packed_u, float* y,
                              const Epilogue& ep, const Blocking& blk = Blocking());

// ---- fused attention ---------------------------------------------------------------------------
// out[b,h] = softmax(scale * Q[b,h] K[b,h]^T + mask[b,h]) V[b,h] for b < batch, h < heads, with fp32
// accumulation (bf16 = true: both products round their operands to bf16 first, as gemm_bf16 does).
// Every operand is a strided view, element [b, h, row, col] at ptr[b*s[0] + h*s[1] + row*s[2] + col*s[3]]:
// Q is [sq, d], K is [sk, d] (row = key), V is [sk, dv], mask [sq, sk] (strides 0 broadcast; nullptr =
// no mask), out [sq, dv]. Any strides work; unit column strides (or unit row strides for K and V) are
// read without a gather. `scratch` holds attention_scratch_bytes(args) bytes (the packed K and V of
// every head). Called outside a parallel region; it parallelises over heads and blocks of query rows.
struct AttentionArgs {
  int batch = 0, heads = 0, sq = 0, sk = 0, d = 0, dv = 0;
  float scale = 1.f;
  bool bf16 = false;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* mask = nullptr;
  float* out = nullptr;
  int64_t q_stride[4] = {0, 0, 0, 0}, k_stride[4] = {0, 0, 0, 0}, v_stride[4] = {0, 0, 0, 0},
          mask_stride[4] = {0, 0, 0, 0}, out_stride[4] = {0, 0, 0, 0};
};
size_t attention_scratch_bytes(const AttentionArgs& a);
void attention(const AttentionArgs& a, void* scratch);

// ---- AMX state --------------------------------------------------------------------------------
// Linux hands out the AMX tile state only on request (arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA)); call once per process before running the amx variant. Returns false and sets
// *reason (a static string) when the CPU or the OS refuses; the amx variant then computes its bf16
// kernels with AVX-512 BF16 instead. A no-op returning true in the other variants.
bool amx_init(const char** reason);

}  // namespace ACCELC_NS
