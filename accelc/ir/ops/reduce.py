"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSumExp, ArgMax/ArgMin, CumSum.

ONNX passes reduction axes as an input (opset >= 13/18); the IR keeps them as an attribute because
every backend needs them at compile time, and the frontend requires a constant. ``axes=None`` reduces
every axis; ``axes=()`` reduces nothing (ONNX ``noop_with_empty_axes=1``) and the op is an identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dtypes import DType
from ..registry import OpDef, register
from ..types import TensorType
from .shape_inference import normalize_axes


def _check_axes_tuple(name: str, axes) -> None:
    if not isinstance(axes, tuple) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"{name} must be a tuple of ints, got {axes!r}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name} {axes} repeat an axis")


@dataclass(frozen=True)
class ReduceAttrs:
    """``axes``: None = all axes, () = no reduction; ``keepdims`` keeps reduced axes as size 1."""
    axes: tuple[int, ...] | None = None
    keepdims: bool = True

    def __post_init__(self):
        if self.axes is not None:
            _check_axes_tuple("axes", self.axes)
        if not isinstance(self.keepdims, bool):
            raise ValueError(f"keepdims must be a bool, got {self.keepdims!r}")


@dataclass(frozen=True)
class ArgReduceAttrs:
    """ArgMax/ArgMin: index along ``axis``; ``select_last_index`` picks the last of tied extremes."""
    axis: int = 0
    keepdims: bool = True
    select_last_index: bool = False

    def __post_init__(self):
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise ValueError(f"axis must be an int, got {self.axis!r}")
        if not isinstance(self.keepdims, bool) or not isinstance(self.select_last_index, bool):
            raise ValueError("keepdims and select_last_index must be bools")


@dataclass(frozen=True)
class CumSumAttrs:
    """CumSum along ``axis`` (an input in ONNX, a compile-time attribute here)."""
    axis: int = 0
    exclusive: bool = False
    reverse: bool = False

    def __post_init__(self):
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise ValueError(f"axis must be an int, got {self.axis!r}")
        if not isinstance(self.exclusive, bool) or not isinstance(self.reverse, bool):
            raise ValueError("exclusive and reverse must be bools")


def _reduced_axes(attrs: ReduceAttrs, rank: int) -> tuple[int, ...]:
    if attrs.axes is None:
        return tuple(range(rank))
    return normalize_axes(attrs.axes, rank)


def _reduce_infer(types, attrs: ReduceAttrs, consts):
    (x,) = types
    axes = _reduced_axes(attrs, x.rank)
    if attrs.keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [TensorType(x.dtype, shape)]


def _log_sum_exp(x, axis, keepdims):
    x64 = x.astype(np.float64)
    m = np.max(x64, axis=axis, keepdims=True) if x.size else np.zeros((), np.float64)
    m = np.where(np.isfinite(m), m, 0.0)
    y = np.log(np.sum(np.exp(x64 - m), axis=axis, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axis)


# name: f(x, axes, keepdims). Float sums are accumulated in float64 then rounded, so the reference is
# at least as accurate as any backend it judges.
REDUCTIONS = {
    "ReduceSum": lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=_acc(x)),
    "ReduceMean": lambda x, a, k: np.mean(x, axis=a, keepdims=k, dtype=_acc(x)),
    "ReduceMax": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "ReduceMin": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "ReduceProd": lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=_acc(x)),
    "ReduceL1": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k, dtype=_acc(x)),
    "ReduceL2": lambda x, a, k: np.sqrt(np.sum(np.square(x.astype(_acc(x))), axis=a, keepdims=k)),
    "ReduceSumSquare": lambda x, a, k: np.sum(np.square(x.astype(_acc(x))), axis=a, keepdims=k),
    "ReduceLogSumExp": _log_sum_exp,
}


def _acc(x: np.ndarray):
    return np.float64 if x.dtype.kind == "f" else x.dtype


def _reduce_ref_factory(fn):
    def reference(xs, attrs: ReduceAttrs):
        x = xs[0]
        if attrs.axes == ():
            return [x.copy()]
        axes = _reduced_axes(attrs, x.ndim)
        if x.size == 0 and fn in (REDUCTIONS["ReduceMax"], REDUCTIONS["ReduceMin"]):
            raise ValueError("ReduceMax/ReduceMin of an empty tensor has no value")
        with np.errstate(all="ignore"):
            y = fn(x, axes, attrs.keepdims)
        return [np.asarray(y).astype(x.dtype, copy=False)]
    return reference


for _name, _fn in REDUCTIONS.items():
    register(OpDef(_name, _reduce_infer, _reduce_ref_factory(_fn), attrs=ReduceAttrs,
                   doc=f"{_name} over attrs.axes (None = all, () = identity)", tags=frozenset({"reduce"})))


# ---- ArgMax / ArgMin ----------------------------------------------------------------------------
def _arg_infer(types, attrs: ArgReduceAttrs, consts):
    (x,) = types
    axis = normalize_axes((attrs.axis,), x.rank, "axis")[0]
    if attrs.keepdims:
        shape = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i != axis)
    return [TensorType(DType.int64, shape)]


def _arg_ref_factory(pick):
    def reference(xs, attrs: ArgReduceAttrs):
        x = xs[0]
        axis = attrs.axis % x.ndim
        if attrs.select_last_index:
            flipped = np.flip(x, axis=axis)
            idx = x.shape[axis] - 1 - pick(flipped, axis=axis)
        else:
            idx = pick(x, axis=axis)
        if attrs.keepdims:
            idx = np.expand_dims(idx, axis)
        return [np.asarray(idx, dtype=np.int64)]
    return reference


register(OpDef("ArgMax", _arg_infer, _arg_ref_factory(np.argmax), attrs=ArgReduceAttrs,
               doc="index of the largest element along axis (first or last of ties)", tags=frozenset({"reduce"})))
register(OpDef("ArgMin", _arg_infer, _arg_ref_factory(np.argmin), attrs=ArgReduceAttrs,
               doc="index of the smallest element along axis (first or last of ties)", tags=frozenset({"reduce"})))


# ---- CumSum -------------------------------------------------------------------------------------
def _cumsum_infer(types, attrs: CumSumAttrs, consts):
    (x,) = types
    normalize_axes((attrs.axis,), x.rank, "axis")
    return [TensorType(x.dtype, x.shape)]


def _cumsum_reference(xs, attrs: CumSumAttrs):
    x = xs[0]
    axis = attrs.axis % x.ndim
    v = np.flip(x, axis) if attrs.reverse else x
    y = np.cumsum(v, axis=axis, dtype=_acc(x))
    if attrs.exclusive:  # shift by one along axis: y[i] = sum(v[:i])
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=axis)),
                            np.take(y, np.arange(y.shape[axis] - 1), axis=axis)], axis=axis)
    if attrs.reverse:
        y = np.flip(y, axis)
    return [np.ascontiguousarray(y).astype(x.dtype, copy=False)]


register(OpDef("CumSum", _cumsum_infer, _cumsum_reference, attrs=CumSumAttrs,
               doc="running sum along axis (exclusive / reverse variants)", tags=frozenset({"reduce"})))
