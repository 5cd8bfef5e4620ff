// accelc cpu_amx GEMM: B packing, the parallel tile driver and the per-variant kernel choice.
// See accelc_gemm.h for the contract and the per-variant compile flags.
#include "accelc_gemm.h"

#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "epilogue.h"
#include "scratch.h"
#include "tiling.h"
#if defined(ACCELC_VARIANT_AVX2)
#include "ukernels_avx2.h"
#else
#include "ukernels_avx512.h"
#endif
#if defined(ACCELC_VARIANT_AMX)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ukernels_amx.h"
#endif

namespace ACCELC_NS {

namespace {

using simd::bf16_to_f32;
using simd::f32_to_bf16;

// ---- work split (tiling.h) ------------------------------------------------------------------
// Runs body(m0, m1, p0, p1, ctx) for every task. Each participating thread constructs one ThreadCtx
// (constructed and destroyed on that thread) for per-thread state: the AMX tile configuration, the
// widened B panel of the AVX2 bf16 path.
struct NoThreadCtx {};

template <class ThreadCtx = NoThreadCtx, class Body>
void for_each_task(int M, int npanels, const Tiling& t, double macs, Body body) {
  const int tasks = t.mblocks * t.pblocks;
  auto run = [&](int task, ThreadCtx& ctx) {
    const int mi = task / t.pblocks, pj = task % t.pblocks;
    const int m0 = mi * t.mb, m1 = m0 + t.mb < M ? m0 + t.mb : M;
    const int p0 = pj * t.pb, p1 = p0 + t.pb < npanels ? p0 + t.pb : npanels;
    body(m0, m1, p0, p1, ctx);
  };
  if (tasks <= 1 || macs < kParallelMinMacs || omp_in_parallel()) {
    // On the calling thread, without an OpenMP construct: even a parallel region that the if clause
    // turns off builds and frees a one-thread team, ~0.7 us, more than a small product takes.
    ThreadCtx ctx;
    for (int task = 0; task < tasks; ++task) run(task, ctx);
    return;
  }
#pragma omp parallel
  {
    ThreadCtx ctx;
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) run(task, ctx);
  }
}

// ---- per-thread scratch for the converted A operand of the bf16 GEMMs (see scratch.h) ------------
static thread_local ScratchBuffer t_a_scratch = {nullptr, 0};

void* a_scratch(size_t bytes) { return thread_scratch(t_a_scratch, bytes, "GEMM scratch"); }

// ---- AMX permission state ----------------------------------------------------------------------
#if defined(ACCELC_VARIANT_AMX)
int g_amx_state = 0;  // 0 not yet asked, 1 granted, -1 refused
const char* g_amx_reason = "";

bool amx_active() {
  int s = __atomic_load_n(&g_amx_state, __ATOMIC_ACQUIRE);
  if (s == 0) {
    const char* reason;
    amx_init(&reason);
    s = __atomic_load_n(&g_amx_state, __ATOMIC_ACQUIRE);
  }
  return s > 0;
}
#endif

// ---- A operand of the bf16 GEMMs ---------------------------------------------------------------
// avx2: fp32 values already rounded to bf16 (the FMA units multiply fp32), row stride K rounded to even.
// avx512/amx: bf16 bits, row stride K rounded to even (vdpbf16ps pairs) or, when AMX tiles are used,
// to 32 (one A tile row) with rows padded to 16 (one A tile). Padding is zero: the B padding is zero
// too, but 0 * NaN would not be.
#if defined(ACCELC_VARIANT_AVX2)
using AElem = float;
#else
using AElem = uint16_t;
#endif

struct ABuffer {
  const AElem* data;
  int ld, rows;
};

template <class Src>
ABuffer prepare_a(int M, int K, const Src* A, int lda, int k_align, int m_align) {
  ABuffer buf;
  buf.ld = round_up(K > 0 ? K : 1, k_align);
  buf.rows = round_up(M, m_align);
  AElem* out = static_cast<AElem*>(a_scratch(static_cast<size_t>(buf.rows) * buf.ld * sizeof(AElem)));
  buf.data = out;
  const bool parallel = static_cast<double>(M) * K >= kParallelMinMacs && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
  for (int m = 0; m < buf.rows; ++m) {
    AElem* dst = out + static_cast<size_t>(m) * buf.ld;
    int k = 0;
    if (m < M) {
      const Src* src = A + static_cast<size_t>(m) * lda;
      if constexpr (sizeof(Src) == 2 && sizeof(AElem) == 2) {
        std::memcpy(dst, src, static_cast<size_t>(K) * 2);
        k = K;
      } else if constexpr (sizeof(Src) == 2) {  // bf16 bits -> fp32 (avx2)
        for (; k < K; ++k) dst[k] = bf16_to_f32(src[k]);
      } else {
#if defined(ACCELC_VARIANT_AVX2)
        for (; k + 8 <= K; k += 8) _mm256_storeu_ps(dst + k, simd::round_to_bf16_f32(_mm256_loadu_ps(src + k)));
        for (; k < K; ++k) dst[k] = bf16_to_f32(f32_to_bf16(src[k]));
#else
        for (; k + 16 <= K; k += 16)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), simd::round_bf16_16(_mm512_loadu_ps(src + k)));
        for (; k < K; ++k) dst[k] = f32_to_bf16(src[k]);
#endif
      }
    }
    std::memset(dst + k, 0, static_cast<size_t>(buf.ld - k) * sizeof(AElem));
  }
  return buf;
}

