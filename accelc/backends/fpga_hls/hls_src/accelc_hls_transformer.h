// accelc HLS layer library: the transformer family (LayerNorm, activation x activation MatMul, Transpose).
// Synthesizable Vitis HLS C++ (C++14); also compiled by g++ for C-simulation against the ap_types headers.
// Every kernel here is modelled bit for bit by accelc/backends/fpga_hls/layers/transformer.py: change
// both together.
#ifndef ACCELC_HLS_TRANSFORMER_H
#define ACCELC_HLS_TRANSFORMER_H

#include "accelc_hls_common.h"

namespace accelc_hls {

// ---------------------------------------------------------------------------------------------------
// Transpose: out[i] = in[src[i]], src a constant index table (folds into wiring when unrolled).
// ---------------------------------------------------------------------------------------------------
template <class TI, class TO, int SIZE>
void permute(const TI in[SIZE], TO out[SIZE], const int src[SIZE]) {
#pragma HLS INLINE
    for (int i = 0; i < SIZE; i++) {
#pragma HLS UNROLL
        out[i] = in[src[i]];
    }
}

// io_stream: the whole tensor must have arrived before the first permuted packet can leave, so the
// kernel buffers one tensor (BRAM when large) and reads it back in the permuted order.
template <class TI, class TO, int PIN, int POUT, int SIZE>
void permute_stream(hls::stream<packet<TI, PIN> >& in, hls::stream<packet<TO, POUT> >& out,
                    const int src[SIZE]) {
    TI buf[SIZE];
    stream_to_array<TI, PIN, SIZE>(in, buf);
    for (int p = 0; p < SIZE / POUT; p++) {
#pragma HLS PIPELINE II=1
        packet<TO, POUT> pk;
#pragma HLS ARRAY_PARTITION variable=pk.data complete
        for (int j = 0; j < POUT; j++) {
#pragma HLS UNROLL
            pk[j] = buf[src[p * POUT + j]];
        }
        out.write(pk);
    }
}

// ---------------------------------------------------------------------------------------------------
// MatMul of two activations: a (B, M, K) x b (B, K, N) -> out (B, M, N), exact accumulator CFG::acc_t.
// The B*M*N*K products are split into CFG::reuse rounds of CFG::per_round multiplies each (round r
// computes products t = r*per_round .. r*per_round+per_round-1 in (o, k) order); ALLOCATION caps the
// multipliers at per_round so each is used `reuse` times. The accumulator is exact, so the result does
// not depend on the reuse factor or on the order of the additions.
// CFG: batch, m, k, n, reuse, per_round, acc_t.
// ---------------------------------------------------------------------------------------------------
template <class TA, class TB, class TO, class CFG>
void matmul(const TA a[CFG::batch * CFG::m * CFG::k], const TB b[CFG::batch * CFG::k * CFG::n],
            TO out[CFG::batch * CFG::m * CFG::n]) {
    const int NOUT = CFG::batch * CFG::m * CFG::n;
    const int NMULT = NOUT * CFG::k;
#pragma HLS ALLOCATION operation instances=mul limit=CFG::per_round
    typename CFG::acc_t acc[NOUT];
#pragma HLS ARRAY_PARTITION variable=acc complete
    for (int o = 0; o < NOUT; o++) {
#pragma HLS UNROLL
        acc[o] = 0;
    }
    for (int r = 0; r < CFG::reuse; r++) {
#pragma HLS PIPELINE II=1
        for (int j = 0; j < CFG::per_round; j++) {
#pragma HLS UNROLL
            const int t = r * CFG::per_round + j;
            if (t < NMULT) {
                const int o = t / CFG::k, kk = t % CFG::k;
                const int bi = o / (CFG::m * CFG::n), mi = (o / CFG::n) % CFG::m, ni = o % CFG::n;
                acc[o] += a[(bi * CFG::m + mi) * CFG::k + kk] * b[(bi * CFG::k + kk) * CFG::n + ni];
            }
        }
    }
    for (int o = 0; o < NOUT; o++) {
#pragma HLS UNROLL
        out[o] = acc[o];     // the output type's rounding and overflow modes apply here
    }
}

// io_stream adapter: both operands are needed whole (every output reads a full row of a and column of
// b), so they are buffered, multiplied by the parallel kernel and streamed out, in one process.
template <class TA, class TB, class TO, class CFG>
void matmul_stream(hls::stream<packet<TA, CFG::k> >& a, hls::stream<packet<TB, CFG::n> >& b,
                   hls::stream<packet<TO, CFG::n> >& out) {
    TA abuf[CFG::batch * CFG::m * CFG::k];
    TB bbuf[CFG::batch * CFG::k * CFG::n];
    TO obuf[CFG::batch * CFG::m * CFG::n];
#pragma HLS ARRAY_PARTITION variable=abuf complete
#pragma HLS ARRAY_PARTITION variable=bbuf complete
#pragma HLS ARRAY_PARTITION variable=obuf complete
    stream_to_array<TA, CFG::k, CFG::batch * CFG::m * CFG::k>(a, abuf);
    stream_to_array<TB, CFG::n, CFG::batch * CFG::k * CFG::n>(b, bbuf);
    matmul<TA, TB, TO, CFG>(abuf, bbuf, obuf);
    array_to_stream<TO, CFG::n, CFG::batch * CFG::m * CFG::n>(obuf, out);
}

// ---------------------------------------------------------------------------------------------------
// LayerNorm over the last axis, in exact integer arithmetic on the raw codes (c = x * 2^F):
//   S = sum c_i, d_i = D*c_i - S                     (= D * (x_i - mean), exact)
//   V = sum d_i^2 + E  (>= 1)                        (= D^3 * (var + eps) in code units; E = eps, quantized)
//   leading one L of V, k = ceil(L/2) - P, Vn = V / 4^k (shift), so Vn has 2P-1 or 2P bits
//   s = isqrt(Vn) (P bits, bit by bit), r = floor(2^N / s) (one divider per row)
//   dn_i = d_i * 2^(G-k) (shift, floor), xn_i = dn_i * r * 2^-(N+G) rounded to xn_t (= xhat_i / sqrt(D))
//   y_i = xn_i * g_i + beta_i, g = gamma * sqrt(D) (folded constant), assigned to the output type.
// CFG: d, rows, wx, x_signed, wd, wv, p, g, n, has_beta, v_t, xn_t, and eps_code() returning E as v_t.
// ---------------------------------------------------------------------------------------------------
template <int W, bool S, class T>
ap_int<W + 1> raw_code(const T& x) {
#pragma HLS INLINE
    ap_uint<W> u = x.range(W - 1, 0);
    ap_int<W + 1> c;
    if (S) {
        ap_int<W> s = u;   // same width: reinterprets the bit pattern as two's complement
        c = s;
    } else {
        c = u;
    }
    return c;
}

template <class TX, class TY, class TG, class TB, class CFG>
void layernorm_row(const TX x[CFG::d], TY y[CFG::d], const TG gamma[CFG::d], const TB beta[CFG::d]) {
#pragma HLS INLINE
    const int D = CFG::d, P = CFG::p, G = CFG::g, N = CFG::n;
    typedef ap_int<CFG::wd> d_t;
    typedef typename CFG::v_t v_t;     // ap_int<wv + 1>
    d_t sum = 0;
    d_t dv[D];
#pragma HLS ARRAY_PARTITION variable=dv complete
    for (int i = 0; i < D; i++) {
#pragma HLS UNROLL
        dv[i] = raw_code<CFG::wx, CFG::x_signed>(x[i]);
        sum += dv[i];
    }
    v_t q = CFG::eps_code();
    for (int i = 0; i < D; i++) {
#pragma HLS UNROLL
        dv[i] = dv[i] * D - sum;
        ap_int<2 * CFG::wd> sq = dv[i] * dv[i];
        q += sq;
    }
    if (q == 0) q = 1;      // a constant row with eps quantized to zero: every d_i is 0, y = beta
    int L = 0;              // leading-one detection (priority encoder)
    for (int b = 0; b < CFG::wv; b++) {
#pragma HLS UNROLL
        if (q[b]) L = b + 1;
    }
    const int k = (L + 1) / 2 - P;
    ap_uint<2 * P> vn;
    if (k >= 0) {
        vn = q >> (2 * k);
    } else {
        ap_uint<CFG::wv + 2 * P> t = q;
        vn = t << (-2 * k);
    }
    // integer square root, one result bit per iteration (P iterations, shifts and subtractions only)
    ap_uint<2 * P> rem = vn, root = 0, bit = ap_uint<2 * P>(1) << (2 * P - 2);
    for (int i = 0; i < P; i++) {
#pragma HLS UNROLL
        ap_uint<2 * P> trial = root + bit;
        if (rem >= trial) {
            rem -= trial;
            root = (root >> 1) + bit;
        } else {
            root = root >> 1;
        }
        bit = bit >> 2;
    }
    ap_uint<P> s = root;
    ap_uint<N + 1> num = ap_uint<N + 1>(1) << N;
    ap_uint<P + 4> r = num / s;     // the row's one divider: 2^N / sqrt(Vn)
    const int sh = G - k;
    for (int i = 0; i < D; i++) {
#pragma HLS UNROLL
        ap_int<P + G + 2> dn;
        if (sh >= 0) {
            ap_int<CFG::wd + G + P> t = dv[i];
            dn = t << sh;
        } else {
            dn = dv[i] >> (-sh);
        }
        ap_int<2 * P + G + 6> prod = dn * r;
        ap_fixed<2 * P + G + 6, 2 * P + G + 6 - (N + G)> pf;
        pf.range(2 * P + G + 5, 0) = prod.range(2 * P + G + 5, 0);    // prod * 2^-(N+G)
        typename CFG::xn_t xn = pf;                                     // rounds (xn_t's mode)
        if (CFG::has_beta) {
            y[i] = xn * gamma[i] + beta[i];
        } else {
            y[i] = xn * gamma[i];
        }
    }
}

template <class TX, class TY, class TG, class TB, class CFG>
void layernorm(const TX x[CFG::rows * CFG::d], TY y[CFG::rows * CFG::d], const TG gamma[CFG::d],
               const TB beta[CFG::d]) {
#pragma HLS INLINE
    for (int r = 0; r < CFG::rows; r++) {
#pragma HLS UNROLL
        layernorm_row<TX, TY, TG, TB, CFG>(x + r * CFG::d, y + r * CFG::d, gamma, beta);
    }
}

// io_stream: one packet is one row (the normalized axis is the last one), so the kernel is native:
// a row per cycle once the pipeline is full.
template <class TX, class TY, class TG, class TB, class CFG>
void layernorm_stream(hls::stream<packet<TX, CFG::d> >& in, hls::stream<packet<TY, CFG::d> >& out,
                      const TG gamma[CFG::d], const TB beta[CFG::d]) {
    for (int r = 0; r < CFG::rows; r++) {
#pragma HLS PIPELINE II=1
        packet<TX, CFG::d> xi = in.read();
        packet<TY, CFG::d> yo;
#pragma HLS ARRAY_PARTITION variable=yo.data complete
        layernorm_row<TX, TY, TG, TB, CFG>(xi.data, yo.data, gamma, beta);
        out.write(yo);
    }
}

}  // namespace accelc_hls

#endif
