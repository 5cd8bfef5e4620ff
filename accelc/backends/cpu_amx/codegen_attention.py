"""Fused attention on the CPU: matched subgraphs -> one ``accelc_cpu.Attention`` node -> kernels' attention().

Why: exported encoders compute attention as a dozen nodes: the Q/K/V of every head are cut out of the
projection's output by Transpose/Gather/Reshape copies, scaled by Mul nodes, multiplied head by head
through a score matrix that goes to memory, soft-maxed, multiplied again and transposed back. The fused
kernel (kernels/accelc_attention.cpp) reads Q, K and V where the projection wrote them, keeps one block
of score rows per thread in cache, and writes the result where the consumer wants it.

``legalize`` (run by the backend before code generation; the IR and the artifact never see the node):

1. ``attention_match.find_attention`` finds softmax(Q K^T * scale + mask) V.
2. Each of Q, K and V is traced back through view-like producers: Transpose, Reshape / Flatten /
   Squeeze / Unsqueeze, Gather of one constant index, Slice and Split with constant bounds, and Mul/Div
   by a constant scalar (folded into the scale). A reshape that merges dimensions no single stride reads
   (PyTorch's packed in-projection merges batch and heads that way) is kept as sub-dimensions while a
   later reshape splits them again. The kernel then reads the oldest tensor whose chain ends in a
   strided view through 4-D strides [batch, head, row, column]; the copies the chain made become dead
   and are removed.
3. When the result's only reader is a Transpose that keeps the last axis last, the kernel writes the
   transposed layout directly and the Transpose disappears.

Numerics: scalar factors are applied to the fp32 scores instead of to Q and K (a reordering of
multiplications by constants); with compute bf16 both products round their operands to bf16, as the
FusedGemms they replace do.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import DType, Graph, Node
from ...passes import eliminate_dead_code
from ...passes.manager import PassContext
from ..attention_match import AttentionMatch, find_attention, replace_nodes, scalar_const
from .codegen_context import LowerCtx, lowering, static_shape
from .codegen_data import _slice_params, contiguous_strides
from .emitter import c_float

ATTENTION_OP = "accelc_cpu.Attention"
DIRECT_ROWS = 4     # kDirectRows of kernels/accelc_attention.cpp
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class View:
    """``base`` read as a strided tensor: element i is base[offset + sum(i[k] * strides[k])]."""
    base: str
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def dense_view(graph: Graph, v: str) -> View:
    shape = static_shape(graph, v)
    return View(v, 0, shape, tuple(contiguous_strides(shape)))


def reshape_strides(shape, strides, new_shape) -> tuple[int, ...] | None:
    """Strides that read ``new_shape`` from a strided tensor without a copy, or None when none exist
    (the row-major order of the new shape must walk groups of input dims that are contiguous in memory)."""
    dims = _reshape(_dims(shape, strides), tuple(shape), tuple(new_shape))
    return None if dims is None else _strides(dims)


# A logical dimension as row-major sub-dimensions (size, stride), sizes > 1: a merge of dimensions no
# single stride reads (the Q/K/V of a packed QKV projection merge batch and head this way before a later
# Reshape splits them again) stays representable until the view is read.
Dim = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Chain:
    base: str
    offset: int
    shape: tuple[int, ...]
    dims: tuple[Dim, ...]


def _dims(shape, strides) -> tuple[Dim, ...]:
    return tuple(((n, st),) if n != 1 else () for n, st in zip(shape, strides))


def _chain(view: View) -> _Chain:
    return _Chain(view.base, view.offset, view.shape, _dims(view.shape, view.strides))


def _collapse(dim: Dim) -> int | None:
    """The one stride that reads ``dim``, None if its sub-dimensions do not merge (0 for a size-1 dim)."""
    for (_, outer), (n, inner) in zip(dim, dim[1:]):
        if outer != n * inner:
            return None
    return dim[-1][1] if dim else 0


def _strides(dims: tuple[Dim, ...]) -> tuple[int, ...] | None:
    """One stride per dimension, None if a dimension's sub-dimensions do not merge."""
    strides = tuple(_collapse(d) for d in dims)
    return None if None in strides else strides


def _as_view(c: _Chain) -> View | None:
    strides = _strides(c.dims)
    return None if strides is None else View(c.base, c.offset, c.shape, strides)


