"""Shape and layout ops, plus Constant and ConstantOfShape.

Where ONNX moved an attribute to an input over the opsets (Squeeze/Unsqueeze axes and Split sizes in 13,
Slice starts/ends in 10, Pad pads in 11), each form has its own handler. Values the IR needs at compile
time (axes, split sizes, pads) must be constants; values the IR keeps as inputs (Reshape's shape, Slice's
bounds, Expand's shape, Tile's repeats) may be computed by the graph.
"""
from __future__ import annotations

import numpy as np
import onnx

from ...ir.ops.shape import (PAD_MODES, ConcatAttrs, ConstantOfShapeAttrs, DepthToSpaceAttrs, FlattenAttrs,
                             PadAttrs, ReshapeAttrs, ShapeAttrs, SpaceToDepthAttrs, SplitAttrs, SqueezeAttrs,
                             TransposeAttrs, UnsqueezeAttrs)
from .registry import ConvertContext, dtype_from_onnx, get_attr, onnx_dtype_name, onnx_op


# ---- constants ----------------------------------------------------------------------------------------
_CONSTANT_FORMS = ("value", "sparse_value", "value_float", "value_floats", "value_int", "value_ints",
                   "value_string", "value_strings")


def _check_constant(node: onnx.NodeProto, opset: int) -> str | None:
    forms = [a.name for a in node.attribute if a.name in _CONSTANT_FORMS]
    if len(forms) != 1:
        return f"needs exactly one value attribute, has {forms or 'none'}"
    if forms[0] in ("value_string", "value_strings"):
        return "string constants are not supported (accelc has no string dtype)"
    for a in node.attribute:
        if a.name == "value" and dtype_from_onnx(a.t.data_type) is None:
            return f"its tensor has element type {onnx_dtype_name(a.t.data_type)}, which accelc does not support"
    return None


