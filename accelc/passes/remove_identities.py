"""Removes ops that return their input unchanged.

Rewrites ``y -> x`` for:

* ``Identity(x)`` (the frontend maps ONNX Identity and inference-mode Dropout to it);
* ``Cast(x, to=dtype of x)``;
* ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x``, ``x / 1`` where the other operand is a constant
  whose every element is exactly that value, *and* broadcasting leaves ``x``'s shape and dtype unchanged
  (``x[4] + zeros[3,4]`` is a broadcast, not an identity, and stays).

Guarantees: values are bit-identical except for the sign of zero (``-0.0 + 0.0`` is ``+0.0``), which is
what every inference engine's algebraic simplifier also accepts; graph output names are kept; an
identity whose removal would make an output alias an input or another output stays (a copy is needed).
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from .manager import Pass, PassContext, PassResult
from .rewrite import can_replace, replace_value

# op -> ((position of x, position of the neutral constant, neutral value), ...)
_NEUTRAL = {
    "Add": ((0, 1, 0), (1, 0, 0)),
    "Sub": ((0, 1, 0),),
    "Mul": ((0, 1, 1), (1, 0, 1)),
    "Div": ((0, 1, 1),),
}


def _forwarded_input(graph: Graph, node: Node) -> str | None:
    """The input this node returns unchanged, or None."""
    if node.op == "Identity":
        return node.inputs[0]
    if node.op == "Cast":
        x = node.inputs[0]
        return x if graph.types[x].dtype == graph.types[node.outputs[0]].dtype else None
    for x_pos, c_pos, neutral in _NEUTRAL.get(node.op, ()):
        x, c = node.inputs[x_pos], node.inputs[c_pos]
        if c not in graph.constants:
            continue
        arr = graph.constants[c]
        if arr.size == 0 or not np.all(arr.astype(np.float64) == neutral):
            continue
        tx, ty = graph.types[x], graph.types[node.outputs[0]]
        if tx.dtype == ty.dtype and tuple(tx.shape) == tuple(ty.shape):
            return x
    return None


def run(graph: Graph, ctx: PassContext) -> PassResult:
    g = graph.copy()
    removed: dict[str, int] = {}
    i = 0
    while i < len(g.nodes):
        node = g.nodes[i]
        src = _forwarded_input(g, node) if len(node.outputs) == 1 else None
        if src is None or not can_replace(g, node.outputs[0], src):
            i += 1
            continue
        del g.nodes[i]
        replace_value(g, node.outputs[0], src)
        removed[node.op] = removed.get(node.op, 0) + 1
    if not removed:
        return PassResult(graph, False, "")
    g.remove_unused_values()
    total = sum(removed.values())
    detail = ", ".join(f"{n} {op}" for op, n in sorted(removed.items()))
    return PassResult(g, True, f"removed {total} identity op{'s' if total != 1 else ''} ({detail})")


PASS = Pass("remove_identities", run, __doc__)
