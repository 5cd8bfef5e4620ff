"""The cpu_amx GEMM / convolution kernel library (accelc/backends/cpu_amx/kernels), per ISA variant.

Each variant is compiled with its own flags into a shared library together with a small C entry file
(kernels/tests/kernel_test_entry.cpp) and called through ctypes on NumPy arrays. Every variant is
compiled on every machine; it is *run* only where /proc/cpuinfo has its ISA (amx and avx512 tests
are marked and skip with the reason elsewhere). References are NumPy in float64, on the same bf16
rounding of the inputs for the bf16 kernels.

    python -m pytest tests/test_kernels_cpu.py -s     # -s prints the GEMM throughput of each variant
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from accelc.backends.cpu_amx import packing

KERNELS = Path(__file__).resolve().parents[1] / "accelc" / "backends" / "cpu_amx" / "kernels"
SOURCES = [KERNELS / "accelc_gemm.cpp", KERNELS / "accelc_conv.cpp", KERNELS / "accelc_winograd.cpp",
           KERNELS / "accelc_attention.cpp", KERNELS / "tests" / "kernel_test_entry.cpp"]
CXX = shutil.which("g++")

VARIANT_FLAGS = {
    "amx": ["-march=sapphirerapids"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma", "-mf16c"],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    # test-only: the avx2 variant with the NHWC convolution tiled in panel pairs as on AVX-512
    "avx2_pairs": ["-mavx2", "-mfma", "-mf16c", "-DACCELC_NHWC_PANEL_PAIRS"],
}
VARIANT_DEFINE = {"avx2_pairs": "AVX2"}
# /proc/cpuinfo flags a variant's code may use.
VARIANT_CPU_FLAGS = {
    "amx": ["amx_tile", "amx_bf16", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "fma", "f16c"],
    "avx512": ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "fma", "f16c"],
    "avx2": ["avx2", "fma", "f16c"],
    "avx2_pairs": ["avx2", "fma", "f16c"],
}
ACT = {"none": 0, "relu": 1, "leaky_relu": 2, "gelu": 3, "gelu_tanh": 4, "sigmoid": 5, "tanh": 6, "silu": 7, "clip": 8}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


CPU_FLAGS = cpu_flags()


def missing_isa(variant: str) -> list[str]:
    return [f for f in VARIANT_CPU_FLAGS[variant] if f not in CPU_FLAGS]


def variant_param(variant: str):
    marks = [pytest.mark.skipif(CXX is None, reason="g++ not found")]
    if variant in ("amx", "avx512"):
        marks.append(getattr(pytest.mark, variant))
    missing = missing_isa(variant)
    marks.append(pytest.mark.skipif(bool(missing), reason=f"this CPU lacks {', '.join(missing)} ({variant} variant)"))
    return pytest.param(variant, marks=marks, id=variant)


PRODUCT_VARIANTS = ("amx", "avx512", "avx2")     # the variants a built model may contain
RUNNABLE = [variant_param(v) for v in PRODUCT_VARIANTS]
NHWC_RUNNABLE = RUNNABLE + [variant_param("avx2_pairs")]


# ---- building ---------------------------------------------------------------------------------

def compile_objects(variant: str, sources: list[Path], outdir: Path) -> list[Path]:
    """Compiles `sources` for one variant (content-addressed: a rebuild of unchanged sources is free)."""
    headers = sorted(KERNELS.glob("*.h"))
    version = subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout
    flags = ["-std=c++17", "-O3", "-fopenmp", "-fPIC", "-Wall", "-Wextra", "-Werror", "-Wno-maybe-uninitialized",
             f"-DACCELC_NS=accelc_{variant}", f"-DACCELC_VARIANT_{VARIANT_DEFINE.get(variant, variant.upper())}",
             *VARIANT_FLAGS[variant]]

    def one(src: Path) -> Path:
        h = hashlib.sha256(version.encode() + " ".join(flags).encode())
        for p in [src, *headers]:
            h.update(p.read_bytes())
        obj = outdir / f"{src.stem}-{variant}-{h.hexdigest()[:16]}.o"
        if not obj.exists():
            tmp = obj.with_suffix(f".{os.getpid()}.tmp")
            r = subprocess.run([CXX, *flags, "-c", str(src), "-o", str(tmp)], capture_output=True, text=True)
            assert r.returncode == 0, f"{variant}: compiling {src.name} failed:\n{r.stderr[-6000:]}"
            tmp.rename(obj)
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, sources))


@pytest.fixture(scope="session")
def build_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"accelc-kernel-tests-{os.getuid()}"
    d.mkdir(exist_ok=True)
    return d


_LIBS: dict[str, "KernelLib"] = {}


@pytest.fixture(scope="session")
def kernel_lib(build_dir):
    def get(variant: str) -> KernelLib:
        if variant not in _LIBS:
            objs = compile_objects(variant, SOURCES, build_dir)
            so = build_dir / f"kernels-{variant}-{hashlib.sha256(b''.join(o.name.encode() for o in objs)).hexdigest()[:16]}.so"
            if not so.exists():
                # linked under a private name and renamed: another xdist worker may be linking it too
                tmp = so.with_name(f"{so.name}.{os.getpid()}.tmp")
                r = subprocess.run([CXX, "-shared", "-fopenmp", *map(str, objs), "-o", str(tmp)], capture_output=True, text=True)
                assert r.returncode == 0, r.stderr
                os.replace(tmp, so)
            _LIBS[variant] = KernelLib(ctypes.CDLL(str(so)), variant)
        return _LIBS[variant]
    return get


def ptr(a: np.ndarray | None):
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


class KernelLib:
    """ctypes view of one variant's test entry points (kernel_test_entry.cpp)."""

    def __init__(self, lib: ctypes.CDLL, variant: str):
        self.lib, self.variant = lib, variant
        lib.accelc_test_packed_b_elems.restype = ctypes.c_size_t
        lib.accelc_test_conv2d_scratch_elems.restype = ctypes.c_size_t
        lib.accelc_test_conv_nhwc_packed_elems.restype = ctypes.c_size_t
        lib.accelc_test_winograd_packed_elems.restype = ctypes.c_size_t
        if variant == "amx":
            reason = ctypes.c_char_p()
            if not lib.accelc_test_amx_init(ctypes.byref(reason)):
                pytest.skip(f"amx_init refused: {reason.value.decode()}")

    def threads(self, n: int) -> None:
        self.lib.accelc_test_set_threads(n)

    def pack_b(self, b: np.ndarray, trans: bool, bf16: bool, k: int | None = None, n: int | None = None) -> np.ndarray:
        """Packs the K x N operand stored in b (N x K when trans); b may have a wider row stride."""
        k = k if k is not None else (b.shape[1] if trans else b.shape[0])
        n = n if n is not None else (b.shape[0] if trans else b.shape[1])
        assert b.dtype == np.float32 and (b.strides[1] == 4 or b.size == 0)
        size = self.lib.accelc_test_packed_b_elems(k, n, int(bf16))
        out = np.full(size, 0xFFFF if bf16 else np.nan, dtype=np.uint16 if bf16 else np.float32)  # no stale zeros
        self.lib.accelc_test_pack_b(k, n, ptr(b), max(b.strides[0] // 4, 1), int(trans), int(bf16), ptr(out))
        return out

    def gemm(self, kind: str, a: np.ndarray, bp: np.ndarray, m: int, n: int, k: int, c: np.ndarray, ep: dict) -> None:
        code = {"f32": 0, "bf16": 1, "bf16_a16": 2}[kind]
        lda = a.strides[0] // a.itemsize
        ldc = c.strides[0] // 4
        f, i, bias, res = epilogue_args(ep)
        self.lib.accelc_test_gemm(code, m, n, k, ptr(a), lda, ptr(bp), ptr(c), ldc, ptr(f), ptr(i), ptr(bias), ptr(res))

    def conv2d_scratch(self, bf16: bool, shape: list[int]) -> np.ndarray:
        """The NCHW kernel's scratch (NaN-filled: the kernel must not read what it did not write)."""
        s = np.array(shape, dtype=np.int32)
        return np.full(self.lib.accelc_test_conv2d_scratch_elems(ptr(s), int(bf16)), 0xFFFF if bf16 else np.nan,
                       dtype=np.uint16 if bf16 else np.float32)

    def conv2d(self, bf16: bool, shape: list[int], x, w, y, ep: dict, scratch: np.ndarray | None = None) -> None:
        s = np.array(shape, dtype=np.int32)
        scratch = self.conv2d_scratch(bf16, shape) if scratch is None else scratch
        f, i, bias, res = epilogue_args(ep)
        self.lib.accelc_test_conv2d(int(bf16), ptr(s), ptr(x), ptr(w), ptr(y), ptr(f), ptr(i), ptr(bias), ptr(res),
                                    ptr(scratch))


    def pack_conv_nhwc(self, shape: list[int], w: np.ndarray) -> np.ndarray:
        """conv weights [K][C/groups][R][S] packed by pack_conv_nhwc_f32 (NaN-filled first: no stale zeros)."""
        s = np.array(shape, dtype=np.int32)
        out = np.full(self.lib.accelc_test_conv_nhwc_packed_elems(ptr(s)), np.nan, dtype=np.float32)
        w = np.ascontiguousarray(w, dtype=np.float32)
        self.lib.accelc_test_pack_conv_nhwc(ptr(s), ptr(w), ptr(out))
        return out

    def conv2d_nhwc(self, shape: list[int], x: np.ndarray, packed: np.ndarray, y: np.ndarray, ep: dict) -> None:
        s = np.array(shape, dtype=np.int32)
        f, i, bias, res = epilogue_args(ep)
        self.lib.accelc_test_conv2d_nhwc(ptr(s), ptr(x), ptr(packed), ptr(y), ptr(f), ptr(i), ptr(bias), ptr(res))

    def conv2d_winograd(self, shape: list[int], m: int, x: np.ndarray, packed: np.ndarray, y: np.ndarray,
                        ep: dict) -> None:
        s = np.array(shape, dtype=np.int32)
        assert self.lib.accelc_test_winograd_supported(ptr(s), m)
        assert packed.size == self.lib.accelc_test_winograd_packed_elems(shape[1], shape[4], m)
        f, i, bias, res = epilogue_args(ep)
        self.lib.accelc_test_conv2d_winograd(ptr(s), m, ptr(x), ptr(packed), ptr(y), ptr(f), ptr(i), ptr(bias),
                                             ptr(res))


def epilogue_args(ep: dict):
    f = np.array([ep.get("alpha", 1.0), ep.get("beta", 1.0), ep.get("act_alpha", 0.0), ep.get("act_beta", 0.0)],
                 dtype=np.float32)
    res = ep.get("residual")
    i = np.array([ep.get("bias_mode", 0), ACT[ep.get("act", "none")], 0 if res is None else res.strides[0] // 4],
                 dtype=np.int32)
    return f, i, ep.get("bias"), res


# ---- NumPy references ---------------------------------------------------------------------------

def bf16_values(x: np.ndarray) -> np.ndarray:
    return packing.bf16_to_float(packing.round_to_bf16(x))


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _sigmoid(y):
    e = np.exp(-np.abs(y))
    return np.where(y >= 0, 1 / (1 + e), e / (1 + e))


def activation_ref(y: np.ndarray, act: str, a: float, b: float) -> np.ndarray:
    if act == "none":
        return y
    if act == "relu":
        return np.maximum(y, 0)
    if act == "leaky_relu":
        return np.where(y < 0, a * y, y)
    if act == "gelu":
        return np.where(y > -40, 0.5 * y * _erfc(-y / math.sqrt(2)), -0.0)  # erfc keeps the tiny tail
    if act == "gelu_tanh":
        u = math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)
        return np.where(y > -40, y * _sigmoid(2 * u), -0.0)  # 0.5 * y * (1 + tanh(u)) without cancellation
    if act == "sigmoid":
        return _sigmoid(y)
    if act == "tanh":
        return np.tanh(y)
    if act == "silu":
        return np.where(y > -200, y * _sigmoid(y), -0.0)
    if act == "clip":
        return np.clip(y, a, b)
    raise ValueError(act)


def epilogue_ref(acc: np.ndarray, abs_acc: np.ndarray, ep: dict) -> tuple[np.ndarray, np.ndarray]:
    """(reference output, error scale): the scale bounds |output error| / relative accumulation error."""
    m, n = acc.shape
    y = ep.get("alpha", 1.0) * acc
    scale = abs(ep.get("alpha", 1.0)) * abs_acc
    mode, bias = ep.get("bias_mode", 0), ep.get("bias")
    if mode:
        bb = {1: lambda: bias[None, :n], 2: lambda: bias[:m, None], 3: lambda: bias[:m, :n]}[mode]()
        y = y + ep.get("beta", 1.0) * bb.astype(np.float64)
        scale = scale + np.abs(ep.get("beta", 1.0) * bb)
    if ep.get("residual") is not None:
        r = ep["residual"][:m, :n].astype(np.float64)
        y, scale = y + r, scale + np.abs(r)
    lipschitz = max(1.0, abs(ep.get("act_alpha", 0.0))) * 1.13  # max slope of every activation here
    return activation_ref(y, ep.get("act", "none"), ep.get("act_alpha", 0.0), ep.get("act_beta", 0.0)), scale * lipschitz


def assert_close(got: np.ndarray, ref: np.ndarray, scale: np.ndarray, k: int, what: str) -> None:
    # fp32 accumulation of exactly representable products: error grows ~ sqrt(K) ulps of the |A||B|
    # scale; the activations add a few ulps of relative error of their own.
    tol = (1e-6 + 3e-7 * math.sqrt(max(k, 1)) * 4) * scale + 2e-6 * np.abs(ref) + 1e-30
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~(err <= tol)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} elements off; first at {tuple(idx)}: "
                             f"got {got[tuple(idx)]!r}, expected {ref[tuple(idx)]!r} (tol {tol[tuple(idx)]:.3g})")


