// accelc cpu_amx Winograd convolution for NHWC 3x3 stride-1 layers (see accelc_gemm.h).
//
// F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): the output
// is cut into m x m tiles; each tile's (m+2) x (m+2) input patch d and each filter g are transformed,
// V = B^T d B and U = G g G^T, and the tile is Y = A^T [sum_c U[c] (.) V[c]] A. The channel sum at each
// of the a*a = (m+2)^2 transformed positions is a GEMM, [tiles x C] x [C x K], so a tile costs a*a
// multiply-adds per (input, output) channel pair instead of 9*m*m: 16 vs 36 for m = 2, 36 vs 144 for
// m = 4. U is computed and packed at compile time (packing.py, pack_winograd_f32).
//
// Work split: tiles (of all images) are cut into blocks; a block is one task, run start to finish on one
// thread with per-thread buffers: the input transform writes V[pos][tile][C], a GEMM per position
// (gemm_f32 on the calling thread, the weights U[pos] packed as its B) writes Mt[pos][tile][K], and the
// output transform applies A^T . A and the fused epilogue (bias, residual, activation) per output
// pixel. Channels are the vector axis throughout, so the transforms are plain vector adds. Tiles over the
// image edge read zeros for the missing input pixels and store only the output pixels that exist. Layers
// of few tiles run as one block shared by all threads instead (run_shared).
//
// Rounding differs from the direct convolution: the transforms add and scale before multiplying. Worst
// error seen over the kernel tests' shapes, relative to sum |x||w| of the output: F(2x2) 1.4e-7, about
// the direct kernel's own (2.6e-7); F(4x4) 2.0e-6, since its transforms hold 4, 5 and 8. A NaN or inf
// input pixel reaches every output of each tile whose input patch holds it (the transforms mix the
// patch), not only the outputs whose 3x3 window holds it. Deterministic and thread-count independent:
// every output element takes the same operations in the same order whichever thread runs its block.
#include <omp.h>

#include "accelc_gemm.h"
#include "epilogue.h"
#include "scratch.h"
#include "tiling.h"

