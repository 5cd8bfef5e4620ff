// accelc HLS layer library: dense layers and the elementwise/data-movement layers around them
// (add, scale-and-shift, concatenation, reshape). Synthesizable Vitis HLS C++ (C++14).
//
// Every kernel has the same C semantics in every configuration: a dense layer accumulates each output
// as bias first, then k = 0 .. n_in-1 in order, whatever the reuse factor, so a narrow user accumulator
// gives the same bits with reuse 1 or 7 (accelc's NumPy model follows this order).
#ifndef ACCELC_HLS_DENSE_H
#define ACCELC_HLS_DENSE_H

#include "accelc_hls_common.h"

namespace accelc_hls {

// ---- dense ----------------------------------------------------------------------------------------
// CONFIG_T: n_in (K), n_out (N), reuse (R); typedefs weight_t, bias_t, accum_t.
// Weights are row-major (K, N): w[k * N + n]. ROWS rows of K inputs give ROWS rows of N outputs.

// Reuse factor 1: every multiply has its own multiplier; inlined into the pipelined caller.
template <class data_T, class res_T, class CONFIG_T, int ROWS>
void dense_latency(const data_T x[ROWS * CONFIG_T::n_in], res_T y[ROWS * CONFIG_T::n_out],
                   const typename CONFIG_T::weight_t w[CONFIG_T::n_in * CONFIG_T::n_out],
                   const typename CONFIG_T::bias_t b[CONFIG_T::n_out]) {
#pragma HLS INLINE
#pragma HLS ARRAY_PARTITION variable=w complete
#pragma HLS ARRAY_PARTITION variable=b complete
    typename CONFIG_T::accum_t acc[ROWS * CONFIG_T::n_out];
#pragma HLS ARRAY_PARTITION variable=acc complete
InitLoop:
    for (int j = 0; j < ROWS * CONFIG_T::n_out; j++) {
#pragma HLS UNROLL
        acc[j] = b[j % CONFIG_T::n_out];
    }
RowLoop:
    for (int r = 0; r < ROWS; r++) {
#pragma HLS UNROLL
    InLoop:
        for (int k = 0; k < CONFIG_T::n_in; k++) {
#pragma HLS UNROLL
        OutLoop:
            for (int n = 0; n < CONFIG_T::n_out; n++) {
#pragma HLS UNROLL
                acc[r * CONFIG_T::n_out + n] += x[r * CONFIG_T::n_in + k] * w[k * CONFIG_T::n_out + n];
            }
        }
    }
ResultLoop:
    for (int j = 0; j < ROWS * CONFIG_T::n_out; j++) {
#pragma HLS UNROLL
        y[j] = acc[j];
    }
}

// Reuse factor R > 1: the ROWS*K*N multiplies m = 0 .. M-1 run as R pipelined steps of BLOCK = ceil(M/R)
// parallel multiplies (step r does m = r*BLOCK .. r*BLOCK+BLOCK-1), so each multiplier is used R times
// and the function accepts a new input every R cycles. m = (row*K + k)*N + n ascends with r and i,
// which keeps every output's additions in k order.
template <class data_T, class res_T, class CONFIG_T, int ROWS>
void dense_resource(const data_T x[ROWS * CONFIG_T::n_in], res_T y[ROWS * CONFIG_T::n_out],
                    const typename CONFIG_T::weight_t w[CONFIG_T::n_in * CONFIG_T::n_out],
                    const typename CONFIG_T::bias_t b[CONFIG_T::n_out]) {
#pragma HLS INLINE off
    const int KN = CONFIG_T::n_in * CONFIG_T::n_out;
    const int M = ROWS * KN;
    const int R = CONFIG_T::reuse;
    const int BLOCK = (M + R - 1) / R;
    const int WBLOCK = BLOCK < KN ? BLOCK : KN;
#pragma HLS ARRAY_PARTITION variable=w cyclic factor=WBLOCK
#pragma HLS ARRAY_PARTITION variable=b complete
#pragma HLS ARRAY_PARTITION variable=x complete
    typename CONFIG_T::accum_t acc[ROWS * CONFIG_T::n_out];
#pragma HLS ARRAY_PARTITION variable=acc complete
InitLoop:
    for (int j = 0; j < ROWS * CONFIG_T::n_out; j++) {
#pragma HLS UNROLL
        acc[j] = b[j % CONFIG_T::n_out];
    }
ReuseLoop:
    for (int r = 0; r < R; r++) {
#pragma HLS PIPELINE II=1
    BlockLoop:
        for (int i = 0; i < BLOCK; i++) {
#pragma HLS UNROLL
            const int m = r * BLOCK + i;
            if (m < M) {
                const int row = m / KN;
                const int kn = m - row * KN;
                const int k = kn / CONFIG_T::n_out;
                const int n = kn - k * CONFIG_T::n_out;
                acc[row * CONFIG_T::n_out + n] += x[row * CONFIG_T::n_in + k] * w[kn];
            }
        }
    }
ResultLoop:
    for (int j = 0; j < ROWS * CONFIG_T::n_out; j++) {
#pragma HLS UNROLL
        y[j] = acc[j];
    }
}

template <class data_T, class res_T, class CONFIG_T, int ROWS>
void dense(const data_T x[ROWS * CONFIG_T::n_in], res_T y[ROWS * CONFIG_T::n_out],
           const typename CONFIG_T::weight_t w[CONFIG_T::n_in * CONFIG_T::n_out],
           const typename CONFIG_T::bias_t b[CONFIG_T::n_out]) {
#pragma HLS INLINE
    if (CONFIG_T::reuse <= 1)
        dense_latency<data_T, res_T, CONFIG_T, ROWS>(x, y, w, b);
    else
        dense_resource<data_T, res_T, CONFIG_T, ROWS>(x, y, w, b);
}

// io_stream: one packet is one row of K inputs; each row gives one packet of N outputs.
template <class data_T, class res_T, class CONFIG_T>
void dense_stream(hls::stream<packet<data_T, CONFIG_T::n_in> >& in,
                  hls::stream<packet<res_T, CONFIG_T::n_out> >& out,
                  const typename CONFIG_T::weight_t w[CONFIG_T::n_in * CONFIG_T::n_out],
                  const typename CONFIG_T::bias_t b[CONFIG_T::n_out]) {
RowLoop:
    for (int r = 0; r < CONFIG_T::n_rows; r++) {
#pragma HLS PIPELINE II=CONFIG_T::reuse
        packet<data_T, CONFIG_T::n_in> pin = in.read();
        data_T xr[CONFIG_T::n_in];
#pragma HLS ARRAY_PARTITION variable=xr complete
        res_T yr[CONFIG_T::n_out];
#pragma HLS ARRAY_PARTITION variable=yr complete
        for (int k = 0; k < CONFIG_T::n_in; k++) {
#pragma HLS UNROLL
            xr[k] = pin[k];
        }
        dense<data_T, res_T, CONFIG_T, 1>(xr, yr, w, b);
        packet<res_T, CONFIG_T::n_out> pout;
#pragma HLS ARRAY_PARTITION variable=pout.data complete
        for (int n = 0; n < CONFIG_T::n_out; n++) {
#pragma HLS UNROLL
            pout[n] = yr[n];
        }
        out.write(pout);
    }
}

// ---- add ------------------------------------------------------------------------------------------
// The sum is exact (ap_fixed's full-width result), then assigned to res_T.
template <class a_T, class b_T, class res_T, int SIZE>
void add(const a_T a[SIZE], const b_T b[SIZE], res_T y[SIZE]) {
#pragma HLS INLINE
    for (int i = 0; i < SIZE; i++) {
#pragma HLS UNROLL
        y[i] = a[i] + b[i];
    }
}

template <class a_T, class b_T, class res_T, int P, int NPACK>
void add_stream(hls::stream<packet<a_T, P> >& a, hls::stream<packet<b_T, P> >& b,
                hls::stream<packet<res_T, P> >& out) {
    for (int p = 0; p < NPACK; p++) {
#pragma HLS PIPELINE II=1
        packet<a_T, P> pa = a.read();
        packet<b_T, P> pb = b.read();
        packet<res_T, P> py;
#pragma HLS ARRAY_PARTITION variable=py.data complete
        for (int i = 0; i < P; i++) {
#pragma HLS UNROLL
            py[i] = pa[i] + pb[i];
        }
        out.write(py);
    }
}

// ---- scale and shift: y = x * scale[c] + shift[c] over the last dimension C --------------------
// CONFIG_T: n_chan, has_scale, has_shift; typedefs scale_t, shift_t. x*scale + shift is computed
// exactly (ap_fixed's full-width product and sum) and assigned once to res_T.
template <class data_T, class res_T, class CONFIG_T>
res_T scale_shift_one(const data_T& x, const typename CONFIG_T::scale_t& s,
                      const typename CONFIG_T::shift_t& t) {
#pragma HLS INLINE
    res_T y;
    if (CONFIG_T::has_scale && CONFIG_T::has_shift)
        y = x * s + t;
    else if (CONFIG_T::has_scale)
        y = x * s;
    else if (CONFIG_T::has_shift)
        y = x + t;
    else
        y = x;
    return y;
}

template <class data_T, class res_T, class CONFIG_T, int SIZE>
void scale_shift(const data_T x[SIZE], res_T y[SIZE], const typename CONFIG_T::scale_t s[CONFIG_T::n_chan],
                 const typename CONFIG_T::shift_t t[CONFIG_T::n_chan]) {
#pragma HLS INLINE
#pragma HLS ARRAY_PARTITION variable=s complete
#pragma HLS ARRAY_PARTITION variable=t complete
    for (int i = 0; i < SIZE; i++) {
#pragma HLS UNROLL
        const int c = i % CONFIG_T::n_chan;
        y[i] = scale_shift_one<data_T, res_T, CONFIG_T>(x[i], s[c], t[c]);
    }
}

template <class data_T, class res_T, class CONFIG_T, int NPACK>
void scale_shift_stream(hls::stream<packet<data_T, CONFIG_T::n_chan> >& in,
                        hls::stream<packet<res_T, CONFIG_T::n_chan> >& out,
                        const typename CONFIG_T::scale_t s[CONFIG_T::n_chan],
                        const typename CONFIG_T::shift_t t[CONFIG_T::n_chan]) {
#pragma HLS ARRAY_PARTITION variable=s complete
#pragma HLS ARRAY_PARTITION variable=t complete
    for (int p = 0; p < NPACK; p++) {
#pragma HLS PIPELINE II=1
        packet<data_T, CONFIG_T::n_chan> px = in.read();
        packet<res_T, CONFIG_T::n_chan> py;
#pragma HLS ARRAY_PARTITION variable=py.data complete
        for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            py[c] = scale_shift_one<data_T, res_T, CONFIG_T>(px[c], s[c], t[c]);
        }
        out.write(py);
    }
}

