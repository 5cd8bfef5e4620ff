// accelc CPU runtime: support kernels (see accelc_ops.h). Plain C++ loops written so that g++ vectorizes
// the inner loops for each ISA variant; parallel over independent rows with OpenMP when large enough.
// No std:: containers or algorithms: every variant keeps its own code (see accelc_types.h).
#include "accelc_ops.h"
#include "simd.h"

#include <omp.h>
#include <cfloat>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ACCELC_NS {
namespace {

constexpr int64_t kParallelWork = 1 << 15;   // below this many elements a kernel runs on one thread
constexpr int64_t kShortSoftmax = 16;         // softmax rows shorter than this take the blocked path

// body(i) for every row i < n: on the OpenMP team when `parallel`, else on the calling thread without
// an OpenMP construct (a parallel region turned off by an if clause still builds and frees a one-thread
// team, ~0.7 us: half of the jet-tagging MLP's whole run).
template <class Body>
inline void parallel_rows(int64_t n, bool parallel, const Body& body) {
  if (!parallel || n <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Numeric view of every storage type: floats compute in float/double, integers in int64.
template <class T> struct Num;
template <> struct Num<float> { using S = float; using Acc = double; static constexpr bool is_float = true;
  static double get(const S* p, int64_t i) { return p[i]; } static void put(S* p, int64_t i, double v) { p[i] = float(v); } static void put_acc(S* p, int64_t i, double v) { put(p, i, v); } };
template <> struct Num<bf16_t> { using S = bf16_t; using Acc = double; static constexpr bool is_float = true;
  static double get(const S* p, int64_t i) { return bf16_to_f32(p[i].bits); } static void put(S* p, int64_t i, double v) { p[i].bits = f32_to_bf16(float(v)); } static void put_acc(S* p, int64_t i, double v) { put(p, i, v); } };
template <> struct Num<f16_t> { using S = f16_t; using Acc = double; static constexpr bool is_float = true;
  static double get(const S* p, int64_t i) { return f16_to_f32(p[i].bits); } static void put(S* p, int64_t i, double v) { p[i].bits = f32_to_f16(float(v)); } static void put_acc(S* p, int64_t i, double v) { put(p, i, v); } };
template <> struct Num<double> { using S = double; using Acc = double; static constexpr bool is_float = true;
  static double get(const S* p, int64_t i) { return p[i]; } static void put(S* p, int64_t i, double v) { p[i] = v; } static void put_acc(S* p, int64_t i, double v) { p[i] = v; } };
#define ACCELC_INT_NUM(T)                                                                              \
  template <> struct Num<T> { using S = T; using Acc = int64_t; static constexpr bool is_float = false; \
    static double get(const S* p, int64_t i) { return double(p[i]); }                                  \
    static void put(S* p, int64_t i, double v) { p[i] = S(int64_t(v)); }                 \
    static void put_acc(S* p, int64_t i, int64_t v) { p[i] = S(v); } };
ACCELC_INT_NUM(int8_t) ACCELC_INT_NUM(uint8_t) ACCELC_INT_NUM(int16_t) ACCELC_INT_NUM(int32_t)
ACCELC_INT_NUM(int64_t)
#undef ACCELC_INT_NUM

// Calls body.template operator()<T>() with T the storage type of dt.
template <class F> void dispatch_all(DT dt, F&& body) {
  switch (dt) {
    case DT::F32: body(float{}); break;
    case DT::BF16: body(bf16_t{}); break;
    case DT::F16: body(f16_t{}); break;
    case DT::F64: body(double{}); break;
    case DT::I8: body(int8_t{}); break;
    case DT::U8: case DT::BOOL: body(uint8_t{}); break;
    case DT::I16: body(int16_t{}); break;
    case DT::I32: body(int32_t{}); break;
    case DT::I64: body(int64_t{}); break;
  }
}
template <class F> void dispatch_float(DT dt, F&& body) {
  switch (dt) {
    case DT::F32: body(float{}); break;
    case DT::BF16: body(bf16_t{}); break;
    case DT::F16: body(f16_t{}); break;
    default: break;  // codegen only emits float calls for float dtypes
  }
}

inline bool is_nan(double v) { return v != v; }

// ---- vector helpers (simd.h's vf: kW fp32 lanes) ----
using simd::vf;
using simd::kW;

#if ACCELC_SIMD_512
ACCELC_INLINE vf vec_isnan_or(vf acc, vf v, vf w) {   // lanes of acc, all-ones where v or w is NaN
  return {_mm512_castsi512_ps(_mm512_mask_set1_epi32(_mm512_castps_si512(acc.r),
                                                     _mm512_cmp_ps_mask(v.r, w.r, _CMP_UNORD_Q), -1))};
}
ACCELC_INLINE vf vec_nan_blend(vf acc, vf nanm) {   // canonical NaN where nanm is set
  return {_mm512_mask_blend_ps(_mm512_test_epi32_mask(_mm512_castps_si512(nanm.r), _mm512_castps_si512(nanm.r)),
                               acc.r, _mm512_set1_ps(NAN))};
}
// Even and odd elements of the 2 kW floats at p, both in the lane order that pool_unscramble undoes.
ACCELC_INLINE void pool_deinterleave(const float* p, vf& even, vf& odd) {
  const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
  even.r = _mm512_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  odd.r = _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}
ACCELC_INLINE vf pool_even(const float* p) {
  return {_mm512_shuffle_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16), _MM_SHUFFLE(2, 0, 2, 0))};
}
ACCELC_INLINE vf pool_unscramble(vf v) {
  return {_mm512_castpd_ps(_mm512_permutexvar_pd(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_castps_pd(v.r)))};
}
#else
ACCELC_INLINE vf vec_isnan_or(vf acc, vf v, vf w) {
  return {_mm256_or_ps(acc.r, _mm256_cmp_ps(v.r, w.r, _CMP_UNORD_Q))};
}
ACCELC_INLINE vf vec_nan_blend(vf acc, vf nanm) { return {_mm256_blendv_ps(acc.r, _mm256_set1_ps(NAN), nanm.r)}; }
ACCELC_INLINE void pool_deinterleave(const float* p, vf& even, vf& odd) {
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
  even.r = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));   // p + 2 * {0, 1, 4, 5, 2, 3, 6, 7}
  odd.r = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}
ACCELC_INLINE vf pool_even(const float* p) {
  return {_mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(2, 0, 2, 0))};
}
ACCELC_INLINE vf pool_unscramble(vf v) {
  return {_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v.r), _MM_SHUFFLE(3, 1, 2, 0)))};
}
#endif


}  // namespace

int max_threads() { return omp_get_max_threads(); }

// ---- data movement -------------------------------------------------------------------------------------
template <class E>
static void index_copy_t(int rank, const int64_t* dims, const int64_t* const* tables, const E* in, E* out,
                         E fill_value, bool inner_contiguous) {
  const int64_t inner = rank > 0 ? dims[rank - 1] : 1;
  int64_t rows = 1;
  for (int d = 0; d + 1 < rank; ++d) rows *= dims[d];
  const int64_t* last = rank > 0 ? tables[rank - 1] : nullptr;
#pragma omp parallel for schedule(static) if (rows * inner > kParallelWork)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t base = 0, rem = row;
    bool padded = false;
    for (int d = rank - 2; d >= 0; --d) {
      const int64_t i = rem % dims[d];
      rem /= dims[d];
      const int64_t t = tables[d][i];
      if (t < 0) padded = true;
      base += t;
    }
    E* dst = out + row * inner;
    if (padded) {
      for (int64_t j = 0; j < inner; ++j) dst[j] = fill_value;
    } else if (rank == 0) {
      dst[0] = in[0];
    } else if (inner_contiguous) {
      std::memcpy(dst, in + base + last[0], size_t(inner) * sizeof(E));
    } else {
      for (int64_t j = 0; j < inner; ++j) dst[j] = last[j] < 0 ? fill_value : in[base + last[j]];
    }
  }
}

