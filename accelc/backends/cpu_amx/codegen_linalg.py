"""Lowering of GEMM-shaped ops (MatMul, Gemm, FusedGemm) and convolutions (Conv, FusedConv) onto the
kernel library (kernels/accelc_gemm.h).

GEMM: ``C = act(alpha * op(A) @ op(B) + beta * bias + residual)`` with NumPy matmul batch broadcasting.
A constant B is packed at compile time into weights.bin (packing.py, the layout every variant reads); a
computed B is packed at run time into scratch. When B has no batch and A is dense, the batch folds into
M (one large GEMM); otherwise a loop of GEMMs runs over precomputed batch offsets. Operands the kernels do
not take directly (transposed A, f16/bf16 tensors under f32 compute, broadcast bias/residual) are
prepared into scratch first, so every call sees dense fp32 (or bf16 bits) rows.

Conv: 2-D and 1-D (as H = 1) NCHW convolutions with groups/dilations/pads via conv2d_*; the bias is the
per-output-channel epilogue row vector.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import DType, Graph, Node
from ...ir.ops.fused import Activation
from ...ir.ops.shape_inference import broadcast_shapes
from . import packing
from .codegen_context import FLOAT_DTYPES, LowerCtx, lowering, numel, static_shape
from .codegen_data import contiguous_strides, emit_index_copy_ptr
from .codegen_elementwise import convert_expr, emit_loop
from .emitter import c_float
from .tuning import Site

ACT = {"none": "Act::None", "relu": "Act::Relu", "leaky_relu": "Act::LeakyRelu", "gelu": "Act::Gelu",
       "gelu_tanh": "Act::GeluTanh", "sigmoid": "Act::Sigmoid", "tanh": "Act::Tanh", "silu": "Act::Silu",
       "clip": "Act::Clip"}


# ---- operand preparation ---------------------------------------------------------------------------------
def f32_operand(ctx: LowerCtx, value: str, logical_shape, target_shape, label: str) -> str:
    """A ``const float*`` to ``value`` (viewed as logical_shape) broadcast to target_shape, dense fp32.
    Constants are prepared at compile time; a run-time value is used in place when it already is dense
    fp32 of the target shape, else converted/expanded into scratch by a generated loop."""
    target_shape = tuple(target_shape)
    if ctx.is_const(value):
        arr = ctx.const(value).astype(np.float32).reshape(logical_shape)
        return ctx.weight(np.ascontiguousarray(np.broadcast_to(arr, target_shape)), "float")
    if ctx.dtype(value) == DType.float32 and numel(logical_shape) == numel(target_shape):
        return ctx.ptr(value)
    tmp = ctx.scratch(numel(target_shape) * 4, "float", label)
    src_dtype = ctx.dtype(value)
    ctx.em.comment(f"{label}: {value} as dense fp32 {list(target_shape)}")
    with ctx.em.block(""):
        emit_loop(ctx.em, tmp, DType.float32, target_shape, [(ctx.ptr(value), src_dtype, tuple(logical_shape))],
                  lambda em, regs: convert_expr(regs[0], src_dtype, DType.float32))
    return tmp


def bf16_operand(ctx: LowerCtx, value: str, label: str) -> str:
    """A ``const uint16_t*`` to ``value`` rounded to bf16 (dense)."""
    if ctx.dtype(value) == DType.bfloat16:
        return ctx.ptr(value)
    if ctx.is_const(value):
        return ctx.weight(packing.round_to_bf16(ctx.const(value).astype(np.float32)), "uint16_t")
    shape = ctx.shape(value)
    tmp = ctx.scratch(numel(shape) * 2, "uint16_t", label)
    src_dtype = ctx.dtype(value)
    with ctx.em.block(""):
        emit_loop(ctx.em, tmp, DType.bfloat16, shape, [(ctx.ptr(value), src_dtype, shape)],
                  lambda em, regs: convert_expr(regs[0], src_dtype, DType.float32))
    return tmp


def emit_epilogue(ctx: LowerCtx, alpha: float, beta: float, act: Activation, bias: str | None, bias_mode: int,
                  residual: str | None, ldr: int) -> None:
    em = ctx.em
    em.line("Epilogue ep;")
    em.line(f"ep.alpha = {c_float(alpha)}; ep.beta = {c_float(beta)};")
    if bias is not None:
        em.line(f"ep.bias = {bias}; ep.bias_mode = {bias_mode};")
    if residual is not None:
        em.line(f"ep.residual = {residual}; ep.ldr = {ldr};")
    if act.kind != "none":
        em.line(f"ep.act = {ACT[act.kind]}; ep.act_alpha = {c_float(act.alpha)}; ep.act_beta = {c_float(act.beta)};")


def store_result(ctx: LowerCtx, out: str) -> str:
    """Where the kernel writes fp32 results: the output itself, or scratch converted afterwards."""
    if ctx.dtype(out) == DType.float32:
        return ctx.ptr(out)
    return ctx.scratch(numel(ctx.shape(out)) * 4, "float", f"fp32 result before rounding to {ctx.dtype(out).short}")


def finish_result(ctx: LowerCtx, out: str, c_ptr: str) -> None:
    if c_ptr == ctx.ptr(out):
        return
    shape = ctx.shape(out)
    ctx.em.comment(f"round the fp32 result to {ctx.dtype(out).short}")
    with ctx.em.block(""):
        emit_loop(ctx.em, ctx.ptr(out), ctx.dtype(out), shape, [(c_ptr, DType.float32, shape)],
                  lambda em, regs: regs[0])


# ---- GEMM ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GemmSpec:
    a: str
    b: str
    bias: str
    residual: str
    trans_a: bool
    trans_b: bool
    alpha: float
    beta: float
    act: Activation
    compute: DType


def gemm_spec(node: Node) -> GemmSpec:
    ins = list(node.inputs) + ["", ""]
    if node.op == "MatMul":
        return GemmSpec(ins[0], ins[1], "", "", False, False, 1.0, 1.0, Activation(), DType.float32)
    a = node.attrs
    if node.op == "Gemm":
        return GemmSpec(ins[0], ins[1], ins[2], "", a.trans_a, a.trans_b, a.alpha, a.beta, Activation(),
                        DType.float32)
    return GemmSpec(ins[0], ins[1], ins[2], ins[3], a.trans_a, a.trans_b, a.alpha, a.beta, a.activation, a.compute)


def check_gemm(graph: Graph, node: Node) -> str | None:
    spec = gemm_spec(node)
    for v in (spec.a, spec.b, spec.bias, spec.residual, node.outputs[0]):
        if v and graph.types[v].dtype not in FLOAT_DTYPES:
            return (f"{node.op} on {graph.types[v].dtype.short} values; the CPU backend multiplies f32/f16/bf16 "
                    f"(quantize with the int8 pipeline instead)")
    for v in (spec.a, spec.b, spec.bias, spec.residual):
        if v:
            static_shape(graph, v)
    if len(static_shape(graph, spec.a)) > 8 or len(static_shape(graph, spec.b)) > 8:
        return f"{node.op} with more than 6 batch axes"
    return None


def _logical(shape, trans: bool, is_a: bool):
    """(batch, rows, cols) of an operand after 1-D promotion and transposition."""
    shape = tuple(shape)
    if len(shape) == 1:
        shape = (1, shape[0]) if is_a else (shape[0], 1)
    batch, r, c = shape[:-2], shape[-2], shape[-1]
    return (batch, c, r) if trans else (batch, r, c)


def _batch_offsets(out_batch, op_batch, matrix_elems: int) -> list[int]:
    """Per output batch index, the element offset of the operand's matrix (broadcast batch axes -> 0)."""
    padded = (1,) * (len(out_batch) - len(op_batch)) + tuple(op_batch)
    strides, acc = [0] * len(padded), matrix_elems
    for d in range(len(padded) - 1, -1, -1):
        strides[d] = 0 if padded[d] == 1 else acc
        acc *= padded[d]
    offs = []
    for idx in np.ndindex(*out_batch) if out_batch else [()]:
        offs.append(sum(i * s for i, s in zip(idx, strides)))
    return offs


