// accelc HLS layer library: activations (ReLU, leaky ReLU, table functions) and softmax.
// Synthesizable Vitis HLS C++ (C++14).
//
// Tables are computed by accelc (float64 math quantized to the table type) and emitted as constants
// next to each layer; the index into a table is integer arithmetic on the raw bits of the input, which
// accelc's NumPy model repeats exactly.
#ifndef ACCELC_HLS_ACTIVATION_H
#define ACCELC_HLS_ACTIVATION_H

#include "accelc_hls_common.h"

namespace accelc_hls {

// The raw two's complement code of a fixed-point value as a signed integer one bit wider
// (x == code * 2**-F).
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
ap_int<W + 1> raw_code(const ap_fixed<W, I, Q, O, N>& x) {
#pragma HLS INLINE
    ap_int<W> r = x.range(W - 1, 0);
    return r;
}

template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
ap_int<W + 1> raw_code(const ap_ufixed<W, I, Q, O, N>& x) {
#pragma HLS INLINE
    ap_uint<W> r = x.range(W - 1, 0);
    return r;
}

// ---- ReLU and leaky ReLU ---------------------------------------------------------------------------
template <class data_T, class res_T>
res_T relu_one(const data_T& x) {
#pragma HLS INLINE
    res_T y;
    if (x > 0)
        y = x;
    else
        y = 0;
    return y;
}

template <class data_T, class res_T, class alpha_T>
res_T leaky_relu_one(const data_T& x, const alpha_T& alpha) {
#pragma HLS INLINE
    res_T y;
    if (x >= 0)
        y = x;
    else
        y = x * alpha;     // exact product, one rounding into res_T
    return y;
}

// ---- table functions (sigmoid, tanh, GELU, SiLU) -----------------------------------------------
// CONFIG_T: in_width, lo_code, hi_code (the table covers input codes lo_code .. hi_code-1),
// shift (codes per table entry = 2**shift), n_table, low_mode / high_mode (0: the constant tails[0] /
// tails[1], 1: the input itself assigned to res_T); typedef table_t.
template <class data_T, class res_T, class CONFIG_T>
res_T table_one(const data_T& x, const typename CONFIG_T::table_t table[CONFIG_T::n_table],
                const res_T tails[2]) {
#pragma HLS INLINE
    ap_int<CONFIG_T::in_width + 2> c = raw_code(x);
    res_T y;
    if (c < CONFIG_T::lo_code) {
        if (CONFIG_T::low_mode == 1)
            y = x;
        else
            y = tails[0];
    } else if (c >= CONFIG_T::hi_code) {
        if (CONFIG_T::high_mode == 1)
            y = x;
        else
            y = tails[1];
    } else {
        ap_uint<CONFIG_T::in_width + 1> d = c - CONFIG_T::lo_code;
        unsigned idx = (unsigned)(d >> CONFIG_T::shift).to_uint64();
        y = table[idx];
    }
    return y;
}

// KIND: 0 relu, 1 leaky relu, 2 table. P elements per call (a packet, or the whole tensor).
template <class data_T, class res_T, class CONFIG_T>
res_T activation_one(const data_T& x, const typename CONFIG_T::table_t table[CONFIG_T::n_table],
                     const res_T tails[2], const typename CONFIG_T::alpha_t& alpha) {
#pragma HLS INLINE
    if (CONFIG_T::kind == 0) return relu_one<data_T, res_T>(x);
    if (CONFIG_T::kind == 1) return leaky_relu_one<data_T, res_T, typename CONFIG_T::alpha_t>(x, alpha);
    return table_one<data_T, res_T, CONFIG_T>(x, table, tails);
}

template <class data_T, class res_T, class CONFIG_T, int SIZE>
void activation(const data_T x[SIZE], res_T y[SIZE], const typename CONFIG_T::table_t table[CONFIG_T::n_table],
                const res_T tails[2], const typename CONFIG_T::alpha_t& alpha) {
#pragma HLS INLINE
    for (int i = 0; i < SIZE; i++) {
#pragma HLS UNROLL
        y[i] = activation_one<data_T, res_T, CONFIG_T>(x[i], table, tails, alpha);
    }
}

template <class data_T, class res_T, class CONFIG_T, int P, int NPACK>
void activation_stream(hls::stream<packet<data_T, P> >& in, hls::stream<packet<res_T, P> >& out,
                       const typename CONFIG_T::table_t table[CONFIG_T::n_table], const res_T tails[2],
                       const typename CONFIG_T::alpha_t& alpha) {
    for (int p = 0; p < NPACK; p++) {
#pragma HLS PIPELINE II=1
        packet<data_T, P> px = in.read();
        packet<res_T, P> py;
#pragma HLS ARRAY_PARTITION variable=py.data complete
        for (int i = 0; i < P; i++) {
#pragma HLS UNROLL
            py[i] = activation_one<data_T, res_T, CONFIG_T>(px[i], table, tails, alpha);
        }
        out.write(py);
    }
}

// ---- softmax over rows of N elements ---------------------------------------------------------------
// For each row: m = max(x); D = code(m) - code(x) >= 0 (exact); e = exp(-D * 2**-F) from one table
// (n_lo entries indexed by D, when n_hi == 0) or two (exp_hi[D >> lo_bits] * exp_lo[D & (2**lo_bits-1)],
// rounded to exp_t), and e = 0 for D >= d_max; s = exact integer sum of e's codes (s >= 2**(EW-1):
// the row's maximum has e == 1). Then, without a divider (exact_division == false):
//   sh = sum_width - (bit length of s), in 0..lg: a priority encoder over bits EW .. sum_width-1;
//   m = (s << sh) >> (sum_width - m_bits): the mantissa, top bit set;
//   i = the t_bits of m below its leading one; r0 = recip[i] ~ 1/m, r0sq = recip_sq[i] = r0**2 (exact);
//   r1 = 2 r0 - m r0sq = r0 (2 - m r0) (one Newton step, exact), floor-truncated to r1_bits fraction bits;
//   y = (e << sh) * r1, a value with r1_bits + sum_width - 1 fraction bits, assigned to res_T.
// With exact_division: q = 2**P / s (one exact integer division); y = e_code * q (P fraction bits).
// CONFIG_T: n, in_width, exp_width (exp_t is ap_ufixed<exp_width, 1>), d_max, lo_bits, n_lo, n_hi,
// sum_width, exact_division, p_bits, q_width, lg, m_bits, t_bits, r_bits (recip_t is ap_ufixed<r_bits, 0>,
// recip_sq_t ap_ufixed<2 r_bits, 0>), r1_bits, n_recip; typedefs exp_t, recip_t, recip_sq_t.
template <class data_T, class res_T, class CONFIG_T>
void softmax_row(const data_T x[CONFIG_T::n], res_T y[CONFIG_T::n],
                 const typename CONFIG_T::exp_t exp_lo[CONFIG_T::n_lo],
                 const typename CONFIG_T::exp_t exp_hi[CONFIG_T::n_hi > 0 ? CONFIG_T::n_hi : 1],
                 const typename CONFIG_T::recip_t recip[CONFIG_T::n_recip],
                 const typename CONFIG_T::recip_sq_t recip_sq[CONFIG_T::n_recip]) {
#pragma HLS INLINE
    const int N = CONFIG_T::n;
    const int EW = CONFIG_T::exp_width;
    const int SW = CONFIG_T::sum_width;
    ap_int<CONFIG_T::in_width + 2> c[N];
#pragma HLS ARRAY_PARTITION variable=c complete
    for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
        c[i] = raw_code(x[i]);
    }
    ap_int<CONFIG_T::in_width + 2> m = c[0];
MaxLoop:
    for (int i = 1; i < N; i++) {
#pragma HLS UNROLL
        if (c[i] > m) m = c[i];
    }
    ap_uint<EW> e[N];
#pragma HLS ARRAY_PARTITION variable=e complete
    ap_uint<SW> s = 0;
ExpLoop:
    for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
        ap_uint<CONFIG_T::in_width + 2> d = m - c[i];
        typename CONFIG_T::exp_t v;
        if (d >= CONFIG_T::d_max) {
            v = 0;
        } else if (CONFIG_T::n_hi == 0) {
            v = exp_lo[(unsigned)d.to_uint64()];
        } else {
            const unsigned hi = (unsigned)(d >> CONFIG_T::lo_bits).to_uint64();
            const unsigned lo = (unsigned)(d & ((1u << CONFIG_T::lo_bits) - 1)).to_uint64();
            v = exp_hi[hi] * exp_lo[lo];       // exact product, rounded into exp_t
        }
        e[i] = v.range(EW - 1, 0);
        s += e[i];
    }
    if (CONFIG_T::exact_division) {
        ap_uint<CONFIG_T::p_bits + 1> num = 1;
        num <<= CONFIG_T::p_bits;
        const ap_uint<CONFIG_T::q_width> q = num / s;
    DivOutLoop:
        for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
            ap_uint<EW + CONFIG_T::q_width> prod = e[i] * q;
            ap_ufixed<EW + CONFIG_T::q_width, EW + CONFIG_T::q_width - CONFIG_T::p_bits> v;
            v.range(EW + CONFIG_T::q_width - 1, 0) = prod;
            y[i] = v;
        }
    } else {
        const int MB = CONFIG_T::m_bits;
        const int RB = CONFIG_T::r_bits;
        const int QB = CONFIG_T::r1_bits;
        const int TB = CONFIG_T::t_bits;
        // leading-one detection: s >= 2**(EW-1), so only bits EW .. SW-1 can hold a higher one
        ap_uint<8> sh = CONFIG_T::lg;
    LeadingOne:
        for (int j = EW; j < SW; j++) {
#pragma HLS UNROLL
            if (s[j]) sh = SW - 1 - j;         // the highest set bit is seen last
        }
        ap_uint<SW> sn = s;
        sn <<= sh;
        const ap_uint<MB> mant = sn >> (SW - MB);
        const unsigned idx = (unsigned)mant.range(MB - 2, MB - 1 - TB).to_uint64();
        const typename CONFIG_T::recip_t r0v = recip[idx];
        const typename CONFIG_T::recip_sq_t r0sqv = recip_sq[idx];
        const ap_uint<RB> r0 = r0v.range(RB - 1, 0);
        const ap_uint<2 * RB> r0sq = r0sqv.range(2 * RB - 1, 0);
        ap_uint<MB + 2 * RB + 1> two_r0 = r0;
        two_r0 <<= (MB + RB);                  // 2 * r0 at M-1+2R fraction bits
        const ap_uint<MB + 2 * RB> mr = mant * r0sq;
        const ap_uint<MB + 2 * RB> r1_full = two_r0 - mr;
        const ap_uint<QB + 1> r1 = r1_full >> (MB - 1 + 2 * RB - QB);
    OutLoop:
        for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
            ap_uint<EW + CONFIG_T::lg> es = e[i];
            es <<= sh;
            ap_uint<EW + CONFIG_T::lg + QB + 1> prod = es * r1;
            ap_ufixed<EW + CONFIG_T::lg + QB + 1, EW + CONFIG_T::lg + QB + 1 - (QB + SW - 1)> v;
            v.range(EW + CONFIG_T::lg + QB, 0) = prod;
            y[i] = v;
        }
    }
}

