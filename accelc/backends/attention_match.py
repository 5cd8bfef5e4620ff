"""Finding attention subgraphs, shared by the backends that fuse them (cuda, cpu_amx).

Matched on the graph after the pass pipeline, where MatMuls are FusedGemms:

    scores = MatMul|FusedGemm(q, kt)      no bias/residual/activation; alpha folds into the scale;
                                          kt = Transpose(k, swap last two) or trans_b=True on k
    scores = chain of Mul/Div by a constant scalar, then at most one Add of a mask broadcastable to
             the scores (each value used once), as separate nodes or as the steps of one
             FusedElementwise
    p      = Softmax(scores, axis=-1)
    out    = MatMul|FusedGemm(p, v)       no bias/residual/activation, alpha 1

with q, k, v of rank 3 or 4 sharing their batch dims, static shapes and float dtypes. Anything else is
left alone. Each backend decides what it can run (head-dim limits, dtypes) and builds its own node from
the match; the nodes a match replaces are listed in ``replaced``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import DType, Graph, Node
from ..ir.ops.fused import FusedGemmAttrs

FLOAT_DTYPES = (DType.float32, DType.float16, DType.bfloat16)


@dataclass(frozen=True)
class AttentionMatch:
    q: str
    k: str                 # laid out [..., Sk, D], or [..., D, Sk] when k_transposed
    k_transposed: bool
    v: str
    mask: str | None       # added to the scaled scores
    scale: float           # every scalar factor of the scores (GEMM alpha, Mul/Div chain)
    compute: DType         # the products' dtype (FusedGemm.compute of the QK^T product)
    pv_compute: DType      # the same for the P @ V product
    pv: Node               # the P @ V product: its outputs are the attention's outputs
    replaced: tuple[Node, ...]   # QK^T product, scale/mask chain, Softmax and a K transpose only they used
    rank: int
    batch: tuple[int, ...]       # the shared leading dims of q, k and v
    sq: int
    sk: int
    d: int
    dv: int


def _plain_gemm(node: Node) -> bool:
    if node.op == "MatMul":
        return True
    if node.op != "FusedGemm":
        return False
    a: FusedGemmAttrs = node.attrs
    extra = [i for i in node.inputs[2:] if i]
    return not extra and not a.trans_a and a.activation.kind == "none"


def _compute(node: Node) -> DType:
    return node.attrs.compute if node.op == "FusedGemm" else DType.float32


def scalar_const(g: Graph, v: str) -> float | None:
    if v in g.constants and g.constants[v].size == 1:
        return float(np.asarray(g.constants[v], dtype=np.float64).reshape(-1)[0])
    return None


def _fused_chain(g: Graph, node: Node, producers) -> tuple[str, float, float, str | None] | None:
    """A FusedElementwise that applies scalar Mul/Div and at most one mask Add to one of its inputs:
    (that input, the factor before the Add, the factor after it, the mask) or None."""
    n_in = len(node.inputs)
    steps = node.attrs.steps
    # the score register: the operand of the first step that leads towards a GEMM
    first = steps[0]
    cands = [a for a in first.args if a < n_in and producers.get(node.inputs[a]) is not None
             and _plain_gemm(producers[node.inputs[a]])]
    if len(cands) != 1:
        return None
    cur = cands[0]
    before, after, mask = 1.0, 1.0, None
    for i, st in enumerate(steps):
        if cur not in st.args or len(st.args) != 2:
            return None
        other = st.args[1] if st.args[0] == cur else st.args[0]
        if other >= n_in or other == cur:
            return None                     # an operand computed inside the chain
        c = scalar_const(g, node.inputs[other])
        if st.op == "Mul" and c is not None:
            factor = c
        elif st.op == "Div" and c is not None and st.args[0] == cur and c != 0.0:
            factor = 1.0 / c
        elif st.op == "Add" and mask is None:
            mask = node.inputs[other]
            factor = None
        else:
            return None
        if factor is not None:
            if mask is None:
                before *= factor
            else:
                after *= factor
        cur = n_in + i
    if cur != n_in + len(steps) - 1:
        return None
    return node.inputs[cands[0]], before, after, mask


def find_attention(g: Graph) -> list[AttentionMatch]:
    """Every attention subgraph of ``g`` (disjoint; ``g`` is not modified)."""
    producers = g.producers()
    users = g.consumers()
    outputs = set(g.outputs)

    def single_use(v: str) -> bool:
        return len(users.get(v, [])) == 1 and v not in outputs

    found = []
    for pv in g.nodes:
        if not _plain_gemm(pv) or (pv.op == "FusedGemm" and (pv.attrs.alpha != 1.0 or pv.attrs.trans_b)):
            continue
        p, v = pv.inputs[0], pv.inputs[1]
        sm = producers.get(p)
        if sm is None or sm.op != "Softmax" or not single_use(p):
            continue
        rank = len(g.types[p].shape)
        if sm.attrs.axis % rank != rank - 1 or rank not in (3, 4):
            continue
        chain = []
        scale, mask = 1.0, None
        cur = sm.inputs[0]
        ok = True
        while True:
            node = producers.get(cur)
            if node is None or not single_use(cur):
                ok = False
                break
            if _plain_gemm(node):
                break
            if node.op == "FusedElementwise":
                fc = _fused_chain(g, node, producers)
                if fc is None or (fc[3] is not None and (mask is not None or scale != 1.0 or fc[2] != 1.0)):
                    ok = False      # not such a chain, a second mask, or a scale after the mask add
                    break
                if fc[3] is not None and g.types[fc[0]].shape != g.types[node.outputs[0]].shape:
                    ok = False
                    break
                scale *= fc[1] * fc[2]
                mask = fc[3] if fc[3] is not None else mask
                chain.append(node)
                cur = fc[0]
                continue
            if node.op in ("Mul", "Div") and scalar_const(g, node.inputs[1]) is not None:
                c = scalar_const(g, node.inputs[1])
                scale = scale * c if node.op == "Mul" else scale / c
                cur = node.inputs[0]
            elif node.op == "Mul" and scalar_const(g, node.inputs[0]) is not None:
                scale *= scalar_const(g, node.inputs[0])
                cur = node.inputs[1]
            elif node.op == "Add" and mask is None:
                a, b = node.inputs
                pa, pb = producers.get(a), producers.get(b)
                # the score side is the one that continues the chain towards the QK GEMM
                if pa is not None and (pa.op in ("Mul", "Div", "MatMul", "FusedGemm")) and g.types[a].shape == g.types[node.outputs[0]].shape:
                    cur, mask = a, b
                elif pb is not None and (pb.op in ("Mul", "Div", "MatMul", "FusedGemm")) and g.types[b].shape == g.types[node.outputs[0]].shape:
                    cur, mask = b, a
                else:
                    ok = False
                    break
                if mask is not None and scale != 1.0:
                    ok = False      # a scale after the mask add would also scale the mask
                    break
            else:
                ok = False
                break
            chain.append(node)
        if not ok:
            continue
        qk = producers[cur]
        q, kt = qk.inputs[0], qk.inputs[1]
        alpha = qk.attrs.alpha if qk.op == "FusedGemm" else 1.0
        trans_b = qk.op == "FusedGemm" and qk.attrs.trans_b
        k_input, k_transposed, drop_transpose = kt, not trans_b, None
        if not trans_b:
            tp = producers.get(kt)
            if tp is not None and tp.op == "Transpose" and tp.attrs.perm is not None:
                perm = tuple(tp.attrs.perm)
                r = len(perm)
                if perm == tuple(range(r - 2)) + (r - 1, r - 2):
                    k_input, k_transposed = tp.inputs[0], False
                    drop_transpose = tp if single_use(kt) else None
        shapes = [g.types[x].shape for x in (q, k_input, v)]
        if any(len(s) != rank for s in shapes) or any(not all(isinstance(d, int) for d in s) for s in shapes):
            continue
        qs, ks, vs = shapes
        D = qs[-1]
        Sk = ks[-1] if k_transposed else ks[-2]
        Dk = ks[-2] if k_transposed else ks[-1]
        if qs[:-2] != ks[:-2] or qs[:-2] != vs[:-2] or Dk != D or vs[-2] != Sk:
            continue
        if any(g.types[x].dtype not in FLOAT_DTYPES for x in (q, k_input, v)):
            continue
        if mask is not None:
            try:
                if tuple(np.broadcast_shapes(tuple(g.types[mask].shape), tuple(g.types[p].shape))) != tuple(g.types[p].shape):
                    continue
            except (TypeError, ValueError):
                continue
        replaced = [qk, sm, *chain] + ([drop_transpose] if drop_transpose is not None else [])
        found.append(AttentionMatch(q, k_input, k_transposed, v, mask, float(scale * alpha), _compute(qk), _compute(pv),
                                    pv, tuple(replaced), rank, tuple(qs[:-2]), qs[-2], Sk, D, vs[-1]))
    return found


def replace_nodes(graph: Graph, fused: list[tuple[AttentionMatch, Node]]) -> Graph:
    """A copy of ``graph`` with each match's nodes replaced by its fused node (placed where the P @ V
    product was)."""
    g = graph.copy()
    idx = {id(n): i for i, n in enumerate(g.nodes)}
    removed: set[int] = set()
    replacement: dict[int, Node] = {}
    for m, node in fused:
        removed.update(idx[id(n)] for n in m.replaced)
        replacement[idx[id(m.pv)]] = node
    g.nodes = [replacement.get(i, n) for i, n in enumerate(g.nodes) if i not in removed]
    return g
