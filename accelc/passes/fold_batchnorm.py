"""Folds inference-mode BatchNormalization into the op before it, or into a Mul and an Add.

At inference BN is an affine map per channel (axis 1): ``y = x * s + t`` with
``s = scale / sqrt(var + eps)`` and ``t = bias - mean * s``. So:

* after ``Conv``/``FusedConv`` (no activation, no residual) with constant weights, and optional constant
  bias: ``w'[m] = w[m] * s[m]``, ``b' = b * s + t``: BN disappears;
* after ``Gemm`` with a constant ``B``, on a 2-D output ``(N, F)`` (BN's axis 1 is then the feature
  axis, the last one): the columns of ``op(B)`` are scaled by ``s`` and the bias becomes
  ``beta * C * s + t`` (with ``beta = 1``);
* after ``MatMul`` with a constant 2-D ``B`` on a 2-D output: the same, emitted as ``MatMul`` with
  scaled ``B`` followed by an ``Add`` of ``t`` (which ``fuse_epilogues`` later turns into a bias);
* anywhere else (``x`` not foldable, e.g. a graph input, or a rank-3 MatMul output, where axis 1 is not
  the feature axis): ``Mul(x, s) + t`` with constants shaped ``(C, 1, ...)`` to broadcast along axis 1,
  so no backend needs a BatchNormalization kernel.

Only when BN's scale, bias, mean and var are constants, and (for folding into the producer) the
producer's output has BN as its only user. Folded values are computed in float64 and rounded once to
the weight dtype.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node
from ..ir.ops.linalg import GemmAttrs
from .manager import Pass, PassContext, PassResult
from .rewrite import use_counts


def _affine(g: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    params = bn.inputs[1:5]
    if len(params) != 4 or not all(p in g.constants for p in params):
        return None
    scale, bias, mean, var = (g.constants[p].astype(np.float64) for p in params)
    s = scale / np.sqrt(var + bn.attrs.epsilon)
    return s, bias - mean * s


def _const(g: Graph, value: np.ndarray, like: np.dtype, base: str) -> str:
    return g.add_constant(value.astype(like), g.fresh_name(base))


def _fold_into_conv(g: Graph, prod: Node, s: np.ndarray, t: np.ndarray) -> Node | None:
    if prod.op == "FusedConv":
        if prod.attrs.activation.kind != "none" or (len(prod.inputs) > 3 and prod.inputs[3]):
            return None
    x, w = prod.inputs[0], prod.inputs[1]
    b = prod.inputs[2] if len(prod.inputs) > 2 else ""
    if w not in g.constants or (b and b not in g.constants):
        return None
    wv = g.constants[w]
    if wv.shape[0] != s.shape[0]:
        return None
    w_new = wv.astype(np.float64) * s.reshape((-1,) + (1,) * (wv.ndim - 1))
    b_old = g.constants[b].astype(np.float64) if b else 0.0
    b_new = b_old * s + t
    inputs = [x, _const(g, w_new, wv.dtype, "bn_folded_w"), _const(g, b_new, wv.dtype, "bn_folded_b")]
    return Node(prod.op, tuple(inputs), prod.outputs, prod.attrs, prod.name)


def _fold_into_gemm(g: Graph, prod: Node, s: np.ndarray, t: np.ndarray) -> list[Node] | None:
    out_t = g.types[prod.outputs[0]]
    if out_t.rank != 2 or out_t.shape[1] != s.shape[0]:
        return None
    a, b = prod.inputs[0], prod.inputs[1]
    if b not in g.constants or g.constants[b].ndim != 2:
        return None
    bv = g.constants[b]
    dtype = bv.dtype
    if prod.op == "MatMul":
        b_new = _const(g, bv.astype(np.float64) * s[None, :], dtype, "bn_folded_w")
        (mm,) = g.add_node("MatMul", [a, b_new], name=prod.name)
        g.add_node("Add", [mm, _const(g, t, dtype, "bn_folded_b")], name=g.fresh_name("bn_shift"))
        return [g.nodes.pop(-2), g.nodes.pop()]
    attrs: GemmAttrs = prod.attrs
    scaled = bv.astype(np.float64) * (s[:, None] if attrs.trans_b else s[None, :])
    c = prod.inputs[2] if len(prod.inputs) > 2 else ""
    if c and c not in g.constants:
        return None
    cv = g.constants[c].astype(np.float64) if c else np.zeros((), np.float64)
    c_new = attrs.beta * cv * s + t
    inputs = [a, _const(g, scaled, dtype, "bn_folded_w"), _const(g, c_new, dtype, "bn_folded_b")]
    new_attrs = GemmAttrs(alpha=attrs.alpha, beta=1.0, trans_a=attrs.trans_a, trans_b=attrs.trans_b)
    return [Node("Gemm", tuple(inputs), prod.outputs, new_attrs, prod.name)]


def run(graph: Graph, ctx: PassContext) -> PassResult:
    g = graph.copy()
    producers = graph.producers()
    uses = use_counts(graph)
    counts: dict[str, int] = {}
    for bn in graph.nodes:
        if bn.op != "BatchNormalization" or len(bn.outputs) != 1:
            continue
        affine = _affine(g, bn)
        if affine is None:
            continue
        s, t = affine
        x = bn.inputs[0]
        out = bn.outputs[0]
        prod = producers.get(x)
        replacement: list[Node] | None = None
        if prod is not None and uses.get(x) == 1 and prod in g.nodes:
            if prod.op in ("Conv", "FusedConv"):
                node = _fold_into_conv(g, prod, s, t)
                replacement = [node] if node is not None else None
            elif prod.op in ("Gemm", "MatMul"):
                replacement = _fold_into_gemm(g, prod, s, t)
        if replacement is not None:
            # the producer now computes BN's output: it takes over BN's output name
            last = replacement[-1]
            replacement[-1] = Node(last.op, last.inputs, (out,), last.attrs, last.name)
            at = g.nodes.index(prod)
            g.nodes[at:at + 1] = replacement
            g.nodes.remove(bn)
            del g.types[x]
            counts[f"into {prod.op}"] = counts.get(f"into {prod.op}", 0) + 1
            continue
        rank = g.types[x].rank
        if rank < 2 or not g.types[x].dtype.is_float:
            continue
        dtype = g.types[x].dtype.np
        shape = (s.shape[0],) + (1,) * (rank - 2)
        scale_c = _const(g, s.reshape(shape), dtype, "bn_scale")
        shift_c = _const(g, t.reshape(shape), dtype, "bn_shift")
        at = g.nodes.index(bn)
        del g.nodes[at]
        del g.types[out]
        (m,) = g.add_node("Mul", [x, scale_c], name=f"{bn.name}_scale", index=at)
        g.add_node("Add", [m, shift_c], name=f"{bn.name}_shift", outputs=[out], index=at + 1)
        counts["into Mul+Add"] = counts.get("into Mul+Add", 0) + 1
    if not counts:
        return PassResult(graph, False, "")
    g.remove_unused_values()
    total = sum(counts.values())
    detail = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    return PassResult(g, True, f"folded {total} BatchNormalization ({detail})")


PASS = Pass("fold_batchnorm", run, __doc__)