// ---- concatenation ----------------------------------------------------------------------------------
// An input is OUTER blocks of INNER_IN elements (everything from the concatenation axis on); it fills
// elements OFFSET .. OFFSET+INNER_IN-1 of each of the output's OUTER blocks of INNER_OUT elements.
template <class in_T, class res_T, int OUTER, int INNER_IN, int INNER_OUT, int OFFSET>
void concat_part(const in_T x[OUTER * INNER_IN], res_T y[OUTER * INNER_OUT]) {
#pragma HLS INLINE
    for (int o = 0; o < OUTER; o++) {
#pragma HLS UNROLL
        for (int i = 0; i < INNER_IN; i++) {
#pragma HLS UNROLL
            y[o * INNER_OUT + OFFSET + i] = x[o * INNER_IN + i];
        }
    }
}

// io_stream concatenates two streams at a time (a layer with more inputs chains them through local
// streams of the output type).
// Concatenation along the last axis in io_stream: each output packet joins one packet of each input.
template <class a_T, class b_T, class res_T, int PA, int PB, int NPACK>
void concat2_last_stream(hls::stream<packet<a_T, PA> >& a, hls::stream<packet<b_T, PB> >& b,
                         hls::stream<packet<res_T, PA + PB> >& out) {
    for (int p = 0; p < NPACK; p++) {
#pragma HLS PIPELINE II=1
        packet<a_T, PA> pa = a.read();
        packet<b_T, PB> pb = b.read();
        packet<res_T, PA + PB> py;
#pragma HLS ARRAY_PARTITION variable=py.data complete
        for (int i = 0; i < PA; i++) {
#pragma HLS UNROLL
            py[i] = pa[i];
        }
        for (int i = 0; i < PB; i++) {
#pragma HLS UNROLL
            py[PA + i] = pb[i];
        }
        out.write(py);
    }
}

