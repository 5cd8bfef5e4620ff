"""Backend-local legalization: attention subgraphs -> one fused ``accelc_cuda.Attention`` node.

Why: ``softmax(Q @ K^T * scale + mask) @ V`` as separate kernels writes and reads the [S, S] score
matrix of every head to global memory twice; the fused kernel (``attention_kernel.py``) keeps a tile of
scores on chip and uses the online softmax (running max and sum, rescaling the partial output), so
memory traffic is O(S * D) per head instead of O(S^2).

Matched (on the graph after the pass pipeline, where MatMuls are FusedGemms):

    scores = MatMul|FusedGemm(q, kt)      no bias/residual/activation; alpha folds into the scale;
                                          kt = Transpose(k, swap last two) or trans_b=True on k
    scores = chain of Mul/Div by a constant scalar, then at most one Add of a mask broadcastable to
             the scores (each value used once; a FusedElementwise chain is not matched yet)
    p      = Softmax(scores, axis=-1)
    out    = MatMul|FusedGemm(p, v)       no bias/residual/activation, alpha 1

with q, k, v of rank 3 or 4 sharing their batch dims, head dim <= 96 and float dtypes. Anything else
is left alone (the unfused kernels remain correct). The rewrite does not touch ``accelc.passes``: the
new node exists only inside this backend and is never seen by the verifier or the artifact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import DType, Graph, Node
from ...ir.ops.fused import FusedGemmAttrs

ATTENTION_OP = "accelc_cuda.Attention"
MAX_HEAD_DIM = 96   # keeps the kernel's static shared memory under 48 KiB


@dataclass(frozen=True)
class AttentionAttrs:
    scale: float
    k_transposed: bool     # the K input is laid out [..., D, Sk] (a materialised K^T)
    has_mask: bool


def _plain_gemm(node: Node) -> bool:
    if node.op == "MatMul":
        return True
    if node.op != "FusedGemm":
        return False
    a: FusedGemmAttrs = node.attrs
    extra = [i for i in node.inputs[2:] if i]
    return not extra and not a.trans_a and a.activation.kind == "none"


def _scalar_const(g: Graph, v: str) -> float | None:
    if v in g.constants and g.constants[v].size == 1:
        return float(np.asarray(g.constants[v], dtype=np.float64).reshape(-1)[0])
    return None


def legalize(graph: Graph) -> tuple[Graph, int]:
    """Returns the graph with every matched attention fused, and how many were fused."""
    g = graph.copy()
    producers = g.producers()
    users = g.consumers()
    outputs = set(g.outputs)

    def single_use(v: str) -> bool:
        return len(users.get(v, [])) == 1 and v not in outputs

    removed: set[int] = set()
    replacement: dict[int, Node] = {}
    count = 0
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
            if node.op in ("Mul", "Div") and _scalar_const(g, node.inputs[1]) is not None:
                c = _scalar_const(g, node.inputs[1])
                scale = scale * c if node.op == "Mul" else scale / c
                cur = node.inputs[0]
            elif node.op == "Mul" and _scalar_const(g, node.inputs[0]) is not None:
                scale *= _scalar_const(g, node.inputs[0])
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
        if qs[:-2] != ks[:-2] or qs[:-2] != vs[:-2] or Dk != D or vs[-2] != Sk or D > MAX_HEAD_DIM:
            continue
        if any(g.types[x].dtype not in (DType.float32, DType.float16, DType.bfloat16) for x in (q, k_input, v)):
            continue
        if mask is not None:
            try:
                if tuple(np.broadcast_shapes(tuple(g.types[mask].shape), tuple(g.types[p].shape))) != tuple(g.types[p].shape):
                    continue
            except ValueError:
                continue
        inputs = (q, k_input, v) + ((mask,) if mask is not None else ())
        attrs = AttentionAttrs(float(scale * alpha), k_transposed, mask is not None)
        fused = Node(ATTENTION_OP, inputs, pv.outputs, attrs, f"attention_{pv.name}")
        idx = {id(n): i for i, n in enumerate(g.nodes)}
        for n in [qk, sm, *chain] + ([drop_transpose] if drop_transpose is not None else []):
            removed.add(idx[id(n)])
        replacement[idx[id(pv)]] = fused
        count += 1
    if not count:
        return graph, 0
    g.nodes = [replacement.get(i, n) for i, n in enumerate(g.nodes) if i not in removed]
    return g, count
