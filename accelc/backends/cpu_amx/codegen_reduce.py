"""Lowering of axis-wise ops: reductions, ArgMax/ArgMin, CumSum, TopK, Softmax/LogSoftmax, the
normalizations and pooling. All call support kernels of runtime_src/accelc_ops.cpp with the input seen
as [outer, r, inner]; reductions over non-adjacent axes first move the reduced axes last (index_copy
into scratch), which keeps one reduction kernel for every axes set.
"""
from __future__ import annotations

import numpy as np

from ...ir import DType, Graph, Node
from .codegen_context import DT_CODE, FLOAT_DTYPES, LowerCtx, lowering, numel, static_shape
from .codegen_data import contiguous_strides, emit_index_copy_ptr
from .emitter import c_float

REDUCE_OPS = {"ReduceSum": "Sum", "ReduceMean": "Mean", "ReduceMax": "Max", "ReduceMin": "Min",
              "ReduceProd": "Prod", "ReduceL1": "L1", "ReduceL2": "L2", "ReduceSumSquare": "SumSquare",
              "ReduceLogSumExp": "LogSumExp"}
NUMERIC = (DType.float32, DType.float16, DType.bfloat16, DType.float64, DType.int8, DType.uint8, DType.int16,
           DType.int32, DType.int64)


def _axis_split(shape, axis: int):
    axis %= max(len(shape), 1)
    return numel(shape[:axis]), (shape[axis] if shape else 1), numel(shape[axis + 1:])


def _check_numeric(graph: Graph, node: Node) -> str | None:
    dt = graph.types[node.inputs[0]].dtype
    if dt not in NUMERIC:
        return f"{node.op} of {dt.short} values; the CPU backend reduces f32/f16/bf16/f64 and integers"
    return None


def _check_float(graph: Graph, node: Node) -> str | None:
    for v in [i for i in node.inputs if i] + list(node.outputs):
        dt = graph.types[v].dtype
        if dt not in FLOAT_DTYPES:
            return f"{node.op} on {dt.short} values; the CPU backend computes it for f32/f16/bf16"
    dts = {graph.types[v].dtype for v in [i for i in node.inputs if i]}
    if len(dts) > 1:
        return f"{node.op} with mixed input dtypes {sorted(d.short for d in dts)}"
    return None


