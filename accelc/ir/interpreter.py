"""The reference interpreter: runs any graph with the NumPy reference of each op.

It is the oracle for passes and backends. Low-precision floats are computed in float32 and rounded to
the declared dtype after every node, which is what a backend that accumulates in fp32 should match.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import InputMismatchError
from .dtypes import DType
from .graph import Graph
from .registry import get_op

_LOW_FLOATS = {DType.float16, DType.bfloat16, DType.float8_e4m3fn, DType.float8_e5m2}


_LOW_NUMPY = {d.np for d in _LOW_FLOATS}


def _upcast(x):
    if isinstance(x, np.ndarray) and x.dtype in _LOW_NUMPY:
        return x.astype(np.float32)
    return x


def evaluate(graph: Graph, feeds: Mapping[str, np.ndarray], *, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Runs ``graph`` on ``feeds`` (name -> array) and returns its outputs (or every value with keep_all)."""
    env: dict[str, np.ndarray] = dict(graph.constants)
    for name in graph.inputs:
        if name not in feeds:
            raise InputMismatchError(f"missing input '{name}'; the graph takes {', '.join(graph.inputs)}")
        expected = graph.types[name].dtype.np
        env[name] = np.asarray(feeds[name]).astype(expected, copy=False)
    uses: dict[str, int] = {}
    if not keep_all:
        for n in graph.nodes:
            for i in n.inputs:
                uses[i] = uses.get(i, 0) + 1
    for node in graph.nodes:
        opdef = get_op(node.op)
        if opdef.takes_low_precision:
            args = [env[i] if i else None for i in node.inputs]
        else:
            args = [_upcast(env[i]) if i else None for i in node.inputs]
        results = opdef.reference(args, node.attrs)
        if len(results) != len(node.outputs):
            raise RuntimeError(f"reference of {node.op} returned {len(results)} outputs, expected {len(node.outputs)}")
        for name, value in zip(node.outputs, results):
            value = np.asarray(value)
            declared = graph.types.get(name)
            if declared is not None and value.dtype != declared.dtype.np:
                value = value.astype(declared.dtype.np)
            env[name] = value
        if not keep_all:
            for i in node.inputs:
                if i and i not in graph.constants and i not in graph.outputs:
                    uses[i] -= 1
                    if uses[i] == 0 and i not in graph.inputs:
                        env.pop(i, None)
    if keep_all:
        return env
    return {o: env[o] for o in graph.outputs}
