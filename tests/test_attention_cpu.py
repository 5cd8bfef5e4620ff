"""Fused attention in the CPU backend (codegen_attention.py, kernels/accelc_attention.cpp).

Attention subgraphs written the ways exporters write them are compiled for ``host`` and compared with a
float64 NumPy computation of the same model; the manifest says how many were fused, and the generated
code must not contain the copies the fusion reads through. The strided-view algebra is checked against
NumPy's own reshape.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided
from onnx import TensorProto, helper, numpy_helper

import accelc
from accelc.backends.cpu_amx.codegen_attention import _collapse, _regroup, reshape_strides

F = TensorProto.FLOAT


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "attention", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def compile_and_run(m, feeds, dtype="fp32", cache=None):
    cm = accelc.compile(m, "host", dtype=dtype, cache_dir=cache, measure_accuracy=False)
    return cm, cm.run(feeds)


def fused_count(cm) -> int:
    return cm.manifest["backend"]["fused_attention"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("accelc_attention_cache"))


# ---- view algebra ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,perm,new", [
    ((2, 3, 4), (0, 1, 2), (6, 4)),
    ((2, 3, 4), (1, 0, 2), (3, 2, 2, 2)),          # splitting the last (contiguous) axis
    ((4, 6, 8), (0, 2, 1), (4, 8, 2, 3)),          # splitting a strided axis
    ((1, 5, 1, 6), (2, 1, 0, 3), (5, 6)),          # size-1 axes dropped
    ((3, 4, 5), (2, 0, 1), (5, 12)),               # merging two contiguous axes
    ((3, 4, 5), (0, 1, 2), (1, 60, 1)),
])
def test_reshape_strides_reads_what_numpy_reshape_gives(shape, perm, new):
    base = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    view = base.transpose(perm)
    strides = tuple(s // 4 for s in view.strides)
    st = reshape_strides(view.shape, strides, new)
    assert st is not None
    got = as_strided(base, new, tuple(s * 4 for s in st))
    np.testing.assert_array_equal(got, view.reshape(new))


def test_reshape_strides_refuses_a_merge_that_needs_a_copy():
    view = np.zeros((3, 4), np.float32).T          # merging a transposed pair is not a view
    assert reshape_strides(view.shape, tuple(s // 4 for s in view.strides), (12,)) is None
    assert reshape_strides((2, 3), (3, 1), (5,)) is None   # element counts differ


def test_a_merge_no_stride_reads_survives_until_a_later_reshape_splits_it():
    """[S, B, 3, E] projection output: Q = [:, :, 0] read as [S, B*H, D] merges B (stride 3E) with H
    (stride D), which no single stride reads; the [B, H, S, D] reshape after the transpose splits it
    again, and the result reads what NumPy's copies give."""
    s_, b, h, d = 5, 3, 2, 4
    e = h * d
    base = np.arange(s_ * b * 3 * e, dtype=np.float32).reshape(s_, b, 3 * e)
    q_view = base[:, :, :e]                                         # Gather of index 0 after the split
    strides = tuple(st // 4 for st in q_view.strides)
    dims = tuple(((n, st),) for n, st in zip(q_view.shape, strides))
    merged = _regroup(dims, (s_, b * h, d))
    assert merged is not None and _collapse(merged[1]) is None     # not a strided tensor
    perm = (1, 0, 2)
    split = _regroup(tuple(merged[p] for p in perm), (b, h, s_, d))
    st = [_collapse(x) for x in split]
    assert None not in st
    want = q_view.reshape(s_, b * h, d).transpose(perm).reshape(b, h, s_, d)
    got = as_strided(base, shape=(b, h, s_, d), strides=[x * 4 for x in st])
    np.testing.assert_array_equal(got, want)
    assert _regroup(dims, (s_, 7, 1)) is None                        # a size that does not divide


# ---- whole models ------------------------------------------------------------------------------------------
def hf_attention(b, s, hidden, heads, mask_shape):
    """HuggingFace-BERT style: separate Q/K/V projections, [B,S,H,D] -> [B,H,S,D], K transposed to
    [B,H,D,S], Div by sqrt(d), additive mask, softmax, P V, back to [B,S,hidden], output projection."""
    d = hidden // heads
    rng = np.random.default_rng(1)
    w = {n: rng.standard_normal((hidden, hidden)).astype(np.float32) / np.sqrt(hidden) for n in "qkvo"}
    nodes, inits = [], [const("w" + n, w[n]) for n in "qkvo"]
    inits += [const("split_shape", [b, s, heads, d], np.int64), const("merge_shape", [b, s, hidden], np.int64),
              const("sqrt_d", np.sqrt(d))]
    for n in "qkv":
        nodes.append(helper.make_node("MatMul", ["x", "w" + n], [n + "_lin"]))
        nodes.append(helper.make_node("Reshape", [n + "_lin", "split_shape"], [n + "_4d"]))
    nodes += [
        helper.make_node("Transpose", ["q_4d"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k_4d"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v_4d"], ["v"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Div", ["qk", "sqrt_d"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["ctx_2d"]),
        helper.make_node("MatMul", ["ctx_2d", "wo"], ["y"]),
    ]
    m = model(nodes, [helper.make_tensor_value_info("x", F, [b, s, hidden]),
                      helper.make_tensor_value_info("mask", F, list(mask_shape))],
              [helper.make_tensor_value_info("y", F, [b, s, hidden])], inits)

    def reference(x, mask):
        x, mask = x.astype(np.float64), mask.astype(np.float64)
        q, k, v = ((x @ w[n]).reshape(b, s, heads, d).transpose(0, 2, 1, 3) for n in "qkv")
        p = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + mask)
        return (p @ v).transpose(0, 2, 1, 3).reshape(b, s, hidden) @ w["o"]
    return m, reference


@pytest.mark.parametrize("b,s,hidden,heads,mask_shape", [
    (2, 13, 48, 4, (2, 1, 1, 13)),      # padding mask per batch; Sk and d = 12 not multiples of 16
    (1, 40, 64, 2, (1, 2, 40, 40)),     # full mask per head
    (1, 9, 32, 2, (1, 1, 9, 1)),        # a mask broadcast along the keys
])
def test_hf_style_attention_fuses_and_matches(b, s, hidden, heads, mask_shape, cache):
    m, reference = hf_attention(b, s, hidden, heads, mask_shape)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, s, hidden)).astype(np.float32)
    # -10000 over keys masks them; a mask constant along the keys only shifts rows (fp32 keeps ~1e-3 of
    # a -10000 shift, so it uses a small one there)
    masked = -10000.0 if mask_shape[-1] == s else -2.0
    mask = np.where(rng.random(mask_shape) < 0.2, masked, 0.0).astype(np.float32)
    cm, out = compile_and_run(m, {"x": x, "mask": mask}, cache=cache)
    assert fused_count(cm) == 1
    assert cm.manifest["backend"]["merged_gemm_groups"] == 1     # Q, K and V: one product
    src = cm.artifact.member("src/model.cpp").decode()
    assert "attention(at," in src and "index_copy" not in src   # Q, K, V and the result are read in place
    np.testing.assert_allclose(out["y"], reference(x, mask), rtol=1e-4, atol=1e-4)


