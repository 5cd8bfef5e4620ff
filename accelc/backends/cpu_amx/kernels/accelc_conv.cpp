// accelc cpu_amx convolution, two layouts:
// - NCHW (conv2d_f32/bf16): im2col-in-packed-B + the GEMMs of accelc_gemm.cpp, and a direct kernel for
//   depthwise convolutions (one input and one output channel per group), whose per-group GEMM would
//   have a single row and a K of R*S: all packing, no arithmetic. bf16 and 1-D convolutions use it.
// - NHWC (conv2d_nhwc_f32, second half of this file): an implicit GEMM without im2col, for the fp32
//   convolutions the backend's layout pass turns channels-last.
#include <omp.h>

#include <cstring>

#include "accelc_gemm.h"
#include "epilogue.h"
#include "scratch.h"
#include "tiling.h"

namespace ACCELC_NS {

namespace {

using simd::bf16_to_f32;
using simd::f32_to_bf16;

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

// =================================================================================================
// NHWC convolution (see accelc_gemm.h): an implicit GEMM whose rows are output pixels and whose
// columns are output channels. One micro-kernel serves every case: a block of kMR pixel rows times
// NP packed panels, with k walking `nseg` segments of L contiguous floats of each row's A operand:
//   - general: a segment is one kernel tap (L = Cg), read in place from x (or a zero row in padding);
//   - small Cg: a segment is one kernel row (L = S*Cg), read in place from x where its S taps are one
//     contiguous run of x inside the image, else gathered (zero padded) into per-thread scratch.
// The packed weights hold k in the same (tap, channel) order, so the kernel reads each panel straight
// through. Every output element is one FMA chain over the full K in a fixed order, whatever the
// tiling and the thread count.
// =================================================================================================
namespace ACCELC_NS {
namespace {

namespace nhwc {

using simd::kW;
using simd::vf;

constexpr int kVPP = 16 / kW;  // vectors per 16-column panel
#if ACCELC_SIMD_512
constexpr int kMR = 12, kNP = 2;  // 24 zmm accumulators, as the AVX-512 GEMM kernel
#elif defined(ACCELC_NHWC_PANEL_PAIRS)
// Tests only (tests/test_kernels_cpu.py, variant avx2_pairs): the AVX-512 tiling's panel pairs on AVX2
// registers, so that the pair logic (pairs never straddle a group, odd panel counts) runs on CPUs
// without AVX-512.
constexpr int kMR = 3, kNP = 2;
#else
constexpr int kMR = 6, kNP = 1;   // 12 ymm accumulators, as the AVX2 GEMM kernel
#endif
// Below this many channels per group a tap is too short a K run for the pointer-per-tap kernel; the
// segments are then whole kernel rows (ResNet stem, C = 3: 21-float segments, ~82 GFLOP/s on Zen 3).
constexpr int kSmallCg = 16;

// C[m0 .. m0+MR, n0 .. n0+cols) for cols <= NP*16. Row i reads A from ptrs[sg*kMR + i] + goff for
// segment sg; the panels are Bp, Bp + pstride, ... (nseg*L rows of 16 floats each). Width-generic
// (simd::vf): AVX2 runs 6 rows x 2 ymm, AVX-512 12 rows x NP zmm, as the GEMM micro-kernels do.
template <int MR, int NP, bool SIMPLE>
void block(int nseg, int L, const float* const* ptrs, ptrdiff_t goff, const float* Bp, size_t pstride, float* C,
           int ldc, int m0, int n0, int cols, const Epilogue& ep) {
  constexpr int NV = NP * kVPP;
  vf acc[MR][NV];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = simd::vzero();
  epi::prefetch_residual<MR>(m0, n0, cols, ep);
  const float* b = Bp;
  for (int sg = 0; sg < nseg; ++sg, b += static_cast<size_t>(L) * 16) {
    const float* a[MR];
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) a[i] = ptrs[sg * kMR + i] + goff;
#pragma GCC unroll 2
    for (int k = 0; k < L; ++k) {
      vf bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = simd::vload(b + (v / kVPP) * pstride + k * 16 + (v % kVPP) * kW);
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        const vf av = simd::vset1(a[i][k]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = simd::vfma(av, bv[v], acc[i][v]);
      }
    }
  }
  if constexpr (SIMPLE) {
    epi::store_tile_simple<MR, NV>(acc, C, ldc, m0, n0, cols, ep);
    return;
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    float* c = C + static_cast<size_t>(i) * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const int cnt = cols - v * kW;
      if (cnt <= 0) break;
      if (cnt >= kW) epi::store<true>(acc[i][v], c + v * kW, ldc, m0 + i, n0 + v * kW, kW, ep);
      else epi::store<false>(acc[i][v], c + v * kW, ldc, m0 + i, n0 + v * kW, cnt, ep);
    }
  }
}

// Compile-time row counts for the last, partial row block.
template <int NP, bool SIMPLE, int MR = kMR>
ACCELC_INLINE void block_rows(int rows, int nseg, int L, const float* const* ptrs, ptrdiff_t goff, const float* Bp,
                              size_t pstride, float* C, int ldc, int m0, int n0, int cols, const Epilogue& ep) {
  if constexpr (MR > 0) {
    if (rows == MR) return block<MR, NP, SIMPLE>(nseg, L, ptrs, goff, Bp, pstride, C, ldc, m0, n0, cols, ep);
    return block_rows<NP, SIMPLE, MR - 1>(rows, nseg, L, ptrs, goff, Bp, pstride, C, ldc, m0, n0, cols, ep);
  }
}

// Small copies (a few channels to a few hundred floats) as inline vector moves.
ACCELC_INLINE void copy_n(float* dst, const float* src, int n) {
  if (n < kW) {
    for (int u = 0; u < n; ++u) dst[u] = src[u];
    return;
  }
  int u = 0;
  for (; u + kW <= n; u += kW) simd::vstore(dst + u, simd::vload(src + u));
  if (u < n) simd::vstore(dst + n - kW, simd::vload(src + n - kW));  // the last kW floats, overlapping
}
ACCELC_INLINE void zero_n(float* dst, int n) {
  int u = 0;
  for (; u + kW <= n; u += kW) simd::vstore(dst + u, simd::vzero());
  for (; u < n; ++u) dst[u] = 0.f;
}

// Per-thread scratch of a task: the zero row (max(C, S*Cg) floats), the pointer table and the gathered
// segments of the small-Cg path.
static thread_local ScratchBuffer t_conv_scratch = {nullptr, 0};

using RowBlocks = ::ACCELC_NS::RowBlocks<kMR>;   // tiling.h

struct Geometry {
  Conv2dShape s;  // a copy: the table builders' stores could otherwise alias it
  int Cg, Mg, Kg, taps, npg, P;
};

// Output pixels m0, m0 + 1, ... in order: the top-left input position of each one's window and its
// image, without a division per pixel.
struct PixelWalk {
  const Conv2dShape& s;
  int oh, ow, ih0, iw0;
  const float* img;
  size_t img_floats;
  PixelWalk(const Conv2dShape& sh, const float* x, int m) : s(sh) {
    const int P = s.OH * s.OW, n = m / P, q = m % P;
    oh = q / s.OW;
    ow = q % s.OW;
    ih0 = oh * s.stride_h - s.pad_top;
    iw0 = ow * s.stride_w - s.pad_left;
    img_floats = static_cast<size_t>(s.H) * s.W * s.C;
    img = x + static_cast<size_t>(n) * img_floats;
  }
  void next() {
    iw0 += s.stride_w;
    if (++ow < s.OW) return;
    ow = 0;
    iw0 = -s.pad_left;
    ih0 += s.stride_h;
    if (++oh < s.OH) return;
    oh = 0;
    ih0 = -s.pad_top;
    img += img_floats;
  }
};

// Pointer table of rows [m0, m1) for the general path: table[(blk*taps + t)*kMR + i] is the first
// channel (of group 0) of row i of micro-block blk (RowBlocks) at tap t, or `zero` where the tap lies
// in the padding (entries past a block's size point at `zero` too and are never read).
void build_tap_table(const Geometry& G, const float* x, int m0, int m1, const float* zero, const float** table) {
  const Conv2dShape s = G.s;
  const int taps = G.taps;
  const RowBlocks rb(m1 - m0);
  PixelWalk px(s, x, m0);
  for (int blk = 0; blk < rb.nblk; ++blk) {
    const float** tb = table + static_cast<size_t>(blk) * taps * kMR;
    for (int i = 0; i < kMR; ++i) {
      if (i >= rb.size(blk)) {
        for (int t = 0; t < taps; ++t) tb[t * kMR + i] = zero;
        continue;
      }
      for (int r = 0; r < s.R; ++r) {
        const int ih = px.ih0 + r * s.dil_h;
        const bool row_in = ih >= 0 && ih < s.H;
        const float* row = row_in ? px.img + static_cast<size_t>(ih) * s.W * s.C : zero;
        for (int t = 0; t < s.S; ++t) {
          const int iw = px.iw0 + t * s.dil_w;
          tb[(r * s.S + t) * kMR + i] = row_in && iw >= 0 && iw < s.W ? row + static_cast<ptrdiff_t>(iw) * s.C : zero;
        }
      }
      px.next();
    }
  }
}

// Small Cg: the taps of kernel row r of row m form one K segment of L = S*Cg floats,
// [(r*S + t)*Cg + c]. Where that run lies in x as is (groups == 1, no horizontal dilation, all S taps
// inside the image) the table points into x; a kernel row in the vertical padding points at `zero`
// (>= L zeros); any other run is gathered, zero padded, into its slot A[((m - m0)*R + r)*L].
// table[(blk*R + r)*kMR + i] as in build_tap_table.
void build_small_table(const Geometry& G, const float* x, int m0, int m1, int g, const float* zero, float* A,
                       const float** table) {
  const Conv2dShape s = G.s;
  const int Cg = G.Cg, L = s.S * Cg;
  const bool contiguous = Cg == s.C && s.dil_w == 1;
  const RowBlocks rb(m1 - m0);
  PixelWalk px(s, x, m0);
  for (int blk = 0; blk < rb.nblk; ++blk) {
    const float** tb = table + static_cast<size_t>(blk) * s.R * kMR;
    for (int i = 0; i < kMR; ++i) {
      const int m = m0 + rb.start(blk) + i;
      if (i >= rb.size(blk)) {
        for (int r = 0; r < s.R; ++r) tb[r * kMR + i] = zero;
        continue;
      }
      // taps [tlo, thi) of a kernel row lie inside the image horizontally
      int tlo = 0, thi = s.S;
      while (tlo < thi && px.iw0 + tlo * s.dil_w < 0) ++tlo;
      while (thi > tlo && px.iw0 + (thi - 1) * s.dil_w >= s.W) --thi;
      for (int r = 0; r < s.R; ++r) {
        const int ih = px.ih0 + r * s.dil_h;
        if (ih < 0 || ih >= s.H || tlo == thi) {
          tb[r * kMR + i] = zero;
          continue;
        }
        // tap tlo's channels of group g
        const float* src = px.img + (static_cast<size_t>(ih) * s.W + (px.iw0 + tlo * s.dil_w)) * s.C +
                           static_cast<size_t>(g) * Cg;
        if (contiguous && tlo == 0 && thi == s.S) {
          tb[r * kMR + i] = src;
          continue;
        }
        float* dst = A + (static_cast<size_t>(m - m0) * s.R + r) * L;
        zero_n(dst, tlo * Cg);
        if (contiguous) {
          copy_n(dst + tlo * Cg, src, (thi - tlo) * Cg);
        } else {
          for (int t = tlo; t < thi; ++t)
            copy_n(dst + t * Cg, src + static_cast<size_t>(t - tlo) * s.dil_w * s.C, Cg);
        }
        zero_n(dst + thi * Cg, (s.S - thi) * Cg);
        tb[r * kMR + i] = dst;
      }
      px.next();
    }
  }
}

void general(const Conv2dShape& s, const float* x, const float* packed, float* y, const Epilogue& ep,
             const Blocking& blk) {
  Geometry G{s, s.C / s.groups, s.K / s.groups, 0, s.R * s.S, 0, s.OH * s.OW};
  G.Kg = G.taps * G.Cg;
  G.npg = ceil_div(G.Mg, 16);
  const int M = s.N * G.P, npanels = s.groups * G.npg;
  const size_t pstride = static_cast<size_t>(G.Kg) * 16;  // group g's panels follow group g-1's
  const bool small = G.Cg < kSmallCg;
  const int nseg = small ? s.R : G.taps, L = small ? s.S * G.Cg : G.Cg;
  const double macs = static_cast<double>(M) * s.K * G.Kg;

  // Tiles planned as for gemm_f32 (tiling.h), panel groups a multiple of kNP; the loop below is
  // for_each_task's, with the per-thread scratch set up once per thread.
  const Tiling t = plan_tiles(M, npanels, balanced_row_block(M, G.Kg, macs), kNP, macs, blk);
  const int mb = t.mb, pb = t.pb, pblocks = t.pblocks, tasks = t.mblocks * t.pblocks;
  const int max_blk = ceil_div(mb, kMR);
  const size_t zero_floats = static_cast<size_t>(round_up(imax(s.C, L), 16));
  const size_t table_ptrs = static_cast<size_t>(max_blk) * nseg * kMR;
  const size_t a_floats = small ? static_cast<size_t>(mb) * G.Kg : 0;
  const size_t bytes = zero_floats * sizeof(float) + table_ptrs * sizeof(float*) + a_floats * sizeof(float);
  const bool parallel = tasks > 1 && macs >= kParallelMinMacs && !omp_in_parallel();
  const bool simple = epi::is_simple(ep);

#pragma omp parallel if (parallel)
  {
    char* base = static_cast<char*>(thread_scratch(t_conv_scratch, bytes, "convolution scratch"));
    float* zero = reinterpret_cast<float*>(base);
    const float** table = reinterpret_cast<const float**>(base + zero_floats * sizeof(float));
    float* A = reinterpret_cast<float*>(base + zero_floats * sizeof(float) + table_ptrs * sizeof(float*));
    zero_n(zero, static_cast<int>(zero_floats));
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) {
      const int mi = task / pblocks, pj = task % pblocks;
      const int m0 = mi * mb, m1 = imin(m0 + mb, M);
      const int p0 = pj * pb, p1 = imin(p0 + pb, npanels);
      const RowBlocks rb(m1 - m0);
      if (!small) build_tap_table(G, x, m0, m1, zero, table);  // small: per group, below
      int built_group = -1;
      for (int p = p0; p < p1;) {
        const int g = p / G.npg, pl = p % G.npg;
        const int np = p + 1 < p1 && (p + 1) / G.npg == g ? kNP : 1;  // panel pairs stay inside a group
        if (small && g != built_group) {
          build_small_table(G, x, m0, m1, g, zero, A, table);
          built_group = g;
        }
        const ptrdiff_t goff = small ? 0 : static_cast<ptrdiff_t>(g) * G.Cg;
        const int n0 = g * G.Mg + pl * 16, cols = imin(G.Mg - pl * 16, np * 16);
        const float* Bp = packed + static_cast<size_t>(p) * pstride;
        for (int blk = 0; blk < rb.nblk; ++blk) {
          const int m = m0 + rb.start(blk), rows = rb.size(blk);
          const float* const* tb = table + static_cast<size_t>(blk) * nseg * kMR;
          float* C = y + static_cast<size_t>(m) * s.K + n0;
          if (np > 1 && simple) block_rows<kNP, true>(rows, nseg, L, tb, goff, Bp, pstride, C, s.K, m, n0, cols, ep);
          else if (np > 1) block_rows<kNP, false>(rows, nseg, L, tb, goff, Bp, pstride, C, s.K, m, n0, cols, ep);
          else if (simple) block_rows<1, true>(rows, nseg, L, tb, goff, Bp, pstride, C, s.K, m, n0, cols, ep);
          else block_rows<1, false>(rows, nseg, L, tb, goff, Bp, pstride, C, s.K, m, n0, cols, ep);
        }
        p += np;
      }
    }
  }
}

// ---- depthwise: y[m][k] = sum_taps x[pixel(m, tap)][k] * wd[tap][k] ---------------------------------
// Vectorised over channels; a block of PX pixels of one output row times CV channel vectors is
// accumulated in registers over all taps (taps in the padding are skipped: they add exact zeros).
// Pixels whose every tap column lies inside the row (all but a few at each edge) take EDGE = false: no
// bounds test per pixel and tap, which otherwise costs more than the arithmetic (144 channels at 56x56:
// ~2x). RS = 3 fixes a 3x3 kernel at compile time (MobileNet's), 0 reads R and S at run time.
template <int PX, int CV, bool TAIL, bool EDGE, int RS>
ACCELC_INLINE void dw_block(const Conv2dShape& s, const float* img, const float* wd, float* y, int m, int ih0,
                            int iw0, int k, int cnt, const Epilogue& ep) {
  const int R = RS ? RS : s.R, S = RS ? RS : s.S;
  const ptrdiff_t px_step = static_cast<ptrdiff_t>(s.stride_w) * s.C, tap_step = static_cast<ptrdiff_t>(s.dil_w) * s.C;
  vf acc[PX][CV];
#pragma GCC unroll 8
  for (int p = 0; p < PX; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) acc[p][v] = simd::vzero();
#pragma GCC unroll 3
  for (int r = 0; r < R; ++r) {
    const int ih = ih0 + r * s.dil_h;
    if (ih < 0 || ih >= s.H) continue;
    const float* xrow = img + static_cast<size_t>(ih) * s.W * s.C + k;
    const float* xt = xrow + static_cast<ptrdiff_t>(iw0) * s.C;   // pixel 0's column at tap 0 (may be padding)
    const float* wt = wd + static_cast<size_t>(r * S) * s.K + k;
#pragma GCC unroll 3
    for (int t = 0; t < S; ++t, xt += tap_step, wt += s.K) {
      vf wv[CV];
#pragma GCC unroll 4
      for (int v = 0; v < CV; ++v) wv[v] = TAIL ? simd::vload_n(wt + v * kW, cnt - v * kW) : simd::vload(wt + v * kW);
#pragma GCC unroll 8
      for (int p = 0; p < PX; ++p) {
        if (EDGE) {
          const int iw = iw0 + p * s.stride_w + t * s.dil_w;
          if (iw < 0 || iw >= s.W) continue;
        }
        const float* xp = xt + p * px_step;
#pragma GCC unroll 4
        for (int v = 0; v < CV; ++v)
          acc[p][v] = simd::vfma(TAIL ? simd::vload_n(xp + v * kW, cnt - v * kW) : simd::vload(xp + v * kW), wv[v],
                                 acc[p][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < PX; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < CV; ++v) {
      float* c = y + static_cast<size_t>(m + p) * s.K + k + v * kW;
      if (TAIL) {
        if (cnt - v * kW > 0) epi::store<false>(acc[p][v], c, s.K, m + p, k + v * kW, imin(kW, cnt - v * kW), ep);
      } else {
        epi::store<true>(acc[p][v], c, s.K, m + p, k + v * kW, kW, ep);
      }
    }
}

// Pixels [ow, ow + PX) of output row (n, oh), channels [k0, k1).
template <int PX, bool EDGE, int RS>
ACCELC_INLINE void dw_pixels(const Conv2dShape& s, const float* img, const float* wd, float* y, int mrow, int ih0,
                             int ow, int k0, int k1, const Epilogue& ep) {
  constexpr int CV = 2;
  const int m = mrow + ow, iw0 = ow * s.stride_w - s.pad_left;
  int k = k0;
  for (; k + CV * kW <= k1; k += CV * kW) dw_block<PX, CV, false, EDGE, RS>(s, img, wd, y, m, ih0, iw0, k, CV * kW, ep);
  for (; k + kW <= k1; k += kW) dw_block<PX, 1, false, EDGE, RS>(s, img, wd, y, m, ih0, iw0, k, kW, ep);
  if (k < k1) dw_block<PX, 1, true, EDGE, RS>(s, img, wd, y, m, ih0, iw0, k, k1 - k, ep);
}

// Interior pixels [ow, ow + PX) of a 3x3 depthwise convolution with stride SW (1 or 2) and no dilation
// along the row, one channel vector (cnt lanes): each input column of a kernel row is loaded once and
// feeds every output it is a tap of (stride 1: 10 loads of x per 24 FMAs instead of 24), and a simple
// epilogue stores the block as one tile. Each output's FMAs come in dw_block's order (kernel row, then
// tap), so the results are the same bits. MobileNet-style layers at 2 threads: 1.08-1.42x.
template <int PX, int SW, bool TAIL, bool SIMPLE>
ACCELC_INLINE void dw3_row_block(const Conv2dShape& s, const float* img, const float* wd, float* y, int m, int ih0,
                                int iw0, int k, int cnt, const Epilogue& ep) {
  const size_t cs = static_cast<size_t>(s.C), ks = static_cast<size_t>(s.K);
  vf acc[PX][1];
#pragma GCC unroll 8
  for (int p = 0; p < PX; ++p) acc[p][0] = simd::vzero();
#pragma GCC unroll 3
  for (int r = 0; r < 3; ++r) {
    const int ih = ih0 + r * s.dil_h;
    if (ih < 0 || ih >= s.H) continue;
    const float* xp = img + (static_cast<size_t>(ih) * s.W + iw0) * cs + k;
    const float* wr = wd + static_cast<size_t>(r * 3) * ks + k;
    vf w[3];
#pragma GCC unroll 3
    for (int t = 0; t < 3; ++t) w[t] = TAIL ? simd::vload_n(wr + t * ks, cnt) : simd::vload(wr + t * ks);
#pragma GCC unroll 16
    for (int j = 0; j < (PX - 1) * SW + 3; ++j) {
      const vf xv = TAIL ? simd::vload_n(xp + j * cs, cnt) : simd::vload(xp + j * cs);
#pragma GCC unroll 3
      for (int t = 0; t < 3; ++t) {   // input column j is tap t of output (j - t) / SW
        const int q = j - t;
        if (q >= 0 && q % SW == 0 && q / SW < PX) acc[q / SW][0] = simd::vfma(xv, w[t], acc[q / SW][0]);
      }
    }
  }
  float* c = y + static_cast<size_t>(m) * ks + k;
  if constexpr (SIMPLE) {
    epi::store_tile_simple<PX, 1>(acc, c, s.K, m, k, cnt, ep);
  } else {
#pragma GCC unroll 8
    for (int p = 0; p < PX; ++p) {
      if (TAIL) epi::store<false>(acc[p][0], c + p * ks, s.K, m + p, k, cnt, ep);
      else epi::store<true>(acc[p][0], c + p * ks, s.K, m + p, k, kW, ep);
    }
  }
}

constexpr int kRowBlock = 8;   // pixels per dw3_row_block

template <int SW, bool SIMPLE>
ACCELC_INLINE void dw3_row_run(const Conv2dShape& s, const float* img, const float* wd, float* y, int m, int ih0,
                               int iw0, int k0, int k1, const Epilogue& ep) {
  int k = k0;
  for (; k + kW <= k1; k += kW) dw3_row_block<kRowBlock, SW, false, SIMPLE>(s, img, wd, y, m, ih0, iw0, k, kW, ep);
  if (k < k1) dw3_row_block<kRowBlock, SW, true, SIMPLE>(s, img, wd, y, m, ih0, iw0, k, k1 - k, ep);
}

// One output row, channels [k0, k1): edge pixels checked, the interior [lo, hi) in blocks of kPX unchecked.
template <int RS>
void dw_row(const Conv2dShape& s, const float* img, const float* wd, float* y, int mrow, int ih0, int k0, int k1,
            const Epilogue& ep) {
  constexpr int kPX = 4;
  const int span = (s.S - 1) * s.dil_w;   // first to last tap column
  // ow*stride - pad >= 0 and ow*stride - pad + span <= W - 1
  const int lo = imin(s.OW, ceil_div(s.pad_left, s.stride_w));
  const int hi = s.W - 1 - span + s.pad_left < 0 ? lo : imax(lo, imin(s.OW, (s.W - 1 - span + s.pad_left) / s.stride_w + 1));
  int ow = 0;
  for (; ow < lo; ++ow) dw_pixels<1, true, RS>(s, img, wd, y, mrow, ih0, ow, k0, k1, ep);
  if (RS == 3 && (s.stride_w == 1 || s.stride_w == 2) && s.dil_w == 1) {
    const bool simple = epi::is_simple(ep);
    for (; ow + kRowBlock <= hi; ow += kRowBlock) {
      const int m = mrow + ow, iw0 = ow * s.stride_w - s.pad_left;
      if (s.stride_w == 1) {
        if (simple) dw3_row_run<1, true>(s, img, wd, y, m, ih0, iw0, k0, k1, ep);
        else dw3_row_run<1, false>(s, img, wd, y, m, ih0, iw0, k0, k1, ep);
      } else {
        if (simple) dw3_row_run<2, true>(s, img, wd, y, m, ih0, iw0, k0, k1, ep);
        else dw3_row_run<2, false>(s, img, wd, y, m, ih0, iw0, k0, k1, ep);
      }
    }
  }
  for (; ow + kPX <= hi; ow += kPX) dw_pixels<kPX, false, RS>(s, img, wd, y, mrow, ih0, ow, k0, k1, ep);
  for (; ow < hi; ++ow) dw_pixels<1, false, RS>(s, img, wd, y, mrow, ih0, ow, k0, k1, ep);
  for (; ow < s.OW; ++ow) dw_pixels<1, true, RS>(s, img, wd, y, mrow, ih0, ow, k0, k1, ep);
}

void depthwise_nhwc(const Conv2dShape& s, const float* x, const float* wd, float* y, const Epilogue& ep) {
  constexpr int kChanBlock = 64;
  const int rows = s.N * s.OH, cblocks = ceil_div(s.K, kChanBlock), tasks = rows * cblocks;
  const double work = static_cast<double>(rows) * s.OW * s.K * s.R * s.S;
  const bool parallel = tasks > 1 && work >= kParallelMinWork && !omp_in_parallel();
  const bool k3x3 = s.R == 3 && s.S == 3;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int task = 0; task < tasks; ++task) {
    const int row = task / cblocks, cb = task % cblocks;
    const int n = row / s.OH, oh = row % s.OH;
    const int k0 = cb * kChanBlock, k1 = imin(k0 + kChanBlock, s.K);
    const float* img = x + static_cast<size_t>(n) * s.H * s.W * s.C;
    const int ih0 = oh * s.stride_h - s.pad_top, mrow = row * s.OW;
    if (k3x3) dw_row<3>(s, img, wd, y, mrow, ih0, k0, k1, ep);
    else dw_row<0>(s, img, wd, y, mrow, ih0, k0, k1, ep);
  }
}

}  // namespace nhwc

}  // namespace

size_t conv_nhwc_packed_elems(const Conv2dShape& s) {
  const int Cg = s.C / s.groups, Mg = s.K / s.groups;
  if (Cg == 1 && Mg == 1) return static_cast<size_t>(s.R) * s.S * s.K;
  return static_cast<size_t>(s.groups) * packed_b_elems_f32(s.R * s.S * Cg, Mg);
}

void pack_conv_nhwc_f32(const Conv2dShape& s, const float* w, float* packed) {
  const int Cg = s.C / s.groups, Mg = s.K / s.groups, taps = s.R * s.S, Kg = taps * Cg;
  if (Cg == 1 && Mg == 1) {
    for (int t = 0; t < taps; ++t)
      for (int k = 0; k < s.K; ++k) packed[static_cast<size_t>(t) * s.K + k] = w[static_cast<size_t>(k) * taps + t];
    return;
  }
  const int npg = ceil_div(Mg, 16);
  for (int g = 0; g < s.groups; ++g) {
    for (int pl = 0; pl < npg; ++pl) {
      float* dst = packed + (static_cast<size_t>(g) * npg + pl) * Kg * 16;
      for (int j = 0; j < 16; ++j) {
        const int m = pl * 16 + j;
        const float* wm = m < Mg ? w + static_cast<size_t>(g * Mg + m) * Kg : nullptr;  // [Cg][R][S]
        for (int t = 0; t < taps; ++t)
          for (int c = 0; c < Cg; ++c) dst[static_cast<size_t>(t * Cg + c) * 16 + j] = wm ? wm[c * taps + t] : 0.f;
      }
    }
  }
}

void conv2d_nhwc_f32(const Conv2dShape& s, const float* x, const float* packed_w, float* y, const Epilogue& ep,
                     const Blocking& blk) {
  const int Cg = s.C / s.groups, Mg = s.K / s.groups;
  if (s.N <= 0 || s.K <= 0 || s.OH <= 0 || s.OW <= 0) return;
  if (Cg == 1 && Mg == 1) return nhwc::depthwise_nhwc(s, x, packed_w, y, ep);
  const bool pointwise = s.groups == 1 && s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 &&
                         s.pad_top == 0 && s.pad_left == 0 && s.OH == s.H && s.OW == s.W;
  if (pointwise) return gemm_f32(s.N * s.OH * s.OW, s.K, s.C, x, s.C, packed_w, y, s.K, ep, blk);
  nhwc::general(s, x, packed_w, y, ep, blk);
}

}  // namespace ACCELC_NS
