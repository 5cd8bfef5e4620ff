// Internal: the fused GEMM/conv epilogue y = act(alpha*acc + beta*bias + residual) on one vector of
// accumulators, and the vector transcendental functions the activations need.
//
// The activations are computed in forms that keep *relative* accuracy (~1e-6) over the whole range,
// because the numerics contract compares fp32 artifacts to the reference at ~1e-5 relative:
//  - exp is only ever evaluated at arguments <= 0 (sigmoid/tanh/erfc are rewritten that way), so
//    no overflow handling is needed and the result never leaves the normal range by more than a clamp;
//  - Gelu uses erfc of the *negative* side (0.5*x*erfc(-x/sqrt2)), so large negative x keeps its tiny
//    but exact-ish value instead of 1 + erf cancelling to 0;
//  - GeluTanh uses 1 + tanh(u) = 2*sigmoid(2u) for the same reason;
//  - tanh near 0 uses its Taylor series where 1 - exp(-2|x|) would cancel.
#pragma once

#include "accelc_gemm.h"
#include "simd.h"

namespace ACCELC_NS {
namespace epi {

using namespace simd;

// exp(x) for x <= 0 (and NaN). Range reduction x = n*ln2 + r, |r| <= ln2/2, then a degree-6 Taylor
// polynomial (truncation < 7e-8 relative). Results below the normal range (x < -87.3) are flushed to
// 0 (absolute error < 1.2e-38), which keeps 2^n a normal number.
ACCELC_INLINE vf exp_nonpos(vf x_in) {
  vf x = vmax(vset1(-87.3f), x_in);  // NaN passes through (second operand)
  x = vmin(vset1(0.f), x);
  vf n = vround(x * vset1(1.44269504088896341f));
  vf r = vfma(n, vset1(-0.693145751953125f), x);  // ln2 = hi + lo, hi with 16 significant bits
  r = vfma(n, vset1(-1.42860682030941723e-6f), r);
  vf p = vset1(1.f / 720.f);
  p = vfma(p, r, vset1(1.f / 120.f));
  p = vfma(p, r, vset1(1.f / 24.f));
  p = vfma(p, r, vset1(1.f / 6.f));
  p = vfma(p, r, vset1(0.5f));
  p = vfma(p, r, vset1(1.f));
  p = vfma(p, r, vset1(1.f));
  return vselect_lt(x_in, vset1(-87.3f), vzero(), p * vpow2i(n));
}

// x clamped from below where a product x * f(x) has f(x) == 0 in fp32 already: keeps -inf * 0 from
// turning the activation's limit (0) into NaN.
ACCELC_INLINE vf clamp_low(vf x, float lo) { return vmax(vset1(lo), x); }

// 1 / (1 + exp(-x)) from e = exp(-|x|): 1/(1+e) for x >= 0, e/(1+e) for x < 0.
ACCELC_INLINE vf sigmoid(vf x) {
  vf e = exp_nonpos(vset1(0.f) - vabs(x));
  vf inv = vset1(1.f) / (vset1(1.f) + e);
  return vselect_lt(x, vset1(0.f), e * inv, inv);
}

ACCELC_INLINE vf tanh(vf x) {
  vf a = vabs(x);
  vf e = exp_nonpos(vset1(-2.f) * a);
  vf big = (vset1(1.f) - e) / (vset1(1.f) + e);
  // |x| < 1/16: x - x^3/3 + 2x^5/15 (next term 17x^7/315 < 3e-9 relative).
  vf a2 = a * a;
  vf small = vfma(vfma(a2, vset1(2.f / 15.f), vset1(-1.f / 3.f)), a2 * a, a);
  return vcopysign(vselect_lt(a, vset1(0.0625f), small, big), x);
}

// erfc(z) for z >= 0 with fractional error < 1.2e-7 (the Chebyshev-fitted form of Numerical Recipes'
// erfcc): t = 1/(1 + z/2), erfc = t * exp(-z^2 + P(t)).
ACCELC_INLINE vf erfc_nonneg(vf z) {
  vf t = vset1(1.f) / vfma(z, vset1(0.5f), vset1(1.f));
  vf p = vset1(0.17087277f);
  p = vfma(p, t, vset1(-0.82215223f));
  p = vfma(p, t, vset1(1.48851587f));
  p = vfma(p, t, vset1(-1.13520398f));
  p = vfma(p, t, vset1(0.27886807f));
  p = vfma(p, t, vset1(-0.18628806f));
  p = vfma(p, t, vset1(0.09678418f));
  p = vfma(p, t, vset1(0.37409196f));
  p = vfma(p, t, vset1(1.00002368f));
  p = vfma(p, t, vset1(-1.26551223f));
  return t * exp_nonpos(p - z * z);
}

// 0.5 * x * erfc(-x / sqrt(2)); erfc(-z) = 2 - erfc(z) for the positive side.
ACCELC_INLINE vf gelu(vf x) {
  vf c = erfc_nonneg(vabs(x) * vset1(0.70710678118654752f));
  vf half_x = clamp_low(x, -20.f) * vset1(0.5f);  // erfc(20/sqrt2) == 0 in fp32
  return half_x * vselect_lt(x, vset1(0.f), c, vset1(2.f) - c);
}

// 0.5 * x * (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3).
ACCELC_INLINE vf gelu_tanh(vf x) {
  vf u2 = x * vfma(x * x, vset1(2.f * 0.7978845608028654f * 0.044715f), vset1(2.f * 0.7978845608028654f));
  return clamp_low(x, -100.f) * sigmoid(u2);  // sigmoid(2u(-100)) == 0 in fp32
}

// The transcendental activations are kept out of line: inlined into every store of every micro-kernel
// instantiation they would multiply the code size several times over for a call that costs a few
// cycles next to the tens of instructions each of them takes anyway.
__attribute__((noinline)) inline vf activate_transcendental(vf v, Act act) {
  switch (act) {
    case Act::Gelu: return gelu(v);
    case Act::GeluTanh: return gelu_tanh(v);
    case Act::Sigmoid: return sigmoid(v);
    case Act::Tanh: return tanh(v);
    case Act::Silu: return clamp_low(v, -100.f) * sigmoid(v);  // sigmoid(-100) == 0 in fp32
    default: return v;
  }
}

ACCELC_INLINE vf activate(vf v, const Epilogue& ep) {
  switch (ep.act) {
    case Act::None: return v;
    case Act::Relu: return vmax(vzero(), v);
    case Act::LeakyRelu: return vselect_lt(v, vzero(), v * vset1(ep.act_alpha), v);
    case Act::Clip: return vmin(vset1(ep.act_beta), vmax(vset1(ep.act_alpha), v));
    default: return activate_transcendental(v, ep.act);
  }
}

// Applies the epilogue to `acc`, the accumulators of C[m, n .. n+cnt) (cnt <= kW; lanes >= cnt are
// ignored), and stores the result to c = &C[m*ldc + n]. FULL tells the compiler cnt == kW.
template <bool FULL>
ACCELC_INLINE void store(vf acc, float* c, int ldc, int m, int n, int cnt, const Epilogue& ep) {
  auto ld = [&](const float* p) { return FULL ? vload(p) : vload_n(p, cnt); };
  vf v = acc * vset1(ep.alpha);
  switch (ep.bias_mode) {
    case 1: v = vfma(vset1(ep.beta), ld(ep.bias + n), v); break;
    case 2: v = vfma(vset1(ep.beta), vset1(ep.bias[m]), v); break;
    case 3: v = vfma(vset1(ep.beta), ld(ep.bias + static_cast<size_t>(m) * ldc + n), v); break;
    default: break;
  }
  if (ep.residual) v = v + ld(ep.residual + static_cast<size_t>(m) * ep.ldr + n);
  v = activate(v, ep);
  if (FULL) vstore(c, v); else vstore_n(c, v, cnt);
}

// Asks for the residual's cache lines of the tile rows m0 .. m0+MR, columns n0 .. n0+cols before the K
// loop runs, so that their trip from memory overlaps the arithmetic: an activation-sized residual read
// in the epilogue otherwise stalls each tile (ResNet-50's 1x1 expand shape 3136x256x64 with the residual
// not in cache: 1.85 -> 1.41 ms). Prefetching C for writing as well measured slower.
template <int MR>
ACCELC_INLINE void prefetch_residual(int m0, int n0, int cols, const Epilogue& ep) {
  if (!ep.residual) return;
  const int last = cols > 0 ? cols - 1 : 0;
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    const float* r = ep.residual + static_cast<size_t>(m0 + i) * ep.ldr + n0;
    __builtin_prefetch(r, 0, 3);
    __builtin_prefetch(r + last, 0, 3);
  }
}

// ---- the common epilogue, a whole register tile at a time --------------------------------------------
// Most layers ask no more than y = acc + bias[n] (+ residual), then ReLU or nothing: alpha = beta = 1,
// a per-column bias or none. For those a micro-kernel stores its whole tile through store_tile_simple,
// which reads the epilogue's fields once (through the reference the compiler must re-read them after
// every store to C, which might alias them), loads the tile's bias vectors once instead of once per
// row, and applies ReLU or nothing as one max against 0 or -inf, with no switch per vector. The
// operations and their order are store()'s, so the results are bit for bit the same (acc * 1 is
// exact; fma(1, bias, v) rounds as v + bias; without a bias the tile adds -0, which changes no value,
// not even a zero's sign; max keeps a NaN as ReLU does). A 6x16 AVX2 tile at
// K = 64 with bias, residual and ReLU, in cache: 84 -> 93 GFLOP/s on Zen 3.
ACCELC_INLINE bool is_simple(const Epilogue& ep) {
  return ep.alpha == 1.f && ep.beta == 1.f && (ep.bias_mode == 0 || ep.bias_mode == 1) &&
         (ep.act == Act::None || ep.act == Act::Relu);
}

// C[m0 .. m0+MR, n0 .. n0+cols) = max(floor, acc + bias (+ residual)) for an epilogue that is_simple;
// acc[i][v] holds columns n0 + v*kW .. of row m0 + i, cols <= NV*kW.
template <int MR, int NV>
ACCELC_INLINE void store_tile_simple(const vf (&acc)[MR][NV], float* C, int ldc, int m0, int n0, int cols,
                                     const Epilogue& ep) {
  const float* bias = ep.bias_mode == 1 ? ep.bias + n0 : nullptr;
  const float* res = ep.residual ? ep.residual + static_cast<size_t>(m0) * ep.ldr + n0 : nullptr;
  const size_t ldr = static_cast<size_t>(ep.ldr);
  const vf floor = vset1(ep.act == Act::Relu ? 0.f : -__builtin_inff());
  if (cols == NV * kW) {
    vf b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = bias ? vload(bias + v * kW) : vset1(-0.f);
    if (res) {
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          vstore(C + static_cast<size_t>(i) * ldc + v * kW,
                 vmax(floor, (acc[i][v] + b[v]) + vload(res + i * ldr + v * kW)));
    } else {
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) vstore(C + static_cast<size_t>(i) * ldc + v * kW, vmax(floor, acc[i][v] + b[v]));
    }
    return;
  }
  // a partial tile (the last columns of N): masked loads and stores
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int cnt = cols - v * kW;
    if (cnt <= 0) break;
    const vf b = bias ? vload_n(bias + v * kW, cnt) : vset1(-0.f);
    for (int i = 0; i < MR; ++i) {
      vf y = acc[i][v] + b;
      if (res) y = y + vload_n(res + i * ldr + v * kW, cnt);
      vstore_n(C + static_cast<size_t>(i) * ldc + v * kW, vmax(floor, y), cnt);
    }
  }
}

// Epilogue for a row segment C[m, n .. n+cols) whose accumulators sit in memory (acc[0..cols)).
ACCELC_INLINE void store_row(const float* acc, float* c, int ldc, int m, int n, int cols, const Epilogue& ep) {
  int j = 0;
  for (; j + kW <= cols; j += kW) store<true>(vload(acc + j), c + j, ldc, m, n + j, kW, ep);
  if (j < cols) store<false>(vload_n(acc + j, cols - j), c + j, ldc, m, n + j, cols - j, ep);
}

}  // namespace epi
}  // namespace ACCELC_NS
