"""GEMM and convolution lowerings of the CUDA backend.

Every ``FusedGemm`` / ``MatMul`` / ``Gemm`` becomes one call of a CUTLASS 2.x GEMM instantiation
(``kernels/accelc_cutlass_gemm.cuh``) chosen by (operand dtype, layouts, output dtype, epilogue
activation, alignments). The instantiation lives in its own translation unit ``gemm_<key>.cu``, built and
cached apart from the model, so every model with the same GEMM flavours reuses the object file.

Operand dtype follows the node's ``compute``: bf16 (fp16) -> bf16 (fp16) tensor cores (fp32 operands
are rounded by a conversion kernel, constant weights are stored in the compute type at compile time);
fp16 graphs -> fp16 tensor cores; fp32 -> CUDA-core fp32 (SIMT), or tf32 tensor cores when the user
passes ``allow_tf32``. Constant B operands are stored K-contiguous (``[N, K]``, CUTLASS ColumnMajor), the
layout the tensor-core mainloop reads best. Operands whose leading dimension is not a multiple of 2
(16-bit) cannot use cp.async and go through the fp32 SIMT kernel with values rounded to the compute type
(same numbers).

Epilogue: ``act(alpha * acc + beta * C)`` in fp32 with C = the bias row (ldc = 0 broadcasts it over M),
or the residual (beta = 1). A bias *and* a residual are first summed into one C by a small map kernel.
leaky_relu and clip (which need parameters CUTLASS functors do not take) run as a map kernel after.

Convolution (2-D, 1-D as H = 1) with ``group == 1`` is im2col + GEMM: a kernel writes the patches
``col[n][p][k]`` (k padded to a multiple of 8, in the compute dtype) and the GEMM computes
``out[n] (Co x P) = W (Co x K) @ col[n]^T``, which is NCHW directly. The bias is folded into the GEMM as
extra K columns (ones in col, bias in W; split into hi + lo parts for 16-bit compute, so it keeps
~16 (bf16) or ~22 (fp16) bits), so the residual can take the C slot and the whole epilogue is fused.
Grouped and depthwise convolutions use a direct kernel (one thread per output element).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from ...ir import DType, Graph, Node
from ...ir.ops.fused import Activation, round_to
from ..cpu_amx.emitter import c_float
from .codegen_elementwise import Operand, View, broadcast_view, contiguous_strides, emit_map
from .lowering import CUTLASS_ELEMENT, FLOATS, LOW, LowerCtx, load_expr, lowering, storage, store_expr

_CUTLASS_ACT = {"none": "Identity", "relu": "ReLu", "gelu": "GELU", "gelu_tanh": "GELU_taylor",
                "sigmoid": "Sigmoid", "tanh": "Tanh", "silu": "SiLu"}


def act_expr(act: Activation, x: str) -> str:
    """The activation applied to fp32 expression ``x`` in device code."""
    k = act.kind
    return {
        "none": x, "relu": f"fmaxf({x}, 0.0f)", "gelu": f"accelc::geluf({x})", "gelu_tanh": f"accelc::gelu_tanhf({x})",
        "sigmoid": f"accelc::sigmoidf({x})", "tanh": f"tanhf({x})", "silu": f"({x} * accelc::sigmoidf({x}))",
        "leaky_relu": f"({x} >= 0.0f ? {x} : {x} * {c_float(act.alpha)})",
        "clip": f"fminf(fmaxf({x}, {c_float(act.alpha)}), {c_float(act.beta)})",
    }[k]


@dataclass(frozen=True)
class GemmInstance:
    element_ab: DType          # operand dtype (f32 with op_class simt/tf32, bf16, f16)
    layout_a: str              # "RowMajor" | "ColumnMajor"
    layout_b: str
    element_c: DType
    op_class: str              # "TensorOp" | "Simt"
    act: str                   # key of _CUTLASS_ACT
    align_a: int
    align_b: int
    align_c: int
    family: str = "sm80"       # "sm80": CUTLASS 2.x (C holds the bias); "sm80bias": CUTLASS 2.x with an fp32 bias
                               # row (broadcast epilogue); "sm90": CUTLASS 3.x wgmma (fp32 bias row)
    element_source: DType | None = None    # sm90: C's dtype (the residual), None when there is no C

    @property
    def key(self) -> str:
        text = repr(self)
        short = f"{self.element_ab.short}_{self.layout_a[0].lower()}{self.layout_b[0].lower()}_{self.element_c.short}_" \
                f"{self.op_class.lower()}_{self.act}_a{self.align_a}{self.align_b}{self.align_c}"
        if self.family == "sm90":
            short = f"sm90_{short}_c{self.element_source.short if self.element_source else 'none'}"
        elif self.family == "sm80bias":
            short = f"bias_{short}"
        return f"{short}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"

    @property
    def function(self) -> str:
        return f"accelc_gemm_{self.key}"

    @property
    def workspace_function(self) -> str:
        return f"accelc_gemm_{self.key}_workspace"

    def source(self) -> str:
        ea, ec = CUTLASS_ELEMENT[self.element_ab], CUTLASS_ELEMENT[self.element_c]
        if self.family == "sm90":
            src = CUTLASS_ELEMENT[self.element_source] if self.element_source else "void"
            head = (f'#include "accelc_cutlass_gemm_sm90.cuh"\n\n'
                    f"using Instance = accelc_cutlass::GemmSm90Of<{ea}, cutlass::layout::{self.layout_a}, "
                    f"cutlass::layout::{self.layout_b}, {src}, {ec}, "
                    f"cutlass::epilogue::thread::{_CUTLASS_ACT[self.act]}>;\n\n")
        elif self.family == "sm80bias":
            head = (f'#include "accelc_cutlass_gemm.cuh"\n\n'
                    f"using Instance = accelc_cutlass::GemmBiasOf<{ea}, cutlass::layout::{self.layout_a}, "
                    f"cutlass::layout::{self.layout_b}, {ec}, cutlass::epilogue::thread::{_CUTLASS_ACT[self.act]}, "
                    f"{self.align_a}, {self.align_b}, {self.align_c}>;\n\n")
        else:
            head = (f'#include "accelc_cutlass_gemm.cuh"\n\n'
                    f"using Instance = accelc_cutlass::GemmOf<{ea}, cutlass::layout::{self.layout_a}, {ea}, "
                    f"cutlass::layout::{self.layout_b}, {ec}, cutlass::arch::OpClass{self.op_class}, "
                    f"cutlass::epilogue::thread::{_CUTLASS_ACT[self.act]}, {self.align_a}, {self.align_b}, "
                    f"{self.align_c}>;\n\n")
        return (f"// CUTLASS GEMM instantiation {self.key} (generated by accelc; one per GEMM flavour)\n" + head +
                f'extern "C" cudaError_t {self.function}(const AccelcGemmArgs* p, cudaStream_t stream) {{\n'
                f"  return Instance::run(*p, stream);\n}}\n\n"
                f'extern "C" size_t {self.workspace_function}(const AccelcGemmArgs* p) {{\n'
                f"  return Instance::workspace(*p);\n}}\n")


def _align(values, itemsize: int, max_bytes: int = 16) -> int:
    """Largest vector width (elements) dividing every value, at most 16 bytes."""
    v = max_bytes // itemsize
    while v > 1 and any(int(x) % v for x in values):
        v //= 2
    return max(v, 1)


def _rounding(dtype: DType):
    """A map body rounding an fp32 expression to ``dtype`` and back (SIMT operands of a 16-bit product)."""
    return lambda em, xs: f"accelc::to_f32(accelc::from_f32<{storage(dtype)}>({xs[0]}))"


def operand_dtype(options, a_dtype: DType, compute: DType) -> tuple[DType, str]:
    """(operand dtype, op class) for a GEMM whose inputs are ``a_dtype`` and products ``compute``."""
    if compute in LOW:
        return compute, "TensorOp"
    if a_dtype in LOW:
        return a_dtype, "TensorOp"
    if getattr(options, "allow_tf32", False):
        return DType.float32, "TensorOp"
    return DType.float32, "Simt"


# ---- GEMM --------------------------------------------------------------------------------------------
def _operand(ctx: LowerCtx, value: str, el: DType, rounded: DType | None, what: str, suffix: str) -> str:
    """A pointer to ``value`` as GEMM operand type ``el``: the value itself when it is stored that way,
    else a scratch copy written by a conversion kernel (values rounded to ``rounded`` first, when given:
    the SIMT fallback of a 16-bit product)."""
    if ctx.dtype(value) == el and rounded is None:
        return ctx.ptr(value)
    shape = ctx.shape(value)
    ptr = ctx.scratch(ctx.numel(value) * el.itemsize, storage(el), f"{what} as {el.short}")
    emit_map(ctx, out_ptr=ptr, out_dtype=el, out_shape=shape,
             operands=[Operand(ctx.ptr(value), ctx.dtype(value), View(0, contiguous_strides(shape)))],
             body=_rounding(rounded) if rounded is not None else (lambda em, xs: xs[0]),
             comment=f"{what} {value} -> {el.short}" + (f" ({rounded.short}-rounded)" if rounded else ""),
             suffix=suffix)
    return ptr


def _call_gemm(ctx: LowerCtx, node: Node, inst: GemmInstance, mnkb, a, b, c, d, alpha: float, beta: float,
               bias: str = "nullptr") -> None:
    """One call of ``inst`` in forward(): extents (m, n, k, batch), operands as (pointer, leading dim,
    batch stride), the fp32 bias row (sm90 instances), with the model's GEMM workspace. The same call
    without its buffers is recorded for ``gemm_workspace_bytes()``, which sizes the workspace on the GPU
    when the model is created."""
    def args(ptrs, bias_ptr, tail):
        (pa, pb, pc, pd), rest = ptrs, (a[1:], b[1:], c[1:], d[1:])
        fields = [*mnkb]
        for ptr, (ld, stride) in zip((pa, pb, pc, pd), rest):
            fields += [ptr, ld, stride]
        return "{" + ", ".join(str(f) for f in fields + [c_float(alpha), c_float(beta), bias_ptr, tail]) + "}"
    ctx.gemm_instances[inst.key] = inst
    with ctx.fwd.block(""):
        ctx.fwd.line(f"const AccelcGemmArgs g{args((a[0], b[0], c[0], d[0]), bias, 'workspace, workspace_bytes')};")
        ctx.fwd.line(f"ACCELC_CHECK_CALL({inst.function}(&g, stream), \"{node.op} '{node.name}'\");")
    ctx.gemm_calls.append((inst, args(("nullptr",) * 4, "nullptr", "nullptr, 0")))


@dataclass
class _Gemm:
    a: str
    b: str
    bias: str | None
    residual: str | None
    trans_a: bool
    trans_b: bool
    alpha: float
    beta: float
    act: Activation
    compute: DType


def _gemm_of(node: Node) -> _Gemm:
    ins = list(node.inputs) + ["", ""]
    if node.op == "MatMul":
        return _Gemm(ins[0], ins[1], None, None, False, False, 1.0, 1.0, Activation(), DType.float32)
    a = node.attrs
    if node.op == "Gemm":
        return _Gemm(ins[0], ins[1], ins[2] or None, None, a.trans_a, a.trans_b, a.alpha, a.beta, Activation(),
                     DType.float32)
    return _Gemm(ins[0], ins[1], ins[2] or None, ins[3] or None, a.trans_a, a.trans_b, a.alpha, a.beta,
                 a.activation, a.compute)


def _mat_shapes(graph: Graph, g: _Gemm):
    sa = [int(d) for d in graph.types[g.a].shape]
    sb = [int(d) for d in graph.types[g.b].shape]
    if len(sa) == 1:
        sa = [1] + sa
    if len(sb) == 1:
        sb = sb + [1]
    if g.trans_a:
        sa[-1], sa[-2] = sa[-2], sa[-1]
    if g.trans_b:
        sb[-1], sb[-2] = sb[-2], sb[-1]
    return sa, sb


def _batch_stride(op_batch, out_batch, mat: int) -> int | None:
    n = int(np.prod(op_batch, dtype=np.int64)) if op_batch else 1
    if n == 1:
        return 0
    padded = [1] * (len(out_batch) - len(op_batch)) + list(op_batch)
    return mat if padded == list(out_batch) else None


_SM90_TYPES = (DType.float32, *LOW)     # C and D types of the sm90 instantiations


def _sm90_eligible(arch, el: DType, op_class: str, round_low: bool, batch: int, lda: int, ldb: int,
                   n: int, out_dtype: DType) -> bool:
    """Whether a GEMM runs as the sm_90a CUTLASS 3 instantiation (accelc_cutlass_gemm_sm90.cuh): a Hopper
    target, a 16-bit tensor-core product, one problem (no batch), and rows of A, B and D that start on 16
    bytes (TMA's rule). ``ACCELC_CUDA_GEMM=sm80`` in the environment keeps every GEMM on CUTLASS 2.x."""
    if arch is None or arch.sm != "sm_90a" or os.environ.get("ACCELC_CUDA_GEMM", "").lower() == "sm80":
        return False
    if op_class != "TensorOp" or el not in LOW or round_low or batch != 1:
        return False
    return lda % 8 == 0 and ldb % 8 == 0 and (n * out_dtype.itemsize) % 16 == 0 and out_dtype in _SM90_TYPES


def constant_bias_row(graph: Graph, node: Node) -> np.ndarray | None:
    """The GEMM's bias as one row of N fp32 values (the epilogue broadcasts it over M with ldc = 0), or
    None when there is no bias or it is not a constant row."""
    g = _gemm_of(node)
    if g.bias is None or g.bias not in graph.constants:
        return None
    n = _mat_shapes(graph, g)[1][-1]
    bias = graph.constants[g.bias]
    if bias.size == 1 or (bias.ndim >= 1 and bias.shape[-1] == n and bias.size == n):
        return np.broadcast_to(bias.astype(np.float32).reshape(-1), (n,))
    return None


def _check_gemm(graph: Graph, node: Node) -> str | None:
    g = _gemm_of(node)
    if graph.types[g.a].dtype not in (DType.float32, DType.float16, DType.bfloat16):
        return f"{node.op} on {graph.types[g.a].dtype.short} is not supported on CUDA (f32/f16/bf16)"
    sa, sb = _mat_shapes(graph, g)
    out_batch = [int(d) for d in graph.types[node.outputs[0]].shape][:-2] if max(len(sa), len(sb)) > 2 else []
    if len(graph.types[g.a].shape) == 1 or len(graph.types[g.b].shape) == 1:
        out_batch = [int(d) for d in np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))]
    for s in (sa, sb):
        if _batch_stride(s[:-2], out_batch, s[-1] * s[-2]) is None:
            return f"{node.op} batch broadcasting {sa} @ {sb} is not supported on CUDA (one side must be 2-D or match)"
    return None


