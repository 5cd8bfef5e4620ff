"""CUDA backend tests.

Without a GPU (here and in CI): the generated code of a small MLP, CNN and transformer encoder layer
compiles for every distinct CUDA architecture (sm_80, sm_86, sm_89, sm_90a), and ``unsupported()``
reports what it cannot lower. With a GPU (``-m gpu``; skipped without ``nvidia-smi`` and a visible
device): numerics against the reference interpreter for each op family, odd shapes, batch 1 and > 1,
bf16 accuracy, CUDA graph replay, and error messages.
"""
from __future__ import annotations

import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

from accelc.backends.base import BackendOptions
from accelc.ir import DType, Graph, TensorType, evaluate
from accelc.ir.ops.fused import Activation, FusedGemmAttrs, FusedConvAttrs
from accelc.targets import get_target

cuda = pytest.importorskip("accelc.backends.cuda")
from accelc.backends.cuda import CudaBackend  # noqa: E402
from accelc.backends.cuda.build import find_cutlass, find_nvcc  # noqa: E402


def _have_toolchain() -> str | None:
    try:
        find_nvcc()
        find_cutlass()
    except Exception as e:  # BuildError
        return str(e)
    return None


def _have_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except Exception:
        return False


needs_nvcc = pytest.mark.skipif(_have_toolchain() is not None, reason=f"CUDA toolchain: {_have_toolchain()}")
gpu = pytest.mark.skipif(not _have_gpu(), reason="no NVIDIA GPU visible (nvidia-smi)")

RNG = np.random.default_rng(0)
ARCH_TARGETS = ["a100", "a10g", "l4", "h100"]          # one per distinct SM: sm_80, sm_86, sm_89, sm_90a
F32 = DType.float32


def _w(*shape, scale=0.1):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ---- model builders (IR directly, as the passes leave it) -------------------------------------------------
def mlp(batch=4, d_in=37, hidden=64, d_out=10, compute=F32) -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", TensorType(F32, (batch, d_in)))
    w1, b1 = g.add_constant(_w(d_in, hidden)), g.add_constant(_w(hidden))
    w2, b2 = g.add_constant(_w(hidden, d_out)), g.add_constant(_w(d_out))
    (h,) = g.add_node("FusedGemm", [x, w1, b1], FusedGemmAttrs(activation=Activation("relu"), compute=compute))
    (y,) = g.add_node("FusedGemm", [h, w2, b2], FusedGemmAttrs(compute=compute))
    (p,) = g.add_node("Softmax", [y], _attrs("Softmax", axis=-1))
    g.outputs = [p]
    return g


def cnn(batch=2, c=3, hw=17, compute=F32) -> Graph:
    from accelc.ir.ops.conv import ConvAttrs, PoolAttrs
    g = Graph("cnn")
    x = g.add_input("x", TensorType(F32, (batch, c, hw, hw)))
    w1, b1 = g.add_constant(_w(8, c, 3, 3)), g.add_constant(_w(8))
    (h,) = g.add_node("FusedConv", [x, w1, b1], FusedConvAttrs(ConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1)),
                                                              Activation("relu"), compute))
    wd = g.add_constant(_w(8, 1, 3, 3))
    (d,) = g.add_node("FusedConv", [h, wd, "", h], FusedConvAttrs(ConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1),
                                                                            group=8), Activation("silu"), compute))
    (p,) = g.add_node("MaxPool", [d], PoolAttrs(kernel_shape=(2, 2), strides=(2, 2)))
    (gp,) = g.add_node("GlobalAveragePool", [p])
    (f,) = g.add_node("Flatten", [gp], _attrs("Flatten", axis=1))
    w2, b2 = g.add_constant(_w(8, 5)), g.add_constant(_w(5))
    (y,) = g.add_node("FusedGemm", [f, w2, b2], FusedGemmAttrs(compute=compute))
    g.outputs = [y]
    return g


