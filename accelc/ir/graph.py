"""The graph IR: SSA values named by strings, immutable nodes, constants as NumPy arrays.

A ``Graph`` is a mutable container of immutable ``Node``s kept in topological order. Every value
(graph input, constant or node output) has exactly one definition and a recorded ``TensorType``.
Passes build new nodes with ``Graph.add_node`` (which runs the op's type inference) and rewire uses
with ``replace_all_uses``; they never mutate a ``Node``.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import VerificationError
from .dtypes import DType
from .types import TensorType


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Any
    name: str = ""

    def with_inputs(self, inputs: Sequence[str]) -> "Node":
        return dataclasses.replace(self, inputs=tuple(inputs))

    def key(self) -> tuple:
        """Structural identity (op, inputs, attrs) used by CSE; the node name does not count."""
        return (self.op, self.inputs, self.attrs)


class Graph:
    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.metadata: dict[str, Any] = {}
        self._counter = itertools.count()

    # ---- construction -------------------------------------------------------------------------
    def fresh_name(self, base: str = "v") -> str:
        base = base or "v"
        while True:
            name = f"{base}_{next(self._counter)}"
            if name not in self.types:
                return name

    def add_input(self, name: str, type_: TensorType) -> str:
        if name in self.types:
            raise VerificationError(f"value '{name}' is defined twice")
        self.inputs.append(name)
        self.types[name] = type_
        return name

    def add_constant(self, array: np.ndarray, name: str | None = None) -> str:
        array = np.asarray(array)
        name = name if name is not None else self.fresh_name("const")
        if name in self.types:
            raise VerificationError(f"value '{name}' is defined twice")
        array = array.copy() if array.flags.writeable else array
        array.flags.writeable = False
        self.constants[name] = array
        self.types[name] = TensorType(DType.from_numpy(array.dtype), tuple(array.shape))
        return name

    def add_node(self, op: str, inputs: Sequence[str], attrs: Any = None, *, name: str | None = None,
                 outputs: Sequence[str] | None = None, index: int | None = None) -> list[str]:
        """Appends (or inserts at ``index``) a node, infers its output types and returns the output names."""
        from .registry import get_op, infer_types

        opdef = get_op(op)
        if attrs is None:
            attrs = opdef.attrs()
        in_types = [self.types[i] if i else None for i in inputs]
        consts = [self.constants.get(i) if i else None for i in inputs]
        out_types = infer_types(opdef, in_types, attrs, consts)
        node_name = name or self.fresh_name(op.lower())
        if outputs is None:
            outputs = [self.fresh_name(node_name) for _ in out_types]
        if len(outputs) != len(out_types):
            raise VerificationError(f"{op} '{node_name}' produces {len(out_types)} outputs, "
                                    f"{len(outputs)} names were given")
        for o, t in zip(outputs, out_types):
            if o in self.types:
                raise VerificationError(f"value '{o}' is defined twice")
            self.types[o] = t
        node = Node(op, tuple(inputs), tuple(outputs), attrs, node_name)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return list(outputs)

    # ---- queries ------------------------------------------------------------------------------
    def type_of(self, value: str) -> TensorType:
        return self.types[value]

    def is_constant(self, value: str) -> bool:
        return value in self.constants

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def num_uses(self, value: str) -> int:
        count = sum(i == value for n in self.nodes for i in n.inputs)
        return count + self.outputs.count(value)

    # ---- rewriting ----------------------------------------------------------------------------
    def replace_all_uses(self, old: str, new: str) -> None:
        self.nodes = [n.with_inputs([new if i == old else i for i in n.inputs]) if old in n.inputs else n
                      for n in self.nodes]
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_unused_values(self) -> None:
        """Forgets types and constants of values that nothing defines or uses any more."""
        live = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            live.update(i for i in n.inputs if i)
            live.update(n.outputs)
        for v in [v for v in self.types if v not in live]:
            del self.types[v]
            self.constants.pop(v, None)

    def copy(self) -> "Graph":
        """A copy sharing the (read-only) constant arrays; nodes are immutable and shared too."""
        g = copy.copy(self)
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.nodes = list(self.nodes)
        g.types = dict(self.types)
        g.constants = dict(self.constants)
        g.metadata = dict(self.metadata)
        return g

    def ops_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            hist[n.op] = hist.get(n.op, 0) + 1
        return dict(sorted(hist.items()))

    def __str__(self) -> str:
        from .printer import print_graph
        return print_graph(self)


def topological_sort(nodes: Iterable[Node], available: Iterable[str]) -> list[Node]:
    """Orders nodes so that each comes after the producers of its inputs (stable where already ordered)."""
    ready = set(available)
    pending = list(nodes)
    ordered: list[Node] = []
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all((not i) or i in ready for i in n.inputs):
                ordered.append(n)
                ready.update(n.outputs)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            missing = sorted({i for n in rest for i in n.inputs if i and i not in ready})
            raise VerificationError(f"graph has a cycle or undefined values: {', '.join(missing[:10])}")
        pending = rest
    return ordered
