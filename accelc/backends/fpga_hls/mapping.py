"""From the optimized IR graph to a ``Design``: one FPGA layer per operator (or per fused epilogue part).

The IR is batch-first and, for images, channels-first (NCHW). An FPGA design processes one sample at a
time with channels-last tensors, so the mapper

* drops the leading batch dimension (every input and output must share it; an op that mixes samples is
  refused),
* keeps every value that feeds a convolution or pooling window channels-last (``Port.perm`` says how
  the C-simulation wrapper and the testbench reorder the model's NCHW inputs and outputs), and
* turns a Flatten/Reshape of a channels-last tensor into a ``Reshape`` with a gather order, so the
  flattened vector is in the model's NCHW order and the next dense layer keeps its weights as trained.

Epilogues fused by ``fuse_epilogues`` (bias, residual, activation) become Dense/Conv + Add + Activation
layers again: each keeps its own fixed-point type.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import BackendError, UnsupportedOpError
from ...ir import Graph, Node
from .codegen import Design
from .layers import conv, dense, transformer
from .layers.base import Layer, Value, c_identifier

SPATIAL_OPS = {"Conv", "FusedConv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
ACTIVATIONS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Gelu": "gelu"}
SUPPORTED = {"FusedGemm", "Gemm", "MatMul", "FusedConv", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
             "GlobalMaxPool", "Add", "Sub", "Mul", "Div", "Softmax", "LayerNormalization", "Flatten", "Reshape",
             "Squeeze", "Unsqueeze", "Transpose", "Concat", "BatchNormalization", "Identity", *ACTIVATIONS}


@dataclass
class Port:
    """A top-level input or output: its IR name, IR shape and the design value that carries it.
    ``perm`` orders the IR tensor's per-sample axes into the design's (channels-last) order."""
    ir_name: str
    ir_shape: tuple[int, ...]
    value: Value
    perm: tuple[int, ...] | None = None


@dataclass
class _Mapped:
    value: Value
    nhwc: bool            # IR tensor is (N, C, *spatial); the design stores (*spatial, C)


def unsupported_nodes(graph: Graph) -> list[tuple[Node, str]]:
    """Nodes no FPGA layer computes, with the reason (a first, cheap check before mapping)."""
    out = []
    for node in graph.nodes:
        if node.op not in SUPPORTED:
            out.append((node, "no FPGA layer for this op (supported: dense/conv/pooling, ReLU, LeakyReLU, "
                              "sigmoid, tanh, GELU, softmax, LayerNorm, add/scale, concat, reshape, transpose)"))
        elif node.op in ("FusedGemm", "FusedConv") and node.attrs.activation.kind not in (
                "none", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"):
            out.append((node, f"activation '{node.attrs.activation.kind}' has no FPGA layer"))
    return out


class Mapper:
    def __init__(self, graph: Graph, name: str = "model"):
        self.g = graph
        self.name = c_identifier(name)
        self.layers: list[Layer] = []
        self.env: dict[str, _Mapped] = {}
        self.used: set[str] = set()
        self.batch: int | None = None
        self.consumers = graph.consumers()

    # ---- helpers ---------------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        # Values are top-function locals named v_<IR name>; layers name their global constants
        # <layer>_<suffix> after their IR name without the prefix (see _lname), so a tensor can never
        # shadow a layer's weights whatever the model's names are.
        name = "v_" + c_identifier(base)
        if name in self.used or name == self.name:
            i = 1
            while f"{name}_{i}" in self.used:
                i += 1
            name = f"{name}_{i}"
        self.used.add(name)
        return name

    def _shape(self, v: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.g.types[v].shape)

    def _sample_shape(self, v: str, node: Node | None, nhwc: bool) -> tuple[int, ...]:
        shape = self._shape(v)
        if not shape:
            raise BackendError(f"value '{v}' is a scalar; FPGA designs need a leading batch dimension on "
                               f"every tensor")
        if self.batch is None:
            self.batch = shape[0]
        if shape[0] != self.batch:
            where = f"{node.op} '{node.name}'" if node else f"input '{v}'"
            raise UnsupportedOpError(f"{where} changes the batch dimension ({self.batch} -> {shape[0]}); an FPGA "
                                     f"design processes one sample at a time and keeps dimension 0 as the batch",
                                     [(node.name if node else v, "mixes samples")])
        per = shape[1:]
        if nhwc:
            per = (*per[1:], per[0])
        return per or (1,)

    def _new_value(self, ir_name: str, node: Node | None, nhwc: bool, shape=None) -> _Mapped:
        shape = shape if shape is not None else self._sample_shape(ir_name, node, nhwc)
        return _Mapped(Value(self._fresh(ir_name), tuple(shape), source=ir_name), nhwc)

    @staticmethod
    def _lname(m: "_Mapped") -> str:
        """The layer computing value ``m``: its name without the v_ prefix (L_ when that starts with v_)."""
        name = m.value.name[2:]
        return "L_" + name if name.startswith("v_") or not name else name

    def _const(self, v: str) -> np.ndarray | None:
        return self.g.constants.get(v)

    def _refuse(self, node: Node, why: str):
        raise UnsupportedOpError(f"{node.op} '{node.name}' cannot be compiled for an FPGA: {why}",
                                 [(node.name, why)])

    def _channel_vector(self, node: Node, c: np.ndarray, out_ir: str, nhwc: bool) -> np.ndarray | float:
        """A constant operand of an elementwise op as a scalar or a vector over the design's last axis."""
        c = np.asarray(c, dtype=np.float64)
        if c.size == 1:
            return float(c.reshape(()))
        full = np.broadcast_to(c, self._shape(out_ir))[0]            # one sample
        if nhwc:
            full = np.moveaxis(full, 0, -1)
        vec = full.reshape(-1, full.shape[-1])
        if not np.all(vec == vec[0]):
            self._refuse(node, "its constant operand varies along more than the last (channel/feature) axis; "
                               "only per-channel or scalar constants are supported")
        return vec[0].copy()

    # ---- the walk --------------------------------------------------------------------------------
    def run(self) -> tuple[Design, list[Port], list[Port]]:
        spatial_inputs = set()
        for node in self.g.nodes:
            if node.op in SPATIAL_OPS:
                spatial_inputs.add(node.inputs[0])
        in_ports = []
        for name in self.g.inputs:
            rank = len(self._shape(name))
            nhwc = name in spatial_inputs and rank >= 3
            m = self._new_value(name, None, nhwc)
            self.env[name] = m
            perm = (*range(1, rank - 1), 0) if nhwc else None
            in_ports.append(Port(name, self._shape(name), m.value, perm))
        for node in self.g.nodes:
            self._map(node)
        out_ports = []
        for name in self.g.outputs:
            if name not in self.env:
                raise BackendError(f"graph output '{name}' is a constant or an input; an FPGA design must "
                                   f"compute its outputs")
            m = self.env[name]
            rank = len(self._shape(name))
            out_ports.append(Port(name, self._shape(name), m.value, (*range(1, rank - 1), 0) if m.nhwc else None))
        design = Design(self.name, self.layers, [p.value for p in in_ports], [p.value for p in out_ports])
        return design, in_ports, out_ports

    def _add(self, layer: Layer) -> None:
        self.layers.append(layer)

    def _map(self, node: Node) -> None:
        op = node.op
        if op == "Identity":
            self.env[node.outputs[0]] = self.env[node.inputs[0]]
            return
        if op in ("FusedGemm", "Gemm", "MatMul"):
            return self._gemm(node)
        if op in ("FusedConv", "Conv"):
            return self._conv(node)
        if op in ("MaxPool", "AveragePool"):
            return self._pool(node)
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            x = self.env[node.inputs[0]]
            out = self._new_value(node.outputs[0], node, True)
            mode = "avg" if op == "GlobalAveragePool" else "max"
            self._add(conv.GlobalPool(self._lname(out), x.value, out.value, mode, nodes=[node.name]))
            self.env[node.outputs[0]] = out
            return
        if op in ACTIVATIONS:
            x = self.env[node.inputs[0]]
            out = self._new_value(node.outputs[0], node, x.nhwc)
            alpha = float(getattr(node.attrs, "alpha", 0.01) or 0.01) if op == "LeakyRelu" else 0.01
            if op == "Gelu" and getattr(node.attrs, "approximate", "none") != "none":
                self._refuse(node, "tanh-approximated GELU is not implemented; export with the exact (erf) GELU")
            self._add(dense.Activation(self._lname(out), x.value, out.value, ACTIVATIONS[op], alpha, nodes=[node.name]))
            self.env[node.outputs[0]] = out
            return
        if op in ("Add", "Sub", "Mul", "Div"):
            return self._binary(node)
        if op == "Softmax":
            x = self.env[node.inputs[0]]
            rank = len(self._shape(node.inputs[0]))
            if x.nhwc or node.attrs.axis not in (-1, rank - 1):
                self._refuse(node, f"softmax over axis {node.attrs.axis}; only the last axis is supported")
            out = self._new_value(node.outputs[0], node, False)
            self._add(dense.Softmax(self._lname(out), x.value, out.value, nodes=[node.name]))
            self.env[node.outputs[0]] = out
            return
        if op == "LayerNormalization":
            x = self.env[node.inputs[0]]
            rank = len(self._shape(node.inputs[0]))
            if x.nhwc or node.attrs.axis not in (-1, rank - 1):
                self._refuse(node, "LayerNorm over more than the last axis is not supported")
            gamma = self._const(node.inputs[1])
            beta = self._const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
            if gamma is None or (len(node.inputs) > 2 and node.inputs[2] and beta is None):
                self._refuse(node, "its scale and bias must be constants")
            out = self._new_value(node.outputs[0], node, False)
            self._add(transformer.LayerNorm(self._lname(out), x.value, out.value, np.asarray(gamma, np.float64).ravel(),
                                           None if beta is None else np.asarray(beta, np.float64).ravel(),
                                           float(node.attrs.epsilon), nodes=[node.name]))
            self.env[node.outputs[0]] = out
            return
        if op == "BatchNormalization":
            x = self.env[node.inputs[0]]
            scale, bias, mean, var = (self._const(v) for v in node.inputs[1:5])
            if any(c is None for c in (scale, bias, mean, var)):
                self._refuse(node, "its parameters must be constants")
            s = scale / np.sqrt(var.astype(np.float64) + node.attrs.epsilon)
            out = self._new_value(node.outputs[0], node, x.nhwc)
            self._add(dense.ScaleShift(self._lname(out), x.value, out.value, s, bias - mean * s, nodes=[node.name]))
            self.env[node.outputs[0]] = out
            return
        if op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
            return self._reshape(node)
        if op == "Transpose":
            x = self.env[node.inputs[0]]
            rank = len(self._shape(node.inputs[0]))
            perm = tuple(node.attrs.perm) if node.attrs.perm is not None else tuple(reversed(range(rank)))
            if perm[0] != 0:
                self._refuse(node, f"perm {perm} moves the batch axis")
            if x.nhwc:
                self._refuse(node, "transposing a tensor that feeds convolutions is not supported")
            out = self._new_value(node.outputs[0], node, False)
            self._add(transformer.Transpose(self._lname(out), x.value, out.value, tuple(p - 1 for p in perm[1:]),
                                           nodes=[node.name]))
            self.env[node.outputs[0]] = out
            return
        if op == "Concat":
            xs = [self.env[v] for v in node.inputs]
            rank = len(self._shape(node.inputs[0]))
            axis = node.attrs.axis % rank
            if axis == 0:
                self._refuse(node, "concatenating along the batch axis")
            nhwc = xs[0].nhwc
            if any(x.nhwc != nhwc for x in xs):
                self._refuse(node, "inputs in different layouts")
            per_axis = (axis - 2 if axis >= 2 else rank - 2) if nhwc else axis - 1
            out = self._new_value(node.outputs[0], node, nhwc)
            self._add(dense.Concat(self._lname(out), [x.value for x in xs], out.value, per_axis, nodes=[node.name]))
            self.env[node.outputs[0]] = out
            return
        self._refuse(node, "no FPGA layer for this op")

    def _gemm(self, node: Node) -> None:
        a_name, b_name = node.inputs[0], node.inputs[1]
        at = node.attrs
        trans_a = getattr(at, "trans_a", False)
        trans_b = getattr(at, "trans_b", False)
        alpha = float(getattr(at, "alpha", 1.0))
        beta = float(getattr(at, "beta", 1.0))
        w = self._const(b_name)
        if self._const(a_name) is not None:
            self._refuse(node, "a constant left operand; only x @ W (or two activations) is supported")
        x = self.env[a_name]
        if trans_a:
            self._refuse(node, "a transposed left operand")
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        residual = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else None
        act = getattr(at, "activation", None)
        final = node.outputs[0]
        if w is None:   # two activations: attention products
            if bias or residual or (act is not None and act.kind != "none") or alpha != 1.0:
                self._refuse(node, "a product of two activations with an epilogue")
            y = self.env[b_name]
            if trans_b:
                self._refuse(node, "a transposed activation operand (insert an explicit Transpose)")
            out = self._new_value(final, node, False)
            self._add(transformer.MatMul(self._lname(out), x.value, y.value, out.value, nodes=[node.name]))
            self.env[final] = out
            return
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 2:
            self._refuse(node, f"a weight of rank {w.ndim}; dense layers take a 2-D weight")
        if trans_b:
            w = w.T
        if x.nhwc:
            self._refuse(node, "a dense layer on a channels-first image tensor (flatten it first)")
        b = None
        if bias is not None:
            bc = self._const(bias)
            if bc is None:
                self._refuse(node, "a bias that is not a constant")
            b = np.broadcast_to(np.asarray(bc, np.float64) * beta, self._shape(final)).reshape(-1, w.shape[1])
            if not np.all(b == b[0]):
                self._refuse(node, "a bias that differs between rows")
            b = b[0].copy()
        steps = self._epilogue_steps(residual, act)
        mid = self._new_value(final if not steps else final + "_acc", node, False, self._sample_shape(final, node, False))
        self._add(dense.Dense(self._lname(mid), x.value, mid.value, w * alpha, b, nodes=[node.name]))
        self._epilogue(node, mid, residual, act, final)

    def _epilogue_steps(self, residual, act) -> int:
        return int(bool(residual)) + int(act is not None and act.kind != "none")

    def _epilogue(self, node: Node, mid: _Mapped, residual, act, final: str) -> None:
        cur = mid
        if residual:
            r = self.env[residual]
            last = not (act is not None and act.kind != "none")
            nxt = self._new_value(final if last else final + "_res", node, cur.nhwc, cur.value.shape)
            self._add(dense.Add(self._lname(nxt), cur.value, r.value, nxt.value, nodes=[node.name]))
            cur = nxt
        if act is not None and act.kind != "none":
            nxt = self._new_value(final, node, cur.nhwc, cur.value.shape)
            self._add(dense.Activation(self._lname(nxt), cur.value, nxt.value, act.kind, float(act.alpha or 0.01),
                                   nodes=[node.name]))
            cur = nxt
        self.env[final] = cur

    def _conv(self, node: Node) -> None:
        at = node.attrs.conv if node.op == "FusedConv" else node.attrs
        x = self.env[node.inputs[0]]
        w = self._const(node.inputs[1])
        if w is None:
            self._refuse(node, "its weight is not a constant")
        w = np.asarray(w, np.float64)
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        b = None
        if bias is not None:
            b = self._const(bias)
            if b is None:
                self._refuse(node, "its bias is not a constant")
            b = np.asarray(b, np.float64).ravel()
        residual = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else None
        act = node.attrs.activation if node.op == "FusedConv" else None
        geo = at.geometry(w.ndim - 2, tuple(w.shape[2:]))
        final = node.outputs[0]
        steps = self._epilogue_steps(residual, act)
        mid = self._new_value(final if not steps else final + "_acc", node, True, self._sample_shape(final, node, True))
        self._add(conv.Conv(self._lname(mid), x.value, mid.value, w, b, tuple(geo.strides),
                         tuple(geo.pads_begin) + tuple(geo.pads_end), tuple(geo.dilations), int(at.group),
                         nodes=[node.name]))
        self._epilogue(node, mid, residual, act, final)

    def _pool(self, node: Node) -> None:
        at = node.attrs
        if at.ceil_mode:
            self._refuse(node, "ceil_mode=1 pooling (re-export with ceil_mode=False)")
        x = self.env[node.inputs[0]]
        nd = len(self._shape(node.inputs[0])) - 2
        geo = at.geometry(nd)
        if any(dl != 1 for dl in geo.dilations):
            self._refuse(node, "dilated pooling")
        out = self._new_value(node.outputs[0], node, True)
        mode = "max" if node.op == "MaxPool" else "avg"
        self._add(conv.Pool(self._lname(out), x.value, out.value, mode, tuple(geo.kernel), tuple(geo.strides),
                                  tuple(geo.pads_begin) + tuple(geo.pads_end),
                                  bool(getattr(at, "count_include_pad", False)), nodes=[node.name]))
        self.env[node.outputs[0]] = out

    def _binary(self, node: Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        ca, cb = self._const(a), self._const(b)
        out_ir = node.outputs[0]
        if ca is None and cb is None:
            if node.op != "Add":
                self._refuse(node, f"{node.op} of two activations (only Add is supported)")
            xa, xb = self.env[a], self.env[b]
            if self._shape(a) != self._shape(b) or xa.nhwc != xb.nhwc:
                self._refuse(node, "Add of two activations with different shapes (broadcasting)")
            out = self._new_value(out_ir, node, xa.nhwc)
            self._add(dense.Add(self._lname(out), xa.value, xb.value, out.value, nodes=[node.name]))
            self.env[out_ir] = out
            return
        if ca is not None and cb is not None:
            self._refuse(node, "both operands constant (constant folding should have removed it)")
        x_name, c = (b, ca) if ca is not None else (a, cb)
        x = self.env[x_name]
        if self._shape(out_ir) != self._shape(x_name):
            self._refuse(node, "a constant that broadcasts the activation to a larger shape")
        vec = self._channel_vector(node, c, out_ir, x.nhwc)
        const_first = ca is not None
        scale, shift = None, None
        if node.op == "Add":
            shift = vec
        elif node.op == "Sub":
            scale, shift = (-1.0, vec) if const_first else (None, -vec)
        elif node.op == "Mul":
            scale = vec
        else:  # Div
            if const_first:
                self._refuse(node, "dividing a constant by an activation")
            if np.any(np.asarray(vec) == 0):
                self._refuse(node, "division by zero")
            scale = 1.0 / vec
        out = self._new_value(out_ir, node, x.nhwc)
        self._add(dense.ScaleShift(self._lname(out), x.value, out.value, scale, shift, nodes=[node.name]))
        self.env[out_ir] = out

    def _reshape(self, node: Node) -> None:
        x = self.env[node.inputs[0]]
        out_ir = node.outputs[0]
        out = self._new_value(out_ir, node, False)
        order = None
        if x.nhwc:
            ir_in = self._shape(node.inputs[0])[1:]             # (C, *spatial)
            idx = np.arange(int(np.prod(ir_in))).reshape(ir_in)  # index in IR (NCHW) order
            stored = np.moveaxis(idx, 0, -1).ravel()             # what position k of storage holds
            pos = np.empty_like(stored)
            pos[stored] = np.arange(stored.size)                 # IR element -> storage position
            order = pos                                          # out.flat[i] = x.flat[order[i]]
            if np.array_equal(order, np.arange(order.size)):
                order = None
        self._add(dense.Reshape(self._lname(out), x.value, out.value, order, nodes=[node.name]))
        self.env[out_ir] = out


def map_graph(graph: Graph, name: str = "model") -> tuple[Design, list[Port], list[Port]]:
    return Mapper(graph, name).run()