def encoder(batch=2, seq=19, d=64, heads=4, ffn=128, compute=F32) -> Graph:
    """A BERT-style post-norm encoder layer as the passes leave it (FusedGemm, attention pattern)."""
    g = Graph("encoder")
    dh = d // heads
    x = g.add_input("x", TensorType(F32, (batch, seq, d)))
    mask = g.add_input("mask", TensorType(F32, (batch, 1, 1, seq)))

    def dense(inp, din, dout, act="none", residual=None):
        ins = [inp, g.add_constant(_w(din, dout)), g.add_constant(_w(dout))] + ([residual] if residual else [])
        return g.add_node("FusedGemm", ins, FusedGemmAttrs(activation=Activation(act), compute=compute))[0]

    def heads_of(v):
        (r,) = g.add_node("Reshape", [v, g.add_constant(np.array([batch, seq, heads, dh], np.int64))],
                          _attrs("Reshape"))
        return g.add_node("Transpose", [r], _attrs("Transpose", perm=(0, 2, 1, 3)))[0]

    q, k, v = (heads_of(dense(x, d, d)) for _ in range(3))
    (kt,) = g.add_node("Transpose", [k], _attrs("Transpose", perm=(0, 1, 3, 2)))
    (s,) = g.add_node("FusedGemm", [q, kt], FusedGemmAttrs(compute=compute))
    (s,) = g.add_node("Mul", [s, g.add_constant(np.array(1.0 / np.sqrt(dh), np.float32))])
    (s,) = g.add_node("Add", [s, mask])
    (p,) = g.add_node("Softmax", [s], _attrs("Softmax", axis=-1))
    (o,) = g.add_node("FusedGemm", [p, v], FusedGemmAttrs(compute=compute))
    (o,) = g.add_node("Transpose", [o], _attrs("Transpose", perm=(0, 2, 1, 3)))
    (o,) = g.add_node("Reshape", [o, g.add_constant(np.array([batch, seq, d], np.int64))], _attrs("Reshape"))
    a = dense(o, d, d, residual=x)
    ln1 = g.add_node("LayerNormalization", [a, g.add_constant(1 + _w(d)), g.add_constant(_w(d))],
                     _attrs("LayerNormalization", axis=-1, epsilon=1e-12))[0]
    h = dense(ln1, d, ffn, act="gelu")
    f = dense(h, ffn, d, residual=ln1)
    y = g.add_node("LayerNormalization", [f, g.add_constant(1 + _w(d)), g.add_constant(_w(d))],
                   _attrs("LayerNormalization", axis=-1, epsilon=1e-12))[0]
    g.outputs = [y]
    return g


def _attrs(op, **kw):
    from accelc.ir import get_op
    return get_op(op).attrs(**kw)


def _lower(graph, target, tmp_cache, debug=False):
    return CudaBackend().lower(graph, get_target(target), BackendOptions(cache_dir=str(tmp_cache), debug=debug))


@pytest.fixture(scope="session")
def cuda_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_cache")


# ---- no GPU needed ----------------------------------------------------------------------------------------
def test_unsupported_reports_reasons():
    g = Graph("u")
    x = g.add_input("x", TensorType(F32, (2, 3, 4, 4, 4)))
    from accelc.ir.ops.conv import PoolAttrs
    (y,) = g.add_node("MaxPool", [x], PoolAttrs(kernel_shape=(2, 2, 2)))
    s = g.add_input("s", TensorType(F32, ("batch", 3)))
    (r,) = g.add_node("Relu", [s])
    g.outputs = [y, r]
    missing = CudaBackend().unsupported(g, get_target("a100"))
    reasons = {n.op: why for n, why in missing}
    assert "MaxPool" in reasons and "spatial" in reasons["MaxPool"]
    assert "Relu" in reasons and "non-static" in reasons["Relu"]
    assert CudaBackend().unsupported(mlp(), get_target("h100")) == []
    assert CudaBackend().unsupported(encoder(), get_target("h100")) == []


def test_attention_pattern_is_fused():
    from accelc.backends.cuda.attention_pattern import ATTENTION_OP, legalize
    g, n = legalize(encoder())
    assert n == 1 and sum(node.op == ATTENTION_OP for node in g.nodes) == 1
    assert not any(node.op == "Softmax" for node in g.nodes)


