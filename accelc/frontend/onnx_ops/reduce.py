"""Reductions: ReduceX (axes as an attribute, or as an input from opset 13 for ReduceSum and 18 for the
rest), ReduceLogSum, ArgMax/ArgMin, CumSum.

The IR takes axes as an attribute, so the input form requires a constant. ``axes=None`` in the IR is
"every axis" and ``axes=()`` is "no axis" (ONNX ``noop_with_empty_axes=1`` with empty axes).
"""
from __future__ import annotations

import onnx

from ...ir.ops.reduce import ArgReduceAttrs, CumSumAttrs, ReduceAttrs
from .registry import ConvertContext, onnx_op

_REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceSumSquare", "ReduceLogSumExp")
# the opset from which ONNX passes axes as an input
_AXES_INPUT_SINCE = {op: 18 for op in _REDUCE_OPS} | {"ReduceSum": 13, "ReduceLogSum": 18}


def _attrs_from_attribute(ctx: ConvertContext, node: onnx.NodeProto) -> ReduceAttrs:
    axes = ctx.attr(node, "axes", None)
    keepdims = bool(ctx.attr(node, "keepdims", 1))
    return ReduceAttrs(tuple(int(a) for a in axes) if axes else None, keepdims)


def _attrs_from_input(ctx: ConvertContext, node: onnx.NodeProto) -> ReduceAttrs:
    keepdims = bool(ctx.attr(node, "keepdims", 1))
    noop = bool(ctx.attr(node, "noop_with_empty_axes", 0))
    name = ctx.input(node, 1)
    axes = ctx.const_ints(name, "input 'axes'") if name else ()
    if not axes:
        return ReduceAttrs(() if noop else None, keepdims)
    return ReduceAttrs(axes, keepdims)


def _register_reduce(op_type: str, ir_op: str | None) -> None:
    """``ir_op`` None: ReduceLogSum, which the IR spells as Log(ReduceSum)."""
    def translate(ctx: ConvertContext, node: onnx.NodeProto, attrs: ReduceAttrs) -> list[str]:
        x = node.input[0]
        if ir_op is not None:
            return ctx.emit(ir_op, [x], attrs)
        return ctx.emit("Log", [ctx.emit1("ReduceSum", [x], attrs)])

    @onnx_op(op_type, since=1)
    def with_attribute(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        return translate(ctx, node, _attrs_from_attribute(ctx, node))

    @onnx_op(op_type, since=_AXES_INPUT_SINCE[op_type])
    def with_input(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        return translate(ctx, node, _attrs_from_input(ctx, node))


for _op in _REDUCE_OPS:
    _register_reduce(_op, _op)
_register_reduce("ReduceLogSum", None)


def _register_arg(op_type: str) -> None:
    @onnx_op(op_type, since=1)
    def handler(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        attrs = ArgReduceAttrs(int(ctx.attr(node, "axis", 0)), bool(ctx.attr(node, "keepdims", 1)),
                               bool(ctx.attr(node, "select_last_index", 0)))
        return ctx.emit(op_type, [node.input[0]], attrs)


_register_arg("ArgMax")
_register_arg("ArgMin")


@onnx_op("CumSum", since=11)
def cumsum(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    axis = ctx.const_ints(node.input[1], "input 'axis'")
    if len(axis) != 1:
        raise ctx.fail(f"input 'axis' must be a scalar, got {len(axis)} values")
    attrs = CumSumAttrs(axis[0], bool(ctx.attr(node, "exclusive", 0)), bool(ctx.attr(node, "reverse", 0)))
    return ctx.emit("CumSum", [node.input[0]], attrs)