@dataclass
class GemmPlan:
    """How a GEMM node is called: extents, operand dtype and op class, layouts, leading dimensions,
    alignments, and whether it is the sm_90a CUTLASS 3 instantiation."""
    g: _Gemm
    M: int
    K: int
    N: int
    batch: int
    sA: int | None
    sB: int | None
    el: DType
    op_class: str
    lda: int
    ldb: int
    layout_a: str
    layout_b: str
    al_a: int
    al_b: int
    round_low: bool          # the SIMT fallback of a 16-bit product: operands rounded by conversion kernels
    sm90: bool
    sm80_bias: bool = False  # CUTLASS 2.x with the fp32 bias row (GemmBiasOf), where sm90 is not taken


def plan_gemm(graph: Graph, node: Node, options, arch, out_dtype: DType | None = None) -> GemmPlan:
    """The plan of ``node`` (with its output stored as ``out_dtype``, its own type by default)."""
    g = _gemm_of(node)
    out_dtype = out_dtype or graph.types[node.outputs[0]].dtype
    sa, sb = _mat_shapes(graph, g)
    M, K, N = sa[-2], sa[-1], sb[-1]
    out_batch = list(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2])))
    batch = int(np.prod(out_batch, dtype=np.int64)) if out_batch else 1
    sA = _batch_stride(sa[:-2], out_batch, M * K)
    sB = _batch_stride(sb[:-2], out_batch, K * N)
    el, op_class = operand_dtype(options, graph.types[g.a].dtype, g.compute)
    # [batch, M, K] @ [K, N] with row-major A: fold the batch into M (one big GEMM)
    if sB == 0 and sA and not g.trans_a:
        M, batch, sA = M * batch, 1, 0
    lda = M if g.trans_a else K
    layout_a = "ColumnMajor" if g.trans_a else "RowMajor"
    # constant B operands are laid out [batch?, N, K] (ColumnMajor, K contiguous) in the operand dtype
    if g.b in graph.constants:
        layout_b, ldb = "ColumnMajor", K
    else:
        layout_b, ldb = ("ColumnMajor", K) if g.trans_b else ("RowMajor", N)
    # alignment decides tensor-op vs SIMT fallback
    isz = 2 if el in (DType.bfloat16, DType.float16) else 4
    al_a = _align([lda, sA or 0], isz)
    al_b = _align([ldb, sB or 0], isz)
    if op_class == "TensorOp" and (al_a < (2 if isz == 2 else 4) or al_b < (2 if isz == 2 else 4)):
        el, op_class = DType.float32, "Simt"
    if op_class == "Simt":
        al_a = al_b = 1
    round_low = g.compute in LOW and el == DType.float32
    sm90 = _sm90_eligible(arch, el, op_class, round_low, batch, lda, ldb, N, out_dtype)
    sm80_bias = not sm90 and _sm80_bias_eligible(graph, node, g, el, op_class, round_low, batch, out_dtype)
    return GemmPlan(g, M, K, N, batch, sA, sB, el, op_class, lda, ldb, layout_a, layout_b, al_a, al_b, round_low, sm90,
                    sm80_bias)


