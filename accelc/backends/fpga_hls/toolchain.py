"""Where the ``ap_fixed``/``ap_int``/``hls_stream`` headers come from, and building C-simulation code.

The headers are the vendor's own (Apache-2.0), carried by the ``hls4ml`` package under
``hls4ml/templates/vivado/ap_types``; accelc depends on it as the optional ``fpga`` extra instead of
copying them. ``ACCELC_AP_TYPES`` points at another copy (for example a Vitis install's
``include`` directory).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import BackendError, BuildError

HLS_SRC = Path(__file__).parent / "hls_src"      # our own HLS C++ layer library (accelc_hls_*.h)
# -fno-exceptions: nothing here throws, and without it g++ emits clean-up code for every element of
# every initialised ap_fixed array (weights, tables), which made a 5k-weight MLP take 50 s to build
# instead of 10 s.
CXXFLAGS = ("-std=c++14", "-O2", "-fPIC", "-fno-exceptions", "-Wno-free-nonheap-object", "-Wno-unused-variable",
            "-Wno-unused-label",
            "-Wno-unknown-pragmas")
# ap_private.h sign-extends by left-shifting negative int64 values (undefined before C++20; the header
# exempts clang only), so g++'s shift-base check fires inside the vendor header on every negative value:
# that one check is off, every other UBSan and ASan check stays on for our code.
SANITIZE = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-sanitize=shift-base")


def ap_types_dir() -> Path:
    env = os.environ.get("ACCELC_AP_TYPES")
    if env:
        p = Path(env)
        if not (p / "ap_fixed.h").is_file():
            raise BackendError(f"ACCELC_AP_TYPES='{env}' has no ap_fixed.h; point it at a directory holding "
                               f"the ap_fixed/ap_int headers or unset it")
        return p
    try:
        import hls4ml  # noqa: F401  (only its data files are used)
    except ImportError:
        raise BackendError("FPGA C-simulation needs the ap_fixed headers, which the hls4ml package carries; "
                           "install them with: pip install 'accelc[fpga]' (or set ACCELC_AP_TYPES)") from None
    p = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    if not (p / "ap_fixed.h").is_file():
        raise BackendError(f"the installed hls4ml has no ap_fixed.h under '{p}'; install hls4ml==1.3.0 "
                           f"or set ACCELC_AP_TYPES")
    return p


def cxx() -> str:
    exe = os.environ.get("CXX", "g++")
    if shutil.which(exe) is None:
        raise BuildError(f"the C++ compiler '{exe}' was not found; install g++ (or set CXX) to C-simulate "
                         f"FPGA designs")
    return exe


def include_flags(*extra: str | os.PathLike) -> list[str]:
    return [f"-I{d}" for d in (*extra, HLS_SRC, ap_types_dir())]


def build(sources: dict[str, str], output: str, *, shared: bool, sanitize: bool = False,
          include: tuple[str | os.PathLike, ...] = (), workdir: str | os.PathLike | None = None,
          defines: tuple[str, ...] = (), compile_only: tuple[str, ...] | None = None) -> bytes:
    """Compiles ``sources`` (relative path -> text) with g++ and returns the bytes of ``output``.

    ``workdir`` keeps the sources and the build (for ``--debug``); otherwise a temporary directory is
    used and removed. Compiler errors are raised as ``BuildError`` with the tail of g++'s output.
    """
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="accelc-hls-")
        workdir = tmp.name
    root = Path(workdir)
    try:
        for rel, text in sources.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        # compile_only: the translation units (others are #included by them); default every .cpp
        cpps = [str(root / rel) for rel in (compile_only or [r for r in sources if r.endswith(".cpp")])]
        flags = list(CXXFLAGS) + (list(SANITIZE) if sanitize else [])
        incs = [p if Path(p).is_absolute() else root / p for p in include]   # relative: inside workdir
        cmd = [cxx(), *flags, *include_flags(root, *incs), *(f"-D{d}" for d in defines), *cpps,
               "-o", str(root / output)]
        if shared:
            cmd.insert(1, "-shared")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
            raise BuildError(f"g++ failed to build the HLS C-simulation ({output}):\n{tail}")
        return (root / output).read_bytes()
    finally:
        if tmp is not None:
            tmp.cleanup()


def sources_digest(sources: dict[str, str], *salt: str) -> str:
    h = hashlib.sha256()
    for rel in sorted(sources):
        h.update(rel.encode() + b"\0" + sources[rel].encode() + b"\0")
    for s in salt:
        h.update(s.encode() + b"\0")
    return h.hexdigest()
