"""The table of op lowerings a code-generating backend keeps: one entry per IR op.

Each backend owns its own table (the CPU and CUDA backends lower the same op differently) but they
register and look up entries the same way: ``@table.register("Op", check=...)`` next to the lowering
function, where ``check(graph, node)`` returns the reason the backend cannot lower this particular node
(a dtype, a dynamic shape...) or None. ``unsupported()`` reports those reasons; nothing is lowered
silently wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..ir import Graph, Node

CheckFn = Callable[[Graph, Node], "str | None"]
EmitFn = Callable[[Any, Node], None]


@dataclass(frozen=True)
class Lowering:
    op: str
    emit: EmitFn
    check: CheckFn | None = None


class LoweringTable(dict):
    """op name -> ``Lowering``, filled at import of the backend's lowering modules."""

    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend

    def register(self, *ops: str, check: CheckFn | None = None):
        def decorate(fn: EmitFn) -> EmitFn:
            for op in ops:
                if op in self:
                    raise RuntimeError(f"two {self.backend} lowerings for op '{op}'")
                self[op] = Lowering(op, fn, check)
            return fn
        return decorate