// ---- kernel dispatch: compile-time row counts for the row tails ----------------------------------
#if defined(ACCELC_VARIANT_AVX2)
template <bool SIMPLE = false, int MR = avx2::kMR>
ACCELC_INLINE void avx2_f32_rows(int rows, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
                                 int m0, int n0, int cols, const Epilogue& ep) {
  if constexpr (MR > 0) {
    if (rows == MR) return avx2::f32_panel<MR, SIMPLE>(K, A, lda, Bp, C, ldc, m0, n0, cols, ep);
    return avx2_f32_rows<SIMPLE, MR - 1>(rows, K, A, lda, Bp, C, ldc, m0, n0, cols, ep);
  }
}
#else
template <int NP, bool SIMPLE = false, int MR = avx512::kMR>
ACCELC_INLINE void avx512_f32_rows(int rows, int K, const float* A, int lda, const float* Bp, size_t pstride,
                                   float* C, int ldc, int m0, int n0, int cols, const Epilogue& ep) {
  if constexpr (MR > 0) {
    if (rows == MR) return avx512::f32_panels<MR, NP, SIMPLE>(K, A, lda, Bp, pstride, C, ldc, m0, n0, cols, ep);
    return avx512_f32_rows<NP, SIMPLE, MR - 1>(rows, K, A, lda, Bp, pstride, C, ldc, m0, n0, cols, ep);
  }
}
template <int NP, int MR = avx512::kMR>
ACCELC_INLINE void avx512_bf16_rows(int rows, int K, const uint16_t* A, int lda, const uint16_t* Bp,
                                    size_t pstride, float* C, int ldc, int m0, int n0, int cols,
                                    const Epilogue& ep) {
  if constexpr (MR > 0) {
    if (rows == MR) return avx512::bf16_panels<MR, NP>(K, A, lda, Bp, pstride, C, ldc, m0, n0, cols, ep);
    return avx512_bf16_rows<NP, MR - 1>(rows, K, A, lda, Bp, pstride, C, ldc, m0, n0, cols, ep);
  }
}
#endif

