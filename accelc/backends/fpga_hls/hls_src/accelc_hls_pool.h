// accelc HLS layer library: max/average pooling over windows and over all positions, channels-last.
// Synthesizable Vitis HLS C++ (C++14); also compiled by g++ for C-simulation against the ap_types headers.
//
// A pooling CONFIG_T has the window geometry of accelc_hls_conv.h plus:
//   is_max, count_include_pad, sum_t (exact window sum), recip_t (reciprocal constants).
// Max: the largest real pixel (padding never takes part), assigned to res_T.
// Average: s = exact sum of the window (padding adds zero); n = number of real pixels (or
// filt_height * filt_width with count_include_pad); out = res_T(s * recip[n]) where recip[n] is 1/n
// rounded to nearest in recip_t (the product is exact; res_T applies its own rounding and overflow).
#ifndef ACCELC_HLS_POOL_H
#define ACCELC_HLS_POOL_H

#include "accelc_hls_common.h"
#include "accelc_hls_conv.h"

namespace accelc_hls {

template <class data_T, class res_T, class CONFIG_T>
void pool_pixel(const data_T win[CONFIG_T::n_taps], int oy, int ox, res_T out[CONFIG_T::n_chan],
                const typename CONFIG_T::recip_t recip[CONFIG_T::n_recip]) {
#pragma HLS INLINE
    bool row_ok[CONFIG_T::filt_height], col_ok[CONFIG_T::filt_width];
#pragma HLS ARRAY_PARTITION variable=row_ok complete
#pragma HLS ARRAY_PARTITION variable=col_ok complete
    int rows = 0, cols = 0;
    for (int ky = 0; ky < CONFIG_T::filt_height; ky++) {
#pragma HLS UNROLL
        const int iy = oy * CONFIG_T::stride_height - CONFIG_T::pad_top + ky;
        row_ok[ky] = iy >= 0 && iy < CONFIG_T::in_height;
        rows += row_ok[ky] ? 1 : 0;
    }
    for (int kx = 0; kx < CONFIG_T::filt_width; kx++) {
#pragma HLS UNROLL
        const int ix = ox * CONFIG_T::stride_width - CONFIG_T::pad_left + kx;
        col_ok[kx] = ix >= 0 && ix < CONFIG_T::in_width;
        cols += col_ok[kx] ? 1 : 0;
    }
    const int n = CONFIG_T::count_include_pad ? CONFIG_T::filt_height * CONFIG_T::filt_width : rows * cols;
    Chan:
    for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
        if (CONFIG_T::is_max) {
            data_T m = 0;
            bool any = false;
            for (int ky = 0; ky < CONFIG_T::filt_height; ky++) {
#pragma HLS UNROLL
                for (int kx = 0; kx < CONFIG_T::filt_width; kx++) {
#pragma HLS UNROLL
                    const data_T v = win[(ky * CONFIG_T::filt_width + kx) * CONFIG_T::n_chan + c];
                    if (row_ok[ky] && col_ok[kx] && (!any || v > m)) {
                        m = v;
                        any = true;
                    }
                }
            }
            out[c] = m;
        } else {
            typename CONFIG_T::sum_t s = 0;
            for (int t = 0; t < CONFIG_T::filt_height * CONFIG_T::filt_width; t++) {
#pragma HLS UNROLL
                s = s + win[t * CONFIG_T::n_chan + c];
            }
            out[c] = s * recip[n];
        }
    }
}