// Calls body(E{}) with E the unsigned integer type of elem_size bytes (1, 2, 4, else 8): data movement
// copies elements as bits, whatever their dtype.
template <class F> static void dispatch_elem_size(int elem_size, F&& body) {
  switch (elem_size) {
    case 1: body(uint8_t{}); break;
    case 2: body(uint16_t{}); break;
    case 4: body(uint32_t{}); break;
    default: body(uint64_t{}); break;
  }
}

void index_copy(int elem_size, int rank, const int64_t* out_dims, const int64_t* const* tables, const void* in,
                void* out, const void* fill, bool inner_contiguous) {
  dispatch_elem_size(elem_size, [&](auto zero) {
    using E = decltype(zero);
    E f{};
    if (fill) std::memcpy(&f, fill, sizeof(E));
    index_copy_t<E>(rank, out_dims, tables, static_cast<const E*>(in), static_cast<E*>(out), f, inner_contiguous);
  });
}

template <class E>
static void transpose_tiles(int64_t batch, int64_t rows, int64_t cols, int64_t inner, const E* in, E* out) {
  constexpr int64_t kTile = 16;   // a 16 x 16 tile of 4-byte elements is 1 KiB each way: both sides stay in L1
  const int64_t rt = (rows + kTile - 1) / kTile, ct = (cols + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) if (batch * rows * cols * inner > 4 * kParallelWork)
  for (int64_t task = 0; task < batch * rt * ct; ++task) {
    const int64_t b = task / (rt * ct), i0 = task / ct % rt * kTile, j0 = task % ct * kTile;
    const int64_t i1 = i0 + kTile < rows ? i0 + kTile : rows, j1 = j0 + kTile < cols ? j0 + kTile : cols;
    const E* src = in + b * rows * cols * inner;
    E* dst = out + b * rows * cols * inner;
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t i = i0; i < i1; ++i) {
        if (inner == 1) dst[j * rows + i] = src[i * cols + j];
        else std::memcpy(dst + (j * rows + i) * inner, src + (i * cols + j) * inner, size_t(inner) * sizeof(E));
      }
  }
}

void transpose_blocks(int elem_size, int64_t batch, int64_t rows, int64_t cols, int64_t inner, const void* in,
                      void* out) {
  dispatch_elem_size(elem_size, [&](auto zero) {
    using E = decltype(zero);
    transpose_tiles<E>(batch, rows, cols, inner, static_cast<const E*>(in), static_cast<E*>(out));
  });
}

void copy_rows(int64_t rows, int64_t row_bytes, const void* src, int64_t src_stride, void* dst, int64_t dst_stride) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
#pragma omp parallel for schedule(static) if (rows * row_bytes > 4 * kParallelWork)
  for (int64_t r = 0; r < rows; ++r) std::memcpy(d + r * dst_stride, s + r * src_stride, size_t(row_bytes));
}

void fill(int elem_size, int64_t n, const void* value, void* out) {
  char* o = static_cast<char*>(out);
  bool zero = true;
  for (int b = 0; b < elem_size; ++b) zero = zero && static_cast<const char*>(value)[b] == 0;
  if (zero) { std::memset(o, 0, size_t(n) * size_t(elem_size)); return; }
  for (int64_t i = 0; i < n; ++i) std::memcpy(o + i * elem_size, value, size_t(elem_size));
}

// ---- reductions -----------------------------------------------------------------------------------------
template <class T>
static void reduce_t(RedOp op, int64_t outer, int64_t r, int64_t inner, const T* in, T* out) {
  using N = Num<T>;
  using Acc = typename N::Acc;
  if (N::is_float && inner == 1 && (op == RedOp::Sum || op == RedOp::Mean || op == RedOp::SumSquare)) {
    // contiguous rows of floats (ReduceMean over the last axis, global average pooling): vectorized
#pragma omp parallel for schedule(static) if (outer * r > kParallelWork)
    for (int64_t o = 0; o < outer; ++o) {
      const T* p = in + o * r;
      double acc = 0;
      if (op == RedOp::SumSquare) {
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < r; ++k) { const double v = N::get(p, k); acc += v * v; }
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < r; ++k) acc += N::get(p, k);
      }
      N::put(out, o, op == RedOp::Mean ? (r ? acc / double(r) : NAN) : acc);
    }
    return;
  }
  if (N::is_float && inner > 1 && (op == RedOp::Sum || op == RedOp::Mean)) {
    // reduced axis outside the contiguous one (channels-last global average pooling): the same double sums
    // in the same order as the general loop below, a chunk of contiguous columns at a time
    constexpr int64_t kChunk = 256;
    const int64_t chunks = (inner + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (outer * r * inner > kParallelWork)
    for (int64_t oc = 0; oc < outer * chunks; ++oc) {
      const int64_t o = oc / chunks, i0 = oc % chunks * kChunk, n = inner - i0 < kChunk ? inner - i0 : kChunk;
      double acc[kChunk];
      for (int64_t i = 0; i < n; ++i) acc[i] = 0;
      for (int64_t k = 0; k < r; ++k) {
        const T* p = in + (o * r + k) * inner + i0;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) acc[i] += N::get(p, i);
      }
      for (int64_t i = 0; i < n; ++i) N::put(out, o * inner + i0 + i, op == RedOp::Mean ? acc[i] / double(r) : acc[i]);
    }
    return;
  }
#pragma omp parallel for schedule(static) if (outer * r * inner > kParallelWork)
  for (int64_t oi = 0; oi < outer * inner; ++oi) {
    const int64_t o = oi / inner, i = oi % inner;
    const T* p = in + o * r * inner + i;
    double result = 0;
    if (op == RedOp::Max || op == RedOp::Min) {
      double best = N::get(p, 0);
      for (int64_t k = 1; k < r; ++k) {
        const double v = N::get(p, k * inner);
        if (is_nan(best)) break;
        if (is_nan(v) || (op == RedOp::Max ? v > best : v < best)) best = v;
      }
      result = best;
    } else if (op == RedOp::LogSumExp) {
      double m = -INFINITY;
      for (int64_t k = 0; k < r; ++k) { const double v = N::get(p, k * inner); if (v > m) m = v; }
      double s = 0;
      if (m == INFINITY || m == -INFINITY) { result = m == -INFINITY ? -INFINITY : INFINITY; }
      else { for (int64_t k = 0; k < r; ++k) s += std::exp(N::get(p, k * inner) - m); result = m + std::log(s); }
    } else {
      Acc acc = op == RedOp::Prod ? Acc(1) : Acc(0);
      for (int64_t k = 0; k < r; ++k) {
        const Acc v = Acc(N::get(p, k * inner));
        switch (op) {
          case RedOp::Prod: acc = Acc(acc * v); break;
          case RedOp::L1: acc = Acc(acc + (v < 0 ? -v : v)); break;
          case RedOp::L2: case RedOp::SumSquare: acc = Acc(acc + v * v); break;
          default: acc = Acc(acc + v); break;
        }
      }
      if (op == RedOp::Mean) result = r ? double(acc) / double(r) : NAN;
      else if (op == RedOp::L2) result = std::sqrt(double(acc));
      else result = double(acc);
      if (!N::is_float && (op == RedOp::Sum || op == RedOp::Prod || op == RedOp::L1 || op == RedOp::SumSquare)) {
        N::put_acc(out, oi, acc);   // integer sums wrap like NumPy's fixed-width accumulator
        continue;
      }
    }
    N::put(out, oi, result);
  }
}

