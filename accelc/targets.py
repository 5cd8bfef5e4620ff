"""Targets are data: a name, the backend that serves it and the facts codegen and cost models need.

Facts are public figures from vendor documentation (SM counts, bandwidths, ISA extensions, FPGA
resources). ``host`` is resolved at compile time from the running CPU's flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import TargetError


@dataclass(frozen=True)
class Target:
    name: str
    backend: str                       # "cpu_amx" | "cuda" | "fpga_hls"
    description: str
    # CPU facts
    isa: frozenset[str] = frozenset()  # cpuid feature names the generated code may use, e.g. "amx_bf16"
    march: str = ""                    # g++ -march for the primary code variant
    cores: int = 0
    # CUDA facts
    sm: str = ""                       # e.g. "sm_80", "sm_90a"
    sm_count: int = 0
    mem_bandwidth_gbs: float = 0.0
    tensor_core_dtypes: tuple[str, ...] = ()
    sparse_tensor_cores: bool = False
    # FPGA facts
    part: str = ""
    clock_mhz: float = 0.0
    resources: dict = field(default_factory=dict, compare=False, hash=False)


_AMX_SPR = frozenset({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16",
                      "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"})

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("spr", "cpu_amx", "Intel Xeon 4th gen (Sapphire Rapids): AMX bf16/int8, AVX-512 BF16/FP16/VNNI",
           isa=_AMX_SPR | {"avx512_fp16"}, march="sapphirerapids"),
    Target("emr", "cpu_amx", "Intel Xeon 5th gen (Emerald Rapids): AMX bf16/int8, AVX-512 BF16/FP16/VNNI",
           isa=_AMX_SPR | {"avx512_fp16"}, march="emeraldrapids"),
    Target("gnr", "cpu_amx", "Intel Xeon 6 P-core (Granite Rapids): AMX bf16/int8/fp16, AVX-512",
           isa=_AMX_SPR | {"avx512_fp16", "amx_fp16"}, march="graniterapids"),
    Target("host", "cpu_amx", "the CPU compiling the model (features detected at compile time)"),
    Target("a100", "cuda", "NVIDIA A100", sm="sm_80", sm_count=108, mem_bandwidth_gbs=2039,
           tensor_core_dtypes=("tf32", "bf16", "fp16", "int8"), sparse_tensor_cores=True),
    Target("a10g", "cuda", "NVIDIA A10G", sm="sm_86", sm_count=80, mem_bandwidth_gbs=600,
           tensor_core_dtypes=("tf32", "bf16", "fp16", "int8"), sparse_tensor_cores=True),
    Target("l4", "cuda", "NVIDIA L4", sm="sm_89", sm_count=58, mem_bandwidth_gbs=300,
           tensor_core_dtypes=("tf32", "bf16", "fp16", "int8", "fp8"), sparse_tensor_cores=True),
    Target("l40s", "cuda", "NVIDIA L40S", sm="sm_89", sm_count=142, mem_bandwidth_gbs=864,
           tensor_core_dtypes=("tf32", "bf16", "fp16", "int8", "fp8"), sparse_tensor_cores=True),
    Target("rtx4090", "cuda", "NVIDIA GeForce RTX 4090", sm="sm_89", sm_count=128, mem_bandwidth_gbs=1008,
           tensor_core_dtypes=("tf32", "bf16", "fp16", "int8", "fp8"), sparse_tensor_cores=True),
    Target("h100", "cuda", "NVIDIA H100 SXM", sm="sm_90a", sm_count=132, mem_bandwidth_gbs=3350,
           tensor_core_dtypes=("tf32", "bf16", "fp16", "int8", "fp8"), sparse_tensor_cores=True),
    Target("h200", "cuda", "NVIDIA H200 SXM", sm="sm_90a", sm_count=132, mem_bandwidth_gbs=4800,
           tensor_core_dtypes=("tf32", "bf16", "fp16", "int8", "fp8"), sparse_tensor_cores=True),
    Target("u280", "fpga_hls", "AMD Alveo U280", part="xcu280-fsvh2892-2L-e", clock_mhz=300,
           resources={"dsp": 9024, "bram_18k": 4032, "uram": 960, "lut": 1303680, "ff": 2607360}),
    Target("u55c", "fpga_hls", "AMD Alveo U55C", part="xcu55c-fsvh2892-2L-e", clock_mhz=300,
           resources={"dsp": 9024, "bram_18k": 4032, "uram": 960, "lut": 1303680, "ff": 2607360}),
    Target("u250", "fpga_hls", "AMD Alveo U250", part="xcu250-figd2104-2L-e", clock_mhz=300,
           resources={"dsp": 12288, "bram_18k": 5376, "uram": 1280, "lut": 1728000, "ff": 3456000}),
    Target("zcu104", "fpga_hls", "AMD Zynq UltraScale+ ZCU104", part="xczu7ev-ffvc1156-2-e", clock_mhz=200,
           resources={"dsp": 1728, "bram_18k": 624, "uram": 96, "lut": 230400, "ff": 460800}),
    Target("vck190", "fpga_hls", "AMD Versal VCK190", part="xcvc1902-vsva2197-2MP-e-S", clock_mhz=300,
           resources={"dsp": 1968, "bram_18k": 1934, "uram": 463, "lut": 899840, "ff": 1799680}),
]}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name.lower()]
    except KeyError:
        raise TargetError(f"unknown target '{name}'; known targets: {', '.join(TARGETS)} "
                          f"(run `accelc targets` for details)") from None