// io_parallel: one output pixel per cycle.
template <class data_T, class res_T, class CONFIG_T>
void pool_2d_parallel(const data_T x[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                      res_T y[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_chan],
                      const typename CONFIG_T::recip_t recip[CONFIG_T::n_recip]) {
#pragma HLS INLINE off
#pragma HLS ARRAY_PARTITION variable=recip complete
    OutRows:
    for (int oy = 0; oy < CONFIG_T::out_height; oy++) {
        OutCols:
        for (int ox = 0; ox < CONFIG_T::out_width; ox++) {
#pragma HLS PIPELINE II=1
            data_T win[CONFIG_T::n_taps];
#pragma HLS ARRAY_PARTITION variable=win complete
            res_T o[CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=o complete
            window_gather<data_T, CONFIG_T>(x, oy, ox, win);
            pool_pixel<data_T, res_T, CONFIG_T>(win, oy, ox, o, recip);
            for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                y[(oy * CONFIG_T::out_width + ox) * CONFIG_T::n_chan + c] = o[c];
            }
        }
    }
}

// io_stream: the native line-buffer kernel of accelc_hls_conv.h, one padded pixel per cycle.
template <class data_T, class res_T, class CONFIG_T>
void pool_2d_stream(hls::stream<packet<data_T, CONFIG_T::n_chan> >& in,
                    hls::stream<packet<res_T, CONFIG_T::n_chan> >& out,
                    const typename CONFIG_T::recip_t recip[CONFIG_T::n_recip]) {
#pragma HLS INLINE off
#pragma HLS ARRAY_PARTITION variable=recip complete
    typedef window_geom<CONFIG_T> G;
    data_T line[G::lb_rows][G::pad_width][CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=line complete dim=1
#pragma HLS ARRAY_RESHAPE variable=line complete dim=3
    data_T win[CONFIG_T::filt_height][CONFIG_T::filt_width][CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=win complete dim=0
    window_clear<data_T, CONFIG_T>(line, win);
    PadRows:
    for (int py = 0; py < G::pad_height; py++) {
        PadCols:
        for (int px = 0; px < G::pad_width; px++) {
#pragma HLS PIPELINE II=1
            data_T pix[CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=pix complete
            window_read<data_T, CONFIG_T>(in, py, px, pix);
            window_push<data_T, CONFIG_T>(line, win, pix, px);
            int oy = 0, ox = 0;
            if (window_ready<CONFIG_T>(py, px, oy, ox)) {
                data_T flat[CONFIG_T::n_taps];
#pragma HLS ARRAY_PARTITION variable=flat complete
                window_flatten<data_T, CONFIG_T>(win, flat);
                packet<res_T, CONFIG_T::n_chan> pk;
#pragma HLS ARRAY_PARTITION variable=pk.data complete
                pool_pixel<data_T, res_T, CONFIG_T>(flat, oy, ox, pk.data, recip);
                out.write(pk);
            }
        }
    }
}

// ---- global pooling: all n_pos positions of each channel ----------------------------------------------
// CONFIG_T: n_pos, n_chan, out_packet, is_max, sum_t, recip_t (recip[0] = 1/n_pos rounded to nearest).
template <class data_T, class res_T, class CONFIG_T>
void global_pool_result(const data_T m[CONFIG_T::n_chan], const typename CONFIG_T::sum_t s[CONFIG_T::n_chan],
                        res_T y[CONFIG_T::n_chan], const typename CONFIG_T::recip_t recip[1]) {
#pragma HLS INLINE
    for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
        if (CONFIG_T::is_max) {
            y[c] = m[c];
        } else {
            y[c] = s[c] * recip[0];
        }
    }
}

template <class data_T, class CONFIG_T>
void global_pool_step(int p, const data_T v[CONFIG_T::n_chan], data_T m[CONFIG_T::n_chan],
                      typename CONFIG_T::sum_t s[CONFIG_T::n_chan]) {
#pragma HLS INLINE
    for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
        if (p == 0 || v[c] > m[c]) m[c] = v[c];
        s[c] = (p == 0) ? typename CONFIG_T::sum_t(v[c]) : typename CONFIG_T::sum_t(s[c] + v[c]);
    }
}

// io_parallel: one position per cycle into per-channel registers.
template <class data_T, class res_T, class CONFIG_T>
void global_pool_parallel(const data_T x[CONFIG_T::n_pos * CONFIG_T::n_chan], res_T y[CONFIG_T::n_chan],
                          const typename CONFIG_T::recip_t recip[1]) {
#pragma HLS INLINE off
    data_T m[CONFIG_T::n_chan];
    typename CONFIG_T::sum_t s[CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=m complete
#pragma HLS ARRAY_PARTITION variable=s complete
    Positions:
    for (int p = 0; p < CONFIG_T::n_pos; p++) {
#pragma HLS PIPELINE II=1
        data_T v[CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=v complete
        for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            v[c] = x[p * CONFIG_T::n_chan + c];
        }
        global_pool_step<data_T, CONFIG_T>(p, v, m, s);
    }
    global_pool_result<data_T, res_T, CONFIG_T>(m, s, y, recip);
}

// io_stream: native; reads n_pos packets, writes n_chan / out_packet packets once all are in.
template <class data_T, class res_T, class CONFIG_T>
void global_pool_stream(hls::stream<packet<data_T, CONFIG_T::n_chan> >& in,
                        hls::stream<packet<res_T, CONFIG_T::out_packet> >& out,
                        const typename CONFIG_T::recip_t recip[1]) {
#pragma HLS INLINE off
    data_T m[CONFIG_T::n_chan];
    typename CONFIG_T::sum_t s[CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=m complete
#pragma HLS ARRAY_PARTITION variable=s complete
    Positions:
    for (int p = 0; p < CONFIG_T::n_pos; p++) {
#pragma HLS PIPELINE II=1
        packet<data_T, CONFIG_T::n_chan> pk = in.read();
        global_pool_step<data_T, CONFIG_T>(p, pk.data, m, s);
    }
    res_T y[CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=y complete
    global_pool_result<data_T, res_T, CONFIG_T>(m, s, y, recip);
    Write:
    for (int q = 0; q < CONFIG_T::n_chan / CONFIG_T::out_packet; q++) {
#pragma HLS PIPELINE II=1
        packet<res_T, CONFIG_T::out_packet> o;
#pragma HLS ARRAY_PARTITION variable=o.data complete
        for (int i = 0; i < CONFIG_T::out_packet; i++) {
#pragma HLS UNROLL
            o[i] = y[q * CONFIG_T::out_packet + i];
        }
        out.write(o);
    }
}

}  // namespace accelc_hls

#endif