def _sm80_bias_eligible(graph: Graph, node: Node, g: _Gemm, el: DType, op_class: str, round_low: bool, batch: int,
                        out_dtype: DType) -> bool:
    """Whether a GEMM that is not the sm_90a instantiation runs as CUTLASS 2.x with the fp32 bias row
    (``GemmBiasOf``): a 16-bit tensor-core FusedGemm, one problem, a constant bias row, an activation CUTLASS
    fuses, a residual (if any) of D's shape and type, and something to gain over the instantiation whose C
    holds the bias: a 16-bit D (which that one would compute with a 16-bit bias) or a residual (which it
    would sum with the bias in a map kernel)."""
    if node.op != "FusedGemm" or op_class != "TensorOp" or el not in LOW or round_low or batch != 1:
        return False
    if g.bias is None or constant_bias_row(graph, node) is None or g.act.kind not in _CUTLASS_ACT:
        return False
    if g.residual is not None:
        t = graph.types[g.residual]
        if t.dtype != out_dtype or tuple(t.shape) != tuple(graph.types[node.outputs[0]].shape):
            return False
    return out_dtype in LOW or g.residual is not None


def stores_low_exactly(graph: Graph, node: Node, options, arch, dtype: DType) -> bool:
    """Whether the GEMM ``node`` can store its result in the 16-bit ``dtype`` itself, with the bits a
    conversion kernel after it would write: the sm90 instantiation and CUTLASS 2.x's ``GemmBiasOf`` round
    their fp32 epilogue result once, and read the bias as an fp32 row and the residual as C in its own type
    (``GemmBiasOf``: only in D's type, so not an fp32 residual). (The plain sm80 one would read a bias in
    ``dtype``; an activation after the GEMM would round twice.)"""
    if node.op != "FusedGemm" or node.attrs.activation.kind not in _CUTLASS_ACT:
        return False
    plan = plan_gemm(graph, node, options, arch, dtype)
    if not (plan.sm90 or plan.sm80_bias):
        return False
    g = _gemm_of(node)
    if g.bias is not None and constant_bias_row(graph, node) is None:
        return False
    if g.residual is not None:
        t, out = graph.types[g.residual], graph.types[node.outputs[0]]
        if tuple(t.shape) != tuple(out.shape) or t.dtype not in _SM90_TYPES or (t.shape[-1] * t.dtype.itemsize) % 16:
            return False
    return True


