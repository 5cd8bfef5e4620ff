"""Normalization: Softmax/LogSoftmax (both meanings), LayerNormalization, BatchNormalization,
InstanceNormalization, LRN.

Before opset 13, Softmax normalises over *all* axes from ``axis`` on at once (the input is coerced to
2-D ``[prod(:axis), prod(axis:)]``), not over one axis. The IR Softmax has the opset-13 meaning, so the
old form is translated as Flatten -> Softmax(-1) -> Reshape back, which is exactly the old definition.
"""
from __future__ import annotations

import numpy as np
import onnx

from ...ir.ops.normalization import BatchNormAttrs, InstanceNormAttrs, LayerNormAttrs, LRNAttrs, SoftmaxAttrs
from ...ir.ops.shape import FlattenAttrs, ReshapeAttrs, ShapeAttrs
from .registry import ConvertContext, get_attr, onnx_op


def _register_softmax(op_type: str) -> None:
    @onnx_op(op_type, since=1)
    def coerced_2d(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        x = node.input[0]
        rank = ctx.input_type(x).rank
        axis = int(ctx.attr(node, "axis", 1))
        if not -rank <= axis < max(rank, 1):
            raise ctx.fail(f"axis {axis} is out of range for an input of rank {rank}")
        axis = axis % rank if rank else 0
        if axis == rank - 1:
            # coercing to [prod(:axis), last] and normalising its rows is the one-axis softmax
            return ctx.emit(op_type, [x], SoftmaxAttrs(-1))
        flat = ctx.emit1("Flatten", [x], FlattenAttrs(axis))
        y = ctx.emit1(op_type, [flat], SoftmaxAttrs(-1))
        shape_type = ctx.input_type(x)
        if shape_type.is_static:
            shape = ctx.const(np.array(shape_type.shape, dtype=np.int64), base="shape")
        else:
            shape = ctx.emit1("Shape", [x], ShapeAttrs())
        return ctx.emit("Reshape", [y, shape], ReshapeAttrs())

    @onnx_op(op_type, since=13)
    def one_axis(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        return ctx.emit(op_type, [node.input[0]], SoftmaxAttrs(int(ctx.attr(node, "axis", -1))))


_register_softmax("Softmax")
_register_softmax("LogSoftmax")


def _check_layer_norm(node: onnx.NodeProto, opset: int) -> str | None:
    if any(node.output[1:]):
        return "its Mean/InvStdDev outputs are used; only the normalized output is supported (training outputs)"
    return None


@onnx_op("LayerNormalization", since=17, check=_check_layer_norm)
def layer_norm(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    """``stash_type`` picks the precision of the statistics; the IR always computes them in float32 or
    wider, which is what stash_type=1 (the default) asks for."""
    if int(ctx.attr(node, "stash_type", 1)) != 1 and ctx.input_type(node.input[0]).dtype.is_float:
        raise ctx.fail(f"stash_type={ctx.attr(node, 'stash_type')} (statistics in the input precision) is not "
                       f"supported; accelc computes them in float32 (stash_type=1)")
    inputs = [i for i in node.input]
    while inputs and not inputs[-1]:
        inputs.pop()
    attrs = LayerNormAttrs(int(ctx.attr(node, "axis", -1)), float(ctx.attr(node, "epsilon", 1e-5)))
    return ctx.emit("LayerNormalization", inputs, attrs)


def _check_batch_norm(node: onnx.NodeProto, opset: int) -> str | None:
    if int(get_attr(node, "training_mode", 0)) != 0:
        return "training_mode=1 is not supported; export the model in eval mode"
    if int(get_attr(node, "spatial", 1)) != 1:
        return "spatial=0 (per-activation statistics) is not supported"
    if any(node.output[1:]):
        return "its running mean/var or saved statistics outputs are used (training); export in eval mode"
    return None


@onnx_op("BatchNormalization", since=6, check=_check_batch_norm)
def batch_norm(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("BatchNormalization", list(node.input[:5]),
                    BatchNormAttrs(float(ctx.attr(node, "epsilon", 1e-5))))


@onnx_op("InstanceNormalization", since=6)
def instance_norm(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("InstanceNormalization", list(node.input[:3]),
                    InstanceNormAttrs(float(ctx.attr(node, "epsilon", 1e-5))))


@onnx_op("LRN", since=1)
def lrn(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    attrs = LRNAttrs(int(ctx.attr(node, "size")), float(ctx.attr(node, "alpha", 1e-4)),
                     float(ctx.attr(node, "beta", 0.75)), float(ctx.attr(node, "bias", 1.0)))
    return ctx.emit("LRN", [node.input[0]], attrs)
