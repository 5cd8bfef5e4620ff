"""Textual form of the IR, used by ``accelc inspect``, pass dumps and tests.

    graph main(%x: f32[1,16]) -> (%y) {
      const %w: f32[16,8]
      %y: f32[1,8] = MatMul(%x, %w)  # node_name
    }

Attributes print as ``{name=value, ...}`` with only the fields that differ from their defaults.
"""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

from .graph import Graph, Node


def format_attr(value) -> str:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_attr(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        return format_attrs(value) or "{}"
    return repr(value) if isinstance(value, str) else str(value)


def format_attrs(attrs) -> str:
    if attrs is None or not dataclasses.is_dataclass(attrs):
        return ""
    parts = []
    for f in dataclasses.fields(attrs):
        v = getattr(attrs, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is not dataclasses.MISSING and v == default:
            continue
        parts.append(f"{f.name}={format_attr(v)}")
    return "{" + ", ".join(parts) + "}" if parts else ""


def format_node(graph: Graph, node: Node) -> str:
    outs = ", ".join(f"%{o}: {graph.types[o]}" if o in graph.types else f"%{o}" for o in node.outputs)
    ins = ", ".join(f"%{i}" if i else "_" for i in node.inputs)
    attrs = format_attrs(node.attrs)
    text = f"{outs} = {node.op}({ins})"
    if attrs:
        text += " " + attrs
    if node.name:
        text += f"  # {node.name}"
    return text


def _const_summary(a: np.ndarray) -> str:
    if a.size <= 8:
        vals = np.asarray(a, dtype=np.float64 if a.dtype.kind in "fV" else a.dtype).ravel().tolist()
        return " = " + repr(vals)
    return ""


def print_graph(graph: Graph, *, constants: bool = True) -> str:
    ins = ", ".join(f"%{i}: {graph.types[i]}" for i in graph.inputs)
    outs = ", ".join(f"%{o}" for o in graph.outputs)
    lines = [f"graph {graph.name}({ins}) -> ({outs}) {{"]
    if constants:
        for name, arr in graph.constants.items():
            lines.append(f"  const %{name}: {graph.types[name]}{_const_summary(arr)}")
    for node in graph.nodes:
        lines.append("  " + format_node(graph, node))
    lines.append("}")
    return "\n".join(lines)
