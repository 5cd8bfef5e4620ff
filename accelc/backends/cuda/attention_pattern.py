"""Backend-local legalization: attention subgraphs -> one fused ``accelc_cuda.Attention`` node.

Why: ``softmax(Q @ K^T * scale + mask) @ V`` as separate kernels writes and reads the [S, S] score
matrix of every head to global memory twice; the fused kernel (``attention_kernel.py``) keeps a tile of
scores on chip and uses the online softmax (running max and sum, rescaling the partial output), so
memory traffic is O(S * D) per head instead of O(S^2).

Matched by ``backends/attention_match.py`` (QK^T product, scalar scale chain, optional mask, Softmax
over the last axis, P @ V product); this backend takes head dims <= 96. The rewrite does not touch
``accelc.passes``: the new node exists only inside this backend and is never seen by the verifier or
the artifact.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...ir import Graph, Node
from ..attention_match import find_attention, replace_nodes

ATTENTION_OP = "accelc_cuda.Attention"
MAX_HEAD_DIM = 96   # keeps the kernel's static shared memory under 48 KiB


@dataclass(frozen=True)
class AttentionAttrs:
    scale: float
    k_transposed: bool     # the K input is laid out [..., D, Sk] (a materialised K^T)
    has_mask: bool


def legalize(graph: Graph) -> tuple[Graph, int]:
    """Returns the graph with every matched attention fused, and how many were fused."""
    fused = []
    for m in find_attention(graph):
        if m.d > MAX_HEAD_DIM:
            continue
        inputs = (m.q, m.k, m.v) + ((m.mask,) if m.mask is not None else ())
        attrs = AttentionAttrs(m.scale, m.k_transposed, m.mask is not None)
        fused.append((m, Node(ATTENTION_OP, inputs, m.pv.outputs, attrs, f"attention_{m.pv.name}")))
    if not fused:
        return graph, 0
    return replace_nodes(graph, fused), len(fused)
