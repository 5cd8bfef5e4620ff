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


def resnet(batch=2, hw=20, compute=F32) -> Graph:
    """A ResNet stem and bottleneck as the passes leave them: a 3x3 stride-2 stem on the NCHW image (3
    channels: an unaligned im2col), MaxPool, a bottleneck with 1x1 / 3x3 / 1x1 convolutions and a strided
    1x1 downsample as the residual, a dilated 3x3 over 12 channels (not a multiple of 8) with an unfused
    Add + Relu on two convolutions, a depthwise 3x3 with a residual, global pooling and the classifier."""
    from accelc.ir.ops.conv import ConvAttrs, PoolAttrs
    g = Graph("resnet")
    x = g.add_input("x", TensorType(F32, (batch, 3, hw, hw)))

    def conv(inp, cin, cout, k, stride=1, pad=0, act="relu", residual=None, dilation=1, bias=True, group=1):
        ins = [inp, g.add_constant(_w(cout, cin // group, k, k)), g.add_constant(_w(cout)) if bias else ""]
        ins += [residual] if residual else []
        attrs = ConvAttrs(kernel_shape=(k, k), strides=(stride, stride), pads=(pad,) * 4, dilations=(dilation,) * 2,
                          group=group)
        return g.add_node("FusedConv", ins, FusedConvAttrs(attrs, Activation(act), compute))[0]

    s = conv(x, 3, 16, 3, stride=2, pad=1)
    (p,) = g.add_node("MaxPool", [s], PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)))
    down = conv(p, 16, 32, 1, stride=2, act="none")
    h = conv(p, 16, 8, 1)
    h = conv(h, 8, 8, 3, stride=2, pad=1)
    y = conv(h, 8, 32, 1, residual=down)
    a = conv(y, 32, 12, 1, bias=False, act="none")
    b = conv(a, 12, 12, 3, pad=2, dilation=2, act="none")
    c = conv(a, 12, 12, 1, act="none")
    (r,) = g.add_node("Add", [b, c])
    (r,) = g.add_node("Relu", [r])
    r = conv(r, 12, 12, 3, pad=1, act="silu", residual=r, group=12)
    (gp,) = g.add_node("GlobalAveragePool", [r])
    (f,) = g.add_node("Flatten", [gp], _attrs("Flatten", axis=1))
    (o,) = g.add_node("FusedGemm", [f, g.add_constant(_w(12, 5)), g.add_constant(_w(5))], FusedGemmAttrs(compute=compute))
    g.outputs = [o]
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


def families() -> Graph:
    """Elementwise, movement, reduction and selection ops in one graph."""
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
    return g


def _attrs(op, **kw):
    from accelc.ir import get_op
    return get_op(op).attrs(**kw)


def _lower(graph, target, tmp_cache, debug=False):
    return CudaBackend().lower(graph, get_target(target), BackendOptions(cache_dir=str(tmp_cache), debug=debug))


@pytest.fixture(scope="session")
def cuda_cache(build_cache):
    """The shared content-addressed build cache: CUTLASS objects compiled once serve every test and the
    benchmark (bench/bench_cuda.py uses the same cache), which keeps tools/run_gpu_checks.sh in its time."""
    build_cache.mkdir(parents=True, exist_ok=True)
    return build_cache


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


def _addresses(spec, shape4) -> np.ndarray:
    """The attention kernel's address of every element (b, h, row, col): spec[0] + b*spec[1] + h*spec[2] + ..."""
    b, h, r, c = np.meshgrid(*[np.arange(n) for n in shape4], indexing="ij")
    return spec[0] + b * spec[1] + h * spec[2] + r * spec[3] + c * spec[4]


def _read_through(spec, base: np.ndarray, shape4) -> np.ndarray:
    return base.reshape(-1)[_addresses(spec, shape4)]


def _attention_specs_agree_with_reference(graph, feeds):
    """Checks every fused attention node's stride specs against the interpreter: Q, K, V read through their
    specs equal the matched products' operands (times the factors folded into the scale), and the reference
    result written through the output spec is the value the node claims to write."""
    from accelc.backends.attention_match import find_attention
    from accelc.backends.cuda.attention_pattern import ATTENTION_OP, legalize
    env = evaluate(graph, feeds, keep_all=True)
    matches = {f"attention_{m.pv.name}": m for m in find_attention(graph)}
    fused, n = legalize(graph)
    nodes = [node for node in fused.nodes if node.op == ATTENTION_OP]
    assert len(nodes) == n == len(matches) > 0
    for node in nodes:
        a = node.attrs
        m = matches[node.name]
        f64 = {v: env[v].astype(np.float64) for v in node.inputs[:3]}
        q = _read_through(a.q, f64[node.inputs[0]], (a.batch, a.heads, a.sq, a.d))
        k = _read_through(a.k, f64[node.inputs[1]], (a.batch, a.heads, a.sk, a.d))
        v = _read_through(a.v, f64[node.inputs[2]], (a.batch, a.heads, a.sk, a.dv))
        want_q = env[m.q].astype(np.float64).reshape(a.batch, a.heads, a.sq, a.d)
        want_k = env[m.k].astype(np.float64)
        want_k = (np.swapaxes(want_k, -1, -2) if m.k_transposed else want_k).reshape(a.batch, a.heads, a.sk, a.d)
        want_v = env[m.v].astype(np.float64).reshape(a.batch, a.heads, a.sk, a.dv)
        np.testing.assert_allclose(v, want_v, rtol=1e-6)
        # the scale absorbed the factors of Q and K: compare the scores they produce
        np.testing.assert_allclose(a.scale * q @ np.swapaxes(k, -1, -2),
                                   m.scale * want_q @ np.swapaxes(want_k, -1, -2), rtol=1e-4, atol=1e-4)
        out = np.full(int(np.prod(fused.types[node.outputs[0]].shape)), np.nan)
        res = env[m.pv.outputs[0]].astype(np.float64).reshape(a.batch, a.heads, a.sq, a.dv)
        out[_addresses(a.out, res.shape)] = res
        np.testing.assert_allclose(out, env[node.outputs[0]].astype(np.float64).reshape(-1), rtol=1e-6)
    return fused


def test_attention_reads_projections_through_strides():
    """The IR encoder layer: the fused node reads the projections directly (specs checked against the
    interpreter)."""
    g = encoder()
    _attention_specs_agree_with_reference(g, _feeds(g))


def _load_exporter():
    """examples/export_encoder.py as a module (torch nn.TransformerEncoder -> ONNX)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("export_encoder", Path(__file__).resolve().parents[1] /
                                                  "examples" / "export_encoder.py")
    exporter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exporter)
    return exporter


def test_exported_encoder_attention_reads_in_place(tmp_path):
    """nn.TransformerEncoderLayer exported to ONNX: Q/K/V come out of the packed in-projection through
    Unsqueeze/Transpose/Squeeze/Gather, are split into heads by Reshape/Transpose and scaled by Mul; the
    result goes back through Transpose. The fused node reads and writes through strides and every one of
    those copies is gone from the graph the CUDA code is made from."""
    pytest.importorskip("torch")
    from accelc.frontend.onnx import load_onnx
    from accelc.passes.manager import PassContext, PassManager
    path = tmp_path / "enc.onnx"
    _load_exporter().export_encoder(path, layers=2, hidden=64, heads=4, ffn=128, seq=16, batch=2)
    graph, _ = PassManager().run(load_onnx(str(path)), PassContext(target=get_target("h100"), dtype="bf16"))
    feeds = {graph.inputs[0]: RNG.standard_normal(tuple(graph.types[graph.inputs[0]].shape)).astype(np.float32)}
    fused = _attention_specs_agree_with_reference(graph, feeds)
    ops = [n.op for n in fused.nodes]
    assert "Gather" not in ops and "Softmax" not in ops
    assert ops.count("Transpose") < [n.op for n in graph.nodes].count("Transpose") - 8    # 5+ per layer gone
    assert not any(n.op == "Mul" and "self_attn" in n.name for n in fused.nodes)


def test_generated_code_is_readable():
    from accelc.backends.cuda.arch import arch_for
    from accelc.backends.cuda.codegen import generate
    gen = generate(encoder(), arch_for(get_target("a100")), BackendOptions())
    src = gen.files["accelc_model.cu"]
    assert "__global__" in src and "k_attention_" in src and "LayerNormalization" in src
    assert gen.gemm_sources and all("accelc_cutlass::GemmOf<" in s and "Instance::workspace" in s for s in gen.gemm_sources.values())
    hopper = generate(encoder(compute=DType.bfloat16), arch_for(get_target("h100")), BackendOptions())
    assert hopper.gemm_sources and all("accelc_cutlass::GemmSm90Of<cutlass::bfloat16_t" in s
                                       for s in hopper.gemm_sources.values())


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
@pytest.mark.slow
def test_fp16_encoder_compiles(cuda_cache):
    """fp16 compute instantiates CUTLASS's half_t tensor-op GEMMs (on sm_90a the CUTLASS 3 ones; the 2.x
    template is the same for every arch, which test_models_compile_for_every_arch covers with bf16)."""
    p = _lower(encoder(compute=DType.float16), "h100", cuda_cache)
    assert p.files["model.so"][:4] == b"\x7fELF"
    assert p.manifest["gemm_instances"] and all(k.startswith("gemm_sm90_f16_") for k in p.manifest["gemm_instances"])


@needs_nvcc
def test_compile_cache_reuses_objects(cuda_cache):
    g = mlp()
    _lower(g, "a100", cuda_cache)
    again = _lower(mlp(), "a100", cuda_cache)      # new weights, same code: every object is cached
    assert again.manifest["build"]["compiled"] <= 2


def test_tf32_only_when_asked():
    """fp32 GEMMs run on CUDA cores (SIMT) unless allow_tf32 is set; then on TF32 tensor cores."""
    from accelc.backends.cuda.arch import arch_for
    from accelc.backends.cuda.codegen import generate
    arch = arch_for(get_target("a100"))
    plain = generate(mlp(d_in=64), arch, BackendOptions())
    tf32 = generate(mlp(d_in=64), arch, BackendOptions(allow_tf32=True))      # K a multiple of 4: tf32 tiles
    ragged = generate(mlp(d_in=37), arch, BackendOptions(allow_tf32=True))    # K = 37: no 16-byte loads
    assert plain.gemm_sources and all("OpClassSimt" in s for s in plain.gemm_sources.values())
    assert tf32.gemm_sources and all("OpClassTensorOp" in s for s in tf32.gemm_sources.values())
    assert sorted("OpClassTensorOp" in s for s in ragged.gemm_sources.values()) == [False, True]


def test_allow_tf32_is_for_cuda_targets(tmp_path):
    import accelc
    from accelc.errors import AccelcError
    from accelc.cli import main
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    node = helper.make_node("Relu", ["x"], ["y"])
    model = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    with pytest.raises(AccelcError, match="TF32 applies to CUDA targets"):
        accelc.compile(model, "host", allow_tf32=True)
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "-o", str(tmp_path / "relu.accelc"), "--allow-tf32"]) != 0


@needs_nvcc
def test_cuda_artifact_without_gpu_says_what_it_needs(cuda_cache):
    """Loading a CUDA artifact on a machine without a GPU names the GPU it needs (not a CPU recompile)."""
    if _have_gpu():
        pytest.skip("this machine has a GPU: the artifact loads")
    from accelc.errors import UnsupportedHardwareError
    from accelc.runtime.module import CompiledModule
    g = mlp()
    parts = _lower(g, "a100", cuda_cache)
    art = _pack({"format_version": 1, "target": "a100", "signature": _signature(g), "options": {},
                 "backend": parts.manifest}, parts.files)
    with pytest.raises(UnsupportedHardwareError) as err:
        CompiledModule(art, cache_dir=str(cuda_cache))
    msg = str(err.value)
    assert "NVIDIA GPU" in msg and "sm_80" in msg and "--target host" not in msg and "this CPU" not in msg


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
                                      (encoder, {"batch": 2, "seq": 33}), (resnet, {"batch": 3})])
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
@pytest.mark.parametrize("build", [cnn, encoder, resnet])
@pytest.mark.parametrize("gemms", ["default", "sm80"])
def test_bf16_cosine(build, gemms, cuda_cache, monkeypatch):
    """bf16 GEMMs/convs against the fp32 model with the same weights (the numerics contract); "sm80" builds
    every GEMM with CUTLASS 2.x (GemmOf and GemmBiasOf), which an sm_90a GPU runs too."""
    import dataclasses
    if gemms == "sm80":
        monkeypatch.setenv("ACCELC_CUDA_GEMM", "sm80")
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
    g = families()
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


# ---- the C ABI directly: stream semantics of accelc_run_device, several models in one process ---------------
class _AbiModel:
    """One model through the library's C ABI with ctypes (every restype/argtypes set). The library is written
    to a content-addressed path and never overwritten: a loaded .so must not change under the process, and
    dlopen of an already loaded path returns the library loaded first."""

    def __init__(self, parts, folder):
        import ctypes as c
        import hashlib
        from pathlib import Path
        data = parts.files["model.so"]
        path = Path(folder) / f"abi_{hashlib.sha256(data).hexdigest()[:24]}.so"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        lib = c.CDLL(str(path))
        lib.accelc_last_error.restype, lib.accelc_last_error.argtypes = c.c_char_p, []
        lib.accelc_signature_json.restype, lib.accelc_signature_json.argtypes = c.c_char_p, []
        lib.accelc_create.restype = c.c_int
        lib.accelc_create.argtypes = [c.c_void_p, c.c_size_t, c.c_int, c.POINTER(c.c_void_p)]
        lib.accelc_run.restype = c.c_int
        lib.accelc_run.argtypes = [c.c_void_p, c.POINTER(c.c_void_p), c.POINTER(c.c_void_p)]
        lib.accelc_run_device.restype = c.c_int
        lib.accelc_run_device.argtypes = [c.c_void_p, c.POINTER(c.c_void_p), c.POINTER(c.c_void_p), c.c_void_p]
        lib.accelc_destroy.restype, lib.accelc_destroy.argtypes = None, [c.c_void_p]
        import json
        self.signature = json.loads(lib.accelc_signature_json().decode())
        self.lib, self.c = lib, c
        self.weights = np.frombuffer(parts.files["weights.bin"], np.uint8)      # kept alive while the model lives
        self.handle = c.c_void_p()
        rc = lib.accelc_create(self.weights.ctypes.data if self.weights.size else None, self.weights.size, 0,
                               c.byref(self.handle))
        assert rc == 0, lib.accelc_last_error().decode()
        assert self.handle.value, "accelc_create returned a NULL model"

    def _ptrs(self, addrs):
        return (self.c.c_void_p * max(1, len(addrs)))(*addrs)

    def run(self, feeds: dict) -> dict:
        """accelc_run: host buffers, synchronous."""
        ins = [np.ascontiguousarray(feeds[p["name"]]) for p in self.signature["inputs"]]
        outs = [np.empty(p["shape"], DType.parse(p["dtype"]).np) for p in self.signature["outputs"]]
        rc = self.lib.accelc_run(self.handle, self._ptrs([a.ctypes.data for a in ins]),
                                 self._ptrs([a.ctypes.data for a in outs]))
        assert rc == 0, self.lib.accelc_last_error().decode()
        return {p["name"]: a for p, a in zip(self.signature["outputs"], outs)}

    def run_device(self, inputs, outputs, stream) -> None:
        """accelc_run_device on a torch stream (its cuda_stream handle; 0 is the legacy default stream)."""
        self._keep = (inputs, outputs)                     # the tensors outlive the asynchronous run
        rc = self.lib.accelc_run_device(self.handle, self._ptrs([t.data_ptr() for t in inputs]),
                                        self._ptrs([t.data_ptr() for t in outputs]),
                                        self.c.c_void_p(stream.cuda_stream or None))
        assert rc == 0, self.lib.accelc_last_error().decode()

    def destroy(self) -> None:
        if self.handle.value:
            self.lib.accelc_destroy(self.handle)
            self.handle = self.c.c_void_p()


def _gemm_chain(n_gemms: int, m=1024, k=1024) -> Graph:
    """x @ W1 @ W2 ... (fp32, SIMT): GPU work proportional to n_gemms, tiny input/output copies."""
    g = Graph(f"chain{n_gemms}")
    cur = g.add_input("x", TensorType(F32, (m, k)))
    for _ in range(n_gemms):
        w = (RNG.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32)
        (cur,) = g.add_node("FusedGemm", [cur, g.add_constant(w), g.add_constant(np.zeros(k, np.float32))],
                            FusedGemmAttrs(compute=F32))
    g.outputs = [cur]
    return g


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


@gpu
@needs_nvcc
@pytest.mark.gpu
@pytest.mark.parametrize("which", ["side_stream", "legacy_default_stream"])
def test_run_device_enqueues_everything_on_the_callers_stream(which, cuda_cache, tmp_path):
    torch = _torch_cuda()
    target = _gpu_target()
    small_g, big_g = _gemm_chain(2), _gemm_chain(20)                  # 10x the GEMM work
    small = _AbiModel(_lower(small_g, target, cuda_cache), tmp_path)
    big = _AbiModel(_lower(big_g, target, cuda_cache), tmp_path)
    stream = torch.cuda.Stream() if which == "side_stream" else torch.cuda.default_stream()
    assert (stream.cuda_stream != 0) == (which == "side_stream")
    try:
        x_host = RNG.standard_normal((1024, 1024)).astype(np.float32)
        want_small, want_big = (evaluate(g, {"x": x_host})[g.outputs[0]] for g in (small_g, big_g))
        with torch.cuda.stream(stream):
            x = torch.zeros(1024, 1024, device="cuda")
            y = torch.empty(1024, 1024, device="cuda")
            x_new = torch.from_numpy(x_host).to("cuda")
            for _ in range(3):                                        # eager run, graph capture, replay
                small.run_device([x], [y], stream)
                big.run_device([x], [y], stream)
            # Ordering on the stream, both ways: the input is written on `stream` only after a long sleep
            # (work on any other stream would read the stale zeros), and the output is read by a torch op
            # enqueued on `stream` right after the call (work finishing elsewhere would leave it stale).
            y.fill_(float("nan"))
            torch.cuda._sleep(50_000_000)
            x.copy_(x_new)                                            # device-to-device: asynchronous
            small.run_device([x], [y], stream)
            y_small = y.clone()
            big.run_device([x], [y], stream)
            y_big = y.clone()
        stream.synchronize()
        for got, want in ((y_small.cpu().numpy(), want_small), (y_big.cpu().numpy(), want_big)):
            assert np.isfinite(got).all()
            assert _cosine(got, want) > 0.99999
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))

        # an event pair on the stream brackets the work: > 0, and 10x the GEMMs take clearly longer
        def timed(model, reps=10):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            stream.synchronize()
            a.record(stream)
            for _ in range(reps):
                model.run_device([x], [y], stream)
            b.record(stream)
            b.synchronize()
            return a.elapsed_time(b) / reps
        t_small = min(timed(small) for _ in range(3))
        t_big = min(timed(big) for _ in range(3))
        assert t_small > 0
        tflops_big = 20 * 2 * 1024 ** 3 / (t_big * 1e-3) / 1e12
        assert tflops_big < 200, f"{tflops_big:.0f} TFLOP/s of fp32 SIMT: the events do not bracket the work"
        assert t_big > 4 * t_small, f"20 GEMMs {t_big:.3f} ms vs 2 GEMMs {t_small:.3f} ms"
    finally:
        torch.cuda.synchronize()
        small.destroy()
        big.destroy()


@gpu
@needs_nvcc
@pytest.mark.gpu
def test_several_models_in_one_process(cuda_cache, tmp_path):
    """Two different models (and a second instance of one library) created in one process, run interleaved
    through both entry points, then one destroyed while the others keep running."""
    torch = _torch_cuda()
    target = _gpu_target()
    ga, gb = mlp(batch=8), encoder(batch=2, seq=16)
    pa, pb = _lower(ga, target, cuda_cache), _lower(gb, target, cuda_cache)
    fa, fb = _feeds(ga), _feeds(gb)
    wa, wb = evaluate(ga, fa), evaluate(gb, fb)
    a, b = _AbiModel(pa, tmp_path), _AbiModel(pb, tmp_path)
    a2 = _AbiModel(pa, tmp_path)                     # same library, a second model of it
    models = [a, b, a2]
    stream = torch.cuda.Stream()

    def check_host(model, feeds, want, g):
        got = model.run(feeds)
        for name in g.outputs:
            np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-4)

    def check_device(model, feeds, want, g):
        with torch.cuda.stream(stream):
            ins = [torch.from_numpy(np.ascontiguousarray(feeds[v])).to("cuda") for v in g.inputs]
            outs = [torch.full(tuple(g.types[v].shape), float("nan"), device="cuda",
                               dtype=getattr(torch, g.types[v].dtype.np.name)) for v in g.outputs]
            model.run_device(ins, outs, stream)
        stream.synchronize()
        for name, t in zip(g.outputs, outs):
            np.testing.assert_allclose(t.cpu().numpy(), want[name], rtol=2e-4, atol=2e-4)

    try:
        for _ in range(4):                           # eager, capture, replays: interleaved between the models
            check_host(a, fa, wa, ga)
            check_device(b, fb, wb, gb)
            check_device(a2, fa, wa, ga)
            check_host(b, fb, wb, gb)
            check_device(a, fa, wa, ga)
        a.destroy()
        for _ in range(3):
            check_device(b, fb, wb, gb)
            check_host(b, fb, wb, gb)
            check_device(a2, fa, wa, ga)
        b.destroy()
        check_host(a2, fa, wa, ga)
        a3 = _AbiModel(pa, tmp_path)                 # a fresh model after others were destroyed
        models.append(a3)
        for _ in range(3):
            check_device(a3, fa, wa, ga)
    finally:
        torch.cuda.synchronize()
        for mdl in models:
            mdl.destroy()


@gpu
@needs_nvcc
@pytest.mark.gpu
def test_python_runtime_takes_torch_cuda_tensors(cuda_cache, tmp_path):
    """CompiledModule.run on torch CUDA tensors (DLPack, no host copies) on a side stream, with out= buffers;
    the results match the reference and the host path; host memory handed to accelc_run_device is refused."""
    torch = _torch_cuda()
    from accelc.errors import AccelcError
    g = encoder(batch=2, seq=16)
    feeds = _feeds(g)
    want = evaluate(g, feeds)
    (host,), m = _run_artifact(g, _gpu_target(), cuda_cache, feeds)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        ins = {v: torch.from_numpy(np.ascontiguousarray(feeds[v])).to("cuda") for v in g.inputs}
        outs = {v: torch.full(tuple(g.types[v].shape), float("nan"), device="cuda") for v in g.outputs}
    for _ in range(3):                                  # eager, capture, replay
        got = m.run(ins, out=outs, stream=stream)
    stream.synchronize()
    for name in g.outputs:
        assert got[name] is outs[name]
        np.testing.assert_allclose(outs[name].cpu().numpy(), want[name], rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(outs[name].cpu().numpy(), host[name], rtol=1e-6, atol=1e-6)
    with pytest.raises(Exception, match="pass out="):
        m.run(ins)
    # a host pointer given to the device entry point: refused with code 4 and a message, nothing run
    ptrs_in = (__import__("ctypes").c_void_p * len(g.inputs))(*[feeds[v].ctypes.data for v in g.inputs])
    ptrs_out = (__import__("ctypes").c_void_p * len(g.outputs))(*[o.data_ptr() for o in outs.values()])
    assert m._run_device_fn(m._handle, ptrs_in, ptrs_out, None) == 4
    assert b"host memory" in m._lib.accelc_last_error()
    with pytest.raises(AccelcError):
        m.run({v: t.cpu() for v, t in ins.items()}, out=outs)


def test_bench_kernel_summary_folds_layers():
    """bench_cuda's per-kernel table: layers folded together, per run, biggest first."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("bench_cuda", Path(__file__).parents[1] / "bench" / "bench_cuda.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    kernels = [("k__layers_0_norm1_LayerNormalization", 3.0), ("k__layers_1_norm1_LayerNormalization", 5.0),
               ("cutlass_gemm", 40.0), ("k_attention__layers_0_self_attn", 10.0)] * 2
    rows = bench.summarize_kernels(kernels, runs=2, top=2)
    assert [r["kernel"] for r in rows] == ["cutlass_gemm", "k_attention__layers_N_self_attn"]
    assert rows[0]["ms_per_run"] == pytest.approx(0.040) and rows[0]["launches_per_run"] == 1
    assert rows[0]["share"] == pytest.approx(80 / 116)
    norm = bench.summarize_kernels(kernels, runs=2)[2]
    assert norm["kernel"] == "k__layers_N_norm1_LayerNormalization" and norm["launches_per_run"] == 2
