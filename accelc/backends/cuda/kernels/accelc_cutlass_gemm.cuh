// accelc CUDA backend: one CUTLASS 2.x GEMM instantiation per (dtypes, layouts, epilogue, alignment).
//
// D[b] = act(alpha * A[b] @ B[b] + beta * C[b]), batched with strides (a stride of 0 broadcasts an
// operand over the batch; ldc = 0 broadcasts a bias row over M). The mainloop is CUTLASS's
// multistage sm_80 kernel (tensor-core bf16/fp16 with fp32 accumulation, tf32 when allowed, or SIMT
// fp32); the epilogue is LinearCombinationGeneric with a CUTLASS activation functor. Each generated
// translation unit (gemm_<key>.cu) defines one `accelc_gemm_<key>` from this template, so that
// instantiations are compiled once and cached independently of any model.
//
// Single GEMMs are scheduled stream-K (ThreadblockSwizzleStreamK): when the output has too few
// 128x128 tiles to fill the GPU (an encoder at batch 1 has 6 to 24 of them for 132 SMs), CUTLASS splits
// the K loop of some tiles over several blocks and reduces their partial sums in a device workspace; the
// epilogue (activation included) runs once per tile, on the finished sum. Large problems stay
// data-parallel. The workspace size depends on the GPU (SM count, occupancy), so the model asks
// `accelc_gemm_<key>_workspace` for every call site when it is created and allocates the largest once.
// Batched GEMMs are data-parallel per batch.
#pragma once
#include <cuda_runtime.h>

#include "cutlass/cutlass.h"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/epilogue/thread/linear_combination_generic.h"
#include "cutlass/gemm/device/gemm_universal.h"
#include "cutlass/gemm/threadblock/threadblock_swizzle_streamk.h"

#include "accelc_cutlass_launch.cuh"
#include "accelc_gemm_args.h"

namespace accelc_cutlass {

// The tile shapes per operator class. Tensor-op: 128x128x32 CTA, 64x64 warps, 3 stages (the sm_80
// default that fits in 48 KiB of shared memory at 16-bit inputs, and runs unchanged on sm_86/89/90).
template <typename OpClass, typename ElementA> struct Tiles;
template <typename ElementA> struct Tiles<cutlass::arch::OpClassTensorOp, ElementA> {
  using Block = cutlass::gemm::GemmShape<128, 128, 32>;
  using Warp = cutlass::gemm::GemmShape<64, 64, 32>;
  using Instruction = cutlass::gemm::GemmShape<16, 8, 16>;
  static constexpr int kStages = 3;
};
template <> struct Tiles<cutlass::arch::OpClassTensorOp, float> {   // tf32
  using Block = cutlass::gemm::GemmShape<128, 128, 16>;
  using Warp = cutlass::gemm::GemmShape<64, 64, 16>;
  using Instruction = cutlass::gemm::GemmShape<16, 8, 8>;
  static constexpr int kStages = 3;
};
template <typename ElementA> struct Tiles<cutlass::arch::OpClassSimt, ElementA> {
  using Block = cutlass::gemm::GemmShape<128, 128, 8>;
  using Warp = cutlass::gemm::GemmShape<32, 64, 8>;
  using Instruction = cutlass::gemm::GemmShape<1, 1, 1>;
  static constexpr int kStages = 3;
};

template <typename ElementA, typename LayoutA, typename ElementB, typename LayoutB, typename ElementC,
          typename OpClass, template <typename> class Act, int AlignA, int AlignB, int AlignC>
struct GemmOf {
  using T = Tiles<OpClass, ElementA>;
  using Epilogue = cutlass::epilogue::thread::LinearCombinationGeneric<Act, ElementC, AlignC, float, float>;
  using Gemm = cutlass::gemm::device::GemmUniversal<
      ElementA, LayoutA, ElementB, LayoutB, ElementC, cutlass::layout::RowMajor, float, OpClass,
      cutlass::arch::Sm80, typename T::Block, typename T::Warp, typename T::Instruction, Epilogue,
      cutlass::gemm::threadblock::ThreadblockSwizzleStreamK, T::kStages, AlignA, AlignB>;

  static typename Gemm::Arguments arguments(const AccelcGemmArgs& p) {
    typename Epilogue::Params epi(p.alpha, p.c ? p.beta : 0.0f);
    // kGemm with a split factor of 1: stream-K decides how to spread the tiles over the SMs
    const bool batched = p.batch > 1;
    return typename Gemm::Arguments(
        batched ? cutlass::gemm::GemmUniversalMode::kBatched : cutlass::gemm::GemmUniversalMode::kGemm,
        {p.m, p.n, p.k}, batched ? p.batch : 1, epi,
        p.a, p.b, p.c ? p.c : p.d, p.d,
        p.batch_stride_a, p.batch_stride_b, p.c ? p.batch_stride_c : p.batch_stride_d, p.batch_stride_d,
        typename LayoutA::Stride::Index(p.lda), typename LayoutB::Stride::Index(p.ldb),
        typename cutlass::layout::RowMajor::Stride::Index(p.c ? p.ldc : p.ldd),
        typename cutlass::layout::RowMajor::Stride::Index(p.ldd));
  }

  // bytes of workspace the call needs on the current GPU (pointers in p are not read)
  static size_t workspace(const AccelcGemmArgs& p) { return Gemm::get_workspace_size(arguments(p)); }

  static cudaError_t run(const AccelcGemmArgs& p, cudaStream_t stream) {
    return launch<Gemm>(arguments(p), p, stream);
  }
};

}  // namespace accelc_cutlass