@onnx_op("Constant", since=1, check=_check_constant)
def constant(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    """A Constant node becomes a graph constant (named by its output), not a node."""
    attr = next(a for a in node.attribute if a.name in _CONSTANT_FORMS)
    if attr.name == "value":
        array = ctx.tensor_array(attr.t)
    elif attr.name == "sparse_value":
        from ..onnx import _sparse_to_dense
        array = _sparse_to_dense(attr.sparse_tensor, ctx.base_dir, ctx.model_label)
    elif attr.name == "value_float":
        array = np.array(attr.f, np.float32)
    elif attr.name == "value_floats":
        array = np.array(list(attr.floats), np.float32)
    elif attr.name == "value_int":
        array = np.array(attr.i, np.int64)
    else:
        array = np.array(list(attr.ints), np.int64)
    return [ctx.const(array, base="value")]


def _check_constant_of_shape(node: onnx.NodeProto, opset: int) -> str | None:
    for a in node.attribute:
        if a.name == "value":
            if dtype_from_onnx(a.t.data_type) is None:
                return f"value has element type {onnx_dtype_name(a.t.data_type)}, which accelc does not support"
    return None


@onnx_op("ConstantOfShape", since=9, check=_check_constant_of_shape)
def constant_of_shape(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    value = ctx.attr(node, "value", None)
    if value is None:
        attrs = ConstantOfShapeAttrs()
    else:
        value = np.asarray(value)
        if value.size != 1:
            raise ctx.fail(f"value must hold one element, has {value.size}")
        dtype = dtype_from_onnx(next(a.t.data_type for a in node.attribute if a.name == "value"))
        scalar = value.reshape(-1)[0]
        if value.dtype == np.bool_:
            py = bool(scalar)
        elif value.dtype.kind in "iu":
            py = int(scalar)
        else:
            py = float(scalar)
        attrs = ConstantOfShapeAttrs(py, dtype)
    return ctx.emit("ConstantOfShape", [node.input[0]], attrs)


# ---- reshaping ----------------------------------------------------------------------------------------
@onnx_op("Reshape", since=5)
def reshape(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    attrs = ReshapeAttrs(bool(ctx.attr(node, "allowzero", 0)))
    return ctx.emit("Reshape", [node.input[0], node.input[1]], attrs)


@onnx_op("Flatten", since=1)
def flatten(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Flatten", [node.input[0]], FlattenAttrs(int(ctx.attr(node, "axis", 1))))


@onnx_op("Transpose", since=1)
def transpose(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    perm = ctx.attr(node, "perm", None)
    return ctx.emit("Transpose", [node.input[0]], TransposeAttrs(tuple(int(p) for p in perm) if perm else None))


@onnx_op("Squeeze", since=1)
def squeeze_attr(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    axes = ctx.attr(node, "axes", None)
    return ctx.emit("Squeeze", [node.input[0]], SqueezeAttrs(tuple(int(a) for a in axes) if axes else None))


@onnx_op("Squeeze", since=13)
def squeeze(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    name = ctx.input(node, 1)
    axes = ctx.const_ints(name, "input 'axes'") if name else ()
    return ctx.emit("Squeeze", [node.input[0]], SqueezeAttrs(axes or None))


@onnx_op("Unsqueeze", since=1)
def unsqueeze_attr(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    axes = tuple(int(a) for a in ctx.attr(node, "axes"))
    return ctx.emit("Unsqueeze", [node.input[0]], UnsqueezeAttrs(axes))


@onnx_op("Unsqueeze", since=13)
def unsqueeze(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    axes = ctx.const_ints(node.input[1], "input 'axes'")
    return ctx.emit("Unsqueeze", [node.input[0]], UnsqueezeAttrs(axes))


@onnx_op("Concat", since=4)
def concat(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Concat", [i for i in node.input if i], ConcatAttrs(int(ctx.attr(node, "axis"))))


# ---- Split ---------------------------------------------------------------------------------------------
def _split(ctx: ConvertContext, node: onnx.NodeProto, sizes: tuple[int, ...] | None) -> list[str]:
    x = node.input[0]
    axis = int(ctx.attr(node, "axis", 0))
    if not sizes:
        shape = ctx.input_type(x).shape
        if not -len(shape) <= axis < len(shape):
            raise ctx.fail(f"axis {axis} is out of range for an input of rank {len(shape)}")
        dim = shape[axis]
        if not isinstance(dim, int):
            raise ctx.fail(f"splitting the symbolic axis {axis} ('{dim}') without explicit sizes needs a fixed "
                           f"input shape (shapes={{...}} / --shape)")
        num_outputs = ctx.attr(node, "num_outputs", None)
        if num_outputs is not None:
            chunk = -(-dim // int(num_outputs))
            sizes = tuple([chunk] * (int(num_outputs) - 1) + [dim - chunk * (int(num_outputs) - 1)])
        else:
            n = len(node.output)
            if dim % n:
                raise ctx.fail(f"axis {axis} of size {dim} does not split evenly into {n} outputs")
            sizes = (dim // n,) * n
    if len(sizes) != len(node.output):
        raise ctx.fail(f"has {len(node.output)} outputs but {len(sizes)} split sizes {sizes}")
    return ctx.emit("Split", [x], SplitAttrs(axis, sizes))


@onnx_op("Split", since=2)
def split_attr(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    sizes = ctx.attr(node, "split", None)
    return _split(ctx, node, tuple(int(s) for s in sizes) if sizes else None)


@onnx_op("Split", since=13)
def split(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    name = ctx.input(node, 1)
    return _split(ctx, node, ctx.const_ints(name, "input 'split'") if name else None)


# ---- Slice ----------------------------------------------------------------------------------------------
@onnx_op("Slice", since=1)
def slice_attr(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    """Opset 1-9 Slice: starts/ends/axes are attributes; the IR takes int64 inputs."""
    inputs = [node.input[0]]
    for name in ("starts", "ends"):
        inputs.append(ctx.const(np.array(ctx.attr(node, name), np.int64), base=name))
    axes = ctx.attr(node, "axes", None)
    if axes is not None:
        inputs.append(ctx.const(np.array(axes, np.int64), base="axes"))
    return ctx.emit("Slice", inputs)


@onnx_op("Slice", since=10)
def slice_(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    inputs = list(node.input)
    while inputs and not inputs[-1]:
        inputs.pop()
    return ctx.emit("Slice", inputs)


@onnx_op("Expand", since=8)
def expand(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Expand", [node.input[0], node.input[1]])


@onnx_op("Tile", since=6)
def tile(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Tile", [node.input[0], node.input[1]])


# ---- Pad -----------------------------------------------------------------------------------------------
def _check_pad(node: onnx.NodeProto, opset: int) -> str | None:
    mode = get_attr(node, "mode", "constant")
    if mode not in PAD_MODES:
        return f"mode '{mode}' is not supported (expected one of {', '.join(PAD_MODES)})"
    return None


@onnx_op("Pad", since=2, check=_check_pad)
def pad_attr(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    pads = tuple(int(p) for p in ctx.attr(node, "pads"))
    attrs = PadAttrs(pads, ctx.attr(node, "mode", "constant"), float(ctx.attr(node, "value", 0.0)))
    return ctx.emit("Pad", [node.input[0]], attrs)


@onnx_op("Pad", since=11, check=_check_pad)
def pad(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    x = node.input[0]
    rank = ctx.input_type(x).rank
    pads = ctx.const_ints(node.input[1], "input 'pads'")
    value = 0.0
    if ctx.input(node, 2):
        v = np.asarray(ctx.const_value(node.input[2], "input 'constant_value'")).reshape(-1)
        if v.size:
            value = float(v[0]) if v.dtype != np.bool_ else float(bool(v[0]))
    axes_name = ctx.input(node, 3)
    if axes_name:
        axes = [a % rank if -rank <= a < rank else a for a in ctx.const_ints(axes_name, "input 'axes'")]
        if any(not 0 <= a < rank for a in axes) or len(pads) != 2 * len(axes):
            raise ctx.fail(f"axes {axes} and pads {pads} do not fit an input of rank {rank}")
        full = [0] * (2 * rank)
        for k, a in enumerate(axes):
            full[a] = pads[k]
            full[rank + a] = pads[len(axes) + k]
        pads = tuple(full)
    elif len(pads) != 2 * rank:
        raise ctx.fail(f"pads {pads} must have 2 x rank = {2 * rank} entries")
    return ctx.emit("Pad", [x], PadAttrs(pads, ctx.attr(node, "mode", "constant"), value))


# ---- shape queries and generators -----------------------------------------------------------------------
@onnx_op("Shape", since=1)
def shape(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    end = ctx.attr(node, "end", None)
    attrs = ShapeAttrs(int(ctx.attr(node, "start", 0)), int(end) if end is not None else None)
    return ctx.emit("Shape", [node.input[0]], attrs)


@onnx_op("Size", since=1)
def size(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Size", [node.input[0]])


@onnx_op("Range", since=11)
def range_(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Range", [node.input[0], node.input[1], node.input[2]])


def _check_depth_to_space(node: onnx.NodeProto, opset: int) -> str | None:
    mode = get_attr(node, "mode", "DCR")
    if mode not in ("DCR", "CRD"):
        return f"mode '{mode}' is not an ONNX DepthToSpace mode (expected DCR or CRD)"
    return None


@onnx_op("DepthToSpace", since=1, check=_check_depth_to_space)
def depth_to_space(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    attrs = DepthToSpaceAttrs(int(ctx.attr(node, "blocksize")), ctx.attr(node, "mode", "DCR"))
    return ctx.emit("DepthToSpace", [node.input[0]], attrs)


@onnx_op("SpaceToDepth", since=1)
def space_to_depth(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    # `mode` arrived in the newest opsets; models without it mean DCR, the only order before
    attrs = SpaceToDepthAttrs(int(ctx.attr(node, "blocksize")), ctx.attr(node, "mode", "DCR"))
    return ctx.emit("SpaceToDepth", [node.input[0]], attrs)