def gemm_ref(a32: np.ndarray, b32: np.ndarray, kind: str, ep: dict):
    if kind != "f32":
        a32, b32 = bf16_values(a32), bf16_values(b32)
    a, b = a32.astype(np.float64), b32.astype(np.float64)
    return epilogue_ref(a @ b, np.abs(a) @ np.abs(b), ep)


def run_gemm(lib: KernelLib, kind: str, a: np.ndarray, b: np.ndarray, ep: dict, trans_b: bool = False,
             c_pad: int = 0) -> np.ndarray:
    """C = epilogue(A @ B) with the library; B is given K x N (packed transposed when trans_b)."""
    m, k = a.shape
    n = b.shape[1]
    bp = lib.pack_b(np.ascontiguousarray(b.T) if trans_b else b, trans_b, kind != "f32")
    a_arg = packing.round_to_bf16(a).reshape(a.shape) if kind == "bf16_a16" else a
    c_full = np.full((m, n + c_pad), 12345.0, dtype=np.float32)
    c = c_full[:, :n]
    lib.gemm(kind, a_arg, bp, m, n, k, c, ep)
    assert (c_full[:, n:] == 12345.0).all(), "wrote past the N columns of C"
    return c


KINDS = ["f32", "bf16", "bf16_a16"]


# ---- packing ------------------------------------------------------------------------------------

def test_round_to_bf16_is_rne_and_nan_safe():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(10000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 10000),
                        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40, 1.00390625, 1.01171875],
                                 dtype=np.float32)]).astype(np.float32)
    got = packing.round_to_bf16(x)
    np.testing.assert_array_equal(got, x.astype(ml_dtypes.bfloat16).view(np.uint16))
    # ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7
    assert packing.round_to_bf16(np.float32(1.00390625)) == 0x3F80
    nan = np.array([np.nan, -np.nan, np.float32(np.uint32(0x7FFFFFFF).view(np.float32)),
                    np.uint32(0x7F800001).view(np.float32)], dtype=np.float32)
    nb = packing.round_to_bf16(nan)
    assert np.isnan(packing.bf16_to_float(nb)).all()
    assert nb[1] & 0x8000 and not nb[0] & 0x8000


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("bf16", [False, True], ids=["f32", "bf16"])
@pytest.mark.parametrize("trans", [False, True], ids=["B", "BT"])
@pytest.mark.parametrize("k,n", [(1, 1), (7, 5), (32, 16), (33, 33), (70, 100)])
def test_pack_b_matches_numpy_packing(kernel_lib, variant, bf16, trans, k, n):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(k * 1000 + n)
    rows, cols = (n, k) if trans else (k, n)
    wide = rng.standard_normal((rows, cols + 3)).astype(np.float32)  # row stride wider than the matrix
    b = wide[:, :cols]
    got = lib.pack_b(b, trans, bf16, k, n)
    want = (packing.pack_b_bf16 if bf16 else packing.pack_b_f32)(np.ascontiguousarray(b), trans)
    assert got.size == want.size == (packing.packed_b_elems_bf16(k, n) if bf16 else packing.packed_b_elems_f32(k, n))
    np.testing.assert_array_equal(got.view(np.uint32 if not bf16 else np.uint16),
                                  want.view(np.uint32 if not bf16 else np.uint16))


