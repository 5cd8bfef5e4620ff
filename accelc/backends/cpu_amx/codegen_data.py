"""Lowering of data-movement ops: views, copies, Concat/Split, gathers and compile-time values.

Every op whose output element is a fixed input element (or padding) — Transpose, Slice, Expand, Tile,
Pad, DepthToSpace, SpaceToDepth — lowers to one support kernel, ``index_copy``: per output axis a table
of input element offsets computed here at compile time (-1 marks padding). Axes whose tables are
arithmetic progressions that chain are merged first, so a Slice of rows or a broadcast of rows becomes a
memcpy per row. Reshape-like ops alias their input's bytes when the memory plan allows.
"""
from __future__ import annotations

import numpy as np

from ...ir import DType, Graph, Node
from ...ir.ops.shape import depth_to_space_view, space_to_depth_view
from .codegen_context import LowerCtx, lowering, numel, static_shape, storage_ctype


def contiguous_strides(shape) -> list[int]:
    st, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        st[d] = acc
        acc *= int(shape[d])
    return st


# ---- index_copy ----------------------------------------------------------------------------------------
def _as_progression(t: np.ndarray):
    """(start, step) when the table is an arithmetic progression without padding, else None."""
    if t.size == 0 or (t < 0).any():
        return None
    if t.size == 1:
        return int(t[0]), 0
    step = int(t[1] - t[0])
    if np.array_equal(t, t[0] + step * np.arange(t.size, dtype=np.int64)):
        return int(t[0]), step
    return None


def merge_tables(tables: list[np.ndarray]) -> list[np.ndarray]:
    """Drops size-1 axes (folding their offset into a neighbour) and merges chained progressions."""
    tables = [np.asarray(t, dtype=np.int64) for t in tables]
    if not tables:
        return tables
    # fold size-1 axes into the next (or previous) axis
    folded: list[np.ndarray] = []
    carry = 0
    padded_all = False
    for t in tables:
        if t.size == 1:
            if t[0] < 0:
                padded_all = True
            carry += int(t[0]) if t[0] >= 0 else 0
            continue
        folded.append(np.where(t >= 0, t + carry, -1))
        carry = 0
    if padded_all:
        return [np.full(max(numel(t.size for t in tables), 1), -1, dtype=np.int64)]
    if not folded:
        return [np.array([carry], dtype=np.int64)]
    if carry:
        folded[-1] = np.where(folded[-1] >= 0, folded[-1] + carry, -1)
    merged = [folded[0]]
    for t in folded[1:]:
        prev = merged[-1]
        p, q = _as_progression(prev), _as_progression(t)
        if p is not None and q is not None and p[1] == q[1] * t.size:
            start = p[0] + q[0]
            merged[-1] = start + q[1] * np.arange(prev.size * t.size, dtype=np.int64)
        else:
            merged.append(t)
    return merged


def emit_index_copy(ctx: LowerCtx, src: str, out: str, tables: list[np.ndarray], fill: np.ndarray | None,
                    what: str) -> None:
    """index_copy from value ``src`` into value ``out``."""
    emit_index_copy_ptr(ctx, ctx.ptr(src), ctx.ptr(out), ctx.ctype(out), ctx.dtype(out).itemsize,
                        numel(ctx.shape(out)), tables, fill, what)


