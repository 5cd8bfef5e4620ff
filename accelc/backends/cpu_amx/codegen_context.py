"""The lowering context and the lowering table of the CPU backend.

A lowering turns one IR node into C++ statements through ``LowerCtx``: it asks for typed pointers to
values (``ctx.ptr``), puts compile-time data into weights.bin (``ctx.weight``), requests scratch memory
(``ctx.scratch``) and writes statements with ``ctx.em`` (a ``CppEmitter``). Pointers and scratch are
symbolic until the memory plan is made, so lowering and planning stay separate steps.

Lowerings register themselves per op with ``@lowering("Op", ..., check=fn)``; ``check(graph, node)``
returns the reason the node cannot be lowered (dtype, layout, run-time value) or None. The table is
filled once at import of the ``codegen_*`` family modules and never changed afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import ShapeError
from ...ir import DType, Graph, Node
from ..lowering_table import CheckFn, EmitFn, Lowering, LoweringTable  # noqa: F401  (re-exported)
from .emitter import CppEmitter, c_identifier

LOWERINGS = LoweringTable("CPU")
lowering = LOWERINGS.register


# ---- dtypes ---------------------------------------------------------------------------------------
# storage type in C, and code of runtime_src/accelc_types.h's enum DT
CTYPE = {DType.float32: "float", DType.float16: "uint16_t", DType.bfloat16: "uint16_t", DType.int8: "int8_t",
         DType.uint8: "uint8_t", DType.int16: "int16_t", DType.int32: "int32_t", DType.int64: "int64_t",
         DType.bool: "uint8_t", DType.float64: "double"}
DT_CODE = {DType.float32: "DT::F32", DType.float16: "DT::F16", DType.bfloat16: "DT::BF16", DType.int8: "DT::I8",
           DType.uint8: "DT::U8", DType.int16: "DT::I16", DType.int32: "DT::I32", DType.int64: "DT::I64",
           DType.bool: "DT::BOOL", DType.float64: "DT::F64"}
FLOAT_DTYPES = (DType.float32, DType.float16, DType.bfloat16)
COMPUTABLE = frozenset(CTYPE)


def storage_ctype(dtype: DType) -> str:
    """C storage type; dtypes without arithmetic support (fp8, int4) are moved as raw bytes."""
    return CTYPE.get(dtype) or {1: "uint8_t", 2: "uint16_t", 4: "uint32_t", 8: "uint64_t"}[dtype.itemsize]


def static_shape(graph: Graph, value: str) -> tuple[int, ...]:
    t = graph.types[value]
    if not t.is_static:
        raise ShapeError(f"value '{value}' has the non-static shape {t}; the CPU backend needs every shape "
                         f"known at compile time (pass --shape / shapes= to fix the symbolic dims)")
    return tuple(int(d) for d in t.shape)


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ---- storage ----------------------------------------------------------------------------------------
@dataclass
class Storage:
    """Where a value lives: ``input``/``output`` (caller buffer i), ``weights``/``arena`` (byte offset
    symbol), or ``alias`` of another value (same bytes, another shape)."""
    kind: str
    index: int = 0
    alias_of: str = ""


@dataclass
class ScratchRequest:
    symbol: str
    nbytes: int
    step: int
    label: str


@dataclass
class LowerCtx:
    graph: Graph
    weights: "WeightsBuilder"                    # noqa: F821 (memory_plan.WeightsBuilder)
    storage: dict[str, Storage] = field(default_factory=dict)
    const_offsets: dict[str, int] = field(default_factory=dict)
    scratch_requests: list[ScratchRequest] = field(default_factory=list)
    step: int = 0
    node: Node | None = None
    em: CppEmitter = field(default_factory=CppEmitter)
    uses_gemm: bool = False
    tune_sites: list = field(default_factory=list)       # distinct tuning.Site of the calls, in order
    tune_counts: list = field(default_factory=list)      # how many calls share each site

    # -- values --
    def shape(self, value: str) -> tuple[int, ...]:
        return static_shape(self.graph, value)

    def dtype(self, value: str) -> DType:
        return self.graph.types[value].dtype

    def ctype(self, value: str) -> str:
        return storage_ctype(self.dtype(value))

    def ptr(self, value: str) -> str:
        """The C name of the typed pointer to ``value`` (declared at the top of run())."""
        if value in self.graph.constants and value not in self.const_offsets:
            self.const_offsets[value] = self.weights.add(_raw(self.graph.constants[value]))
        return c_identifier(value)

    def is_const(self, value: str) -> bool:
        return value in self.graph.constants

    def const(self, value: str) -> np.ndarray:
        return self.graph.constants[value]

    def alias(self, out: str, src: str) -> bool:
        """Makes ``out`` share ``src``'s bytes (a view with another shape). False when ``out`` must be
        copied instead (it is a graph output, which lives in a caller buffer)."""
        if self.storage.get(out, Storage("arena")).kind != "arena":
            return False
        self.ptr(src)
        self.storage[out] = Storage("alias", alias_of=src)
        return True

    def root(self, value: str) -> str:
        """The value whose bytes ``value`` uses (itself unless it is a view)."""
        while self.storage.get(value, Storage("x")).kind == "alias":
            value = self.storage[value].alias_of
        return value

    def write_over(self, out: str, src: str) -> bool:
        """Makes ``out`` take ``src``'s bytes when the current node is the last to read ``src``: an
        epilogue that reads each residual element just before it writes the output element at the same
        place can then work in place, sparing the output its own cache lines (a read for ownership per
        line). Only for arena values of equal size that no other input of the node shares bytes with;
        caller buffers (graph inputs and outputs) and weights are never written over. When it does, the
        node's code says so in a comment."""
        node, r = self.node, self.root(src)
        if node is None or self.storage.get(out, Storage("arena")).kind != "arena" or \
                self.storage.get(r, Storage("x")).kind != "arena" or r in self.graph.constants:
            return False
        if self.dtype(out) != self.dtype(r) or numel(self.shape(out)) != numel(self.shape(r)):
            return False
        if sum(1 for i in node.inputs if i and self.root(i) == r) != 1:
            return False
        if any(i and self.root(i) == r for later in self.graph.nodes[self.step + 1:] for i in later.inputs):
            return False
        self.storage[out] = Storage("alias", alias_of=r)
        self.em.comment(f"in place: the output takes the bytes of {src}, read here for the last time")
        return True

    # -- compile-time data and scratch --
    def weight(self, array: np.ndarray, ctype: str) -> str:
        """A C expression pointing at ``array`` (already in its final layout) inside weights.bin."""
        off = self.weights.add(array)
        return f"reinterpret_cast<const {ctype}*>(weights + {off})"

    def scratch(self, nbytes: int, ctype: str, label: str) -> str:
        """A C expression pointing at ``nbytes`` of arena memory private to the current node."""
        symbol = f"kScratch{len(self.scratch_requests)}"
        self.scratch_requests.append(ScratchRequest(symbol, int(nbytes), self.step, label))
        return f"reinterpret_cast<{ctype}*>(arena + {symbol})"

    def blocking(self, site) -> str:
        """The work-split argument (kernels/accelc_gemm.h, Blocking) of a tunable call: a reference to
        the site's entry in the generated accelc_tuning.h (tuning.py). Equal sites share one entry."""
        if site not in self.tune_sites:
            self.tune_sites.append(site)
            self.tune_counts.append(0)
        i = self.tune_sites.index(site)
        self.tune_counts[i] += 1
        return f"ACCELC_BLOCKING({i})"

    def node_label(self) -> str:
        n = self.node
        return f"{n.op} '{n.name}'" if n is not None else "?"


def _raw(array: np.ndarray) -> np.ndarray:
    """Constants are stored with their NumPy bytes (bf16/f16 bits, bool as one byte 0/1)."""
    a = np.ascontiguousarray(array)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    return a