def test_bf16_attention_matches_within_bf16_rounding(cache):
    m, reference = hf_attention(1, 24, 64, 4, (1, 1, 1, 24))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 24, 64)).astype(np.float32)
    mask = np.zeros((1, 1, 1, 24), np.float32)
    cm, out = compile_and_run(m, {"x": x, "mask": mask}, dtype="bf16", cache=cache)
    assert fused_count(cm) == 1
    ref = reference(x, mask)
    cos = float(np.dot(out["y"].ravel(), ref.ravel()) / np.linalg.norm(out["y"]) / np.linalg.norm(ref))
    assert cos > 0.999 and np.abs(out["y"] - ref).max() < 0.05 * np.abs(ref).max()


def test_rank3_attention_with_scaled_inputs_and_strided_q(cache):
    """[N, S, D] operands; Q and K scaled by constants before the product (PyTorch's MHA export), Q read
    through a transpose whose column stride is not 1 (gathered), K^T materialised by a Transpose."""
    n, sq, sk, d, dv = 3, 10, 17, 20, 12
    nodes = [
        helper.make_node("Transpose", ["q_t"], ["q"], perm=[0, 2, 1]),      # q_t is [N, D, Sq]
        helper.make_node("Mul", ["q", "c"], ["q_s"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("Mul", ["kt", "c"], ["kt_s"]),
        helper.make_node("MatMul", ["q_s", "kt_s"], ["qk"]),
        helper.make_node("Softmax", ["qk"], ["p"], axis=2),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    m = model(nodes, [helper.make_tensor_value_info("q_t", F, [n, d, sq]), helper.make_tensor_value_info("k", F, [n, sk, d]),
                      helper.make_tensor_value_info("v", F, [n, sk, dv])],
              [helper.make_tensor_value_info("y", F, [n, sq, dv])], [const("c", 0.5)])
    rng = np.random.default_rng(3)
    feeds = {"q_t": rng.standard_normal((n, d, sq)).astype(np.float32),
             "k": rng.standard_normal((n, sk, d)).astype(np.float32),
             "v": rng.standard_normal((n, sk, dv)).astype(np.float32)}
    cm, out = compile_and_run(m, feeds, cache=cache)
    assert fused_count(cm) == 1
    q = feeds["q_t"].astype(np.float64).transpose(0, 2, 1)
    ref = softmax(0.25 * q @ feeds["k"].astype(np.float64).transpose(0, 2, 1)) @ feeds["v"]
    np.testing.assert_allclose(out["y"], ref, rtol=1e-4, atol=1e-5)


def test_encoder_export_fuses_every_layer(cache, tmp_path):
    torch = pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("export_encoder", Path(__file__).resolve().parents[1] / "examples" / "export_encoder.py")
    exporter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exporter)
    path = tmp_path / "enc.onnx"
    mod = exporter.export_encoder(path, layers=2, hidden=64, heads=4, ffn=128, seq=16, batch=2)
    x = np.random.default_rng(0).standard_normal((2, 16, 64)).astype(np.float32)
    cm = accelc.compile(path, "host", cache_dir=cache, measure_accuracy=False)
    assert fused_count(cm) == 2
    src = cm.artifact.member("src/model.cpp").decode()
    # Q, K and V are read where the packed in-projection wrote them: its Unsqueeze/Transpose/Squeeze/Gather
    # split and the batch*heads merge that a later Reshape undoes leave no copies behind
    assert "] Gather '" not in src and "] Squeeze '" not in src
    with torch.inference_mode():
        ref = mod(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(cm(x), ref, rtol=1e-4, atol=1e-4)


# ---- horizontal fusion of sibling GEMMs ---------------------------------------------------------------------
def sibling_gemms(rows: int):
    """x @ W_i + b_i for three widths (one without bias, one transposed Gemm), each read by a Sigmoid."""
    rng = np.random.default_rng(4)
    w = [rng.standard_normal((32, n)).astype(np.float32) for n in (16, 24, 8)]
    b = [rng.standard_normal(n).astype(np.float32) for n in (16, 24, 8)]
    inits = [const("w0", w[0]), const("b0", b[0]), const("w1t", w[1].T), const("b1", b[1]), const("w2", w[2])]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"]), helper.make_node("Add", ["m0", "b0"], ["y0"]),
             helper.make_node("Gemm", ["x", "w1t", "b1"], ["y1"], transB=1),
             helper.make_node("MatMul", ["x", "w2"], ["y2"])]
    nodes += [helper.make_node("Sigmoid", [f"y{i}"], [f"s{i}"]) for i in range(3)]
    m = model(nodes, [helper.make_tensor_value_info("x", F, [rows, 32])],
              [helper.make_tensor_value_info(f"s{i}", F, [rows, n]) for i, n in enumerate((16, 24, 8))], inits)

    def reference(x):
        x = x.astype(np.float64)
        return [1 / (1 + np.exp(-(x @ w[i] + (b[i] if i < 2 else 0)))) for i in range(3)]
    return m, reference


@pytest.mark.parametrize("rows,merged", [(4, 1), (40, 0)])
def test_sibling_gemms_merge_for_few_rows_only(rows, merged, cache):
    """Read by non-view ops, the merged product's columns are copied out: worth it for a few rows (decode)
    only. Either way the results are those of the separate products."""
    m, reference = sibling_gemms(rows)
    x = np.random.default_rng(5).standard_normal((rows, 32)).astype(np.float32)
    cm, out = compile_and_run(m, {"x": x}, cache=cache)
    assert cm.manifest["backend"]["merged_gemm_groups"] == merged
    for i, ref in enumerate(reference(x)):
        np.testing.assert_allclose(out[f"s{i}"], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sq,dtype", [(1, "fp32"), (3, "fp32"), (1, "bf16")])
def test_decode_step_attention_over_a_cache(sq, dtype, cache):
    """A decode step: a few query rows against a key/value cache given as inputs ([B, H, S, D]), a padding
    mask, the scale on Q; fp32 takes the direct path (no packing), bf16 the packed one."""
    b, h, s, d = 2, 3, 37, 16
    nodes = [helper.make_node("Mul", ["q", "c"], ["q_s"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q_s", "kt"], ["qk"]),
             helper.make_node("Add", ["qk", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"]),
             helper.make_node("Transpose", ["o"], ["y"], perm=[0, 2, 1, 3])]
    m = model(nodes, [helper.make_tensor_value_info("q", F, [b, h, sq, d]), helper.make_tensor_value_info("k", F, [b, h, s, d]),
                      helper.make_tensor_value_info("v", F, [b, h, s, d]), helper.make_tensor_value_info("mask", F, [b, 1, 1, s])],
              [helper.make_tensor_value_info("y", F, [b, sq, h, d])], [const("c", 0.25)])
    rng = np.random.default_rng(6)
    feeds = {n: rng.standard_normal(shape).astype(np.float32) for n, shape in
             (("q", (b, h, sq, d)), ("k", (b, h, s, d)), ("v", (b, h, s, d)))}
    feeds["mask"] = np.where(rng.random((b, 1, 1, s)) < 0.3, -10000.0, 0.0).astype(np.float32)
    cm, out = compile_and_run(m, feeds, dtype=dtype, cache=cache)
    assert fused_count(cm) == 1
    direct = "attention(at, nullptr)" in cm.artifact.member("src/model.cpp").decode()
    assert direct == (dtype == "fp32")      # the direct path needs no packed K and V
    q, k, v = (feeds[n].astype(np.float64) for n in "qkv")
    ref = (softmax(0.25 * q @ k.transpose(0, 1, 3, 2) + feeds["mask"]) @ v).transpose(0, 2, 1, 3)
    if dtype == "fp32":
        np.testing.assert_allclose(out["y"], ref, rtol=1e-4, atol=1e-5)
    else:
        assert np.abs(out["y"] - ref).max() < 0.03
