"""Constant folding: a node whose inputs are all constants becomes a constant.

The value is computed with the op's own NumPy reference under the reference interpreter's precision rule
(low-precision float inputs are widened to float32, the result is rounded to the declared output
dtype), so a folded graph computes exactly what the interpreter would have.

Not folded, on purpose:

* outputs larger than ``MAX_FOLD_BYTES`` (64 MiB): a ``ConstantOfShape``/``Expand`` that materialises a
  huge broadcast would bloat the weights file for nothing; the broadcast stays in the graph;
* nodes whose declared output type is not static and whose computed value turns out too large (checked
  after computing, before anything is stored).

Two variants: ``PASS`` folds everything that qualifies; ``SHAPE_ONLY_PASS`` (used at O0) folds only the
nodes that compute *shape operands* (the shape input of Reshape, Expand, Tile, ConstantOfShape, the
Slice bounds, Range's scalars), so that shapes become static without otherwise touching the model.
"""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import DType
from ..ir.graph import Graph, Node
from ..ir.registry import get_op
from .manager import Pass, PassContext, PassResult

MAX_FOLD_BYTES = 64 << 20

# input positions that carry a shape (or shape-like bounds) rather than data
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Slice": (1, 2, 3, 4),
    "Range": (0, 1, 2),
}

_LOW_FLOATS = frozenset({DType.float16, DType.bfloat16, DType.float8_e4m3fn, DType.float8_e5m2})


def _widen(a: np.ndarray) -> np.ndarray:
    if a.dtype in {d.np for d in _LOW_FLOATS}:
        return a.astype(np.float32)
    return a


def evaluate_node(graph: Graph, node: Node) -> list[np.ndarray] | None:
    """The node's outputs computed from its constant inputs, or None when one would exceed the cap."""
    for o in node.outputs:
        t = graph.types[o]
        if t.is_static and t.nbytes > MAX_FOLD_BYTES:
            return None
    args = [_widen(graph.constants[i]) if i else None for i in node.inputs]
    with np.errstate(all="ignore"):
        results = get_op(node.op).reference(args, node.attrs)
    values = []
    for o, v in zip(node.outputs, results):
        v = np.asarray(v)
        declared = graph.types[o]
        if v.dtype != declared.dtype.np:
            v = v.astype(declared.dtype.np)
        if v.nbytes > MAX_FOLD_BYTES:
            return None
        values.append(v)
    return values


def _shape_cone(graph: Graph) -> set[int]:
    """Ids of the nodes whose outputs flow, directly or not, into a shape operand."""
    producers = graph.producers()
    wanted: set[str] = set()
    for n in graph.nodes:
        for pos in SHAPE_OPERANDS.get(n.op, ()):
            if pos < len(n.inputs) and n.inputs[pos]:
                wanted.add(n.inputs[pos])
    cone: set[int] = set()
    stack = list(wanted)
    while stack:
        v = stack.pop()
        p = producers.get(v)
        if p is None or id(p) in cone:
            continue
        cone.add(id(p))
        stack.extend(i for i in p.inputs if i)
    return cone


def _fold(graph: Graph, ctx: PassContext, shape_only: bool) -> PassResult:
    cone = _shape_cone(graph) if shape_only else None
    g = graph.copy()
    kept = []
    folded: dict[str, int] = {}
    for node in graph.nodes:
        foldable = (all(i in g.constants for i in node.inputs if i)
                    and (cone is None or id(node) in cone))
        values = evaluate_node(g, node) if foldable else None
        if values is None:
            kept.append(node)
            continue
        for o, v in zip(node.outputs, values):
            del g.types[o]
            g.add_constant(v, name=o)
        folded[node.op] = folded.get(node.op, 0) + 1
    if not folded:
        return PassResult(graph, False, "")
    g.nodes = kept
    g.remove_unused_values()
    total = sum(folded.values())
    detail = ", ".join(f"{n} {op}" for op, n in sorted(folded.items()))
    return PassResult(g, True, f"folded {total} node{'s' if total != 1 else ''} into constants ({detail})")


def run(graph: Graph, ctx: PassContext) -> PassResult:
    return _fold(graph, ctx, shape_only=False)


def run_shape_only(graph: Graph, ctx: PassContext) -> PassResult:
    return _fold(graph, ctx, shape_only=True)


PASS = Pass("fold_constants", run, __doc__)
SHAPE_ONLY_PASS = Pass("fold_shape_constants", run_shape_only, __doc__)
