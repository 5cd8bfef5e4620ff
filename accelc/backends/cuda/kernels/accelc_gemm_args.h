// accelc CUDA backend: the arguments of a GEMM instantiation (shared by the model code, which must not
// include CUTLASS, and the gemm_<key>.cu translation units).
#pragma once
#include <cuda_runtime.h>

struct AccelcGemmArgs {
  int m, n, k, batch;
  const void* a; long long lda, batch_stride_a;
  const void* b; long long ldb, batch_stride_b;
  const void* c; long long ldc, batch_stride_c;   // c may be NULL (then beta is ignored)
  void* d;       long long ldd, batch_stride_d;
  float alpha, beta;
  const float* bias;                              // a row of n fp32 values added before the activation, or
                                                  // NULL (the sm_90a instantiations; sm_80's put it in c)
  void* workspace;  size_t workspace_bytes;       // device scratch the instantiation may need (stream-K)
};
