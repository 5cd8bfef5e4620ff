"""The lowering context and lowering table of the CUDA backend.

A lowering turns one IR node into CUDA C++: kernels (``ctx.kernels``, one or more per node, named after
the node) and their launches inside ``forward()`` (``ctx.fwd``). Values are addressed by typed device
pointers declared at the top of ``forward()`` (``ctx.ptr``); their arena offsets are symbolic until the
memory plan is made after lowering, exactly as in the CPU backend, whose emitter, arena planner and
weights builder this backend reuses.

Lowerings register per op with ``@lowering("Op", check=fn)``; ``check(graph, node)`` returns why the
node cannot be lowered (dtype, rank, run-time value) or None. ``CudaBackend.unsupported`` is that table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir import DType, Graph, Node
from ..lowering_table import CheckFn, EmitFn, Lowering, LoweringTable  # noqa: F401  (re-exported)
from ..cpu_amx.codegen_context import ScratchRequest, numel, static_shape
from ..cpu_amx.emitter import CppEmitter, c_identifier
from ..cpu_amx.memory_plan import ALIGN, WeightsBuilder

LOWERINGS = LoweringTable("CUDA")
lowering = LOWERINGS.register


# ---- dtypes -------------------------------------------------------------------------------------
STORAGE = {DType.float32: "float", DType.float16: "__half", DType.bfloat16: "__nv_bfloat16",
           DType.float64: "double", DType.int8: "int8_t", DType.uint8: "uint8_t", DType.int16: "int16_t",
           DType.int32: "int32_t", DType.int64: "int64_t", DType.bool: "uint8_t"}
COMPUTE = {DType.float32: "float", DType.float16: "float", DType.bfloat16: "float", DType.float64: "double",
           DType.int8: "int32_t", DType.uint8: "int32_t", DType.int16: "int32_t", DType.int32: "int32_t",
           DType.int64: "int64_t", DType.bool: "bool"}
FLOATS = (DType.float32, DType.float16, DType.bfloat16, DType.float64)
LOW = (DType.bfloat16, DType.float16)    # the 16-bit compute types (tensor cores)
CUTLASS_ELEMENT = {DType.float32: "float", DType.float16: "cutlass::half_t", DType.bfloat16: "cutlass::bfloat16_t"}


def storage(dtype: DType) -> str:
    return STORAGE[dtype]


def load_expr(dtype: DType, ref: str) -> str:
    """``ref`` (an lvalue of storage type) converted to the compute type."""
    if dtype in (DType.float16, DType.bfloat16):
        return f"accelc::to_f32({ref})"
    if dtype == DType.bool:
        return f"({ref} != 0)"
    return f"{COMPUTE[dtype]}({ref})"


def store_expr(dtype: DType, value: str) -> str:
    """A compute-type expression converted to ``dtype``'s storage type."""
    if dtype in (DType.float16, DType.bfloat16):
        return f"accelc::from_f32<{STORAGE[dtype]}>({value})"
    if dtype == DType.bool:
        return f"uint8_t(({value}) ? 1 : 0)"
    return f"{STORAGE[dtype]}({value})"


def raw_constant(array: np.ndarray) -> np.ndarray:
    """Constants are stored with their NumPy bytes (bf16/f16 bits, bool as one byte 0/1)."""
    a = np.ascontiguousarray(array)
    return a.astype(np.uint8) if a.dtype == np.bool_ else a


@dataclass
class LowerCtx:
    graph: Graph
    options: object
    arch: "object" = None                                          # arch.Arch of the target
    weights: WeightsBuilder = field(default_factory=WeightsBuilder)
    kernels: CppEmitter = field(default_factory=CppEmitter)
    fwd: CppEmitter = field(default_factory=CppEmitter)
    const_offsets: dict[str, int] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)          # value -> value whose bytes it shares
    alias_offsets: dict[str, int] = field(default_factory=dict)    # value -> byte offset into that value
    scratch_requests: list[ScratchRequest] = field(default_factory=list)
    gemm_instances: dict[str, "object"] = field(default_factory=dict)   # key -> gemm.GemmInstance
    gemm_calls: list = field(default_factory=list)   # (GemmInstance, AccelcGemmArgs initializer without buffers)
    step: int = 0
    node: Node | None = None
    _kernel_names: set[str] = field(default_factory=set)

    # -- values --
    def shape(self, value: str) -> tuple[int, ...]:
        return static_shape(self.graph, value)

    def dtype(self, value: str) -> DType:
        return self.graph.types[value].dtype

    def numel(self, value: str) -> int:
        return numel(self.shape(value))

    def is_const(self, value: str) -> bool:
        return value in self.graph.constants

    def const(self, value: str) -> np.ndarray:
        return self.graph.constants[value]

    def ptr(self, value: str) -> str:
        """The C name of the typed device pointer to ``value`` (declared at the top of forward())."""
        if value in self.graph.constants and value not in self.const_offsets:
            self.const_offsets[value] = self.weights.add(raw_constant(self.graph.constants[value]))
        return c_identifier(value)

    def alias(self, out: str, src: str, offset: int = 0) -> bool:
        """Makes ``out`` share ``src``'s bytes, starting ``offset`` elements into them (a contiguous slab).
        False for graph outputs (they own their buffer), for offsets that would break the 64-byte
        alignment every buffer has (vectorised loads and CUTLASS's 16-byte copies rely on it) and when the
        two are stored in different types."""
        nbytes = int(offset) * self.dtype(src).itemsize
        if out in self.graph.outputs or nbytes % ALIGN or self.dtype(out) != self.dtype(src):
            return False
        self.ptr(src)
        self.aliases[out] = src
        if nbytes:
            self.alias_offsets[out] = nbytes
        return True

    # -- compile-time data and scratch --
    def weight(self, array: np.ndarray, ctype: str) -> str:
        off = self.weights.add(raw_constant(array))
        return f"reinterpret_cast<const {ctype}*>(weights + {off})"

    def scratch(self, nbytes: int, ctype: str, label: str) -> str:
        symbol = f"kScratch{len(self.scratch_requests)}"
        self.scratch_requests.append(ScratchRequest(symbol, int(nbytes), self.step, label))
        return f"reinterpret_cast<{ctype}*>(arena + {symbol})"

    # -- kernels --
    def kernel_name(self, suffix: str = "") -> str:
        base = "k_" + c_identifier(self.node.name if self.node is not None else "node", prefix="")
        name = base + (f"_{suffix}" if suffix else "")
        k = 1
        unique = name
        while unique in self._kernel_names:
            k += 1
            unique = f"{name}_{k}"
        self._kernel_names.add(unique)
        return unique

    def launch(self, kernel: str, grid: str, block: str, args: list[str], shmem: str = "0") -> None:
        self.fwd.line(f"ACCELC_LAUNCH({kernel}, {grid}, {block}, {shmem}, stream)({', '.join(args)});")
        self.fwd.line(f"ACCELC_CHECK_LAUNCH({_c_str(self.node_label())});")

    def node_label(self) -> str:
        n = self.node
        return f"{n.op} '{n.name}'" if n is not None else "?"


def _c_str(text: str) -> str:
    from ..cpu_amx.emitter import c_string
    return c_string(text)
