// Internal: the one fp32 vector type each variant computes its epilogues with, plus bf16 rounding.
//
// The epilogue math (epilogue.h) is written once against these few functions; the variant decides
// the register width (16 lanes with AVX-512, 8 with AVX2). Everything is inline and lives in
// ACCELC_NS, so the per-variant copies never meet at link time.
#pragma once

#include <immintrin.h>
#include <cstdint>
#include <cstring>

#if defined(ACCELC_VARIANT_AMX) || defined(ACCELC_VARIANT_AVX512)
#define ACCELC_SIMD_512 1
#elif defined(ACCELC_VARIANT_AVX2)
#define ACCELC_SIMD_256 1
#else
#error "define one of ACCELC_VARIANT_AMX, ACCELC_VARIANT_AVX512, ACCELC_VARIANT_AVX2"
#endif

#define ACCELC_INLINE inline __attribute__((always_inline))

namespace ACCELC_NS {
namespace simd {

// ---- bf16 bits <-> fp32 (scalar); the rule packing.py reproduces bit for bit --------------------
// Round to nearest even on the upper 16 bits; a NaN stays a (quiet) NaN of the same sign instead of
// being rounded into an infinity.
ACCELC_INLINE uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
ACCELC_INLINE float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#if ACCELC_SIMD_512
constexpr int kW = 16;
struct vf { __m512 r; };
ACCELC_INLINE vf vzero() { return {_mm512_setzero_ps()}; }
ACCELC_INLINE vf vset1(float x) { return {_mm512_set1_ps(x)}; }
ACCELC_INLINE vf vload(const float* p) { return {_mm512_loadu_ps(p)}; }
ACCELC_INLINE void vstore(float* p, vf v) { _mm512_storeu_ps(p, v.r); }
ACCELC_INLINE __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
// Lanes >= n read as 0 and are never touched in memory (no read past the end of a row).
ACCELC_INLINE vf vload_n(const float* p, int n) { return {_mm512_maskz_loadu_ps(tail_mask(n), p)}; }
ACCELC_INLINE void vstore_n(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v.r); }
ACCELC_INLINE vf operator+(vf a, vf b) { return {_mm512_add_ps(a.r, b.r)}; }
ACCELC_INLINE vf operator-(vf a, vf b) { return {_mm512_sub_ps(a.r, b.r)}; }
ACCELC_INLINE vf operator*(vf a, vf b) { return {_mm512_mul_ps(a.r, b.r)}; }
ACCELC_INLINE vf operator/(vf a, vf b) { return {_mm512_div_ps(a.r, b.r)}; }
ACCELC_INLINE vf vfma(vf a, vf b, vf c) { return {_mm512_fmadd_ps(a.r, b.r, c.r)}; }
// x86 max/min return the second operand when either is NaN: callers pass the data as `b` so that
// NaN propagates like NumPy's maximum/minimum.
ACCELC_INLINE vf vmax(vf a, vf b) { return {_mm512_max_ps(a.r, b.r)}; }
ACCELC_INLINE vf vmin(vf a, vf b) { return {_mm512_min_ps(a.r, b.r)}; }
ACCELC_INLINE vf vabs(vf a) { return {_mm512_abs_ps(a.r)}; }
ACCELC_INLINE vf vcopysign(vf mag, vf sgn) {  // |mag| with the sign of sgn
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  return {_mm512_castsi512_ps(_mm512_or_si512(_mm512_andnot_si512(sign, _mm512_castps_si512(mag.r)),
                                              _mm512_and_si512(sign, _mm512_castps_si512(sgn.r))))};
}
// a < b ? x : y (false for NaN)
ACCELC_INLINE vf vselect_lt(vf a, vf b, vf x, vf y) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.r, b.r, _CMP_LT_OQ), y.r, x.r)};
}
ACCELC_INLINE vf vround(vf a) { return {_mm512_roundscale_ps(a.r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
// 2^n for integral n in [-126, 127].
ACCELC_INLINE vf vpow2i(vf n) {
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.r), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
// fp32 -> value rounded to bf16 (RNE, NaN kept), as fp32 and as packed bits for 16 lanes.
ACCELC_INLINE __m512i round_bf16_bits32(__m512 x) {  // rounded value, low 16 bits zero
  __m512i u = _mm512_castps_si512(x);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
  __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
  return _mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
}
ACCELC_INLINE __m256i round_bf16_16(__m512 x) { return _mm512_cvtepi32_epi16(_mm512_srli_epi32(round_bf16_bits32(x), 16)); }
// Interleaves the bf16 roundings of two K rows (16 columns each) into one row of a packed pair panel:
// dst[2j] = bf16(even[j]), dst[2j+1] = bf16(odd[j]).
ACCELC_INLINE void store_bf16_pairs(uint16_t* dst, vf even, vf odd) {
  __m512i v = _mm512_or_si512(_mm512_srli_epi32(round_bf16_bits32(even.r), 16), round_bf16_bits32(odd.r));
  _mm512_storeu_si512(dst, v);
}
#else
constexpr int kW = 8;
struct vf { __m256 r; };
ACCELC_INLINE vf vzero() { return {_mm256_setzero_ps()}; }
ACCELC_INLINE vf vset1(float x) { return {_mm256_set1_ps(x)}; }
ACCELC_INLINE vf vload(const float* p) { return {_mm256_loadu_ps(p)}; }
ACCELC_INLINE void vstore(float* p, vf v) { _mm256_storeu_ps(p, v.r); }
ACCELC_INLINE __m256i tail_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
// vmaskmov neither reads nor faults on masked-off lanes, so row tails never read past their end.
ACCELC_INLINE vf vload_n(const float* p, int n) { return {_mm256_maskload_ps(p, tail_mask(n))}; }
ACCELC_INLINE void vstore_n(float* p, vf v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v.r); }
ACCELC_INLINE vf operator+(vf a, vf b) { return {_mm256_add_ps(a.r, b.r)}; }
ACCELC_INLINE vf operator-(vf a, vf b) { return {_mm256_sub_ps(a.r, b.r)}; }
ACCELC_INLINE vf operator*(vf a, vf b) { return {_mm256_mul_ps(a.r, b.r)}; }
ACCELC_INLINE vf operator/(vf a, vf b) { return {_mm256_div_ps(a.r, b.r)}; }
ACCELC_INLINE vf vfma(vf a, vf b, vf c) { return {_mm256_fmadd_ps(a.r, b.r, c.r)}; }
ACCELC_INLINE vf vmax(vf a, vf b) { return {_mm256_max_ps(a.r, b.r)}; }
ACCELC_INLINE vf vmin(vf a, vf b) { return {_mm256_min_ps(a.r, b.r)}; }
ACCELC_INLINE vf vabs(vf a) {
  return {_mm256_and_ps(a.r, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))};
}
ACCELC_INLINE vf vcopysign(vf mag, vf sgn) {
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  return {_mm256_or_ps(_mm256_andnot_ps(sign, mag.r), _mm256_and_ps(sign, sgn.r))};
}
ACCELC_INLINE vf vselect_lt(vf a, vf b, vf x, vf y) {
  return {_mm256_blendv_ps(y.r, x.r, _mm256_cmp_ps(a.r, b.r, _CMP_LT_OQ))};
}
ACCELC_INLINE vf vround(vf a) { return {_mm256_round_ps(a.r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
ACCELC_INLINE vf vpow2i(vf n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.r), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
// fp32 -> the fp32 value of its bf16 rounding (RNE, NaN kept): what the AVX2 variant multiplies.
ACCELC_INLINE __m256 round_to_bf16_f32(__m256 x) {
  __m256i u = _mm256_castps_si256(x);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
  __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r),
                                           _mm256_castsi256_ps(_mm256_or_si256(u, _mm256_set1_epi32(0x00400000))),
                                           nan));
  return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}
// Interleaves the bf16 roundings of two K rows into a pair row: dst[2j] = bf16(even[j]), dst[2j+1] =
// bf16(odd[j]) for the 8 columns of a vector.
ACCELC_INLINE void store_bf16_pairs(uint16_t* dst, vf even, vf odd) {
  __m256i v = _mm256_or_si256(_mm256_srli_epi32(_mm256_castps_si256(round_to_bf16_f32(even.r)), 16),
                              _mm256_castps_si256(round_to_bf16_f32(odd.r)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v);
}
#endif

}  // namespace simd
}  // namespace ACCELC_NS
