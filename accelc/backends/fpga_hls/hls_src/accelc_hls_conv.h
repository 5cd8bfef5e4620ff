// accelc HLS layer library: sliding windows and convolutions (1-D as 2-D with height 1), channels-last.
// Synthesizable Vitis HLS C++ (C++14); also compiled by g++ for C-simulation against the ap_types headers.
//
// A layer's CONFIG_T (emitted by accelc) gives the geometry:
//   in_height, in_width, n_chan, out_height, out_width, filt_height, filt_width,
//   stride_height, stride_width, pad_top, pad_left, pad_bottom, pad_right, n_taps (= filt_height *
//   filt_width * n_chan: one window, flattened in (ky, kx, c) order)
// and, for convolutions: n_filt, n_pairs (multiplies per output pixel), depthwise, reuse_factor, n_mult
// (= ceil(n_pairs / reuse_factor)), and the types accum_t, weight_t, bias_t.
//
// Weights are flattened "pairs": pair i multiplies window element t(i) into output channel i % n_filt,
// with t(i) = i / n_filt (dense, pairs ordered (ky, kx, ci, co)) or t(i) = i (depthwise, pairs ordered
// (ky, kx, c)). Every output channel therefore accumulates bias first and then its taps in (ky, kx, ci)
// order, in both io styles: the NumPy model follows the same order when the accumulator is not exact.
#ifndef ACCELC_HLS_CONV_H
#define ACCELC_HLS_CONV_H

#include "accelc_hls_common.h"

namespace accelc_hls {

// Derived geometry of a padded sliding window.
template <class CONFIG_T>
struct window_geom {
    static const int pad_height = CONFIG_T::in_height + CONFIG_T::pad_top + CONFIG_T::pad_bottom;
    static const int pad_width = CONFIG_T::in_width + CONFIG_T::pad_left + CONFIG_T::pad_right;
    // line buffers keep the last filt_height - 1 padded rows (one dummy row when filt_height == 1)
    static const int lb_rows = CONFIG_T::filt_height > 1 ? CONFIG_T::filt_height - 1 : 1;
};

// ---- io_parallel: gather the window of output pixel (oy, ox) from a channels-last array ------------
template <class data_T, class CONFIG_T>
void window_gather(const data_T x[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan], int oy, int ox,
                   data_T win[CONFIG_T::n_taps]) {
#pragma HLS INLINE
    GatherY:
    for (int ky = 0; ky < CONFIG_T::filt_height; ky++) {
#pragma HLS UNROLL
        GatherX:
        for (int kx = 0; kx < CONFIG_T::filt_width; kx++) {
#pragma HLS UNROLL
            const int iy = oy * CONFIG_T::stride_height - CONFIG_T::pad_top + ky;
            const int ix = ox * CONFIG_T::stride_width - CONFIG_T::pad_left + kx;
            const bool inside = iy >= 0 && iy < CONFIG_T::in_height && ix >= 0 && ix < CONFIG_T::in_width;
            GatherC:
            for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                // padding reads as zero (pools that must exclude it test the position, not the value)
                win[(ky * CONFIG_T::filt_width + kx) * CONFIG_T::n_chan + c] =
                    inside ? x[(iy * CONFIG_T::in_width + ix) * CONFIG_T::n_chan + c] : data_T(0);
            }
        }
    }
}

// ---- io_stream: line buffers + a window of registers ----------------------------------------------
// The padded image is scanned in raster order, one (padded) pixel per step: window_read takes a packet
// from the stream inside the image and zeros on the border; window_push shifts it into the window and
// the line buffers; window_ready says whether the window now covers an output pixel (stride by skipping).
template <class data_T, class CONFIG_T>
void window_clear(data_T line[window_geom<CONFIG_T>::lb_rows][window_geom<CONFIG_T>::pad_width][CONFIG_T::n_chan],
                  data_T win[CONFIG_T::filt_height][CONFIG_T::filt_width][CONFIG_T::n_chan]) {
#pragma HLS INLINE
    ClearLines:
    for (int col = 0; col < window_geom<CONFIG_T>::pad_width; col++) {
#pragma HLS PIPELINE II=1
        for (int r = 0; r < window_geom<CONFIG_T>::lb_rows; r++) {
#pragma HLS UNROLL
            for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                line[r][col][c] = 0;
            }
        }
    }
    ClearWindow:
    for (int ky = 0; ky < CONFIG_T::filt_height; ky++) {
#pragma HLS UNROLL
        for (int kx = 0; kx < CONFIG_T::filt_width; kx++) {
#pragma HLS UNROLL
            for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                win[ky][kx][c] = 0;
            }
        }
    }
}

