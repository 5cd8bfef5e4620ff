"""Building the model library with g++, with a content-addressed cache.

Three kinds of objects, each cached under ``<cache>/objs/<sha256>.o`` where the key hashes the compiler
version, the flags and the bytes of the source and of every header it may include:

* the kernel library (kernels/*.cpp of the GEMM/conv library and runtime_src/accelc_ops.cpp), once per ISA
  variant — compiled the first time any model needs it, then reused by every model;
* the generated model.cpp, once per variant (the only per-model work for a new model);
* the dispatcher runtime_src/accelc_abi.cpp with baseline flags and the model's config header.

The linked library is cached as ``<cache>/libs/<sha256>.so`` keyed by its objects, so compiling the same
model twice costs nothing. Every cache entry is written to a temporary file in the same directory and
published with os.replace (atomic), so concurrent builds (pytest-xdist, two compiles) never see a torn
file; at worst both compile the same entry.
"""
from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import BuildError
from .isa import BASELINE_FLAGS, VARIANTS

HERE = Path(__file__).resolve().parent
RUNTIME_SRC = HERE / "runtime_src"
KERNELS = HERE / "kernels"
CXX = "g++"
COMMON_FLAGS = ("-std=c++17", "-O3", "-fopenmp", "-fPIC", "-fwrapv", "-fno-math-errno", "-fno-trapping-math",
                "-fvisibility=hidden",
                "-fno-semantic-interposition")
ABI_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-fopenmp", "-fvisibility=hidden") + BASELINE_FLAGS
ERROR_LINES = 25


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "accelc"


@functools.lru_cache(maxsize=None)
def compiler_version() -> str:
    try:
        out = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"cannot run the C++ compiler '{CXX}' ({e}); install g++ >= 12") from e
    return out.splitlines()[0] if out else CXX


def store(path: Path, data: bytes) -> None:
    """Writes a cache entry atomically (a concurrent reader sees the old file or the whole new one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def kernel_library_sources() -> list[Path]:
    return sorted(KERNELS.glob("*.cpp")) + [RUNTIME_SRC / "accelc_ops.cpp"]


@functools.lru_cache(maxsize=None)
def _headers_digest() -> str:
    h = hashlib.sha256()
    for d in (KERNELS, RUNTIME_SRC):
        for p in sorted(d.glob("*.h")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _key(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class CompileJob:
    source: Path
    flags: tuple[str, ...]
    extra_digest: str = ""     # content of generated headers the source includes

    def key(self) -> str:
        return _key(compiler_version(), " ".join(self.flags), self.source.name, self.source.read_bytes(),
                    _headers_digest(), self.extra_digest)


class Builder:
    def __init__(self, cache_dir: str | os.PathLike | None = None, verbose: bool = False, debug: bool = False):
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self.verbose = verbose
        self.debug_flags = ("-g",) if debug else ()   # debug builds keep symbols (same -O3 code)
        for sub in ("objs", "libs", "src"):
            (self.cache / sub).mkdir(parents=True, exist_ok=True)

    def variant_flags(self, variant: str) -> tuple[str, ...]:
        """g++ flags of the kernel library and model.cpp for one ISA variant (isa.VARIANTS)."""
        v = VARIANTS[variant]
        return COMMON_FLAGS + self.debug_flags + v.flags + (f"-DACCELC_NS={v.namespace}",)

    # -- one object --
    def compile(self, job: CompileJob, include_dirs: list[Path]) -> Path:
        out = self.cache / "objs" / f"{job.key()}.o"
        if out.exists():
            return out
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".o.tmp")
        os.close(fd)
        cmd = [CXX, *job.flags, *[f"-I{d}" for d in include_dirs], "-c", str(job.source), "-o", tmp]
        if self.verbose:
            print("accelc:", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            errors = [ln for ln in proc.stderr.splitlines() if ln.strip()][:ERROR_LINES]
            raise BuildError(f"g++ failed compiling {job.source} (source kept there):\n" + "\n".join(errors))
        os.replace(tmp, out)
        return out

    def link(self, objects: list[Path]) -> Path:
        key = _key(compiler_version(), *[o.name for o in objects])
        out = self.cache / "libs" / f"{key}.so"
        if out.exists():
            return out
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
        os.close(fd)
        cmd = [CXX, "-shared", "-fopenmp", "-Wl,--no-undefined", "-Wl,-z,noexecstack", "-o", tmp,
               *map(str, objects), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            errors = [ln for ln in proc.stderr.splitlines() if ln.strip()][:ERROR_LINES]
            raise BuildError("linking the model library failed:\n" + "\n".join(errors))
        os.replace(tmp, out)
        return out

    # -- the whole library --
    def build_model(self, model_cpp: str, config_h: str, variants: list[str], tuning_h: str) -> tuple[Path, Path]:
        """Returns (path of the linked .so in the cache, directory holding the generated sources).
        ``tuning_h`` is the generated accelc_tuning.h that model.cpp includes (tuning.header)."""
        src_key = _key(model_cpp, config_h, tuning_h)
        src_dir = self.cache / "src" / src_key[:24]
        if not (src_dir / "model.cpp").exists():
            src_dir.mkdir(parents=True, exist_ok=True)
            for name, text in (("accelc_model_config.h", config_h), ("accelc_tuning.h", tuning_h),
                               ("model.cpp", model_cpp)):
                store(src_dir / name, text.encode())
        includes = [RUNTIME_SRC, KERNELS, src_dir]
        jobs: list[CompileJob] = []
        for v in variants:
            flags = self.variant_flags(v)
            jobs += [CompileJob(s, flags) for s in kernel_library_sources()]
            jobs.append(CompileJob(src_dir / "model.cpp", flags, extra_digest=tuning_h))
        jobs.append(CompileJob(RUNTIME_SRC / "accelc_abi.cpp", ABI_FLAGS + self.debug_flags, extra_digest=config_h))
        workers = max(1, min(len(jobs), os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            objects = list(pool.map(lambda j: self.compile(j, includes), jobs))
        return self.link(objects), src_dir