// Lane-wise max (IsMax) or min of p[0 .. k) for the largest k <= r that is a multiple of kW; k is
// returned, NaN lanes seen are or-ed into nan0/nan1.
template <bool IsMax>
static ACCELC_INLINE vf extreme_lanes(const float* p, int64_t r, int64_t& k, vf& nan0, vf& nan1) {
  auto ext = [](vf a, vf b) { return IsMax ? simd::vmax(a, b) : simd::vmin(a, b); };
  vf m0 = simd::vset1(IsMax ? -INFINITY : INFINITY), m1 = m0, m2 = m0, m3 = m0;
  for (; k + 4 * kW <= r; k += 4 * kW) {
    const vf a = simd::vload(p + k), b = simd::vload(p + k + kW), c = simd::vload(p + k + 2 * kW),
             d = simd::vload(p + k + 3 * kW);
    nan0 = vec_isnan_or(nan0, a, b);
    nan1 = vec_isnan_or(nan1, c, d);
    m0 = ext(a, m0); m1 = ext(b, m1); m2 = ext(c, m2); m3 = ext(d, m3);
  }
  for (; k + kW <= r; k += kW) {
    const vf a = simd::vload(p + k);
    nan0 = vec_isnan_or(nan0, a, a);
    m0 = ext(a, m0);
  }
  return ext(ext(m0, m1), ext(m2, m3));
}

// fp32 Max/Min over contiguous rows (GlobalMaxPool, ReduceMax/Min over the last axis), kW lanes at a
// time. The result equals the scalar loop's: without NaNs every maximal value has the same bits unless
// the extreme is zero (+0 and -0 compare equal: the scalar loop keeps the first), so a row whose extreme
// is zero or that holds a NaN (the scalar loop returns the first NaN) is redone by that loop.
static void reduce_minmax_rows_f32(bool is_max, int64_t outer, int64_t r, const float* in, float* out) {
#pragma omp parallel for schedule(static) if (outer * r > kParallelWork)
  for (int64_t o = 0; o < outer; ++o) {
    const float* p = in + o * r;
    const float init = is_max ? -INFINITY : INFINITY;
    vf nan0 = simd::vzero(), nan1 = nan0;
    int64_t k = 0;
    const vf m0 = is_max ? extreme_lanes<true>(p, r, k, nan0, nan1) : extreme_lanes<false>(p, r, k, nan0, nan1);
    float lanes[kW];
    uint32_t nans[kW];
    simd::vstore(lanes, m0);
    simd::vstore(reinterpret_cast<float*>(nans), vec_isnan_or(nan0, nan1, nan1));
    bool nan = false;
    float m = init;
    for (int j = 0; j < kW; ++j) {
      nan |= nans[j] != 0;
      m = is_max ? (lanes[j] > m ? lanes[j] : m) : (lanes[j] < m ? lanes[j] : m);
    }
    for (; k < r; ++k) {
      const float v = p[k];
      nan |= v != v;
      m = is_max ? (v > m ? v : m) : (v < m ? v : m);
    }
    if (!nan && m != 0.f) { out[o] = m; continue; }
    double best = p[0];   // the scalar loop of reduce_t
    for (int64_t j = 1; j < r; ++j) {
      const double v = p[j];
      if (is_nan(best)) break;
      if (is_nan(v) || (is_max ? v > best : v < best)) best = v;
    }
    out[o] = float(best);
  }
}

void reduce(DT dt, RedOp op, int64_t outer, int64_t r, int64_t inner, const void* in, void* out) {
  if (dt == DT::F32 && inner == 1 && r > 0 && (op == RedOp::Max || op == RedOp::Min)) {
    reduce_minmax_rows_f32(op == RedOp::Max, outer, r, static_cast<const float*>(in), static_cast<float*>(out));
    return;
  }
  dispatch_all(dt, [&](auto zero) {
    using T = decltype(zero);
    reduce_t<T>(op, outer, r, inner, static_cast<const T*>(in), static_cast<T*>(out));
  });
}

void arg_reduce(DT dt, bool is_max, bool select_last, int64_t outer, int64_t r, int64_t inner, const void* in,
                int64_t* out) {
  dispatch_all(dt, [&](auto zero) {
    using T = decltype(zero);
    using N = Num<T>;
    const T* x = static_cast<const T*>(in);
#pragma omp parallel for schedule(static) if (outer * r * inner > kParallelWork)
    for (int64_t oi = 0; oi < outer * inner; ++oi) {
      const int64_t o = oi / inner, i = oi % inner;
      const T* p = x + o * r * inner + i;
      double best = N::get(p, 0);
      int64_t best_k = 0;
      for (int64_t k = 1; k < r && !is_nan(best); ++k) {
        const double v = N::get(p, k * inner);
        const bool better = is_nan(v) || (is_max ? v > best : v < best);
        if (better || (select_last && v == best)) { best = v; best_k = k; }
      }
      out[oi] = best_k;
    }
  });
}

void cumsum(DT dt, bool exclusive, bool reverse, int64_t outer, int64_t r, int64_t inner, const void* in, void* out) {
  dispatch_all(dt, [&](auto zero) {
    using T = decltype(zero);
    using N = Num<T>;
    using Acc = typename N::Acc;
    const T* x = static_cast<const T*>(in);
    T* y = static_cast<T*>(out);
#pragma omp parallel for schedule(static) if (outer * r * inner > kParallelWork)
    for (int64_t oi = 0; oi < outer * inner; ++oi) {
      const int64_t o = oi / inner, i = oi % inner;
      const int64_t base = o * r * inner + i;
      Acc acc = 0;
      for (int64_t s = 0; s < r; ++s) {
        const int64_t k = reverse ? r - 1 - s : s;
        const Acc v = Acc(N::get(x + base, k * inner));
        if (exclusive) { N::put_acc(y + base, k * inner, acc); acc = Acc(acc + v); }
        else { acc = Acc(acc + v); N::put_acc(y + base, k * inner, acc); }
      }
    }
  });
}

