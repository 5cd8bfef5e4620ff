"""Building the generated CUDA code for the host emulator, so its numbers can be checked without a GPU.

The model's ``accelc_model.cu`` is compiled unchanged by g++ against ``kernels/emulation/`` (stand-ins for
the CUDA headers: every thread of a block is a fiber, barriers and warp shuffles are scheduling points,
see ``accelc_cuda_emulation.h``). Each CUTLASS GEMM instantiation is replaced by a host GEMM that computes
what its arguments ask for and refuses what CUTLASS or the hardware would refuse (``accelc_emu_gemm.h``).
The library exports the same C ABI as the GPU library minus ``accelc_run_device``, so the ordinary
runtime loads it and the reference interpreter can be compared with it.

What this checks: every generated kernel (indexing, strides, views, the memory plan, reductions, the
fused attention's online softmax, bf16/fp16 rounding), GEMM call arguments (layouts, leading dimensions,
batch strides, epilogues) and launch configurations. What it cannot: timing, the CUTLASS kernels
themselves, and races a missing barrier would cause on a GPU. It is slow (one fiber per CUDA thread);
use small models.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from ...ir import DType
from ..cpu_amx.build import CXX, RUNTIME_SRC, _key, compiler_version, default_cache_dir, store
from .build import KERNELS_DIR, SHARED_HEADERS, run_tool
from .codegen import Generated
from .codegen_linalg import _CUTLASS_ACT, GemmInstance
from .lowering import storage

EMULATION_DIR = KERNELS_DIR / "emulation"
FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-w", "-fno-strict-aliasing")


def gemm_source(inst: GemmInstance) -> str:
    """The host stand-in of one CUTLASS instantiation: same symbol, same arguments."""
    tf32 = inst.element_ab == DType.float32 and inst.op_class == "TensorOp"
    ea, ec = storage(inst.element_ab), storage(inst.element_c)
    col_a, col_b = (str(layout == "ColumnMajor").lower() for layout in (inst.layout_a, inst.layout_b))
    act = f"accelc_emu::Act::{_CUTLASS_ACT[inst.act]}"
    if inst.family == "sm90":
        src = storage(inst.element_source) if inst.element_source else "void"
        call = f"gemm_sm90<{ea}, {col_a}, {col_b}, {src}, {ec}, {act}>"
    elif inst.family == "sm80bias":
        call = f"gemm_bias<{ea}, {col_a}, {col_b}, {ec}, {act}, {inst.align_a}, {inst.align_b}, {inst.align_c}>"
    else:
        call = (f"gemm<{ea}, {col_a}, {ea}, {col_b}, {ec}, {act}, "
                f"{inst.align_a}, {inst.align_b}, {inst.align_c}, {str(tf32).lower()}>")
    return (f'extern "C" cudaError_t {inst.function}(const AccelcGemmArgs* p, cudaStream_t) {{\n'
            f"  return accelc_emu::{call}(*p, \"{inst.key}\");\n}}\n"
            f'extern "C" size_t {inst.workspace_function}(const AccelcGemmArgs* p) {{\n'
            f"  return accelc_emu::gemm_workspace(*p);\n}}\n")


@functools.lru_cache(maxsize=None)
def _headers() -> bytes:
    files = [p for d in (KERNELS_DIR, EMULATION_DIR) for p in sorted(d.iterdir()) if p.is_file()]
    return b"".join(p.name.encode() + p.read_bytes() for p in files + list(SHARED_HEADERS))


def build_emulated(gen: Generated, cache_dir: str | None) -> bytes:
    """Compiles ``gen`` for the emulator (cached by content) and returns the library's bytes."""
    # one translation unit (the headers are parsed once): the model, the GEMM stand-ins, the ABI
    unit = "\n".join(['#include "accelc_model.cu"', '#include "accelc_emu_gemm.h"',
                      *(gemm_source(i) for i in gen.gemm_instances), '#include "accelc_cuda_emu_abi.cpp"', ""])
    sources = {"accelc_model.cu": gen.files["accelc_model.cu"], "accelc_emulated.cpp": unit}
    config = gen.files["accelc_model_config.h"]
    key = _key(compiler_version(), " ".join(FLAGS), _headers(), config,
               *(f"{n}\0{t}" for n, t in sorted(sources.items())))
    lib = (Path(cache_dir) if cache_dir else default_cache_dir()) / "cuda-emulation" / key[:2] / f"{key}.so"
    if lib.is_file():
        return lib.read_bytes()
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="accelc_cuda_emu_") as tmp:
        for name, text in {**sources, "accelc_model_config.h": config}.items():
            (Path(tmp) / name).write_text(text)
        out = Path(tmp) / "model.so"
        run_tool([CXX, *FLAGS, "-I", str(EMULATION_DIR), "-I", str(KERNELS_DIR), "-I", str(RUNTIME_SRC), "-I", tmp,
                  str(Path(tmp) / "accelc_emulated.cpp"), "-o", str(out)], "building the CUDA emulation failed")
        data = out.read_bytes()
    store(lib, data)
    return data
