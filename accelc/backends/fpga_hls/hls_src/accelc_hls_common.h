// accelc HLS layer library: the pieces every layer shares.
// Synthesizable Vitis HLS C++ (C++14); also compiled by g++ for C-simulation against the ap_types headers.
#ifndef ACCELC_HLS_COMMON_H
#define ACCELC_HLS_COMMON_H

#include <ap_fixed.h>
#include <ap_int.h>
#include <hls_stream.h>

namespace accelc_hls {

// One stream element in io_stream: the last dimension of a tensor (a pixel's channels, a token).
template <class T, int N>
struct packet {
    T data[N];
    T& operator[](int i) { return data[i]; }
    const T& operator[](int i) const { return data[i]; }
};

// Reads a whole tensor of SIZE elements from a stream of N-element packets (row-major order).
template <class T, int N, int SIZE>
void stream_to_array(hls::stream<packet<T, N> >& in, T out[SIZE]) {
    for (int p = 0; p < SIZE / N; p++) {
#pragma HLS PIPELINE II=1
        packet<T, N> pk = in.read();
        for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
            out[p * N + i] = pk[i];
        }
    }
}

template <class T, int N, int SIZE>
void array_to_stream(const T in[SIZE], hls::stream<packet<T, N> >& out) {
    for (int p = 0; p < SIZE / N; p++) {
#pragma HLS PIPELINE II=1
        packet<T, N> pk;
#pragma HLS ARRAY_PARTITION variable=pk.data complete
        for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
            pk[i] = in[p * N + i];
        }
        out.write(pk);
    }
}

// io_stream fan-out: a stream is read once, so a tensor used by several layers is copied into one
// stream per reader (the generated top function chains these for more than three readers).
template <class T, int N, int COUNT>
void clone_stream(hls::stream<packet<T, N> >& in, hls::stream<packet<T, N> >& out0,
                  hls::stream<packet<T, N> >& out1) {
    for (int p = 0; p < COUNT; p++) {
#pragma HLS PIPELINE II=1
        packet<T, N> pk = in.read();
        out0.write(pk);
        out1.write(pk);
    }
}

template <class T, int N, int COUNT>
void clone_stream(hls::stream<packet<T, N> >& in, hls::stream<packet<T, N> >& out0,
                  hls::stream<packet<T, N> >& out1, hls::stream<packet<T, N> >& out2) {
    for (int p = 0; p < COUNT; p++) {
#pragma HLS PIPELINE II=1
        packet<T, N> pk = in.read();
        out0.write(pk);
        out1.write(pk);
        out2.write(pk);
    }
}

}  // namespace accelc_hls

#endif