void topk(DT dt, bool largest, int64_t outer, int64_t r, int64_t inner, int64_t k, const void* in, void* values,
          int64_t* indices, int64_t* scratch, int slots) {
  dispatch_all(dt, [&](auto zero) {
    using T = decltype(zero);
    using N = Num<T>;
    const T* x = static_cast<const T*>(in);
    T* vals = static_cast<T*>(values);
    const int threads = omp_get_max_threads() < slots ? omp_get_max_threads() : slots;
#pragma omp parallel for schedule(static) num_threads(threads) if (outer * r * inner > kParallelWork)
    for (int64_t oi = 0; oi < outer * inner; ++oi) {
      const int64_t o = oi / inner, i = oi % inner;
      const T* p = x + o * r * inner + i;
      int64_t* order = scratch + int64_t(omp_get_thread_num()) * r;
      // "a before b": larger (or smaller) value first, NaN counts as the largest, ties by lower index.
      auto before = [&](int64_t a, int64_t b) {
        const double va = N::get(p, a * inner), vb = N::get(p, b * inner);
        if (is_nan(va) || is_nan(vb)) {
          if (is_nan(va) && is_nan(vb)) return a < b;
          return largest ? is_nan(va) : is_nan(vb);
        }
        if (va != vb) return largest ? va > vb : va < vb;
        return a < b;
      };
      // selection of the k best by insertion into a sorted prefix (k is small in practice)
      int64_t n = 0;
      for (int64_t j = 0; j < r; ++j) {
        if (n == k && !before(j, order[n - 1])) continue;
        int64_t pos = n < k ? n++ : k - 1;
        while (pos > 0 && before(j, order[pos - 1])) { order[pos] = order[pos - 1]; --pos; }
        order[pos] = j;
      }
      for (int64_t j = 0; j < k; ++j) {
        const int64_t dst = o * k * inner + j * inner + i;
        vals[dst] = p[order[j] * inner];
        indices[dst] = order[j];
      }
    }
  });
}

// ---- normalization ----------------------------------------------------------------------------------------
void softmax(DT dt, bool log, int64_t outer, int64_t r, int64_t inner, const void* in, void* out) {
  dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* x = static_cast<const T*>(in);
    T* y = static_cast<T*>(out);
    if (inner == 1 && r < kShortSoftmax) {
      // Short rows (a classifier's few classes): a per-row vector loop would be all remainder, so the
      // exponentials of a block of rows are taken in one vectorized pass over the block's contiguous
      // values, each once. Jet-tagging MLP, 1024 rows of 5: 68 -> 17 us.
      constexpr int64_t kRows = 64;
      parallel_rows((outer + kRows - 1) / kRows, outer * r > kParallelWork, [&](int64_t b) {
        const int64_t o0 = b * kRows, rows = outer - o0 < kRows ? outer - o0 : kRows;
        const T* xb = x + o0 * r;
        T* yb = y + o0 * r;
        float mx[kRows], e[kRows * kShortSoftmax];
        for (int64_t i = 0; i < rows; ++i) {
          float m = -INFINITY;
          for (int64_t k = 0; k < r; ++k) { const float v = load_f(xb, i * r + k); m = v > m ? v : m; }
          mx[i] = m;
          for (int64_t k = 0; k < r; ++k) e[i * r + k] = load_f(xb, i * r + k) - m;
        }
        const int64_t len = rows * r;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) e[j] = vexp(e[j]);
        for (int64_t i = 0; i < rows; ++i) {
          float s = 0.f;
          for (int64_t k = 0; k < r; ++k) s += e[i * r + k];
          if (log) {
            const float ls = std::log(s);
            for (int64_t k = 0; k < r; ++k) store_f(yb, i * r + k, load_f(xb, i * r + k) - mx[i] - ls);
          } else {
            const float inv = 1.f / s;
            for (int64_t k = 0; k < r; ++k) store_f(yb, i * r + k, e[i * r + k] * inv);
          }
        }
      });
      return;
    }
    if (inner == 1) {
      // the common case (softmax over the last axis): contiguous rows, vectorized max / exp / sum
      parallel_rows(outer, outer * r > kParallelWork, [&](int64_t o) {
        const T* xr = x + o * r;
        T* yr = y + o * r;
        float m = -INFINITY;
#pragma omp simd reduction(max : m)
        for (int64_t k = 0; k < r; ++k) { const float v = load_f(xr, k); m = v > m ? v : m; }
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < r; ++k) s += vexp(load_f(xr, k) - m);
        if (log) {
          const float ls = std::log(s);
#pragma omp simd
          for (int64_t k = 0; k < r; ++k) store_f(yr, k, load_f(xr, k) - m - ls);
        } else {
          const float inv = 1.f / s;
#pragma omp simd
          for (int64_t k = 0; k < r; ++k) store_f(yr, k, vexp(load_f(xr, k) - m) * inv);
        }
      });
      return;
    }
#pragma omp parallel for schedule(static) if (outer * r * inner > kParallelWork)
    for (int64_t oi = 0; oi < outer * inner; ++oi) {
      const int64_t o = oi / inner, i = oi % inner;
      const int64_t base = o * r * inner + i;
      float m = -INFINITY;
      for (int64_t k = 0; k < r; ++k) { const float v = load_f(x, base + k * inner); m = v > m ? v : m; }
      float s = 0.f;
      for (int64_t k = 0; k < r; ++k) s += vexp(load_f(x, base + k * inner) - m);
      if (log) {
        const float ls = std::log(s);
        for (int64_t k = 0; k < r; ++k) store_f(y, base + k * inner, load_f(x, base + k * inner) - m - ls);
      } else {
        const float inv = 1.f / s;
        for (int64_t k = 0; k < r; ++k) store_f(y, base + k * inner, vexp(load_f(x, base + k * inner) - m) * inv);
      }
    }
  });
}

void layer_norm(DT dt, int64_t rows, int64_t n, const void* xv, const void* scalev, const void* biasv, float epsilon,
                void* yv, void* mean_out, void* inv_std_out) {
  dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* x = static_cast<const T*>(xv);
    const T* scale = static_cast<const T*>(scalev);
    const T* bias = static_cast<const T*>(biasv);
    T* y = static_cast<T*>(yv);
#pragma omp parallel for schedule(static) if (rows * n > kParallelWork)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t base = row * n;
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) sum += load_f(x, base + j);
      const float mean = float(sum / double(n));
      double var = 0;
#pragma omp simd reduction(+ : var)
      for (int64_t j = 0; j < n; ++j) { const float d = load_f(x, base + j) - mean; var += double(d) * d; }
      const float inv_std = float(1.0 / std::sqrt(var / double(n) + double(epsilon)));
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        float v = (load_f(x, base + j) - mean) * inv_std * load_f(scale, j);
        if (bias) v += load_f(bias, j);
        store_f(y, base + j, v);
      }
      if (mean_out) store_f(static_cast<T*>(mean_out), row, mean);
      if (inv_std_out) store_f(static_cast<T*>(inv_std_out), row, inv_std);
    }
  });
}

void batch_norm(DT dt, int64_t n, int64_t c, int64_t inner, const void* xv, const void* scalev, const void* biasv,
                const void* meanv, const void* varv, float epsilon, void* yv) {
  dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* x = static_cast<const T*>(xv);
    T* y = static_cast<T*>(yv);
#pragma omp parallel for schedule(static) if (n * c * inner > kParallelWork)
    for (int64_t nc = 0; nc < n * c; ++nc) {
      const int64_t ch = nc % c;
      const float a = load_f(static_cast<const T*>(scalev), ch) /
                      std::sqrt(load_f(static_cast<const T*>(varv), ch) + epsilon);
      const float b = load_f(static_cast<const T*>(biasv), ch) - a * load_f(static_cast<const T*>(meanv), ch);
      for (int64_t j = 0; j < inner; ++j) store_f(y, nc * inner + j, a * load_f(x, nc * inner + j) + b);
    }
  });
}