def emit_index_copy_ptr(ctx: LowerCtx, src_ptr: str, out_ptr: str, ctype: str, esize: int, n_out: int,
                        tables: list[np.ndarray], fill: np.ndarray | None, what: str) -> None:
    if n_out == 0:
        ctx.em.comment("empty output: nothing to copy")
        return
    tables = merge_tables(tables)
    dims = [t.size for t in tables]
    last = _as_progression(tables[-1])
    contiguous = last is not None and last[1] == 1
    em = ctx.em
    em.comment(f"{what}: {len(dims)}-D offset tables (element offsets into the input; -1 = padding)")
    names = []
    for d, t in enumerate(tables):
        name = em.fresh(f"axis{d}")
        em.line(f"const int64_t* {name} = {ctx.weight(t, 'int64_t')};  // {t.size} entries")
        names.append(name)
    dims_name, tables_name = em.fresh("dims"), em.fresh("tables")
    em.line(f"static const int64_t {dims_name}[] = {{{', '.join(map(str, dims))}}};")
    em.line(f"const int64_t* const {tables_name}[] = {{{', '.join(names)}}};")
    fill_arg = "nullptr"
    if fill is not None:
        em.line(f"const {ctype} fill_value = {ctx.weight(fill.reshape(1), ctype)}[0];")
        fill_arg = "&fill_value"
    em.line(f"index_copy({esize}, {len(dims)}, {dims_name}, {tables_name}, {src_ptr}, {out_ptr}, {fill_arg}, "
            f"{'true' if contiguous else 'false'});")


def _check_movable(graph: Graph, node: Node) -> str | None:
    for v in [i for i in node.inputs if i][:1] + list(node.outputs):
        if graph.types[v].dtype.itemsize not in (1, 2, 4, 8):
            return f"{graph.types[v].dtype.short} values are not byte-addressable"
    return None


# ---- views --------------------------------------------------------------------------------------------
@lowering("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", check=_check_movable)
def lower_view(ctx: LowerCtx, node: Node) -> None:
    src, out = node.inputs[0], node.outputs[0]
    if ctx.alias(out, src):
        ctx.em.comment(f"{out} is a view of {src} (no copy)")
        return
    nbytes = numel(ctx.shape(out)) * ctx.dtype(out).itemsize
    ctx.em.line(f"std::memcpy({ctx.ptr(out)}, {ctx.ptr(src)}, {nbytes});")


@lowering("Transpose", check=_check_movable)
def lower_transpose(ctx: LowerCtx, node: Node) -> None:
    src, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(src)
    perm = node.attrs.perm if node.attrs.perm is not None else tuple(reversed(range(len(shape))))
    perm = [p % len(shape) for p in perm] if shape else []
    moved = [p for p in perm if shape[p] != 1]
    if moved == sorted(moved):   # only size-1 axes move: the bytes are already in order
        lower_view(ctx, node)
        return
    swap = swapped_groups(shape, perm)
    if swap is not None:
        batch, rows, cols, inner = swap
        ctx.em.comment(f"transpose perm={tuple(perm)}: {batch} x [{rows}, {cols}] blocks of {inner} swapped")
        ctx.em.line(f"transpose_blocks({ctx.dtype(src).itemsize}, {batch}, {rows}, {cols}, {inner}, {ctx.ptr(src)}, "
                    f"{ctx.ptr(out)});")
        return
    st = contiguous_strides(shape)
    tables = [np.arange(shape[p], dtype=np.int64) * st[p] for p in perm]
    emit_index_copy(ctx, src, out, tables, None, f"transpose perm={tuple(perm)}")


def swapped_groups(shape, perm) -> tuple[int, int, int, int] | None:
    """(batch, rows, cols, inner) when the transpose, with size-1 axes dropped and axes that stay neighbours
    merged, is [batch, rows, cols, inner] -> [batch, cols, rows, inner] (any of batch/inner may be 1);
    None for other permutations."""
    kept = [p for p in perm if shape[p] != 1]
    groups: list[list[int]] = []
    for p in kept:
        if groups and p == groups[-1][-1] + 1:
            groups[-1].append(p)
        else:
            groups.append([p])
    order = sorted(range(len(groups)), key=lambda g: groups[g][0])   # input order of the output's groups
    sizes = [numel([shape[a] for a in groups[g]]) for g in order]
    out_pos = [order.index(g) for g in range(len(groups))]            # output group k is input group out_pos[k]
    patterns = {(1, 0): (None, 0, 1, None), (0, 2, 1): (0, 1, 2, None), (1, 0, 2): (None, 0, 1, 2),
                (0, 2, 1, 3): (0, 1, 2, 3)}
    pat = patterns.get(tuple(out_pos))
    if pat is None:
        return None
    return tuple(1 if i is None else sizes[i] for i in pat)


