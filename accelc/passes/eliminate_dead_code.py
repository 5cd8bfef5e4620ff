"""Dead code elimination: drops nodes none of whose outputs reach a graph output, and unused constants.

Guarantees: graph inputs are kept even when unused (they are part of the signature); every node that
contributes to an output stays, in its original order; the result has no constant and no type entry that
nothing uses. IR ops have no side effects, so liveness is the only criterion.
"""
from __future__ import annotations

from ..ir.graph import Graph
from .manager import Pass, PassContext, PassResult


def run(graph: Graph, ctx: PassContext) -> PassResult:
    live = set(graph.outputs)
    kept_reversed = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs):
            kept_reversed.append(node)
            live.update(i for i in node.inputs if i)
    dead_nodes = len(graph.nodes) - len(kept_reversed)
    dead_consts = sum(1 for c in graph.constants if c not in live)
    if dead_nodes == 0 and dead_consts == 0:
        return PassResult(graph, False, "")
    g = graph.copy()
    g.nodes = list(reversed(kept_reversed))
    g.remove_unused_values()
    parts = []
    if dead_nodes:
        parts.append(f"removed {dead_nodes} dead node{'s' if dead_nodes != 1 else ''}")
    if dead_consts:
        parts.append(f"{dead_consts} unused constant{'s' if dead_consts != 1 else ''}")
    return PassResult(g, True, ", ".join(parts))


PASS = Pass("eliminate_dead_code", run, __doc__)
