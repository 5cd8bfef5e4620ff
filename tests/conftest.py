"""Shared test setup: hardware markers skip (never fail) where the machine lacks the hardware.

``amx`` / ``avx512`` tests need those CPU features (read from /proc/cpuinfo, the same flags the
backend's dispatcher checks); ``gpu`` tests need an NVIDIA GPU (``nvidia-smi`` present and working).
The skip reason says what is missing, so a CI log shows why a test did not run.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest

AMX_FLAGS = ("amx_tile", "amx_bf16", "amx_int8")
AVX512_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_configure(config):
    for line in ("amx: needs a CPU with AMX; skipped elsewhere",
                 "avx512: needs a CPU with AVX-512 BF16; skipped elsewhere",
                 "gpu: needs an NVIDIA GPU; skipped elsewhere",
                 "slow: takes more than a few seconds",
                 "conformance: ONNX backend node tests"):
        config.addinivalue_line("markers", line)


def _missing(flags: tuple[str, ...]) -> list[str]:
    have = cpu_flags()
    return [f for f in flags if f not in have]


def pytest_collection_modifyitems(config, items):
    amx_missing = _missing(AMX_FLAGS)
    avx512_missing = _missing(AVX512_FLAGS)
    gpu = None
    for item in items:
        if "amx" in item.keywords and amx_missing:
            item.add_marker(pytest.mark.skip(reason=f"CPU lacks AMX ({', '.join(amx_missing)} not in /proc/cpuinfo)"))
        if "avx512" in item.keywords and avx512_missing:
            item.add_marker(pytest.mark.skip(reason=f"CPU lacks AVX-512 ({', '.join(avx512_missing)} "
                                                    f"not in /proc/cpuinfo)"))
        if "gpu" in item.keywords:
            if gpu is None:
                gpu = has_gpu()
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="no NVIDIA GPU (nvidia-smi missing or failing)"))


@pytest.fixture(scope="session")
def build_cache() -> Path:
    """The user's default build cache (~/.cache/accelc): content-addressed and safe to share, so a rerun
    of the suite (and the xdist workers of one run) reuse libraries already built."""
    from accelc.runtime import default_cache_dir
    return default_cache_dir()
