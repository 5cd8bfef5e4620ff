"""Elementwise ONNX ops: unary math and activations, broadcasting binary ops, comparisons, variadic
Sum/Max/Min/Mean, Clip, Where, Cast, and the inference-time identities (Identity, Dropout).

Most are one-to-one with an IR op of the same name. The ``since`` values are the first opset whose
semantics the IR op matches: binary ops before opset 7 broadcast with ``broadcast``/``axis`` attributes
(a different rule), so those models are reported as unsupported rather than translated wrongly.
"""
from __future__ import annotations

import numpy as np
import onnx

from ...ir.dtypes import DType
from ...ir.ops.elementwise import AlphaAttrs, AlphaBetaAttrs, CastAttrs, GeluAttrs, SeluAttrs
from .registry import ConvertContext, dtype_from_onnx, get_attr, onnx_dtype_name, onnx_op


def _register_same_name(op_type: str, since: int) -> None:
    @onnx_op(op_type, since=since)
    def handler(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        return ctx.emit(op_type, list(node.input))


# The first opset whose meaning the IR op has (older versions carried a legacy ``consumed_inputs``
# attribute or different broadcasting).
_UNARY_SINCE = {
    "Abs": 6, "Neg": 6, "Exp": 6, "Log": 6, "Sqrt": 6, "Reciprocal": 6, "Floor": 6, "Ceil": 6,
    "Relu": 6, "Sigmoid": 6, "Tanh": 6,
    "Sin": 7, "Cos": 7, "Tan": 7, "Asin": 7, "Acos": 7, "Atan": 7,
    "Sinh": 9, "Cosh": 9, "Asinh": 9, "Acosh": 9, "Atanh": 9, "Erf": 9, "Sign": 9, "IsNaN": 9,
    "Round": 11, "Softplus": 1, "Softsign": 1, "Not": 1, "HardSwish": 14, "Mish": 18,
}
_BINARY_SINCE = {
    "Add": 7, "Sub": 7, "Mul": 7, "Div": 7, "Pow": 7, "And": 7, "Or": 7, "Xor": 7,
    "Equal": 7, "Less": 7, "Greater": 7, "LessOrEqual": 12, "GreaterOrEqual": 12,
    "BitwiseAnd": 18, "BitwiseOr": 18, "BitwiseXor": 18, "PRelu": 7,
}
for _op, _since in {**_UNARY_SINCE, **_BINARY_SINCE}.items():
    _register_same_name(_op, _since)
_register_same_name("Where", 9)


# ---- activations with attributes -----------------------------------------------------------------
def _register_alpha_activation(op_type: str, since: int, default_alpha: float) -> None:
    @onnx_op(op_type, since=since)
    def handler(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        return ctx.emit(op_type, [node.input[0]], AlphaAttrs(float(ctx.attr(node, "alpha", default_alpha))))


# op: (first opset with the IR op's meaning, ONNX's default alpha)
_ALPHA_ACTIVATIONS = {"LeakyRelu": (6, 0.01), "Elu": (6, 1.0), "Celu": (12, 1.0), "ThresholdedRelu": (10, 1.0)}
for _op, (_since, _alpha) in _ALPHA_ACTIVATIONS.items():
    _register_alpha_activation(_op, _since, _alpha)


@onnx_op("HardSigmoid", since=6)
def hard_sigmoid(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    attrs = AlphaBetaAttrs(float(ctx.attr(node, "alpha", 0.2)), float(ctx.attr(node, "beta", 0.5)))
    return ctx.emit("HardSigmoid", [node.input[0]], attrs)


@onnx_op("Selu", since=6)
def selu(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    default = SeluAttrs()
    attrs = SeluAttrs(float(ctx.attr(node, "alpha", default.alpha)), float(ctx.attr(node, "gamma", default.gamma)))
    return ctx.emit("Selu", [node.input[0]], attrs)


def _check_gelu(node: onnx.NodeProto, opset: int) -> str | None:
    approx = get_attr(node, "approximate", "none")
    if approx not in ("none", "tanh"):
        return f"approximate='{approx}' is not an ONNX Gelu mode (expected 'none' or 'tanh')"
    return None


@onnx_op("Gelu", since=20, check=_check_gelu)
def gelu(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Gelu", [node.input[0]], GeluAttrs(ctx.attr(node, "approximate", "none")))


@onnx_op("Swish", since=24)
def swish(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    """Swish(x) = x * sigmoid(alpha * x); alpha = 1 is exactly the IR's Silu."""
    x = node.input[0]
    alpha = float(ctx.attr(node, "alpha", 1.0))
    if alpha == 1.0:
        return ctx.emit("Silu", [x])
    scaled = ctx.emit1("Mul", [x, ctx.const(alpha, ctx.input_type(x).dtype.np, "alpha")])
    return ctx.emit("Mul", [x, ctx.emit1("Sigmoid", [scaled])])


# ---- Mod: fmod selects C fmod (sign of the dividend) or Python % (sign of the divisor) ---------------
def _check_mod(node: onnx.NodeProto, opset: int) -> str | None:
    if get_attr(node, "fmod", 0) not in (0, 1):
        return f"fmod={get_attr(node, 'fmod')} is invalid (expected 0 or 1)"
    return None


@onnx_op("Mod", since=10, check=_check_mod)
def mod(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    a, b = node.input[0], node.input[1]
    if int(ctx.attr(node, "fmod", 0)) == 1:
        return ctx.emit("Mod", [a, b])
    if ctx.input_type(a).dtype.is_float:
        raise ctx.fail("fmod=0 on floating-point inputs is invalid ONNX (the spec requires fmod=1 for floats)")
    return ctx.emit("FloorMod", [a, b])


# ---- variadic ops become chains of binary ops ------------------------------------------------------
def _chain(ctx: ConvertContext, op: str, inputs: list[str]) -> str:
    acc = inputs[0]
    for other in inputs[1:]:
        acc = ctx.emit1(op, [acc, other])
    return acc


def _register_variadic(op_type: str, binary: str) -> None:
    @onnx_op(op_type, since=6)
    def handler(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
        inputs = [i for i in node.input if i]
        if not inputs:
            raise ctx.fail("needs at least one input")
        if len(inputs) == 1:
            return ctx.emit("Identity", inputs)
        return [_chain(ctx, binary, inputs)]


_register_variadic("Sum", "Add")
_register_variadic("Max", "Max")
_register_variadic("Min", "Min")


@onnx_op("Mean", since=6)
def mean(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    inputs = [i for i in node.input if i]
    if not inputs:
        raise ctx.fail("needs at least one input")
    if len(inputs) == 1:
        return ctx.emit("Identity", inputs)
    total = _chain(ctx, "Add", inputs)
    count = ctx.const(len(inputs), ctx.input_type(total).dtype.np, "count")
    return ctx.emit("Div", [total, count])


# ---- Clip -----------------------------------------------------------------------------------------
@onnx_op("Clip", since=6)
def clip_attrs(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    """Before opset 11 the bounds are attributes (absent = unbounded); the IR takes scalar inputs."""
    x = node.input[0]
    dtype = ctx.input_type(x).dtype.np
    lo = ctx.attr(node, "min", None)
    hi = ctx.attr(node, "max", None)
    lo_name = ctx.const(lo, dtype, "min") if lo is not None else ""
    hi_name = ctx.const(hi, dtype, "max") if hi is not None else ""
    inputs = [x, lo_name, hi_name]
    while inputs[-1] == "":
        inputs.pop()
    return ctx.emit("Clip", inputs)


@onnx_op("Clip", since=11)
def clip(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    inputs = list(node.input)
    while inputs and inputs[-1] == "":
        inputs.pop()
    return ctx.emit("Clip", inputs)


# ---- Cast -----------------------------------------------------------------------------------------
_FLOAT8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2}


def _check_cast(node: onnx.NodeProto, opset: int) -> str | None:
    to = get_attr(node, "to", None)
    if to is None:
        return "attribute 'to' is missing"
    if dtype_from_onnx(int(to)) is None:
        return f"casting to {onnx_dtype_name(int(to))} is not supported (no accelc dtype)"
    if int(to) in _FLOAT8:
        return ("casting to float8 is not supported: ONNX's saturate/round_mode semantics for float8 are not "
                "implemented by the IR Cast")
    return None


@onnx_op("Cast", since=6, check=_check_cast)
def cast(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    to = dtype_from_onnx(int(ctx.attr(node, "to")))
    assert to is not None
    return ctx.emit("Cast", [node.input[0]], CastAttrs(to))


@onnx_op("CastLike", since=15)
def cast_like(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    to = ctx.input_type(node.input[1]).dtype
    if to in (DType.float8_e4m3fn, DType.float8_e5m2):
        raise ctx.fail("casting to float8 is not supported (saturate semantics are not implemented)")
    return ctx.emit("Cast", [node.input[0]], CastAttrs(to))


# ---- inference-time identities --------------------------------------------------------------------
@onnx_op("Identity", since=1)
def identity(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    return ctx.emit("Identity", [node.input[0]])


def _check_dropout(node: onnx.NodeProto, opset: int) -> str | None:
    if len(node.output) > 1 and node.output[1]:
        return "its mask output is used; accelc compiles inference graphs, where Dropout has no mask"
    return None


@onnx_op("Dropout", since=7, check=_check_dropout)
def dropout(ctx: ConvertContext, node: onnx.NodeProto) -> list[str]:
    """At inference Dropout is the identity. From opset 12 ``training_mode`` is an input; a model that
    sets it to true (or computes it) asks for training behaviour, which accelc refuses."""
    training = ctx.input(node, 2)
    if training:
        flag = ctx.const_value(training, "input 'training_mode'")
        if bool(np.asarray(flag).reshape(-1)[0]):
            raise ctx.fail("training_mode is true; accelc compiles inference graphs (export in eval mode)")
    return ctx.emit("Identity", [node.input[0]])

