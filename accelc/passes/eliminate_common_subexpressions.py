"""Common subexpression elimination: one node per distinct computation, one constant per distinct value.

* Constants with the same dtype, shape and bytes are merged (``ir.content.ContentIndex``: a sampled hash
  finds candidates, a full comparison decides, so different weights are never merged).
* Nodes with the same ``Node.key()`` (op, inputs, attrs; the name does not count) are merged, in
  topological order, so that merging two nodes makes their users identical and those merge too in the
  same sweep.

Guarantees: every op is a pure function of its inputs and attrs, so merged values are equal; graph
inputs and output names are unchanged (a merge that would need an output to alias an input or another
output is skipped, see ``rewrite.can_replace``).
"""
from __future__ import annotations

import numpy as np

from ..ir.content import ContentIndex
from ..ir.graph import Graph
from .manager import Pass, PassContext, PassResult
from .rewrite import can_replace, rename_value


def _const_tag(a: np.ndarray) -> tuple:
    return (a.dtype.str, a.dtype.name, tuple(a.shape))


def run(graph: Graph, ctx: PassContext) -> PassResult:
    g = graph.copy()
    alias: dict[str, str] = {}          # merged value -> surviving value
    claimed: set[str] = set()           # survivors that a graph output will be renamed onto

    def mergeable(old: str, survivor: str) -> bool:
        if not can_replace(g, old, survivor):
            return False
        if old in g.outputs:
            if survivor in claimed:
                return False
            claimed.add(survivor)
        return True

    canonical_const: ContentIndex[str] = ContentIndex()
    for name, arr in g.constants.items():
        keep = canonical_const.find(arr, _const_tag(arr))
        if keep is not None and mergeable(name, keep):
            alias[name] = keep
        elif keep is None:
            canonical_const.add(arr, name, _const_tag(arr))
    merged_consts = len(alias)

    seen: dict[tuple, tuple[str, ...]] = {}
    nodes = []
    merged_nodes = 0
    for node in g.nodes:
        if any(i in alias for i in node.inputs):
            node = node.with_inputs([alias.get(i, i) for i in node.inputs])
        key = node.key()
        try:
            hash(key)
        except TypeError:           # attrs that are not hashable cannot be compared structurally
            nodes.append(node)
            continue
        prior = seen.get(key)
        if prior is not None and all(can_replace(g, o, p) for o, p in zip(node.outputs, prior)) \
                and all(mergeable(o, p) for o, p in zip(node.outputs, prior)):
            for o, p in zip(node.outputs, prior):
                alias[o] = p
            merged_nodes += 1
            continue
        seen.setdefault(key, node.outputs)
        nodes.append(node)
    if not alias:
        return PassResult(graph, False, "")
    g.nodes = nodes
    # Graph outputs keep their names: a merged output value renames its survivor instead.
    for o in list(g.outputs):
        if o in alias:
            survivor = alias[o]
            g.types.pop(o, None)
            g.constants.pop(o, None)
            g.outputs = [survivor if v == o else v for v in g.outputs]
            rename_value(g, survivor, o)
            alias = {k: (o if v == survivor else v) for k, v in alias.items() if k != o}
    g.remove_unused_values()
    parts = []
    if merged_nodes:
        parts.append(f"merged {merged_nodes} duplicate node{'s' if merged_nodes != 1 else ''}")
    if merged_consts:
        parts.append(f"{merged_consts} duplicate constant{'s' if merged_consts != 1 else ''}")
    return PassResult(g, True, ", ".join(parts))


PASS = Pass("eliminate_common_subexpressions", run, __doc__)
