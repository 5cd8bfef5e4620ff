"""Convolution and pooling: Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Layout is ONNX's NCHW (N, C, spatial...) for 1-D, 2-D and 3-D. Auto-padding (``SAME_UPPER``...) is
resolved to explicit pads by the frontend, so pads here are always explicit, ONNX order
``(begin_0, begin_1, ..., end_0, end_1, ...)``.

Empty tuples in the attrs mean the ONNX defaults (kernel from the weight, strides and dilations 1, pads
0); ``ConvAttrs.geometry(nd, kernel)`` turns them into full per-axis tuples, which is what inference,
references and backends use, so there is one place that resolves defaults.

The references are vectorised (``sliding_window_view`` + ``tensordot``/``einsum``), never Python loops
over pixels: the interpreter must run ResNet-50 at 224x224 in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import NoAttrs, OpDef, register
from ..types import Dim, TensorType
from ...errors import ShapeError


def _check_int_tuple(name: str, values: tuple, minimum: int) -> None:
    if not isinstance(values, tuple):
        raise ValueError(f"{name} must be a tuple of ints, got {type(values).__name__}")
    for v in values:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
            raise ValueError(f"{name} must hold ints >= {minimum}, got {values}")


@dataclass(frozen=True)
class ConvGeometry:
    """Fully resolved per-spatial-axis window parameters (every tuple has one entry per spatial axis)."""
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    dilations: tuple[int, ...]

    def output_size(self, axis: int, size: Dim, ceil_mode: bool = False) -> Dim:
        """ONNX output length of one spatial axis (symbolic in, symbolic out)."""
        if not isinstance(size, int):
            return f"{size}_out{axis}"
        span = self.dilations[axis] * (self.kernel[axis] - 1) + 1
        padded = size + self.pads_begin[axis] + self.pads_end[axis]
        if padded < span:
            raise ShapeError(f"spatial axis {axis}: padded input {padded} is smaller than the window {span}")
        s = self.strides[axis]
        if ceil_mode:
            out = -(-(padded - span) // s) + 1
            # ONNX/PyTorch: the last window must start inside the input or the begin padding
            if (out - 1) * s >= size + self.pads_begin[axis]:
                out -= 1
            return out
        return (padded - span) // s + 1


@dataclass(frozen=True)
class _WindowAttrs:
    """Fields shared by Conv, ConvTranspose and pooling; empty tuples mean the ONNX defaults."""
    kernel_shape: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()

    def __post_init__(self):
        _check_int_tuple("kernel_shape", self.kernel_shape, 1)
        _check_int_tuple("strides", self.strides, 1)
        _check_int_tuple("pads", self.pads, 0)
        _check_int_tuple("dilations", self.dilations, 1)
        if len(self.pads) % 2:
            raise ValueError(f"pads must list begin and end pads for each spatial axis (even length), "
                             f"got {self.pads}")
        n = {len(t) for t in (self.kernel_shape, self.strides, self.dilations) if t}
        if self.pads:
            n.add(len(self.pads) // 2)
        if len(n) > 1:
            raise ValueError(f"kernel_shape {self.kernel_shape}, strides {self.strides}, pads {self.pads} and "
                             f"dilations {self.dilations} disagree on the number of spatial axes")
        if n and n.pop() not in (1, 2, 3):
            raise ValueError("only 1-D, 2-D and 3-D windows are supported")

    def geometry(self, nd: int, kernel: tuple[int, ...] | None = None) -> ConvGeometry:
        """Resolves defaults for ``nd`` spatial axes; ``kernel`` (from the weight) fills kernel_shape."""
        k = self.kernel_shape or kernel
        if k is None:
            raise ShapeError("kernel_shape is required when the kernel size cannot be read from a weight")
        for name, t, per in (("kernel_shape", k, 1), ("strides", self.strides, 1),
                             ("dilations", self.dilations, 1), ("pads", self.pads, 2)):
            if t and len(t) != nd * per:
                raise ShapeError(f"{name} {tuple(t)} does not fit an input with {nd} spatial axes")
        pads = self.pads or (0,) * (2 * nd)
        return ConvGeometry(tuple(int(v) for v in k), self.strides or (1,) * nd, tuple(pads[:nd]),
                            tuple(pads[nd:]), self.dilations or (1,) * nd)


@dataclass(frozen=True)
class ConvAttrs(_WindowAttrs):
    """Conv(x, w, b?): ``group`` splits channels; w is (M, C/group, k...)."""
    group: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.group, int) or self.group < 1:
            raise ValueError(f"group must be an int >= 1, got {self.group!r}")


@dataclass(frozen=True)
class ConvTransposeAttrs(_WindowAttrs):
    """ConvTranspose(x, w, b?): w is (C, M/group, k...). ``output_padding`` adds to the end of each axis.

    ONNX's ``output_shape`` attribute is resolved to pads by the frontend.
    """
    group: int = 1
    output_padding: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.group, int) or self.group < 1:
            raise ValueError(f"group must be an int >= 1, got {self.group!r}")
        _check_int_tuple("output_padding", self.output_padding, 0)


@dataclass(frozen=True)
class PoolAttrs(_WindowAttrs):
    """MaxPool / AveragePool. ``kernel_shape`` is required. MaxPool's optional Indices output is not in the
    IR (the frontend refuses a model that uses it)."""
    ceil_mode: bool = False
    count_include_pad: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not self.kernel_shape:
            raise ValueError("kernel_shape is required for pooling")
        if not isinstance(self.ceil_mode, bool) or not isinstance(self.count_include_pad, bool):
            raise ValueError("ceil_mode and count_include_pad must be bools")


# ---- Conv ---------------------------------------------------------------------------------------
def _spatial_windows(xp: np.ndarray, geo: ConvGeometry, out_shape: tuple[int, ...]) -> np.ndarray:
    """A strided view (N, C, out..., k...) of the padded input: window (o, k) reads
    ``xp[..., o*stride + k*dilation]``. No data is copied."""
    nd = len(geo.kernel)
    spans = tuple(d * (k - 1) + 1 for d, k in zip(geo.dilations, geo.kernel))
    win = np.lib.stride_tricks.sliding_window_view(xp, spans, axis=tuple(range(2, 2 + nd)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_shape, geo.strides))
    index += tuple(slice(None, None, d) for d in geo.dilations)
    return win[index]


def _pad_spatial(x: np.ndarray, geo: ConvGeometry, value, extra_end: tuple[int, ...] = ()) -> np.ndarray:
    extra_end = extra_end or (0,) * len(geo.kernel)
    widths = [(0, 0), (0, 0)] + [(b, e + x_) for b, e, x_ in zip(geo.pads_begin, geo.pads_end, extra_end)]
    if not any(b or e for b, e in widths):
        return x
    return np.pad(x, widths, mode="constant", constant_values=value)


def _check_float(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise ShapeError(f"{op} needs a floating-point input, got {t.dtype.short}")


def conv_infer(types, attrs: ConvAttrs, consts, op: str = "Conv") -> list[TensorType]:
    """Output type of Conv(x, w, b?); shared with FusedConv."""
    x, w = types[0], types[1]
    b = types[2] if len(types) > 2 else None
    _check_float(op, x)
    if x.rank < 3 or w.rank != x.rank:
        raise ShapeError(f"{op} needs x (N,C,spatial...) and w (M,C/group,k...) of one rank >= 3, got {x} and {w}")
    if w.dtype != x.dtype:
        raise ShapeError(f"{op} needs x and w of one dtype, got {x.dtype.short} and {w.dtype.short}")
    nd = x.rank - 2
    wk = w.shape[2:]
    if attrs.kernel_shape and all(isinstance(d, int) for d in wk) and tuple(wk) != attrs.kernel_shape:
        raise ShapeError(f"{op} kernel_shape {attrs.kernel_shape} disagrees with the weight's {tuple(wk)}")
    if not attrs.kernel_shape and not all(isinstance(d, int) for d in wk):
        raise ShapeError(f"{op} weight {w} has symbolic kernel dims; kernel_shape is needed")
    geo = attrs.geometry(nd, tuple(wk) if not attrs.kernel_shape else None)
    c, m, cg = x.shape[1], w.shape[0], w.shape[1]
    g = attrs.group
    if isinstance(c, int) and isinstance(cg, int) and c != cg * g:
        raise ShapeError(f"{op}: input has {c} channels but weight expects {cg} x group {g} = {cg * g}")
    if isinstance(m, int) and m % g:
        raise ShapeError(f"{op}: {m} output channels do not divide into {g} groups")
    if b is not None and (b.rank != 1 or (isinstance(b.shape[0], int) and isinstance(m, int) and b.shape[0] != m)):
        raise ShapeError(f"{op} bias must be 1-D of size {m}, got {b}")
    spatial = tuple(geo.output_size(i, d) for i, d in enumerate(x.shape[2:]))
    return [TensorType(x.dtype, (x.shape[0], m) + spatial)]


def conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: ConvAttrs) -> np.ndarray:
    """Grouped N-D convolution as one batched matmul over im2col columns: (G, M/G, C/G*K) @ (N, G, C/G*K, O)."""
    nd = x.ndim - 2
    geo = attrs.geometry(nd, tuple(w.shape[2:]))
    out_sp = tuple(geo.output_size(i, d) for i, d in enumerate(x.shape[2:]))
    n, c = x.shape[:2]
    m, g = w.shape[0], attrs.group
    win = _spatial_windows(_pad_spatial(x, geo, 0), geo, out_sp)            # (N, C, O..., K...)
    ksize, osize = int(np.prod(geo.kernel)), int(np.prod(out_sp))
    perm = (0, 1) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(2, 2 + nd))
    cols = np.ascontiguousarray(win.transpose(perm)).reshape(n, g, (c // g) * ksize, osize)
    wm = w.reshape(g, m // g, (c // g) * ksize)
    y = np.matmul(wm, cols).reshape((n, m) + out_sp)
    if b is not None:
        y = y + b.reshape((1, m) + (1,) * nd)
    return y.astype(x.dtype, copy=False)


register(OpDef("Conv", conv_infer, lambda xs, a: [conv_reference(xs[0], xs[1], xs[2] if len(xs) > 2 else None, a)],
               attrs=ConvAttrs, min_inputs=2, max_inputs=3,
               doc="N-D grouped, strided, dilated convolution, NCHW", tags=frozenset({"conv"})))


# ---- ConvTranspose ------------------------------------------------------------------------------
def _conv_transpose_geometry(attrs: ConvTransposeAttrs, nd: int, wk) -> tuple[ConvGeometry, tuple[int, ...]]:
    geo = attrs.geometry(nd, tuple(wk) if not attrs.kernel_shape else None)
    op = attrs.output_padding or (0,) * nd
    if len(op) != nd:
        raise ShapeError(f"output_padding {attrs.output_padding} does not fit {nd} spatial axes")
    return geo, op


def _conv_transpose_infer(types, attrs: ConvTransposeAttrs, consts):
    x, w = types[0], types[1]
    b = types[2] if len(types) > 2 else None
    _check_float("ConvTranspose", x)
    if x.rank < 3 or w.rank != x.rank:
        raise ShapeError(f"ConvTranspose needs x (N,C,spatial...) and w (C,M/group,k...) of one rank >= 3, "
                         f"got {x} and {w}")
    nd = x.rank - 2
    if not attrs.kernel_shape and not all(isinstance(d, int) for d in w.shape[2:]):
        raise ShapeError("ConvTranspose weight has symbolic kernel dims; kernel_shape is needed")
    geo, opad = _conv_transpose_geometry(attrs, nd, w.shape[2:])
    c, cw = x.shape[1], w.shape[0]
    if isinstance(c, int) and isinstance(cw, int) and c != cw:
        raise ShapeError(f"ConvTranspose: input has {c} channels, weight has {cw}")
    if isinstance(c, int) and c % attrs.group:
        raise ShapeError(f"ConvTranspose: {c} input channels do not divide into {attrs.group} groups")
    m = w.shape[1] * attrs.group if isinstance(w.shape[1], int) else f"{w.shape[1]}*{attrs.group}"
    if b is not None and (b.rank != 1 or (isinstance(b.shape[0], int) and isinstance(m, int) and b.shape[0] != m)):
        raise ShapeError(f"ConvTranspose bias must be 1-D of size {m}, got {b}")
    spatial = []
    for i, d in enumerate(x.shape[2:]):
        if not isinstance(d, int):
            spatial.append(f"{d}_up{i}")
            continue
        size = geo.strides[i] * (d - 1) + opad[i] + geo.dilations[i] * (geo.kernel[i] - 1) + 1 \
            - geo.pads_begin[i] - geo.pads_end[i]
        if size <= 0:
            raise ShapeError(f"ConvTranspose output axis {i} would have size {size}; pads are too large")
        spatial.append(size)
    return [TensorType(x.dtype, (x.shape[0], m) + tuple(spatial))]


def _conv_transpose_reference(xs, attrs: ConvTransposeAttrs):
    """Scatter form: for each kernel tap, one batched matmul writes a strided slice of the full output,
    which is then cropped by the pads. The loop runs over kernel taps (<= 27 for 3x3x3), not pixels."""
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    nd = x.ndim - 2
    geo, opad = _conv_transpose_geometry(attrs, nd, w.shape[2:])
    n, c = x.shape[:2]
    g = attrs.group
    mg = w.shape[1]
    in_sp = x.shape[2:]
    full = tuple(s * (i - 1) + d * (k - 1) + 1 + op
                 for s, i, d, k, op in zip(geo.strides, in_sp, geo.dilations, geo.kernel, opad))
    y = np.zeros((n, g, mg) + full, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    xg = x.reshape(n, g, c // g, -1)                                       # (N, G, Cg, I)
    wg = w.reshape((g, c // g, mg) + tuple(geo.kernel))                    # (G, Cg, Mg, K...)
    for tap in np.ndindex(*geo.kernel):
        wt = np.swapaxes(wg[(slice(None),) * 3 + tap], 1, 2)              # (G, Mg, Cg)
        contrib = np.matmul(wt, xg).reshape((n, g, mg) + tuple(in_sp))
        dst = tuple(slice(k * d, k * d + (i - 1) * s + 1, s)
                    for k, d, i, s in zip(tap, geo.dilations, in_sp, geo.strides))
        y[(slice(None),) * 3 + dst] += contrib
    crop = tuple(slice(pb, f - pe) for pb, pe, f in zip(geo.pads_begin, geo.pads_end, full))
    y = y.reshape((n, g * mg) + full)[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return [np.ascontiguousarray(y).astype(x.dtype, copy=False)]


register(OpDef("ConvTranspose", _conv_transpose_infer, _conv_transpose_reference, attrs=ConvTransposeAttrs,
               min_inputs=2, max_inputs=3, doc="N-D transposed (fractionally strided) convolution, NCHW",
               tags=frozenset({"conv"})))


# ---- pooling ------------------------------------------------------------------------------------
def _pool_infer_factory(op: str):
    def infer(types, attrs: PoolAttrs, consts):
        (x,) = types
        if op == "AveragePool":
            _check_float(op, x)
        if x.rank < 3:
            raise ShapeError(f"{op} needs an (N, C, spatial...) input, got {x}")
        geo = attrs.geometry(x.rank - 2)
        spatial = tuple(geo.output_size(i, d, attrs.ceil_mode) for i, d in enumerate(x.shape[2:]))
        return [TensorType(x.dtype, x.shape[:2] + spatial)]
    return infer


def _pool_setup(x: np.ndarray, attrs: PoolAttrs):
    geo = attrs.geometry(x.ndim - 2)
    out_sp = tuple(geo.output_size(i, d, attrs.ceil_mode) for i, d in enumerate(x.shape[2:]))
    # ceil_mode may need windows that run past the end padding: pad further, but never count it
    extra = tuple(max(0, (o - 1) * s + d * (k - 1) + 1 - (i + pb + pe))
                  for o, s, d, k, i, pb, pe in zip(out_sp, geo.strides, geo.dilations, geo.kernel,
                                                   x.shape[2:], geo.pads_begin, geo.pads_end))
    return geo, out_sp, extra


def _max_pool_reference(xs, attrs: PoolAttrs):
    x = xs[0]
    geo, out_sp, extra = _pool_setup(x, attrs)
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win = _spatial_windows(_pad_spatial(x, geo, low, extra), geo, out_sp)
    nd = len(out_sp)
    return [np.max(win, axis=tuple(range(-nd, 0))).astype(x.dtype, copy=False)]


def _avg_pool_reference(xs, attrs: PoolAttrs):
    x = xs[0]
    geo, out_sp, extra = _pool_setup(x, attrs)
    nd = len(out_sp)
    axes = tuple(range(-nd, 0))
    total = np.sum(_spatial_windows(_pad_spatial(x, geo, 0, extra), geo, out_sp), axis=axes)
    # the divisor counts the window cells that lie in the input (plus the explicit pads when
    # count_include_pad), computed by pooling a mask of ones the same way
    sp = x.shape[2:]
    if attrs.count_include_pad:
        mask = np.ones((1, 1) + tuple(i + b + e for i, b, e in zip(sp, geo.pads_begin, geo.pads_end)), x.dtype)
        mask = np.pad(mask, [(0, 0), (0, 0)] + [(0, e) for e in extra])
        mask_geo = ConvGeometry(geo.kernel, geo.strides, (0,) * nd, (0,) * nd, geo.dilations)
    else:
        mask = _pad_spatial(np.ones((1, 1) + tuple(sp), x.dtype), geo, 0, extra)
        mask_geo = geo
    count = np.sum(_spatial_windows(mask, mask_geo, out_sp), axis=axes)
    return [(total / np.maximum(count, 1)).astype(x.dtype, copy=False)]


register(OpDef("MaxPool", _pool_infer_factory("MaxPool"), _max_pool_reference, attrs=PoolAttrs,
               doc="N-D max pooling with pads, dilations and ceil_mode", tags=frozenset({"pool"})))
register(OpDef("AveragePool", _pool_infer_factory("AveragePool"), _avg_pool_reference, attrs=PoolAttrs,
               doc="N-D average pooling; count_include_pad decides whether pads count in the divisor",
               tags=frozenset({"pool"})))


def _global_pool_infer(types, attrs, consts):
    (x,) = types
    if x.rank < 3:
        raise ShapeError(f"global pooling needs an (N, C, spatial...) input, got {x}")
    return [TensorType(x.dtype, x.shape[:2] + (1,) * (x.rank - 2))]


def _global_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


register(OpDef("GlobalAveragePool", _global_pool_infer,
               lambda xs, a: [np.mean(xs[0], axis=_global_axes(xs[0]), keepdims=True).astype(xs[0].dtype)],
               attrs=NoAttrs, doc="mean over all spatial axes", tags=frozenset({"pool"})))
register(OpDef("GlobalMaxPool", _global_pool_infer,
               lambda xs, a: [np.max(xs[0], axis=_global_axes(xs[0]), keepdims=True)],
               attrs=NoAttrs, doc="max over all spatial axes", tags=frozenset({"pool"})))
