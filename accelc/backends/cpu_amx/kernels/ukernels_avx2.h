// Internal: AVX2 + FMA register-blocked micro-kernels (the whole of the avx2 variant's GEMM).
//
// 16 ymm registers decide the shape: MR = 6 rows x 16 columns (one packed-B panel) is 12 accumulators
// + 2 B vectors + 1 broadcast A value, the largest block that does not spill. The bf16 GEMM runs the
// same kernel on panels widened to fp32 (see widen_bf16_panel). Each kernel runs the full
// K depth in registers, so every output element sees the same sequence of FMAs whatever the blocking
// and thread count (deterministic results) and the epilogue runs once, straight from the registers.
#pragma once

#include "epilogue.h"

namespace ACCELC_NS {
namespace avx2 {

constexpr int kMR = 6;

// Stores a row's two accumulator vectors (columns n .. n+cols, cols <= 16) through the epilogue.
ACCELC_INLINE void store_row16(__m256 lo, __m256 hi, float* c, int ldc, int m, int n, int cols, const Epilogue& ep) {
  using simd::vf;
  if (cols == 16) {
    epi::store<true>(vf{lo}, c, ldc, m, n, 8, ep);
    epi::store<true>(vf{hi}, c + 8, ldc, m, n + 8, 8, ep);
  } else if (cols > 8) {
    epi::store<true>(vf{lo}, c, ldc, m, n, 8, ep);
    epi::store<false>(vf{hi}, c + 8, ldc, m, n + 8, cols - 8, ep);
  } else {
    epi::store<false>(vf{lo}, c, ldc, m, n, cols, ep);
  }
}

// C[m0 .. m0+MR, n0 .. n0+cols) from A rows (row-major, lda) and one f32 panel (K x 16). SIMPLE: the
// epilogue is_simple (epilogue.h) and the tile is stored through store_tile_simple.
template <int MR, bool SIMPLE = false>
void f32_panel(int K, const float* A, int lda, const float* Bp, float* C, int ldc, int m0, int n0, int cols,
               const Epilogue& ep) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  epi::prefetch_residual<MR>(m0, n0, cols, ep);
#pragma GCC unroll 2
  for (int k = 0; k < K; ++k) {
    __m256 b0 = _mm256_loadu_ps(Bp + k * 16), b1 = _mm256_loadu_ps(Bp + k * 16 + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      __m256 a = _mm256_broadcast_ss(A + static_cast<size_t>(i) * lda + k);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
  }
  if constexpr (SIMPLE) {
    simd::vf acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) acc[i][0] = simd::vf{c0[i]}, acc[i][1] = simd::vf{c1[i]};
    epi::store_tile_simple<MR, 2>(acc, C, ldc, m0, n0, cols, ep);
  } else {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i)
      store_row16(c0[i], c1[i], C + static_cast<size_t>(i) * ldc, ldc, m0 + i, n0, cols, ep);
  }
}

// bf16 pair panel (16 columns, K rounded up to even) -> fp32 panel (K x 16), exactly: bf16 bits are the
// upper half of the fp32 bits, so an even-k value is the pair shifted left and an odd-k one the pair
// with its low half cleared.
inline void widen_bf16_panel(int K, const uint16_t* Bp, float* out) {
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  int k = 0;
  for (; k + 2 <= K; k += 2) {
    const __m256i* src = reinterpret_cast<const __m256i*>(Bp + static_cast<size_t>(k / 2) * 32);
    __m256i v0 = _mm256_loadu_si256(src), v1 = _mm256_loadu_si256(src + 1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 16), _mm256_slli_epi32(v0, 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 16 + 8), _mm256_slli_epi32(v1, 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 16 + 16), _mm256_and_si256(v0, hi_mask));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 16 + 24), _mm256_and_si256(v1, hi_mask));
  }
  if (k < K) {  // odd K: the last pair's even half only
    const __m256i* src = reinterpret_cast<const __m256i*>(Bp + static_cast<size_t>(k / 2) * 32);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 16), _mm256_slli_epi32(_mm256_loadu_si256(src), 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 16 + 8), _mm256_slli_epi32(_mm256_loadu_si256(src + 1), 16));
  }
}

}  // namespace avx2
}  // namespace ACCELC_NS