namespace ACCELC_NS {
namespace {
namespace wino {

using simd::kW;
using simd::vf;

static thread_local ScratchBuffer t_wino_scratch = {nullptr, 0};

inline int imin(int a, int b) { return a < b ? a : b; }

// 1-D transforms over a = M + 2 points: in, v = B^T d; out, y = A^T t (M points).
template <int M>
struct Tf;

template <>
struct Tf<2> {
  static constexpr int A = 4;
  ACCELC_INLINE static void in(const vf* d, vf* v) {
    v[0] = d[0] - d[2];
    v[1] = d[1] + d[2];
    v[2] = d[2] - d[1];
    v[3] = d[1] - d[3];
  }
  ACCELC_INLINE static void out(const vf* t, vf* y) {
    y[0] = t[0] + t[1] + t[2];
    y[1] = t[1] - t[2] - t[3];
  }
};

template <>
struct Tf<4> {
  static constexpr int A = 6;
  ACCELC_INLINE static void in(const vf* d, vf* v) {
    const vf c4 = simd::vset1(4.f), c5 = simd::vset1(5.f), c2 = simd::vset1(2.f);
    const vf d4_d2 = d[4] - d[2], d3_d1 = d[3] - d[1];
    v[0] = simd::vfma(c4, d[0], d[4]) - c5 * d[2];                  // 4 d0 - 5 d2 + d4
    const vf s12 = d[1] + d[2], s34 = d[3] + d[4];
    v[1] = s34 - c4 * s12;                                             // -4 d1 - 4 d2 + d3 + d4
    v[2] = simd::vfma(c4, d[1] - d[2], d[4] - d[3]);                  // 4 d1 - 4 d2 - d3 + d4
    v[3] = simd::vfma(c2, d3_d1, d4_d2);                              // -2 d1 - d2 + 2 d3 + d4
    v[4] = d4_d2 - c2 * d3_d1;                                         // 2 d1 - d2 - 2 d3 + d4
    v[5] = simd::vfma(c4, d[1], d[5]) - c5 * d[3];                  // 4 d1 - 5 d3 + d5
  }
  ACCELC_INLINE static void out(const vf* t, vf* y) {
    const vf c2 = simd::vset1(2.f), c4 = simd::vset1(4.f), c8 = simd::vset1(8.f);
    const vf p12 = t[1] + t[2], m12 = t[1] - t[2], p34 = t[3] + t[4], m34 = t[3] - t[4];
    y[0] = t[0] + p12 + p34;
    y[1] = simd::vfma(c2, m34, m12);
    y[2] = simd::vfma(c4, p34, p12);
    y[3] = simd::vfma(c8, m34, m12) + t[5];
  }
};

// Tiles of the layer: th x tw per image, indexed t = (n*th + i)*tw + j.
struct Grid {
  Conv2dShape s;
  int th, tw, tiles;
  // Image n of tile t and the (row, column) of its first output pixel, for tiles of M x M pixels.
  template <int M>
  void origin(int t, int& n, int& oh0, int& ow0) const {
    n = t / (th * tw);
    const int q = t % (th * tw);
    oh0 = (q / tw) * M;
    ow0 = (q % tw) * M;
  }
};

// The per-call buffers, carved from one thread's scratch: a zero row (ldv floats, the input of taps in
// the padding), then V (vfl floats) and Mt.
struct Buffers {
  float *zero, *V, *Mt;
};
inline Buffers carve_buffers(int ldv, size_t vfl, size_t mfl) {
  const size_t bytes = (static_cast<size_t>(ldv) + vfl + mfl) * sizeof(float);
  float* zero = static_cast<float*>(thread_scratch(t_wino_scratch, bytes, "Winograd convolution scratch"));
  for (int c = 0; c < ldv; ++c) zero[c] = 0.f;
  return {zero, zero + ldv, zero + ldv + vfl};
}

// V[pos][i][c] (ld = ldv per tile row, pos stride pstride) for tiles [t0, t0 + rows) of x.
template <int M>
void transform_input(const Grid& g, const float* x, int t0, int rows, const float* zero, float* V, int ldv,
                     size_t pstride) {
  constexpr int A = Tf<M>::A;
  const Conv2dShape& s = g.s;
  for (int i = 0; i < rows; ++i) {
    int n, oh0, ow0;
    g.origin<M>(t0 + i, n, oh0, ow0);
    const int ih0 = oh0 - s.pad_top, iw0 = ow0 - s.pad_left;
    const float* img = x + static_cast<size_t>(n) * s.H * s.W * s.C;
    const float* src[A][A];
    for (int r = 0; r < A; ++r)
      for (int c = 0; c < A; ++c) {
        const int ih = ih0 + r, iw = iw0 + c;
        src[r][c] = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W ? img + (static_cast<size_t>(ih) * s.W + iw) * s.C : zero;
      }
    float* out = V + static_cast<size_t>(i) * ldv;
    for (int c = 0; c < s.C; c += kW) {
      const int cnt = imin(kW, s.C - c);
      vf t[A][A];  // t = B^T d: the row transform of each input column
#pragma GCC unroll 6
      for (int col = 0; col < A; ++col) {
        vf d[A];
#pragma GCC unroll 6
        for (int r = 0; r < A; ++r) d[r] = cnt == kW ? simd::vload(src[r][col] + c) : simd::vload_n(src[r][col] + c, cnt);
        vf v[A];
        Tf<M>::in(d, v);
#pragma GCC unroll 6
        for (int r = 0; r < A; ++r) t[r][col] = v[r];
      }
#pragma GCC unroll 6
      for (int r = 0; r < A; ++r) {  // then t B along each row
        vf v[A];
        Tf<M>::in(t[r], v);
#pragma GCC unroll 6
        for (int col = 0; col < A; ++col) simd::vstore(out + (r * A + col) * pstride + c, v[col]);
      }
    }
  }
}

// y for tiles [t0, t0 + rows) from Mt[pos][i][k] (ld = ldm, pos stride pstride), through the epilogue.
template <int M>
void transform_output(const Grid& g, const float* Mt, int ldm, size_t pstride, int t0, int rows, float* y,
                      const Epilogue& ep) {
  constexpr int A = Tf<M>::A;
  const Conv2dShape& s = g.s;
  for (int i = 0; i < rows; ++i) {
    int n, oh0, ow0;
    g.origin<M>(t0 + i, n, oh0, ow0);
    const int vh = imin(M, s.OH - oh0), vw = imin(M, s.OW - ow0);  // output pixels that exist
    const int m_first = (n * s.OH + oh0) * s.OW + ow0;               // epilogue row of pixel (oh0, ow0)
    const float* in = Mt + static_cast<size_t>(i) * ldm;
    for (int k = 0; k < s.K; k += kW) {
      const int cnt = imin(kW, s.K - k);
      vf t[M][A];  // A^T m: the column transform of each transformed column
#pragma GCC unroll 6
      for (int col = 0; col < A; ++col) {
        vf d[A];
#pragma GCC unroll 6
        for (int r = 0; r < A; ++r) d[r] = simd::vload(in + (r * A + col) * pstride + k);
        vf o[M];
        Tf<M>::out(d, o);
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) t[r][col] = o[r];
      }
#pragma GCC unroll 4
      for (int r = 0; r < M; ++r) {
        if (r >= vh) break;
        vf o[M];
        Tf<M>::out(t[r], o);
        const int m_row = m_first + r * s.OW;
        float* yr = y + static_cast<size_t>(m_row) * s.K + k;
#pragma GCC unroll 4
        for (int c = 0; c < M; ++c) {
          if (c >= vw) break;
          if (cnt == kW) epi::store<true>(o[c], yr + static_cast<size_t>(c) * s.K, s.K, m_row + c, k, kW, ep);
          else epi::store<false>(o[c], yr + static_cast<size_t>(c) * s.K, s.K, m_row + c, k, cnt, ep);
        }
      }
    }
  }
}

// Layers of few tiles (a 7x7 or 14x14 image at batch 1) would give each thread a small block that reads
// all (m+2)^2 transformed filters. Instead the threads share one block of all tiles: they split the
// input transform by tiles, then the per-position GEMMs by (position, group of output-channel panels),
// so every filter byte is read once, then the output transform by tiles. Each output element takes the
// same operations as in run's blocks (a GEMM column's sums do not depend on the other columns), so the
// two ways agree bit for bit.
constexpr int kShareTiles = 24;

template <int M>
void run_shared(const Grid& g, const float* x, const float* packed, float* y, const Epilogue& ep, int threads) {
  constexpr int A = Tf<M>::A, P = A * A, kPanels = 4;
  const Conv2dShape& s = g.s;
  const int ldv = round_up(s.C, kW), ldm = round_up(s.K, kW), tiles = g.tiles;
  const size_t u_stride = packed_b_elems_f32(s.C, s.K);
  const size_t vps = static_cast<size_t>(tiles) * ldv, mps = static_cast<size_t>(tiles) * ldm;
  const Buffers buf = carve_buffers(ldv, P * vps, P * mps);
  const float* zero = buf.zero;
  float *V = buf.V, *Mt = buf.Mt;
  const int pgroups = ceil_div(ceil_div(s.K, 16), kPanels), tasks = P * pgroups;
  const int per = ceil_div(tiles, threads);
  Epilogue plain;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int lo = t * per, n = imin(per, tiles - lo);
      if (n > 0) transform_input<M>(g, x, lo, n, zero, V + static_cast<size_t>(lo) * ldv, ldv, vps);
    }
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) {
      const int pos = task / pgroups, n0 = (task % pgroups) * kPanels * 16;
      gemm_f32(tiles, imin(kPanels * 16, s.K - n0), s.C, V + pos * vps, ldv,
               packed + pos * u_stride + static_cast<size_t>(n0) * s.C, Mt + pos * mps + n0, ldm, plain);
    }
#pragma omp for schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int lo = t * per, n = imin(per, tiles - lo);
      if (n > 0) transform_output<M>(g, Mt + static_cast<size_t>(lo) * ldm, ldm, mps, lo, n, y, ep);
    }
  }
}

