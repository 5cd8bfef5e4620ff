"""ISA variants of the CPU backend: compiler flags, the CPU features each needs, and host detection.

A model library holds several variants of the same code, compiled with different instruction sets into
namespaces ``accelc_<variant>``; the baseline-compiled dispatcher (runtime_src/accelc_abi.cpp) runs the
best one the CPU supports. The flags below are the exact feature set each variant may use, and
``required`` lists the same features as /proc/cpuinfo names them — the dispatcher checks precisely these
(plus the OS state bits in XCR0), so a variant can never execute an instruction its check did not cover.
That is why the amx variant uses explicit -m flags rather than ``-march=sapphirerapids`` (which would
also let g++ use AVX512-FP16/VBMI... that the dispatcher does not check).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import TargetError
from ...targets import Target


@dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple[str, ...]
    required: tuple[str, ...]      # /proc/cpuinfo flag names

    @property
    def namespace(self) -> str:
        return f"accelc_{self.name}"


_V3 = ("avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512_bf16")

VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("amx", ("-march=x86-64-v4", "-mavx512bf16", "-mavx512vnni", "-mamx-tile", "-mamx-bf16",
                    "-mamx-int8", "-mtune=sapphirerapids", "-DACCELC_VARIANT_AMX"),
            _V4 + ("avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")),
    Variant("avx512", ("-march=x86-64-v4", "-mavx512bf16", "-mtune=icelake-server", "-DACCELC_VARIANT_AVX512"),
            _V4),
    Variant("avx2", ("-march=x86-64-v3", "-mtune=haswell", "-DACCELC_VARIANT_AVX2"), _V3),
]}
ORDER = ("amx", "avx512", "avx2")       # best first
BASELINE_FLAGS = ("-march=x86-64", "-mtune=generic")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of this machine's CPU as /proc/cpuinfo lists them (empty when unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def runnable_variants(flags: frozenset[str]) -> list[str]:
    return [name for name in ORDER if set(VARIANTS[name].required) <= flags]


def variants_for(target: Target, host_flags: frozenset[str] | None = None) -> list[str]:
    """The variants to build for ``target``, best first.

    Named Xeon targets get the AMX variant plus an AVX2 fallback (so that an artifact still runs, slower,
    on a machine without AMX); ``host`` gets the best variant this machine runs.
    """
    if target.backend != "cpu_amx":
        raise TargetError(f"target '{target.name}' is not a CPU target")
    if target.name == "host":
        flags = cpu_flags() if host_flags is None else host_flags
        runnable = runnable_variants(flags)
        if not runnable:
            raise TargetError("this machine lacks AVX2/FMA/F16C (x86-64-v3), the minimum the CPU backend "
                              "supports; compile for a named target (spr, emr, gnr) instead")
        return [runnable[0]]
    if "amx_bf16" in target.isa:
        return ["amx", "avx2"]
    if "avx512f" in target.isa:
        return ["avx512", "avx2"]
    return ["avx2"]
