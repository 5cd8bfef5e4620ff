// Timing driver of the compile-time tuner (tuning.py): runs one call site's kernel with each candidate
// work split (accelc_gemm.h, Blocking) and reports the seconds per call. Linked with one ISA variant of
// the kernel library into a small shared library of its own; called through ctypes.
//
// A site is timed as it runs inside a model: its weights come from memory, not from a cache a previous
// call warmed. The driver keeps enough copies of the packed weights to overflow the last-level cache
// (kColdBytes) and each call reads the next copy. The candidates are interleaved: round r times every
// candidate once, in an order rotated by r, so a slow patch of a shared machine hits all of them alike.
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "accelc_gemm.h"

#define ACCELC_TUNE_API extern "C" __attribute__((visibility("default")))

namespace {

constexpr size_t kColdBytes = size_t(96) << 20;   // weight copies rotated through: > any L3 of 2 cores' share

// Deterministic fill in [-1, 1): the values only matter for not being denormal, NaN or all zero.
void fill(std::vector<float>& v, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1u;
  for (float& f : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    f = static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

ACCELC_NS::Conv2dShape make_shape(const int* v) {
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
}

// Copies of one packed weight block: enough to fill kColdBytes, at least 1, at most 64.
struct WeightCopies {
  std::vector<float> data;
  size_t elems = 0;
  int count = 1;
  WeightCopies(const std::vector<float>& packed) : elems(packed.size()) {
    const size_t bytes = elems * sizeof(float);
    count = bytes == 0 ? 1 : static_cast<int>((kColdBytes + bytes - 1) / bytes);
    if (count > 64) count = 64;
    if (count < 1) count = 1;
    data.resize(elems * count);
    for (int c = 0; c < count; ++c) std::memcpy(data.data() + c * elems, packed.data(), elems * sizeof(float));
  }
  const float* get(int i) const { return data.data() + static_cast<size_t>(i % count) * elems; }
};

// Times `run(blocking, copy)` for each candidate: one warm-up call each, then `rounds` interleaved rounds of
// `reps` calls. seconds[c * rounds + r] = mean seconds per call of candidate c in round r.
template <class Run>
void time_candidates(int ncand, const int* cand, int rounds, int reps, int copies, double* seconds, Run run) {
  auto blocking = [&](int c) {
    ACCELC_NS::Blocking b;
    b.rows = cand[3 * c];
    b.panels = cand[3 * c + 1];
    b.shared = cand[3 * c + 2];
    return b;
  };
  int next = 0;
  for (int c = 0; c < ncand; ++c) run(blocking(c), next++ % copies);
  for (int r = 0; r < rounds; ++r) {
    for (int j = 0; j < ncand; ++j) {
      const int c = (j + r) % ncand;
      const ACCELC_NS::Blocking b = blocking(c);
      const double t0 = omp_get_wtime();
      for (int k = 0; k < reps; ++k) run(b, next++ % copies);
      seconds[c * rounds + r] = (omp_get_wtime() - t0) / reps;
    }
  }
}

// The site's epilogue: a bias, its activation (the Act code; clip as ReLU6, leaky slope 0.01) and, when
// it has one, a residual (ld = ldr).
ACCELC_NS::Epilogue site_epilogue(const float* bias, int act, const float* residual, int ldr) {
  ACCELC_NS::Epilogue ep;
  ep.bias = bias;
  ep.bias_mode = 1;
  ep.act = static_cast<ACCELC_NS::Act>(act);
  ep.act_alpha = act == static_cast<int>(ACCELC_NS::Act::Clip) ? 0.f : 0.01f;
  ep.act_beta = 6.f;
  ep.residual = residual;
  ep.ldr = residual ? ldr : 0;
  return ep;
}

}  // namespace

// C = act(A (M x K) x B (K x N) + bias [+ residual]), as gemm_f32 runs it. Returns 0, or -1 for a bad argument.
ACCELC_TUNE_API int accelc_tune_gemm_f32(int M, int N, int K, int act, int residual, int threads, int ncand,
                                         const int* cand, int rounds, int reps, double* seconds) {
  if (M <= 0 || N <= 0 || K <= 0 || act < 0 || act > 8 || ncand <= 0 || rounds <= 0 || reps <= 0 || threads <= 0)
    return -1;
  omp_set_num_threads(threads);
  std::vector<float> A(static_cast<size_t>(M) * K), B(static_cast<size_t>(K) * N), bias(N),
      C(static_cast<size_t>(M) * N), R(residual ? static_cast<size_t>(M) * N : 0);
  fill(R, 7);
  fill(A, 1);
  fill(B, 2);
  fill(bias, 3);
  std::vector<float> packed(ACCELC_NS::packed_b_elems_f32(K, N));
  ACCELC_NS::pack_b_f32(K, N, B.data(), N, false, packed.data());
  const WeightCopies w(packed);
  const ACCELC_NS::Epilogue ep = site_epilogue(bias.data(), act, residual ? R.data() : nullptr, N);
  time_candidates(ncand, cand, rounds, reps, w.count, seconds, [&](const ACCELC_NS::Blocking& b, int copy) {
    ACCELC_NS::gemm_f32(M, N, K, A.data(), K, w.get(copy), C.data(), N, ep, b);
  });
  return 0;
}

// One NHWC convolution (shape: the 16 Conv2dShape fields), direct (m = 0) or Winograd F(m x m, 3x3), with
// the site's epilogue, as the model runs it. Returns 0, or -1 for a bad argument.
ACCELC_TUNE_API int accelc_tune_conv_nhwc_f32(const int* shape, int m, int act, int residual, int threads, int ncand,
                                              const int* cand, int rounds, int reps, double* seconds) {
  const ACCELC_NS::Conv2dShape s = make_shape(shape);
  if (s.N <= 0 || s.C <= 0 || s.K <= 0 || s.OH <= 0 || s.OW <= 0 || s.groups <= 0 || ncand <= 0 || rounds <= 0 ||
      reps <= 0 || threads <= 0 || s.C % s.groups || s.K % s.groups || act < 0 || act > 8)
    return -1;
  if (m != 0 && !ACCELC_NS::winograd_supported(s, m)) return -1;
  omp_set_num_threads(threads);
  std::vector<float> x(static_cast<size_t>(s.N) * s.H * s.W * s.C), w(static_cast<size_t>(s.K) * (s.C / s.groups) * s.R * s.S),
      bias(s.K), y(static_cast<size_t>(s.N) * s.OH * s.OW * s.K), R(residual ? y.size() : 0);
  fill(R, 7);
  fill(x, 4);
  fill(w, 5);
  fill(bias, 6);
  std::vector<float> packed;
  if (m == 0) {
    packed.resize(ACCELC_NS::conv_nhwc_packed_elems(s));
    ACCELC_NS::pack_conv_nhwc_f32(s, w.data(), packed.data());
  } else {
    // The transformed filters' values do not change the speed: the raw weights, repeated, stand in.
    packed.resize(ACCELC_NS::winograd_packed_elems(s.C, s.K, m));
    for (size_t i = 0; i < packed.size(); ++i) packed[i] = w[i % w.size()];
  }
  const WeightCopies wc(packed);
  const ACCELC_NS::Epilogue ep = site_epilogue(bias.data(), act, residual ? R.data() : nullptr, s.K);
  time_candidates(ncand, cand, rounds, reps, wc.count, seconds, [&](const ACCELC_NS::Blocking& b, int copy) {
    if (m == 0) ACCELC_NS::conv2d_nhwc_f32(s, x.data(), wc.get(copy), y.data(), ep, b);
    else ACCELC_NS::conv2d_winograd_nhwc_f32(s, m, x.data(), wc.get(copy), y.data(), ep, b);
  });
  return 0;
}
