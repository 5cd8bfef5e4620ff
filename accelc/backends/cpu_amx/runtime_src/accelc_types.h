// accelc CPU runtime: element types shared by generated code and the support kernels.
//
// bf16 and f16 tensors are stored as uint16_t and computed in fp32. The conversions below are exact
// software implementations (round to nearest even, NaN kept quiet, f16 subnormals handled) so that
// every ISA variant produces the same bits as the NumPy/ml_dtypes reference.
//
// Everything lives in ACCELC_NS (accelc_<variant>): each ISA variant is compiled separately, and inline
// functions must not be shared between variants compiled with different -m flags.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

#ifndef ACCELC_NS
#error "compile with -DACCELC_NS=accelc_<variant>"
#endif

namespace ACCELC_NS {

// dtype codes used by the support kernels (match codegen's DTYPE_CODES)
enum class DT : int { F32 = 0, F16 = 1, BF16 = 2, I8 = 3, U8 = 4, I16 = 5, I32 = 6, I64 = 7, BOOL = 8, F64 = 9 };

static inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

static inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }

static inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN stays (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
  return uint16_t(u >> 16);
}

static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));   // inf / NaN
  if (exp == 0) {
    if (man == 0) return bits_to_f32(sign);
    float v = std::ldexp(float(man), -24);                                    // subnormal
    return sign ? -v : v;
  }
  return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t f32_to_f16(float f) {
  uint32_t u = f32_to_bits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);                         // overflow -> inf
  if (a < 0x38800000u) {                                                          // subnormal or zero
    // value * 2^24 rounded to nearest even gives the subnormal mantissa
    float v = bits_to_f32(a) * 16777216.0f;
    return uint16_t(sign | uint16_t(std::nearbyint(v)));
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
  return uint16_t(sign | uint16_t(r >> 13));
}

// exp(x) for fp32 written so that g++ vectorizes loops calling it (libm's expf is an opaque call).
// Cephes' expf: range reduction by ln2 in two parts, degree-5 polynomial; max error ~1 ulp over the
// normal range. exp(-inf) and underflow give 0, overflow +inf, NaN stays NaN (all branch-free selects).
static inline float vexp(float x) {
  const float hi = 88.3762626647949f, lo = -87.3365447505531f;
  const float xc = x > hi ? hi : (x < lo ? lo : x);
  // n = round(x / ln2) by the 1.5 * 2^23 trick (vectorizes; std::floor would not without SSE4.1 tricks)
  const float fx = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const float scale = bits_to_f32(uint32_t(int32_t(fx) + 127) << 23);
  const float v = y * scale;
  return x != x ? x : (x > hi ? INFINITY : (x < lo ? 0.0f : v));
}

// erf(x) for fp32, vectorizable: the rational approximation on [-4, 4] used by Eigen and XLA (odd
// degree-13 numerator, degree-8 denominator); max error ~4.5e-7 absolute and relative. NaN stays NaN.
static inline float verf(float x) {
  const float xc = x > 4.f ? 4.f : (x < -4.f ? -4.f : x);
  const float x2 = xc * xc;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = xc * p;
  float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = x2 * q + -1.68282697438203e-03f;
  q = x2 * q + -7.37332916720468e-03f;
  q = x2 * q + -1.42647390514189e-02f;
  return p / q;
}

// tanh(x) for fp32, vectorizable: Cephes' odd polynomial for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1)
// beyond; max error ~2e-7 relative. NaN stays NaN.
static inline float vtanh(float x) {
  const float ax = x < 0.f ? -x : x;
  const float z = x * x;
  float small = -5.70498872745e-3f * z + 2.06390887954e-2f;
  small = small * z - 5.37397155531e-2f;
  small = small * z + 1.33314422036e-1f;
  small = small * z - 3.33332819422e-1f;
  small = small * z * x + x;
  const float t = 2.f * ax;
  const float e = vexp(t < 88.f ? t : 88.f);
  float big = 1.f - 2.f / (e + 1.f);
  big = x < 0.f ? -big : big;
  return x != x ? x : (ax < 0.625f ? small : big);
}

// Scalar load/store of a storage type as the compute type (float for f32/f16/bf16).
struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

static inline float load_f(const float* p, int64_t i) { return p[i]; }
static inline float load_f(const bf16_t* p, int64_t i) { return bf16_to_f32(p[i].bits); }
static inline float load_f(const f16_t* p, int64_t i) { return f16_to_f32(p[i].bits); }
static inline void store_f(float* p, int64_t i, float v) { p[i] = v; }
static inline void store_f(bf16_t* p, int64_t i, float v) { p[i].bits = f32_to_bf16(v); }
static inline void store_f(f16_t* p, int64_t i, float v) { p[i].bits = f32_to_f16(v); }

}  // namespace ACCELC_NS