template <int M>
void run(const Conv2dShape& s, const float* x, const float* packed, float* y, const Epilogue& ep, const Blocking& blk) {
  constexpr int A = Tf<M>::A, P = A * A;
  Grid g{s, ceil_div(s.OH, M), ceil_div(s.OW, M), 0};
  g.tiles = s.N * g.th * g.tw;
  const double macs = static_cast<double>(g.tiles) * P * s.C * s.K;
  const int threads = plan_threads(macs);
  const bool share = blk.shared == 1 || (blk.shared == 0 && g.tiles < kShareTiles * threads);
  if (threads > 1 && !omp_in_parallel() && share) return run_shared<M>(g, x, packed, y, ep, threads);
  const int ldv = round_up(s.C, kW), ldm = round_up(s.K, kW);
  const size_t u_stride = packed_b_elems_f32(s.C, s.K);
  // Blocks of about 48 tiles (a GEMM of 48 rows reuses each weight panel 48 times from L1) or blk.rows,
  // evenly over the threads.
  const int tb = even_block(g.tiles, blk.rows > 0 ? blk.rows : 48, threads), nblocks = ceil_div(g.tiles, tb);
  const size_t vfl = static_cast<size_t>(P) * tb * ldv, mfl = static_cast<size_t>(P) * tb * ldm;
  const bool parallel = nblocks > 1 && threads > 1 && !omp_in_parallel();
  Epilogue plain;  // the per-position GEMMs store their sums as they are
#pragma omp parallel if (parallel)
  {
    const Buffers buf = carve_buffers(ldv, vfl, mfl);  // each thread's own
#pragma omp for schedule(dynamic, 1)
    for (int b = 0; b < nblocks; ++b) {
      const int t0 = b * tb, rows = imin(tb, g.tiles - t0);
      const size_t vps = static_cast<size_t>(rows) * ldv, mps = static_cast<size_t>(rows) * ldm;
      transform_input<M>(g, x, t0, rows, buf.zero, buf.V, ldv, vps);
      for (int pos = 0; pos < P; ++pos)
        gemm_f32(rows, s.K, s.C, buf.V + pos * vps, ldv, packed + pos * u_stride, buf.Mt + pos * mps, ldm, plain);
      transform_output<M>(g, buf.Mt, ldm, mps, t0, rows, y, ep);
    }
  }
}

}  // namespace wino
}  // namespace

size_t winograd_packed_elems(int C, int K, int m) {
  const int a = m + 2;
  return static_cast<size_t>(a) * a * packed_b_elems_f32(C, K);
}

bool winograd_supported(const Conv2dShape& s, int m) {
  return (m == 2 || m == 4) && s.groups == 1 && s.R == 3 && s.S == 3 && s.stride_h == 1 && s.stride_w == 1 &&
         s.dil_h == 1 && s.dil_w == 1;
}

void conv2d_winograd_nhwc_f32(const Conv2dShape& s, int m, const float* x, const float* packed_u, float* y,
                              const Epilogue& ep, const Blocking& blk) {
  if (s.N <= 0 || s.C <= 0 || s.K <= 0 || s.OH <= 0 || s.OW <= 0) return;
  if (m == 4) wino::run<4>(s, x, packed_u, y, ep, blk);
  else wino::run<2>(s, x, packed_u, y, ep, blk);
}

}  // namespace ACCELC_NS