// Concatenation along an earlier axis in io_stream (all packets have P elements): for each of OUTER
// blocks, NA packets of a then NB packets of b.
template <class a_T, class b_T, class res_T, int P, int OUTER, int NA, int NB>
void concat2_outer_stream(hls::stream<packet<a_T, P> >& a, hls::stream<packet<b_T, P> >& b,
                          hls::stream<packet<res_T, P> >& out) {
    for (int o = 0; o < OUTER; o++) {
        for (int p = 0; p < NA + NB; p++) {
#pragma HLS PIPELINE II=1
            packet<res_T, P> py;
#pragma HLS ARRAY_PARTITION variable=py.data complete
            if (p < NA) {
                packet<a_T, P> pa = a.read();
                for (int i = 0; i < P; i++) {
#pragma HLS UNROLL
                    py[i] = pa[i];
                }
            } else {
                packet<b_T, P> pb = b.read();
                for (int i = 0; i < P; i++) {
#pragma HLS UNROLL
                    py[i] = pb[i];
                }
            }
            out.write(py);
        }
    }
}

// A copy with a cast to res_T (a concatenation of one input in io_stream).
template <class in_T, class res_T, int P, int NPACK>
void cast_stream(hls::stream<packet<in_T, P> >& in, hls::stream<packet<res_T, P> >& out) {
    for (int p = 0; p < NPACK; p++) {
#pragma HLS PIPELINE II=1
        packet<in_T, P> px = in.read();
        packet<res_T, P> py;
#pragma HLS ARRAY_PARTITION variable=py.data complete
        for (int i = 0; i < P; i++) {
#pragma HLS UNROLL
            py[i] = px[i];
        }
        out.write(py);
    }
}