@lowering("MatMul", "Gemm", "FusedGemm", check=check_gemm)
def lower_gemm(ctx: LowerCtx, node: Node) -> None:
    s = gemm_spec(node)
    out = node.outputs[0]
    a_shape, b_shape, out_shape = ctx.shape(s.a), ctx.shape(s.b), ctx.shape(out)
    a_batch, M, K = _logical(a_shape, s.trans_a, True)
    b_batch, K2, N = _logical(b_shape, s.trans_b, False)
    out_batch = tuple(int(d) for d in broadcast_shapes(a_batch, b_batch))
    L = out_batch + (M, N)
    nb = numel(out_batch)
    em = ctx.em
    em.comment(f"GEMM: batch {list(out_batch)}, M={M} N={N} K={K}, compute {s.compute.short}")
    if numel(L) == 0:
        return
    use_bf16 = s.compute == DType.bfloat16
    ctx.uses_gemm = True

    # A: dense rows [a_batch, M, K]
    a_dtype = ctx.dtype(s.a)
    if s.trans_a:
        full = tuple(a_batch) + (K, M)
        st = contiguous_strides(full)
        perm = list(range(len(a_batch))) + [len(full) - 1, len(full) - 2]
        tables = [np.arange(full[p], dtype=np.int64) * st[p] for p in perm]
        a_t = ctx.scratch(numel(full) * a_dtype.itemsize, ctx.ctype(s.a), "A transposed")
        emit_index_copy_ptr(ctx, ctx.ptr(s.a), a_t, ctx.ctype(s.a), a_dtype.itemsize, numel(full), tables, None,
                            "transpose A")
        a_expr = a_t
    else:
        a_expr = ctx.ptr(s.a)
    a_rows = tuple(a_batch) + (M, K)
    if use_bf16 and a_dtype == DType.bfloat16:
        a_kind = "a16"
    elif a_dtype == DType.float32:
        a_kind = "f32"
    else:
        tmp = ctx.scratch(numel(a_rows) * 4, "float", "A as fp32")
        with em.block(""):
            emit_loop(em, tmp, DType.float32, a_rows, [(a_expr, a_dtype, a_rows)],
                      lambda e, regs: convert_expr(regs[0], a_dtype, DType.float32))
        a_expr, a_kind = tmp, "f32"

    # B: packed per batch matrix
    nb_b = numel(b_batch)
    if use_bf16:
        stride, elem, pack_fn, ctype = packing.packed_b_elems_bf16(K, N), 2, "pack_b_bf16", "uint16_t"
    else:
        stride, elem, pack_fn, ctype = packing.packed_b_elems_f32(K, N), 4, "pack_b_f32", "float"
    b_mats_shape = (nb_b,) + ((N, K) if s.trans_b else (K, N))
    if ctx.is_const(s.b):
        mats = ctx.const(s.b).astype(np.float32).reshape(b_mats_shape)
        packer = packing.pack_b_bf16 if use_bf16 else packing.pack_b_f32
        packed = np.concatenate([packer(m, trans=s.trans_b) for m in mats]) if nb_b else np.zeros(0)
        em.line(f"const {ctype}* b_packed = {ctx.weight(packed, ctype)};  // {s.b} packed at compile time "
                f"({nb_b} x {stride} {ctype})")
        bp = "b_packed"
    else:
        b_f32 = f32_operand(ctx, s.b, b_shape, b_shape, "B as fp32")
        em.line(f"{ctype}* b_packed = {ctx.scratch(nb_b * stride * elem, ctype, 'B packed at run time')};")
        bp = "b_packed"
        ldb = K if s.trans_b else N
        em.comment(f"pack {s.b} at run time ({nb_b} matrices)")
        with em.block(f"for (int64_t i = 0; i < {nb_b}; ++i)"):
            em.line(f"{pack_fn}({K}, {N}, {b_f32} + i * {K * N}, {ldb}, {'true' if s.trans_b else 'false'}, "
                    f"b_packed + i * {stride});")

    # bias -> epilogue (mode 1 per column, 2 per row, 3 full per batch)
    bias_expr, bias_mode, bias_batched = None, 0, False
    if s.bias:
        bl = _bias_logical_shape(ctx.shape(s.bias), out_shape, a_shape, b_shape, L)
        bb, bm, bn = bl[:-2], bl[-2], bl[-1]
        if numel(bb) == 1 and bm == 1:
            bias_expr, bias_mode = f32_operand(ctx, s.bias, (bn,), (N,), "bias row"), 1
        elif numel(bb) == 1 and bn == 1:
            bias_expr, bias_mode = f32_operand(ctx, s.bias, (bm,), (M,), "bias column"), 2
        elif numel(bb) == 1:
            bias_expr, bias_mode = f32_operand(ctx, s.bias, (M, N), (M, N), "bias matrix"), 3
        else:
            bias_expr, bias_mode, bias_batched = f32_operand(ctx, s.bias, bl, L, "bias per batch"), 3, True
    res_expr = None
    if s.residual:
        rl = _bias_logical_shape(ctx.shape(s.residual), out_shape, a_shape, b_shape, L)
        res_expr = f32_operand(ctx, s.residual, rl, L, "residual")

    if res_expr is not None and res_expr == ctx.ptr(s.residual) and ctx.dtype(out) == DType.float32:
        ctx.write_over(out, s.residual)   # the residual has C's layout: each element read, then written
    c_expr = store_result(ctx, out)
    emit_epilogue(ctx, s.alpha, s.beta, s.act, bias_expr, bias_mode, res_expr, N)
    gemm_fn = {"f32": "gemm_bf16" if use_bf16 else "gemm_f32", "a16": "gemm_bf16_a16"}[a_kind]
    a_offs = _batch_offsets(out_batch, a_batch, M * K)
    b_offs = [o // (K * N) for o in _batch_offsets(out_batch, b_batch, K * N)]
    a_dense = a_offs == [t * M * K for t in range(nb)]
    if nb_b == 1 and a_dense and not bias_batched and bias_mode in (0, 1):
        em.comment(f"batch folded into M: one GEMM of {nb * M} rows")
        site = Site("gemm", (nb * M, N, K), act=s.act.kind, residual=res_expr is not None)
        blk = f", {ctx.blocking(site)}" if gemm_fn == "gemm_f32" and K > 0 else ""
        em.line(f"{gemm_fn}({nb * M}, {N}, {K}, {a_expr}, {K}, {bp}, {c_expr}, {N}, ep{blk});")
    else:
        em.line(f"static const int64_t a_off[] = {{{', '.join(map(str, a_offs))}}};")
        em.line(f"static const int64_t b_mat[] = {{{', '.join(map(str, b_offs))}}};")
        if nb >= 4 and M * N * K <= (1 << 18):
            em.comment("many small GEMMs: parallel over the batch (each GEMM runs on one thread)")
            em.line("#pragma omp parallel for schedule(dynamic)")
        with em.block(f"for (int64_t t = 0; t < {nb}; ++t)"):
            em.line("Epilogue e = ep;")
            if bias_batched:
                em.line(f"e.bias = {bias_expr} + t * {M * N};")
            if res_expr is not None:
                em.line(f"e.residual = {res_expr} + t * {M * N};")
            em.line(f"{gemm_fn}({M}, {N}, {K}, {a_expr} + a_off[t], {K}, {bp} + b_mat[t] * {stride}, "
                    f"{c_expr} + t * {M * N}, {N}, e);")
    finish_result(ctx, out, c_expr)


def _bias_logical_shape(bias_shape, out_shape, a_shape, b_shape, L):
    """The bias/residual shape aligned with the logical output [batch..., M, N] (1-D MatMul operands
    drop M or N from the real output; put those axes back as size 1)."""
    padded = (1,) * (len(out_shape) - len(bias_shape)) + tuple(bias_shape)
    if len(a_shape) == 1 and len(b_shape) == 1:
        logical = (1, 1)
    elif len(b_shape) == 1:
        logical = padded + (1,)
    elif len(a_shape) == 1:
        logical = padded[:-1] + (1,) + padded[-1:]
    else:
        logical = padded
    return (1,) * (len(L) - len(logical)) + tuple(logical)


# ---- convolution -----------------------------------------------------------------------------------------
def conv_parts(node: Node):
    """(conv attrs, activation, compute, x, w, bias, residual)."""
    ins = list(node.inputs) + ["", ""]
    if node.op == "Conv":
        return node.attrs, Activation(), DType.float32, ins[0], ins[1], ins[2], ""
    a = node.attrs
    return a.conv, a.activation, a.compute, ins[0], ins[1], ins[2], ins[3]


def check_conv(graph: Graph, node: Node) -> str | None:
    attrs, _, _, x, w, bias, res = conv_parts(node)
    nd = len(static_shape(graph, x)) - 2
    if nd not in (1, 2):
        return f"{node.op} with {nd} spatial axes: the CPU backend lowers 1-D and 2-D convolutions"
    for v in (x, w, bias, res, node.outputs[0]):
        if v and graph.types[v].dtype not in FLOAT_DTYPES:
            return f"{node.op} on {graph.types[v].dtype.short} values; the CPU backend convolves f32/f16/bf16"
    return None


@lowering("Conv", "FusedConv", check=check_conv)
def lower_conv(ctx: LowerCtx, node: Node) -> None:
    attrs, act, compute, x, w, bias, res = conv_parts(node)
    out = node.outputs[0]
    xs, ws, ys = ctx.shape(x), ctx.shape(w), ctx.shape(out)
    nd = len(xs) - 2
    g = attrs.geometry(nd, tuple(ws[2:]))
    if nd == 1:
        H, W, R, S, OH, OW = 1, xs[2], 1, ws[2], 1, ys[2]
        sh, sw, pt, pl, dh, dw = 1, g.strides[0], 0, g.pads_begin[0], 1, g.dilations[0]
    else:
        H, W, R, S, OH, OW = xs[2], xs[3], ws[2], ws[3], ys[2], ys[3]
        sh, sw = g.strides
        pt, pl = g.pads_begin
        dh, dw = g.dilations
    N, C, Kout = xs[0], xs[1], ws[0]
    if numel(ys) == 0:
        return
    ctx.uses_gemm = True
    use_bf16 = compute == DType.bfloat16
    em = ctx.em
    x_expr = f32_operand(ctx, x, xs, xs, "conv input as fp32")
    if use_bf16:
        w_expr = bf16_operand(ctx, w, "weights rounded to bf16")
    else:
        w_expr = f32_operand(ctx, w, ws, ws, "weights as fp32")
    bias_expr = f32_operand(ctx, bias, (Kout,), (Kout,), "bias") if bias else None
    res_expr = f32_operand(ctx, res, ctx.shape(res), ys, "residual") if res else None
    kg, pixels = C // attrs.group * R * S, OH * OW
    if use_bf16:
        scratch_elems, sctype, esz = packing.packed_b_elems_bf16(kg, pixels), "uint16_t", 2
    else:
        scratch_elems, sctype, esz = packing.packed_b_elems_f32(kg, pixels), "float", 4
    scratch = ctx.scratch(scratch_elems * esz, sctype, "im2col in packed-B layout")
    c_expr = store_result(ctx, out)
    em.line(f"const Conv2dShape s{{{N}, {C}, {H}, {W}, {Kout}, {R}, {S}, {OH}, {OW}, {sh}, {sw}, {pt}, {pl}, "
            f"{dh}, {dw}, {attrs.group}}};")
    em.line(f"if (conv2d_scratch_elems(s, {'true' if use_bf16 else 'false'}) > {scratch_elems}) "
            f"return fail(4, \"internal: conv scratch plan is smaller than the kernel needs\");")
    emit_epilogue(ctx, 1.0, 1.0, act, bias_expr, 2 if bias_expr else 0, res_expr, OH * OW)
    fn = "conv2d_bf16" if use_bf16 else "conv2d_f32"
    em.line(f"{fn}(s, {x_expr}, {w_expr}, {c_expr}, ep, {scratch});")
    finish_result(ctx, out, c_expr)


# ---- transposed convolution ------------------------------------------------------------------------------
def check_conv_transpose(graph: Graph, node: Node) -> str | None:
    for v in [i for i in node.inputs if i] + list(node.outputs):
        if graph.types[v].dtype not in FLOAT_DTYPES:
            return f"ConvTranspose on {graph.types[v].dtype.short} values; the CPU backend computes f32/f16/bf16"
    if len(static_shape(graph, node.inputs[0])) - 2 not in (1, 2, 3):
        return "ConvTranspose needs 1 to 3 spatial axes"
    return None


@lowering("ConvTranspose", check=check_conv_transpose)
def lower_conv_transpose(ctx: LowerCtx, node: Node) -> None:
    x, w = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    out = node.outputs[0]
    xs, ws, ys = ctx.shape(x), ctx.shape(w), ctx.shape(out)
    nd = len(xs) - 2
    g = node.attrs.geometry(nd, tuple(ws[2:]))
    lead = 3 - nd

    def pad3(vals, fill):
        return [fill] * lead + [int(v) for v in vals]

    if numel(ys) == 0:
        return
    x_expr = f32_operand(ctx, x, xs, xs, "input as fp32")
    w_expr = f32_operand(ctx, w, ws, ws, "weights as fp32")
    b_expr = f32_operand(ctx, bias, (ys[1],), (ys[1],), "bias") if bias else "nullptr"
    c_expr = store_result(ctx, out)
    em = ctx.em
    em.line("ConvTransposeShape s;")
    em.line(f"s.n = {xs[0]}; s.c = {xs[1]}; s.m = {ys[1]}; s.groups = {node.attrs.group};")
    for name, vals in (("in", pad3(xs[2:], 1)), ("out", pad3(ys[2:], 1)), ("kernel", pad3(g.kernel, 1)),
                       ("stride", pad3(g.strides, 1)), ("pad_begin", pad3(g.pads_begin, 0)),
                       ("dilation", pad3(g.dilations, 1))):
        em.line(" ".join(f"s.{name}[{k}] = {v};" for k, v in enumerate(vals)))
    em.line(f"conv_transpose_f32(s, {x_expr}, {w_expr}, {b_expr}, {c_expr});")
    finish_result(ctx, out, c_expr)