def test_generated_code_is_readable():
    from accelc.backends.cuda.arch import arch_for
    from accelc.backends.cuda.codegen import generate
    gen = generate(encoder(), arch_for(get_target("a100")), BackendOptions())
    src = gen.files["accelc_model.cu"]
    assert "__global__" in src and "k_attention_" in src and "LayerNormalization" in src
    assert gen.gemm_sources and all("accelc_cutlass::run_gemm" in s for s in gen.gemm_sources.values())


@needs_nvcc
@pytest.mark.slow
@pytest.mark.parametrize("target", ARCH_TARGETS)
def test_models_compile_for_every_arch(target, cuda_cache):
    parts = [_lower(build(compute=c), target, cuda_cache) for build, c in
             ((mlp, F32), (cnn, DType.bfloat16), (encoder, DType.bfloat16))]
    for p in parts:
        assert p.files["model.so"][:4] == b"\x7fELF"
        assert p.manifest["variants"] == [get_target(target).sm]


@needs_nvcc
def test_compile_cache_reuses_objects(cuda_cache):
    g = mlp()
    _lower(g, "a100", cuda_cache)
    again = _lower(mlp(), "a100", cuda_cache)      # new weights, same code: every object is cached
    assert again.manifest["build"]["compiled"] <= 2


# ---- GPU -----------------------------------------------------------------------------------------------------
def _run_artifact(graph, target, cache, feeds, debug=False, repeat=1):
    from accelc.runtime.artifact import Artifact
    from accelc.runtime.module import CompiledModule
    parts = _lower(graph, target, cache, debug)
    manifest = {"format_version": 1, "target": target, "signature": _signature(graph), "options": {},
                "backend": parts.manifest}
    art = Artifact(manifest, parts.files) if _artifact_ctor_simple() else _pack(manifest, parts.files)
    m = CompiledModule(art, cache_dir=str(cache))
    return [m.run(feeds) for _ in range(repeat)], m


def _artifact_ctor_simple() -> bool:
    return False


def _pack(manifest, files):
    from accelc.runtime.artifact import pack
    return pack(manifest, files)


def _signature(graph):
    def port(v):
        t = graph.types[v]
        return {"name": v, "dtype": t.dtype.short, "shape": [int(d) for d in t.shape]}
    return {"inputs": [port(v) for v in graph.inputs], "outputs": [port(v) for v in graph.outputs]}


def _feeds(graph):
    out = {}
    for v in graph.inputs:
        t = graph.types[v]
        if v == "mask":
            m = np.zeros(t.shape, np.float32)
            m[..., -3:] = -10000.0
            out[v] = m
        else:
            out[v] = RNG.standard_normal(t.shape).astype(t.dtype.np)
    return out


def _gpu_target() -> str:
    out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.strip().splitlines()[0]
    return {"8.0": "a100", "8.6": "a10g", "8.9": "l4", "9.0": "h100"}.get(out.strip(), "a100")


def _cosine(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


@gpu
@needs_nvcc
@pytest.mark.gpu
@pytest.mark.parametrize("build,kw", [(mlp, {"batch": 1}), (mlp, {"batch": 33}), (cnn, {"batch": 1}),
                                      (cnn, {"batch": 3, "hw": 23}), (encoder, {"batch": 1, "seq": 7}),
                                      (encoder, {"batch": 2, "seq": 33})])
def test_fp32_matches_reference(build, kw, cuda_cache):
    g = build(**kw)
    feeds = _feeds(g)
    want = evaluate(g, feeds)
    (got,), _ = _run_artifact(g, _gpu_target(), cuda_cache, feeds)
    for name in g.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-4)


@gpu
@needs_nvcc
@pytest.mark.gpu
@pytest.mark.parametrize("build", [cnn, encoder])
def test_bf16_cosine(build, cuda_cache):
    """bf16 GEMMs/convs against the fp32 model with the same weights (the numerics contract)."""
    import dataclasses
    g = build(compute=DType.bfloat16)
    reference = g.copy()    # same weights, products formed in fp32
    reference.nodes = [dataclasses.replace(n, attrs=dataclasses.replace(n.attrs, compute=F32))
                       if n.op in ("FusedGemm", "FusedConv") else n for n in g.nodes]
    feeds = _feeds(g)
    want = evaluate(reference, feeds)
    assert not all(np.array_equal(want[o], evaluate(g, feeds)[o]) for o in g.outputs), "bf16 changed nothing"
    (got,), _ = _run_artifact(g, _gpu_target(), cuda_cache, feeds)
    for name in g.outputs:
        assert _cosine(got[name], want[name]) > 0.999


