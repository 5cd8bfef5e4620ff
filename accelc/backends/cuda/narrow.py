"""Backend-local: tensors that only 16-bit GEMMs read are stored in the 16-bit type by their producer.

A ``FusedGemm`` with ``compute=bf16`` (or fp16) rounds an fp32 operand to that type before multiplying; the
CUDA lowering does it with a conversion kernel that writes a 16-bit copy of the operand. When every reader
of the operand is such a GEMM (possibly through Reshape/Flatten/Squeeze/Unsqueeze/Transpose), the producer
can store the rounded values itself: its kernels compute in fp32 and round once on store, which gives the
same bits as the conversion kernel did. The conversion kernel disappears and the tensor takes half the
memory traffic. In an encoder this is the attention's output, read only by the output projection. A
tensor-core attention counts as such a reader of Q, K and V: it rounds them itself as it stages them, and
so does a channels-last convolution's im2col (``layout.py``), which writes its patches in the 16-bit type.

A LayerNorm whose output is also read in fp32 (an encoder's residual) becomes
``accelc_cuda.LayerNormalizationTwice``, which stores y twice: in fp32 for those readers and in the
16-bit type for the GEMMs that read it directly.

Only producers whose lowering computes in fp32 and converts on store are narrowed: the fused attention,
elementwise kernels, LayerNorm, Softmax, reductions and pooling (a ResNet's global pooling, read by the
classifier), and a GEMM when it is the sm_90a CUTLASS 3 instantiation or CUTLASS 2.x's ``GemmBiasOf``
(``codegen_linalg.stores_low_exactly``: their epilogues read the bias as an fp32 row, so a 16-bit D is the
rounded fp32 result; in an encoder, the FFN's first GEMM, which only the second reads). The plain CUTLASS
2.x GEMM is not: its epilogue would read the bias in the 16-bit type too, which changes the numbers. Graph inputs
and outputs keep their types.
"""
from __future__ import annotations

from dataclasses import replace

from ...ir import DType, Graph, Node
from ...passes import eliminate_dead_code
from ...passes.manager import PassContext
from ...ir.ops.elementwise import ELEMENTWISE_OPS
from .attention_kernel import tensor_core_tiles
from .attention_pattern import ATTENTION_OP
from .codegen_linalg import stores_low_exactly
from .codegen_reduce import LAYERNORM_TWICE, REDUCE_OPS
from .layout import IM2COL_OP, POOL_OP
from .lowering import LOW

_PRODUCERS = {ATTENTION_OP, POOL_OP, "FusedElementwise", "LayerNormalization", "Softmax", "GlobalAveragePool",
              "GlobalMaxPool"} | set(ELEMENTWISE_OPS) | set(REDUCE_OPS)
_VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}


def _low_operand_dtype(node: Node, index: int, arch) -> DType | None:
    """The 16-bit type ``node`` rounds its input ``index`` to before using it, or None when it reads it
    otherwise: a 16-bit GEMM's A and B, and the Q, K and V of an attention that runs on tensor cores (it
    rounds them as it stages them, and applies the scale to the scores)."""
    if node.op == "FusedGemm":
        return node.attrs.compute if index in (0, 1) and node.attrs.compute in LOW else None
    if node.op == IM2COL_OP:       # it copies its input into the patches in the GEMM's operand type
        return node.attrs.dtype if node.attrs.dtype in LOW else None
    if node.op == ATTENTION_OP and index in (0, 1, 2) and node.attrs.tensor_core in LOW and arch is not None:
        a = node.attrs
        if tensor_core_tiles(a.batch * a.heads, a.sq, a.d, a.dv, arch.sm_count or 1) is not None:
            return a.tensor_core
    return None


