// accelc cpu_amx fused attention: out = softmax(Q K^T * scale + mask) V for every (batch, head).
// See accelc_gemm.h for the contract and codegen_attention.py for how the strides come about.
//
// Two parallel phases:
//  1. every head's K^T and V are packed once into the GEMM's packed-B layout (the scratch buffer);
//  2. tasks of (batch, head, block of query rows): the block's scores go to a per-thread buffer through
//     the variant's GEMM (scale and mask in its epilogue), each row is soft-maxed in place (vector exp),
//     and the block's output rows come from a second GEMM against the packed V, written straight to
//     their strided place. No [Sq, Sk] matrix of a whole head ever reaches memory; a block of rows is
//     sized to stay in L2.
// The GEMMs run on the calling thread (they do not start a team inside a parallel region), so the two
// products use AMX tiles on the amx variant, AVX-512 on avx512 and FMA on avx2, like every other GEMM.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "accelc_gemm.h"
#include "epilogue.h"
#include "scratch.h"

namespace ACCELC_NS {

namespace {

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Per-thread buffers (see scratch.h): the block of scores, strided operands gathered densely.
static thread_local ScratchBuffer t_scores = {nullptr, 0};
static thread_local ScratchBuffer t_gather = {nullptr, 0};

float* thread_buffer(ScratchBuffer& b, size_t floats) {
  return static_cast<float*>(thread_scratch(b, floats * sizeof(float), "attention scratch"));
}

inline const float* at(const float* base, const int64_t* st, int b, int h) { return base + b * st[0] + h * st[1]; }

size_t packed_bytes(int K, int N, bool bf16) {
  return bf16 ? packed_b_elems_bf16(K, N) * sizeof(uint16_t) : packed_b_elems_f32(K, N) * sizeof(float);
}

size_t head_bytes(const AttentionArgs& a) {
  return (packed_bytes(a.d, a.sk, a.bf16) + packed_bytes(a.sk, a.dv, a.bf16) + 63) / 64 * 64;
}

// Packs the [rows x cols] matrix M[r * sr + c * sc] as packed B of a (K = rows, N = cols) product.
void pack_strided(int rows, int cols, const float* m, int64_t sr, int64_t sc, bool bf16, void* dst) {
  const float* src = m;
  int64_t ld;
  bool trans;
  if (sc == 1 || cols == 1) {
    ld = sr, trans = false;
  } else if (sr == 1 || rows == 1) {
    ld = sc, trans = true;
  } else {  // neither axis is contiguous: gather densely first
    float* g = thread_buffer(t_gather, static_cast<size_t>(rows) * cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) g[static_cast<size_t>(r) * cols + c] = m[r * sr + c * sc];
    src = g, ld = cols, trans = false;
  }
  if (bf16) pack_b_bf16(rows, cols, src, static_cast<int>(ld), trans, static_cast<uint16_t*>(dst));
  else pack_b_f32(rows, cols, src, static_cast<int>(ld), trans, static_cast<float*>(dst));
}

// In place: each of `rows` rows of `n` values (leading dimension ld) becomes its softmax.
void softmax_rows(float* s, int rows, int n, int ld) {
  using namespace simd;
  for (int r = 0; r < rows; ++r) {
    float* x = s + static_cast<size_t>(r) * ld;
    vf vm = vset1(-INFINITY);
    int j = 0;
    for (; j + kW <= n; j += kW) vm = vmax(vm, vload(x + j));
    float m = -INFINITY;
    {
      alignas(64) float lanes[kW];
      vstore(lanes, vm);
      for (int l = 0; l < kW; ++l) m = lanes[l] > m ? lanes[l] : m;
    }
    for (; j < n; ++j) m = x[j] > m ? x[j] : m;
    // A NaN score may be missed by the max, but exp(NaN - m) is NaN, so the row's sum and then every
    // value of the row become NaN, as in the reference; +inf gives inf - inf = NaN the same way.
    const vf vmx = vset1(m);
    vf vs = vzero();
    for (j = 0; j + kW <= n; j += kW) {
      vf e = epi::exp_nonpos(vload(x + j) - vmx);
      vstore(x + j, e);
      vs = vs + e;
    }
    if (j < n) {
      const int c = n - j;
      vf e = epi::exp_nonpos(vload_n(x + j, c) - vmx);
      vstore_n(x + j, e, c);
      vs = vs + vload_n(x + j, c);
    }
    alignas(64) float lanes[kW];
    vstore(lanes, vs);
    float sum = 0.f;
    for (int l = 0; l < kW; ++l) sum += lanes[l];
    const vf inv = vset1(1.f / sum);
    for (j = 0; j + kW <= n; j += kW) vstore(x + j, vload(x + j) * inv);
    if (j < n) vstore_n(x + j, vload_n(x + j, n - j) * inv, n - j);
  }
}

// Decode-sized attention (a few query rows, fp32): scores as dot products with K's rows where they
// lie, then the output as a sum of V's rows weighted by the probabilities. Packing K and V would write
// and re-read the whole cache for one or two rows of arithmetic; this reads each of them once.
constexpr int kDirectRows = 4;

float dot(const float* x, const float* y, int64_t ys, int n) {
  using namespace simd;
  if (ys != 1) {
    float acc = 0.f;
    for (int c = 0; c < n; ++c) acc += x[c] * y[c * ys];
    return acc;
  }
  vf acc = vzero();
  int c = 0;
  for (; c + kW <= n; c += kW) acc = vfma(vload(x + c), vload(y + c), acc);
  if (c < n) acc = vfma(vload_n(x + c, n - c), vload_n(y + c, n - c), acc);
  alignas(64) float lanes[kW];
  vstore(lanes, acc);
  float sum = 0.f;
  for (int l = 0; l < kW; ++l) sum += lanes[l];
  return sum;
}

void attention_direct(const AttentionArgs& a) {
  using namespace simd;
  const int heads = a.batch * a.heads;
#pragma omp parallel for schedule(static) if (heads > 1 && static_cast<double>(heads) * a.sk * (a.d + a.dv) > 32768)
  for (int bh = 0; bh < heads; ++bh) {
    const int b = bh / a.heads, h = bh % a.heads;
    const float* k = at(a.k, a.k_stride, b, h);
    const float* v = at(a.v, a.v_stride, b, h);
    float* s = thread_buffer(t_scores, static_cast<size_t>(a.sk) + a.d + a.dv);
    float* qrow = s + a.sk;     // a query row gathered densely (when its columns are strided)
    float* orow = qrow + a.d;   // the output row before a strided store
    for (int i = 0; i < a.sq; ++i) {
      const float* q = at(a.q, a.q_stride, b, h) + i * a.q_stride[2];
      if (a.q_stride[3] != 1) {
        for (int c = 0; c < a.d; ++c) qrow[c] = q[c * a.q_stride[3]];
        q = qrow;
      }
      const float* m = a.mask ? at(a.mask, a.mask_stride, b, h) + i * a.mask_stride[2] : nullptr;
      for (int j = 0; j < a.sk; ++j) {
        const float sc = a.scale * dot(q, k + j * a.k_stride[2], a.k_stride[3], a.d);
        s[j] = m ? sc + m[j * a.mask_stride[3]] : sc;
      }
      softmax_rows(s, 1, a.sk, a.sk);
      float* o = a.out + b * a.out_stride[0] + h * a.out_stride[1] + i * a.out_stride[2];
      float* acc = a.out_stride[3] == 1 ? o : orow;
      for (int c = 0; c < a.dv; ++c) acc[c] = 0.f;
      for (int j = 0; j < a.sk; ++j) {
        const float* vr = v + j * a.v_stride[2];
        const vf pj = vset1(s[j]);
        if (a.v_stride[3] == 1) {
          int c = 0;
          for (; c + kW <= a.dv; c += kW) vstore(acc + c, vfma(pj, vload(vr + c), vload(acc + c)));
          for (; c < a.dv; ++c) acc[c] += s[j] * vr[c];
        } else {
          for (int c = 0; c < a.dv; ++c) acc[c] += s[j] * vr[c * a.v_stride[3]];
        }
      }
      if (acc != o)
        for (int c = 0; c < a.dv; ++c) o[c * a.out_stride[3]] = acc[c];
    }
  }
}

}  // namespace

size_t attention_scratch_bytes(const AttentionArgs& a) {
  if (a.sq <= kDirectRows && !a.bf16) return 0;  // the direct path packs nothing
  return static_cast<size_t>(a.batch) * a.heads * head_bytes(a);
}

void attention(const AttentionArgs& a, void* scratch) {
  const int heads = a.batch * a.heads;
  if (heads <= 0 || a.sq <= 0 || a.dv <= 0) return;
  if (a.sq <= kDirectRows && !a.bf16) return attention_direct(a);
  unsigned char* packed = static_cast<unsigned char*>(scratch);
  const size_t hb = head_bytes(a), kbytes = packed_bytes(a.d, a.sk, a.bf16);
  const int threads = omp_get_max_threads();

  // ---- 1. pack K^T (K = d, N = sk) and V (K = sk, N = dv) of every head ----
#pragma omp parallel for schedule(static) if (heads > 1)
  for (int bh = 0; bh < heads; ++bh) {
    const int b = bh / a.heads, h = bh % a.heads;
    unsigned char* dst = packed + bh * hb;
    // K^T[c, j] = K[j, c]: rows are head-dim columns c (stride k_stride[3]), columns keys j (k_stride[2])
    pack_strided(a.d, a.sk, at(a.k, a.k_stride, b, h), a.k_stride[3], a.k_stride[2], a.bf16, dst);
    pack_strided(a.sk, a.dv, at(a.v, a.v_stride, b, h), a.v_stride[2], a.v_stride[3], a.bf16, dst + kbytes);
  }

  // ---- 2. blocks of query rows ----
  // The largest block whose scores stay within ~128 KiB, split further until every thread has 4 tasks.
  int rb = a.sq;
  const int cap = 32768 / (a.sk > 0 ? a.sk : 1);
  if (rb > cap) rb = cap < 8 ? 8 : cap;
  while (rb > 8 && static_cast<long>(heads) * ceil_div(a.sq, rb) < 4L * threads) rb = ceil_div(rb, 2);
  const int nblk = ceil_div(a.sq, rb);
  const long tasks = static_cast<long>(heads) * nblk;
  const bool q_dense = a.q_stride[3] == 1, out_dense = a.out_stride[3] == 1;
  const bool mask_rows = a.mask && (a.mask_stride[3] == 1 || a.sk == 1);

#pragma omp parallel for schedule(dynamic, 1) if (tasks > 1)
  for (long task = 0; task < tasks; ++task) {
    const int bh = static_cast<int>(task / nblk), blk = static_cast<int>(task % nblk);
    const int b = bh / a.heads, h = bh % a.heads;
    const int r0 = blk * rb, rows = a.sq - r0 < rb ? a.sq - r0 : rb;
    const unsigned char* kp = packed + bh * hb;
    const unsigned char* vp = kp + kbytes;
    // scores block (rows x sk), then room for a gathered Q block / mask block / output block
    const size_t extra = static_cast<size_t>(rows) * (a.d > a.dv ? a.d : a.dv) +
                         (a.mask && !mask_rows ? static_cast<size_t>(rows) * a.sk : 0);
    float* s = thread_buffer(t_scores, static_cast<size_t>(rows) * a.sk + extra);
    float* tmp = s + static_cast<size_t>(rows) * a.sk;

    const float* q = at(a.q, a.q_stride, b, h) + r0 * a.q_stride[2];
    int lda = static_cast<int>(a.q_stride[2]);
    if (!q_dense) {
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < a.d; ++c) tmp[static_cast<size_t>(r) * a.d + c] = q[r * a.q_stride[2] + c * a.q_stride[3]];
      q = tmp, lda = a.d;
    }
    Epilogue ep;
    ep.alpha = a.scale;
    if (a.mask) {
      const float* m = at(a.mask, a.mask_stride, b, h) + r0 * a.mask_stride[2];
      if (mask_rows) {
        ep.residual = m, ep.ldr = static_cast<int>(a.mask_stride[2]);
      } else {  // a mask broadcast along the keys: expand this block's rows
        float* mb = tmp + static_cast<size_t>(rows) * (a.d > a.dv ? a.d : a.dv);
        for (int r = 0; r < rows; ++r)
          for (int j = 0; j < a.sk; ++j) mb[static_cast<size_t>(r) * a.sk + j] = m[r * a.mask_stride[2] + j * a.mask_stride[3]];
        ep.residual = mb, ep.ldr = a.sk;
      }
    }
    if (a.bf16) gemm_bf16(rows, a.sk, a.d, q, lda, reinterpret_cast<const uint16_t*>(kp), s, a.sk, ep);
    else gemm_f32(rows, a.sk, a.d, q, lda, reinterpret_cast<const float*>(kp), s, a.sk, ep);

    softmax_rows(s, rows, a.sk, a.sk);

    float* o = a.out + b * a.out_stride[0] + h * a.out_stride[1] + r0 * a.out_stride[2];
    float* c = out_dense ? o : tmp;
    const int ldc = out_dense ? static_cast<int>(a.out_stride[2]) : a.dv;
    const Epilogue plain;
    if (a.bf16) gemm_bf16(rows, a.dv, a.sk, s, a.sk, reinterpret_cast<const uint16_t*>(vp), c, ldc, plain);
    else gemm_f32(rows, a.dv, a.sk, s, a.sk, reinterpret_cast<const float*>(vp), c, ldc, plain);
    if (!out_dense)
      for (int r = 0; r < rows; ++r)
        for (int cc = 0; cc < a.dv; ++cc) o[r * a.out_stride[2] + cc * a.out_stride[3]] = tmp[static_cast<size_t>(r) * a.dv + cc];
  }
}

}  // namespace ACCELC_NS