def _slice_params(graph: Graph, node: Node):
    x = node.inputs[0]
    shape = static_shape(graph, x)
    vals = []
    for k in range(1, 5):
        v = node.inputs[k] if k < len(node.inputs) else ""
        vals.append(None if not v else graph.constants[v].astype(np.int64).reshape(-1).tolist())
    starts, ends, axes, steps = vals
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    ranges = [range(d) for d in shape]
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a % len(shape)
        ranges[a] = range(*slice(int(s), int(e), int(st)).indices(shape[a]))
    return ranges


def _check_slice(graph: Graph, node: Node) -> str | None:
    for v in node.inputs[1:]:
        if v and v not in graph.constants:
            return (f"Slice input '{v}' is computed at run time; the CPU backend needs starts/ends/axes/steps "
                    f"known at compile time (run shape simplification with fixed input shapes)")
    return _check_movable(graph, node)


@lowering("Slice", check=_check_slice)
def lower_slice(ctx: LowerCtx, node: Node) -> None:
    src, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(src)
    st = contiguous_strides(shape)
    ranges = _slice_params(ctx.graph, node)
    cut = [d for d, r in enumerate(ranges) if r != range(shape[d])]
    if len(cut) == 1 and ranges[cut[0]].step == 1 and len(ranges[cut[0]]):
        # one axis cut with step 1: a strided copy of rows (e.g. the columns of a wide GEMM's result)
        emit_axis_range_copy(ctx, src, out, cut[0], ranges[cut[0]].start)
        return
    tables = [np.array(list(r), dtype=np.int64) * st[d] for d, r in enumerate(ranges)]
    emit_index_copy(ctx, src, out, tables, None, "slice")


@lowering("Expand", check=_check_movable)
def lower_expand(ctx: LowerCtx, node: Node) -> None:
    src, out = node.inputs[0], node.outputs[0]
    in_shape, out_shape = ctx.shape(src), ctx.shape(out)
    padded = (1,) * (len(out_shape) - len(in_shape)) + in_shape
    st = contiguous_strides(padded)
    tables = [np.arange(n, dtype=np.int64) * (st[d] if padded[d] != 1 else 0) for d, n in enumerate(out_shape)]
    emit_index_copy(ctx, src, out, tables, None, f"expand {in_shape} -> {out_shape}")


@lowering("Tile", check=_check_movable)
def lower_tile(ctx: LowerCtx, node: Node) -> None:
    src, out = node.inputs[0], node.outputs[0]
    in_shape, out_shape = ctx.shape(src), ctx.shape(out)
    st = contiguous_strides(in_shape)
    tables = [(np.arange(n, dtype=np.int64) % max(in_shape[d], 1)) * st[d] for d, n in enumerate(out_shape)]
    emit_index_copy(ctx, src, out, tables, None, f"tile {in_shape} -> {out_shape}")


