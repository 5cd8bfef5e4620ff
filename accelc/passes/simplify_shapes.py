"""Shape simplification: make every shape static and drop layout ops that do nothing.

Backends need static shapes and compile-time shape operands; frontends emit dynamic shape arithmetic
(``Shape -> Gather -> Concat -> Reshape``). Run together with ``fold_constants`` to a fixed point, this
pass resolves it. In one sweep, in topological order, it:

1. re-infers the type of every value that is not fully static, so that static input shapes and
   shape operands that became constant propagate (a refinement is kept only when it agrees with every
   dim already known and knows more of them);
2. replaces ``Shape(x)`` and ``Size(x)`` of a statically shaped ``x`` with constants;
3. gives Reshape / Expand / ConstantOfShape a constant shape operand (the static output shape) when
   theirs is still computed at run time;
4. forwards no-op layout ops: Reshape/Flatten/Squeeze/Unsqueeze/Expand/Tile whose output type equals
   the input type, Transpose with the identity permutation, Pad with all-zero pads;
5. collapses chains: a reshape-like op (Reshape, Flatten, Squeeze, Unsqueeze) of a reshape-like op
   becomes one Reshape of the original input (or nothing, when the shapes match, which covers
   Squeeze/Unsqueeze pairs that cancel); a Transpose of a Transpose becomes one Transpose with the
   composed permutation (or nothing).

Guarantees: values are unchanged (every rewrite is exact); graph output names are kept; nodes made
dead by a collapse are removed.
"""
from __future__ import annotations

import numpy as np

from ..errors import AccelcError
from ..ir.graph import Graph, Node
from ..ir.ops.shape import ReshapeAttrs
from ..ir.registry import get_op, infer_types
from ..ir.types import TensorType
from .manager import Pass, PassContext, PassResult
from .rewrite import can_replace, replace_value, use_counts

RESHAPE_LIKE = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_SAME_TYPE_NOOPS = RESHAPE_LIKE | {"Expand", "Tile"}
_SHAPE_OPERAND_FROM_OUTPUT = {"Reshape": 1, "Expand": 1, "ConstantOfShape": 0}


def _refined(old: TensorType, new: TensorType) -> TensorType | None:
    """``new`` if it agrees with ``old`` on every known dim and knows strictly more; else None."""
    if old.dtype != new.dtype or len(old.shape) != len(new.shape):
        return None
    gained = False
    for a, b in zip(old.shape, new.shape):
        if isinstance(a, int):
            if a != b:
                return None
        elif isinstance(b, int):
            gained = True
    return TensorType(old.dtype, tuple(new.shape), old.quant, old.sparsity) if gained else None