template <class data_T, class CONFIG_T>
void window_read(hls::stream<packet<data_T, CONFIG_T::n_chan> >& in, int py, int px,
                 data_T pix[CONFIG_T::n_chan]) {
#pragma HLS INLINE
    const bool inside = py >= CONFIG_T::pad_top && py < CONFIG_T::pad_top + CONFIG_T::in_height &&
                        px >= CONFIG_T::pad_left && px < CONFIG_T::pad_left + CONFIG_T::in_width;
    if (inside) {
        packet<data_T, CONFIG_T::n_chan> pk = in.read();
        for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            pix[c] = pk[c];
        }
    } else {
        for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            pix[c] = 0;
        }
    }
}

template <class data_T, class CONFIG_T>
void window_push(data_T line[window_geom<CONFIG_T>::lb_rows][window_geom<CONFIG_T>::pad_width][CONFIG_T::n_chan],
                 data_T win[CONFIG_T::filt_height][CONFIG_T::filt_width][CONFIG_T::n_chan],
                 const data_T pix[CONFIG_T::n_chan], int px) {
#pragma HLS INLINE
    const int KH = CONFIG_T::filt_height, KW = CONFIG_T::filt_width;
    // the window moves one column right
    ShiftCols:
    for (int ky = 0; ky < KH; ky++) {
#pragma HLS UNROLL
        for (int kx = 0; kx + 1 < KW; kx++) {
#pragma HLS UNROLL
            for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                win[ky][kx][c] = win[ky][kx + 1][c];
            }
        }
    }
    // its new column: the buffered rows of column px (oldest first), then the new pixel
    NewColumn:
    for (int ky = 0; ky + 1 < KH; ky++) {
#pragma HLS UNROLL
        for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            win[ky][KW - 1][c] = line[ky][px][c];
        }
    }
    for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
        win[KH - 1][KW - 1][c] = pix[c];
    }
    // the line buffers of column px move up one row: drop the oldest, keep the new pixel
    UpdateLines:
    for (int ky = 0; ky + 1 < KH; ky++) {
#pragma HLS UNROLL
        for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
            line[ky][px][c] = win[ky + 1][KW - 1][c];
        }
    }
}

template <class CONFIG_T>
bool window_ready(int py, int px, int& oy, int& ox) {
#pragma HLS INLINE
    const int ry = py - (CONFIG_T::filt_height - 1), rx = px - (CONFIG_T::filt_width - 1);
    if (ry < 0 || rx < 0 || ry % CONFIG_T::stride_height != 0 || rx % CONFIG_T::stride_width != 0) return false;
    oy = ry / CONFIG_T::stride_height;
    ox = rx / CONFIG_T::stride_width;
    return oy < CONFIG_T::out_height && ox < CONFIG_T::out_width;
}

template <class data_T, class CONFIG_T>
void window_flatten(const data_T win[CONFIG_T::filt_height][CONFIG_T::filt_width][CONFIG_T::n_chan],
                    data_T flat[CONFIG_T::n_taps]) {
#pragma HLS INLINE
    for (int ky = 0; ky < CONFIG_T::filt_height; ky++) {
#pragma HLS UNROLL
        for (int kx = 0; kx < CONFIG_T::filt_width; kx++) {
#pragma HLS UNROLL
            for (int c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                flat[(ky * CONFIG_T::filt_width + kx) * CONFIG_T::n_chan + c] = win[ky][kx][c];
            }
        }
    }
}