// bf16 GEMM on a prepared A operand.
void gemm_bf16_prepared(int M, int N, int K, const ABuffer& a, const uint16_t* Bp, float* C, int ldc,
                        const Epilogue& ep, bool use_amx) {
  const int npanels = ceil_div(N, 16);
  const size_t pstride = static_cast<size_t>(round_up(K > 0 ? K : 1, 32)) * 16;  // bf16 panel size
  const double macs = static_cast<double>(M) * N * K;
#if defined(ACCELC_VARIANT_AVX2)
  // AVX2 has no bf16 arithmetic: each task widens its B panel once into an fp32 panel (exact: a bf16
  // is the top half of an fp32) and runs the fp32 kernel on it, amortising the widening over the task's
  // rows. Widening inside the K loop instead needs 4 more vector registers than the 16 AVX2 has
  // and spills. The fp32 kernel walks k in order, so each pair is summed even k first, then odd k, as
  // in TDPBF16PS.
  (void)use_amx;
  struct WidePanel {
    float* data;
    WidePanel() : data(nullptr) {}
    ~WidePanel() { std::free(data); }
  };
  const size_t wide_bytes = (static_cast<size_t>(K) * 16 * sizeof(float) + 63) / 64 * 64 + 64;
  const Tiling t = plan_tiles(M, npanels, 8 * avx2::kMR, 1, macs);
  for_each_task<WidePanel>(M, npanels, t, macs, [&](int m0, int m1, int p0, int p1, WidePanel& wide) {
    if (!wide.data && !(wide.data = static_cast<float*>(std::aligned_alloc(64, wide_bytes)))) out_of_memory(wide_bytes, "GEMM scratch");
    for (int p = p0; p < p1; ++p) {
      avx2::widen_bf16_panel(K, Bp + p * pstride, wide.data);
      const int n0 = p * 16, cols = N - n0 < 16 ? N - n0 : 16;
      for (int m = m0; m < m1; m += avx2::kMR) {
        const int rows = m1 - m < avx2::kMR ? m1 - m : avx2::kMR;
        avx2_f32_rows(rows, K, a.data + static_cast<size_t>(m) * a.ld, a.ld, wide.data,
                      C + static_cast<size_t>(m) * ldc + n0, ldc, m, n0, cols, ep);
      }
    }
  });
#else
#if defined(ACCELC_VARIANT_AMX)
  if (use_amx) {
    const Tiling t = plan_tiles(M, npanels, 64, 2, macs);
    const int nkb = a.ld / 32;
    struct TileThread {  // tile configuration is per-thread state
      TileThread() { amx::configure_thread(); }
      ~TileThread() { amx::release_thread(); }
    };
    // Per 32-row group, K runs in chunks of kKbChunk 32-deep blocks: the group's A chunk (32 x 256
    // bf16 = 16 KiB) then stays in L1 while every panel pair of the task streams its B chunk past it,
    // halving the L2 traffic of a full-K walk per panel pair (which is L2-bandwidth bound: 4 KiB of
    // tiles per 4 TDPBF16PS). The partial sums of all pairs wait in cbuf between chunks.
    constexpr int kKbChunk = 8;
    for_each_task<TileThread>(M, npanels, t, macs, [&](int m0, int m1, int p0, int p1, TileThread&) {
      alignas(64) float cbuf[4][32 * 32];  // one 32x32 block per panel pair; t.pb <= 8 panels
      for (int m = m0; m < m1; m += 32) {
        const int rows = m1 - m < 32 ? m1 - m : 32;
        const uint16_t* Am = a.data + static_cast<size_t>(m) * a.ld;
        for (int kb0 = 0; kb0 < nkb; kb0 += kKbChunk) {
          const int kb1 = kb0 + kKbChunk < nkb ? kb0 + kKbChunk : nkb;
          for (int p = p0; p < p1; p += 2) {
            const uint16_t* Bm = Bp + p * pstride;
            float* cb = cbuf[(p - p0) / 2];
            const bool acc = kb0 > 0, two_panels = p + 1 < p1;
            if (rows > 16) {
              if (two_panels) amx::block<2, 2>(kb0, kb1, acc, Am, a.ld, Bm, pstride, cb);
              else amx::block<2, 1>(kb0, kb1, acc, Am, a.ld, Bm, pstride, cb);
            } else {
              if (two_panels) amx::block<1, 2>(kb0, kb1, acc, Am, a.ld, Bm, pstride, cb);
              else amx::block<1, 1>(kb0, kb1, acc, Am, a.ld, Bm, pstride, cb);
            }
          }
        }
        for (int p = p0; p < p1; p += 2) {
          const int n0 = p * 16, width = p + 1 < p1 ? 32 : 16, cols = N - n0 < width ? N - n0 : width;
          const float* cb = cbuf[(p - p0) / 2];
          for (int r = 0; r < rows; ++r)
            epi::store_row(cb + r * 32, C + static_cast<size_t>(m + r) * ldc + n0, ldc, m + r, n0, cols, ep);
        }
      }
    });
    return;
  }
#else
  (void)use_amx;
#endif
  const Tiling t = plan_tiles(M, npanels, 4 * avx512::kMR, 2, macs);
  for_each_task(M, npanels, t, macs, [&](int m0, int m1, int p0, int p1, NoThreadCtx&) {
    for (int p = p0; p < p1; p += 2) {
      const bool two_panels = p + 1 < p1;
      const int n0 = p * 16, cols = N - n0 < (two_panels ? 32 : 16) ? N - n0 : (two_panels ? 32 : 16);
      for (int m = m0; m < m1; m += avx512::kMR) {
        const int rows = m1 - m < avx512::kMR ? m1 - m : avx512::kMR;
        const uint16_t* Am = a.data + static_cast<size_t>(m) * a.ld;
        float* Cm = C + static_cast<size_t>(m) * ldc + n0;
        if (two_panels) avx512_bf16_rows<2>(rows, K, Am, a.ld, Bp + p * pstride, pstride, Cm, ldc, m, n0, cols, ep);
        else avx512_bf16_rows<1>(rows, K, Am, a.ld, Bp + p * pstride, pstride, Cm, ldc, m, n0, cols, ep);
      }
    }
  });
#endif
}