// ---- reshape: a copy, optionally gathered (y[i] = x[order[i]]); no type change -------------------
template <class T, int SIZE>
void reshape_copy(const T x[SIZE], T y[SIZE]) {
#pragma HLS INLINE
    for (int i = 0; i < SIZE; i++) {
#pragma HLS UNROLL
        y[i] = x[i];
    }
}

template <class T, int SIZE>
void reshape_gather(const T x[SIZE], T y[SIZE], const int order[SIZE]) {
#pragma HLS INLINE
    for (int i = 0; i < SIZE; i++) {
#pragma HLS UNROLL
        y[i] = x[order[i]];
    }
}

// io_stream with the same packet size and no reordering: packets pass through.
template <class T, int P, int NPACK>
void reshape_pass_stream(hls::stream<packet<T, P> >& in, hls::stream<packet<T, P> >& out) {
    for (int p = 0; p < NPACK; p++) {
#pragma HLS PIPELINE II=1
        out.write(in.read());
    }
}

// io_stream otherwise: the whole tensor is buffered (a reorder needs it), then re-packed.
template <class T, int PIN, int POUT, int SIZE>
void reshape_buffer_stream(hls::stream<packet<T, PIN> >& in, hls::stream<packet<T, POUT> >& out,
                           const int order[SIZE], bool gather) {
    T buf[SIZE];
    T res[SIZE];
    stream_to_array<T, PIN, SIZE>(in, buf);
    for (int i = 0; i < SIZE; i++) {
#pragma HLS PIPELINE II=1
        res[i] = gather ? buf[order[i]] : buf[i];
    }
    array_to_stream<T, POUT, SIZE>(res, out);
}

}  // namespace accelc_hls

#endif