void instance_norm(DT dt, int64_t n, int64_t c, int64_t inner, const void* xv, const void* scalev, const void* biasv,
                   float epsilon, void* yv) {
  dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* x = static_cast<const T*>(xv);
    T* y = static_cast<T*>(yv);
#pragma omp parallel for schedule(static) if (n * c * inner > kParallelWork)
    for (int64_t nc = 0; nc < n * c; ++nc) {
      const int64_t ch = nc % c, base = nc * inner;
      double sum = 0;
      for (int64_t j = 0; j < inner; ++j) sum += load_f(x, base + j);
      const float mean = float(sum / double(inner));
      double var = 0;
      for (int64_t j = 0; j < inner; ++j) { const float d = load_f(x, base + j) - mean; var += double(d) * d; }
      const float a = float(load_f(static_cast<const T*>(scalev), ch) / std::sqrt(var / double(inner) + epsilon));
      const float b = load_f(static_cast<const T*>(biasv), ch);
      for (int64_t j = 0; j < inner; ++j) store_f(y, base + j, (load_f(x, base + j) - mean) * a + b);
    }
  });
}

void lrn(DT dt, int64_t n, int64_t c, int64_t inner, int size, float alpha, float beta, float bias, const void* xv,
         void* yv) {
  dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* x = static_cast<const T*>(xv);
    T* y = static_cast<T*>(yv);
    const int64_t lo_off = (size - 1) / 2, hi_off = size - 1 - lo_off;   // floor and ceil of (size-1)/2
#pragma omp parallel for schedule(static) if (n * c * inner > kParallelWork)
    for (int64_t nc = 0; nc < n * c; ++nc) {
      const int64_t b = nc / c, ch = nc % c;
      const int64_t lo = ch - lo_off < 0 ? 0 : ch - lo_off, hi = ch + hi_off > c - 1 ? c - 1 : ch + hi_off;
      for (int64_t j = 0; j < inner; ++j) {
        float sq = 0.f;
        for (int64_t k = lo; k <= hi; ++k) { const float v = load_f(x, (b * c + k) * inner + j); sq += v * v; }
        store_f(y, nc * inner + j, load_f(x, nc * inner + j) / std::pow(bias + alpha / float(size) * sq, beta));
      }
    }
  });
}