template <class Src>
void gemm_bf16_any(int M, int N, int K, const Src* A, int lda, const uint16_t* Bp, float* C, int ldc,
                   const Epilogue& ep) {
  if (M <= 0 || N <= 0) return;
#if defined(ACCELC_VARIANT_AMX)
  const bool use_amx = amx_active();
#else
  const bool use_amx = false;
#endif
  const ABuffer a = use_amx ? prepare_a(M, K, A, lda, 32, 16) : prepare_a(M, K, A, lda, 2, 1);
  gemm_bf16_prepared(M, N, K, a, Bp, C, ldc, ep, use_amx);
}

}  // namespace

// ---- packing -------------------------------------------------------------------------------------
size_t packed_b_elems_f32(int K, int N) {
  return static_cast<size_t>(ceil_div(N, 16)) * 16 * static_cast<size_t>(K > 0 ? K : 0);
}

size_t packed_b_elems_bf16(int K, int N) {
  return static_cast<size_t>(ceil_div(N, 16)) * 16 * static_cast<size_t>(round_up(K > 0 ? K : 1, 32));
}

void pack_b_f32(int K, int N, const float* B, int ldb, bool trans, float* Bp) {
  const int npanels = ceil_div(N, 16);
  const bool parallel = static_cast<double>(K) * N >= kParallelMinMacs && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
  for (int p = 0; p < npanels; ++p) {
    float* dst = Bp + static_cast<size_t>(p) * K * 16;
    const int n0 = p * 16, cols = N - n0 < 16 ? N - n0 : 16;
    if (cols < 16) std::memset(dst, 0, static_cast<size_t>(K) * 16 * sizeof(float));
    if (!trans) {
      for (int k = 0; k < K; ++k) std::memcpy(dst + k * 16, B + static_cast<size_t>(k) * ldb + n0, cols * sizeof(float));
    } else {
      for (int j = 0; j < cols; ++j) {
        const float* src = B + static_cast<size_t>(n0 + j) * ldb;
        for (int k = 0; k < K; ++k) dst[k * 16 + j] = src[k];
      }
    }
  }
}

void pack_b_bf16(int K, int N, const float* B, int ldb, bool trans, uint16_t* Bp) {
  const int npanels = ceil_div(N, 16);
  const int Kp = round_up(K > 0 ? K : 1, 32);
  const bool parallel = static_cast<double>(K) * N >= kParallelMinMacs && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
  for (int p = 0; p < npanels; ++p) {
    uint16_t* dst = Bp + static_cast<size_t>(p) * Kp * 16;
    const int n0 = p * 16, cols = N - n0 < 16 ? N - n0 : 16;
    std::memset(dst, 0, static_cast<size_t>(Kp) * 16 * sizeof(uint16_t));
    for (int k = 0; k < K; ++k) {
      uint16_t* row = dst + (k / 2) * 32 + (k & 1);
      if (!trans) {
        const float* src = B + static_cast<size_t>(k) * ldb + n0;
        for (int j = 0; j < cols; ++j) row[2 * j] = f32_to_bf16(src[j]);
      } else {
        for (int j = 0; j < cols; ++j) row[2 * j] = f32_to_bf16(B[static_cast<size_t>(n0 + j) * ldb + k]);
      }
    }
  }
}

