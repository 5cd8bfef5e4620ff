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
//
// GemmBiasOf is the same mainloop with CUTLASS's broadcast epilogue (GemmUniversalStreamkWithBroadcast):
// D = act(beta * C + (alpha * acc + bias[n])) with the bias a row of N fp32 values and C (the residual) in
// D's type, for one problem. It computes what the Hopper instantiation (accelc_cutlass_gemm_sm90.cuh)
// computes, in the same order, so a 16-bit D is the rounded fp32 result and a bias plus a residual need no
// map kernel to sum them into C.
#pragma once
#include <cuda_runtime.h>

#include "cutlass/cutlass.h"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/epilogue/thread/linear_combination_generic.h"
#include "cutlass/epilogue/thread/linear_combination_bias_elementwise.h"
#include "cutlass/gemm/device/gemm_universal.h"
#include "cutlass/gemm/device/gemm_universal_streamk_with_broadcast.h"
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

// The output operator of GemmBiasOf: CUTLASS's LinearCombinationBiasElementwise (whose types and Params it
// keeps) computes (alpha * acc + beta * C) + V; this one adds the bias row V first, as the graph does.
template <typename ElementD, int kCount, template <typename> class Act>
class BiasRowThenSource : public cutlass::epilogue::thread::LinearCombinationBiasElementwise<
                              ElementD, float, float, ElementD, ElementD, kCount, Act<float>, cutlass::plus<float>,
                              /*StoreT=*/false, /*ElementVector=*/float> {
 public:
  using Base = cutlass::epilogue::thread::LinearCombinationBiasElementwise<
      ElementD, float, float, ElementD, ElementD, kCount, Act<float>, cutlass::plus<float>, false, float>;
  using typename Base::FragmentAccumulator;
  using typename Base::FragmentC;
  using typename Base::FragmentCompute;
  using typename Base::FragmentT;
  using typename Base::FragmentZ;
  using typename Base::Params;

  CUTLASS_HOST_DEVICE explicit BiasRowThenSource(Params const& p)
      : Base(p), alpha_(p.alpha_ptr ? *p.alpha_ptr : p.alpha), beta_(p.beta_ptr ? *p.beta_ptr : p.beta) {}

  CUTLASS_HOST_DEVICE bool is_source_needed() const { return beta_ != 0.0f; }
  CUTLASS_HOST_DEVICE void set_k_partition(int k_partition, int k_partition_count) {
    if (k_partition) beta_ = 1.0f;          // serial split-K (not used: stream-K reduces in the workspace)
    skip_act_ = k_partition != k_partition_count - 1;
  }

  CUTLASS_HOST_DEVICE void operator()(FragmentZ& z, FragmentT&, FragmentAccumulator const& ab, FragmentC const& c,
                                      FragmentCompute const& v) const {
    cutlass::NumericArrayConverter<float, ElementD, kCount> widen;
    const FragmentCompute src = widen(c);
    FragmentCompute out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kCount; ++i) out[i] = finish(fmaf(beta_, src[i], fmaf(alpha_, ab[i], v[i])));
    z = cutlass::NumericArrayConverter<ElementD, float, kCount>()(out);
  }

  CUTLASS_HOST_DEVICE void operator()(FragmentZ& z, FragmentT&, FragmentAccumulator const& ab,
                                      FragmentCompute const& v) const {
    FragmentCompute out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kCount; ++i) out[i] = finish(fmaf(alpha_, ab[i], v[i]));
    z = cutlass::NumericArrayConverter<ElementD, float, kCount>()(out);
  }

 private:
  CUTLASS_HOST_DEVICE float finish(float x) const { return skip_act_ ? x : Act<float>()(x); }
  float alpha_, beta_;
  bool skip_act_ = false;
};

template <typename ElementAB, typename LayoutA, typename LayoutB, typename ElementD, template <typename> class Act,
          int AlignA, int AlignB, int AlignC>
struct GemmBiasOf {
  using T = Tiles<cutlass::arch::OpClassTensorOp, ElementAB>;
  using Epilogue = BiasRowThenSource<ElementD, AlignC, Act>;
  using Gemm = cutlass::gemm::device::GemmUniversalStreamkWithBroadcast<
      ElementAB, LayoutA, ElementAB, LayoutB, ElementD, cutlass::layout::RowMajor, float,
      cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80, typename T::Block, typename T::Warp,
      typename T::Instruction, Epilogue, cutlass::gemm::threadblock::ThreadblockSwizzleStreamK, T::kStages,
      AlignA, AlignB>;

  static typename Gemm::Arguments arguments(const AccelcGemmArgs& p) {
    typename Epilogue::Params epi(p.alpha, p.c ? p.beta : 0.0f);
    typename Gemm::Arguments args(
        cutlass::gemm::GemmUniversalMode::kGemm, {p.m, p.n, p.k}, 1, epi,
        p.a, p.b, p.c ? p.c : p.d, p.d, const_cast<float*>(p.bias), nullptr,
        0, 0, 0, 0, 0, 0,
        p.lda, p.ldb, p.c ? p.ldc : p.ldd, p.ldd, /*ldr: the bias row is broadcast over M*/ 0, /*ldt*/ 0);
    return args;
  }

  static size_t workspace(const AccelcGemmArgs& p) { return Gemm::get_workspace_size(arguments(p)); }

  static cudaError_t run(const AccelcGemmArgs& p, cudaStream_t stream) {
    if (p.batch != 1 || !p.bias) return cudaErrorInvalidValue;
    return launch<Gemm>(arguments(p), p, stream);
  }
};

}  // namespace accelc_cutlass