// ---- pooling ----------------------------------------------------------------------------------------------
// Each output row (fixed output positions on the two leading spatial axes) is computed from the list of
// input rows its windows touch, in the window's row-major order (k0, then k1). Along the last axis, the
// output columns whose windows lie wholly inside the input are computed kW at a time (stride 1: plain
// loads; stride 2: pairs of loads split into even/odd elements with in-lane shuffles); the other columns
// take the scalar path. Both visit the taps in the same order with the same operations as a plain
// scalar loop (max keeps the first of equal values, NaN anywhere gives NaN; the average sums in
// row-major tap order and divides once), so results do not depend on which path or ISA computed them.
namespace {
// Kernel taps k in [lo, hi) whose position start + k * dil lies in [lo_pos, hi_pos).
struct TapRange { int64_t lo, hi; };
inline TapRange taps_within(int64_t start, int64_t kernel, int64_t dil, int64_t lo_pos, int64_t hi_pos) {
  int64_t lo = 0, hi = kernel;
  if (start < lo_pos) lo = (lo_pos - start + dil - 1) / dil;
  if (start + (kernel - 1) * dil >= hi_pos) hi = hi_pos - 1 < start ? 0 : (hi_pos - 1 - start) / dil + 1;
  if (hi < lo) hi = lo;
  return {lo, hi};
}

constexpr int64_t kPoolMaxRows = 512;   // windows spanning more input rows take pool_generic

// Calls visit(x_plane, start[3], valid tap ranges[3]) -> float for every output element; bounds are
// resolved per axis once, so the tap loops carry no checks. Used for windows over > kPoolMaxRows rows.
template <class T, class Visit>
void pool_windows(const PoolShape& s, const T* x, T* y, Visit&& visit) {
  const int64_t in_sz = s.in[0] * s.in[1] * s.in[2], out_sz = s.out[0] * s.out[1] * s.out[2];
#pragma omp parallel for schedule(static) if (s.n * s.c * out_sz * s.kernel[0] * s.kernel[1] * s.kernel[2] > kParallelWork)
  for (int64_t nc = 0; nc < s.n * s.c; ++nc) {
    const T* xi = x + nc * in_sz;
    T* yo = y + nc * out_sz;
    for (int64_t o0 = 0; o0 < s.out[0]; ++o0) {
      const int64_t st0 = o0 * s.stride[0] - s.pad_begin[0];
      const TapRange r0 = taps_within(st0, s.kernel[0], s.dilation[0], 0, s.in[0]);
      for (int64_t o1 = 0; o1 < s.out[1]; ++o1) {
        const int64_t st1 = o1 * s.stride[1] - s.pad_begin[1];
        const TapRange r1 = taps_within(st1, s.kernel[1], s.dilation[1], 0, s.in[1]);
        for (int64_t o2 = 0; o2 < s.out[2]; ++o2) {
          const int64_t st2 = o2 * s.stride[2] - s.pad_begin[2];
          const TapRange r2 = taps_within(st2, s.kernel[2], s.dilation[2], 0, s.in[2]);
          const int64_t start[3] = {st0, st1, st2};
          const TapRange ranges[3] = {r0, r1, r2};
          store_f(yo, (o0 * s.out[1] + o1) * s.out[2] + o2, visit(xi, start, ranges));
        }
      }
    }
  }
}

template <class T>
void max_pool_generic(const PoolShape& s, const T* x, T* y) {
  pool_windows<T>(s, x, y, [&](const T* xi, const int64_t* st, const TapRange* r) {
    float m = -INFINITY;
    bool nan = false;
    for (int64_t k0 = r[0].lo; k0 < r[0].hi; ++k0) {
      const int64_t i0 = st[0] + k0 * s.dilation[0];
      for (int64_t k1 = r[1].lo; k1 < r[1].hi; ++k1) {
        const T* row = xi + (i0 * s.in[1] + st[1] + k1 * s.dilation[1]) * s.in[2] + st[2];
        for (int64_t k2 = r[2].lo; k2 < r[2].hi; ++k2) {
          const float v = load_f(row, k2 * s.dilation[2]);
          nan |= v != v;
          m = v > m ? v : m;
        }
      }
    }
    return nan ? NAN : m;
  });
}

// Taps counted in an average's divisor along axis a for a window starting at st.
inline int64_t avg_count(const PoolShape& s, bool count_include_pad, int a, int64_t st) {
  // count_include_pad counts taps inside [-pad_begin, in + pad_end) (never those beyond the pads that
  // ceil_mode adds); otherwise only taps inside the input
  const TapRange c = count_include_pad
      ? taps_within(st, s.kernel[a], s.dilation[a], -s.pad_begin[a], s.in[a] + s.pad_end[a])
      : taps_within(st, s.kernel[a], s.dilation[a], 0, s.in[a]);
  return c.hi - c.lo;
}

template <class T>
void avg_pool_generic(const PoolShape& s, bool count_include_pad, const T* x, T* y) {
  pool_windows<T>(s, x, y, [&](const T* xi, const int64_t* st, const TapRange* r) {
    float sum = 0.f;
    for (int64_t k0 = r[0].lo; k0 < r[0].hi; ++k0) {
      const int64_t i0 = st[0] + k0 * s.dilation[0];
      for (int64_t k1 = r[1].lo; k1 < r[1].hi; ++k1) {
        const T* row = xi + (i0 * s.in[1] + st[1] + k1 * s.dilation[1]) * s.in[2] + st[2];
        for (int64_t k2 = r[2].lo; k2 < r[2].hi; ++k2) sum += load_f(row, k2 * s.dilation[2]);
      }
    }
    int64_t count = 1;
    for (int a = 0; a < 3; ++a) count *= avg_count(s, count_include_pad, a, st[a]);
    return count > 0 ? sum / float(count) : 0.f;
  });
}

// One tap's kW values folded into the accumulators (max: keep the first of equal values, note NaNs).
template <bool kMax>
ACCELC_INLINE void pool_acc(vf& acc, vf& nanm, vf v) {
  if (kMax) {
    nanm = vec_isnan_or(nanm, v, v);
    acc = simd::vmax(v, acc);   // v > acc ? v : acc
  } else {
    acc = acc + v;
  }
}
// Two consecutive taps (one NaN test for both).
template <bool kMax>
ACCELC_INLINE void pool_acc2(vf& acc, vf& nanm, vf v, vf w) {
  if (kMax) {
    nanm = vec_isnan_or(nanm, v, w);
    acc = simd::vmax(w, simd::vmax(v, acc));
  } else {
    acc = (acc + v) + w;
  }
}

// The output columns of the last axis that the vector path computes: [a, b), every tap of their windows
// inside the input row. With stride 2 the paired loads may read one float past a row's last tap
// (discarded); where that float is past the end of the input, the columns are [a, b_short) instead.
// A range narrower than kW (or a stride other than 1 and 2) leaves every column to the scalar path.
struct PoolCols { int64_t a, b, b_short; };
inline PoolCols pool_cols(const PoolShape& s) {
  const int64_t out = s.out[2], in = s.in[2], K = s.kernel[2], S = s.stride[2], D = s.dilation[2],
                pb = s.pad_begin[2];
  const int64_t extra = (S == 2 && (D != 1 || K % 2)) ? 1 : 0;
  int64_t a = (pb + S - 1) / S, b[2];
  for (int e = 0; e < 2; ++e) {
    const int64_t last = in - 1 - e * extra - (K - 1) * D;   // largest window start of an interior column
    b[e] = last + pb < 0 ? 0 : (last + pb) / S + 1;
    if (b[e] > out) b[e] = out;
  }
  if (a > out) a = out;
  if (!(S == 1 || S == 2)) a = b[0] = b[1] = 0;
  return {a, b[0] - a >= kW ? b[0] : a, b[1] - a >= kW ? b[1] : a};
}

// One output row of one plane. rows: the nrows input rows (pointers to their first element) of the
// windows, in tap order; y: the out[2] outputs. count01: the divisor's factor from the two leading axes
// (average only).
template <bool kMax>
void pool_row(const PoolShape& s, const PoolCols& cols, bool count_include_pad, const float* const* rows,
              int64_t nrows, int64_t count01, bool overread_ok, float* y) {
  const int64_t out = s.out[2], in = s.in[2], K = s.kernel[2], S = s.stride[2], D = s.dilation[2],
                pb = s.pad_begin[2];
  int64_t a = cols.a, b = overread_ok ? cols.b : cols.b_short;
  // (an average with an empty divisor is 0: left to the scalar path)
  const bool vec = b > a && (kMax || count01 > 0);
  if (!vec) a = b = 0;
  // scalar columns: [0, a) and [b, out)
  for (int64_t ox = 0; ox < out; ++ox) {
    if (ox == a && b > a) ox = b;
    if (ox >= out) break;
    const int64_t st = ox * S - pb;
    const TapRange r = taps_within(st, K, D, 0, in);
    if (kMax) {
      __m128 m = _mm_set_ss(-INFINITY), nan = _mm_setzero_ps();
      for (int64_t i = 0; i < nrows; ++i)
        for (int64_t k = r.lo; k < r.hi; ++k) {
          const __m128 v = _mm_load_ss(rows[i] + st + k * D);
          nan = _mm_or_ps(nan, _mm_cmpunord_ss(v, v));
          m = _mm_max_ss(v, m);   // v > m ? v : m
        }
      y[ox] = _mm_cvtss_f32(_mm_blendv_ps(m, _mm_set_ss(NAN), nan));
    } else {
      float sum = 0.f;
      for (int64_t i = 0; i < nrows; ++i)
        for (int64_t k = r.lo; k < r.hi; ++k) sum += rows[i][st + k * D];
      const int64_t count = count01 * (count_include_pad ? avg_count(s, true, 2, st) : r.hi - r.lo);
      y[ox] = count > 0 ? sum / float(count) : 0.f;
    }
  }
  if (!vec) return;
  const vf init = kMax ? simd::vset1(-INFINITY) : simd::vzero();
  const vf div = simd::vset1(float(count01 * K));
  // kW columns at a time; the last group is moved back to end at b (recomputing a few columns)
  for (int64_t ox0 = a; ox0 < b; ox0 += kW) {
    if (ox0 + kW > b) ox0 = b - kW;
    vf acc = init, nanm = simd::vzero();
    if (S == 1) {
      for (int64_t i = 0; i < nrows; ++i) {
        const float* p = rows[i] + ox0 - pb;
        int64_t k = 0;
        for (; k + 1 < K; k += 2) pool_acc2<kMax>(acc, nanm, simd::vload(p + k * D), simd::vload(p + (k + 1) * D));
        if (k < K) pool_acc<kMax>(acc, nanm, simd::vload(p + k * D));
      }
    } else {
      for (int64_t i = 0; i < nrows; ++i) {
        const float* p = rows[i] + 2 * ox0 - pb;
        if (D == 1) {
          int64_t k = 0;
          for (; k + 1 < K; k += 2) {
            vf e, o;
            pool_deinterleave(p + k, e, o);
            pool_acc2<kMax>(acc, nanm, e, o);
          }
          if (k < K) pool_acc<kMax>(acc, nanm, pool_even(p + k));
        } else {
          for (int64_t k = 0; k < K; ++k) pool_acc<kMax>(acc, nanm, pool_even(p + k * D));
        }
      }
      acc = pool_unscramble(acc);
      if (kMax) nanm = pool_unscramble(nanm);
    }
    simd::vstore(y + ox0, kMax ? vec_nan_blend(acc, nanm) : acc / div);
  }
}

// Output rows [row_begin, row_end) of one plane (rows numbered o0 * out[1] + o1). xp: the fp32 plane,
// yp: its fp32 output plane.
template <bool kMax>
void pool_plane_rows(const PoolShape& s, const PoolCols& cols, bool count_include_pad, const float* xp,
                     const float* x_end, float* yp, int64_t row_begin, int64_t row_end) {
  const float* rows[kPoolMaxRows];
  int64_t o0 = row_begin / s.out[1], o1 = row_begin % s.out[1];
  for (int64_t orow = row_begin; orow < row_end; ++orow) {
    const int64_t st0 = o0 * s.stride[0] - s.pad_begin[0], st1 = o1 * s.stride[1] - s.pad_begin[1];
    const TapRange r0 = taps_within(st0, s.kernel[0], s.dilation[0], 0, s.in[0]);
    const TapRange r1 = taps_within(st1, s.kernel[1], s.dilation[1], 0, s.in[1]);
    int64_t n = 0;
    for (int64_t k0 = r0.lo; k0 < r0.hi; ++k0)
      for (int64_t k1 = r1.lo; k1 < r1.hi; ++k1)
        rows[n++] = xp + ((st0 + k0 * s.dilation[0]) * s.in[1] + st1 + k1 * s.dilation[1]) * s.in[2];
    int64_t count01 = 1;
    if (!kMax) count01 = avg_count(s, count_include_pad, 0, st0) * avg_count(s, count_include_pad, 1, st1);
    // the rows are in address order: the last decides whether reading past a row's end is safe
    const bool overread_ok = n > 0 && rows[n - 1] + s.in[2] < x_end;
    pool_row<kMax>(s, cols, count_include_pad, rows, n, count01, overread_ok, yp + orow * s.out[2]);
    if (++o1 == s.out[1]) { o1 = 0; ++o0; }
  }
}

// Returns false (nothing done) when the scratch for 16-bit inputs cannot be allocated.
template <bool kMax, class T>
bool pool_fast(const PoolShape& s, bool count_include_pad, const T* x, T* y) {
  const int64_t in_sz = s.in[0] * s.in[1] * s.in[2], out_rows = s.out[0] * s.out[1];
  const int64_t out_sz = out_rows * s.out[2];
  const bool par = s.n * s.c * out_sz * s.kernel[0] * s.kernel[1] * s.kernel[2] > kParallelWork;
  const PoolCols cols = pool_cols(s);
  if (sizeof(T) == sizeof(float)) {   // (T is float, bf16_t or f16_t)
    // fp32: one work item per output row of every plane
    const float* xf = reinterpret_cast<const float*>(x);
    float* yf = reinterpret_cast<float*>(y);
    const int64_t total = s.n * s.c * out_rows;
#pragma omp parallel if (par)
    {
      const int nt = omp_get_num_threads(), t = omp_get_thread_num();
      int64_t lo = total * t / nt;
      const int64_t hi = total * (t + 1) / nt;
      while (lo < hi) {   // the rows of this thread, plane by plane
        const int64_t nc = lo / out_rows, end_in_plane = (nc + 1) * out_rows < hi ? (nc + 1) * out_rows : hi;
        pool_plane_rows<kMax>(s, cols, count_include_pad, xf + nc * in_sz, xf + s.n * s.c * in_sz, yf + nc * out_sz,
                              lo - nc * out_rows, end_in_plane - nc * out_rows);
        lo = end_in_plane;
      }
    }
    return true;
  }
  // 16-bit floats: each plane is widened to fp32, pooled, and rounded back (the results are input
  // values or fp32 averages, so the same as computing from the 16-bit values directly)
  const int slots = par ? omp_get_max_threads() : 1;
  float* scratch = static_cast<float*>(std::malloc(size_t(slots) * size_t(in_sz + out_sz) * sizeof(float)));
  if (!scratch) return false;
#pragma omp parallel num_threads(slots) if (par)
  {
    float* buf = scratch + size_t(omp_get_thread_num()) * size_t(in_sz + out_sz);
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < s.n * s.c; ++nc) {
      for (int64_t i = 0; i < in_sz; ++i) buf[i] = load_f(x + nc * in_sz, i);
      pool_plane_rows<kMax>(s, cols, count_include_pad, buf, buf + in_sz, buf + in_sz, 0, out_rows);
      for (int64_t i = 0; i < out_sz; ++i) store_f(y + nc * out_sz, i, buf[in_sz + i]);
    }
  }
  std::free(scratch);
  return true;
}

