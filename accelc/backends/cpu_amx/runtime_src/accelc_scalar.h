// accelc CPU runtime: scalar helpers used by generated elementwise loops, with the NumPy semantics the
// IR references define (integer division truncates and x/0 == x, fmod/mod of integers by 0 give 0,
// floor-mod takes the divisor's sign). Inline, inside ACCELC_NS like everything variant-compiled.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace ACCELC_NS {

template <class T> static inline T int_div(T a, T b) {
  if (b == 0) return a;                       // the reference divides by 1 where b == 0
  if (std::is_signed<T>::value && b == T(-1)) return T(0 - a);
  return T(a / b);
}
template <class T> static inline T int_fmod(T a, T b) {
  if (b == 0 || (std::is_signed<T>::value && b == T(-1))) return T(0);
  return T(a % b);
}
template <class T> static inline T int_floor_mod(T a, T b) {
  if (b == 0 || (std::is_signed<T>::value && b == T(-1))) return T(0);
  T r = T(a % b);
  if (r != 0 && ((r < 0) != (b < 0))) r = T(r + b);
  return r;
}
template <class F> static inline F float_floor_mod(F a, F b) {
  F r = std::fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  else if (r == 0) r = std::copysign(F(0), b);
  return r;
}
template <class F> static inline F nan_max(F a, F b) { return (a > b || a != a) ? a : b; }
template <class F> static inline F nan_min(F a, F b) { return (a < b || a != a) ? a : b; }
template <class F> static inline F softplus(F x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}
// float -> integer conversion as NumPy's astype: truncation, wrapping through int64 for narrow types
template <class T, class F> static inline T float_to_int(F x) {
  if (x != x) return std::is_signed<T>::value ? T(INT64_MIN) : T(0);
  if (x >= F(9.2233720368547758e18)) return T(INT64_MIN);
  if (x < F(-9.2233720368547758e18)) return T(INT64_MIN);
  return T(int64_t(x));
}

}  // namespace ACCELC_NS