template <class data_T, class res_T, class CONFIG_T, int ROWS>
void softmax(const data_T x[ROWS * CONFIG_T::n], res_T y[ROWS * CONFIG_T::n],
             const typename CONFIG_T::exp_t exp_lo[CONFIG_T::n_lo],
             const typename CONFIG_T::exp_t exp_hi[CONFIG_T::n_hi > 0 ? CONFIG_T::n_hi : 1],
             const typename CONFIG_T::recip_t recip[CONFIG_T::n_recip],
             const typename CONFIG_T::recip_sq_t recip_sq[CONFIG_T::n_recip]) {
#pragma HLS INLINE
    for (int r = 0; r < ROWS; r++) {
#pragma HLS UNROLL
        softmax_row<data_T, res_T, CONFIG_T>(x + r * CONFIG_T::n, y + r * CONFIG_T::n, exp_lo, exp_hi,
                                             recip, recip_sq);
    }
}

template <class data_T, class res_T, class CONFIG_T, int ROWS>
void softmax_stream(hls::stream<packet<data_T, CONFIG_T::n> >& in, hls::stream<packet<res_T, CONFIG_T::n> >& out,
                    const typename CONFIG_T::exp_t exp_lo[CONFIG_T::n_lo],
                    const typename CONFIG_T::exp_t exp_hi[CONFIG_T::n_hi > 0 ? CONFIG_T::n_hi : 1],
                    const typename CONFIG_T::recip_t recip[CONFIG_T::n_recip],
                    const typename CONFIG_T::recip_sq_t recip_sq[CONFIG_T::n_recip]) {
    for (int r = 0; r < ROWS; r++) {
#pragma HLS PIPELINE II=1
        packet<data_T, CONFIG_T::n> px = in.read();
        data_T xr[CONFIG_T::n];
#pragma HLS ARRAY_PARTITION variable=xr complete
        res_T yr[CONFIG_T::n];
#pragma HLS ARRAY_PARTITION variable=yr complete
        for (int i = 0; i < CONFIG_T::n; i++) {
#pragma HLS UNROLL
            xr[i] = px[i];
        }
        softmax_row<data_T, res_T, CONFIG_T>(xr, yr, exp_lo, exp_hi, recip, recip_sq);
        packet<res_T, CONFIG_T::n> py;
#pragma HLS ARRAY_PARTITION variable=py.data complete
        for (int i = 0; i < CONFIG_T::n; i++) {
#pragma HLS UNROLL
            py[i] = yr[i];
        }
        out.write(py);
    }
}

}  // namespace accelc_hls

#endif
