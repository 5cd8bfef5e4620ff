"""CUDA architectures of the targets: nvcc -gencode flags and the runtime compatibility rule.

Each target is built for its own SM (SASS) plus PTX of the same virtual architecture, so the driver
can JIT the model for newer GPUs of a compatible family. ``sm_90a`` (Hopper's arch-specific features)
runs only on compute capability 9.0 exactly; the others run on any GPU of at least their capability
(SASS within the major version, PTX JIT beyond it).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import TargetError
from ...targets import Target


@dataclass(frozen=True)
class Arch:
    sm: str            # "sm_80", "sm_90a"
    cc: int            # 80, 90
    exact: bool        # runs only on exactly this compute capability
    sm_count: int = 0  # of the target GPU (kernels size their grids by it); 0: unknown

    @property
    def gencode(self) -> tuple[str, ...]:
        virt = "compute_" + self.sm[3:]
        return ("-gencode", f"arch={virt},code=[{self.sm},{virt}]")


def arch_for(target: Target) -> Arch:
    if target.backend != "cuda" or not target.sm:
        raise TargetError(f"target '{target.name}' is not a CUDA target")
    sm = target.sm
    digits = "".join(ch for ch in sm[3:] if ch.isdigit())
    return Arch(sm, int(digits), sm.endswith("a"), target.sm_count)
