"""What every backend provides: a support table and ``lower(graph, target, options) -> CompiledParts``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BackendError
from ..ir import Graph, Node
from ..targets import Target


@dataclass(frozen=True)
class BackendOptions:
    threads: int = 0               # 0: all cores of the running machine
    cache_dir: str | None = None   # None: ~/.cache/accelc (or $XDG_CACHE_HOME/accelc)
    debug: bool = False
    verbose: bool = False
    allow_tf32: bool = False       # CUDA: fp32 GEMMs may use TF32 tensor cores (10-bit mantissa products)
    cutlass_dir: str | None = None # CUDA: CUTLASS include root; None: the nvidia-cutlass package
    emulate: bool = False          # CUDA: build the library for the host emulator (numerics without a GPU; slow)
    fpga: Any = None               # FPGA: FpgaOptions or a dict of them (bits, io, reuse_factor, ...)
    winograd: bool = True          # CPU: 3x3 stride-1 fp32 convolutions may run as Winograd convolutions
    tune: bool = False             # CPU: measure each GEMM/conv call site's work split (cpu_amx/tuning.py)
    tune_budget_s: float = 60.0    # CPU: seconds the measurements may take (cached sites cost nothing)
    progress: Any = None           # callable(str) for progress lines, or None


@dataclass
class CompiledParts:
    """Artifact members a backend produced, and its section of the manifest.

    ``files`` maps member paths (e.g. ``model.so``, ``weights.bin``, ``include/accelc_model.h``,
    ``src/model.cpp``) to bytes. ``manifest`` is stored under ``manifest["backend"]`` and must hold
    ``"name"``, ``"library"`` (member path of the shared library) and ``"abi_version"``.
    """
    files: dict[str, bytes]
    manifest: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def unsupported(self, graph: Graph, target: Target) -> list[tuple[Node, str]]:
        """Every node this backend cannot lower, with the reason; empty when all is supported."""

    def lower(self, graph: Graph, target: Target, options: BackendOptions) -> CompiledParts:
        """Generates source, builds it and returns the artifact parts. Raises BackendError/BuildError."""


def get_backend(name: str) -> Backend:
    if name == "cpu_amx":
        from .cpu_amx import CpuAmxBackend
        return CpuAmxBackend()
    if name == "cuda":
        from .cuda import CudaBackend
        return CudaBackend()
    if name == "fpga_hls":
        from .fpga_hls import FpgaHlsBackend
        return FpgaHlsBackend()
    raise BackendError(f"the '{name}' backend is not available in this version of accelc; "
                       f"use a CPU target (spr, emr, gnr, host), a CUDA target (a100, h100, ...) or an FPGA "
                       f"target (u280, u55c, u250, zcu104, vck190)")
