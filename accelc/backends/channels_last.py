"""The channels-last (NHWC) walk shared by the CPU and CUDA backends.

A backend that runs convolutions channels-last rewrites its graph in one forward walk over the nodes:

- each convolution the backend takes (its ``convert`` callback) is replaced by the backend's own NHWC
  nodes, reading the NHWC twins of its input and residual (``NhwcWalk.nhwc``) and writing the twin of its
  output (``NhwcWalk.produce``);
- a 2-D MaxPool/AveragePool whose input has a twin becomes the backend's NHWC pooling node (``pool``);
- GlobalAveragePool/GlobalMaxPool on a twin become a ReduceMean/ReduceMax over the pixel axes, whose
  [N,1,1,C] result is the NCHW [N,C,1,1] one through a transpose of size-1 axes (a free view);
- Concat over channels runs on the twins, and so does an elementwise op with at least one twin input whose
  other inputs broadcast to its output as one value per channel (or per image and channel: a
  squeeze-and-excitation block's gate, a per-channel scale): such a constant is stored permuted, a
  run-time one is read through a transpose that only moves size-1 axes (a free view).

A value's NCHW form is produced (by a Transpose) only where something still reads it: a node the walk
does not convert, or a graph output. So a ResNet runs NHWC from its first convolution to the global
pooling, with no transposes in between. Values keep their names; the twins are new values.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..ir import DType, Graph, Node
from ..ir.ops.elementwise import ELEMENTWISE_OPS
from ..ir.ops.reduce import ReduceAttrs
from ..ir.ops.shape import ConcatAttrs, TransposeAttrs
from ..passes import eliminate_dead_code
from ..passes.manager import PassContext
from .cpu_amx.codegen_context import static_shape

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)


def permuted(shape, perm) -> tuple[int, ...]:
    return tuple(shape[p] for p in perm)


class NhwcWalk:
    """The state of one walk: the graph being built (``g``: the input graph's copy, which also receives
    new constants and value types), its nodes so far, and each NCHW value's NHWC twin."""

    def __init__(self, graph: Graph):
        self.source = graph
        self.g = graph.copy()
        self.nodes: list[Node] = []
        self.twin: dict[str, str] = {}          # NCHW value -> its NHWC twin
        self.pending: set[str] = set()          # NCHW values known only through their twin so far

    def new_value(self, base: str, like: str, shape, dtype: DType | None = None) -> str:
        name = self.g.fresh_name(base)
        t = self.g.types[like].with_shape(tuple(shape))
        self.g.types[name] = t.with_dtype(dtype) if dtype is not None else t
        return name

    def nhwc(self, v: str) -> str:
        """``v``'s NHWC twin, transposing it now when it has none yet."""
        if v not in self.twin:
            t = self.new_value(f"{v}_nhwc", v, permuted(static_shape(self.g, v), TO_NHWC))
            self.nodes.append(Node("Transpose", (v,), (t,), TransposeAttrs(TO_NHWC), f"{v}_to_nhwc"))
            self.twin[v] = t
        return self.twin[v]

    def need_nchw(self, v: str) -> None:
        """Makes ``v`` itself exist (from its twin) before the next node that reads it."""
        if v in self.pending:
            self.nodes.append(Node("Transpose", (self.twin[v],), (v,), TransposeAttrs(TO_NCHW), f"{v}_to_nchw"))
            self.pending.discard(v)

    def produce(self, out: str) -> str:
        """The NHWC twin a converted node writes instead of ``out``."""
        t = self.new_value(f"{out}_nhwc", out, permuted(static_shape(self.g, out), TO_NHWC))
        self.twin[out] = t
        self.pending.add(out)
        return t


def _elementwise_inputs(w: NhwcWalk, graph: Graph, node: Node, scalar_const) -> tuple[str, ...] | None:
    """The inputs an elementwise node takes channels-last, or None when it stays NCHW: its output is 4-D,
    some input has a twin, and every other tensor input is one value per (image and) channel."""
    out_shape = static_shape(graph, node.outputs[0])
    if len(out_shape) != 4 or not any(i in w.twin for i in node.inputs if i):
        return None
    ins = []
    for i in node.inputs:
        if not i or scalar_const(i) or i in w.twin:
            ins.append(w.twin.get(i, i))
            continue
        shape = static_shape(graph, i)
        padded = (1,) * (4 - len(shape)) + tuple(shape)
        if len(shape) > 4 or padded[2:] != (1, 1):
            return None
        if i in graph.constants:
            arr = np.ascontiguousarray(graph.constants[i].reshape(padded).transpose(TO_NHWC))
            arr.flags.writeable = False
            name = w.g.add_constant(arr, w.g.fresh_name(f"{i}_nhwc"))
            w.twin[i] = name
            ins.append(name)
        elif len(shape) == 4:
            ins.append(w.nhwc(i))        # moves size-1 axes only: a view
        else:
            return None
    return tuple(ins)


