"""Indexing: Gather, GatherElements, TopK, OneHot, Trilu.

Indices may be negative (counted from the end, as ONNX allows); out-of-range indices are an error in the
reference rather than undefined behaviour, so a bad graph fails loudly in the oracle.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ShapeError
from ..dtypes import DType
from ..registry import OpDef, register
from ..types import TensorType
from .shape_inference import fresh_dim


def _check_int(name: str, v) -> None:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise ValueError(f"{name} must be an int, got {v!r}")


@dataclass(frozen=True)
class GatherAttrs:
    axis: int = 0

    def __post_init__(self):
        _check_int("axis", self.axis)


@dataclass(frozen=True)
class GatherElementsAttrs:
    axis: int = 0

    def __post_init__(self):
        _check_int("axis", self.axis)


@dataclass(frozen=True)
class TopKAttrs:
    """Outputs (values, int64 indices). ``k`` is an input in ONNX and a compile-time attribute here."""
    k: int
    axis: int = -1
    largest: bool = True
    sorted: bool = True

    def __post_init__(self):
        _check_int("k", self.k)
        _check_int("axis", self.axis)
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        if not isinstance(self.largest, bool) or not isinstance(self.sorted, bool):
            raise ValueError("largest and sorted must be bools")


@dataclass(frozen=True)
class OneHotAttrs:
    """OneHot(indices, depth, values): ``values`` is [off, on]; the new axis is inserted at ``axis``."""
    axis: int = -1

    def __post_init__(self):
        _check_int("axis", self.axis)


@dataclass(frozen=True)
class TriluAttrs:
    """Trilu(x, k?): keep the upper (``upper=True``) or lower triangle of the last two axes."""
    upper: bool = True

    def __post_init__(self):
        if not isinstance(self.upper, bool):
            raise ValueError(f"upper must be a bool, got {self.upper!r}")


_INDEX_DTYPES = (DType.int64, DType.int32)


def _axis_in(op: str, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{op} axis {axis} is out of range for rank {rank}")
    return axis % rank


def _wrap_indices(op: str, idx: np.ndarray, dim: int) -> np.ndarray:
    """Negative indices count from the end; anything outside [-dim, dim) is a hard error."""
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise IndexError(f"{op} index out of range for an axis of size {dim} "
                         f"(got values in [{idx.min()}, {idx.max()}])")
    return np.where(idx < 0, idx + dim, idx)


# ---- Gather -------------------------------------------------------------------------------------
def _gather_infer(types, attrs: GatherAttrs, consts):
    data, idx = types
    if idx.dtype not in _INDEX_DTYPES:
        raise ShapeError(f"Gather indices must be int32 or int64, got {idx.dtype.short}")
    axis = _axis_in("Gather", attrs.axis, data.rank)
    return [TensorType(data.dtype, data.shape[:axis] + idx.shape + data.shape[axis + 1:])]


def _gather_reference(xs, attrs: GatherAttrs):
    data, idx = xs
    axis = attrs.axis % data.ndim
    return [np.take(data, _wrap_indices("Gather", idx, data.shape[axis]), axis=axis)]


register(OpDef("Gather", _gather_infer, _gather_reference, attrs=GatherAttrs, min_inputs=2, max_inputs=2,
               doc="take slices of data along axis at indices (negative indices count from the end)",
               tags=frozenset({"indexing"})))


# ---- GatherElements -----------------------------------------------------------------------------
def _gather_elements_infer(types, attrs: GatherElementsAttrs, consts):
    data, idx = types
    if idx.dtype not in _INDEX_DTYPES:
        raise ShapeError(f"GatherElements indices must be int32 or int64, got {idx.dtype.short}")
    if idx.rank != data.rank:
        raise ShapeError(f"GatherElements needs indices of the data's rank, got {data} and {idx}")
    _axis_in("GatherElements", attrs.axis, data.rank)
    return [TensorType(data.dtype, idx.shape)]


def _gather_elements_reference(xs, attrs: GatherElementsAttrs):
    data, idx = xs
    axis = attrs.axis % data.ndim
    for i, (d, k) in enumerate(zip(data.shape, idx.shape)):
        if i != axis and k > d:
            raise IndexError(f"GatherElements indices dim {i} ({k}) exceeds the data's ({d})")
    idx = _wrap_indices("GatherElements", idx, data.shape[axis])
    view = data[tuple(slice(0, k) if i != axis else slice(None) for i, k in enumerate(idx.shape))]
    return [np.take_along_axis(view, idx, axis=axis)]


register(OpDef("GatherElements", _gather_elements_infer, _gather_elements_reference, attrs=GatherElementsAttrs,
               min_inputs=2, max_inputs=2, doc="out[i][j] = data[idx[i][j]][j] along axis",
               tags=frozenset({"indexing"})))


# ---- TopK ---------------------------------------------------------------------------------------
def _topk_infer(types, attrs: TopKAttrs, consts):
    (x,) = types
    axis = _axis_in("TopK", attrs.axis, x.rank)
    d = x.shape[axis]
    if isinstance(d, int) and attrs.k > d:
        raise ShapeError(f"TopK k={attrs.k} exceeds the size {d} of axis {axis}")
    shape = x.shape[:axis] + (attrs.k,) + x.shape[axis + 1:]
    return [TensorType(x.dtype, shape), TensorType(DType.int64, shape)]


def _topk_reference(xs, attrs: TopKAttrs):
    """Ties keep the lower index first (ONNX); results are always sorted, which ``sorted=False`` allows."""
    x = xs[0]
    axis = attrs.axis % x.ndim
    n = x.shape[axis]
    if attrs.largest:
        # a stable ascending sort of the reversed axis, read backwards, is descending with ties by index
        order = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
        order = n - 1 - np.flip(order, axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(attrs.k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


register(OpDef("TopK", _topk_infer, _topk_reference, attrs=TopKAttrs,
               doc="k largest (or smallest) along axis: (values, int64 indices)", tags=frozenset({"indexing"})))


# ---- OneHot -------------------------------------------------------------------------------------
def _one_hot_infer(types, attrs: OneHotAttrs, consts):
    idx, depth, values = types
    if depth.rank > 1 or (depth.rank == 1 and depth.shape[0] != 1):
        raise ShapeError(f"OneHot depth must be a scalar, got {depth}")
    if values.rank != 1 or (isinstance(values.shape[0], int) and values.shape[0] != 2):
        raise ShapeError(f"OneHot values must be [off_value, on_value], got {values}")
    r = idx.rank + 1
    if not -r <= attrs.axis < r:
        raise ShapeError(f"OneHot axis {attrs.axis} is out of range for output rank {r}")
    axis = attrs.axis % r
    d = int(np.asarray(consts[1]).reshape(())) if consts[1] is not None else fresh_dim("onehot")
    return [TensorType(values.dtype, idx.shape[:axis] + (d,) + idx.shape[axis:])]


def _one_hot_reference(xs, attrs: OneHotAttrs):
    idx, depth, values = xs
    d = int(np.asarray(depth).reshape(()))
    if d < 1:
        raise ValueError(f"OneHot depth must be >= 1, got {d}")
    i = idx.astype(np.int64)
    i = np.where(i < 0, i + d, i)           # [-depth, -1] wraps; anything else out of range is all "off"
    axis = attrs.axis % (idx.ndim + 1)
    classes = np.arange(d).reshape((d,) + (1,) * (idx.ndim - axis))
    hot = np.expand_dims(i, axis) == classes
    return [np.where(hot, values[1], values[0]).astype(values.dtype)]


register(OpDef("OneHot", _one_hot_infer, _one_hot_reference, attrs=OneHotAttrs, min_inputs=3, max_inputs=3,
               doc="one-hot encode indices along a new axis with [off, on] values", tags=frozenset({"indexing"})))


# ---- Trilu --------------------------------------------------------------------------------------
def _trilu_infer(types, attrs: TriluAttrs, consts):
    x = types[0]
    if x.rank < 2:
        raise ShapeError(f"Trilu needs rank >= 2, got {x}")
    k = types[1] if len(types) > 1 else None
    if k is not None and (k.dtype != DType.int64 or k.rank != 0):
        raise ShapeError(f"Trilu k must be an int64 scalar, got {k}")
    return [TensorType(x.dtype, x.shape)]


def _trilu_reference(xs, attrs: TriluAttrs):
    x = xs[0]
    k = int(np.asarray(xs[1]).reshape(())) if len(xs) > 1 and xs[1] is not None else 0
    return [np.triu(x, k) if attrs.upper else np.tril(x, k)]


register(OpDef("Trilu", _trilu_infer, _trilu_reference, attrs=TriluAttrs, min_inputs=1, max_inputs=2,
               doc="keep the upper or lower triangle (offset k) of the last two axes", tags=frozenset({"indexing"})))