@lowering(*REDUCE_OPS, check=_check_numeric)
def lower_reduce(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    rank = len(shape)
    axes = node.attrs.axes
    if axes is None:
        axes = tuple(range(rank))
    axes = sorted({a % rank for a in axes}) if rank else []
    red = ctx.dtype(x)
    if not axes:
        if REDUCE_OPS[node.op] in ("Sum", "Mean", "Max", "Min", "Prod"):
            ctx.em.line(f"std::memcpy({ctx.ptr(out)}, {ctx.ptr(x)}, {numel(shape) * red.itemsize});  // no axes")
            return
        axes = []          # L1/L2/SumSquare/LogSumExp of nothing still apply their formula: r = 1
    kept = [d for d in range(rank) if shape[d] != 1]
    flags = [d in axes for d in kept]
    src = ctx.ptr(x)
    # reduced axes adjacent (ignoring size-1 axes)?
    first = flags.index(True) if True in flags else len(flags)
    last = len(flags) - 1 - flags[::-1].index(True) if True in flags else -1
    adjacent = all(flags[first:last + 1])
    if adjacent:
        outer = numel(shape[d] for d in kept[:first])
        r = numel(shape[d] for d in kept[first:last + 1]) if last >= first else 1
        inner = numel(shape[d] for d in kept[last + 1:]) if last >= first else numel(shape)
    else:
        perm = [d for d in range(rank) if d not in axes] + list(axes)
        st = contiguous_strides(shape)
        tables = [np.arange(shape[p], dtype=np.int64) * st[p] for p in perm]
        tmp = ctx.scratch(numel(shape) * red.itemsize, ctx.ctype(x), "reduced axes moved last")
        emit_index_copy_ptr(ctx, src, tmp, ctx.ctype(x), red.itemsize, numel(shape), tables, None,
                            f"move reduced axes {tuple(axes)} last")
        src = tmp
        r = numel(shape[a] for a in axes)
        outer, inner = numel(shape) // max(r, 1), 1
    if numel(ctx.shape(out)) == 0:
        return
    ctx.em.line(f"reduce({DT_CODE[red]}, RedOp::{REDUCE_OPS[node.op]}, {outer}, {r}, {inner}, {src}, "
                f"{ctx.ptr(out)});")


@lowering("ArgMax", "ArgMin", check=_check_numeric)
def lower_arg_reduce(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    outer, r, inner = _axis_split(ctx.shape(x), node.attrs.axis)
    ctx.em.line(f"arg_reduce({DT_CODE[ctx.dtype(x)]}, {'true' if node.op == 'ArgMax' else 'false'}, "
                f"{'true' if node.attrs.select_last_index else 'false'}, {outer}, {r}, {inner}, {ctx.ptr(x)}, "
                f"{ctx.ptr(out)});")


@lowering("CumSum", check=_check_numeric)
def lower_cumsum(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    outer, r, inner = _axis_split(ctx.shape(x), node.attrs.axis)
    ctx.em.line(f"cumsum({DT_CODE[ctx.dtype(x)]}, {'true' if node.attrs.exclusive else 'false'}, "
                f"{'true' if node.attrs.reverse else 'false'}, {outer}, {r}, {inner}, {ctx.ptr(x)}, "
                f"{ctx.ptr(out)});")


def _check_topk(graph: Graph, node: Node) -> str | None:
    return _check_numeric(graph, node)


@lowering("TopK", check=_check_topk)
def lower_topk(ctx: LowerCtx, node: Node) -> None:
    x = node.inputs[0]
    values, indices = node.outputs[:2]
    outer, r, inner = _axis_split(ctx.shape(x), node.attrs.axis)
    k = node.attrs.k
    if k == 0 or outer * inner == 0:
        return
    slots = 64     # per-thread selection buffers; the kernel runs on at most this many threads
    scratch = ctx.scratch(r * 8 * slots, "int64_t", "TopK selection order per thread")
    ctx.em.line(f"topk({DT_CODE[ctx.dtype(x)]}, {'true' if node.attrs.largest else 'false'}, {outer}, {r}, "
                f"{inner}, {k}, {ctx.ptr(x)}, {ctx.ptr(values)}, {ctx.ptr(indices)}, {scratch}, {slots});")


# ---- normalization -------------------------------------------------------------------------------------
@lowering("Softmax", "LogSoftmax", check=_check_float)
def lower_softmax(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    outer, r, inner = _axis_split(ctx.shape(x), node.attrs.axis)
    if outer * r * inner == 0:
        return
    ctx.em.line(f"softmax({DT_CODE[ctx.dtype(x)]}, {'true' if node.op == 'LogSoftmax' else 'false'}, {outer}, "
                f"{r}, {inner}, {ctx.ptr(x)}, {ctx.ptr(out)});")


def _check_layer_norm(graph: Graph, node: Node) -> str | None:
    reason = _check_float(graph, node)
    if reason:
        return reason
    shape = static_shape(graph, node.inputs[0])
    axis = node.attrs.axis % len(shape)
    n = numel(shape[axis:])
    for v in node.inputs[1:3]:
        if v and numel(static_shape(graph, v)) != n:
            return (f"LayerNormalization {('scale', 'bias')[node.inputs.index(v) - 1]} of shape "
                    f"{static_shape(graph, v)} does not cover the normalized axes {shape[axis:]} (broadcasting "
                    f"scale/bias is not supported)")
    return None


@lowering("LayerNormalization", check=_check_layer_norm)
def lower_layer_norm(ctx: LowerCtx, node: Node) -> None:
    x, scale = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else ""
    shape = ctx.shape(x)
    axis = node.attrs.axis % len(shape)
    rows, n = numel(shape[:axis]), numel(shape[axis:])
    outs = list(node.outputs) + ["", ""]
    mean = ctx.ptr(outs[1]) if outs[1] else "nullptr"
    inv_std = ctx.ptr(outs[2]) if outs[2] else "nullptr"
    ctx.em.line(f"layer_norm({DT_CODE[ctx.dtype(x)]}, {rows}, {n}, {ctx.ptr(x)}, {ctx.ptr(scale)}, "
                f"{ctx.ptr(bias) if bias else 'nullptr'}, {c_float(node.attrs.epsilon)}, {ctx.ptr(outs[0])}, "
                f"{mean}, {inv_std});")


@lowering("BatchNormalization", check=_check_float)
def lower_batch_norm(ctx: LowerCtx, node: Node) -> None:
    x, scale, bias, mean, var = node.inputs[:5]
    shape = ctx.shape(x)
    n, c, inner = shape[0], (shape[1] if len(shape) > 1 else 1), numel(shape[2:])
    ctx.em.line(f"batch_norm({DT_CODE[ctx.dtype(x)]}, {n}, {c}, {inner}, {ctx.ptr(x)}, {ctx.ptr(scale)}, "
                f"{ctx.ptr(bias)}, {ctx.ptr(mean)}, {ctx.ptr(var)}, {c_float(node.attrs.epsilon)}, "
                f"{ctx.ptr(node.outputs[0])});")


@lowering("InstanceNormalization", check=_check_float)
def lower_instance_norm(ctx: LowerCtx, node: Node) -> None:
    x, scale, bias = node.inputs[:3]
    shape = ctx.shape(x)
    ctx.em.line(f"instance_norm({DT_CODE[ctx.dtype(x)]}, {shape[0]}, {shape[1]}, {numel(shape[2:])}, "
                f"{ctx.ptr(x)}, {ctx.ptr(scale)}, {ctx.ptr(bias)}, {c_float(node.attrs.epsilon)}, "
                f"{ctx.ptr(node.outputs[0])});")


@lowering("LRN", check=_check_float)
def lower_lrn(ctx: LowerCtx, node: Node) -> None:
    x = node.inputs[0]
    shape = ctx.shape(x)
    a = node.attrs
    ctx.em.line(f"lrn({DT_CODE[ctx.dtype(x)]}, {shape[0]}, {shape[1]}, {numel(shape[2:])}, {a.size}, "
                f"{c_float(a.alpha)}, {c_float(a.beta)}, {c_float(a.bias)}, {ctx.ptr(x)}, "
                f"{ctx.ptr(node.outputs[0])});")


# ---- pooling -------------------------------------------------------------------------------------------
def _check_pool(graph: Graph, node: Node) -> str | None:
    reason = _check_float(graph, node)
    if reason:
        return reason
    nd = len(static_shape(graph, node.inputs[0])) - 2
    if nd not in (1, 2, 3) and node.op not in ("GlobalAveragePool", "GlobalMaxPool"):
        return f"{node.op} with {nd} spatial axes"
    return None


def _emit_pool(ctx: LowerCtx, x: str, out: str, kernel, strides, pb, pe, dil, is_max: bool,
               count_include_pad: bool) -> None:
    in_shape, out_shape = ctx.shape(x), ctx.shape(out)
    nd = len(in_shape) - 2
    lead = 3 - nd

    def pad3(vals, fill):
        return [fill] * lead + [int(v) for v in vals]

    fields = {
        "in": pad3(in_shape[2:], 1), "out": pad3(out_shape[2:], 1), "kernel": pad3(kernel, 1),
        "stride": pad3(strides, 1), "pad_begin": pad3(pb, 0), "pad_end": pad3(pe, 0), "dilation": pad3(dil, 1),
    }
    em = ctx.em
    em.line("PoolShape s;")
    em.line(f"s.n = {in_shape[0]}; s.c = {in_shape[1]};")
    for name, vals in fields.items():
        em.line(" ".join(f"s.{name}[{k}] = {v};" for k, v in enumerate(vals)))
    if numel(out_shape) == 0:
        return
    if is_max:
        em.line(f"max_pool({DT_CODE[ctx.dtype(x)]}, s, {ctx.ptr(x)}, {ctx.ptr(out)});")
    else:
        em.line(f"avg_pool({DT_CODE[ctx.dtype(x)]}, s, {'true' if count_include_pad else 'false'}, {ctx.ptr(x)}, "
                f"{ctx.ptr(out)});")


@lowering("MaxPool", "AveragePool", check=_check_pool)
def lower_pool(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    nd = len(ctx.shape(x)) - 2
    g = node.attrs.geometry(nd)
    _emit_pool(ctx, x, out, g.kernel, g.strides, g.pads_begin, g.pads_end, g.dilations, node.op == "MaxPool",
               node.attrs.count_include_pad)


@lowering("GlobalAveragePool", "GlobalMaxPool", check=_check_float)
def lower_global_pool(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    op = "Mean" if node.op == "GlobalAveragePool" else "Max"
    ctx.em.line(f"reduce({DT_CODE[ctx.dtype(x)]}, RedOp::{op}, {numel(shape[:2])}, {numel(shape[2:])}, 1, "
                f"{ctx.ptr(x)}, {ctx.ptr(out)});")
