// accelc CUDA backend: helpers shared by the generated model code (accelc_model.cu).
//
// Loads and stores convert between storage types (float, __half, __nv_bfloat16, integers, bool as one
// byte) and the compute type (float for every float storage type, so bf16/fp16 tensors are computed in
// fp32 and rounded once on store). Block reductions are for the row kernels (softmax, layernorm,
// reductions): one block per row, warp shuffles then one shared-memory round.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>
#include <mma.h>
#include <cstdint>

// Every launch in the generated code goes through this macro, so that the host emulation
// (kernels/emulation/accelc_cuda_emulation.h, which defines it first) can run the same source.
#ifndef ACCELC_LAUNCH
#define ACCELC_LAUNCH(kernel, grid, block, shmem, stream) kernel<<<grid, block, shmem, stream>>>
#endif

namespace accelc {

// ---- storage <-> compute conversions -------------------------------------------------------------
template <typename T> __device__ __forceinline__ float to_f32(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
// float -> integer conversions truncate toward zero (C and ONNX Cast semantics)
template <> __device__ __forceinline__ uint8_t from_f32<uint8_t>(float v) { return static_cast<uint8_t>(static_cast<int>(v)); }

// A group of V consecutive elements moved with one vector load/store (V * sizeof(T) in 4..32 bytes).
template <typename T, int V> struct alignas(sizeof(T) * V) Vec { T v[V]; };

// ---- math used by elementwise expressions and epilogues -------------------------------------------
__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ float geluf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_tanhf(float x) {
  return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float softplusf(float x) { return x > 20.0f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ float round_half_even(float x) { return rintf(x); }
__device__ __forceinline__ float signf(float x) { return float((x > 0.0f) - (x < 0.0f)); }
template <typename T> __device__ __forceinline__ T floor_mod(T a, T b) {
  T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
__device__ __forceinline__ float floor_mod(float a, float b) {
  float r = fmodf(a, b);
  return (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) ? r + b : r;
}
template <typename T> __device__ __forceinline__ T int_div(T a, T b) { return b == 0 ? T(0) : a / b; }
template <typename T> __device__ __forceinline__ T int_pow(T a, T b) {
  return static_cast<T>(pow(static_cast<double>(a), static_cast<double>(b)));
}

// ---- block reductions (blockDim.x a multiple of 32, at most 1024) --------------------------------
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_min(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_prod(float v) {
  for (int o = 16; o > 0; o >>= 1) v *= __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

enum class Red { Sum, Max, Min, Prod };

template <Red R> __device__ __forceinline__ float warp_reduce(float v) {
  if (R == Red::Sum) return warp_sum(v);
  if (R == Red::Max) return warp_max(v);
  if (R == Red::Min) return warp_min(v);
  return warp_prod(v);
}

// Reduces v over the block; every thread gets the result. `scratch` holds >= 32 floats.
template <Red R> __device__ __forceinline__ float block_reduce(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_reduce<R>(v);
  __syncthreads();                      // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const float identity = R == Red::Sum ? 0.0f : R == Red::Prod ? 1.0f : R == Red::Max ? -CUDART_INF_F : CUDART_INF_F;
  v = lane < warps ? scratch[lane] : identity;
  return warp_reduce<R>(v);
}

inline unsigned grid_for(long long n, int threads, int per_thread = 1) {
  long long blocks = (n + (long long)threads * per_thread - 1) / ((long long)threads * per_thread);
  if (blocks < 1) blocks = 1;
  if (blocks > 2147483647LL) blocks = 2147483647LL;
  return static_cast<unsigned>(blocks);
}

}  // namespace accelc