def _readers(graph: Graph, value: str, users, arch=None) -> tuple[list[tuple[Node, tuple[Node, ...], DType]], bool]:
    """Walks the readers of ``value`` through views: the 16-bit GEMMs (and tensor-core attentions) that read
    it, each as (reader, the views between, the type it rounds to), and whether anything else reads it (a
    graph output included)."""
    gemms: list[tuple[Node, tuple[Node, ...], DType]] = []
    other = value in graph.outputs

    def walk(v: str, path: tuple[Node, ...]) -> None:
        nonlocal other
        for n in users.get(v, []):
            if n.op in _VIEWS and n.inputs[0] == v and v not in n.inputs[1:]:
                if n.outputs[0] in graph.outputs:
                    other = True
                else:
                    walk(n.outputs[0], path + (n,))
                continue
            dtypes = {_low_operand_dtype(n, i, arch) for i, x in enumerate(n.inputs) if x == v}
            if None in dtypes or len(dtypes) != 1:
                other = True
            else:
                gemms.append((n, path, dtypes.pop()))
    walk(value, ())
    return gemms, other


def _twice(node: Node, gemms, types):
    """For a LayerNorm whose y 16-bit GEMMs of one type read as their A operand (directly or through views)
    while other readers need it in fp32: (the node storing y twice, {id of each such GEMM: the 16-bit value
    it reads instead}, {id of a view node: its copy over the 16-bit values}); else None."""
    y = node.outputs[0]
    if node.op != "LayerNormalization" or any(node.outputs[1:]):
        return None
    reached = [(n, path, d) for n, path, d in gemms if n.op == "FusedGemm"
               and n.inputs[0] == (path[-1].outputs[0] if path else y) and n.inputs[0] not in n.inputs[1:]]
    dtypes = {d for *_, d in reached}
    if len(dtypes) != 1:
        return None
    dtype = dtypes.pop()

    def low_name(v: str) -> str:
        return f"{v}__{dtype.short}"
    if any(low_name(v) in types for v in [y] + [p.outputs[0] for _, path, _ in reached for p in path]):
        return None
    types[low_name(y)] = replace(types[y], dtype=dtype)
    copies: dict[int, Node] = {}
    rewired: dict[int, str] = {}
    for gemm, path, _ in reached:
        src = low_name(y)
        for view in path:
            out = low_name(view.outputs[0])
            if id(view) not in copies:
                types[out] = replace(types[view.outputs[0]], dtype=dtype)
                copies[id(view)] = replace(view, inputs=(src,) + tuple(view.inputs[1:]), outputs=(out,),
                                           name=f"{view.name}__{dtype.short}")
            src = out
        rewired[id(gemm)] = src
    return Node(LAYERNORM_TWICE, tuple(node.inputs), (y, low_name(y)), node.attrs, node.name), rewired, copies


def narrow_gemm_operands(graph: Graph, options=None, arch=None) -> tuple[Graph, int]:
    """Returns the graph with the narrowable tensors retyped (or stored twice), and how many producers
    were changed. ``options`` and ``arch`` (the backend's) decide which GEMMs can be producers."""
    users = graph.consumers()
    types = dict(graph.types)
    changed = 0
    twice: dict[int, Node] = {}        # id of a LayerNorm -> the node storing y twice
    rewired: dict[int, str] = {}
    copies: dict[int, Node] = {}
    for node in graph.nodes:
        if node.op not in _PRODUCERS and node.op != "FusedGemm" or not node.outputs \
                or types[node.outputs[0]].dtype != DType.float32:
            continue
        gemms, other = _readers(graph, node.outputs[0], users, arch)
        if node.op == "FusedGemm" and not (gemms and stores_low_exactly(graph, node, options, arch, gemms[0][2])):
            continue
        if gemms and not other and len({d for *_, d in gemms}) == 1:
            for v in [node.outputs[0]] + [view.outputs[0] for _, path, _ in gemms for view in path]:
                types[v] = replace(types[v], dtype=gemms[0][2])
            changed += 1
            continue
        found = _twice(node, gemms, types)
        if found is not None:
            twice[id(node)], more, views = found
            rewired.update(more)
            copies.update(views)
            changed += 1
    if not changed:
        return graph, 0
    g = graph.copy()
    g.types = types
    nodes = []
    for node in graph.nodes:
        new = twice.get(id(node), node)
        if id(node) in rewired:
            new = replace(node, inputs=(rewired[id(node)],) + tuple(node.inputs[1:]))
        nodes.append(new)
        if id(node) in copies:
            nodes.append(copies[id(node)])
    g.nodes = nodes
    if copies:        # views only the rewired GEMMs read are dead now
        g = eliminate_dead_code.PASS(g, PassContext()).graph
    return g, changed
