// accelc CUDA backend: the Hopper (sm_90a) GEMM instantiation, CUTLASS 3.x.
//
// D = act(alpha * A @ B + bias[n] + beta * C) for one (unbatched) problem: 16-bit operands on the warpgroup
// tensor cores (wgmma) fed by TMA, fp32 accumulation, a warp-specialized cooperative kernel with 128x128x64
// tiles, scheduled stream-K (the partial sums of split K loops meet in the model's GEMM workspace). The
// epilogue is CUTLASS's visitor tree LinCombPerColBiasEltAct: the bias is a row of N fp32 values (it is not
// rounded to D's type, so a 16-bit D is exactly the rounded fp32 result), C is the residual in its own type
// (or absent: ElementC = void), D is stored in its own type.
//
// The lowering (codegen_linalg.py) picks this template on sm_90a for bf16/fp16 products whose operands,
// C and D all have 16-byte aligned rows (TMA's rule); everything else uses accelc_cutlass_gemm.cuh.
#pragma once
#include <cuda_runtime.h>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"

#include "accelc_cutlass_launch.cuh"
#include "accelc_gemm_args.h"

namespace accelc_cutlass {

// a (row, column) stride pair of a matrix with leading dimension ld in layout L, as CUTLASS 3's (M|N, K, L) stride
template <typename Stride, typename Layout> Stride stride_of(long long ld) {
  Stride s{};
  if constexpr (cute::is_same_v<Layout, cutlass::layout::RowMajor>) {
    cute::get<0>(s) = ld;                 // rows are ld apart, columns contiguous
  } else {
    cute::get<1>(s) = ld;                 // columns are ld apart, rows contiguous
  }
  return s;
}

template <typename ElementAB, typename LayoutA, typename LayoutB, typename ElementC, typename ElementD,
          template <typename> class Act>
struct GemmSm90Of {
  static constexpr int kAlignAB = 16 / sizeof(ElementAB);
  static constexpr int kAlignD = 16 / sizeof(ElementD);
  static constexpr int kAlignC = cute::is_void_v<ElementC> ? kAlignD : 16 / int(sizeof(cute::conditional_t<
      cute::is_void_v<ElementC>, ElementD, ElementC>));
  using Tile = cute::Shape<cute::_128, cute::_128, cute::_64>;
  using Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>;
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<Act, ElementD, float, float,
      cute::conditional_t<cute::is_void_v<ElementC>, ElementD, ElementC>>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      ElementC, cutlass::layout::RowMajor, kAlignC, ElementD, cutlass::layout::RowMajor, kAlignD,
      cutlass::epilogue::TmaWarpSpecializedCooperative, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, LayoutA, kAlignAB, ElementAB, LayoutB, kAlignAB,
      float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue,
                                                      cutlass::gemm::StreamKScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const AccelcGemmArgs& p) {
    using StrideA = typename Kernel::StrideA;
    using StrideB = typename Kernel::StrideB;
    using StrideC = typename Kernel::StrideC;
    using StrideD = typename Kernel::StrideD;
    // B is K x N: column-major B (K contiguous) is CUTLASS 3's "N x K, K-major"
    using LayoutBt = cute::conditional_t<cute::is_same_v<LayoutB, cutlass::layout::ColumnMajor>,
                                         cutlass::layout::RowMajor, cutlass::layout::ColumnMajor>;
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {p.m, p.n, p.k, 1};
    args.mainloop.ptr_A = static_cast<const ElementAB*>(p.a);
    args.mainloop.dA = stride_of<StrideA, LayoutA>(p.lda);
    args.mainloop.ptr_B = static_cast<const ElementAB*>(p.b);
    args.mainloop.dB = stride_of<StrideB, LayoutBt>(p.ldb);
    auto& fusion = args.epilogue.thread;
    fusion.alpha = p.alpha;
    fusion.beta = p.c ? p.beta : 0.0f;
    fusion.bias_ptr = p.bias;
    if constexpr (!cute::is_void_v<ElementC>) {
      args.epilogue.ptr_C = static_cast<const ElementC*>(p.c);
      args.epilogue.dC = stride_of<StrideC, cutlass::layout::RowMajor>(p.ldc);
    }
    args.epilogue.ptr_D = static_cast<ElementD*>(p.d);
    args.epilogue.dD = stride_of<StrideD, cutlass::layout::RowMajor>(p.ldd);
    return args;
  }

  // bytes of workspace the call needs on the current GPU (pointers in p are not read)
  static size_t workspace(const AccelcGemmArgs& p) { return Gemm::get_workspace_size(arguments(p)); }

  static cudaError_t run(const AccelcGemmArgs& p, cudaStream_t stream) {
    if (p.batch != 1 || (cute::is_void_v<ElementC> && p.c)) return cudaErrorInvalidValue;
    return launch<Gemm>(arguments(p), p, stream);
  }
};

}  // namespace accelc_cutlass
