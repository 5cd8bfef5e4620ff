"""Backend-local: the elementwise node a LayerNorm normalizes runs inside the LayerNorm's kernel.

An encoder normalizes a residual sum after every sublayer, ``LN(x + sublayer(x))``. As two kernels, the
Add writes the sum to global memory and the LayerNorm reads it back. Instead, the LayerNorm kernel loads
the Add's operands and computes the sum as it loads its row (``accelc_cuda.NormWithPrologue``,
``codegen_reduce``). Any elementwise node (or ``FusedElementwise`` chain) can be such a prologue when each
of its inputs is, per row of the norm, the full row, one row shared by every row (a bias), one value per
row, or a scalar.
The result is stored as well only when something else reads it: a pre-norm encoder's residual stream,
or a graph output.

A ``FusedGemm`` with both a constant bias and a residual needs a map kernel that sums the two into its C
operand (``codegen_linalg``). When such a GEMM, with no activation, feeds only a LayerNorm, the residual
moves out of the GEMM into an Add that the LayerNorm then takes as its prologue: the GEMM's epilogue adds
the bias row, the norm kernel adds the residual, and the map kernel is gone. The sum is
``(alpha * acc + beta * bias) + residual``, the order of the unfused graph.

The arithmetic of the prologue and of the norm is the separate kernels' (fp32, 16-bit results rounded
where the graph stores them), so a fused norm gives the same bits as the pair it replaces.
"""
from __future__ import annotations

from dataclasses import replace

from ...ir import DType, Graph, Node, get_op
from ...ir.ops.elementwise import ELEMENTWISE_OPS
from .codegen_elementwise import check_elementwise
from .codegen_linalg import constant_bias_row
from .codegen_reduce import LAYERNORM_TWICE, NORM_PROLOGUE, NormPrologueAttrs, row_operand_kind

_NORMS = {"LayerNormalization", LAYERNORM_TWICE}
_PROLOGUES = (set(ELEMENTWISE_OPS) | {"FusedElementwise"}) - {"Identity"}
_X_TYPES = (DType.float32, DType.bfloat16, DType.float16)


def _row_shaped(graph: Graph, value: str, x_shape, axis: int) -> bool:
    return row_operand_kind(graph.types[value].shape, x_shape, axis) is not None


def _split_residuals(graph: Graph, users) -> tuple[Graph, int]:
    """FusedGemm(a, b, bias, residual) -> FusedGemm(a, b, bias) + Add(., residual) where a LayerNorm is
    the GEMM's only reader, so the Add can join the norm."""
    nodes, split = [], 0
    for node in graph.nodes:
        if node.op != "FusedGemm" or len(node.inputs) < 4 or not node.inputs[2] or not node.inputs[3] \
                or node.attrs.activation.kind != "none" or constant_bias_row(graph, node) is None:
            nodes.append(node)
            continue
        y = node.outputs[0]
        readers = users.get(y, [])
        x_type, r_type = graph.types[y], graph.types[node.inputs[3]]
        if y in graph.outputs or len(readers) != 1 or readers[0].op not in _NORMS or readers[0].inputs[0] != y \
                or y in readers[0].inputs[1:] or r_type.dtype != x_type.dtype or x_type.dtype not in _X_TYPES \
                or not _row_shaped(graph, node.inputs[3], x_type.shape, readers[0].attrs.axis % len(x_type.shape)):
            nodes.append(node)
            continue
        t = graph.fresh_name(f"{y}_before_residual")
        graph.types[t] = x_type
        nodes.append(replace(node, inputs=tuple(node.inputs[:3]), outputs=(t,)))
        nodes.append(Node("Add", (t, node.inputs[3]), (y,), get_op("Add").attrs(), f"{node.name}_residual"))
        split += 1
    graph.nodes = nodes
    return graph, split


def fuse_norm_prologues(graph: Graph) -> tuple[Graph, int]:
    """Returns the graph with each fusable (elementwise, LayerNorm) pair as one ``NormWithPrologue`` node,
    and how many pairs were fused."""
    g = graph.copy()
    g, _ = _split_residuals(g, g.consumers())
    users = g.consumers()
    producer = {o: n for n in g.nodes for o in n.outputs if o}
    position = {id(n): k for k, n in enumerate(g.nodes)}
    fused: dict[int, Node] = {}        # id of a norm -> its fused node
    absorbed: set[int] = set()         # ids of the prologue nodes
    for norm in g.nodes:
        if norm.op not in _NORMS:
            continue
        x = norm.inputs[0]
        p = producer.get(x)
        if p is None or p.op not in _PROLOGUES or id(p) in absorbed or len([o for o in p.outputs if o]) != 1:
            continue
        shape = g.types[x].shape
        axis = norm.attrs.axis % len(shape)
        if g.types[x].dtype not in _X_TYPES or x in norm.inputs[1:] or check_elementwise(g, p) is not None \
                or not all(_row_shaped(g, i, shape, axis) for i in p.inputs if i):
            continue
        others = [n for n in users.get(x, []) if n is not norm]
        if any(position[id(n)] < position[id(norm)] for n in others):   # they would read x before it exists
            continue
        store = bool(others) or x in g.outputs
        inputs = tuple(i for i in p.inputs if i) + tuple(norm.inputs[1:])
        outputs = tuple(norm.outputs) + ((x,) if store else ())
        fused[id(norm)] = Node(NORM_PROLOGUE, inputs, outputs, NormPrologueAttrs(p, norm, store), norm.name)
        absorbed.add(id(p))
    if not fused:
        return graph, 0
    g.nodes = [fused.get(id(n), n) for n in g.nodes if id(n) not in absorbed]
    return g, len(fused)
