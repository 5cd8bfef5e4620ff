"""Backend-local legalization: attention subgraphs -> one fused ``accelc_cuda.Attention`` node.

Why: ``softmax(Q @ K^T * scale + mask) @ V`` as separate kernels writes and reads the [S, S] score
matrix of every head to global memory twice; the fused kernel (``attention_kernel.py``) keeps a tile of
scores on chip and uses the online softmax (running max and sum, rescaling the partial output), so
memory traffic is O(S * D) per head instead of O(S^2).

Matched by ``backends/attention_match.py`` (QK^T product, scalar scale chain, optional mask, Softmax
over the last axis, P @ V product); this backend takes head dims <= 96, and <= 128 when both products
are bf16 or fp16 (the tensor-core kernel). Q, K and V are then traced back,
as the CPU backend does (``cpu_amx.codegen_attention.trace_view``), through the views exporters put in
front of attention (the head split's Transpose/Reshape, the Gather or Split of a packed QKV projection,
a materialised K^T) and through Mul/Div by scalar constants, which join the scale. The kernel reads the
oldest tensor of each chain through [batch, head, row, column] strides, and writes its result through
strides too, straight into the layout of a Transpose that was its only reader. The copies this makes
dead are removed. The rewrite does not touch ``accelc.passes``: the new node exists only inside this
backend and is never seen by the verifier or the artifact.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...ir import DType, Graph, Node
from ...passes import eliminate_dead_code
from ...passes.manager import PassContext
from ..attention_match import AttentionMatch, find_attention, replace_nodes
from ..cpu_amx.codegen_attention import _as4, dense_view, k_rows, output_layout, trace_view
from .lowering import LOW

ATTENTION_OP = "accelc_cuda.Attention"
MAX_HEAD_DIM = 96            # keeps the fp32 kernel's static shared memory under 48 KiB
MAX_TENSOR_CORE_HEAD_DIM = 128


def tensor_core_dtype(compute: DType, pv_compute: DType, d: int, dv: int) -> DType | None:
    """The 16-bit type both products run in on tensor cores, or None (then the kernel is fp32 SIMT):
    both products in the same 16-bit compute type, head dims multiples of 16 up to 128."""
    if compute != pv_compute or compute not in LOW:
        return None
    if d % 16 or dv % 16 or max(d, dv) > MAX_TENSOR_CORE_HEAD_DIM:
        return None
    return compute


def _fits(m: AttentionMatch) -> bool:
    return max(m.d, m.dv) <= MAX_HEAD_DIM or tensor_core_dtype(m.compute, m.pv_compute, m.d, m.dv) is not None


@dataclass(frozen=True)
class AttentionAttrs:
    """Element (b, h, row, column) of q/k/v/out is at ``spec[0] + b*spec[1] + h*spec[2] + row*spec[3] +
    column*spec[4]`` of its input (K's rows are keys, V's rows are keys and its columns output dims)."""
    scale: float
    has_mask: bool
    rank: int              # of the matched products: 3 ([batch, S, D], heads 1) or 4
    batch: int
    heads: int
    sq: int
    sk: int
    d: int
    dv: int
    q: tuple[int, ...]
    k: tuple[int, ...]
    v: tuple[int, ...]
    out: tuple[int, ...]
    tensor_core: DType | None = None   # bf16/f16: both products on tensor cores in that type (else fp32)


def _node(graph: Graph, producers, users, m: AttentionMatch) -> Node:
    q, fq = trace_view(graph, producers, m.q)
    k, fk = trace_view(graph, producers, m.k)
    v, fv = trace_view(graph, producers, m.v)
    if fv != 1.0:                     # a factor on V would scale the output: read V as it is
        v = dense_view(graph, m.v)
    k = k_rows(k, m.k_transposed)
    rank = m.rank
    batch, heads = (m.batch[0], m.batch[1]) if rank == 4 else (m.batch[0], 1)
    out_value, out_strides = output_layout(graph, users, m)
    # offsets and strides of any size: the kernel's address arithmetic is 64-bit (attention_kernel._address)
    specs = [(x.offset,) + _as4(x.strides, rank) for x in (q, k, v)] + [(0,) + tuple(out_strides)]
    attrs = AttentionAttrs(float(m.scale * fq * fk), m.mask is not None, rank, batch, heads, m.sq, m.sk, m.d, m.dv,
                           *specs, tensor_core_dtype(m.compute, m.pv_compute, m.d, m.dv))
    inputs = (q.base, k.base, v.base) + ((m.mask,) if m.mask is not None else ())
    return Node(ATTENTION_OP, inputs, (out_value,), attrs, f"attention_{m.pv.name}")


def legalize(graph: Graph) -> tuple[Graph, int]:
    """Returns the graph with every matched attention fused (and the copies it reads through removed),
    and how many were fused."""
    matches = [m for m in find_attention(graph) if _fits(m)]
    if not matches:
        return graph, 0
    producers, users = graph.producers(), graph.consumers()
    fused = [(m, _node(graph, producers, users, m)) for m in matches]
    g = replace_nodes(graph, fused)
    written = {n.outputs[0] for _, n in fused}     # an output-side Transpose the kernel now writes through
    g.nodes = [n for n in g.nodes if not (n.op == "Transpose" and n.outputs[0] in written)]
    g = eliminate_dead_code.PASS(g, PassContext()).graph
    return g, len(fused)
