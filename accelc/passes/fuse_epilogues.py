"""Fuses bias, residual and activation epilogues into ``FusedGemm`` / ``FusedConv``.

Why: a GEMM or convolution is compute-bound while its epilogue ops are memory-bound; applying them to
the accumulator tile while it is still in registers removes one full read and write of the output per
epilogue op. Backends therefore see exactly two linear-algebra forms.

Starting at every ``MatMul``, ``Gemm``, ``Conv`` (and ``FusedGemm``/``FusedConv`` without an
activation yet), the pass follows the single user of the current value and absorbs, in this order:

1. any number of ``Add``s, each either a *bias* (a constant that broadcasts along the output-feature
   axis: the last axis for a GEMM, axis 1 for a convolution; merged with an existing constant bias) or
   a *residual* (a tensor of exactly the output's shape and dtype; at most one);
2. at most one activation: Relu, LeakyRelu, Gelu (erf or tanh), Sigmoid, Tanh, Silu (also written
   ``x * Sigmoid(x)``), Clip with constant (or absent) min/max.

This is the epilogue order ``act(alpha * acc + beta * bias + residual)`` of INTERNALS.md:
``relu(conv + b + r)`` fuses entirely, ``gelu(x @ W + b)`` fuses, ``(x @ W + b) + r`` fuses with
activation ``none``; an Add after the activation is not part of the epilogue and stays.

A value is absorbed only when it has exactly one user and is not a graph output (the Silu pattern's
two uses, Sigmoid and the Mul, are both absorbed). Every remaining plain MatMul/Gemm/Conv becomes a
FusedGemm/FusedConv with activation ``none`` (``Gemm``'s alpha, beta, trans_a, trans_b carry over
unchanged), so backends lower one form. A MatMul the FusedGemm form cannot express is left as is and
named in the summary.

Guarantees: the fused output keeps the name of the last absorbed value; numerics equal the unfused
graph's up to float32 rounding of the summation order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import AccelcError
from ..ir.graph import Graph, Node
from ..ir.ops.fused import Activation, FusedConvAttrs, FusedGemmAttrs
from .manager import Pass, PassContext, PassResult

_STARTS = {"MatMul", "Gemm", "Conv", "FusedGemm", "FusedConv"}


@dataclass
class _Fusion:
    """The fused node being assembled: operands, epilogue slots and the nodes it replaces."""
    kind: str                     # "gemm" | "conv"
    start: Node
    a: str
    b: str
    bias: str = ""
    bias_value: np.ndarray | None = None      # a new constant bias not yet in the graph
    residual: str = ""
    activation: Activation = Activation()
    alpha: float = 1.0
    beta: float = 1.0
    trans_a: bool = False
    trans_b: bool = False
    absorbed: list[Node] = field(default_factory=list)

    @property
    def last(self) -> Node:
        return self.absorbed[-1] if self.absorbed else self.start


def _begin(g: Graph, node: Node) -> _Fusion | None:
    ins = list(node.inputs) + [""] * (4 - len(node.inputs))
    if node.op == "MatMul":
        return _Fusion("gemm", node, ins[0], ins[1])
    if node.op == "Gemm":
        at = node.attrs
        return _Fusion("gemm", node, ins[0], ins[1], bias=ins[2], alpha=float(at.alpha), beta=float(at.beta),
                       trans_a=at.trans_a, trans_b=at.trans_b)
    if node.op == "Conv":
        return _Fusion("conv", node, ins[0], ins[1], bias=ins[2])
    if node.attrs.activation.kind != "none":
        return None
    if node.op == "FusedGemm":
        at = node.attrs
        return _Fusion("gemm", node, ins[0], ins[1], bias=ins[2], residual=ins[3], alpha=at.alpha, beta=at.beta,
                       trans_a=at.trans_a, trans_b=at.trans_b)
    return _Fusion("conv", node, ins[0], ins[1], bias=ins[2], residual=ins[3])


def _channel_vector(g: Graph, f: _Fusion, value: str) -> np.ndarray | None:
    """``value`` as a per-output-feature vector when it is a constant broadcasting along that axis."""
    c = g.constants.get(value)
    out = g.types[f.last.outputs[0]]
    if c is None or c.ndim > out.rank or c.dtype != out.dtype.np:
        return None
    axis = out.rank - 1 if f.kind == "gemm" else 1
    n = out.shape[axis]
    if not isinstance(n, int):
        return None
    shape = (1,) * (out.rank - c.ndim) + tuple(c.shape)
    if any(d != 1 for k, d in enumerate(shape) if k != axis) or shape[axis] not in (1, n):
        return None
    return np.broadcast_to(c.reshape(-1), (n,)).astype(np.float64)


def _absorb_add(g: Graph, f: _Fusion, add: Node, cur: str) -> bool:
    if add.inputs[0] == add.inputs[1]:
        return False
    other = add.inputs[1] if add.inputs[0] == cur else add.inputs[0]
    vector = _channel_vector(g, f, other)
    if vector is not None:
        if f.bias_value is not None:            # a second constant Add: sum the vectors
            f.bias_value = f.bias_value + vector
            return True
        if not f.bias:                          # beta only scales a bias, and there was none
            f.bias_value, f.beta = vector, 1.0
            return True
        if f.bias in g.constants:               # merge into the existing constant bias
            old = g.constants[f.bias].astype(np.float64)
            f.bias_value = (f.beta if f.kind == "gemm" else 1.0) * old + vector
            f.bias, f.beta = "", 1.0
            return True
    t_cur, t_other, t_out = g.types[cur], g.types[other], g.types[add.outputs[0]]
    if not f.residual and t_other.dtype == t_cur.dtype and tuple(t_other.shape) == tuple(t_cur.shape) \
            and tuple(t_out.shape) == tuple(t_cur.shape):
        f.residual = other
        return True
    return False


_SIMPLE_ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Silu": "silu"}


def _activation(g: Graph, node: Node) -> Activation | None:
    if node.op in _SIMPLE_ACTIVATIONS:
        return Activation(_SIMPLE_ACTIVATIONS[node.op])
    if node.op == "LeakyRelu":
        return Activation("leaky_relu", alpha=float(node.attrs.alpha))
    if node.op == "Gelu":
        return Activation("gelu" if node.attrs.approximate == "none" else "gelu_tanh")
    if node.op == "Clip":
        bounds = []
        for pos, default in ((1, -math.inf), (2, math.inf)):
            v = node.inputs[pos] if len(node.inputs) > pos else ""
            if not v:
                bounds.append(default)
            elif v in g.constants and g.constants[v].size == 1:
                bounds.append(float(g.constants[v].reshape(())))
            else:
                return None
        if bounds[0] > bounds[1]:
            return None
        return Activation("clip", alpha=bounds[0], beta=bounds[1])
    return None


def _grow(g: Graph, f: _Fusion, users: dict[str, list[Node]], outputs: set[str], taken: set[int]) -> None:
    """Absorbs the Adds and the activation that follow ``f.start``. Nodes in ``taken`` already belong to
    another fusion (a residual Add of two convolutions is reachable from both): they are never absorbed
    twice, or the second fusion would replace the first and consume the value the first one removed."""
    def single_user(v: str) -> Node | None:
        us = users.get(v, [])
        return us[0] if len(us) == 1 and v not in outputs and id(us[0]) not in taken else None

    cur = f.start.outputs[0]
    while True:
        user = single_user(cur)
        if user is None or user.op != "Add" or not _absorb_add(g, f, user, cur):
            break
        f.absorbed.append(user)
        cur = user.outputs[0]
    if cur in outputs:
        return
    us = users.get(cur, [])
    if any(id(u) in taken for u in us):
        return
    if len(us) == 1:
        act = _activation(g, us[0]) if us[0].inputs[0] == cur else None
        if act is not None:
            f.activation = act
            f.absorbed.append(us[0])
        return
    if len(us) == 2:      # silu written as cur * Sigmoid(cur)
        sig = next((u for u in us if u.op == "Sigmoid"), None)
        mul = next((u for u in us if u.op == "Mul"), None)
        if sig is not None and mul is not None and single_user(sig.outputs[0]) is mul \
                and set(mul.inputs) == {cur, sig.outputs[0]}:
            f.activation = Activation("silu")
            f.absorbed += [sig, mul]


def _build(g: Graph, f: _Fusion) -> Node | None:
    """Adds the bias constant and returns the fused node (not yet placed), or None if it does not type-check."""
    out = f.last.outputs[0]
    bias = f.bias
    if f.bias_value is not None:
        bias = g.add_constant(f.bias_value.astype(g.types[out].dtype.np), g.fresh_name("fused_bias"))
    inputs = [f.a, f.b, bias, f.residual]
    while inputs and not inputs[-1]:
        inputs.pop()
    if f.kind == "gemm":
        attrs = FusedGemmAttrs(trans_a=f.trans_a, trans_b=f.trans_b, alpha=f.alpha, beta=f.beta,
                               activation=f.activation)
        op = "FusedGemm"
    else:
        conv = f.start.attrs.conv if f.start.op == "FusedConv" else f.start.attrs
        attrs = FusedConvAttrs(conv=conv, activation=f.activation)
        op = "FusedConv"
    if f.start.op == op:
        attrs = replace(attrs, compute=f.start.attrs.compute)
    declared = g.types.pop(out)
    try:
        g.add_node(op, inputs, attrs, outputs=[out], name=f.start.name)
    except AccelcError:
        g.types[out] = declared
        return None
    node = g.nodes.pop()
    inferred = g.types[out]
    g.types[out] = declared
    if inferred.dtype != declared.dtype or tuple(inferred.shape) != tuple(declared.shape):
        return None
    return node


def _run(graph: Graph, ctx: PassContext, fuse: bool) -> PassResult:
    g = graph.copy()
    users = graph.consumers()
    outputs = set(graph.outputs)
    replaced: dict[int, Node | None] = {}
    counts: dict[str, int] = {}
    left: dict[str, int] = {}
    for node in graph.nodes:
        if node.op not in _STARTS or id(node) in replaced:
            continue
        f = _begin(g, node)
        if f is None:
            continue
        if fuse:
            _grow(g, f, users, outputs, set(replaced))
        if not f.absorbed and node.op in ("FusedGemm", "FusedConv"):
            continue
        fused = _build(g, f)
        if fused is None:
            left[node.op] = left.get(node.op, 0) + 1
            continue
        for n in [f.start] + f.absorbed:
            replaced[id(n)] = None
        replaced[id(f.last)] = fused
        parts = [a.op for a in f.absorbed]
        what = f"{node.op}" + ("+" + "+".join(parts) if parts else "")
        counts[what] = counts.get(what, 0) + 1
    if not counts:
        return PassResult(graph, False, "")
    g.nodes = [replaced.get(id(n), n) for n in g.nodes if replaced.get(id(n), n) is not None]
    g.remove_unused_values()
    total = sum(counts.values())
    detail = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    summary = f"made {total} fused node{'s' if total != 1 else ''} ({detail})"
    if left:
        summary += "; left unfused (FusedGemm/FusedConv cannot express them): " + \
            ", ".join(f"{n} {op}" for op, n in sorted(left.items()))
    return PassResult(g, True, summary)


def run(graph: Graph, ctx: PassContext) -> PassResult:
    return _run(graph, ctx, fuse=True)


def run_canonicalize(graph: Graph, ctx: PassContext) -> PassResult:
    """Only rewrites plain MatMul/Gemm/Conv into FusedGemm/FusedConv with activation none (no fusion)."""
    return _run(graph, ctx, fuse=False)


PASS = Pass("fuse_epilogues", run, __doc__)
CANONICALIZE_PASS = Pass("canonicalize_linear_ops", run_canonicalize, run_canonicalize.__doc__ or "")
