"""Normalization: Softmax, LogSoftmax, LayerNormalization, BatchNormalization, InstanceNormalization, LRN.

Softmax/LogSoftmax follow opset >= 13 (normalise along one axis); the frontend rewrites older
opsets' "flatten to 2-D" semantics before emitting them. BatchNormalization is the inference form only
(running statistics are inputs; training outputs are refused by the frontend).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import OpDef, register
from ...errors import ShapeError
from ..types import TensorType
from .shape_inference import broadcast_shapes


def _check_int(name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{name} must be an int, got {v!r}")


def _check_positive_float(name: str, v) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
        raise ValueError(f"{name} must be a positive number, got {v!r}")


@dataclass(frozen=True)
class SoftmaxAttrs:
    axis: int = -1

    def __post_init__(self):
        _check_int("axis", self.axis)


@dataclass(frozen=True)
class LayerNormAttrs:
    """Normalise over axes ``axis..rank-1``; scale/bias broadcast against those trailing axes."""
    axis: int = -1
    epsilon: float = 1e-5

    def __post_init__(self):
        _check_int("axis", self.axis)
        _check_positive_float("epsilon", self.epsilon)


@dataclass(frozen=True)
class BatchNormAttrs:
    epsilon: float = 1e-5

    def __post_init__(self):
        _check_positive_float("epsilon", self.epsilon)


@dataclass(frozen=True)
class InstanceNormAttrs:
    epsilon: float = 1e-5

    def __post_init__(self):
        _check_positive_float("epsilon", self.epsilon)


@dataclass(frozen=True)
class LRNAttrs:
    """Cross-channel LRN: ``y = x / (bias + alpha/size * sum(x^2 over the window)) ** beta``."""
    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    bias: float = 1.0

    def __post_init__(self):
        _check_int("size", self.size)
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        for name in ("alpha", "beta", "bias"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"{name} must be a number, got {v!r}")


def _float_input(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise ShapeError(f"{op} needs a floating-point input, got {t.dtype.short}")


def _axis(op: str, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{op} axis {axis} is out of range for rank {rank}")
    return axis % rank


# ---- Softmax / LogSoftmax -----------------------------------------------------------------------
def _softmax_infer_factory(op: str):
    def infer(types, attrs: SoftmaxAttrs, consts):
        (x,) = types
        _float_input(op, x)
        _axis(op, attrs.axis, x.rank)
        return [TensorType(x.dtype, x.shape)]
    return infer


def _softmax_reference(xs, attrs: SoftmaxAttrs):
    x = xs[0]
    x64 = x.astype(np.float64)
    e = np.exp(x64 - np.max(x64, axis=attrs.axis, keepdims=True))
    return [(e / np.sum(e, axis=attrs.axis, keepdims=True)).astype(x.dtype)]


def _log_softmax_reference(xs, attrs: SoftmaxAttrs):
    x = xs[0]
    x64 = x.astype(np.float64)
    shifted = x64 - np.max(x64, axis=attrs.axis, keepdims=True)
    return [(shifted - np.log(np.sum(np.exp(shifted), axis=attrs.axis, keepdims=True))).astype(x.dtype)]


register(OpDef("Softmax", _softmax_infer_factory("Softmax"), _softmax_reference, attrs=SoftmaxAttrs,
               doc="exp(x) / sum(exp(x)) along one axis (opset >= 13)", tags=frozenset({"normalization"})))
register(OpDef("LogSoftmax", _softmax_infer_factory("LogSoftmax"), _log_softmax_reference, attrs=SoftmaxAttrs,
               doc="log of Softmax along one axis, computed stably", tags=frozenset({"normalization"})))


# ---- LayerNormalization -------------------------------------------------------------------------
def _layer_norm_infer(types, attrs: LayerNormAttrs, consts):
    x, scale = types[0], types[1]
    bias = types[2] if len(types) > 2 else None
    _float_input("LayerNormalization", x)
    axis = _axis("LayerNormalization", attrs.axis, x.rank)
    norm_shape = x.shape[axis:]
    for name, t in (("scale", scale), ("bias", bias)):
        if t is not None and broadcast_shapes(t.shape, norm_shape) != tuple(norm_shape):
            raise ShapeError(f"LayerNormalization {name} {t} does not broadcast to the normalised "
                             f"axes {list(norm_shape)}")
    return [TensorType(x.dtype, x.shape)]


def _layer_norm_reference(xs, attrs: LayerNormAttrs):
    x, scale = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    axes = tuple(range(attrs.axis % x.ndim, x.ndim))
    x64 = x.astype(np.float64)
    mean = np.mean(x64, axis=axes, keepdims=True)
    var = np.mean(np.square(x64 - mean), axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + attrs.epsilon) * scale
    if bias is not None:
        y = y + bias
    return [y.astype(x.dtype)]


register(OpDef("LayerNormalization", _layer_norm_infer, _layer_norm_reference, attrs=LayerNormAttrs,
               min_inputs=2, max_inputs=3, doc="normalise over axes axis..end, then scale and shift",
               tags=frozenset({"normalization"})))


# ---- BatchNormalization (inference) -------------------------------------------------------------
def _channel_param_check(op: str, x: TensorType, params) -> None:
    c = x.shape[1] if x.rank >= 2 else 1
    for name, t in params:
        if t.rank != 1 or (isinstance(t.shape[0], int) and isinstance(c, int) and t.shape[0] != c):
            raise ShapeError(f"{op} {name} must be 1-D with one value per channel ({c}), got {t}")


def _batch_norm_infer(types, attrs: BatchNormAttrs, consts):
    x = types[0]
    _float_input("BatchNormalization", x)
    _channel_param_check("BatchNormalization", x, zip(("scale", "bias", "mean", "var"), types[1:]))
    return [TensorType(x.dtype, x.shape)]


def _per_channel(v: np.ndarray, rank: int) -> np.ndarray:
    return v.astype(np.float64).reshape((1, -1) + (1,) * max(rank - 2, 0))


def _batch_norm_reference(xs, attrs: BatchNormAttrs):
    x, scale, bias, mean, var = xs
    r = x.ndim
    y = (x.astype(np.float64) - _per_channel(mean, r)) / np.sqrt(_per_channel(var, r) + attrs.epsilon)
    y = y * _per_channel(scale, r) + _per_channel(bias, r)
    return [y.astype(x.dtype)]


register(OpDef("BatchNormalization", _batch_norm_infer, _batch_norm_reference, attrs=BatchNormAttrs,
               min_inputs=5, max_inputs=5, doc="inference batch norm with running mean/var (N, C, ...)",
               tags=frozenset({"normalization"})))


# ---- InstanceNormalization ----------------------------------------------------------------------
def _instance_norm_infer(types, attrs: InstanceNormAttrs, consts):
    x = types[0]
    _float_input("InstanceNormalization", x)
    if x.rank < 3:
        raise ShapeError(f"InstanceNormalization needs an (N, C, spatial...) input, got {x}")
    _channel_param_check("InstanceNormalization", x, zip(("scale", "bias"), types[1:]))
    return [TensorType(x.dtype, x.shape)]


def _instance_norm_reference(xs, attrs: InstanceNormAttrs):
    x, scale, bias = xs
    axes = tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    mean = np.mean(x64, axis=axes, keepdims=True)
    var = np.mean(np.square(x64 - mean), axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + attrs.epsilon) * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)
    return [y.astype(x.dtype)]


register(OpDef("InstanceNormalization", _instance_norm_infer, _instance_norm_reference,
               attrs=InstanceNormAttrs, min_inputs=3, max_inputs=3,
               doc="per-sample, per-channel normalisation over the spatial axes", tags=frozenset({"normalization"})))


# ---- LRN ----------------------------------------------------------------------------------------
def _lrn_infer(types, attrs: LRNAttrs, consts):
    (x,) = types
    _float_input("LRN", x)
    if x.rank < 3:
        raise ShapeError(f"LRN needs an (N, C, spatial...) input, got {x}")
    return [TensorType(x.dtype, x.shape)]


def _lrn_reference(xs, attrs: LRNAttrs):
    """ONNX: square_sum[c] sums x^2 over channels c - floor((size-1)/2) .. c + ceil((size-1)/2)."""
    x = xs[0]
    x64 = x.astype(np.float64)
    lo = (attrs.size - 1) // 2
    hi = attrs.size - 1 - lo
    sq = np.square(x64)
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    csum = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)], axis=1)
    c = x.shape[1]
    square_sum = csum[:, attrs.size:attrs.size + c] - csum[:, :c]
    y = x64 / np.power(attrs.bias + attrs.alpha / attrs.size * square_sum, attrs.beta)
    return [y.astype(x.dtype)]


register(OpDef("LRN", _lrn_infer, _lrn_reference, attrs=LRNAttrs,
               doc="local response normalisation across channels", tags=frozenset({"normalization"})))
