"""bf16 compute for GEMMs and convolutions; everything else stays fp32.

Every ``FusedGemm``/``FusedConv`` gets ``compute=bf16``: its operands are rounded to bfloat16 and the
products accumulate in fp32, which is what AMX tiles and tensor cores do natively at several times the
fp32 rate. Constant weights (``FusedGemm``'s ``b``, ``FusedConv``'s ``w``) are also *stored* as
bfloat16, halving weight memory and bandwidth; the rounding is the same one the kernel would apply, so
storing them rounded changes nothing numerically. Non-constant second operands (attention ``Q @ K^T``,
``P @ V``) get ``compute=bf16`` too and the backend converts them at run time.

What stays fp32, and why: biases, residuals and the epilogue (added to the fp32 accumulator);
elementwise ops (memory-bound, nothing to gain from bf16 arithmetic, and chains would compound its
8-bit mantissa's error); normalizations, softmax and reductions (a sum of many bf16-rounded terms loses
the small ones entirely: mean/variance and exp-sums need fp32 accumulation to keep accuracy). Graph
inputs and outputs keep their dtypes, so the compiled signature does not change with ``--dtype``.
Run after fusion: plain MatMul/Gemm/Conv are not touched (``fuse_epilogues`` or its canonicalising
variant turns them into the fused forms first).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import AccelcError
from ..ir.dtypes import DType
from ..ir.graph import Graph, Node
from ..ir.registry import get_op, infer_types
from .manager import Pass, PassContext, PassResult

_WEIGHT_INPUT = {"FusedGemm": 1, "FusedConv": 1}


def _accepts(g: Graph, node: Node) -> bool:
    """Whether the op's type inference accepts ``node`` as it stands (e.g. a bf16 weight)."""
    try:
        infer_types(get_op(node.op), [g.types[i] if i else None for i in node.inputs], node.attrs,
                    [g.constants.get(i) if i else None for i in node.inputs])
    except AccelcError:
        return False
    return True


def run(graph: Graph, ctx: PassContext) -> PassResult:
    g = graph.copy()
    stored: dict[str, str] = {}          # fp32 constant -> its bf16 copy
    rounded: dict[str, str] = {}         # fp32 constant -> a copy rounded to bf16 values, kept fp32
    nodes = []
    n_stored = n_rounded = n_dynamic = 0
    for node in g.nodes:
        pos = _WEIGHT_INPUT.get(node.op)
        if pos is None or node.attrs.compute == DType.bfloat16:
            nodes.append(node)
            continue
        new = replace(node, attrs=replace(node.attrs, compute=DType.bfloat16))
        w = node.inputs[pos]
        if w in g.constants and g.constants[w].dtype == np.float32:
            weight = g.constants[w].astype(DType.bfloat16.np)
            if w not in stored:
                stored[w] = g.add_constant(weight, g.fresh_name(f"{w}_bf16"))
            inputs = list(node.inputs)
            inputs[pos] = stored[w]
            candidate = replace(new, inputs=tuple(inputs))
            if _accepts(g, candidate):
                new = candidate
                n_stored += 1
            else:
                # The op's inference wants one operand dtype: keep fp32 storage, but holding exactly the
                # bf16 values the kernel would use, so a backend can narrow it losslessly.
                if w not in rounded:
                    rounded[w] = g.add_constant(weight.astype(np.float32), g.fresh_name(f"{w}_bf16_values"))
                inputs[pos] = rounded[w]
                new = replace(new, inputs=tuple(inputs))
                n_rounded += 1
        else:
            n_dynamic += 1
        nodes.append(new)
    total = n_stored + n_rounded + n_dynamic
    if not total:
        return PassResult(graph, False, "")
    g.nodes = nodes
    g.remove_unused_values()
    detail = [f"{n_stored} with bf16-stored weights"]
    if n_rounded:
        detail.append(f"{n_rounded} with bf16-rounded weights kept in fp32 storage")
    detail.append(f"{n_dynamic} converting at run time")
    return PassResult(g, True, f"bf16 compute for {total} GEMM/conv nodes ({', '.join(detail)})")


PASS = Pass("convert_to_bf16", run, __doc__)