// ---- one output pixel of a convolution --------------------------------------------------------------
// acc[co] = bias[co]; then, pair by pair in ascending order, acc[co] = acc[co] + win[t] * w[i] (the
// product is exact; the assignment applies accum_t's quantization and overflow, an identity when
// accum_t is the exact accumulator); out[co] = acc[co] (res_T's rounding and overflow).
template <class data_T, class res_T, class CONFIG_T>
void conv_pixel(const data_T win[CONFIG_T::n_taps], res_T out[CONFIG_T::n_filt],
                const typename CONFIG_T::weight_t w[CONFIG_T::n_pairs],
                const typename CONFIG_T::bias_t b[CONFIG_T::n_filt]) {
#pragma HLS INLINE
    typename CONFIG_T::accum_t acc[CONFIG_T::n_filt];
#pragma HLS ARRAY_PARTITION variable=acc complete
    BiasInit:
    for (int co = 0; co < CONFIG_T::n_filt; co++) {
#pragma HLS UNROLL
        acc[co] = b[co];
    }
    Pairs:
    for (int i = 0; i < CONFIG_T::n_pairs; i++) {
#pragma HLS UNROLL
        const int co = i % CONFIG_T::n_filt;
        const int t = CONFIG_T::depthwise ? i : i / CONFIG_T::n_filt;
        acc[co] = acc[co] + win[t] * w[i];
    }
    Result:
    for (int co = 0; co < CONFIG_T::n_filt; co++) {
#pragma HLS UNROLL
        out[co] = acc[co];
    }
}

// io_parallel: one output pixel per reuse_factor cycles; the pixel's multiplies share n_mult multipliers.
template <class data_T, class res_T, class CONFIG_T>
void conv_2d_parallel(const data_T x[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                      res_T y[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_filt],
                      const typename CONFIG_T::weight_t w[CONFIG_T::n_pairs],
                      const typename CONFIG_T::bias_t b[CONFIG_T::n_filt]) {
#pragma HLS INLINE off
    // reuse_factor 1: every weight in its own register; R > 1: n_mult lanes of R words (one ROM word per cycle)
#pragma HLS ARRAY_RESHAPE variable=w cyclic factor=CONFIG_T::n_mult
#pragma HLS ARRAY_PARTITION variable=b complete
    OutRows:
    for (int oy = 0; oy < CONFIG_T::out_height; oy++) {
        OutCols:
        for (int ox = 0; ox < CONFIG_T::out_width; ox++) {
#pragma HLS PIPELINE II=CONFIG_T::reuse_factor
#pragma HLS ALLOCATION operation instances=mul limit=CONFIG_T::n_mult
            data_T win[CONFIG_T::n_taps];
#pragma HLS ARRAY_PARTITION variable=win complete
            res_T o[CONFIG_T::n_filt];
#pragma HLS ARRAY_PARTITION variable=o complete
            window_gather<data_T, CONFIG_T>(x, oy, ox, win);
            conv_pixel<data_T, res_T, CONFIG_T>(win, o, w, b);
            for (int co = 0; co < CONFIG_T::n_filt; co++) {
#pragma HLS UNROLL
                y[(oy * CONFIG_T::out_width + ox) * CONFIG_T::n_filt + co] = o[co];
            }
        }
    }
}

// io_stream: a native line-buffer kernel. One padded pixel per reuse_factor cycles: reads one packet of
// n_chan values inside the image (zeros on the border), writes one packet of n_filt values per output pixel.
template <class data_T, class res_T, class CONFIG_T>
void conv_2d_stream(hls::stream<packet<data_T, CONFIG_T::n_chan> >& in,
                    hls::stream<packet<res_T, CONFIG_T::n_filt> >& out,
                    const typename CONFIG_T::weight_t w[CONFIG_T::n_pairs],
                    const typename CONFIG_T::bias_t b[CONFIG_T::n_filt]) {
#pragma HLS INLINE off
#pragma HLS ARRAY_RESHAPE variable=w cyclic factor=CONFIG_T::n_mult
#pragma HLS ARRAY_PARTITION variable=b complete
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
#pragma HLS PIPELINE II=CONFIG_T::reuse_factor
#pragma HLS ALLOCATION operation instances=mul limit=CONFIG_T::n_mult
            data_T pix[CONFIG_T::n_chan];
#pragma HLS ARRAY_PARTITION variable=pix complete
            window_read<data_T, CONFIG_T>(in, py, px, pix);
            window_push<data_T, CONFIG_T>(line, win, pix, px);
            int oy = 0, ox = 0;
            if (window_ready<CONFIG_T>(py, px, oy, ox)) {
                data_T flat[CONFIG_T::n_taps];
#pragma HLS ARRAY_PARTITION variable=flat complete
                window_flatten<data_T, CONFIG_T>(win, flat);
                packet<res_T, CONFIG_T::n_filt> pk;
#pragma HLS ARRAY_PARTITION variable=pk.data complete
                conv_pixel<data_T, res_T, CONFIG_T>(flat, pk.data, w, b);
                out.write(pk);
            }
        }
    }
}

}  // namespace accelc_hls

#endif