ConvertFn = Callable[[NhwcWalk, Node], bool]
PoolFn = Callable[[Graph, Node], "tuple[str, Any] | None"]


def to_channels_last(graph: Graph, convert: ConvertFn, pool: PoolFn,
                     pool_dtypes: tuple[DType, ...] = (DType.float32,)) -> tuple[Graph, int]:
    """The graph walked as the module doc says, and how many convolutions ``convert`` took (it appends
    the replacement nodes to the walk and returns True, or returns False and leaves the node alone).
    ``pool(graph, node)`` gives (op, attrs) of the NHWC pooling node for a pooling node, or None;
    ``pool_dtypes`` are the input types global pooling is converted for."""
    w = NhwcWalk(graph)
    converted = 0

    def scalar_const(v: str) -> bool:
        return v in graph.constants and graph.constants[v].size == 1

    for node in graph.nodes:
        if convert(w, node):
            converted += 1
            continue
        inputs = [i for i in node.inputs if i]
        if node.op in ("MaxPool", "AveragePool") and inputs and inputs[0] in w.twin:
            made = pool(graph, node)
            if made is not None:
                y = w.produce(node.outputs[0])
                w.nodes.append(Node(made[0], (w.twin[inputs[0]],), (y,), made[1], node.name))
                continue
        if node.op in ("GlobalAveragePool", "GlobalMaxPool") and inputs[0] in w.twin \
                and graph.types[inputs[0]].dtype in pool_dtypes and len(static_shape(graph, inputs[0])) == 4:
            out = node.outputs[0]
            n, c = static_shape(graph, out)[:2]
            pooled = w.new_value(f"{out}_nhwc", out, (n, 1, 1, c))
            op = "ReduceMean" if node.op == "GlobalAveragePool" else "ReduceMax"
            w.nodes.append(Node(op, (w.twin[inputs[0]],), (pooled,), ReduceAttrs((1, 2), True), node.name))
            w.nodes.append(Node("Transpose", (pooled,), (out,), TransposeAttrs(TO_NCHW), f"{out}_to_nchw"))
            w.twin[out] = pooled          # an SE block's 1x1 convolutions and gate read it channels-last
            continue
        if node.op == "Concat" and len(node.outputs) == 1 and inputs and all(i in w.twin for i in inputs):
            rank = len(static_shape(graph, inputs[0]))
            axis = node.attrs.axis % rank if rank else 0
            if rank == 4:
                y = w.produce(node.outputs[0])
                w.nodes.append(Node("Concat", tuple(w.twin[i] for i in inputs), (y,),
                                    ConcatAttrs(TO_NHWC.index(axis)), node.name))
                continue
        if (node.op in ELEMENTWISE_OPS or node.op == "FusedElementwise") and len(node.outputs) == 1 and inputs:
            ins = _elementwise_inputs(w, graph, node, scalar_const)
            if ins is not None:
                y = w.produce(node.outputs[0])
                w.nodes.append(Node(node.op, ins, (y,), node.attrs, node.name))
                continue
        for i in inputs:
            w.need_nchw(i)
        w.nodes.append(node)
    if not converted:     # no convolution: nothing else was converted either (twins come from them)
        return graph, 0
    for v in graph.outputs:
        w.need_nchw(v)
    w.g.nodes = w.nodes
    w.g.remove_unused_values()
    if any(n.op == "Transpose" and n.attrs.perm == TO_NCHW for n in w.nodes):   # NCHW views nothing reads
        w.g = eliminate_dead_code.PASS(w.g, PassContext()).graph
    return w.g, converted


__all__ = ["NhwcWalk", "TO_NCHW", "TO_NHWC", "permuted", "to_channels_last"]
