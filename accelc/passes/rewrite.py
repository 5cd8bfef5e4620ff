"""Graph edits shared by the passes, each keeping the graph's signature (input and output names) intact.

The one subtle point: a graph output is a *name* the runtime and the artifact signature expose. When a
rewrite makes an output value equal to another value (``y = Identity(x)``, a CSE hit, ``Reshape`` to
the same shape), the output must keep its name. ``replace_value`` does that by renaming the surviving
value to the output's name when the surviving value is interior; when it is itself a graph input or
another output, the rewrite is impossible without a copy, and ``can_replace`` says so, so that passes
leave such nodes alone instead of trading one copy for another forever.
"""
from __future__ import annotations

import dataclasses
from ..ir.graph import Graph


def can_replace(graph: Graph, old: str, new: str) -> bool:
    """Whether every use of ``old`` can read ``new`` without changing the graph's signature."""
    if old == new:
        return False
    if old not in graph.outputs:
        return True
    return new not in graph.inputs and new not in graph.outputs


def replace_value(graph: Graph, old: str, new: str) -> str:
    """Makes every reader of ``old`` read ``new`` instead and returns the name the value now has.

    ``old``'s definition must already be gone (the producer removed, or about to be: callers remove it
    before running DCE). If ``old`` is a graph output, ``new`` is renamed to ``old`` instead, so the
    output keeps its name; ``can_replace`` must hold.
    """
    if old not in graph.outputs:
        graph.replace_all_uses(old, new)
        return new
    if not can_replace(graph, old, new):
        raise ValueError(f"cannot forward graph output '{old}' to '{new}' without a copy")
    graph.nodes = [n for n in graph.nodes if old not in n.outputs]
    graph.types.pop(old, None)
    graph.constants.pop(old, None)
    rename_value(graph, new, old)
    return old


def rename_value(graph: Graph, old: str, new: str) -> None:
    """Renames value ``old`` (its definition, its uses, its type, its constant) to the unused name ``new``."""
    nodes = []
    for n in graph.nodes:
        if old in n.outputs or old in n.inputs:
            n = dataclasses.replace(n, inputs=tuple(new if i == old else i for i in n.inputs),
                                    outputs=tuple(new if o == old else o for o in n.outputs))
        nodes.append(n)
    graph.nodes = nodes
    graph.types = {(new if k == old else k): v for k, v in graph.types.items()}
    if old in graph.constants:
        graph.constants = {(new if k == old else k): v for k, v in graph.constants.items()}
    graph.inputs = [new if v == old else v for v in graph.inputs]
    graph.outputs = [new if v == old else v for v in graph.outputs]


def use_counts(graph: Graph) -> dict[str, int]:
    """How many times each value is read (node inputs plus graph outputs)."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        for i in n.inputs:
            if i:
                counts[i] = counts.get(i, 0) + 1
    for o in graph.outputs:
        counts[o] = counts.get(o, 0) + 1
    return counts