def _regroup(dims: tuple[Dim, ...], new_shape: tuple[int, ...]) -> tuple[Dim, ...] | None:
    """``dims`` read as ``new_shape`` (same element count, row-major order), splitting sub-dimensions where
    a new dimension ends inside one; None when a new size does not divide the sub-dimension it cuts."""
    atoms = [a for d in dims for a in d]
    out: list[Dim] = []
    k = 0
    for n in new_shape:
        if n == 0:
            return None
        group: list[tuple[int, int]] = []
        need = n
        while need > 1:
            if k >= len(atoms):
                return None
            size, st = atoms[k]
            if size <= need:
                if need % size:
                    return None
                group.append((size, st))
                need //= size
                k += 1
            else:
                if size % need:
                    return None
                group.append((need, st * (size // need)))   # the outer part; the inner stays for the next dims
                atoms[k] = (size // need, st)
                need = 1
        out.append(tuple(group))
    return tuple(out) if k == len(atoms) else None


def _reshape(dims: tuple[Dim, ...], shape: tuple[int, ...], new_shape: tuple[int, ...]) -> tuple[Dim, ...] | None:
    """``dims`` of a tensor of ``shape`` read as ``new_shape``; None for an empty tensor or another count."""
    if any(n == 0 for n in shape) or int(np.prod(shape, dtype=np.int64)) != int(np.prod(new_shape, dtype=np.int64)):
        return None
    return _regroup(dims, new_shape)


def _apply(graph: Graph, node: Node, out: str, view: _Chain) -> _Chain | None:
    """The view of ``out`` (an output of ``node``) given the view of node.inputs[0]; None if it is a copy."""
    shape, dims, offset = list(view.shape), list(view.dims), view.offset
    out_shape = static_shape(graph, out)
    op = node.op
    if op == "Transpose":
        perm = node.attrs.perm if node.attrs.perm is not None else tuple(reversed(range(len(shape))))
        return _Chain(view.base, offset, tuple(shape[p] for p in perm), tuple(dims[p] for p in perm))
    if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"):
        new = _reshape(tuple(dims), tuple(shape), out_shape)
        return None if new is None else _Chain(view.base, offset, out_shape, new)
    if op == "Gather":
        idx = node.inputs[1]
        if idx not in graph.constants or graph.constants[idx].size != 1:
            return None
        axis = node.attrs.axis % len(shape)
        i = int(np.asarray(graph.constants[idx]).reshape(-1)[0])
        i = i + shape[axis] if i < 0 else i
        if not 0 <= i < shape[axis]:
            return None
        for size, st in reversed(dims[axis]):       # the index's digits over the sub-dimensions
            offset += (i % size) * st
            i //= size
        if graph.constants[idx].ndim == 0:
            del shape[axis], dims[axis]
        else:
            shape[axis], dims[axis] = 1, ()
        return _Chain(view.base, offset, tuple(shape), tuple(dims)) if tuple(shape) == out_shape else None
    if op in ("Slice", "Split"):
        if op == "Slice":
            if any(v and v not in graph.constants for v in node.inputs[1:]):
                return None
            ranges = list(_slice_params(graph, node))
        else:
            axis = node.attrs.axis % len(shape)
            k = list(node.outputs).index(out)
            start = sum(node.attrs.sizes[:k])
            ranges = [range(n) if a != axis else range(start, start + node.attrs.sizes[k]) for a, n in enumerate(shape)]
        for axis, r in enumerate(ranges):
            if len(r) == shape[axis] and r.step == 1:
                continue                              # the whole axis: its sub-dimensions stay
            st = _collapse(tuple(dims[axis]))
            if st is None:
                return None
            offset += (r.start if len(r) else 0) * st
            shape[axis] = len(r)
            dims[axis] = ((len(r), st * r.step),) if len(r) > 1 else ()
        return _Chain(view.base, offset, tuple(shape), tuple(dims))
    return None


VIEW_OPS = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Gather", "Slice", "Split")


def _scalar_factor(graph: Graph, node: Node, out: str) -> tuple[str, float] | None:
    """(the tensor operand, the factor it is multiplied by) of a Mul/Div of ``out``'s shape by a finite,
    non-zero scalar constant, else None."""
    if node.op not in ("Mul", "Div"):
        return None
    for i in ((1, 0) if node.op == "Mul" else (1,)):
        c = scalar_const(graph, node.inputs[i])
        x = node.inputs[1 - i]
        if c is not None and c != 0.0 and np.isfinite(c) and graph.types[x].shape == graph.types[out].shape:
            return x, (c if node.op == "Mul" else 1.0 / c)
    return None


def trace_view(graph: Graph, producers: dict[str, Node], v: str) -> tuple[View, float]:
    """The oldest fp32 tensor ``v`` can be read from through views, and the scalar factor applied on the way."""
    chain: list[tuple[Node, str, float | None]] = []   # (node, its output on the path, scalar factor), newest first
    cur = v
    while True:
        node = producers.get(cur)
        if node is None or graph.types[cur].dtype != DType.float32:
            break
        scaled = _scalar_factor(graph, node, cur)
        if scaled is not None:
            chain.append((node, cur, scaled[1]))
            cur = scaled[0]
        elif node.op in VIEW_OPS and node.inputs[0] and graph.types[node.inputs[0]].dtype == DType.float32:
            chain.append((node, cur, None))
            cur = node.inputs[0]
        else:
            break
    steps = chain[::-1]                                  # oldest first; steps[i] reads bases[i]
    bases = [cur] + [out for _, out, _ in steps]
    for start in range(len(steps) + 1):                  # the oldest base every later step reads as a view
        view, factor = _chain(dense_view(graph, bases[start])), 1.0
        for node, out, scale in steps[start:]:
            if scale is not None:   # elementwise: the same view, another factor
                view, factor = _Chain(view.base, view.offset, static_shape(graph, out), view.dims), factor * scale
                continue
            view = _apply(graph, node, out, view)
            if view is None:
                break
        final = _as_view(view) if view is not None else None
        if final is not None:
            return final, factor
    raise AssertionError("unreachable: the dense view of the value itself always reads it")


def _as4(strides: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """[batch, head, row, column] strides from those of a rank-3 ([batch*, row, column]) or rank-4 tensor."""
    return tuple(strides) if rank == 4 else (strides[0], 0, strides[1], strides[2])


@dataclass(frozen=True)
class CpuAttentionAttrs:
    """Strides are in elements of [batch, head, row, column]; the inputs are (q, k, v[, mask]) bases."""
    batch: int
    heads: int
    sq: int
    sk: int
    d: int
    dv: int
    scale: float
    bf16: bool
    q: tuple[int, ...]          # offset, then 4 strides
    k: tuple[int, ...]          # K[b, h, j, c]: row j = key, column c over d
    v: tuple[int, ...]
    mask: tuple[int, ...] | None
    out: tuple[int, ...]


def output_layout(graph: Graph, users, m: AttentionMatch) -> tuple[str, tuple[int, ...]]:
    """(the value the fused kernel writes, its [batch, head, row, column] strides): the result itself, or,
    when its only reader is a Transpose that keeps the last axis last, that Transpose's output, written
    in its layout (the Transpose then goes away)."""
    rank = m.rank
    out_value = m.pv.outputs[0]
    out_strides = _as4(dense_view(graph, out_value).strides, rank)
    readers = users.get(out_value, [])
    if len(readers) == 1 and readers[0].op == "Transpose" and out_value not in graph.outputs:
        t = readers[0]
        perm = t.attrs.perm if t.attrs.perm is not None else tuple(reversed(range(rank)))
        perm = tuple(p % rank for p in perm)
        if perm[-1] == rank - 1:
            dense = contiguous_strides(static_shape(graph, t.outputs[0]))
            st = [0] * rank
            for i, p in enumerate(perm):
                st[p] = dense[i]
            out_value, out_strides = t.outputs[0], _as4(tuple(st), rank)
    return out_value, out_strides


def k_rows(k: View, k_transposed: bool) -> View:
    """K as [.., Sk, D] (rows are keys), whichever way the product read it."""
    if not k_transposed:
        return k
    return View(k.base, k.offset, k.shape[:-2] + (k.shape[-1], k.shape[-2]),
                k.strides[:-2] + (k.strides[-1], k.strides[-2]))


def _fuse(graph: Graph, producers, users, m: AttentionMatch) -> Node | None:
    if m.compute != m.pv_compute:
        return None
    if any(graph.types[x].dtype != DType.float32 for x in (m.q, m.k, m.v, m.pv.outputs[0])):
        return None
    if m.mask is not None and graph.types[m.mask].dtype != DType.float32:
        return None
    rank = m.rank
    q, fq = trace_view(graph, producers, m.q)
    k, fk = trace_view(graph, producers, m.k)
    v, fv = trace_view(graph, producers, m.v)
    k = k_rows(k, m.k_transposed)
    batch, heads = (m.batch[0], m.batch[1]) if rank == 4 else (m.batch[0], 1)
    out_value, out_strides = output_layout(graph, users, m)
    mask_spec = None
    inputs = [q.base, k.base, v.base]
    if m.mask is not None:
        mshape = static_shape(graph, m.mask)
        full = (1,) * (rank - len(mshape)) + mshape
        dense = (0,) * (rank - len(mshape)) + tuple(contiguous_strides(mshape))
        mst = tuple(0 if d == 1 else s for d, s in zip(full, dense))
        mask_spec = (0,) + _as4(mst, rank)
        inputs.append(m.mask)
    specs = [(x.offset,) + _as4(x.strides, rank) for x in (q, k, v)]
    if any(abs(x) > INT_MAX for s in specs + [out_strides] + ([mask_spec] if mask_spec else []) for x in s):
        return None
    attrs = CpuAttentionAttrs(batch, heads, m.sq, m.sk, m.d, m.dv, float(m.scale * fq * fk), m.compute == DType.bfloat16,
                              specs[0], specs[1], specs[2], mask_spec, (0,) + tuple(out_strides))
    if fv != 1.0:
        return None   # a factor on V scales the output: keep the graph as it is (rare)
    return Node(ATTENTION_OP, tuple(inputs), (out_value,), attrs, f"attention_{m.pv.name}")


def legalize(graph: Graph) -> tuple[Graph, int]:
    """The graph with every matched attention fused into ``accelc_cpu.Attention`` (dead copies removed)."""
    matches = find_attention(graph)
    if not matches:
        return graph, 0
    producers, users = graph.producers(), graph.consumers()
    fused = [(m, n) for m in matches if (n := _fuse(graph, producers, users, m)) is not None]
    if not fused:
        return graph, 0
    g = replace_nodes(graph, fused)
    # an output-side Transpose the kernel now writes through is replaced too
    written = {n.outputs[0] for _, n in fused}
    g.nodes = [n for n in g.nodes if not (n.op == "Transpose" and n.outputs[0] in written)]
    g = eliminate_dead_code.PASS(g, PassContext()).graph
    return g, len(fused)


@lowering(ATTENTION_OP)
def lower_attention(ctx: LowerCtx, node: Node) -> None:
    a: CpuAttentionAttrs = node.attrs
    em = ctx.em
    ptrs = [ctx.ptr(v) for v in node.inputs]
    em.comment(f"softmax(Q K^T * {a.scale:g}{' + mask' if a.mask else ''}) V over {a.batch}x{a.heads} heads, "
               f"{a.sq}x{a.sk} scores, head dims {a.d}/{a.dv}, {'bf16' if a.bf16 else 'fp32'} products; Q, K, V read "
               f"in place through strides")
    em.line("AttentionArgs at;")
    em.line(f"at.batch = {a.batch}; at.heads = {a.heads}; at.sq = {a.sq}; at.sk = {a.sk}; at.d = {a.d}; at.dv = {a.dv};")
    em.line(f"at.scale = {c_float(a.scale)}; at.bf16 = {'true' if a.bf16 else 'false'};")
    for name, ptr, spec in (("q", ptrs[0], a.q), ("k", ptrs[1], a.k), ("v", ptrs[2], a.v),
                            ("mask", ptrs[3] if a.mask else None, a.mask), ("out", ctx.ptr(node.outputs[0]), a.out)):
        if spec is None:
            continue
        em.line(f"at.{name} = {ptr} + {spec[0]}; "
                + " ".join(f"at.{name}_stride[{i}] = {s};" for i, s in enumerate(spec[1:])))
    nbytes = attention_scratch_bytes(a)
    scratch = ctx.scratch(nbytes, "unsigned char", "K and V of every head, packed") if nbytes else "nullptr"
    em.line(f"attention(at, {scratch});")


def attention_scratch_bytes(a: CpuAttentionAttrs) -> int:
    """Must equal attention_scratch_bytes() of kernels/accelc_attention.cpp: both packed operands of every
    head, none for the direct (decode) path of up to DIRECT_ROWS fp32 query rows."""
    if a.sq <= DIRECT_ROWS and not a.bf16:
        return 0
    def packed(k: int, n: int) -> int:
        np16 = (n + 15) // 16 * 16
        return np16 * ((k + 31) // 32 * 32) * 2 if a.bf16 else np16 * k * 4
    per_head = packed(a.d, a.sk) + packed(a.sk, a.dv)
    return a.batch * a.heads * ((per_head + 63) // 64 * 64)
