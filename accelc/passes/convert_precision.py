"""16-bit compute for GEMMs and convolutions (``convert_to_bf16``, ``convert_to_fp16``); the rest stays fp32.

Every ``FusedGemm``/``FusedConv`` gets ``compute=bf16`` (or ``fp16``): its operands are rounded to that
type and the products accumulate in fp32, which is what AMX tiles (bf16) and tensor cores (both) do
natively at several times the fp32 rate. Constant weights (``FusedGemm``'s ``b``, ``FusedConv``'s ``w``)
are also *stored* in it, halving weight memory and bandwidth; the rounding is the same one the kernel
would apply, so storing them rounded changes nothing numerically. Non-constant second operands (attention
``Q @ K^T``, ``P @ V``) get the compute dtype too and the backend converts them at run time.

bf16 keeps fp32's range with an 8-bit mantissa; fp16 has an 11-bit mantissa (8x finer: ResNet-50's
logits keep a cosine of ~0.9999 to fp32 where bf16 gives ~0.995) but overflows beyond 65504. A node
whose constant weights exceed that range keeps fp32 compute (the pass log counts them); activations
beyond it at run time become inf, as with any fp16 inference, and the compile-time accuracy check shows
it. fp16 compute is for CUDA targets (the CPU backends refuse it).

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


FP16_MAX = 65504.0
_NAMES = {DType.bfloat16: "bf16", DType.float16: "fp16"}      # as the user says them (--dtype)


def _fits_fp16(g: Graph, node: Node) -> bool:
    """Whether the node's constant weights (and a convolution's bias, which backends may fold into the
    weight matrix) are within fp16's range."""
    ins = [node.inputs[1]] + ([node.inputs[2]] if node.op == "FusedConv" and len(node.inputs) > 2 else [])
    for v in ins:
        if v in g.constants and g.constants[v].size and np.abs(g.constants[v].astype(np.float32)).max() > FP16_MAX:
            return False
    return True


def _convert(graph: Graph, low: DType) -> PassResult:
    g = graph.copy()
    stored: dict[str, str] = {}          # fp32 constant -> its copy in the low dtype
    rounded: dict[str, str] = {}         # fp32 constant -> a copy rounded to low values, kept fp32
    nodes = []
    n_stored = n_rounded = n_dynamic = n_range = 0
    for node in g.nodes:
        pos = _WEIGHT_INPUT.get(node.op)
        if pos is None or node.attrs.compute == low:
            nodes.append(node)
            continue
        new = replace(node, attrs=replace(node.attrs, compute=low))
        w = node.inputs[pos]
        if w in g.constants and g.constants[w].dtype == np.float32:
            if low == DType.float16 and not _fits_fp16(g, node):
                nodes.append(node)       # the weights would overflow: this node keeps fp32 products
                n_range += 1
                continue
            weight = g.constants[w].astype(low.np)
            if w not in stored:
                stored[w] = g.add_constant(weight, g.fresh_name(f"{w}_{_NAMES[low]}"))
            inputs = list(node.inputs)
            inputs[pos] = stored[w]
            candidate = replace(new, inputs=tuple(inputs))
            if _accepts(g, candidate):
                new = candidate
                n_stored += 1
            else:
                # The op's inference wants one operand dtype: keep fp32 storage, but holding exactly the
                # low-precision values the kernel would use, so a backend can narrow it losslessly.
                if w not in rounded:
                    rounded[w] = g.add_constant(weight.astype(np.float32), g.fresh_name(f"{w}_{_NAMES[low]}_values"))
                inputs[pos] = rounded[w]
                new = replace(new, inputs=tuple(inputs))
                n_rounded += 1
        else:
            n_dynamic += 1
        nodes.append(new)
    total = n_stored + n_rounded + n_dynamic
    if not total:
        return PassResult(graph, False, f"{n_range} GEMM/conv nodes kept fp32 (weights beyond fp16's range)"
                          if n_range else "")
    g.nodes = nodes
    g.remove_unused_values()
    name = _NAMES[low]
    detail = [f"{n_stored} with {name}-stored weights"]
    if n_rounded:
        detail.append(f"{n_rounded} with {name}-rounded weights kept in fp32 storage")
    detail.append(f"{n_dynamic} converting at run time")
    if n_range:
        detail.append(f"{n_range} kept fp32: weights beyond fp16's range")
    return PassResult(g, True, f"{name} compute for {total} GEMM/conv nodes ({', '.join(detail)})")


def run_bf16(graph: Graph, ctx: PassContext) -> PassResult:
    return _convert(graph, DType.bfloat16)


def run_fp16(graph: Graph, ctx: PassContext) -> PassResult:
    return _convert(graph, DType.float16)


BF16_PASS = Pass("convert_to_bf16", run_bf16, __doc__)
FP16_PASS = Pass("convert_to_fp16", run_fp16, __doc__)
