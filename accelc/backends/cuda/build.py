"""Building a CUDA model library with nvcc, with a content-addressed object cache.

Each translation unit (the model's ``accelc_model.cu``, the ABI ``accelc_cuda_abi.cu`` and every
``gemm_<key>.cu`` CUTLASS instantiation) is compiled to an object file named by the sha256 of
everything that determines it: its text, the kernels/ headers, the CUTLASS version, nvcc's version and
the flags. A second model with the same GEMM flavours reuses the CUTLASS objects (the slow part); an
unchanged model is a cache hit end to end. The link (``-cudart static``, so the library needs only the
driver) is cached the same way by the hashes of its objects.

Toolchain discovery: nvcc from ``$CUDA_HOME/bin``, ``/usr/local/cuda/bin`` or PATH; CUTLASS headers from
the ``cutlass_dir`` backend option, ``$CUTLASS_DIR`` (a checkout or include dir), or the
``nvidia-cutlass`` wheel (``pip install nvidia-cutlass``; the ``cuda`` extra of accelc).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...errors import BuildError
from ..cpu_amx.build import RUNTIME_SRC, default_cache_dir, store
from .arch import Arch

KERNELS_DIR = Path(__file__).parent / "kernels"
SHARED_HEADERS = (RUNTIME_SRC / "accelc_weights_checksum.h",)   # the CPU ABI's, included by accelc_abi_common.h
BASE_FLAGS = ("-std=c++17", "-O3", "--threads", "1", "-Xcompiler", "-fPIC,-fvisibility=hidden",
              "--expt-relaxed-constexpr", "-DNDEBUG", "-w")


def find_nvcc() -> str:
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for c in candidates:
        if c.is_file():
            return str(c)
    found = shutil.which("nvcc")
    if found:
        return found
    raise BuildError("nvcc was not found (looked in $CUDA_HOME/bin, /usr/local/cuda/bin and PATH); install the "
                     "CUDA toolkit (12.x or 13.x) to compile for CUDA targets")


def find_cutlass(explicit: str | None = None) -> Path:
    for base in [explicit, os.environ.get("CUTLASS_DIR")]:
        if base:
            for p in (Path(base), Path(base) / "include", Path(base) / "source" / "include"):
                if (p / "cutlass" / "cutlass.h").is_file():
                    return p
            raise BuildError(f"no CUTLASS headers (cutlass/cutlass.h) under '{base}'")
    try:
        import cutlass_library
        p = Path(cutlass_library.__file__).parent / "source" / "include"
        if (p / "cutlass" / "cutlass.h").is_file():
            return p
    except ImportError:
        pass
    raise BuildError("CUTLASS headers were not found; install them with `pip install nvidia-cutlass` "
                     "(accelc's `cuda` extra) or point $CUTLASS_DIR at a CUTLASS checkout")


def _nvcc_version(nvcc: str) -> str:
    try:
        return subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"cannot run {nvcc}: {e}") from None


def _headers_digest(cutlass: Path) -> str:
    h = hashlib.sha256()
    for p in [*sorted(KERNELS_DIR.iterdir()), *SHARED_HEADERS]:
        if p.suffix in (".cuh", ".h", ".cu"):
            h.update(p.name.encode() + p.read_bytes())
    version = cutlass / "cutlass" / "version.h"
    h.update(version.read_bytes() if version.is_file() else str(cutlass).encode())
    return h.hexdigest()


def run_tool(cmd: list[str], failure: str) -> None:
    """Runs a compiler or linker; a failure raises BuildError with ``failure`` and its first error lines."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{failure}:\n{_first_errors(proc.stderr)}")


def _first_errors(stderr: str, n: int = 12) -> str:
    lines = [ln for ln in stderr.splitlines() if "error" in ln.lower()]
    return "\n".join((lines or stderr.splitlines())[:n])


class CudaBuilder:
    """Compiles translation units into a cached shared library for one architecture."""

    def __init__(self, arch: Arch, cache_dir: str | None, cutlass_dir: str | None = None, jobs: int | None = None,
                 log=None):
        self.arch = arch
        self.nvcc = find_nvcc()
        self.cutlass = find_cutlass(cutlass_dir)
        self.cache = (Path(cache_dir) if cache_dir else default_cache_dir()) / "cuda"
        # one nvcc per core (a CUTLASS translation unit peaks near 1 GB): BERT-base's 4 units build in 31 s
        # instead of 45 s one after another on 2 cores
        self.jobs = jobs or max(1, min(8, os.cpu_count() or 1))
        self.log = log or (lambda msg: None)
        self.salt = hashlib.sha256((_nvcc_version(self.nvcc) + _headers_digest(self.cutlass)).encode()).hexdigest()
        self.stats = {"compiled": 0, "cached": 0, "seconds": 0.0}

    def _flags(self, with_cutlass: bool) -> list[str]:
        flags = list(BASE_FLAGS) + list(self.arch.gencode) + ["-I", str(KERNELS_DIR), "-I", str(RUNTIME_SRC)]
        if with_cutlass:
            flags += ["-I", str(self.cutlass)]
        return flags

    def _object(self, name: str, source: str, extra_headers: dict[str, str], with_cutlass: bool) -> Path:
        flags = self._flags(with_cutlass)
        key = hashlib.sha256("\0".join([self.salt, name, source, *sorted(f"{k}\0{v}" for k, v in
                                        extra_headers.items()), *flags]).encode()).hexdigest()
        obj = self.cache / "obj" / key[:2] / f"{key}.o"
        if obj.is_file():
            self.stats["cached"] += 1
            return obj
        obj.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="accelc_cuda_") as tmp:
            src = Path(tmp) / name
            src.write_text(source)
            for hname, text in extra_headers.items():
                (Path(tmp) / hname).write_text(text)
            out = Path(tmp) / (name + ".o")
            cmd = [self.nvcc, *flags, "-I", tmp, "-c", str(src), "-o", str(out)]
            self.log(f"nvcc {name}")
            run_tool(cmd, f"nvcc failed on {name} ({self.arch.sm})")
            store(obj, out.read_bytes())
        self.stats["compiled"] += 1
        self.stats["seconds"] += time.perf_counter() - t0
        return obj

    def build(self, model_sources: dict[str, str], gemm_sources: dict[str, str]) -> bytes:
        """Compiles everything and links ``model.so``; returns the library bytes."""
        config = {"accelc_model_config.h": model_sources["accelc_model_config.h"]}
        abi_src = (KERNELS_DIR / "accelc_cuda_abi.cu").read_text()
        jobs = [("accelc_model.cu", model_sources["accelc_model.cu"], {}, False),
                ("accelc_cuda_abi.cu", abi_src, config, False)]
        jobs += [(name, text, {}, True) for name, text in sorted(gemm_sources.items())]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            objects = list(pool.map(lambda j: self._object(*j), jobs))
        key = hashlib.sha256("\0".join([self.salt, *self.arch.gencode] + [o.name for o in objects]).encode()).hexdigest()
        lib = self.cache / "lib" / key[:2] / f"{key}.so"
        if lib.is_file():
            return lib.read_bytes()
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="accelc_cuda_link_") as tmp:
            out = Path(tmp) / "model.so"
            cmd = [self.nvcc, "-shared", "-cudart", "static", *self.arch.gencode, "-Xcompiler", "-fPIC",
                   "-o", str(out), *map(str, objects)]
            run_tool(cmd, "linking the model library failed")
            data = out.read_bytes()
        store(lib, data)
        return data
