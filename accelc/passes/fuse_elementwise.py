"""Fuses maximal groups of elementwise ops into single ``FusedElementwise`` nodes.

Why: every unfused elementwise op is one pass over memory; a chain like ``sigmoid(x) * x + b`` costs
three round trips where one suffices. Backends generate one loop per ``FusedElementwise`` from its
``Step`` program.

What is grouped: ops tagged ``elementwise`` in their ``OpDef`` (and existing ``FusedElementwise``
nodes, whose programs are inlined), grown backwards from a root through producers whose outputs are
read only inside the group and are not graph outputs. A value read several times inside the group
(``x * sigmoid(x)`` where ``x`` is itself computed in the group) is allowed: the program is a DAG over
a register file, not a tree. Broadcasting is allowed; the fused output is the root's value, with its
exact shape and dtype. Groups of fewer than two ops are left alone.

Guarantees: the program applies the same references in the same order on the same values, so results
are bit-identical to the unfused graph under the reference interpreter; intermediate low-precision
values are the one exception (a fused program keeps them in float32, as a backend would); inputs of
the fused node are deduplicated; no group creates a cycle, because nothing outside a group reads a
non-root member.
"""
from __future__ import annotations

import heapq

from ..errors import VerificationError
from ..ir.graph import Graph, Node
from ..ir.ops.elementwise import ELEMENTWISE_OPS
from ..ir.ops.fused import FusedElementwiseAttrs, Step
from ..ir.registry import get_op, has_op
from .manager import Pass, PassContext, PassResult


def _fusible(node: Node) -> bool:
    if node.op == "FusedElementwise":
        return True
    if len(node.outputs) != 1 or any(not i for i in node.inputs) or not has_op(node.op):
        return False
    return "elementwise" in get_op(node.op).tags and node.op in ELEMENTWISE_OPS


def _find_groups(graph: Graph) -> list[list[Node]]:
    index = {id(n): k for k, n in enumerate(graph.nodes)}
    producers = graph.producers()
    users = graph.consumers()
    graph_outputs = set(graph.outputs)
    assigned: set[int] = set()
    groups: list[list[Node]] = []
    for root in reversed(graph.nodes):
        if id(root) in assigned or not _fusible(root):
            continue
        members: dict[int, Node] = {id(root): root}
        heap: list[tuple[int, int]] = []

        def push_producers(n: Node) -> None:
            for i in n.inputs:
                p = producers.get(i)
                if p is not None:
                    heapq.heappush(heap, (-index[id(p)], index[id(p)]))

        push_producers(root)
        while heap:
            _, k = heapq.heappop(heap)
            p = graph.nodes[k]
            if id(p) in members or id(p) in assigned or not _fusible(p):
                continue
            out = p.outputs[0]
            # users all have larger indices and were decided before p: the decision is final
            if out in graph_outputs or not all(id(u) in members for u in users.get(out, [])):
                continue
            members[id(p)] = p
            push_producers(p)
        if len(members) >= 2:
            ordered = sorted(members.values(), key=lambda n: index[id(n)])
            groups.append(ordered)
            assigned.update(members)
    return groups


def _program(members: list[Node]) -> tuple[list[str], tuple[Step, ...]]:
    """External inputs (deduplicated, first-use order) and the step program computing the root."""
    inside = {o for n in members for o in n.outputs}
    externals: list[str] = []
    for n in members:
        for i in n.inputs:
            if i not in inside and i not in externals:
                externals.append(i)
    # registers: externals first, then one per step; remember which register holds each value
    register = {v: k for k, v in enumerate(externals)}
    steps: list[Step] = []
    for n in members:
        args = [register[i] for i in n.inputs]
        if n.op == "FusedElementwise":
            # inline: the inner program's registers are its inputs, then its own steps
            inner = list(args)
            for s in n.attrs.steps:
                steps.append(Step(s.op, tuple(inner[a] for a in s.args), s.attrs))
                inner.append(len(externals) + len(steps) - 1)
        else:
            steps.append(Step(n.op, tuple(args), n.attrs))
        register[n.outputs[0]] = len(externals) + len(steps) - 1
    return externals, tuple(steps)


def run(graph: Graph, ctx: PassContext) -> PassResult:
    groups = _find_groups(graph)
    if not groups:
        return PassResult(graph, False, "")
    g = graph.copy()
    replacement: dict[int, Node | None] = {}
    fused_ops = 0
    for members in groups:
        root = members[-1]
        out = root.outputs[0]
        externals, steps = _program(members)
        declared = g.types.pop(out)
        g.add_node("FusedElementwise", externals, FusedElementwiseAttrs(steps=steps), outputs=[out],
                   name=g.fresh_name("fused_elementwise"))
        new_node = g.nodes.pop()
        inferred = g.types[out]
        if inferred.dtype != declared.dtype or tuple(inferred.shape) != tuple(declared.shape):
            raise VerificationError(f"fused program for {out} infers {inferred}, the unfused graph says {declared}")
        g.types[out] = declared
        for n in members:
            replacement[id(n)] = None
        replacement[id(root)] = new_node
        fused_ops += len(steps)
    g.nodes = [replacement.get(id(n), n) for n in g.nodes if replacement.get(id(n), n) is not None]
    g.remove_unused_values()
    return PassResult(g, True, f"fused {fused_ops} elementwise ops into {len(groups)} FusedElementwise "
                               f"node{'s' if len(groups) != 1 else ''}")


PASS = Pass("fuse_elementwise", run, __doc__)