@lowering("FusedGemm", "MatMul", "Gemm", check=_check_gemm)
def lower_gemm(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    out_dtype = ctx.dtype(out)
    plan = plan_gemm(ctx.graph, node, ctx.options, ctx.arch)
    g, M, K, N, batch, sA, sB = plan.g, plan.M, plan.K, plan.N, plan.batch, plan.sA, plan.sB
    el, op_class, lda, ldb, al_a, al_b = plan.el, plan.op_class, plan.lda, plan.ldb, plan.al_a, plan.al_b
    layout_a, layout_b, round_low = plan.layout_a, plan.layout_b, plan.round_low
    label = f"{node.op} '{node.name}'"
    if ctx.is_const(g.b):
        b = np.asarray(ctx.const(g.b), dtype=np.float32)
        if b.ndim == 1:
            b = b[:, None]
        b_host = b if g.trans_b else np.swapaxes(b, -1, -2)      # [..., N, K], made contiguous below
    else:
        b_host = None

    # A and B: converted at run time when their dtype differs from the operand dtype
    a_ptr = _operand(ctx, g.a, el, g.compute if round_low else None, f"{label}: operand A", "a")
    if b_host is not None:
        arr = (round_to(b_host, g.compute) if round_low else b_host).astype(el.np, order="C")
        b_ptr = ctx.weight(arr, storage(el))
    else:
        b_ptr = _operand(ctx, g.b, el, g.compute if round_low else None, f"{label}: operand B", "b")

    # the epilogue's inputs. sm80: C is the bias row (ldc 0), the residual, or both summed by a map kernel.
    # sm90: a constant bias row is an fp32 vector of its own and C is the residual, in its own type.
    out_shape = ctx.shape(out)
    sD = M * N if batch > 1 else 0
    bias_row = constant_bias_row(ctx.graph, node)
    sm90 = plan.sm90
    c_ptr, ldc, sC, beta, bias_ptr, source = "nullptr", 0, 0, 0.0, "nullptr", None
    if (sm90 or plan.sm80_bias) and bias_row is not None:
        bias_ptr = ctx.weight(np.ascontiguousarray(np.float32(g.beta) * bias_row, dtype=np.float32), "float")
    bias_in_c = g.bias is not None and bias_ptr == "nullptr"
    res = g.residual
    if bias_in_c and res is None and bias_row is not None:
        c_ptr, ldc, sC, beta = ctx.weight(np.ascontiguousarray(bias_row).astype(out_dtype.np), storage(out_dtype)), 0, 0, g.beta
        source = out_dtype
    elif res is not None and not bias_in_c and tuple(ctx.shape(res)) == tuple(out_shape) and (
            ctx.dtype(res) == out_dtype or sm90 and ctx.dtype(res) in _SM90_TYPES and N * ctx.dtype(res).itemsize % 16 == 0):
        c_ptr, ldc, sC, beta, source = ctx.ptr(res), N, sD, 1.0, ctx.dtype(res)
    elif bias_in_c or res is not None:
        c_ptr = ctx.scratch(int(np.prod(out_shape, dtype=np.int64)) * out_dtype.itemsize, storage(out_dtype),
                            f"{label}: epilogue source")
        ops = []
        if bias_in_c:
            ops.append(Operand(ctx.ptr(g.bias), ctx.dtype(g.bias), broadcast_view(ctx.shape(g.bias), out_shape)))
        if res is not None:
            ops.append(Operand(ctx.ptr(res), ctx.dtype(res), broadcast_view(ctx.shape(res), out_shape)))
        beta_lit = c_float(g.beta)

        def pre(em, xs):
            parts = []
            if bias_in_c:
                parts.append(f"{beta_lit} * {xs[0]}")
            if res is not None:
                parts.append(xs[-1])
            return " + ".join(parts)
        what = " + ".join((["beta * bias"] if bias_in_c else []) + (["residual"] if res is not None else []))
        emit_map(ctx, out_ptr=c_ptr, out_dtype=out_dtype, out_shape=out_shape, operands=ops, body=pre,
                 comment=f"{label}: C = {what} for the GEMM epilogue", suffix="c")
        ldc, sC, beta, source = N, sD, 1.0, out_dtype

    post = g.act.kind not in _CUTLASS_ACT
    act = "none" if post else g.act.kind
    osz = out_dtype.itemsize
    if sm90:
        inst = GemmInstance(el, layout_a, layout_b, out_dtype, op_class, act, 8, 8, 16 // osz, "sm90", source)
    elif plan.sm80_bias:
        inst = GemmInstance(el, layout_a, layout_b, out_dtype, op_class, act, al_a, al_b, _align([N], osz), "sm80bias")
    else:
        al_c = 1 if op_class == "Simt" else _align([N, ldc or N], osz)
        inst = GemmInstance(el, layout_a, layout_b, out_dtype, op_class, act, al_a, al_b, al_c)
    kind = "CUTLASS 3 wgmma" if sm90 else f"{op_class}, fp32 bias row" if plan.sm80_bias else op_class
    ctx.fwd.comment(f"{label}: [{batch}] x ({M} x {K}) @ ({K} x {N}), {el.short} {kind}, act {g.act.kind}")

    _call_gemm(ctx, node, inst, (M, N, K, batch), (a_ptr, lda, sA or 0), (b_ptr, ldb, sB or 0), (c_ptr, ldc, sC),
               (ctx.ptr(out), N, sD), g.alpha, beta, bias_ptr)
    if post:
        emit_map(ctx, out_ptr=ctx.ptr(out), out_dtype=out_dtype, out_shape=out_shape,
                 operands=[Operand(ctx.ptr(out), out_dtype, View(0, contiguous_strides(out_shape)))],
                 body=lambda em, xs: act_expr(g.act, xs[0]), comment=f"{label}: {g.act.kind} after the GEMM",
                 suffix="act")


# ---- convolution -------------------------------------------------------------------------------------------
def conv_parts(node: Node):
    ins = list(node.inputs) + ["", ""]
    if node.op == "Conv":
        return node.attrs, ins[2] or None, None, Activation(), DType.float32
    a = node.attrs
    return a.conv, ins[2] or None, ins[3] or None, a.activation, a.compute


def _check_conv(graph: Graph, node: Node) -> str | None:
    t = graph.types[node.inputs[0]]
    if t.dtype not in (DType.float32, DType.float16, DType.bfloat16):
        return f"{node.op} on {t.dtype.short} is not supported on CUDA"
    if len(t.shape) not in (3, 4):
        return f"{node.op} with {len(t.shape) - 2} spatial dims is not supported on CUDA (1-D and 2-D only)"
    if node.inputs[1] not in graph.constants:
        return f"{node.op} needs constant weights on CUDA"
    conv, bias, _, _, _ = conv_parts(node)
    if bias is not None and bias not in graph.constants:
        return f"{node.op} needs a constant bias on CUDA"
    return None


def _geometry(ctx: LowerCtx, node: Node, conv):
    xs, ws, os_ = ctx.shape(node.inputs[0]), ctx.shape(node.inputs[1]), ctx.shape(node.outputs[0])
    two = len(xs) == 4
    H, W = (xs[2], xs[3]) if two else (1, xs[2])
    OH, OW = (os_[2], os_[3]) if two else (1, os_[2])
    KH, KW = (ws[2], ws[3]) if two else (1, ws[2])
    st = conv.strides or (1,) * (len(xs) - 2)
    di = conv.dilations or (1,) * (len(xs) - 2)
    pads = conv.pads or (0,) * (2 * (len(xs) - 2))
    sh, sw = (st[0], st[1]) if two else (1, st[0])
    dh, dw = (di[0], di[1]) if two else (1, di[0])
    ph, pw = (pads[0], pads[1]) if two else (0, pads[0])
    return dict(N=xs[0], C=xs[1], H=H, W=W, CO=os_[1], OH=OH, OW=OW, KH=KH, KW=KW, sh=sh, sw=sw, dh=dh, dw=dw,
                ph=ph, pw=pw)


@lowering("Conv", "FusedConv", check=_check_conv)
def lower_conv(ctx: LowerCtx, node: Node) -> None:
    conv, bias, residual, act, compute = conv_parts(node)
    if conv.group != 1:
        lower_direct_conv(ctx, node)
        return
    x, out = node.inputs[0], node.outputs[0]
    gm = _geometry(ctx, node, conv)
    Nb, C, CO, P = gm["N"], gm["C"], gm["CO"], gm["OH"] * gm["OW"]
    K = C * gm["KH"] * gm["KW"]
    el, op_class = operand_dtype(ctx.options, ctx.dtype(x), compute)
    n_bias = 0 if bias is None else (2 if el in LOW else 1)
    Kp = -(-(K + n_bias) // 8) * 8
    label = f"{node.op} '{node.name}'"

    # weights [CO, Kp]: the filter, then the bias column(s), then zeros
    w = ctx.const(node.inputs[1]).astype(np.float32).reshape(CO, K)
    wp = np.zeros((CO, Kp), np.float32)
    wp[:, :K] = round_to(w, el)
    if bias is not None:
        bvec = ctx.const(bias).astype(np.float32).reshape(-1)
        if el in LOW:
            hi = round_to(bvec, el)
            wp[:, K], wp[:, K + 1] = hi, round_to(bvec - hi, el)
        else:
            wp[:, K] = bvec
    w_ptr = ctx.weight(wp.astype(el.np), storage(el))

    # im2col (+ conversion to the operand dtype): col[n][p][k]
    col = ctx.scratch(Nb * P * Kp * el.itemsize, storage(el), f"{label}: im2col patches")
    n = Nb * P * Kp
    name = ctx.kernel_name("im2col")
    k = ctx.kernels
    dt = ctx.dtype(x)
    g = gm
    k.comment(f"{label}: im2col, col[n][p][k] for k < {K} (c, kh, kw), then {n_bias} ones column(s) for the "
              f"bias, zero up to {Kp}")
    with k.block(f"__global__ void __launch_bounds__(256) {name}(const {storage(dt)}* __restrict__ x, "
                 f"{storage(el)}* __restrict__ col)"):
        with k.block(f"for (long long t = blockIdx.x * 256LL + threadIdx.x; t < {n}LL; t += gridDim.x * 256LL)"):
            k.line(f"const int kk = int(t % {Kp});")
            k.line(f"const long long np_ = t / {Kp};")
            k.line(f"const int p = int(np_ % {P}); const long long nb = np_ / {P};")
            k.line("float v = 0.0f;")
            with k.block(f"if (kk < {K})"):
                k.line(f"const int c = kk / {g['KH'] * g['KW']}, r = kk % {g['KH'] * g['KW']};")
                k.line(f"const int h = (p / {g['OW']}) * {g['sh']} - {g['ph']} + (r / {g['KW']}) * {g['dh']};")
                k.line(f"const int w = (p % {g['OW']}) * {g['sw']} - {g['pw']} + (r % {g['KW']}) * {g['dw']};")
                src = "x[((nb * %d + c) * %d + h) * %d + w]" % (C, g["H"], g["W"])
                k.line(f"if (h >= 0 && h < {g['H']} && w >= 0 && w < {g['W']}) v = {load_expr(dt, src)};")
            if n_bias:
                k.line(f"else if (kk < {K + n_bias}) v = 1.0f;")
            k.line(f"col[t] = {store_expr(el, 'v')};")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // 256), 65535 * 8))), "256", [ctx.ptr(x), col])

    out_dtype = ctx.dtype(out)
    c_ptr, ldc, sC, beta = "nullptr", 0, 0, 0.0
    if residual is not None:
        if tuple(ctx.shape(residual)) == tuple(ctx.shape(out)) and ctx.dtype(residual) == out_dtype:
            c_ptr, ldc, sC, beta = ctx.ptr(residual), P, CO * P, 1.0
    post_residual = residual is not None and c_ptr == "nullptr"
    post = act.kind not in _CUTLASS_ACT or post_residual
    isz = el.itemsize
    al_ab = 1 if op_class == "Simt" else _align([Kp], isz)
    al_c = 1 if op_class == "Simt" else _align([P], out_dtype.itemsize)
    inst = GemmInstance(el, "RowMajor", "ColumnMajor", out_dtype, op_class, "none" if post else act.kind,
                        al_ab, al_ab, al_c)
    ctx.fwd.comment(f"{label}: [{Nb}] x ({CO} x {Kp}) @ ({Kp} x {P}) implicit by im2col, {el.short} {op_class}")
    _call_gemm(ctx, node, inst, (CO, P, Kp, Nb), (w_ptr, Kp, 0), (col, Kp, P * Kp), (c_ptr, ldc, sC),
               (ctx.ptr(out), P, CO * P), 1.0, beta)
    if post:
        shape = ctx.shape(out)
        ops = [Operand(ctx.ptr(out), out_dtype, View(0, contiguous_strides(shape)))]
        if post_residual:
            ops.append(Operand(ctx.ptr(residual), ctx.dtype(residual), broadcast_view(ctx.shape(residual), shape)))
        emit_map(ctx, out_ptr=ctx.ptr(out), out_dtype=out_dtype, out_shape=shape, operands=ops,
                 body=lambda em, xs: act_expr(act, f"({xs[0]} + {xs[1]})" if post_residual else xs[0]),
                 comment=f"{label}: epilogue after the GEMM", suffix="epilogue")


def lower_direct_conv(ctx: LowerCtx, node: Node, nhwc: bool = False) -> None:
    """One thread per output element, over NCHW tensors, or NHWC ones when ``nhwc`` (layout.py's grouped
    convolutions): then neighbouring threads are neighbouring output channels, which read neighbouring
    input channels and, with the filter stored [kh, kw, C/group, Co], neighbouring weights."""
    conv, bias, residual, act, compute = conv_parts(node)
    x, out = node.inputs[0], node.outputs[0]
    g = _geometry(ctx, node, conv)
    if nhwc:       # the shapes are [N, H, W, C]: read the geometry off their NCHW order
        xs, os_ = ctx.shape(x), ctx.shape(out)
        g.update(C=xs[3], H=xs[1], W=xs[2], CO=os_[3], OH=os_[1], OW=os_[2])
    G = conv.group
    cin_g, cout_g = g["C"] // G, g["CO"] // G
    w = ctx.const(node.inputs[1]).astype(np.float32)
    w = round_to(w, compute)
    if nhwc:
        w = w.transpose(2, 3, 1, 0)
    w_ptr = ctx.weight(np.ascontiguousarray(w.reshape(-1)), "float")
    b_ptr = ctx.weight(ctx.const(bias).astype(np.float32).reshape(-1), "float") if bias is not None else None
    dt, odt = ctx.dtype(x), ctx.dtype(out)
    n = g["N"] * g["CO"] * g["OH"] * g["OW"]
    rnd = (lambda e: f"accelc::to_f32(accelc::from_f32<{storage(compute)}>({e}))") if compute in LOW else (lambda e: e)
    name = ctx.kernel_name()
    k = ctx.kernels
    k.comment(f"{node.op} '{node.name}': direct convolution, group {G} ({cin_g} in / {cout_g} out channels per group)"
              + (", NHWC" if nhwc else ""))
    params = [f"const {storage(dt)}* __restrict__ x", "const float* __restrict__ w"]
    if b_ptr:
        params.append("const float* __restrict__ b")
    if residual:
        params.append(f"const {storage(ctx.dtype(residual))}* __restrict__ res")
    params.append(f"{storage(odt)}* __restrict__ out")
    with k.block(f"__global__ void __launch_bounds__(256) {name}({', '.join(params)})"):
        with k.block(f"for (long long t = blockIdx.x * 256LL + threadIdx.x; t < {n}LL; t += gridDim.x * 256LL)"):
            if nhwc:
                k.line(f"const int co = t % {g['CO']}, ow = (t / {g['CO']}) % {g['OW']}, "
                       f"oh = (t / {g['CO'] * g['OW']}) % {g['OH']};")
                k.line(f"const long long nb = t / ({g['OW']}LL * {g['OH']} * {g['CO']});")
                x_at = "x[((nb * %d + h) * %d + ww) * %d + c0 + ci]" % (g["H"], g["W"], g["C"])
                w_at = f"w[((i * {g['KW']} + j) * {cin_g} + ci) * {g['CO']} + co]"
            else:
                k.line(f"const int ow = t % {g['OW']}, oh = (t / {g['OW']}) % {g['OH']};")
                k.line(f"const int co = (t / ({g['OW']} * {g['OH']})) % {g['CO']}; "
                       f"const long long nb = t / ({g['OW']}LL * {g['OH']} * {g['CO']});")
                x_at = "x[((nb * %d + c0 + ci) * %d + h) * %d + ww]" % (g["C"], g["H"], g["W"])
                w_at = f"w[((co * {cin_g} + ci) * {g['KH']} + i) * {g['KW']} + j]"
            k.line(f"const int c0 = (co / {cout_g}) * {cin_g};")
            k.line("float acc = 0.0f;")
            with k.block(f"for (int ci = 0; ci < {cin_g}; ++ci)"):
                with k.block(f"for (int i = 0; i < {g['KH']}; ++i)"):
                    k.line(f"const int h = oh * {g['sh']} - {g['ph']} + i * {g['dh']};")
                    k.line(f"if (h < 0 || h >= {g['H']}) continue;")
                    with k.block(f"for (int j = 0; j < {g['KW']}; ++j)"):
                        k.line(f"const int ww = ow * {g['sw']} - {g['pw']} + j * {g['dw']};")
                        k.line(f"if (ww < 0 || ww >= {g['W']}) continue;")
                        k.line(f"acc += {rnd(load_expr(dt, x_at))} * {w_at};")
            if b_ptr:
                k.line("acc += b[co];")
            if residual:
                k.line(f"acc += {load_expr(ctx.dtype(residual), 'res[t]')};")
            k.line(f"out[t] = {store_expr(odt, act_expr(act, 'acc'))};")
    k.blank()
    args = [ctx.ptr(x), w_ptr] + ([b_ptr] if b_ptr else []) + ([ctx.ptr(residual)] if residual else []) + [ctx.ptr(out)]
    ctx.launch(name, str(max(1, min(-(-n // 256), 65535 * 8))), "256", args)
