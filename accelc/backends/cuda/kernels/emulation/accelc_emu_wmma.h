// accelc CUDA emulation of the warp matrix functions (nvcuda::wmma), for the tensor-core kernels.
//
// On a GPU a fragment is spread over the 32 lanes of a warp in a layout the API leaves unspecified, so
// correct code only loads, stores, fills and multiplies fragments. The model here keeps that contract
// strict enough to catch the usual mistakes:
// - element e of a fragment (row-major index over its tile) belongs to lane e % 32. load_matrix_sync
//   reads only the lane's own elements (the others are NaN), store_matrix_sync writes only them. A lane
//   that reads what the warp stored, or a warp that loads what its lanes wrote, without a __syncwarp in
//   between sees stale or missing values, as it would on a GPU;
// - mma_sync is warp-collective: every lane of the warp must take part (a lane that returned early
//   fails the launch), and each lane's share of D is computed from the whole A, B and C gathered from
//   their owners. Products and sums are fp32;
// - pointers must be 32-byte aligned and ldm a multiple of 16 bytes, as the API requires.
#pragma once
#include <type_traits>

#include "accelc_cuda_emulation.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K> struct tile_of;
template <int M, int N, int K> struct tile_of<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct tile_of<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct tile_of<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = tile_of<Use, M, N, K>::rows, cols = tile_of<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;   // the whole tile; only this lane's share is defined
  T x[rows * cols];                                  // row-major over the tile
};

}  // namespace wmma
}  // namespace nvcuda

namespace accelc_emu {
namespace wmma_detail {

inline int lane() { return scheduler().current & 31; }

template <typename T> inline T poison() { return T(NAN); }

template <typename T> inline bool check_access(const char* what, const T* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32)
    return fault(cudaErrorMisalignedAddress, "%s: pointer %p is not 32-byte aligned", what, (const void*)p), false;
  if ((ldm * sizeof(T)) % 16)
    return fault(cudaErrorMisalignedAddress, "%s: ldm %u is not a multiple of 16 bytes", what, ldm), false;
  return true;
}

template <typename Frag, typename T> inline void load(Frag& f, const T* p, unsigned ldm, bool col_major) {
  const int me = lane();
  for (int e = 0; e < Frag::num_elements; ++e) {
    const int r = e / Frag::cols, c = e % Frag::cols;
    f.x[e] = e % 32 == me ? (col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c])
                          : poison<std::remove_reference_t<decltype(f.x[0])>>();
  }
}

}  // namespace wmma_detail
}  // namespace accelc_emu

namespace nvcuda {
namespace wmma {

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
  if (accelc_emu::wmma_detail::check_access("wmma::load_matrix_sync", p, ldm))
    accelc_emu::wmma_detail::load(f, p, ldm, std::is_same<Layout, col_major>::value);
}

template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout) {
  if (accelc_emu::wmma_detail::check_access("wmma::load_matrix_sync", p, ldm))
    accelc_emu::wmma_detail::load(f, p, ldm, layout == mem_col_major);
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
  using Frag = fragment<accumulator, M, N, K, T>;
  if (!accelc_emu::wmma_detail::check_access("wmma::store_matrix_sync", p, ldm)) return;
  const int me = accelc_emu::wmma_detail::lane();
  for (int e = me; e < Frag::num_elements; e += 32) {
    const int r = e / Frag::cols, c = e % Frag::cols;
    (layout == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]) = f.x[e];
  }
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& v) {
  for (int e = 0; e < fragment<Use, M, N, K, T, Layout>::num_elements; ++e) f.x[e] = T(v);
}

// D = A B + C over the warp; d may be c.
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c) {
  using namespace accelc_emu;
  Scheduler& s = scheduler();
  const int me = s.current, base = me & ~31;
  s.wmma_slots[3 * me + 0] = &a;
  s.wmma_slots[3 * me + 1] = &b;
  s.wmma_slots[3 * me + 2] = &c;
  suspend(Wait::Warp);                                  // every lane has published its fragments
  bool full = base + 32 <= s.threads;
  for (int t = base; full && t < base + 32; ++t) full = s.wait[t] != Wait::Done;
  if (!full) {
    fault(cudaErrorLaunchFailure, "wmma::mma_sync in warp %d without all 32 lanes (a lane returned or the "
          "block size is not a multiple of 32)", me / 32);
    suspend(Wait::Warp);
    return;
  }
  float A[M * K], B[K * N], C[M * N];
  for (int e = 0; e < M * K; ++e)
    A[e] = float(static_cast<const fragment<matrix_a, M, N, K, TA, LA>*>(s.wmma_slots[3 * (base + e % 32)])->x[e]);
  for (int e = 0; e < K * N; ++e)
    B[e] = float(static_cast<const fragment<matrix_b, M, N, K, TB, LB>*>(s.wmma_slots[3 * (base + e % 32) + 1])->x[e]);
  for (int e = 0; e < M * N; ++e)
    C[e] = float(static_cast<const fragment<accumulator, M, N, K, TC>*>(s.wmma_slots[3 * (base + e % 32) + 2])->x[e]);
  suspend(Wait::Warp);                                  // every lane has gathered before d (maybe c) changes
  for (int e = 0; e < M * N; ++e) {
    if (e % 32 != me - base) {
      d.x[e] = TC(NAN);
      continue;
    }
    const int m = e / N, n = e % N;
    float acc = C[e];
    for (int k = 0; k < K; ++k) acc += A[m * K + k] * B[k * N + n];
    d.x[e] = TC(acc);
  }
}

}  // namespace wmma
}  // namespace nvcuda
