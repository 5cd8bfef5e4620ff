// Internal: AVX-512 micro-kernels, used by the avx512 variant for everything and by the amx variant
// for fp32 GEMMs (AMX has no fp32 multiply) and for bf16 when the OS refuses the AMX tile state.
//
// 32 zmm registers: MR = 12 rows x 2 panels (32 columns) is 24 accumulators + 2 B vectors + the A
// broadcast. The full K depth stays in registers (deterministic, epilogue straight from registers).
#pragma once

#include "epilogue.h"

namespace ACCELC_NS {
namespace avx512 {

constexpr int kMR = 12;

// C[m0 .. m0+MR, n0 .. n0+cols) (cols <= NP*16) from A rows and NP consecutive f32 panels. SIMPLE: the
// epilogue is_simple (epilogue.h) and the tile is stored through store_tile_simple.
template <int MR, int NP, bool SIMPLE = false>
void f32_panels(int K, const float* A, int lda, const float* Bp, size_t pstride, float* C, int ldc, int m0, int n0,
                int cols, const Epilogue& ep) {
  __m512 c[MR][NP];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) c[i][j] = _mm512_setzero_ps();
  epi::prefetch_residual<MR>(m0, n0, cols, ep);
  for (int k = 0; k < K; ++k) {
    __m512 b[NP];
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) b[j] = _mm512_loadu_ps(Bp + j * pstride + static_cast<size_t>(k) * 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      __m512 a = _mm512_set1_ps(A[static_cast<size_t>(i) * lda + k]);
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) c[i][j] = _mm512_fmadd_ps(a, b[j], c[i][j]);
    }
  }
  if constexpr (SIMPLE) {
    simd::vf acc[MR][NP];
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) acc[i][j] = simd::vf{c[i][j]};
    epi::store_tile_simple<MR, NP>(acc, C, ldc, m0, n0, cols, ep);
    return;
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
      int cnt = cols - 16 * j;
      if (cnt <= 0) break;
      float* dst = C + static_cast<size_t>(i) * ldc + 16 * j;
      if (cnt >= 16) epi::store<true>(simd::vf{c[i][j]}, dst, ldc, m0 + i, n0 + 16 * j, 16, ep);
      else epi::store<false>(simd::vf{c[i][j]}, dst, ldc, m0 + i, n0 + 16 * j, cnt, ep);
    }
}

// bf16 with vdpbf16ps: A is bf16 bits (ld even, zero padded to an even K), B rows of the pair panels
// are used as is. One instruction does two K steps for 16 columns.
template <int MR, int NP>
void bf16_panels(int K, const uint16_t* A, int lda, const uint16_t* Bp, size_t pstride, float* C, int ldc, int m0,
                 int n0, int cols, const Epilogue& ep) {
  __m512 c[MR][NP];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) c[i][j] = _mm512_setzero_ps();
  epi::prefetch_residual<MR>(m0, n0, cols, ep);
  const int pairs = (K + 1) / 2;
  for (int kp = 0; kp < pairs; ++kp) {
    __m512i b[NP];
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) b[j] = _mm512_loadu_si512(Bp + j * pstride + static_cast<size_t>(kp) * 32);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, A + static_cast<size_t>(i) * lda + 2 * kp, 4);
      __m512i a = _mm512_set1_epi32(pair);
#pragma GCC unroll 2
      for (int j = 0; j < NP; ++j) c[i][j] = _mm512_dpbf16_ps(c[i][j], (__m512bh)a, (__m512bh)b[j]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
      int cnt = cols - 16 * j;
      if (cnt <= 0) break;
      float* dst = C + static_cast<size_t>(i) * ldc + 16 * j;
      if (cnt >= 16) epi::store<true>(simd::vf{c[i][j]}, dst, ldc, m0 + i, n0 + 16 * j, 16, ep);
      else epi::store<false>(simd::vf{c[i][j]}, dst, ldc, m0 + i, n0 + 16 * j, cnt, ep);
    }
}

}  // namespace avx512
}  // namespace ACCELC_NS