def _pad_index(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "edge":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    # reflect (mirror without repeating the edge)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    r = np.mod(i, period)
    return np.where(r < n, r, period - r)


def _check_pad(graph: Graph, node: Node) -> str | None:
    x = node.inputs[0]
    shape = static_shape(graph, x)
    pads = node.attrs.pads
    if node.attrs.mode != "constant":
        for d, n in enumerate(shape):
            if n == 0 and (pads[d] > 0 or pads[d + len(shape)] > 0):
                return f"Pad mode {node.attrs.mode} of an empty axis"
    return _check_movable(graph, node)


@lowering("Pad", check=_check_pad)
def lower_pad(ctx: LowerCtx, node: Node) -> None:
    src, out = node.inputs[0], node.outputs[0]
    in_shape, out_shape = ctx.shape(src), ctx.shape(out)
    pads, mode, r = node.attrs.pads, node.attrs.mode, len(in_shape)
    st = contiguous_strides(in_shape)
    tables = []
    for d, n in enumerate(out_shape):
        idx = _pad_index(np.arange(n, dtype=np.int64) - pads[d], in_shape[d], mode)
        tables.append(np.where(idx >= 0, idx * st[d], -1))
    fill = np.array([node.attrs.value]).astype(ctx.dtype(out).np) if mode == "constant" else None
    if fill is not None and fill.dtype == np.bool_:
        fill = fill.astype(np.uint8)
    emit_index_copy(ctx, src, out, tables, fill, f"pad mode={mode} pads={pads}")


def _blocks_tables(view_shape, perm) -> list[np.ndarray]:
    st = contiguous_strides(view_shape)
    return [np.arange(view_shape[p], dtype=np.int64) * st[p] for p in perm]


@lowering("DepthToSpace", "SpaceToDepth", check=_check_movable)
def lower_block_rearrangement(ctx: LowerCtx, node: Node) -> None:
    src, out = node.inputs[0], node.outputs[0]
    view_of = depth_to_space_view if node.op == "DepthToSpace" else space_to_depth_view
    view, perm = view_of(ctx.shape(src), node.attrs.blocksize, node.attrs.mode)
    emit_index_copy(ctx, src, out, _blocks_tables(view, perm), None,
                    f"{node.op} {node.attrs.mode} block={node.attrs.blocksize}")


# ---- Concat / Split -------------------------------------------------------------------------------------
@lowering("Concat", check=_check_movable)
def lower_concat(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    out_shape = ctx.shape(out)
    axis = node.attrs.axis % len(out_shape)
    esize = ctx.dtype(out).itemsize
    outer, inner = numel(out_shape[:axis]), numel(out_shape[axis + 1:])
    offset = 0
    for v in node.inputs:
        if not v:
            continue
        n = ctx.shape(v)[axis]
        if n and outer and inner:
            ctx.em.line(f"copy_rows({outer}, {n * inner * esize}, {ctx.ptr(v)}, {n * inner * esize}, "
                        f"reinterpret_cast<unsigned char*>({ctx.ptr(out)}) + {offset * inner * esize}, "
                        f"{out_shape[axis] * inner * esize});  // {v}")
        offset += n


@lowering("Split", check=_check_movable)
def lower_split(ctx: LowerCtx, node: Node) -> None:
    src = node.inputs[0]
    axis = node.attrs.axis % len(ctx.shape(src))
    offset = 0
    for v in node.outputs:
        emit_axis_range_copy(ctx, src, v, axis, offset)
        offset += ctx.shape(v)[axis]


def emit_axis_range_copy(ctx: LowerCtx, src: str, out: str, axis: int, start: int) -> None:
    """``out`` = ``src`` restricted to indices start .. start + out's size along ``axis``: one strided copy
    of rows (a row is everything from ``axis`` inwards)."""
    in_shape = ctx.shape(src)
    esize = ctx.dtype(src).itemsize
    outer, inner, n = numel(in_shape[:axis]), numel(in_shape[axis + 1:]), ctx.shape(out)[axis]
    if n and outer and inner:
        ctx.em.line(f"copy_rows({outer}, {n * inner * esize}, reinterpret_cast<const unsigned char*>("
                    f"{ctx.ptr(src)}) + {start * inner * esize}, {in_shape[axis] * inner * esize}, "
                    f"{ctx.ptr(out)}, {n * inner * esize});  // {out}")


# ---- Gather / GatherElements ----------------------------------------------------------------------------
def _check_gather(graph: Graph, node: Node) -> str | None:
    if graph.types[node.inputs[1]].dtype not in (DType.int32, DType.int64):
        return f"indices of dtype {graph.types[node.inputs[1]].dtype.short}; the CPU backend takes int32/int64"
    if node.op == "GatherElements" and len(static_shape(graph, node.inputs[0])) > 16:
        return "GatherElements of rank > 16"
    return _check_movable(graph, node)


def _fail_on(ctx: LowerCtx, call: str) -> None:
    ctx.em.line(f"if (int rc = {call}) return rc;")


@lowering("Gather", check=_check_gather)
def lower_gather(ctx: LowerCtx, node: Node) -> None:
    data, idx = node.inputs[:2]
    out = node.outputs[0]
    shape = ctx.shape(data)
    axis = node.attrs.axis % len(shape)
    outer, inner = numel(shape[:axis]), numel(shape[axis + 1:])
    n_idx = numel(ctx.shape(idx))
    if numel(ctx.shape(out)) == 0:
        return
    dt = "DT::I32" if ctx.dtype(idx) == DType.int32 else "DT::I64"
    _fail_on(ctx, f"gather({ctx.dtype(data).itemsize}, {outer}, {shape[axis]}, {inner}, {ctx.ptr(data)}, {dt}, "
                  f"{ctx.ptr(idx)}, {n_idx}, {ctx.ptr(out)})")


@lowering("GatherElements", check=_check_gather)
def lower_gather_elements(ctx: LowerCtx, node: Node) -> None:
    data, idx = node.inputs[:2]
    out = node.outputs[0]
    dshape, ishape = ctx.shape(data), ctx.shape(idx)
    if numel(ishape) == 0:
        return
    axis = node.attrs.axis % len(dshape)
    dt = "DT::I32" if ctx.dtype(idx) == DType.int32 else "DT::I64"
    ctx.em.line(f"static const int64_t dims[] = {{{', '.join(map(str, ishape))}}};")
    ctx.em.line(f"static const int64_t data_dims[] = {{{', '.join(map(str, dshape))}}};")
    _fail_on(ctx, f"gather_elements({ctx.dtype(data).itemsize}, {len(dshape)}, dims, data_dims, {axis}, "
                  f"{ctx.ptr(data)}, {dt}, {ctx.ptr(idx)}, {ctx.ptr(out)})")


# ---- values known at compile time, computed ones ----------------------------------------------------------
def _emit_constant_output(ctx: LowerCtx, out: str, value: np.ndarray, what: str) -> None:
    value = np.ascontiguousarray(value.astype(ctx.dtype(out).np).reshape(ctx.shape(out)))
    if value.dtype == np.bool_:
        value = value.astype(np.uint8)
    if value.size == 0:
        return
    ctype = storage_ctype(ctx.dtype(out))
    if value.size > 1 and (value.reshape(-1) == value.reshape(-1)[0]).all():
        ctx.em.line(f"fill({value.itemsize}, {value.size}, {ctx.weight(value.reshape(-1)[:1], ctype)}, "
                    f"{ctx.ptr(out)});  // {what}")
    else:
        ctx.em.line(f"std::memcpy({ctx.ptr(out)}, {ctx.weight(value, ctype)}, {value.nbytes});  // {what}")


@lowering("Shape")
def lower_shape(ctx: LowerCtx, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    end = node.attrs.end if node.attrs.end is not None else len(shape)
    value = np.array(shape[slice(node.attrs.start, end)], dtype=np.int64)
    _emit_constant_output(ctx, node.outputs[0], value, f"shape of {node.inputs[0]} (static)")


@lowering("Size")
def lower_size(ctx: LowerCtx, node: Node) -> None:
    value = np.array(numel(ctx.shape(node.inputs[0])), dtype=np.int64)
    _emit_constant_output(ctx, node.outputs[0], value, f"size of {node.inputs[0]} (static)")


@lowering("ConstantOfShape")
def lower_constant_of_shape(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    value = np.full(ctx.shape(out), node.attrs.value, dtype=ctx.dtype(out).np)
    _emit_constant_output(ctx, out, value, f"constant {node.attrs.value!r}")


def _check_range(graph: Graph, node: Node) -> str | None:
    if graph.types[node.outputs[0]].dtype.short not in ("f32", "f64", "i16", "i32", "i64"):
        return f"Range of dtype {graph.types[node.outputs[0]].dtype.short}"
    return None


@lowering("Range", check=_check_range)
def lower_range(ctx: LowerCtx, node: Node) -> None:
    start, _, delta = node.inputs[:3]
    out = node.outputs[0]
    n = numel(ctx.shape(out))
    ctype = ctx.ctype(out)
    if ctx.is_const(start) and ctx.is_const(delta):
        s, d = ctx.const(start).reshape(()).item(), ctx.const(delta).reshape(()).item()
        value = (np.arange(n) * d + s) if ctx.dtype(out).is_int else np.array(
            [s + i * d for i in range(n)], dtype=np.float64)
        _emit_constant_output(ctx, out, value, "range (static)")
        return
    ctx.em.line(f"const {ctype} start = {ctx.ptr(start)}[0], delta = {ctx.ptr(delta)}[0];")
    with ctx.em.block(f"for (int64_t i = 0; i < {n}; ++i)"):
        ctx.em.line(f"{ctx.ptr(out)}[i] = {ctype}(start + {ctype}(i) * delta);")


# ---- Trilu / OneHot: generated loops ------------------------------------------------------------------------
def _check_trilu(graph: Graph, node: Node) -> str | None:
    if len(node.inputs) > 1 and node.inputs[1] and node.inputs[1] not in graph.constants:
        return "Trilu with a run-time k; the CPU backend needs k known at compile time"
    return _check_movable(graph, node)


@lowering("Trilu", check=_check_trilu)
def lower_trilu(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    k = int(ctx.const(node.inputs[1]).reshape(())) if len(node.inputs) > 1 and node.inputs[1] else 0
    batch, rows, cols = numel(shape[:-2]), shape[-2], shape[-1]
    keep = f"j - i >= {k}" if node.attrs.upper else f"j - i <= {k}"
    em = ctx.em
    em.comment(f"keep the {'upper' if node.attrs.upper else 'lower'} triangle (k = {k}), zero elsewhere")
    with em.block(f"for (int64_t bi = 0; bi < {batch * rows}; ++bi)"):
        em.line(f"const int64_t i = bi % {rows};")
        em.line(f"const {ctx.ctype(x)}* src = {ctx.ptr(x)} + bi * {cols};")
        em.line(f"{ctx.ctype(out)}* dst = {ctx.ptr(out)} + bi * {cols};")
        with em.block(f"for (int64_t j = 0; j < {cols}; ++j)"):
            em.line(f"dst[j] = ({keep}) ? src[j] : {ctx.ctype(out)}(0);")


def _check_one_hot(graph: Graph, node: Node) -> str | None:
    idx, depth, values = node.inputs[:3]
    if depth not in graph.constants:
        return "OneHot with a run-time depth; the CPU backend needs it known at compile time"
    if graph.types[idx].dtype not in (DType.int32, DType.int64, DType.int8, DType.uint8, DType.int16):
        return f"OneHot indices of dtype {graph.types[idx].dtype.short}"
    return _check_movable(graph, node)


@lowering("OneHot", check=_check_one_hot)
def lower_one_hot(ctx: LowerCtx, node: Node) -> None:
    idx, depth_v, values = node.inputs[:3]
    out = node.outputs[0]
    depth = int(ctx.const(depth_v).reshape(()))
    ishape = ctx.shape(idx)
    axis = node.attrs.axis % (len(ishape) + 1)
    outer, inner = numel(ishape[:axis]), numel(ishape[axis:])
    t = ctx.ctype(out)
    em = ctx.em
    em.line(f"const {t} off = {ctx.ptr(values)}[0], on = {ctx.ptr(values)}[1];")
    with em.block(f"for (int64_t o = 0; o < {outer}; ++o)"):
        with em.block(f"for (int64_t d = 0; d < {depth}; ++d)"):
            with em.block(f"for (int64_t j = 0; j < {inner}; ++j)"):
                em.line(f"int64_t c = int64_t({ctx.ptr(idx)}[o * {inner} + j]);")
                em.line(f"if (c < 0) c += {depth};")
                em.line(f"{ctx.ptr(out)}[(o * {depth} + d) * {inner} + j] = c == d ? on : off;")
