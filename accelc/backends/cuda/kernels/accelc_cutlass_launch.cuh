// accelc CUDA backend: running one CUTLASS GEMM (2.x or 3.x device adapter) for AccelcGemmArgs.
#pragma once
#include <cuda_runtime.h>

#include "cutlass/cutlass.h"

#include "accelc_gemm_args.h"

namespace accelc_cutlass {

// Checks that the instantiation can run the problem and that the model's workspace is large enough, then
// initializes (stream-K clears its part of the workspace on `stream`) and launches on `stream`.
template <typename Gemm>
cudaError_t launch(const typename Gemm::Arguments& args, const AccelcGemmArgs& p, cudaStream_t stream) {
  Gemm gemm;
  cutlass::Status st = gemm.can_implement(args);
  if (st != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  const size_t need = Gemm::get_workspace_size(args);
  if (need > p.workspace_bytes || (need && !p.workspace)) return cudaErrorInvalidValue;
  st = gemm.initialize(args, p.workspace, stream);
  if (st != cutlass::Status::kSuccess) return cudaErrorInvalidConfiguration;
  st = gemm.run(stream);
  if (st != cutlass::Status::kSuccess) {
    cudaError_t e = cudaGetLastError();
    return e != cudaSuccess ? e : cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

}  // namespace accelc_cutlass