class _Sweep:
    def __init__(self, graph: Graph):
        self.g = graph
        self.counts: dict[str, int] = {}

    def note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # -- 1 --
    def refine(self, node: Node) -> None:
        g = self.g
        if all(g.types[o].is_static for o in node.outputs):
            return
        in_types = [g.types[i] if i else None for i in node.inputs]
        consts = [g.constants.get(i) if i else None for i in node.inputs]
        try:
            inferred = infer_types(get_op(node.op), in_types, node.attrs, consts)
        except AccelcError:
            return
        for o, t in zip(node.outputs, inferred):
            better = _refined(g.types[o], t)
            if better is not None:
                g.types[o] = better
                self.note("refined types")

    # -- 2 --
    def as_constant(self, node: Node) -> np.ndarray | None:
        g = self.g
        if node.op not in ("Shape", "Size"):
            return None
        t = g.types[node.inputs[0]]
        if node.op == "Size":
            return np.array(t.numel, np.int64) if t.is_static else None
        dims = t.shape[node.attrs.start:node.attrs.end] if node.attrs.end is not None \
            else t.shape[node.attrs.start:]
        if not all(isinstance(d, int) for d in dims):
            return None
        return np.array(dims, np.int64)

    # -- 4 and 5 --
    def forwarded(self, node: Node) -> str | None:
        g = self.g
        x = node.inputs[0] if node.inputs else ""
        if not x:
            return None
        out_t, in_t = g.types[node.outputs[0]], g.types[x]
        if node.op in _SAME_TYPE_NOOPS and in_t.dtype == out_t.dtype and tuple(in_t.shape) == tuple(out_t.shape):
            return x
        if node.op == "Transpose" and tuple(_perm(node, in_t.rank)) == tuple(range(in_t.rank)):
            return x
        if node.op == "Pad" and not any(node.attrs.pads):
            return x
        return None

    def collapse(self, node: Node, producers: dict[str, Node]) -> Node | str | None:
        """A replacement node for a chain ending at ``node``, or the value the chain returns unchanged."""
        g = self.g
        prev = producers.get(node.inputs[0]) if node.inputs else None
        if prev is None:
            return None
        out_t = g.types[node.outputs[0]]
        if node.op in RESHAPE_LIKE and prev.op in RESHAPE_LIKE and out_t.is_static:
            src = prev.inputs[0]
            if tuple(g.types[src].shape) == tuple(out_t.shape):
                return src
            return self.reshape_node(node, src, out_t.shape)
        if node.op == "Transpose" and prev.op == "Transpose":
            src = prev.inputs[0]
            rank = g.types[src].rank
            p1, p2 = _perm(prev, rank), _perm(node, rank)
            composed = tuple(p1[p2[i]] for i in range(rank))
            if composed == tuple(range(rank)):
                return src
            return Node("Transpose", (src,), node.outputs, type(node.attrs)(perm=composed), node.name)
        return None

    def reshape_node(self, node: Node, src: str, shape) -> Node:
        shape_const = self.g.add_constant(np.array(shape, np.int64), self.g.fresh_name("shape"))
        return Node("Reshape", (src, shape_const), node.outputs, ReshapeAttrs(allowzero=0 in shape), node.name)

    # -- 3 --
    def constant_shape_operand(self, node: Node) -> Node | None:
        pos = _SHAPE_OPERAND_FROM_OUTPUT.get(node.op)
        g = self.g
        if pos is None or node.inputs[pos] in g.constants or not g.types[node.outputs[0]].is_static:
            return None
        shape = g.types[node.outputs[0]].shape
        if node.op == "Reshape":
            return self.reshape_node(node, node.inputs[0], shape)
        const = g.add_constant(np.array(shape, np.int64), g.fresh_name("shape"))
        inputs = list(node.inputs)
        inputs[pos] = const
        return node.with_inputs(inputs)

    def replace_node(self, index: int, new: Node) -> bool:
        """Puts ``new`` (same outputs) in place of the node at ``index`` if it infers the recorded types."""
        g = self.g
        in_types = [g.types[i] if i else None for i in new.inputs]
        consts = [g.constants.get(i) if i else None for i in new.inputs]
        inferred = infer_types(get_op(new.op), in_types, new.attrs, consts)
        for o, t in zip(new.outputs, inferred):
            rec = g.types[o]
            if rec.dtype != t.dtype or tuple(rec.shape) != tuple(t.shape):
                return False
        g.nodes[index] = new
        return True


def _perm(node: Node, rank: int) -> tuple[int, ...]:
    perm = node.attrs.perm
    return tuple(perm) if perm is not None else tuple(reversed(range(rank)))


def run(graph: Graph, ctx: PassContext) -> PassResult:
    g = graph.copy()
    sweep = _Sweep(g)
    i = 0
    while i < len(g.nodes):
        node = g.nodes[i]
        sweep.refine(node)
        value = sweep.as_constant(node)
        if value is not None:
            del g.nodes[i]
            del g.types[node.outputs[0]]
            g.add_constant(value, name=node.outputs[0])
            sweep.note(f"{node.op} made constant")
            continue
        src = sweep.forwarded(node)
        if src is None and (node.op in RESHAPE_LIKE or node.op == "Transpose"):   # the chains collapse handles
            replacement = sweep.collapse(node, g.producers())
            if isinstance(replacement, str):
                src = replacement
            elif replacement is not None and sweep.replace_node(i, replacement):
                sweep.note(f"{node.op} chain collapsed")
                node = g.nodes[i]
        if src is not None and can_replace(g, node.outputs[0], src):
            del g.nodes[i]
            replace_value(g, node.outputs[0], src)
            sweep.note(f"{node.op} removed")
            continue
        fixed = sweep.constant_shape_operand(node)
        if fixed is not None and sweep.replace_node(i, fixed):
            sweep.note(f"{node.op} shape made constant")
        i += 1
    _drop_orphans(g, graph)
    g.remove_unused_values()
    if not sweep.counts:
        return PassResult(graph, False, "")
    summary = ", ".join(f"{what}: {n}" for what, n in sorted(sweep.counts.items()))
    return PassResult(g, True, summary)


def _drop_orphans(g: Graph, original: Graph) -> None:
    """Removes nodes that had users before this sweep and have none now (collapsed chain heads)."""
    used_before = use_counts(original)
    while True:
        uses = use_counts(g)
        doomed = {id(n) for n in g.nodes
                  if any(used_before.get(o) for o in n.outputs) and not any(uses.get(o) for o in n.outputs)}
        if not doomed:
            return
        g.nodes = [n for n in g.nodes if id(n) not in doomed]


PASS = Pass("simplify_shapes", run, __doc__)