inline bool pool_fast_ok(const PoolShape& s) { return s.kernel[0] * s.kernel[1] <= kPoolMaxRows; }
}  // namespace

void max_pool(DT dt, const PoolShape& s, const void* xv, void* yv) {
  dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* x = static_cast<const T*>(xv);
    T* y = static_cast<T*>(yv);
    if (!pool_fast_ok(s) || !pool_fast<true, T>(s, false, x, y)) max_pool_generic<T>(s, x, y);
  });
}

void avg_pool(DT dt, const PoolShape& s, bool count_include_pad, const void* xv, void* yv) {
  dispatch_float(dt, [&](auto zero) {
    using T = decltype(zero);
    const T* x = static_cast<const T*>(xv);
    T* y = static_cast<T*>(yv);
    if (!pool_fast_ok(s) || !pool_fast<false, T>(s, count_include_pad, x, y)) {
      avg_pool_generic<T>(s, count_include_pad, x, y);
    }
  });
}

// ---- NHWC pooling (channels innermost; 2-D windows on axes 1 and 2 of PoolShape, axis 0 of size 1) ---------
// Every output pixel is a vector loop over the channels: the window's taps are visited in row-major order,
// max keeps NaN (as the NCHW kernels do) and the average sums in tap order and divides once, so the results
// equal those of max_pool/avg_pool on the transposed tensor.
namespace {
// Channels [c0, c0 + NV*kW) of one output pixel (the last vector holds `tail` lanes when TAIL): the taps
// of rows [rh) x columns [rw) accumulated in registers.
template <bool kMax, int NV, bool TAIL>
ACCELC_INLINE void pool_nhwc_vectors(const PoolShape& s, const float* x, int64_t n, int64_t h0, int64_t w0,
                                     TapRange rh, TapRange rw, int64_t c0, int tail, float count, float* yo) {
  const int64_t H = s.in[1], W = s.in[2], C = s.c;
  vf acc[NV], nanm[NV];
  for (int v = 0; v < NV; ++v) {
    acc[v] = simd::vset1(kMax ? -INFINITY : 0.f);
    nanm[v] = simd::vzero();
  }
  for (int64_t kh = rh.lo; kh < rh.hi; ++kh) {
    const float* xr = x + (n * H + h0 + kh * s.dilation[1]) * W * C + c0;
    for (int64_t kw = rw.lo; kw < rw.hi; ++kw) {
      const float* xp = xr + (w0 + kw * s.dilation[2]) * C;
      for (int v = 0; v < NV; ++v) {
        const vf val = TAIL && v == NV - 1 ? simd::vload_n(xp + v * kW, tail) : simd::vload(xp + v * kW);
        if (kMax) {
          nanm[v] = vec_isnan_or(nanm[v], val, val);
          acc[v] = simd::vmax(val, acc[v]);
        } else {
          acc[v] = acc[v] + val;
        }
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    vf r = acc[v];
    if (kMax) r = vec_nan_blend(r, nanm[v]);
    else r = count > 0.f ? r / simd::vset1(count) : simd::vzero();
    if (TAIL && v == NV - 1) simd::vstore_n(yo + c0 + v * kW, r, tail);
    else simd::vstore(yo + c0 + v * kW, r);
  }
}

template <bool kMax>
void pool_nhwc(const PoolShape& s, bool count_include_pad, const float* x, float* y) {
  const int64_t H = s.in[1], W = s.in[2], OH = s.out[1], OW = s.out[2], C = s.c;
  const int64_t rows = s.n * OH;
#pragma omp parallel for schedule(static) if (rows * OW * C * s.kernel[1] * s.kernel[2] > kParallelWork)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t n = row / OH, oh = row % OH;
    const int64_t h0 = oh * s.stride[1] - s.pad_begin[1];
    const TapRange rh = taps_within(h0, s.kernel[1], s.dilation[1], 0, H);
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t w0 = ow * s.stride[2] - s.pad_begin[2];
      const TapRange rw = taps_within(w0, s.kernel[2], s.dilation[2], 0, W);
      float* yo = y + (row * OW + ow) * C;
      float count = 1.f;
      if (!kMax) {   // a window entirely in the padding averages to 0
        const bool empty = rh.hi <= rh.lo || rw.hi <= rw.lo;
        count = empty ? 0.f : static_cast<float>(avg_count(s, count_include_pad, 1, h0) *
                                                  avg_count(s, count_include_pad, 2, w0));
      }
      int64_t c0 = 0;
      for (; c0 + 4 * kW <= C; c0 += 4 * kW) pool_nhwc_vectors<kMax, 4, false>(s, x, n, h0, w0, rh, rw, c0, kW, count, yo);
      for (; c0 + kW <= C; c0 += kW) pool_nhwc_vectors<kMax, 1, false>(s, x, n, h0, w0, rh, rw, c0, kW, count, yo);
      if (c0 < C) pool_nhwc_vectors<kMax, 1, true>(s, x, n, h0, w0, rh, rw, c0, static_cast<int>(C - c0), count, yo);
    }
  }
}
}  // namespace

