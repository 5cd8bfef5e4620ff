// accelc cpu_amx convolution: NCHW conv2d as im2col-in-packed-B + the GEMMs of accelc_gemm.cpp, and
// a direct kernel for depthwise convolutions (one input and one output channel per group), whose
// per-group GEMM would have a single row and a K of R*S: all packing, no arithmetic.
#include <omp.h>

#include <cstring>

#include "accelc_gemm.h"
#include "epilogue.h"

namespace ACCELC_NS {

namespace {

using simd::bf16_to_f32;
using simd::f32_to_bf16;

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
inline int round_up(int a, int b) { return ceil_div(a, b) * b; }
inline int imax(int a, int b) { return a > b ? a : b; }
inline int imin(int a, int b) { return a < b ? a : b; }

constexpr double kParallelMinWork = 1 << 16;

// Short copies of im2col rows (at most 16 floats): inline vector moves, because a memcpy call per
// (channel, kernel tap, pixel run) costs more than the copy. The source tail is a masked load (never
// reads past the row), the destination tail a full store: `dst` is a private row buffer with kW
// floats of slack, and whatever lands past n is overwritten by the next run or cleared afterwards
// (masked stores are slow on several x86 cores).
ACCELC_INLINE void copy_floats(float* dst, const float* src, int n) {
  int u = 0;
  for (; u + simd::kW <= n; u += simd::kW) simd::vstore(dst + u, simd::vload(src + u));
  if (u < n) simd::vstore(dst + u, simd::vload_n(src + u, n - u));
}
ACCELC_INLINE void fill_zero(float* dst, int n) {
  for (int u = 0; u < n; ++u) dst[u] = 0.f;
}

// Pixels of one 16-wide panel that share an output row: (first lane, lanes, top input row, left input
// column) for pixel `first`; the im2col values of the run are then one strided slice of an input row.
struct PixelRun {
  int lane, len, ih0, iw0;
};

// Lanes [lo, hi) of a run whose input column iw0 + u*sw lies inside the row [0, W).
struct LaneSpan {
  int lo, hi;
};
ACCELC_INLINE LaneSpan lane_span(int len, int iw0, int sw, int W) {
  if (sw == 1) {
    const int lo = imin(len, imax(0, -iw0));
    return {lo, imax(lo, imin(len, W - iw0))};
  }
  const int lo = imin(len, iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw);
  return {lo, imax(lo, imin(len, W - iw0 > 0 ? (W - iw0 + sw - 1) / sw : 0))};
}

// Writes the im2col matrix of one image and group (x points at the group's first input channel) in
// packed-B layout: rows k = (c*R + r)*S + s, columns = output pixels. f32 panels are K x 16; bf16
// panels hold K pairs and are zero padded to a multiple of 32 rows (see accelc_gemm.h).
template <bool BF16, class Out>
void im2col_packed(const Conv2dShape& s, const float* x, Out* Bp) {
  const int Cg = s.C / s.groups, Kg = Cg * s.R * s.S, P = s.OH * s.OW;
  const int npanels = ceil_div(P, 16);
  const int Kp = BF16 ? round_up(Kg > 0 ? Kg : 1, 32) : Kg;
  const bool parallel = static_cast<double>(Kg) * P >= kParallelMinWork;
#pragma omp parallel for schedule(static) if (parallel)
  for (int p = 0; p < npanels; ++p) {
    PixelRun runs[16];
    int nruns = 0;
    const int q0 = p * 16, lanes = imin(16, P - q0);
    for (int j = 0; j < lanes;) {
      const int q = q0 + j, oh = q / s.OW, ow = q % s.OW;
      const int len = imin(lanes - j, s.OW - ow);
      runs[nruns++] = {j, len, oh * s.stride_h - s.pad_top, ow * s.stride_w - s.pad_left};
      j += len;
    }
    Out* dst = Bp + static_cast<size_t>(p) * Kp * 16;
    // K rows k-1 and k (bf16 panels take them in pairs), with slack for copy_floats' full stores
    alignas(64) float vals[2][16 + simd::kW];
    for (int u = 0; u < 16 + simd::kW; ++u) vals[0][u] = vals[1][u] = 0.f;
    for (int c = 0; c < Cg; ++c) {
      const float* xc = x + static_cast<size_t>(c) * s.H * s.W;
      for (int r = 0; r < s.R; ++r) {
        for (int t = 0; t < s.S; ++t) {
          const int k = (c * s.R + r) * s.S + t;
          float* row_vals = BF16 ? vals[k & 1] : vals[0];
          for (int ri = 0; ri < nruns; ++ri) {
            const PixelRun& run = runs[ri];
            float* v = row_vals + run.lane;
            const int ih = run.ih0 + r * s.dil_h;
            if (ih < 0 || ih >= s.H) {
              fill_zero(v, run.len);
              continue;
            }
            const float* row = xc + static_cast<size_t>(ih) * s.W;
            const int iw0 = run.iw0 + t * s.dil_w;
            // the lanes whose column lies inside the row, zeros around them
            const LaneSpan sp = lane_span(run.len, iw0, s.stride_w, s.W);
            fill_zero(v, sp.lo);
            if (s.stride_w == 1) {
              copy_floats(v + sp.lo, row + iw0 + sp.lo, sp.hi - sp.lo);
            } else {
              const float* src = row + iw0;
              for (int u = sp.lo; u < sp.hi; ++u) v[u] = src[u * s.stride_w];
            }
            fill_zero(v + sp.hi, run.len - sp.hi);
          }
          if (lanes < 16) fill_zero(row_vals + lanes, 16 - lanes);  // the last panel's padding columns
          if constexpr (BF16) {
            if ((k & 1) || k == Kg - 1) {
              if (!(k & 1)) fill_zero(vals[1], 16);  // odd Kg: the last pair's odd half is K padding
              uint16_t* out = dst + (k / 2) * 32;
              for (int j = 0; j < 16; j += simd::kW)
                simd::store_bf16_pairs(out + 2 * j, simd::vload(vals[0] + j), simd::vload(vals[1] + j));
            }
          } else {
            for (int j = 0; j < 16; j += simd::kW) simd::vstore(dst + static_cast<size_t>(k) * 16 + j, simd::vload(vals[0] + j));
          }
        }
      }
    }
    if constexpr (BF16) {  // zero K padding
      const int first_pad_pair = (Kg + 1) / 2;
      std::memset(dst + first_pad_pair * 32, 0, static_cast<size_t>(Kp / 2 - first_pad_pair) * 32 * sizeof(uint16_t));
    }
  }
}

// Epilogue of one image and one group of output channels, as the GEMM sees it (rows = channels of
// the group, columns = pixels).
Epilogue group_epilogue(const Conv2dShape& s, const Epilogue& ep, int n, int first_channel) {
  Epilogue e = ep;
  const size_t P = static_cast<size_t>(s.OH) * s.OW;
  if (ep.bias_mode == 2) e.bias = ep.bias + first_channel;
  if (ep.bias_mode == 3) e.bias = ep.bias + first_channel * P;
  if (ep.residual) e.residual = ep.residual + (static_cast<size_t>(n) * s.K + first_channel) * ep.ldr;
  return e;
}

// Depthwise: y[c] = sum_{r,s} w[c][r*S+s] * x[c] shifted; rows of up to kChunk output pixels are
// accumulated on the stack and leave through the epilogue vectorised. BF16 rounds the inputs like the
// GEMM path does (the products of two bf16 values are exact in fp32).
template <bool BF16, class W>
void depthwise(const Conv2dShape& s, const float* x, const W* w, float* y, const Epilogue& ep) {
  constexpr int kChunk = 256;
  const int P = s.OH * s.OW;
  const int planes = s.N * s.C;
  const bool parallel = static_cast<double>(planes) * P * s.R * s.S >= kParallelMinWork;
#pragma omp parallel for schedule(static) if (parallel)
  for (int plane = 0; plane < planes; ++plane) {
    const int n = plane / s.C, c = plane % s.C;
    const Epilogue e = group_epilogue(s, ep, n, c);
    const float* xc = x + static_cast<size_t>(plane) * s.H * s.W;
    const W* wc = w + static_cast<size_t>(c) * s.R * s.S;
    float* yc = y + static_cast<size_t>(plane) * P;
    float acc[kChunk];
    for (int oh = 0; oh < s.OH; ++oh) {
      for (int ow0 = 0; ow0 < s.OW; ow0 += kChunk) {
        const int len = imin(kChunk, s.OW - ow0);
        for (int u = 0; u < len; ++u) acc[u] = 0.f;
        for (int r = 0; r < s.R; ++r) {
          const int ih = oh * s.stride_h - s.pad_top + r * s.dil_h;
          if (ih < 0 || ih >= s.H) continue;
          const float* row = xc + static_cast<size_t>(ih) * s.W;
          for (int t = 0; t < s.S; ++t) {
            float wt;
            if constexpr (BF16) wt = bf16_to_f32(wc[r * s.S + t]);
            else wt = wc[r * s.S + t];
            // Output columns whose input column lies inside the row: iw = ow*sw - pl + t*dw in [0, W).
            const int off = t * s.dil_w - s.pad_left;
            int lo = off >= 0 ? 0 : ceil_div(-off, s.stride_w);
            int hi = s.W - 1 - off < 0 ? 0 : (s.W - 1 - off) / s.stride_w + 1;
            lo = imax(lo - ow0, 0);
            hi = imin(hi - ow0, len);
            const float* src = row + off + static_cast<ptrdiff_t>(ow0) * s.stride_w;
            if (s.stride_w == 1) {
              for (int u = lo; u < hi; ++u) {
                float xv = src[u];
                if constexpr (BF16) xv = bf16_to_f32(f32_to_bf16(xv));
                acc[u] += wt * xv;
              }
            } else {
              for (int u = lo; u < hi; ++u) {
                float xv = src[static_cast<ptrdiff_t>(u) * s.stride_w];
                if constexpr (BF16) xv = bf16_to_f32(f32_to_bf16(xv));
                acc[u] += wt * xv;
              }
            }
          }
        }
        epi::store_row(acc, yc + oh * s.OW + ow0, P, 0, oh * s.OW + ow0, len, e);  // e is offset to channel c
      }
    }
  }
}

template <bool BF16, class W, class Scratch>
void conv2d_any(const Conv2dShape& s, const float* x, const W* w, float* y, const Epilogue& ep, Scratch* scratch) {
  const int Cg = s.C / s.groups, Mg = s.K / s.groups, Kg = Cg * s.R * s.S;
  const int P = s.OH * s.OW;
  if (s.N <= 0 || s.K <= 0 || P <= 0) return;
  if (Cg == 1 && Mg == 1) return depthwise<BF16>(s, x, w, y, ep);
  const bool pointwise = s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
                         s.pad_left == 0 && s.OH == s.H && s.OW == s.W;
  for (int n = 0; n < s.N; ++n) {
    for (int g = 0; g < s.groups; ++g) {
      const float* xg = x + (static_cast<size_t>(n) * s.C + static_cast<size_t>(g) * Cg) * s.H * s.W;
      if (pointwise) {  // a 1x1 stride-1 unpadded conv: im2col is the input itself, packed like weights
        if constexpr (BF16) pack_b_bf16(Cg, P, xg, P, false, scratch);
        else pack_b_f32(Cg, P, xg, P, false, scratch);
      } else {
        im2col_packed<BF16>(s, xg, scratch);
      }
      const Epilogue e = group_epilogue(s, ep, n, g * Mg);
      const W* wg = w + static_cast<size_t>(g) * Mg * Kg;
      float* yg = y + (static_cast<size_t>(n) * s.K + static_cast<size_t>(g) * Mg) * P;
      if constexpr (BF16) gemm_bf16_a16(Mg, P, Kg, wg, Kg, scratch, yg, P, e);
      else gemm_f32(Mg, P, Kg, wg, Kg, scratch, yg, P, e);
    }
  }
}

}  // namespace

size_t conv2d_scratch_elems(const Conv2dShape& s, bool bf16) {
  const int Kg = s.C / s.groups * s.R * s.S, P = s.OH * s.OW;
  return bf16 ? packed_b_elems_bf16(Kg, P) : packed_b_elems_f32(Kg, P);
}

void conv2d_f32(const Conv2dShape& s, const float* x, const float* w, float* y, const Epilogue& ep, float* scratch) {
  conv2d_any<false>(s, x, w, y, ep, scratch);
}

void conv2d_bf16(const Conv2dShape& s, const float* x, const uint16_t* w, float* y, const Epilogue& ep,
                 uint16_t* scratch) {
  conv2d_any<true>(s, x, w, y, ep, scratch);
}

}  // namespace ACCELC_NS
