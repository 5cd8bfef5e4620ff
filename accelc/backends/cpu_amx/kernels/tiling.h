// Internal: the work split shared by the GEMMs (accelc_gemm.cpp) and the NHWC convolution
// (accelc_conv.cpp). Both compute C = A x packed B in tasks of (block of rows) x (group of 16-column
// panels), so they plan their tasks the same way. Internal linkage inside ACCELC_NS, as scratch.h.
//
// A task walks its panels in the outer loop and its row micro-blocks in the inner one, so one B panel
// (K x 64 bytes) stays in L1 while the A block (mb x K) is re-read from L2. Tasks are handed out
// dynamically, one at a time, in row-block order: on a quiet machine each thread still works through
// one row block's panel groups at a time, and when a thread loses its core (another process) the
// others take over its remaining tasks instead of waiting for it at the end (ResNet-50 at 2 threads
// beside one busy process: 214 -> 112 ms; unchanged when quiet). A task's result does not depend on
// which thread runs it.
#pragma once

#include <omp.h>

namespace ACCELC_NS {
namespace {

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
inline int round_up(int a, int b) { return ceil_div(a, b) * b; }

// The size of the blocks that cut n items into about `target` each, their count a multiple of `threads`
// and their sizes within one of each other, so that every thread gets the same share.
inline int even_block(int n, int target, int threads) { return ceil_div(n, round_up(ceil_div(n, target), threads)); }

// Below this many multiply-adds a product runs on the calling thread: waking an OpenMP team costs a
// few microseconds, more than such a product takes.
constexpr double kParallelMinMacs = 1 << 17;

inline int plan_threads(double macs) { return macs < kParallelMinMacs ? 1 : omp_get_max_threads(); }

struct Tiling {
  int mb, pb, mblocks, pblocks;
};

// Tasks of `mb` rows times up to 8 panels (128 columns), pb a multiple of pb_align; fewer panels per
// task while that leaves threads without two tasks each. A Blocking's non-zero fields replace the
// planned row block and panel group (accelc_gemm.h); the result is the same either way.
inline Tiling plan_tiles(int M, int npanels, int mb, int pb_align, double macs, const Blocking& blk = Blocking()) {
  Tiling t;
  t.mb = blk.rows > 0 ? (blk.rows < M ? blk.rows : (M > 0 ? M : 1)) : mb;
  t.mblocks = ceil_div(M, t.mb);
  const int threads = plan_threads(macs);
  if (blk.panels > 0) {
    t.pb = round_up(blk.panels, pb_align);
  } else {
    t.pb = round_up(8, pb_align);
    while (t.pb > pb_align && static_cast<long>(t.mblocks) * ceil_div(npanels, t.pb) < 2L * threads)
      t.pb -= pb_align;
  }
  t.pblocks = ceil_div(npanels, t.pb);
  // Too few panels for two tasks per thread (a narrow product: a classifier's 5 columns over 1024 rows):
  // the rows split instead, into blocks of about 96 (jet MLP b1024: one thread did all of its last layer;
  // the tuner found it, and the whole model runs 1.09x faster). Not inside a parallel region, where
  // the product runs on the calling thread anyway.
  if (blk.rows <= 0 && threads > 1 && !omp_in_parallel() && t.mblocks * t.pblocks < 2 * threads &&
      M >= 32 * threads) {
    t.mb = even_block(M, 96, threads);
    t.mblocks = ceil_div(M, t.mb);
  }
  return t;
}

// Rows per block for an f32 product whose A rows (K floats each) stream past packed weights. The rows
// form one block when there are at most 192 of them or their A block fits in half of a 512 KiB L2: a
// task then reads each of its B panels (weights, from memory) once and reuses it for all rows from
// L1/L2 (ResNet-50's 196 x 1024 x 256 layers, A = 196 KiB, used to run as six blocks that each
// fetched all 1 MiB of B again). More rows split into blocks of about 48, their count
// a multiple of the thread count and their sizes about equal, so that every thread gets the same
// rows (784 rows of K = 512 on 2 threads: 18 blocks of 44 rows or fewer rather than 16 x 48 + 16).
inline int balanced_row_block(int M, int K, double macs) {
  if (M <= 192 || static_cast<double>(M) * K * sizeof(float) <= 256.0 * 1024) return M;
  return even_block(M, 48, plan_threads(macs));
}

// The rows of a task split into the fewest micro-blocks of <= MR rows, of sizes differing by at most
// one (49 rows with MR = 6: 6,6,6,6,5,5,5,5,5 rather than 8 x 6 + 1): a block of very few rows is load
// bound.
template <int MR>
struct RowBlocks {
  int nblk, base, extra;
  explicit RowBlocks(int rows)
      : nblk(ceil_div(rows, MR)), base(nblk > 0 ? rows / nblk : 0), extra(nblk > 0 ? rows % nblk : 0) {}
  int start(int b) const { return b * base + (b < extra ? b : extra); }
  int size(int b) const { return base + (b < extra ? 1 : 0); }
};

}  // namespace
}  // namespace ACCELC_NS
