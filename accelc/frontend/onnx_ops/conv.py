"""Convolution and pooling: Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

``auto_pad`` is resolved here to explicit pads, because the IR (and every backend) only knows explicit
pads. SAME_* padding depends on the input's spatial size, so it needs those dims to be static.
"""
from __future__ import annotations

import onnx

from ...errors import ShapeError
from ...ir.ops.conv import ConvAttrs, ConvTransposeAttrs, PoolAttrs
from .registry import ConvertContext, describe, get_attr, onnx_op

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _check_auto_pad(node: onnx.NodeProto, opset: int) -> str | None:
    mode = get_attr(node, "auto_pad", "NOTSET")
    if mode not in _AUTO_PADS:
        return f"auto_pad='{mode}' is not an ONNX mode (expected one of {', '.join(_AUTO_PADS)})"
    return None


def _ints(ctx: ConvertContext, node: onnx.NodeProto, name: str) -> tuple[int, ...]:
    return tuple(int(v) for v in ctx.attr(node, name, ()))


def _spatial_dims(ctx: ConvertContext, node: onnx.NodeProto, x: str) -> tuple[int, ...]:
    shape = ctx.input_type(x).shape[2:]
    if not all(isinstance(d, int) for d in shape):
        raise ShapeError(f"{describe(node)}: auto_pad={ctx.attr(node, 'auto_pad')} needs the input's spatial "
                         f"dims, but they are symbolic ({', '.join(str(d) for d in shape)}); fix the graph input "
                         f"shapes with shapes={{...}} / --shape")
    return tuple(shape)


def resolve_auto_pad(ctx: ConvertContext, node: onnx.NodeProto, x: str, kernel: tuple[int, ...],
                     strides: tuple[int, ...], dilations: tuple[int, ...]) -> tuple[int, ...]:
    """Explicit ``(begin..., end...)`` pads for the node's ``auto_pad`` mode (ONNX's definition: SAME
    makes ``out = ceil(in / stride)``; the odd pixel goes at the end for SAME_UPPER, the begin for
    SAME_LOWER)."""
    mode = ctx.attr(node, "auto_pad", "NOTSET")
    nd = len(kernel)
    if mode == "NOTSET":
        return _ints(ctx, node, "pads") or (0,) * (2 * nd)
    if mode == "VALID":
        return (0,) * (2 * nd)
    sizes = _spatial_dims(ctx, node, x)
    strides = strides or (1,) * nd
    dilations = dilations or (1,) * nd
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return tuple(begin + end)


def _kernel_from_weight(ctx: ConvertContext, node: onnx.NodeProto, w: str) -> tuple[int, ...]:
    kernel = _ints(ctx, node, "kernel_shape")
    if kernel:
        return kernel
    wshape = ctx.input_type(w).shape[2:]
    if not all(isinstance(d, int) for d in wshape):
        raise ShapeError(f"{describe(node)}: kernel_shape is absent and the weight's spatial dims are symbolic")
    return tuple(wshape)


@onnx_op("Conv", since=1, check=_check_auto_pad)
def conv(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    x, w = node.input[0], node.input[1]
    kernel = _kernel_from_weight(ctx, node, w)
    strides, dilations = _ints(ctx, node, "strides"), _ints(ctx, node, "dilations")
    pads = resolve_auto_pad(ctx, node, x, kernel, strides, dilations)
    attrs = ConvAttrs(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations,
                      group=int(ctx.attr(node, "group", 1)))
    inputs = [x, w] + ([node.input[2]] if ctx.input(node, 2) else [])
    return ctx.emit("Conv", inputs, attrs)


@onnx_op("ConvTranspose", since=1, check=_check_auto_pad)
def conv_transpose(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    """``output_shape`` and SAME auto-padding are turned into pads with ONNX's formula
    ``total = stride*(in-1) + output_padding + (k-1)*dilation + 1 - out``."""
    x, w = node.input[0], node.input[1]
    kernel = _kernel_from_weight(ctx, node, w)
    nd = len(kernel)
    strides = _ints(ctx, node, "strides") or (1,) * nd
    dilations = _ints(ctx, node, "dilations") or (1,) * nd
    output_padding = _ints(ctx, node, "output_padding") or (0,) * nd
    output_shape = _ints(ctx, node, "output_shape")
    mode = ctx.attr(node, "auto_pad", "NOTSET")
    if output_shape or mode in ("SAME_UPPER", "SAME_LOWER"):
        sizes = _spatial_dims(ctx, node, x)
        if output_shape:
            target = output_shape[-nd:]
        else:
            target = tuple(size * s for size, s in zip(sizes, strides))
        begin, end = [], []
        for size, k, s, d, op, out in zip(sizes, kernel, strides, dilations, output_padding, target):
            total = s * (size - 1) + op + (k - 1) * d + 1 - out
            if total < 0:
                raise ctx.fail(f"output_shape {output_shape} is larger than a transposed convolution can produce; "
                               f"negative padding is not supported")
            # ONNX: SAME_UPPER puts the odd pixel at the end, SAME_LOWER and explicit output_shape at the
            # begin (what onnxruntime does too)
            if mode == "SAME_UPPER":
                begin.append(total // 2)
                end.append(total - total // 2)
            else:
                begin.append(total - total // 2)
                end.append(total // 2)
        pads = tuple(begin + end)
    elif mode == "VALID":
        pads = (0,) * (2 * nd)
    else:
        pads = _ints(ctx, node, "pads") or (0,) * (2 * nd)
    attrs = ConvTransposeAttrs(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations,
                               group=int(ctx.attr(node, "group", 1)), output_padding=output_padding)
    inputs = [x, w] + ([node.input[2]] if ctx.input(node, 2) else [])
    return ctx.emit("ConvTranspose", inputs, attrs)


def _check_max_pool(node: onnx.NodeProto, opset: int) -> str | None:
    if len(node.output) > 1 and node.output[1]:
        return "its Indices output is used; MaxPool with indices is not supported"
    return _check_auto_pad(node, opset)


def _pool_attrs(ctx: ConvertContext, node: onnx.NodeProto, count_include_pad: bool) -> PoolAttrs:
    kernel = _ints(ctx, node, "kernel_shape")
    if not kernel:
        raise ctx.fail("attribute 'kernel_shape' is missing")
    strides, dilations = _ints(ctx, node, "strides"), _ints(ctx, node, "dilations")
    pads = resolve_auto_pad(ctx, node, node.input[0], kernel, strides, dilations)
    return PoolAttrs(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations,
                     ceil_mode=bool(ctx.attr(node, "ceil_mode", 0)), count_include_pad=count_include_pad)


@onnx_op("MaxPool", since=1, check=_check_max_pool)
def max_pool(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("MaxPool", [node.input[0]], _pool_attrs(ctx, node, False))


@onnx_op("AveragePool", since=1, check=_check_auto_pad)
def average_pool(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    attrs = _pool_attrs(ctx, node, bool(ctx.attr(node, "count_include_pad", 0)))
    return ctx.emit("AveragePool", [node.input[0]], attrs)


@onnx_op("GlobalAveragePool", since=1)
def global_average_pool(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("GlobalAveragePool", [node.input[0]])


@onnx_op("GlobalMaxPool", since=1)
def global_max_pool(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("GlobalMaxPool", [node.input[0]])
