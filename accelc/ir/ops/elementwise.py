"""Elementwise ops: unary math and activations, broadcasting binary ops, comparisons, Where, Cast.

Each op is one ``OpDef``; the tables below keep their NumPy references side by side so a reader sees
every elementwise op's meaning on one screen. ``FusedElementwise`` (in ``fused.py``) composes these
references, so anything registered here can appear inside a fused chain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ShapeError
from ..dtypes import DType
from ..registry import NoAttrs, OpDef, register
from ..types import TensorType
from .shape_inference import broadcast_shapes

_erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf as scipy_erf  # fast path when SciPy is installed
        return scipy_erf(x).astype(x.dtype)
    except ImportError:  # pragma: no cover - SciPy is a test dependency
        return _erf(x).astype(x.dtype)


def _f(x):
    return np.asarray(x)


# ---- unary, no attributes ----------------------------------------------------------------------
UNARY = {
    "Identity": lambda x: x.copy(),
    "Neg": np.negative,
    "Abs": np.abs,
    "Exp": np.exp,
    "Log": np.log,
    "Sqrt": np.sqrt,
    "Reciprocal": lambda x: np.reciprocal(x) if x.dtype.kind == "f" else (1 / x).astype(x.dtype),
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Round": np.round,  # round half to even, as ONNX specifies
    "Sign": np.sign,
    "Sin": np.sin,
    "Cos": np.cos,
    "Tan": np.tan,
    "Asin": np.arcsin,
    "Acos": np.arccos,
    "Atan": np.arctan,
    "Sinh": np.sinh,
    "Cosh": np.cosh,
    "Asinh": np.arcsinh,
    "Acosh": np.arccosh,
    "Atanh": np.arctanh,
    "Erf": erf,
    "Relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "Sigmoid": lambda x: (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype),
    "Tanh": np.tanh,
    "Softplus": lambda x: np.logaddexp(0, x.astype(np.float64)).astype(x.dtype),
    "Softsign": lambda x: x / (1 + np.abs(x)),
    "HardSwish": lambda x: (x * np.clip(x / 6.0 + 0.5, 0, 1)).astype(x.dtype),
    "Mish": lambda x: (x * np.tanh(np.logaddexp(0, x.astype(np.float64)))).astype(x.dtype),
    "Silu": lambda x: (x / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype),
    "Not": np.logical_not,
    "IsNaN": np.isnan,
}
_BOOL_RESULT = {"Not", "IsNaN"}

for _name, _fn in UNARY.items():
    def _infer(types, attrs, consts, _name=_name):
        (t,) = types
        return [TensorType(DType.bool if _name in _BOOL_RESULT else t.dtype, t.shape)]

    def _ref(xs, attrs, _fn=_fn):
        with np.errstate(all="ignore"):
            return [np.asarray(_fn(_f(xs[0])))]

    register(OpDef(_name, _infer, _ref, doc=f"elementwise {_name}", tags=frozenset({"elementwise", "unary"})))


# ---- unary with attributes --------------------------------------------------------------------
@dataclass(frozen=True)
class AlphaAttrs:
    alpha: float = 0.01


@dataclass(frozen=True)
class AlphaBetaAttrs:
    alpha: float = 1.0
    beta: float = 0.0


@dataclass(frozen=True)
class SeluAttrs:
    alpha: float = 1.67326319217681884765625
    gamma: float = 1.05070102214813232421875


@dataclass(frozen=True)
class GeluAttrs:
    approximate: str = "none"

    def __post_init__(self):
        if self.approximate not in ("none", "tanh"):
            raise ValueError(f"Gelu approximate must be 'none' or 'tanh', got '{self.approximate}'")


def _gelu(x, a: GeluAttrs):
    x64 = x.astype(np.float64)
    if a.approximate == "tanh":
        y = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    else:
        y = 0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))
    return y.astype(x.dtype)


UNARY_WITH_ATTRS = {
    # name: (attrs type, reference(x, attrs))
    "LeakyRelu": (AlphaAttrs, lambda x, a: np.where(x >= 0, x, x * a.alpha).astype(x.dtype)),
    "Elu": (AlphaAttrs, lambda x, a: np.where(x >= 0, x, a.alpha * np.expm1(x)).astype(x.dtype)),
    "Celu": (AlphaAttrs, lambda x, a: (np.maximum(0, x) + np.minimum(0, a.alpha * np.expm1(x / a.alpha))).astype(x.dtype)),
    "ThresholdedRelu": (AlphaAttrs, lambda x, a: np.where(x > a.alpha, x, 0).astype(x.dtype)),
    "HardSigmoid": (AlphaBetaAttrs, lambda x, a: np.clip(a.alpha * x + a.beta, 0, 1).astype(x.dtype)),
    "Selu": (SeluAttrs, lambda x, a: np.where(x > 0, a.gamma * x, a.gamma * a.alpha * np.expm1(x)).astype(x.dtype)),
    "Gelu": (GeluAttrs, _gelu),
}

for _name, (_attrs, _fn) in UNARY_WITH_ATTRS.items():
    def _infer(types, attrs, consts):
        (t,) = types
        return [TensorType(t.dtype, t.shape)]

    def _ref(xs, attrs, _fn=_fn):
        with np.errstate(all="ignore"):
            return [np.asarray(_fn(_f(xs[0]), attrs))]

    register(OpDef(_name, _infer, _ref, attrs=_attrs, doc=f"elementwise {_name}",
                   tags=frozenset({"elementwise", "unary"})))


# ---- Clip: min and max are optional scalar inputs (ONNX >= 11) ----------------------------------
def _clip_infer(types, attrs, consts):
    return [TensorType(types[0].dtype, types[0].shape)]


def _clip_ref(xs, attrs):
    x = _f(xs[0])
    lo = xs[1] if len(xs) > 1 and xs[1] is not None else None
    hi = xs[2] if len(xs) > 2 and xs[2] is not None else None
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo).astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi).astype(x.dtype))
    return [y.astype(x.dtype)]


register(OpDef("Clip", _clip_infer, _clip_ref, min_inputs=1, max_inputs=3,
               doc="clip(x, min?, max?); min/max are scalars", tags=frozenset({"elementwise"})))


# ---- binary, broadcasting ---------------------------------------------------------------------
def _int_div(a, b):
    if a.dtype.kind in "iu":
        with np.errstate(all="ignore"):
            q = np.trunc(a / np.where(b == 0, 1, b))  # C semantics: truncate toward zero
        return q.astype(a.dtype)
    return a / b


def _pow(a, b):
    if a.dtype.kind == "f":
        return np.power(a, b.astype(a.dtype))
    return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": _int_div,
    "Pow": _pow,
    "Max": np.maximum,
    "Min": np.minimum,
    "Mod": lambda a, b: np.fmod(a, b),                 # fmod=1 semantics (sign of dividend)
    "FloorMod": lambda a, b: np.mod(a, b),              # fmod=0 semantics (sign of divisor)
    "PRelu": lambda x, s: np.where(x >= 0, x, x * s).astype(x.dtype),
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
    "BitwiseAnd": np.bitwise_and,
    "BitwiseOr": np.bitwise_or,
    "BitwiseXor": np.bitwise_xor,
}
COMPARE = {
    "Equal": np.equal,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
    "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
}
_SAME_DTYPE_EXEMPT = {"Pow"}   # ONNX Pow allows a different exponent dtype


def _binary_infer_factory(name, result_bool):
    def infer(types, attrs, consts):
        a, b = types
        if a.dtype != b.dtype and name not in _SAME_DTYPE_EXEMPT:
            raise ShapeError(f"{name} needs operands of one dtype, got {a.dtype.short} and {b.dtype.short}")
        dtype = DType.bool if result_bool or name in ("And", "Or", "Xor") else a.dtype
        return [TensorType(dtype, broadcast_shapes(a.shape, b.shape))]
    return infer


for _name, _fn in {**BINARY, **COMPARE}.items():
    def _ref(xs, attrs, _fn=_fn):
        with np.errstate(all="ignore"):
            return [np.asarray(_fn(_f(xs[0]), _f(xs[1])))]

    register(OpDef(_name, _binary_infer_factory(_name, _name in COMPARE), _ref, min_inputs=2, max_inputs=2,
                   doc=f"broadcasting {_name}", tags=frozenset({"elementwise", "binary"})))


# ---- Where --------------------------------------------------------------------------------------
def _where_infer(types, attrs, consts):
    c, a, b = types
    if a.dtype != b.dtype:
        raise ShapeError(f"Where needs X and Y of one dtype, got {a.dtype.short} and {b.dtype.short}")
    return [TensorType(a.dtype, broadcast_shapes(c.shape, a.shape, b.shape))]


register(OpDef("Where", _where_infer, lambda xs, a: [np.where(_f(xs[0]), _f(xs[1]), _f(xs[2]))],
               min_inputs=3, max_inputs=3, doc="where(cond, x, y)", tags=frozenset({"elementwise"})))


# ---- Cast ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CastAttrs:
    to: DType = DType.float32


def _cast_ref(xs, attrs):
    x = _f(xs[0])
    if attrs.to.is_int and x.dtype.kind == "f":
        with np.errstate(all="ignore"):
            x = np.trunc(x)   # C/ONNX: float -> int truncates toward zero
    return [x.astype(attrs.to.np)]


register(OpDef("Cast", lambda t, a, c: [TensorType(a.to, t[0].shape)], _cast_ref, attrs=CastAttrs,
               doc="convert to another dtype", tags=frozenset({"elementwise", "unary"})))

ELEMENTWISE_OPS = frozenset(list(UNARY) + list(UNARY_WITH_ATTRS) + list(BINARY) + list(COMPARE)
                            + ["Clip", "Where", "Cast"])
