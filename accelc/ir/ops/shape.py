"""Shape and layout ops: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice, Expand,
Tile, Pad, Shape, Size, ConstantOfShape, Range, DepthToSpace, SpaceToDepth.

Values that a graph may legitimately compute (Reshape's shape, Slice's starts/ends/axes/steps, Expand's
shape, Tile's repeats, Range's operands, ConstantOfShape's shape) stay inputs; ``infer`` reads them from
``consts`` when they are constant and otherwise produces fresh symbolic dims (``fresh_dim``), which shape
simplification resolves once input shapes are fixed. Values that must be known to compile at all (axes,
split sizes, pads) are attributes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ShapeError
from ..dtypes import DType
from ..registry import NoAttrs, OpDef, register
from ..types import Dim, TensorType
from .shape_inference import broadcast_shapes, dim_product, fresh_dim, normalize_axes


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_int(name: str, v) -> None:
    if not _is_int(v):
        raise ValueError(f"{name} must be an int, got {v!r}")


def _check_int_tuple(name: str, values, unique: bool = False) -> None:
    if not isinstance(values, tuple) or not all(_is_int(v) for v in values):
        raise ValueError(f"{name} must be a tuple of ints, got {values!r}")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{name} {values} repeat a value")


@dataclass(frozen=True)
class ReshapeAttrs:
    """``allowzero=False``: a 0 in the target shape copies the input dim; True: it means size 0."""
    allowzero: bool = False

    def __post_init__(self):
        if not isinstance(self.allowzero, bool):
            raise ValueError(f"allowzero must be a bool, got {self.allowzero!r}")


@dataclass(frozen=True)
class FlattenAttrs:
    """Flatten to 2-D: dims before ``axis`` form the rows, the rest the columns."""
    axis: int = 1

    def __post_init__(self):
        _check_int("axis", self.axis)


@dataclass(frozen=True)
class TransposeAttrs:
    """``perm=None`` reverses the axes (ONNX default)."""
    perm: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.perm is not None:
            _check_int_tuple("perm", self.perm, unique=True)
            if sorted(self.perm) != list(range(len(self.perm))):
                raise ValueError(f"perm {self.perm} is not a permutation of 0..{len(self.perm) - 1}")


@dataclass(frozen=True)
class SqueezeAttrs:
    """``axes=None`` removes every size-1 axis."""
    axes: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.axes is not None:
            _check_int_tuple("axes", self.axes, unique=True)


@dataclass(frozen=True)
class UnsqueezeAttrs:
    """``axes`` index the output (rank = input rank + len(axes))."""
    axes: tuple[int, ...] = ()

    def __post_init__(self):
        _check_int_tuple("axes", self.axes, unique=True)
        if not self.axes:
            raise ValueError("axes must name at least one axis to insert")


@dataclass(frozen=True)
class ConcatAttrs:
    axis: int = 0

    def __post_init__(self):
        _check_int("axis", self.axis)


@dataclass(frozen=True)
class SplitAttrs:
    """Split along ``axis`` into pieces of ``sizes`` (one output per entry). The frontend resolves ONNX's
    ``num_outputs`` / equal splitting into explicit sizes."""
    axis: int = 0
    sizes: tuple[int, ...] = ()

    def __post_init__(self):
        _check_int("axis", self.axis)
        _check_int_tuple("sizes", self.sizes)
        if not self.sizes:
            raise ValueError("sizes must list the size of each output")
        if any(s < 0 for s in self.sizes):
            raise ValueError(f"sizes must be >= 0, got {self.sizes}")


PAD_MODES = ("constant", "reflect", "edge", "wrap")


@dataclass(frozen=True)
class PadAttrs:
    """``pads`` are ONNX order ``(begin_0.., end_0..)`` over every axis (the frontend expands ``axes``);
    negative pads crop. ``value`` fills in ``constant`` mode."""
    pads: tuple[int, ...] = ()
    mode: str = "constant"
    value: float = 0.0

    def __post_init__(self):
        _check_int_tuple("pads", self.pads)
        if len(self.pads) % 2:
            raise ValueError(f"pads must have an even length (begin and end per axis), got {self.pads}")
        if self.mode not in PAD_MODES:
            raise ValueError(f"mode must be one of {', '.join(PAD_MODES)}, got '{self.mode}'")
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool):
            raise ValueError(f"value must be a number, got {self.value!r}")


@dataclass(frozen=True)
class ShapeAttrs:
    """Shape(x)[start:end] as int64 (ONNX opset 15 slicing; ``end=None`` to the end)."""
    start: int = 0
    end: int | None = None

    def __post_init__(self):
        _check_int("start", self.start)
        if self.end is not None:
            _check_int("end", self.end)


@dataclass(frozen=True)
class ConstantOfShapeAttrs:
    """A tensor of ``value`` (of ``dtype``) with the shape given by the int64 input."""
    value: float | int | bool = 0.0
    dtype: DType = DType.float32

    def __post_init__(self):
        if not isinstance(self.dtype, DType):
            raise ValueError(f"dtype must be a DType, got {self.dtype!r}")
        if not isinstance(self.value, (int, float, bool, np.number, np.bool_)):
            raise ValueError(f"value must be a scalar number, got {self.value!r}")


@dataclass(frozen=True)
class DepthToSpaceAttrs:
    """``mode`` DCR (depth-column-row, ONNX default) or CRD (PyTorch pixel_shuffle order)."""
    blocksize: int = 2
    mode: str = "DCR"

    def __post_init__(self):
        _check_int("blocksize", self.blocksize)
        if self.blocksize < 1:
            raise ValueError(f"blocksize must be >= 1, got {self.blocksize}")
        if self.mode not in ("DCR", "CRD"):
            raise ValueError(f"mode must be 'DCR' or 'CRD', got '{self.mode}'")


@dataclass(frozen=True)
class SpaceToDepthAttrs:
    """``mode`` DCR (ONNX default: block offsets become the outer part of the channel index) or CRD
    (channels outer, block offsets inner: the inverse of DepthToSpace CRD / pixel_unshuffle)."""
    blocksize: int = 2
    mode: str = "DCR"

    def __post_init__(self):
        if self.mode not in ("DCR", "CRD"):
            raise ValueError(f"mode must be 'DCR' or 'CRD', got '{self.mode}'")
        _check_int("blocksize", self.blocksize)
        if self.blocksize < 1:
            raise ValueError(f"blocksize must be >= 1, got {self.blocksize}")


def _dim_sum(dims) -> Dim:
    total = sum(d for d in dims if isinstance(d, int))
    syms = [str(d) for d in dims if not isinstance(d, int)]
    if not syms:
        return total
    return "+".join(syms + ([str(total)] if total else []))


def _same(op: str, t: TensorType) -> list[TensorType]:
    return [TensorType(t.dtype, t.shape)]


def _shape_operand(op: str, t: TensorType, const, what: str) -> list[int] | int:
    """The values of a 1-D int shape-like input, or its length when only the type is known."""
    if t.dtype not in (DType.int64, DType.int32):
        raise ShapeError(f"{op} {what} must be an int64 tensor, got {t}")
    if t.rank != 1:
        raise ShapeError(f"{op} {what} must be 1-D, got {t}")
    if const is not None:
        return [int(v) for v in np.asarray(const).reshape(-1)]
    if not isinstance(t.shape[0], int):
        raise ShapeError(f"{op} {what} has an unknown length ({t}), so the output rank is unknown; "
                         f"make it a constant or fix the input shapes first")
    return t.shape[0]


# ---- Reshape ------------------------------------------------------------------------------------
def _infer_minus_one(in_shape, known, target) -> Dim:
    """The dim a -1 stands for: input elements / other output dims, cancelling symbols that appear on
    both sides (so ("n", 2, 3) -> (0, -1) gives ("n", 6)); a fresh symbol when it cannot be expressed."""
    in_syms = [d for d in in_shape if not isinstance(d, int)]
    p = int(np.prod([d for d in in_shape if isinstance(d, int)], dtype=np.int64))
    q = int(np.prod([d for d in known if isinstance(d, int)], dtype=np.int64))
    rest = list(in_syms)
    for d in known:
        if isinstance(d, int):
            continue
        if d not in rest:
            return fresh_dim("reshape")
        rest.remove(d)
    if q == 0 or p % q:
        if rest or any(not isinstance(d, int) for d in known):
            return fresh_dim("reshape")
        raise ShapeError(f"Reshape cannot infer -1: {list(in_shape)} ({p} elements) into {target}")
    if not rest:
        return p // q
    if p // q == 1 and len(rest) == 1:
        return rest[0]
    return fresh_dim("reshape")


def resolve_reshape(in_shape: tuple[Dim, ...], target: list[int], allowzero: bool) -> tuple[Dim, ...]:
    """ONNX Reshape: 0 copies the input dim (unless allowzero), one -1 takes what is left."""
    if sum(1 for v in target if v == -1) > 1:
        raise ShapeError(f"Reshape target {target} has more than one -1")
    if any(v < -1 for v in target):
        raise ShapeError(f"Reshape target {target} has a negative dim other than -1")
    if allowzero and 0 in target and -1 in target:
        raise ShapeError(f"Reshape target {target} mixes 0 and -1 with allowzero, which ONNX forbids")
    out: list[Dim] = []
    for i, v in enumerate(target):
        if v == 0 and not allowzero:
            if i >= len(in_shape):
                raise ShapeError(f"Reshape target {target}: 0 at position {i} copies a dim the input "
                                 f"{list(in_shape)} does not have")
            out.append(in_shape[i])
        else:
            out.append(v)
    if -1 in out:
        k = out.index(-1)
        out[k] = _infer_minus_one(in_shape, [d for j, d in enumerate(out) if j != k], target)
    else:
        total, new = dim_product(in_shape), dim_product(out)
        if isinstance(total, int) and isinstance(new, int) and total != new:
            raise ShapeError(f"Reshape cannot turn {list(in_shape)} ({total} elements) into {target} ({new})")
    return tuple(out)


def _reshape_infer(types, attrs: ReshapeAttrs, consts):
    x, s = types
    target = _shape_operand("Reshape", s, consts[1], "shape")
    if isinstance(target, int):
        return [TensorType(x.dtype, tuple(fresh_dim("reshape") for _ in range(target)))]
    return [TensorType(x.dtype, resolve_reshape(x.shape, target, attrs.allowzero))]


def _reshape_reference(xs, attrs: ReshapeAttrs):
    x, s = xs
    shape = resolve_reshape(x.shape, [int(v) for v in s.reshape(-1)], attrs.allowzero)
    return [x.reshape(shape)]


register(OpDef("Reshape", _reshape_infer, _reshape_reference, attrs=ReshapeAttrs, min_inputs=2, max_inputs=2,
               doc="reshape to the int64 shape input (0 copies a dim unless allowzero, -1 infers one)",
               tags=frozenset({"shape", "view"})))


# ---- Flatten ------------------------------------------------------------------------------------
def _flatten_infer(types, attrs: FlattenAttrs, consts):
    (x,) = types
    if not -x.rank <= attrs.axis <= x.rank:
        raise ShapeError(f"Flatten axis {attrs.axis} is out of range for rank {x.rank}")
    axis = attrs.axis + x.rank if attrs.axis < 0 else attrs.axis
    return [TensorType(x.dtype, (dim_product(x.shape[:axis]), dim_product(x.shape[axis:])))]


def _flatten_reference(xs, attrs: FlattenAttrs):
    x = xs[0]
    axis = attrs.axis + x.ndim if attrs.axis < 0 else attrs.axis
    return [x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))]


register(OpDef("Flatten", _flatten_infer, _flatten_reference, attrs=FlattenAttrs,
               doc="reshape to 2-D around axis", tags=frozenset({"shape", "view"})))


# ---- Transpose ----------------------------------------------------------------------------------
def _perm(attrs: TransposeAttrs, rank: int) -> tuple[int, ...]:
    if attrs.perm is None:
        return tuple(reversed(range(rank)))
    if len(attrs.perm) != rank:
        raise ShapeError(f"Transpose perm {attrs.perm} does not fit rank {rank}")
    return attrs.perm


def _transpose_infer(types, attrs: TransposeAttrs, consts):
    (x,) = types
    return [TensorType(x.dtype, tuple(x.shape[p] for p in _perm(attrs, x.rank)))]


register(OpDef("Transpose", _transpose_infer,
               lambda xs, a: [np.ascontiguousarray(np.transpose(xs[0], _perm(a, xs[0].ndim)))],
               attrs=TransposeAttrs, doc="permute axes (perm=None reverses them)", tags=frozenset({"shape"})))


# ---- Squeeze / Unsqueeze ------------------------------------------------------------------------
def _squeeze_axes(shape: tuple[Dim, ...], attrs: SqueezeAttrs) -> tuple[int, ...]:
    if attrs.axes is None:
        return tuple(i for i, d in enumerate(shape) if d == 1)
    axes = normalize_axes(attrs.axes, len(shape))
    for a in axes:
        if isinstance(shape[a], int) and shape[a] != 1:
            raise ShapeError(f"Squeeze axis {a} has size {shape[a]}, not 1")
    return axes


def _squeeze_infer(types, attrs: SqueezeAttrs, consts):
    (x,) = types
    axes = _squeeze_axes(x.shape, attrs)
    return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]


register(OpDef("Squeeze", _squeeze_infer,
               lambda xs, a: [np.squeeze(xs[0], axis=_squeeze_axes(xs[0].shape, a)).copy()],
               attrs=SqueezeAttrs, doc="remove size-1 axes (all of them when axes is None)",
               tags=frozenset({"shape", "view"})))


def unsqueeze_shape(shape: tuple[Dim, ...], axes: tuple[int, ...]) -> tuple[Dim, ...]:
    rank = len(shape) + len(axes)
    norm = normalize_axes(axes, rank)
    it = iter(shape)
    return tuple(1 if i in norm else next(it) for i in range(rank))


register(OpDef("Unsqueeze", lambda t, a, c: [TensorType(t[0].dtype, unsqueeze_shape(t[0].shape, a.axes))],
               lambda xs, a: [xs[0].reshape(unsqueeze_shape(xs[0].shape, a.axes))],
               attrs=UnsqueezeAttrs, doc="insert size-1 axes at output positions axes",
               tags=frozenset({"shape", "view"})))


# ---- Concat / Split -----------------------------------------------------------------------------
def _concat_infer(types, attrs: ConcatAttrs, consts):
    first = types[0]
    if not -first.rank <= attrs.axis < first.rank:
        raise ShapeError(f"Concat axis {attrs.axis} is out of range for rank {first.rank}")
    axis = attrs.axis % first.rank
    out = list(first.shape)
    for t in types[1:]:
        if t.dtype != first.dtype or t.rank != first.rank:
            raise ShapeError(f"Concat inputs must share dtype and rank, got {first} and {t}")
        for i, (a, b) in enumerate(zip(out, t.shape)):
            if i == axis:
                continue
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise ShapeError(f"Concat inputs differ on axis {i} ({a} vs {b}): {first} and {t}")
            if not isinstance(a, int) and isinstance(b, int):
                out[i] = b
    out[axis] = _dim_sum([t.shape[axis] for t in types])
    return [TensorType(first.dtype, tuple(out))]


register(OpDef("Concat", _concat_infer, lambda xs, a: [np.concatenate(xs, axis=a.axis)], attrs=ConcatAttrs,
               min_inputs=1, max_inputs=None, doc="join inputs along axis", tags=frozenset({"shape"})))


def _split_infer(types, attrs: SplitAttrs, consts):
    (x,) = types
    if not -x.rank <= attrs.axis < x.rank:
        raise ShapeError(f"Split axis {attrs.axis} is out of range for rank {x.rank}")
    axis = attrs.axis % x.rank
    d = x.shape[axis]
    if isinstance(d, int) and sum(attrs.sizes) != d:
        raise ShapeError(f"Split sizes {attrs.sizes} sum to {sum(attrs.sizes)}, but axis {axis} has size {d}")
    return [TensorType(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in attrs.sizes]


def _split_reference(xs, attrs: SplitAttrs):
    x = xs[0]
    cuts = np.cumsum(attrs.sizes)[:-1]
    return [p.copy() for p in np.split(x, cuts, axis=attrs.axis)]


register(OpDef("Split", _split_infer, _split_reference, attrs=SplitAttrs,
               doc="cut along axis into pieces of the given sizes (one output each)", tags=frozenset({"shape"})))


# ---- Slice --------------------------------------------------------------------------------------
def slice_bounds(dim: int, start: int, end: int, step: int) -> tuple[int, int, int]:
    """ONNX clamping: returns (start, end, length) with end == -1 meaning "before index 0"."""
    if step == 0:
        raise ShapeError("Slice step must not be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    length = max(0, -(-(end - start) // step))
    return start, end, length


def _slice_params(rank: int, starts, ends, axes, steps, op: str = "Slice"):
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ShapeError(f"{op} starts/ends/axes/steps have different lengths "
                         f"({len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    return normalize_axes(axes, rank), list(starts), list(ends), list(steps)


def _slice_infer(types, attrs, consts):
    x = types[0]
    operands = []
    for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
        if i < len(types) and types[i] is not None:
            operands.append(_shape_operand("Slice", types[i], consts[i], what))
        else:
            operands.append(None)
    starts, ends, axes, steps = operands
    if isinstance(axes, int):  # axes computed in the graph: any axis may change
        return [TensorType(x.dtype, tuple(fresh_dim("slice") for _ in x.shape))]
    n = starts if isinstance(starts, int) else len(starts)
    axes_n = normalize_axes(axes if axes is not None else list(range(n)), x.rank)
    out = list(x.shape)
    known = not any(isinstance(v, int) for v in (starts, ends, steps))
    for j, a in enumerate(axes_n):
        d = x.shape[a]
        if not known:
            out[a] = fresh_dim("slice")
            continue
        st = steps[j] if steps is not None else 1
        if isinstance(d, int):
            out[a] = slice_bounds(d, starts[j], ends[j], st)[2]
        elif st == 1 and starts[j] == 0 and ends[j] >= 2 ** 31 - 1:
            out[a] = d
        else:
            out[a] = fresh_dim("slice")
    return [TensorType(x.dtype, tuple(out))]


def _slice_reference(xs, attrs):
    x = xs[0]
    vals = [None if i >= len(xs) or xs[i] is None else [int(v) for v in xs[i].reshape(-1)] for i in range(1, 5)]
    axes, starts, ends, steps = _slice_params(x.ndim, vals[0], vals[1], vals[2], vals[3])
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        s, e, _ = slice_bounds(x.shape[a], s, e, st)
        index[a] = slice(s, e if e >= 0 else None, st)
    return [x[tuple(index)].copy()]


register(OpDef("Slice", _slice_infer, _slice_reference, attrs=NoAttrs, min_inputs=3, max_inputs=5,
               doc="Slice(x, starts, ends, axes?, steps?) with ONNX clamping and negative steps",
               tags=frozenset({"shape"})))


# ---- Expand / Tile ------------------------------------------------------------------------------
def _expand_infer(types, attrs, consts):
    x, s = types
    target = _shape_operand("Expand", s, consts[1], "shape")
    if isinstance(target, int):
        rank = max(target, x.rank)
        return [TensorType(x.dtype, tuple(fresh_dim("expand") for _ in range(rank)))]
    return [TensorType(x.dtype, broadcast_shapes(x.shape, tuple(target)))]


def _expand_reference(xs, attrs):
    x, s = xs
    shape = broadcast_shapes(x.shape, tuple(int(v) for v in s.reshape(-1)))
    return [np.broadcast_to(x, shape).copy()]


register(OpDef("Expand", _expand_infer, _expand_reference, attrs=NoAttrs, min_inputs=2, max_inputs=2,
               doc="broadcast x to the int64 shape input (bidirectional, like ONNX)", tags=frozenset({"shape"})))


def _tile_infer(types, attrs, consts):
    x, r = types
    reps = _shape_operand("Tile", r, consts[1], "repeats")
    if isinstance(reps, int):
        if reps != x.rank:
            raise ShapeError(f"Tile repeats has {reps} entries for an input of rank {x.rank}")
        return [TensorType(x.dtype, tuple(fresh_dim("tile") for _ in x.shape))]
    if len(reps) != x.rank or any(v < 0 for v in reps):
        raise ShapeError(f"Tile repeats {reps} must have one entry >= 0 per input axis ({x.rank})")
    return [TensorType(x.dtype, tuple(dim_product((d, k)) for d, k in zip(x.shape, reps)))]


register(OpDef("Tile", _tile_infer, lambda xs, a: [np.tile(xs[0], tuple(int(v) for v in xs[1].reshape(-1)))],
               attrs=NoAttrs, min_inputs=2, max_inputs=2, doc="repeat x along each axis",
               tags=frozenset({"shape"})))


# ---- Pad ----------------------------------------------------------------------------------------
def _pad_infer(types, attrs: PadAttrs, consts):
    (x,) = types
    r = x.rank
    if len(attrs.pads) != 2 * r:
        raise ShapeError(f"Pad pads {attrs.pads} need 2 x rank = {2 * r} entries")
    out = []
    for i, d in enumerate(x.shape):
        b, e = attrs.pads[i], attrs.pads[i + r]
        if isinstance(d, int):
            size = d + b + e
            if size < 0:
                raise ShapeError(f"Pad crops axis {i} of size {d} below zero ({b}, {e})")
            if attrs.mode == "reflect" and (max(b, e) > d - 1) and (b > 0 or e > 0):
                raise ShapeError(f"Pad reflect needs pads < axis size; axis {i} has size {d}, pads ({b}, {e})")
            out.append(size)
        else:
            out.append(d if b == e == 0 else _dim_sum([d, b + e]))
    return [TensorType(x.dtype, tuple(out))]


def _pad_reference(xs, attrs: PadAttrs):
    x = xs[0]
    r = x.ndim
    begin, end = attrs.pads[:r], attrs.pads[r:]
    # negative pads crop first; the remaining positive pads are then added by np.pad
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if attrs.mode == "constant":
        y = np.pad(x, widths, mode="constant", constant_values=np.asarray(attrs.value).astype(x.dtype))
    else:
        y = np.pad(x, widths, mode=attrs.mode)
    return [y]


register(OpDef("Pad", _pad_infer, _pad_reference, attrs=PadAttrs,
               doc="pad (or crop, with negative pads) every axis; modes constant, reflect, edge, wrap",
               tags=frozenset({"shape"})))


# ---- Shape / Size -------------------------------------------------------------------------------
def _shape_range(rank: int, attrs: ShapeAttrs) -> range:
    return range(rank)[attrs.start:attrs.end]


register(OpDef("Shape", lambda t, a, c: [TensorType(DType.int64, (len(_shape_range(t[0].rank, a)),))],
               lambda xs, a: [np.array([xs[0].shape[i] for i in _shape_range(xs[0].ndim, a)], dtype=np.int64)],
               attrs=ShapeAttrs, doc="the input's shape (dims start..end) as int64", tags=frozenset({"shape"})))
register(OpDef("Size", lambda t, a, c: [TensorType(DType.int64, ())],
               lambda xs, a: [np.array(xs[0].size, dtype=np.int64)],
               attrs=NoAttrs, doc="number of elements as an int64 scalar", tags=frozenset({"shape"})))


# ---- ConstantOfShape / Range --------------------------------------------------------------------
def _constant_of_shape_infer(types, attrs: ConstantOfShapeAttrs, consts):
    (s,) = types
    target = _shape_operand("ConstantOfShape", s, consts[0], "shape")
    if isinstance(target, int):
        return [TensorType(attrs.dtype, tuple(fresh_dim("filled") for _ in range(target)))]
    if any(v < 0 for v in target):
        raise ShapeError(f"ConstantOfShape shape {target} has a negative dim")
    return [TensorType(attrs.dtype, tuple(target))]


register(OpDef("ConstantOfShape", _constant_of_shape_infer,
               lambda xs, a: [np.full(tuple(int(v) for v in xs[0].reshape(-1)), a.value, dtype=a.dtype.np)],
               attrs=ConstantOfShapeAttrs, doc="a tensor filled with value, shape from the int64 input",
               tags=frozenset({"shape"})))


def _range_infer(types, attrs, consts):
    for i, t in enumerate(types):
        if t.rank != 0 and not (t.rank == 1 and t.shape[0] == 1):
            raise ShapeError(f"Range operands must be scalars, input {i} is {t}")
        if t.dtype != types[0].dtype:
            raise ShapeError(f"Range operands must share one dtype, got {types[0].dtype.short} and {t.dtype.short}")
    if all(c is not None for c in consts):
        start, limit, delta = (np.asarray(c).reshape(()).item() for c in consts)
        if delta == 0:
            raise ShapeError("Range delta must not be 0")
        return [TensorType(types[0].dtype, (_range_length(start, limit, delta),))]
    return [TensorType(types[0].dtype, (fresh_dim("range"),))]


def _range_length(start, limit, delta) -> int:
    return max(int(np.ceil((limit - start) / delta)), 0)


def _range_reference(xs, attrs):
    start, limit, delta = (np.asarray(x).reshape(()) for x in xs)
    n = _range_length(start.item(), limit.item(), delta.item())
    return [(start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)]


register(OpDef("Range", _range_infer, _range_reference, attrs=NoAttrs, min_inputs=3, max_inputs=3,
               doc="start + i * delta for i < ceil((limit - start) / delta)", tags=frozenset({"shape"})))


# ---- DepthToSpace / SpaceToDepth ----------------------------------------------------------------
def _depth_to_space_infer(types, attrs: DepthToSpaceAttrs, consts):
    (x,) = types
    if x.rank != 4:
        raise ShapeError(f"DepthToSpace needs an NCHW input, got {x}")
    n, c, h, w = x.shape
    b = attrs.blocksize
    if isinstance(c, int) and c % (b * b):
        raise ShapeError(f"DepthToSpace: {c} channels do not divide by blocksize^2 = {b * b}")
    c_out = c // (b * b) if isinstance(c, int) else f"{c}/{b * b}"
    return [TensorType(x.dtype, (n, c_out, dim_product((h, b)), dim_product((w, b))))]


def depth_to_space_view(shape, blocksize: int, mode: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """DepthToSpace is a transpose of a 6-D view of x: returns (view shape, permutation). Shared by the
    reference and the backends so that the two orders (DCR, CRD) are written down once."""
    n, c, h, w = shape
    b = blocksize
    if mode == "DCR":
        return (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2)
    return (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3)


def space_to_depth_view(shape, blocksize: int, mode: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """SpaceToDepth as a transpose of the view (n, c, h/b, b, w/b, b): DCR puts the block offsets outside
    the channel index, CRD inside (the inverse of DepthToSpace CRD)."""
    n, c, h, w = shape
    b = blocksize
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    return (n, c, h // b, b, w // b, b), perm


def _depth_to_space_reference(xs, attrs: DepthToSpaceAttrs):
    x = xs[0]
    n, c, h, w = x.shape
    b = attrs.blocksize
    view, perm = depth_to_space_view(x.shape, b, attrs.mode)
    return [x.reshape(view).transpose(perm).reshape(n, c // (b * b), h * b, w * b)]


def _space_to_depth_infer(types, attrs: SpaceToDepthAttrs, consts):
    (x,) = types
    if x.rank != 4:
        raise ShapeError(f"SpaceToDepth needs an NCHW input, got {x}")
    n, c, h, w = x.shape
    b = attrs.blocksize
    for name, d in (("height", h), ("width", w)):
        if isinstance(d, int) and d % b:
            raise ShapeError(f"SpaceToDepth: {name} {d} does not divide by blocksize {b}")
    sp = tuple(d // b if isinstance(d, int) else f"{d}/{b}" for d in (h, w))
    return [TensorType(x.dtype, (n, dim_product((c, b * b))) + sp)]


def _space_to_depth_reference(xs, attrs: SpaceToDepthAttrs):
    x = xs[0]
    n, c, h, w = x.shape
    b = attrs.blocksize
    view, perm = space_to_depth_view(x.shape, b, attrs.mode)
    return [x.reshape(view).transpose(perm).reshape(n, c * b * b, h // b, w // b)]


register(OpDef("DepthToSpace", _depth_to_space_infer, _depth_to_space_reference, attrs=DepthToSpaceAttrs,
               doc="move channel blocks into spatial blocks (DCR or CRD order)", tags=frozenset({"shape"})))
register(OpDef("SpaceToDepth", _space_to_depth_infer, _space_to_depth_reference, attrs=SpaceToDepthAttrs,
               doc="move spatial blocks into channels", tags=frozenset({"shape"})))