def test_numpy_packing_layout_formula():
    k, n = 37, 21
    b = np.arange(k * n, dtype=np.float32).reshape(k, n) + 1
    f32 = packing.pack_b_f32(b)
    bf = packing.bf16_to_float(packing.pack_b_bf16(b))
    kp = 64
    for kk in (0, 1, 36):
        for nn in (0, 15, 16, 20):
            assert f32[(nn // 16) * k * 16 + kk * 16 + nn % 16] == b[kk, nn]
            assert bf[(nn // 16) * (kp // 2) * 32 + (kk // 2) * 32 + (nn % 16) * 2 + kk % 2] == bf16_values(b[kk, nn])
    assert f32.reshape(2, k, 16)[1, :, 5:].max() == 0  # N padding
    pairs = bf.reshape(2, kp // 2, 16, 2)
    assert pairs[1, :, 5:].max() == 0 and pairs[:, 19:].max() == 0 and pairs[:, 18, :, 1].max() == 0  # N, K padding
    np.testing.assert_array_equal(packing.pack_b_f32(b.T.copy(), trans=True), f32)


# ---- GEMM ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("kind", KINDS)
def test_gemm_shapes(kernel_lib, variant, kind):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(1)
    for m in (1, 3, 16, 17, 64, 129):
        for n in (1, 5, 16, 33, 100):
            for k in (1, 7, 32, 33, 300):
                a = rng.standard_normal((m, k)).astype(np.float32)
                b = rng.standard_normal((k, n)).astype(np.float32)
                got = run_gemm(lib, kind, a, b, {}, c_pad=3)
                ref, scale = gemm_ref(a, b, kind, {})
                assert_close(got, ref, scale, k, f"{variant} {kind} M={m} N={n} K={k}")


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("kind", KINDS)
def test_gemm_deep_and_empty_k(kernel_lib, variant, kind):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(4)
    for m, n, k in ((33, 70, 1024), (5, 40, 2049)):
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        ref, scale = gemm_ref(a, b, kind, {})
        assert_close(run_gemm(lib, kind, a, b, {}), ref, scale, k, f"{variant} {kind} K={k}")
    # K = 0: the product is empty and only the epilogue remains
    bias = rng.standard_normal(7).astype(np.float32)
    got = run_gemm(lib, kind, np.zeros((5, 0), np.float32), np.zeros((0, 7), np.float32),
                   {"bias_mode": 1, "bias": bias, "beta": 2.0, "act": "relu"})
    np.testing.assert_array_equal(got, np.broadcast_to(np.maximum(2 * bias, 0), (5, 7)))


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("act", list(ACT))
def test_gemm_epilogues(kernel_lib, variant, kind, act):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(ACT[act])
    m, n, k = 37, 53, 71
    a = (rng.standard_normal((m, k)) * 0.3).astype(np.float32)
    b = (rng.standard_normal((k, n)) * 0.3).astype(np.float32)
    act_args = {"leaky_relu": {"act_alpha": 0.1}, "clip": {"act_alpha": -0.5, "act_beta": 0.75}}.get(act, {})
    residual = rng.standard_normal((m, n + 4)).astype(np.float32)[:, :n]  # ldr != N
    cases = [
        {},
        {"alpha": 0.5, "bias_mode": 1, "bias": rng.standard_normal(n).astype(np.float32), "beta": 2.0},
        {"bias_mode": 2, "bias": rng.standard_normal(m).astype(np.float32), "residual": residual},
        {"alpha": -1.5, "bias_mode": 3, "bias": rng.standard_normal((m, n)).astype(np.float32), "beta": 0.25,
         "residual": residual},
    ]
    for i, case in enumerate(cases):
        ep = {"act": act, **act_args, **case}
        got = run_gemm(lib, kind, a, b, ep)
        ref, scale = gemm_ref(a, b, kind, ep)
        assert_close(got, ref, scale, k, f"{variant} {kind} {act} case {i}")


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "sigmoid", "tanh", "silu"])
def test_activations_keep_relative_accuracy_over_the_whole_range(kernel_lib, variant, act):
    """K=1 GEMM with B = 1 feeds chosen values straight into the epilogue; no accumulation error."""
    lib = kernel_lib(variant)
    x = np.concatenate([-np.logspace(-8, 2, 300), [0.0], np.logspace(-8, 2, 300)]).astype(np.float32)
    got = run_gemm(lib, "f32", x[:, None], np.ones((1, 1), np.float32), {"act": act})[:, 0]
    ref = activation_ref(x.astype(np.float64), act, 0, 0)
    tiny = np.abs(ref) < 1e-30  # below fp32's normal range the kernels may flush
    err = np.abs(got - ref)
    # 3e-6 relative; 1e-5 in the far tails, where exp's argument (-x^2 for gelu) is itself ~50 and its
    # fp32 rounding alone shifts the result by a few 1e-6.
    rel_tol = np.where(np.abs(x) <= 4, 3e-6, 1e-5)[~tiny]
    assert (err[~tiny] <= rel_tol * np.abs(ref[~tiny]) + 1e-37).all(), \
        f"{act}: worst relative error {np.max(err[~tiny] / np.maximum(np.abs(ref[~tiny]), 1e-37)):.3g}"
    assert (err[tiny] <= 1.2e-38 * np.maximum(1, np.abs(x[tiny]))).all()  # exp flushes below FLT_MIN


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("act", [a for a in ACT if a != "none"])
def test_activations_propagate_nan_and_take_their_limits_at_infinity(kernel_lib, variant, act):
    lib = kernel_lib(variant)
    x = np.array([[np.nan], [-np.inf], [np.inf]], dtype=np.float32)
    ep = {"act": act, "act_alpha": 0.5 if act == "leaky_relu" else -1.0, "act_beta": 1.0}
    got = run_gemm(lib, "f32", x, np.ones((1, 1), np.float32), ep)[:, 0]
    limits = {"relu": (0, np.inf), "leaky_relu": (-np.inf, np.inf), "gelu": (0, np.inf), "gelu_tanh": (0, np.inf),
              "sigmoid": (0, 1), "tanh": (-1, 1), "silu": (0, np.inf), "clip": (-1, 1)}[act]
    assert np.isnan(got[0]), got
    np.testing.assert_array_equal(got[1:], np.array(limits, np.float32))


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("kind", KINDS)
def test_gemm_strided_operands_and_trans_b(kernel_lib, variant, kind):
    """Padding of A (lda > K) holds NaN: the kernels must never read it; B given transposed."""
    lib = kernel_lib(variant)
    rng = np.random.default_rng(7)
    m, n, k = 45, 37, 45
    a_full = np.full((m, k + 5), np.nan, dtype=np.float32)
    a_full[:, :k] = rng.standard_normal((m, k))
    a = a_full[:, :k]
    b = rng.standard_normal((k, n)).astype(np.float32)
    if kind == "bf16_a16":  # run_gemm would copy a; pass the strided bf16 view ourselves
        a16_full = packing.round_to_bf16(a_full).reshape(a_full.shape)
        bp = lib.pack_b(np.ascontiguousarray(b.T), True, True)
        c = np.zeros((m, n), np.float32)
        lib.gemm(kind, a16_full[:, :k], bp, m, n, k, c, {})
        got = c
    else:
        got = run_gemm(lib, kind, a, b, {}, trans_b=True, c_pad=2)
    ref, scale = gemm_ref(np.ascontiguousarray(a), b, kind, {})
    assert_close(got, ref, scale, k, f"{variant} {kind} strided")


@pytest.mark.parametrize("variant", RUNNABLE)
def test_gemm_nan_in_a_row_stays_in_its_row(kernel_lib, variant):
    """A NaN in row 5 of A poisons row 5 only (zero padding of K and M never multiplies it elsewhere)."""
    lib = kernel_lib(variant)
    rng = np.random.default_rng(3)
    for kind in KINDS:
        a = rng.standard_normal((33, 37)).astype(np.float32)
        a[5, 36] = np.nan
        got = run_gemm(lib, kind, a, rng.standard_normal((37, 40)).astype(np.float32), {})
        assert np.isnan(got[5]).all() and not np.isnan(np.delete(got, 5, axis=0)).any(), kind


@pytest.mark.parametrize("variant", RUNNABLE)
def test_bf16_rounds_a_on_the_fly_exactly_like_packing(kernel_lib, variant):
    """gemm_bf16(A) and gemm_bf16_a16(round_to_bf16(A)) must agree bit for bit."""
    lib = kernel_lib(variant)
    rng = np.random.default_rng(11)
    a = (rng.standard_normal((50, 77)) * 3).astype(np.float32)
    a[0, :8] = [1.00390625, 1.01171875, -1.00390625, 3.4e38, -0.0, 1e-40, np.inf, 2.0]  # ties, overflow, denormal
    b = rng.standard_normal((77, 29)).astype(np.float32)
    np.testing.assert_array_equal(run_gemm(lib, "bf16", a, b, {}), run_gemm(lib, "bf16_a16", a, b, {}))


def at_thread_counts(lib: KernelLib, run, counts=(1, 2, 3, 8)) -> list:
    """run()'s result at each thread count (the library's count is restored afterwards)."""
    results = []
    try:
        for threads in counts:
            lib.threads(threads)
            results.append(run())
    finally:
        lib.threads(os.cpu_count() or 1)
    return results


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("kind", KINDS)
def test_gemm_is_bitwise_independent_of_thread_count(kernel_lib, variant, kind):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((130, 300)).astype(np.float32)
    b = rng.standard_normal((300, 200)).astype(np.float32)
    ep = {"bias_mode": 1, "bias": rng.standard_normal(200).astype(np.float32), "act": "gelu"}
    results = at_thread_counts(lib, lambda: run_gemm(lib, kind, a, b, ep))
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [5, 32])
def test_narrow_gemm_split_by_rows_is_right_at_every_thread_count(kernel_lib, variant, kind, n):
    """Products with one or two column panels split their rows across the threads (tiling.h)."""
    lib = kernel_lib(variant)
    rng = np.random.default_rng(6)
    a = rng.standard_normal((1000, 32)).astype(np.float32)
    b = rng.standard_normal((32, n)).astype(np.float32)
    ep = {"bias_mode": 1, "bias": rng.standard_normal(n).astype(np.float32), "act": "relu"}
    results = at_thread_counts(lib, lambda: run_gemm(lib, kind, a, b, ep))
    ref, scale = gemm_ref(a, b, kind, ep)
    assert_close(results[0], ref, scale, 32, f"{variant} {kind} narrow N={n}")
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


@pytest.mark.parametrize("variant", RUNNABLE)
def test_gemm_residual_may_alias_c(kernel_lib, variant):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(9)
    a = rng.standard_normal((20, 30)).astype(np.float32)
    b = rng.standard_normal((30, 40)).astype(np.float32)
    c = rng.standard_normal((20, 40)).astype(np.float32)
    ref, scale = gemm_ref(a, b, "f32", {"residual": c.copy()})
    lib.gemm("f32", a, lib.pack_b(b, False, False), 20, 40, 30, c, {"residual": c})
    assert_close(c, ref, scale, 30, "in-place residual")


def simple_and_general_epilogues(rng, m: int, n: int, relu: bool, bias: bool, residual: np.ndarray):
    """An epilogue the kernels store through store_tile_simple (alpha = beta = 1, per-column bias or none,
    ReLU or nothing) and one with the same arithmetic that takes the general store: the bias as a full
    M x N matrix (mode 3), and LeakyRelu with slope 1 in place of no activation."""
    simple = {"residual": residual, "act": "relu" if relu else "none"}
    general = {"residual": residual, "act": "relu"} if relu else {"residual": residual, "act": "leaky_relu",
                                                                   "act_alpha": 1.0}
    if bias:
        row = rng.standard_normal(n).astype(np.float32)
        simple.update(bias_mode=1, bias=row)
        general.update(bias_mode=3, bias=np.ascontiguousarray(np.broadcast_to(row, (m, n))))
    return simple, general


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_simple_epilogue_is_bitwise_the_general_one(kernel_lib, variant, relu, bias):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(11)
    m, n, k = 37, 53, 29                                       # partial row blocks and a partial panel
    a = rng.standard_normal((m, k)).astype(np.float32)
    a[3, 5] = np.nan
    b = rng.standard_normal((k, n)).astype(np.float32)
    residual = rng.standard_normal((m, n + 3)).astype(np.float32)[:, :n]
    simple, general = simple_and_general_epilogues(rng, m, n, relu, bias, residual)
    got = run_gemm(lib, "f32", a, b, simple)
    np.testing.assert_array_equal(got.view(np.uint32), run_gemm(lib, "f32", a, b, general).view(np.uint32))
    assert np.isnan(got[3]).all() and not np.isnan(np.delete(got, 3, axis=0)).any()
    ref, scale = gemm_ref(a[4:], b, "f32", {**simple, "residual": residual[4:],
                                            **({"bias": simple["bias"]} if bias else {})})
    assert_close(got[4:], ref, scale, k, f"{variant} simple epilogue")


# ---- convolution ---------------------------------------------------------------------------------

def conv_ref(x, w, groups, stride, pads, dil, out_hw):
    """float64 NCHW convolution; pads = (top, left, bottom, right)."""
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    oh, ow = out_hw
    xp = np.zeros((n, c, h + pads[0] + pads[2] + r * dil[0], wd + pads[1] + pads[3] + s * dil[1]))
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    mg = k // groups
    y = np.zeros((n, k, oh, ow))
    for g in range(groups):
        for i in range(r):
            for j in range(s):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * dil[0]: i * dil[0] + stride[0] * oh: stride[0],
                           j * dil[1]: j * dil[1] + stride[1] * ow: stride[1]][:, :, :oh, :ow]
                y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,kc->nkhw", patch, w[g * mg:(g + 1) * mg, :, i, j])
    return y


CONVS = {
    # name: (N, C, H, W, K, R, S, stride, pads (t, l, b, r), dilation, groups)
    "3x3_s1_p1": (2, 8, 12, 13, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "7x7_s2_p3": (1, 3, 23, 20, 18, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    "1x1": (2, 33, 7, 9, 40, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "groups2": (1, 12, 9, 10, 20, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
    "depthwise": (2, 16, 11, 14, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16),
    "depthwise_s2_5x5": (1, 8, 17, 19, 8, 5, 5, (2, 2), (2, 1, 2, 3), (1, 1), 8),
    "dilation2": (1, 6, 15, 16, 10, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1),
    "asymmetric_pads": (1, 5, 10, 11, 7, 3, 2, (2, 1), (0, 1, 2, 0), (1, 1), 1),
    "conv1d": (2, 16, 1, 50, 24, 1, 5, (1, 2), (0, 2, 0, 1), (1, 1), 1),
    "wide_rows": (1, 4, 3, 300, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "stride3_dilation2": (1, 4, 19, 23, 6, 3, 3, (3, 3), (2, 3, 1, 4), (2, 2), 1),
}


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("bf16", [False, True], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", list(CONVS))
def test_conv2d(kernel_lib, variant, bf16, case):
    lib = kernel_lib(variant)
    n, c, h, wd, k, r, s, stride, pads, dil, groups = CONVS[case]
    oh = (h + pads[0] + pads[2] - dil[0] * (r - 1) - 1) // stride[0] + 1
    ow = (wd + pads[1] + pads[3] - dil[1] * (s - 1) - 1) // stride[1] + 1
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = (rng.standard_normal((k, c // groups, r, s)) * 0.2).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    residual = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    shape = [n, c, h, wd, k, r, s, oh, ow, stride[0], stride[1], pads[0], pads[1], dil[0], dil[1], groups]
    xr, wr = (bf16_values(x), bf16_values(w)) if bf16 else (x, w)
    acc = conv_ref(xr.astype(np.float64), wr.astype(np.float64), groups, stride, pads, dil, (oh, ow))
    abs_acc = conv_ref(np.abs(xr).astype(np.float64), np.abs(wr).astype(np.float64), groups, stride, pads, dil, (oh, ow))
    w_arg = packing.round_to_bf16(w).reshape(k, -1) if bf16 else w.reshape(k, -1)
    for ep in ({}, {"bias_mode": 2, "bias": bias, "residual": residual.reshape(n * k, oh * ow), "act": "relu"}):
        y = np.full((n, k, oh, ow), np.nan, dtype=np.float32)
        lib.conv2d(bf16, shape, x, w_arg, y, ep)
        # the epilogue sees the image as a K x (OH*OW) matrix per image
        per_image = {**ep}
        if ep.get("residual") is not None:
            per_image["residual"] = residual.reshape(n * k, oh * ow)
        ref = np.empty_like(acc)
        scale = np.empty_like(acc)
        for img in range(n):
            e = {**per_image}
            if ep.get("residual") is not None:
                e["residual"] = residual[img].reshape(k, oh * ow)
            rr, ss = epilogue_ref(acc[img].reshape(k, -1), abs_acc[img].reshape(k, -1), e)
            ref[img], scale[img] = rr.reshape(k, oh, ow), ss.reshape(k, oh, ow)
        assert_close(y, ref, scale, c // groups * r * s, f"{variant} conv {case} bf16={bf16} ep={sorted(ep)}")


@pytest.mark.parametrize("variant", RUNNABLE)
def test_conv2d_bf16_rounds_x_like_packing(kernel_lib, variant):
    """A 1x1 conv is a GEMM: conv2d_bf16 must equal gemm_bf16_a16 on the rounded input bit for bit."""
    lib = kernel_lib(variant)
    rng = np.random.default_rng(2)
    c, k, hw = 40, 24, 45
    x = rng.standard_normal((1, c, 5, 9)).astype(np.float32)
    w16 = packing.round_to_bf16(rng.standard_normal((k, c)).astype(np.float32)).reshape(k, c)
    y = np.zeros((1, k, 5, 9), np.float32)
    lib.conv2d(True, [1, c, 5, 9, k, 1, 1, 5, 9, 1, 1, 0, 0, 1, 1, 1], x, w16, y, {})
    bp = lib.pack_b(np.ascontiguousarray(x.reshape(c, hw)), False, True)
    c_ref = np.zeros((k, hw), np.float32)
    lib.gemm("bf16_a16", w16, bp, k, hw, c, c_ref, {})
    np.testing.assert_array_equal(y.reshape(k, hw), c_ref)


# ---- NHWC convolution ----------------------------------------------------------------------------

def conv_out_hw(h, wd, r, s, stride, pads, dil):
    return ((h + pads[0] + pads[2] - dil[0] * (r - 1) - 1) // stride[0] + 1,
            (wd + pads[1] + pads[3] - dil[1] * (s - 1) - 1) // stride[1] + 1)


def nhwc_shape(case) -> list[int]:
    n, c, h, wd, k, r, s, stride, pads, dil, groups = case
    oh, ow = conv_out_hw(h, wd, r, s, stride, pads, dil)
    return [n, c, h, wd, k, r, s, oh, ow, stride[0], stride[1], pads[0], pads[1], dil[0], dil[1], groups]


def pack_conv_nhwc_formula(w: np.ndarray, groups: int) -> np.ndarray:
    """The packed layout of accelc_gemm.h ("NHWC convolution"), element by element."""
    k, cg, r, s = w.shape
    mg = k // groups
    if cg == 1 and mg == 1:
        out = np.zeros(r * s * k, np.float32)
        for i in range(r):
            for j in range(s):
                for kk in range(k):
                    out[(i * s + j) * k + kk] = w[kk, 0, i, j]
        return out
    kg, panels = r * s * cg, -(-mg // 16)
    gsize = panels * 16 * kg  # packed_b_elems_f32(R*S*Cg, Mg)
    out = np.zeros(groups * gsize, np.float32)
    for g in range(groups):
        for m in range(mg):
            for c in range(cg):
                for i in range(r):
                    for j in range(s):
                        kk = (i * s + j) * cg + c  # Wg[(r*S + s)*Cg + c][m] at Bp[(m/16)*K*16 + k*16 + m%16]
                        out[g * gsize + (m // 16) * kg * 16 + kk * 16 + m % 16] = w[g * mg + m, c, i, j]
    return out


NHWC_CONVS = {
    # name: (N, C, H, W, K, R, S, stride, pads (t, l, b, r), dilation, groups)
    "1x1_gemm": (2, 33, 7, 9, 40, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),          # a plain GEMM over x
    "1x1_s2": (1, 24, 9, 11, 20, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "1x1_padded": (1, 16, 5, 6, 17, 1, 1, (1, 1), (1, 0, 0, 2), (1, 1), 1),
    "3x3_s1_p1": (2, 16, 12, 13, 35, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),     # M = 312: several row blocks
    "3x3_s2_p1": (1, 20, 13, 11, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "5x5_deep": (1, 40, 9, 8, 70, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), 1),
    "asymmetric_pads": (1, 17, 10, 11, 7, 3, 2, (2, 1), (0, 1, 2, 0), (1, 1), 1),
    "dilation2": (1, 18, 15, 16, 10, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1),
    "stride3_dilation2": (1, 16, 19, 23, 6, 3, 3, (3, 3), (2, 3, 1, 4), (2, 2), 1),
    "conv1d": (2, 16, 1, 50, 24, 1, 5, (1, 2), (0, 2, 0, 1), (1, 1), 1),
    "stem_7x7_s2_c3": (1, 3, 23, 20, 18, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),   # small Cg: gathered rows
    "stem_batch2": (2, 3, 30, 29, 64, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    "small_c8_3x3": (2, 8, 12, 13, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "small_dilated": (1, 5, 15, 16, 10, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1),
    "small_wide_kernel": (1, 2, 4, 30, 9, 3, 9, (1, 1), (1, 6, 1, 2), (1, 1), 1),   # taps beyond both edges
    "groups2": (1, 32, 9, 10, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),          # Mg = 20
    "groups3_1x1": (2, 48, 5, 7, 36, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 3),       # Mg = 12
    "groups4_small": (1, 12, 9, 10, 20, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4),    # Cg = 3, Mg = 5
    "groups2_mg40": (1, 40, 8, 9, 80, 3, 3, (2, 1), (1, 1, 1, 1), (1, 1), 2),      # Mg = 40: panel pairs + tail
    "depthwise_3x3_s1": (2, 20, 11, 14, 20, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 20),
    "depthwise_3x3_s2": (1, 37, 17, 19, 37, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 37),
    # interior blocks with horizontal stride and dilation, and an unpadded row that is all interior
    "depthwise_3x3_s2_dil_w": (1, 24, 15, 29, 24, 3, 3, (1, 2), (0, 2, 1, 3), (1, 2), 24),
    "depthwise_3x3_unpadded": (2, 17, 9, 30, 17, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 17),
    "depthwise_5x5_dil": (1, 13, 17, 19, 13, 5, 5, (2, 2), (2, 1, 2, 3), (2, 1), 13),
    "depthwise_wide": (1, 72, 6, 9, 72, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 72),
}


def nhwc_case_data(case, seed):
    n, c, h, wd, k, r, s, stride, pads, dil, groups = case
    oh, ow = conv_out_hw(h, wd, r, s, stride, pads, dil)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, wd, c)).astype(np.float32)
    w = (rng.standard_normal((k, c // groups, r, s)) * 0.2).astype(np.float32)
    return rng, x, w, (n, oh, ow, k)


def run_conv_nhwc(lib: KernelLib, case, x, w, ep) -> np.ndarray:
    shape = nhwc_shape(case)
    packed = lib.pack_conv_nhwc(shape, w)
    n, oh, ow, k = shape[0], shape[7], shape[8], shape[4]
    y_full = np.full(n * oh * ow * k + 19, np.nan, dtype=np.float32)
    y_full[-19:] = 12345.0
    y = y_full[:-19].reshape(n, oh, ow, k)
    lib.conv2d_nhwc(shape, x, packed, y, ep)
    assert (y_full[-19:] == 12345.0).all(), "wrote past the end of y"
    return y


@pytest.mark.parametrize("variant", NHWC_RUNNABLE)
@pytest.mark.parametrize("case", ["3x3_s1_p1", "groups2", "groups4_small", "depthwise_3x3_s2", "stem_7x7_s2_c3"])
def test_pack_conv_nhwc_layout(kernel_lib, variant, case):
    lib = kernel_lib(variant)
    _, _, w, _ = nhwc_case_data(NHWC_CONVS[case], 0)
    groups = NHWC_CONVS[case][-1]
    got = lib.pack_conv_nhwc(nhwc_shape(NHWC_CONVS[case]), w)
    want = pack_conv_nhwc_formula(w, groups)
    assert got.size == want.size
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # padding zeros included
    if hasattr(packing, "pack_conv_nhwc_f32"):  # the compile-time packer writes the same bytes
        np.testing.assert_array_equal(packing.pack_conv_nhwc_f32(w, groups).view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("variant", NHWC_RUNNABLE)
@pytest.mark.parametrize("case", list(NHWC_CONVS))
def test_conv2d_nhwc(kernel_lib, variant, case):
    lib = kernel_lib(variant)
    n, c, h, wd, k, r, s, stride, pads, dil, groups = NHWC_CONVS[case]
    rng, x, w, yshape = nhwc_case_data(NHWC_CONVS[case], len(case))
    _, oh, ow, _ = yshape
    to_rows = lambda a: a.transpose(0, 2, 3, 1).reshape(n * oh * ow, k)  # NCHW reference -> [pixel][channel]
    x_nchw = x.transpose(0, 3, 1, 2).astype(np.float64)
    acc = to_rows(conv_ref(x_nchw, w.astype(np.float64), groups, stride, pads, dil, (oh, ow)))
    abs_acc = to_rows(conv_ref(np.abs(x_nchw), np.abs(w).astype(np.float64), groups, stride, pads, dil, (oh, ow)))
    bias = rng.standard_normal(k).astype(np.float32)
    residual = rng.standard_normal((n * oh * ow, k)).astype(np.float32)
    eps = [{},
           {"bias_mode": 1, "bias": bias, "residual": residual, "act": "relu"},
           {"alpha": 0.5, "beta": 2.0, "bias_mode": 1, "bias": bias, "act": "silu"},
           {"residual": residual, "act": "clip", "act_alpha": -0.5, "act_beta": 0.75}]
    for ep in eps:
        y = run_conv_nhwc(lib, NHWC_CONVS[case], x, w, ep)
        ref, scale = epilogue_ref(acc, abs_acc, ep)
        assert_close(y.reshape(n * oh * ow, k), ref, scale, c // groups * r * s,
                     f"{variant} nhwc conv {case} ep={sorted(ep)}")


@pytest.mark.parametrize("variant", NHWC_RUNNABLE)
@pytest.mark.parametrize("case", ["3x3_s1_p1", "groups2_mg40", "stem_7x7_s2_c3", "1x1_gemm", "1x1_s2",
                                  "depthwise_3x3_s1", "depthwise_3x3_unpadded", "depthwise_3x3_s2"])
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_nhwc_simple_epilogue_is_bitwise_the_general_one(kernel_lib, variant, case, relu):
    lib = kernel_lib(variant)
    conv = NHWC_CONVS[case]
    rng, x, w, (n, oh, ow, k) = nhwc_case_data(conv, 7)
    residual = rng.standard_normal((n * oh * ow, k)).astype(np.float32)
    simple, general = simple_and_general_epilogues(rng, n * oh * ow, k, relu, True, residual)
    got = run_conv_nhwc(lib, conv, x, w, simple)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got.view(np.uint32), run_conv_nhwc(lib, conv, x, w, general).view(np.uint32))


@pytest.mark.parametrize("variant", NHWC_RUNNABLE)
@pytest.mark.parametrize("case", ["big_3x3", "big_stem", "big_depthwise", "big_1x1", "big_groups"])
def test_conv2d_nhwc_is_bitwise_independent_of_thread_count(kernel_lib, variant, case):
    lib = kernel_lib(variant)
    conv = {"big_3x3": (1, 32, 20, 21, 72, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
            "big_stem": (1, 3, 41, 40, 40, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
            "big_depthwise": (2, 70, 20, 20, 70, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 70),
            "big_1x1": (2, 64, 14, 15, 100, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
            "big_groups": (1, 64, 16, 16, 96, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 2)}[case]
    rng, x, w, yshape = nhwc_case_data(conv, 3)
    ep = {"bias_mode": 1, "bias": rng.standard_normal(conv[4]).astype(np.float32), "act": "gelu",
          "residual": rng.standard_normal((yshape[0] * yshape[1] * yshape[2], yshape[3])).astype(np.float32)}
    results = at_thread_counts(lib, lambda: run_conv_nhwc(lib, conv, x, w, ep))
    assert not np.isnan(results[0]).any()
    for got in results[1:]:
        np.testing.assert_array_equal(results[0], got)


# ---- build properties ---------------------------------------------------------------------------

@pytest.mark.skipif(CXX is None, reason="g++ not found")
def test_every_variant_compiles_and_links_into_one_library(build_dir):
    """All three variants build here (even where they cannot run) and share one .so without clashes:
    every symbol the kernels define lives in its variant's namespace, so the linker can never merge
    an AVX-512 copy of a function into the AVX2 path."""
    kernel_sources = SOURCES[:-1]
    objs = [o for v in PRODUCT_VARIANTS for o in compile_objects(v, kernel_sources, build_dir)]
    so = build_dir / f"all-variants-{os.getpid()}.so"
    r = subprocess.run([CXX, "-shared", "-fopenmp", *map(str, objs), "-o", str(so)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        nm = subprocess.run(["nm", "--defined-only", "--extern-only", str(so)], capture_output=True, text=True)
        assert nm.returncode == 0, nm.stderr
        # The first source name of a mangled symbol is its outermost scope: _ZN10accelc_amx8gemm_f32..., a
        # std template instantiated by the kernels would show as _ZSt4sort... and be caught.
        foreign = []
        for line in nm.stdout.splitlines():
            sym = line.split()[-1]
            if sym in ("_init", "_fini", "__bss_start", "_edata", "_end"):
                continue
            first = re.match(r"_Z[^0-9]*(\d+)", sym)
            scope = sym[first.end():first.end() + int(first.group(1))] if first else sym
            if scope not in ("accelc_amx", "accelc_avx512", "accelc_avx2"):
                foreign.append(line)
        assert not foreign, "symbols outside the variant namespaces:\n" + "\n".join(foreign[:20])
        nm = subprocess.run(["nm", "-C", "--defined-only", str(so)], capture_output=True, text=True)
        for v in PRODUCT_VARIANTS:
            assert f"accelc_{v}::gemm_bf16(" in nm.stdout and f"accelc_{v}::conv2d_f32(" in nm.stdout
            assert f"accelc_{v}::conv2d_nhwc_f32(" in nm.stdout
    finally:
        so.unlink(missing_ok=True)


# ---- throughput (printed with -s, never asserted) -------------------------------------------------

@pytest.mark.parametrize("variant", RUNNABLE)
def test_print_gemm_throughput(kernel_lib, variant):
    """Best-of timings with one thread and with all of them (on a loaded machine the one-thread number
    is the stable one: an OpenMP team waits for its slowest, possibly descheduled, member)."""
    lib = kernel_lib(variant)
    rng = np.random.default_rng(0)
    lines = []
    try:
        for threads in (1, os.cpu_count() or 1):
            lib.threads(threads)
            for m, n, k in ((512, 512, 512), (128, 768, 3072)):
                a = rng.standard_normal((m, k)).astype(np.float32)
                b = rng.standard_normal((k, n)).astype(np.float32)
                c = np.empty((m, n), np.float32)
                for kind in ("f32", "bf16"):
                    bp = lib.pack_b(b, False, kind == "bf16")
                    lib.gemm(kind, a, bp, m, n, k, c, {})  # warm-up (threads, scratch)
                    reps, best = 0, float("inf")
                    t_end = time.perf_counter() + 0.5
                    while reps < 3 or time.perf_counter() < t_end:
                        t0 = time.perf_counter()
                        lib.gemm(kind, a, bp, m, n, k, c, {})
                        best = min(best, time.perf_counter() - t0)
                        reps += 1
                    lines.append(f"{variant:7s} {kind:5s} {m}x{n}x{k} {threads:3d} thread(s): "
                                 f"{2 * m * n * k / best / 1e9:7.1f} GFLOP/s (best of {reps})")
    finally:
        lib.threads(os.cpu_count() or 1)
    print("\n" + "\n".join(lines))


# ResNet-50's distinct convolutions at batch 1: (C, H, K, kernel, stride, how many in the network).
RESNET50_CONVS = [(3, 224, 64, 7, 2, 1), (64, 56, 64, 1, 1, 1), (64, 56, 64, 3, 1, 3), (64, 56, 256, 1, 1, 4),
                  (256, 56, 64, 1, 1, 2), (256, 56, 128, 1, 1, 1), (128, 56, 128, 3, 2, 1), (128, 28, 512, 1, 1, 4),
                  (256, 56, 512, 1, 2, 1), (512, 28, 128, 1, 1, 3), (128, 28, 128, 3, 1, 3), (512, 28, 256, 1, 1, 1),
                  (256, 28, 256, 3, 2, 1), (256, 14, 1024, 1, 1, 6), (512, 28, 1024, 1, 2, 1), (1024, 14, 256, 1, 1, 5),
                  (256, 14, 256, 3, 1, 5), (1024, 14, 512, 1, 1, 1), (512, 14, 512, 3, 2, 1), (512, 7, 2048, 1, 1, 3),
                  (1024, 14, 2048, 1, 2, 1), (2048, 7, 512, 1, 1, 2), (512, 7, 512, 3, 1, 2)]


@pytest.mark.parametrize("variant", RUNNABLE)
def test_print_resnet50_conv_throughput(kernel_lib, variant):
    """One thread, best of 3 per layer: the NCHW im2col kernel and the NHWC implicit GEMM on every
    distinct ResNet-50 convolution (bias + ReLU), and the whole network's convolutions weighted by count.
    Printed with -s, never asserted (the machine is shared)."""
    lib = kernel_lib(variant)
    rng = np.random.default_rng(0)
    lines, totals = [], {"nchw": [0.0, 0.0], "nhwc": [0.0, 0.0]}
    lib.threads(1)
    try:
        for c, h, k, r, stride, count in RESNET50_CONVS:
            pad = r // 2
            case = (1, c, h, h, k, r, r, (stride, stride), (pad, pad, pad, pad), (1, 1), 1)
            shape = nhwc_shape(case)
            oh = shape[7]
            w = (rng.standard_normal((k, c, r, r)) * 0.05).astype(np.float32)
            bias = rng.standard_normal(k).astype(np.float32)
            flops = 2.0 * k * c * r * r * oh * oh
            x_nhwc = rng.standard_normal((1, h, h, c)).astype(np.float32)
            x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
            packed = lib.pack_conv_nhwc(shape, w)
            y_nhwc = np.empty((1, oh, oh, k), np.float32)
            y_nchw = np.empty((1, k, oh, oh), np.float32)
            scratch = lib.conv2d_scratch(False, shape)
            runs = {"nchw": lambda: lib.conv2d(False, shape, x_nchw, w, y_nchw, {"bias_mode": 2, "bias": bias, "act": "relu"},
                                               scratch),
                    "nhwc": lambda: lib.conv2d_nhwc(shape, x_nhwc, packed, y_nhwc, {"bias_mode": 1, "bias": bias, "act": "relu"})}
            cells = []
            for name, run in runs.items():
                run()
                best = min(_timed(run) for _ in range(3))
                totals[name][0] += best * count
                totals[name][1] += flops * count
                cells.append(f"{name} {flops / best / 1e9:6.1f}")
            lines.append(f"{variant:7s} C{c:5d} H{h:4d} K{k:5d} {r}x{r} s{stride}: " + "  ".join(cells) + " GFLOP/s")
    finally:
        lib.threads(os.cpu_count() or 1)
    lines.append(f"{variant:7s} ResNet-50 convolutions, 1 thread: " + "  ".join(
        f"{name} {t * 1e3:.1f} ms ({f / t / 1e9:.1f} GFLOP/s)" for name, (t, f) in totals.items()))
    print("\n" + "\n".join(lines))


def _timed(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


# ---- Winograd NHWC convolution ------------------------------------------------------------------

WINOGRAD_CONVS = {
    # name: as NHWC_CONVS (3x3, stride 1, no dilation, one group)
    "same_pad": (1, 16, 12, 13, 35, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),        # K tail, partial edge tiles
    "batch3_tails": (3, 21, 9, 7, 19, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),       # C and K tails, tiles across images
    "valid": (1, 24, 11, 10, 16, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "asymmetric_pads": (2, 16, 9, 8, 24, 3, 3, (1, 1), (0, 2, 1, 0), (1, 1), 1),
    "wide_pads": (1, 8, 5, 6, 8, 3, 3, (1, 1), (2, 2, 2, 2), (1, 1), 1),            # output taller than input
    "smaller_than_a_tile": (2, 5, 2, 3, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "many_blocks": (2, 32, 30, 29, 40, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),      # several tile blocks per thread
}


def run_conv_winograd(lib: KernelLib, case, m: int, x, w, ep, y=None) -> np.ndarray:
    shape = nhwc_shape(case)
    n, oh, ow, k = shape[0], shape[7], shape[8], shape[4]
    packed = packing.pack_winograd_f32(w, m)
    y_full = np.full(n * oh * ow * k + 19, np.nan, dtype=np.float32)
    y_full[-19:] = 12345.0
    if y is None:
        y = y_full[:-19].reshape(n, oh, ow, k)
    lib.conv2d_winograd(shape, m, x, packed, y, ep)
    assert (y_full[-19:] == 12345.0).all(), "wrote past the end of y"
    return y


def test_winograd_filters_are_g_w_gt():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    for m, g in packing.WINOGRAD_G.items():
        u = packing.winograd_filters(w, m)
        assert u.shape == (m + 2, m + 2, 3, 5) and u.dtype == np.float32
        np.testing.assert_allclose(u[:, :, 1, 4], g @ w[4, 1].astype(np.float64) @ g.T, rtol=1e-6, atol=1e-7)
        packed = packing.pack_winograd_f32(w, m)
        per_pos = packing.packed_b_elems_f32(3, 5)
        assert packed.size == (m + 2) ** 2 * per_pos
        # position (i, j) = (1, 2) is the (i*(m+2) + j)-th packed [C][K] matrix
        pos = m + 2 + 2
        np.testing.assert_array_equal(packed[pos * per_pos:(pos + 1) * per_pos], packing.pack_b_f32(u[1, 2]))
    with pytest.raises(ValueError, match="tile size 3"):
        packing.winograd_filters(w, 3)
    with pytest.raises(ValueError, match="3x3 weights"):
        packing.winograd_filters(np.zeros((2, 2, 5, 5), np.float32), 2)


@pytest.mark.parametrize("variant", RUNNABLE)
def test_winograd_supported_only_for_3x3_stride1(kernel_lib, variant):
    lib = kernel_lib(variant)
    ok = nhwc_shape(WINOGRAD_CONVS["same_pad"])
    sup = lambda shape, m: lib.lib.accelc_test_winograd_supported(ptr(np.array(shape, dtype=np.int32)), m)
    assert sup(ok, 2) and sup(ok, 4) and not sup(ok, 3) and not sup(ok, 6)
    for name in ("3x3_s2_p1", "dilation2", "groups2", "5x5_deep", "depthwise_3x3_s1"):
        assert not sup(nhwc_shape(NHWC_CONVS[name]), 2), name


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", list(WINOGRAD_CONVS))
def test_conv2d_winograd(kernel_lib, variant, m, case):
    lib = kernel_lib(variant)
    n, c, h, wd, k, r, s, stride, pads, dil, groups = WINOGRAD_CONVS[case]
    rng, x, w, (_, oh, ow, _) = nhwc_case_data(WINOGRAD_CONVS[case], len(case) + m)
    to_rows = lambda a: a.transpose(0, 2, 3, 1).reshape(n * oh * ow, k)
    x_nchw = x.transpose(0, 3, 1, 2).astype(np.float64)
    acc = to_rows(conv_ref(x_nchw, w.astype(np.float64), 1, stride, pads, dil, (oh, ow)))
    abs_acc = to_rows(conv_ref(np.abs(x_nchw), np.abs(w).astype(np.float64), 1, stride, pads, dil, (oh, ow)))
    bias = rng.standard_normal(k).astype(np.float32)
    residual = rng.standard_normal((n * oh * ow, k)).astype(np.float32)
    eps = [{},
           {"bias_mode": 1, "bias": bias, "residual": residual, "act": "relu"},
           {"alpha": 0.5, "beta": 2.0, "bias_mode": 1, "bias": bias, "act": "silu"}]
    for ep in eps:
        y = run_conv_winograd(lib, WINOGRAD_CONVS[case], m, x, w, ep)
        ref, scale = epilogue_ref(acc, abs_acc, ep)
        assert_close(y.reshape(n * oh * ow, k), ref, scale, c * r * s, f"{variant} F({m}x{m}) {case} ep={sorted(ep)}")
        if not ep:  # the transforms' extra rounding stays small: F(2x2) ~1e-7, F(4x4) ~2e-6 of the scale
            rel = np.abs(y.reshape(n * oh * ow, k) - ref) / np.maximum(scale, 1e-30)
            assert rel.max() < {2: 5e-7, 4: 8e-6}[m], rel.max()


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("m", [2, 4])
def test_conv2d_winograd_in_place_over_its_residual(kernel_lib, variant, m):
    """y may be the residual's own buffer (LowerCtx.write_over): each element's residual is read first."""
    lib = kernel_lib(variant)
    conv = WINOGRAD_CONVS["many_blocks"]
    rng, x, w, (n, oh, ow, k) = nhwc_case_data(conv, 5)
    residual = rng.standard_normal((n, oh, ow, k)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    want = run_conv_winograd(lib, conv, m, x, w, {"bias_mode": 1, "bias": bias, "residual": residual.reshape(-1, k),
                                                  "act": "relu"})
    buf = residual.copy()
    run_conv_winograd(lib, conv, m, x, w, {"bias_mode": 1, "bias": bias, "residual": buf.reshape(-1, k), "act": "relu"},
                      y=buf)
    np.testing.assert_array_equal(buf, want)


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", ["many_blocks", "few_tiles"])
def test_conv2d_winograd_is_bitwise_independent_of_thread_count(kernel_lib, variant, m, case):
    """Few tiles on several threads take the shared-block path (run_shared), one thread the per-thread
    blocks: the results must not differ by a bit."""
    lib = kernel_lib(variant)
    conv = {"many_blocks": WINOGRAD_CONVS["many_blocks"],
            "few_tiles": (1, 64, 7, 7, 72, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1)}[case]
    rng, x, w, (n, oh, ow, k) = nhwc_case_data(conv, 11)
    ep = {"bias_mode": 1, "bias": rng.standard_normal(k).astype(np.float32), "act": "gelu",
          "residual": rng.standard_normal((n * oh * ow, k)).astype(np.float32)}
    results = at_thread_counts(lib, lambda: run_conv_winograd(lib, conv, m, x, w, ep))
    assert not np.isnan(results[0]).any()
    for got in results[1:]:
        np.testing.assert_array_equal(results[0], got)


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("m", [2, 4])
def test_conv2d_winograd_nan_stays_in_the_tiles_that_read_it(kernel_lib, variant, m):
    """A NaN input pixel makes NaN every output whose receptive field holds it (as the direct kernel does)
    and, through the transforms, the other outputs of the tiles whose input patch holds it; nothing else."""
    lib = kernel_lib(variant)
    conv = WINOGRAD_CONVS["many_blocks"]
    _, x, w, (n, oh, ow, k) = nhwc_case_data(conv, 13)
    pad = conv[8][0]
    ih, iw = 13, 9
    x[1, ih, iw, 3] = np.nan
    y = run_conv_winograd(lib, conv, m, x, w, {})
    nan_px = np.isnan(y).any(axis=3)
    assert not nan_px[0].any()
    for oy in range(oh):
        for ox in range(ow):
            in_field = 0 <= ih - (oy - pad) < 3 and 0 <= iw - (ox - pad) < 3
            ty, tx = oy // m * m - pad, ox // m * m - pad        # the tile's input patch origin
            in_patch = ty <= ih < ty + m + 2 and tx <= iw < tx + m + 2
            if in_field:
                assert np.isnan(y[1, oy, ox]).all(), (oy, ox)
            if not in_patch:
                assert not nan_px[1, oy, ox], (oy, ox)


# ---- work splits (Blocking): the compile-time tuner's knobs change the speed, never a bit ------------

BLOCKINGS = [(1, 0, 0), (5, 1, 0), (24, 3, 0), (0, 16, 0), (100000, 0, 0), (7, 100, 0)]


def with_blockings(lib: KernelLib, run, blockings) -> list:
    """run()'s result under each work split (planned again afterwards), at 3 threads (uneven shares)."""
    results = []
    try:
        lib.threads(3)
        for b in blockings:
            lib.lib.accelc_test_set_blocking(*b)
            results.append(run())
    finally:
        lib.lib.accelc_test_set_blocking(0, 0, 0)
        lib.threads(os.cpu_count() or 1)
    return results


def assert_splits_agree(lib: KernelLib, run, splits, what: str) -> None:
    """run() under the planned split and under each of ``splits``: no NaN left, the same bits every time."""
    results = with_blockings(lib, run, [(0, 0, 0)] + list(splits))
    assert not np.isnan(results[0]).any()
    for blk, got in zip(splits, results[1:]):
        np.testing.assert_array_equal(results[0], got, err_msg=f"{what} blocking {blk}")


@pytest.mark.parametrize("variant", RUNNABLE)
def test_gemm_work_split_keeps_every_bit(kernel_lib, variant):
    lib = kernel_lib(variant)
    rng = np.random.default_rng(21)
    a = rng.standard_normal((203, 300)).astype(np.float32)
    b = rng.standard_normal((300, 150)).astype(np.float32)
    ep = {"bias_mode": 1, "bias": rng.standard_normal(150).astype(np.float32), "act": "gelu",
          "residual": rng.standard_normal((203, 150)).astype(np.float32)}
    assert_splits_agree(lib, lambda: run_gemm(lib, "f32", a, b, ep), BLOCKINGS, "gemm_f32")


@pytest.mark.parametrize("variant", NHWC_RUNNABLE)
@pytest.mark.parametrize("case", ["3x3_s1_p1", "1x1_gemm", "stem_batch2", "groups2_mg40", "asymmetric_pads"])
def test_conv2d_nhwc_work_split_keeps_every_bit(kernel_lib, variant, case):
    lib = kernel_lib(variant)
    conv = NHWC_CONVS[case]
    rng, x, w, yshape = nhwc_case_data(conv, 8)
    ep = {"bias_mode": 1, "bias": rng.standard_normal(conv[4]).astype(np.float32), "act": "relu",
          "residual": rng.standard_normal((yshape[0] * yshape[1] * yshape[2], yshape[3])).astype(np.float32)}
    assert_splits_agree(lib, lambda: run_conv_nhwc(lib, conv, x, w, ep), BLOCKINGS, case)


@pytest.mark.parametrize("variant", RUNNABLE)
@pytest.mark.parametrize("m", [2, 4])
def test_conv2d_winograd_work_split_keeps_every_bit(kernel_lib, variant, m):
    """Shared block or per-thread blocks of any size: the same bits (the tuner chooses among them)."""
    lib = kernel_lib(variant)
    conv = WINOGRAD_CONVS["many_blocks"]
    rng, x, w, (n, oh, ow, k) = nhwc_case_data(conv, 12)
    ep = {"bias_mode": 1, "bias": rng.standard_normal(k).astype(np.float32), "act": "gelu",
          "residual": rng.standard_normal((n * oh * ow, k)).astype(np.float32)}
    splits = [(0, 0, 1), (0, 0, 2), (5, 0, 2), (1, 0, 0), (1000, 0, 2), (16, 0, 1)]
    assert_splits_agree(lib, lambda: run_conv_winograd(lib, conv, m, x, w, ep), splits, f"F({m}x{m})")