void max_pool_nhwc_f32(const PoolShape& s, const float* x, float* y) { pool_nhwc<true>(s, false, x, y); }
void avg_pool_nhwc_f32(const PoolShape& s, bool count_include_pad, const float* x, float* y) {
  pool_nhwc<false>(s, count_include_pad, x, y);
}

// ---- transposed convolution ------------------------------------------------------------------------------
void conv_transpose_f32(const ConvTransposeShape& s, const float* x, const float* w, const float* bias, float* y) {
  const int64_t cg = s.c / s.groups, mg = s.m / s.groups;
  const int64_t in_sz = s.in[0] * s.in[1] * s.in[2], out_sz = s.out[0] * s.out[1] * s.out[2];
  const int64_t k_sz = s.kernel[0] * s.kernel[1] * s.kernel[2];
#pragma omp parallel for schedule(static) if (s.n * s.m * out_sz * cg * k_sz > kParallelWork)
  for (int64_t nm = 0; nm < s.n * s.m; ++nm) {
    const int64_t b = nm / s.m, oc = nm % s.m, g = oc / mg, ocg = oc % mg;
    float* yo = y + nm * out_sz;
    for (int64_t o0 = 0; o0 < s.out[0]; ++o0)
      for (int64_t o1 = 0; o1 < s.out[1]; ++o1)
        for (int64_t o2 = 0; o2 < s.out[2]; ++o2) {
          const int64_t o[3] = {o0, o1, o2};
          double acc = bias ? bias[oc] : 0.0;
          for (int64_t k0 = 0; k0 < s.kernel[0]; ++k0) {
            const int64_t f0 = o[0] + s.pad_begin[0] - k0 * s.dilation[0];
            if (f0 < 0 || f0 % s.stride[0]) continue;
            const int64_t i0 = f0 / s.stride[0];
            if (i0 >= s.in[0]) continue;
            for (int64_t k1 = 0; k1 < s.kernel[1]; ++k1) {
              const int64_t f1 = o[1] + s.pad_begin[1] - k1 * s.dilation[1];
              if (f1 < 0 || f1 % s.stride[1]) continue;
              const int64_t i1 = f1 / s.stride[1];
              if (i1 >= s.in[1]) continue;
              for (int64_t k2 = 0; k2 < s.kernel[2]; ++k2) {
                const int64_t f2 = o[2] + s.pad_begin[2] - k2 * s.dilation[2];
                if (f2 < 0 || f2 % s.stride[2]) continue;
                const int64_t i2 = f2 / s.stride[2];
                if (i2 >= s.in[2]) continue;
                const int64_t pix = (i0 * s.in[1] + i1) * s.in[2] + i2, tap = (k0 * s.kernel[1] + k1) * s.kernel[2] + k2;
                for (int64_t ci = 0; ci < cg; ++ci) {
                  const int64_t c = g * cg + ci;
                  acc += double(x[(b * s.c + c) * in_sz + pix]) * double(w[(c * mg + ocg) * k_sz + tap]);
                }
              }
            }
          }
          yo[(o0 * s.out[1] + o1) * s.out[2] + o2] = float(acc);
        }
  }
}

// ---- indexing ---------------------------------------------------------------------------------------------
static inline int64_t load_index(DT dt, const void* p, int64_t i) {
  return dt == DT::I32 ? int64_t(static_cast<const int32_t*>(p)[i]) : static_cast<const int64_t*>(p)[i];
}

int gather(int elem_size, int64_t outer, int64_t axis_len, int64_t inner, const void* data, DT index_dt,
           const void* indices, int64_t n_idx, void* out) {
  for (int64_t j = 0; j < n_idx; ++j) {
    const int64_t ix = load_index(index_dt, indices, j);
    if (ix < -axis_len || ix >= axis_len) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "Gather: index %lld is out of range for an axis of size %lld",
                    (long long)ix, (long long)axis_len);
      accelc_internal_set_error(msg);
      return 4;
    }
  }
  const char* src = static_cast<const char*>(data);
  char* dst = static_cast<char*>(out);
  const int64_t row = inner * elem_size;
#pragma omp parallel for schedule(static) if (outer * n_idx * inner > kParallelWork)
  for (int64_t oj = 0; oj < outer * n_idx; ++oj) {
    const int64_t o = oj / n_idx, j = oj % n_idx;
    int64_t ix = load_index(index_dt, indices, j);
    if (ix < 0) ix += axis_len;
    std::memcpy(dst + oj * row, src + (o * axis_len + ix) * row, size_t(row));
  }
  return 0;
}

int gather_elements(int elem_size, int rank, const int64_t* dims, const int64_t* data_dims, int axis, const void* data,
                    DT index_dt, const void* indices, void* out) {
  int64_t total = 1, strides[16];
  for (int d = 0; d < rank; ++d) total *= dims[d];
  int64_t st = 1;
  for (int d = rank - 1; d >= 0; --d) { strides[d] = st; st *= data_dims[d]; }
  const int64_t axis_len = data_dims[axis];
  int bad = 0;
  int64_t bad_value = 0;
  const char* src = static_cast<const char*>(data);
  char* dst = static_cast<char*>(out);
#pragma omp parallel for schedule(static) if (total > kParallelWork)
  for (int64_t e = 0; e < total; ++e) {
    int64_t rem = e, off = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t i = rem % dims[d];
      rem /= dims[d];
      if (d == axis) {
        int64_t ix = load_index(index_dt, indices, e);
        if (ix < -axis_len || ix >= axis_len) {
#pragma omp atomic write
          bad = 1;
          bad_value = ix;
          ix = 0;
        }
        off += (ix < 0 ? ix + axis_len : ix) * strides[d];
      } else {
        off += i * strides[d];
      }
    }
    std::memcpy(dst + e * elem_size, src + off * elem_size, size_t(elem_size));
  }
  if (bad) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "GatherElements: index %lld is out of range for an axis of size %lld",
                  (long long)bad_value, (long long)axis_len);
    accelc_internal_set_error(msg);
    return 4;
  }
  return 0;
}

}  // namespace ACCELC_NS