// ---- GEMM entry points ----------------------------------------------------------------------------
void gemm_f32(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc, const Epilogue& ep,
              const Blocking& blk) {
  if (M <= 0 || N <= 0) return;
  if (K < 0) K = 0;
  const int npanels = ceil_div(N, 16);
  const size_t pstride = static_cast<size_t>(K) * 16;
  const double macs = static_cast<double>(M) * N * K;
#if defined(ACCELC_VARIANT_AVX2)
  // Row blocks and balanced micro-blocks as planned in tiling.h (A: up to 192 x K in L2). Splitting K
  // into cache blocks measured slower on this kernel (the panel streams well from L2).
  const Tiling t = plan_tiles(M, npanels, balanced_row_block(M, K, macs), 1, macs, blk);
  const bool simple = epi::is_simple(ep);
  for_each_task(M, npanels, t, macs, [&](int m0, int m1, int p0, int p1, NoThreadCtx&) {
    const RowBlocks<avx2::kMR> rb(m1 - m0);
    for (int p = p0; p < p1; ++p) {
      const int n0 = p * 16, cols = N - n0 < 16 ? N - n0 : 16;
      for (int b = 0; b < rb.nblk; ++b) {
        const int m = m0 + rb.start(b);
        const float* Am = A + static_cast<size_t>(m) * lda;
        float* Cm = C + static_cast<size_t>(m) * ldc + n0;
        if (simple) avx2_f32_rows<true>(rb.size(b), K, Am, lda, Bp + p * pstride, Cm, ldc, m, n0, cols, ep);
        else avx2_f32_rows<false>(rb.size(b), K, Am, lda, Bp + p * pstride, Cm, ldc, m, n0, cols, ep);
      }
    }
  });
#else
  const Tiling t = plan_tiles(M, npanels, 4 * avx512::kMR, 2, macs, blk);
  const bool simple = epi::is_simple(ep);
  for_each_task(M, npanels, t, macs, [&](int m0, int m1, int p0, int p1, NoThreadCtx&) {
    for (int p = p0; p < p1; p += 2) {
      const bool two_panels = p + 1 < p1;
      const int n0 = p * 16, cols = N - n0 < (two_panels ? 32 : 16) ? N - n0 : (two_panels ? 32 : 16);
      for (int m = m0; m < m1; m += avx512::kMR) {
        const int rows = m1 - m < avx512::kMR ? m1 - m : avx512::kMR;
        const float* Am = A + static_cast<size_t>(m) * lda;
        float* Cm = C + static_cast<size_t>(m) * ldc + n0;
        const float* Bm = Bp + p * pstride;
        if (two_panels && simple) avx512_f32_rows<2, true>(rows, K, Am, lda, Bm, pstride, Cm, ldc, m, n0, cols, ep);
        else if (two_panels) avx512_f32_rows<2>(rows, K, Am, lda, Bm, pstride, Cm, ldc, m, n0, cols, ep);
        else if (simple) avx512_f32_rows<1, true>(rows, K, Am, lda, Bm, pstride, Cm, ldc, m, n0, cols, ep);
        else avx512_f32_rows<1>(rows, K, Am, lda, Bm, pstride, Cm, ldc, m, n0, cols, ep);
      }
    }
  });
#endif
}

void gemm_bf16(int M, int N, int K, const float* A, int lda, const uint16_t* Bp, float* C, int ldc,
               const Epilogue& ep) {
  gemm_bf16_any(M, N, K < 0 ? 0 : K, A, lda, Bp, C, ldc, ep);
}

void gemm_bf16_a16(int M, int N, int K, const uint16_t* A, int lda, const uint16_t* Bp, float* C, int ldc,
                   const Epilogue& ep) {
  gemm_bf16_any(M, N, K < 0 ? 0 : K, A, lda, Bp, C, ldc, ep);
}

// ---- AMX permission -------------------------------------------------------------------------------
bool amx_init(const char** reason) {
#if defined(ACCELC_VARIANT_AMX)
  int s = __atomic_load_n(&g_amx_state, __ATOMIC_ACQUIRE);
  if (s == 0) {
    const char* why = nullptr;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      why = "the CPU does not report extended features (cpuid leaf 7)";
    } else if (!(d & (1u << 24)) || !(d & (1u << 22))) {
      why = "the CPU lacks AMX-TILE or AMX-BF16";
    } else {
      unsigned a1, b1, c1, d1;
      __get_cpuid(1, &a1, &b1, &c1, &d1);
      unsigned xcr0_lo = 0, xcr0_hi = 0;
      if (c1 & (1u << 27)) __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
      // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA): the OS saves and restores tile state.
      if ((xcr0_lo & (3u << 17)) != (3u << 17)) {
        why = "the operating system does not enable the AMX tile state (XCR0 bits 17-18)";
      } else {
        constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        unsigned long perm = 0;
        if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
          why = "Linux refused arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) (kernel 5.16 or newer is needed)";
        } else if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &perm) != 0 || !(perm & (1ul << kXfeatureXtiledata))) {
          why = "Linux did not grant the AMX tile data permission";
        }
      }
    }
    if (why) g_amx_reason = why;
    int expected = 0;
    __atomic_compare_exchange_n(&g_amx_state, &expected, why ? -1 : 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    s = __atomic_load_n(&g_amx_state, __ATOMIC_ACQUIRE);
  }
  if (reason) *reason = s > 0 ? "" : g_amx_reason;
  return s > 0;
#else
  if (reason) *reason = "";
  return true;
#endif
}

}  // namespace ACCELC_NS
