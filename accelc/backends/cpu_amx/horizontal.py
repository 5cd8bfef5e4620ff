"""Horizontal fusion: GEMMs that read the same input with constant weights become one wider GEMM.

Why: a transformer computes Q, K and V (or an MLP's gate and up projections) as separate products of
one activation with three weight matrices. One product with the weights side by side reads the
activation once, starts one parallel team instead of three, and gives every thread a share of three
times the columns; for a decode step (a few rows) that is most of the cost.

Rewrite (backend-local, before attention fusion):

    y_i = FusedGemm(x, W_i, b_i)              i = 1..n, same x, same attributes, constant W_i / b_i
 -> y   = FusedGemm(x, [W_1 .. W_n], [b_1 .. b_n])
    y_i = Slice(y, last axis, offset_i .. offset_i + N_i)

Each y_i keeps its name. The Slices are free when what reads y_i is an attention (its strided view
reads through them); otherwise each is a row copy. So the rewrite is made only where it pays for
itself: when every y_i is read only by view-like ops (the Q/K/V of attention), or when the product has
few rows (decode), where the saved passes over the weights outweigh copying the small results.

Numerics: every output column is computed by the same kernel from the same column of weights and the
same input, in the same order, so the results are bit-identical to the separate products.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ...ir import Graph, Node
from ...ir.ops.fused import FusedGemmAttrs
from ...ir.registry import NoAttrs
from .codegen_context import numel, static_shape

VIEW_READERS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")
FEW_ROWS = 16


def _candidate(g: Graph, node: Node) -> bool:
    if node.op != "FusedGemm" or len(node.inputs) < 2:
        return False
    a: FusedGemmAttrs = node.attrs
    extra = node.inputs[3:] if len(node.inputs) > 3 else ()
    if a.trans_a or any(extra):
        return False
    w = node.inputs[1]
    if w not in g.constants or g.constants[w].ndim != 2 or not g.types[w].dtype.is_float:
        return False
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias:
        n = g.constants[w].shape[0 if a.trans_b else 1]
        if bias not in g.constants or numel(g.constants[bias].shape) != n or g.constants[bias].shape[-1:] != (n,):
            return False    # only a per-column bias can be laid side by side
    out = node.outputs[0]
    return g.types[out].is_static and g.types[out].dtype == g.types[node.inputs[0]].dtype


def _key(g: Graph, node: Node):
    a: FusedGemmAttrs = node.attrs
    w = g.constants[node.inputs[1]]
    k = w.shape[1] if a.trans_b else w.shape[0]
    return (node.inputs[0], k, a.alpha, a.beta, a.activation, a.compute, w.dtype.str, g.types[node.outputs[0]].dtype)


def fuse_parallel_gemms(graph: Graph) -> tuple[Graph, int]:
    """The graph with each group of sibling GEMMs merged (see the module doc) and how many groups."""
    users = graph.consumers()
    outputs = set(graph.outputs)
    groups: dict[tuple, list[Node]] = defaultdict(list)
    for node in graph.nodes:
        if _candidate(graph, node):
            groups[_key(graph, node)].append(node)
    g = graph.copy()
    index = {id(n): i for i, n in enumerate(g.nodes)}
    new_nodes: dict[int, list[Node]] = {}
    removed: set[int] = set()
    count = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        rows = numel(static_shape(graph, members[0].outputs[0])[:-1])
        views_only = all(o not in outputs and users.get(o) and all(u.op in VIEW_READERS for u in users[o])
                         for m in members for o in m.outputs)
        if not (views_only or rows <= FEW_ROWS):
            continue
        weights, biases, widths = [], [], []
        for m in members:
            w = np.asarray(graph.constants[m.inputs[1]])
            w = w.T if m.attrs.trans_b else w
            weights.append(w)
            widths.append(w.shape[1])
            b = m.inputs[2] if len(m.inputs) > 2 else ""
            # fp32 biases whatever the weights' dtype: the kernels add the bias in fp32
            biases.append(np.asarray(graph.constants[b], np.float32).reshape(-1) if b else np.zeros(w.shape[1], np.float32))
        first = members[0]
        w_name = g.add_constant(np.concatenate(weights, axis=1), g.fresh_name("fused_weight"))
        b_name = g.add_constant(np.concatenate(biases), g.fresh_name("fused_bias"))
        attrs = FusedGemmAttrs(False, False, first.attrs.alpha, first.attrs.beta, first.attrs.activation,
                               first.attrs.compute)
        # the merged product runs where the first member did: every member reads the same x, defined before it
        at = index[id(first)]
        wide = g.fresh_name(first.name + "_wide")
        out_shape = static_shape(graph, first.outputs[0])[:-1] + (sum(widths),)
        g.types[wide] = g.types[first.outputs[0]].with_shape(out_shape)
        nodes = [Node("FusedGemm", (first.inputs[0], w_name, b_name), (wide,), attrs, f"{first.name}_wide")]
        offset = 0
        for m, n in zip(members, widths):
            starts = g.add_constant(np.array([offset], np.int64), g.fresh_name("slice_start"))
            ends = g.add_constant(np.array([offset + n], np.int64), g.fresh_name("slice_end"))
            axes = g.add_constant(np.array([-1], np.int64), g.fresh_name("slice_axis"))
            nodes.append(Node("Slice", (wide, starts, ends, axes), m.outputs, NoAttrs(), f"{m.name}_columns"))
            offset += n
        new_nodes[at] = nodes
        removed.update(index[id(m)] for m in members)
        count += 1
    if not count:
        return graph, 0
    out: list[Node] = []
    for i, n in enumerate(g.nodes):
        if i in new_nodes:
            out.extend(new_nodes[i])
        elif i not in removed:
            out.append(n)
    g.nodes = out
    g.remove_unused_values()
    return g, count
