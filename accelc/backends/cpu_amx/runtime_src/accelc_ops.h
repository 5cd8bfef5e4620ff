// accelc CPU runtime: support kernels called by generated model code (everything except GEMM/conv,
// which live in ../kernels/accelc_gemm.h). Compiled once per ISA variant (accelc_ops.cpp) and cached.
//
// Shapes are passed collapsed: an axis-wise op sees its input as [outer, r, inner] where r is the
// reduced/normalized axis. Kernels that can fail (out-of-range indices) return 4 and name the problem
// through set_error(); every other kernel cannot fail.
#pragma once
#include <cstddef>
#include <cstdint>
#include "accelc_types.h"

extern "C" void accelc_internal_set_error(const char* message);

namespace ACCELC_NS {

// ---- data movement -------------------------------------------------------------------------------
// out[i_0, ..., i_{rank-1}] = in[sum_d tables[d][i_d]] (byte offsets divided by elem_size, i.e. element
// offsets); an entry < 0 in any table means "padding": the element is filled with *fill (or zeros when
// fill is null). Slice, Expand, Tile, Pad, Depth/SpaceToDepth and the Transposes that transpose_blocks
// (below) does not cover lower to this.
// inner_contiguous: the last table is t[j] = t[0] + j with no padding, so rows are memcpy'd.
void index_copy(int elem_size, int rank, const int64_t* out_dims, const int64_t* const* tables,
                const void* in, void* out, const void* fill, bool inner_contiguous);

// out[b][j][i][:] = in[b][i][j][:] for i < rows, j < cols: a batched transpose of blocks of `inner` elements
// (the Transposes that swap two groups of axes: NCHW <-> NHWC, [b, s, h, d] <-> [b, h, s, d]), in tiles.
void transpose_blocks(int elem_size, int64_t batch, int64_t rows, int64_t cols, int64_t inner, const void* in,
                      void* out);

// Copies `rows` rows of `row_bytes` from src (stride src_stride bytes) to dst (stride dst_stride).
void copy_rows(int64_t rows, int64_t row_bytes, const void* src, int64_t src_stride, void* dst,
               int64_t dst_stride);

// Fills n elements of elem_size bytes with *value.
void fill(int elem_size, int64_t n, const void* value, void* out);

// ---- reductions ------------------------------------------------------------------------------------
enum class RedOp : int { Sum = 0, Mean = 1, Max = 2, Min = 3, Prod = 4, L1 = 5, L2 = 6, SumSquare = 7,
                         LogSumExp = 8 };
void reduce(DT dt, RedOp op, int64_t outer, int64_t r, int64_t inner, const void* in, void* out);
void arg_reduce(DT dt, bool is_max, bool select_last, int64_t outer, int64_t r, int64_t inner,
                const void* in, int64_t* out);
void cumsum(DT dt, bool exclusive, bool reverse, int64_t outer, int64_t r, int64_t inner,
            const void* in, void* out);
// values/indices: [outer, k, inner]; scratch: r int64 entries for each of `slots` threads (the kernel
// uses at most that many threads).
void topk(DT dt, bool largest, int64_t outer, int64_t r, int64_t inner, int64_t k, const void* in,
          void* values, int64_t* indices, int64_t* scratch, int slots);
int max_threads();

// ---- normalization -----------------------------------------------------------------------------------
void softmax(DT dt, bool log, int64_t outer, int64_t r, int64_t inner, const void* in, void* out);
// x, y: [rows, n]; scale/bias: [n] (bias may be null); mean/inv_std: [rows] fp32 or null.
void layer_norm(DT dt, int64_t rows, int64_t n, const void* x, const void* scale, const void* bias,
                float epsilon, void* y, void* mean, void* inv_std);
// x, y: [n, c, inner]; per-channel vectors of dtype dt.
void batch_norm(DT dt, int64_t n, int64_t c, int64_t inner, const void* x, const void* scale,
                const void* bias, const void* mean, const void* var, float epsilon, void* y);
void instance_norm(DT dt, int64_t n, int64_t c, int64_t inner, const void* x, const void* scale,
                   const void* bias, float epsilon, void* y);
void lrn(DT dt, int64_t n, int64_t c, int64_t inner, int size, float alpha, float beta, float bias,
         const void* x, void* y);

// ---- pooling (up to 3 spatial axes; unused leading axes have size 1) ----------------------------------
struct PoolShape {
  int64_t n, c;
  int64_t in[3], out[3], kernel[3], stride[3], pad_begin[3], pad_end[3], dilation[3];
};
void max_pool(DT dt, const PoolShape& s, const void* x, void* y);
void avg_pool(DT dt, const PoolShape& s, bool count_include_pad, const void* x, void* y);

// NHWC fp32 (x [n][in1][in2][c], y [n][out1][out2][c]; 2-D windows on axes 1 and 2, axis 0 of size 1).
void max_pool_nhwc_f32(const PoolShape& s, const float* x, float* y);
void avg_pool_nhwc_f32(const PoolShape& s, bool count_include_pad, const float* x, float* y);

// ---- transposed convolution (gather form: each output element sums its taps; no write races) -----------
struct ConvTransposeShape {
  int64_t n, c, m, groups;                // m = output channels (w is [c][m/groups][k...])
  int64_t in[3], out[3], kernel[3], stride[3], pad_begin[3], dilation[3];
};
void conv_transpose_f32(const ConvTransposeShape& s, const float* x, const float* w, const float* bias, float* y);

// ---- indexing ----------------------------------------------------------------------------------------
// data [outer, axis_len, inner], indices (i32/i64, n_idx of them) -> out [outer, n_idx, inner].
int gather(int elem_size, int64_t outer, int64_t axis_len, int64_t inner, const void* data, DT index_dt,
           const void* indices, int64_t n_idx, void* out);
// out has the indices' shape (dims); data_dims the data's; both of rank `rank`.
int gather_elements(int elem_size, int rank, const int64_t* dims, const int64_t* data_dims, int axis,
                    const void* data, DT index_dt, const void* indices, void* out);

}  // namespace ACCELC_NS