@gpu
@needs_nvcc
@pytest.mark.gpu
def test_elementwise_and_movement_families(cuda_cache):
    g = Graph("families")
    x = g.add_input("x", TensorType(F32, (3, 5, 7)))
    y = g.add_input("y", TensorType(F32, (5, 1)))
    (a,) = g.add_node("Add", [x, y])
    (b,) = g.add_node("Gelu", [a])
    (c,) = g.add_node("Transpose", [b], _attrs("Transpose", perm=(2, 0, 1)))
    (d,) = g.add_node("Slice", [c, g.add_constant(np.array([1], np.int64)), g.add_constant(np.array([6], np.int64)),
                                g.add_constant(np.array([0], np.int64)), g.add_constant(np.array([2], np.int64))])
    (e,) = g.add_node("Concat", [d, d], _attrs("Concat", axis=1))
    (f,) = g.add_node("ReduceMean", [e], _attrs("ReduceMean", axes=(2,), keepdims=False))
    (h,) = g.add_node("Tile", [e, g.add_constant(np.array([1, 2, 1], np.int64))])
    (w,) = g.add_node("Where", [g.add_node("Greater", [h, g.add_constant(np.array(0.0, np.float32))])[0], h,
                                g.add_constant(np.array(-1.0, np.float32))])
    (am,) = g.add_node("ArgMax", [w], _attrs("ArgMax", axis=1, keepdims=False))
    g.outputs = [f, w, am]
    feeds = _feeds(g)
    want = evaluate(g, feeds)
    (got,), _ = _run_artifact(g, _gpu_target(), cuda_cache, feeds)
    for name in g.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


@gpu
@needs_nvcc
@pytest.mark.gpu
def test_cuda_graph_replay_is_stable(cuda_cache):
    g = encoder(batch=2, seq=16)
    feeds = _feeds(g)
    runs, _ = _run_artifact(g, _gpu_target(), cuda_cache, feeds, repeat=4)   # eager, capture, replay x2
    for r in runs[1:]:
        for name in g.outputs:
            np.testing.assert_array_equal(r[name], runs[0][name])


@gpu
@needs_nvcc
@pytest.mark.gpu
def test_wrong_arch_is_refused(cuda_cache):
    from accelc.errors import UnsupportedHardwareError
    other = "a100" if _gpu_target() == "h100" else "h100"
    if other == "a100":
        pytest.skip("an sm_80 build (with PTX) runs on this GPU; the refusal needs an sm_90a build on a non-Hopper GPU")
    with pytest.raises(UnsupportedHardwareError, match="compute capability|cannot load"):
        _run_artifact(mlp(), other, cuda_cache, _feeds(mlp()))


@gpu
@needs_nvcc
@pytest.mark.gpu
def test_out_of_memory_message(cuda_cache):
    from accelc.errors import AccelcError
    g = Graph("huge")
    x = g.add_input("x", TensorType(F32, (1 << 15, 1 << 15)))       # 4 GiB in, 3 x 4 GiB intermediates
    (a,) = g.add_node("Exp", [x])
    (b,) = g.add_node("Add", [a, x])
    (c,) = g.add_node("Mul", [b, a])
    g.outputs = [c]
    parts = _lower(g, _gpu_target(), cuda_cache)
    assert parts.manifest["arena_bytes"] >= 3 * (1 << 32)
    # allocation itself is exercised on the device: only fails when the GPU has less free memory
    free = int(subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True).stdout.split()[0]) << 20
    if free > parts.manifest["arena_bytes"]:
        pytest.skip("this GPU has enough memory for the OOM model")
    with pytest.raises(AccelcError, match="out of GPU memory"):
        _run_artifact(g, _gpu_target(), cuda_cache, {"x": np.zeros((1 << 15, 1 << 15), np.float32)})
