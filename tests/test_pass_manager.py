"""The pass manager and the O0..O3 pipelines on a small CNN and a small transformer block."""
import io

import numpy as np
import pytest

from accelc.errors import AccelcError, VerificationError
from accelc.ir import DType, Graph, TensorType, evaluate, verify
from accelc.ir.ops.conv import ConvAttrs
from accelc.ir.ops.elementwise import GeluAttrs
from accelc.ir.ops.linalg import GemmAttrs
from accelc.ir.ops.normalization import BatchNormAttrs, LayerNormAttrs, SoftmaxAttrs
from accelc.ir.ops.shape import FlattenAttrs, TransposeAttrs
from accelc.passes import (FixedPoint, Pass, PassContext, PassManager, PassResult, eliminate_dead_code,
                           pass_names, pipeline_for)

F32 = DType.float32


def _rand(rng, shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def small_cnn() -> Graph:
    rng = np.random.default_rng(10)
    g = Graph("cnn")
    x = g.add_input("x", TensorType(F32, (2, 3, 8, 8)))

    def conv_bn(inp, cin, cout):
        (c,) = g.add_node("Conv", [inp, g.add_constant(_rand(rng, (cout, cin, 3, 3))),
                                   g.add_constant(_rand(rng, (cout,)))],
                          ConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1)))
        params = [_rand(rng, (cout,)) + 1, _rand(rng, (cout,)), _rand(rng, (cout,)),
                  np.abs(_rand(rng, (cout,))) + 0.5]
        (b,) = g.add_node("BatchNormalization", [c] + [g.add_constant(p) for p in params], BatchNormAttrs())
        return b

    (h,) = g.add_node("Relu", [conv_bn(x, 3, 8)])
    (i,) = g.add_node("Identity", [h])
    (r,) = g.add_node("Add", [conv_bn(i, 8, 8), i])
    (h2,) = g.add_node("Relu", [r])
    (p,) = g.add_node("GlobalAveragePool", [h2])
    (f,) = g.add_node("Flatten", [p], FlattenAttrs(1))
    (y,) = g.add_node("Gemm", [f, g.add_constant(_rand(rng, (10, 8))), g.add_constant(_rand(rng, (10,)))],
                      GemmAttrs(trans_b=True))
    g.outputs = [y]
    return g


def transformer_block(t=6, d=16, heads=2) -> Graph:
    rng = np.random.default_rng(11)
    g = Graph("block")
    x = g.add_input("x", TensorType(F32, (1, t, d)))
    dh = d // heads

    def c(shape, scale=0.3):
        return g.add_constant(_rand(rng, shape, scale))

    def linear(v, din, dout):
        (m,) = g.add_node("MatMul", [v, c((din, dout))])
        (a,) = g.add_node("Add", [m, c((dout,))])
        return a

    def layer_norm(v):
        (n,) = g.add_node("LayerNormalization", [v, c((d,)), c((d,))], LayerNormAttrs(axis=-1))
        return n

    def heads_of(v):
        (r,) = g.add_node("Reshape", [v, g.add_constant(np.array([1, t, heads, dh], np.int64))])
        (tr,) = g.add_node("Transpose", [r], TransposeAttrs((0, 2, 1, 3)))
        return tr

    n1 = layer_norm(x)
    q, k, v = (heads_of(linear(n1, d, d)) for _ in range(3))
    (kt,) = g.add_node("Transpose", [k], TransposeAttrs((0, 1, 3, 2)))
    (s,) = g.add_node("MatMul", [q, kt])
    (s2,) = g.add_node("Mul", [s, g.add_constant(np.array(1 / np.sqrt(dh), np.float32))])
    (p,) = g.add_node("Softmax", [s2], SoftmaxAttrs(-1))
    (o,) = g.add_node("MatMul", [p, v])
    (ot,) = g.add_node("Transpose", [o], TransposeAttrs((0, 2, 1, 3)))
    (om,) = g.add_node("Reshape", [ot, g.add_constant(np.array([1, t, d], np.int64))])
    (h,) = g.add_node("Add", [linear(om, d, d), x])
    n2 = layer_norm(h)
    (act,) = g.add_node("Gelu", [linear(n2, d, 4 * d)], GeluAttrs())
    (y,) = g.add_node("Add", [h, linear(act, 4 * d, d)])
    g.outputs = [y]
    return g


def run_pipeline(g, **kw):
    ctx = PassContext(debug=True, **kw)
    out, log = PassManager().run(g, ctx)
    verify(out)
    return out, log, ctx


def outputs_close(g1, g2, seed=0, rtol=1e-5):
    rng = np.random.default_rng(seed)
    feeds = {i: rng.standard_normal(g1.types[i].shape).astype(np.float32) for i in g1.inputs}
    a, b = evaluate(g1, feeds), evaluate(g2, feeds)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=1e-5)
    return a, b


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_cnn_pipelines(opt_level):
    g = small_cnn()
    out, log, ctx = run_pipeline(g, opt_level=opt_level)
    outputs_close(g, out, rtol=1e-4)
    assert [e["pass"] for e in log] == pass_names(pipeline_for(opt_level))
    assert all(set(e) >= {"pass", "changed", "summary", "nodes_before", "nodes_after", "seconds"} for e in log)
    hist = out.ops_histogram()
    if opt_level == 0:
        assert hist == g.ops_histogram()
    if opt_level >= 1:
        assert "BatchNormalization" not in hist and "Identity" not in hist
        bn = next(e for e in log if e["pass"] == "fold_batchnorm")
        assert bn["changed"] and "folded 2 BatchNormalization (2 into Conv)" in bn["summary"]
    if opt_level >= 2:
        assert hist == {"FusedConv": 2, "FusedGemm": 1, "GlobalAveragePool": 1, "Flatten": 1}
        convs = [n for n in out.nodes if n.op == "FusedConv"]
        assert [c.attrs.activation.kind for c in convs] == ["relu", "relu"]
        assert len(convs[1].inputs) == 4 and convs[1].inputs[3] == convs[0].outputs[0]   # residual fused


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_transformer_pipelines(opt_level):
    g = transformer_block()
    out, log, _ = run_pipeline(g, opt_level=opt_level)
    outputs_close(g, out, rtol=1e-4)
    hist = out.ops_histogram()
    if opt_level >= 2:
        assert "MatMul" not in hist and "Gelu" not in hist
        assert hist["FusedGemm"] == 8                            # 6 linear layers + 2 attention GEMMs
        gelu = [n for n in out.nodes if n.op == "FusedGemm" and n.attrs.activation.kind == "gelu"]
        assert len(gelu) == 1
        residual = [n for n in out.nodes if n.op == "FusedGemm" and len(n.inputs) == 4]
        assert len(residual) == 2


def test_bf16_pipeline_accuracy_and_signature():
    g = transformer_block()
    out, log, _ = run_pipeline(g, opt_level=2, dtype="bf16")
    assert log[-1]["pass"] == "convert_to_bf16" and log[-1]["changed"]
    assert all(n.attrs.compute == DType.bfloat16 for n in out.nodes if n.op in ("FusedGemm", "FusedConv"))
    assert out.types[out.outputs[0]].dtype == F32 and out.types["x"].dtype == F32
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 6, 16)).astype(np.float32)}
    a, b = evaluate(g, feeds)[g.outputs[0]], evaluate(out, feeds)[out.outputs[0]]
    cos = float((a.ravel() @ b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos > 0.999 and not np.array_equal(a, b)


def test_dump_after_and_stop_after():
    g = small_cnn()
    stream = io.StringIO()
    out, log = PassManager().run(g, PassContext(opt_level=2, dump_after={"fold_batchnorm"},
                                                stop_after="eliminate_common_subexpressions",
                                                dump_stream=stream))
    text = stream.getvalue()
    assert "// ----- IR after fold_batchnorm -----" in text and "graph cnn(" in text
    assert log[-1]["pass"] == "eliminate_common_subexpressions"
    assert "FusedConv" not in out.ops_histogram()
    assert g.ops_histogram()["BatchNormalization"] == 2          # the input graph is untouched


def test_unknown_pass_names_are_rejected_with_the_valid_list():
    with pytest.raises(AccelcError, match=r"'fold_bn'.*passes of this pipeline: .*fold_batchnorm"):
        PassManager().run(small_cnn(), PassContext(opt_level=1, dump_after={"fold_bn"}))
    with pytest.raises(AccelcError, match="'fuse_epilogues'"):
        PassManager().run(small_cnn(), PassContext(opt_level=1, stop_after="fuse_epilogues"))
    with pytest.raises(AccelcError, match="dtype"):
        PassContext(dtype="int8")
    with pytest.raises(AccelcError, match="opt_level"):
        pipeline_for(4)


def test_debug_mode_catches_a_pass_that_mutates_its_input_or_breaks_the_ir():
    def mutating(graph, ctx):
        graph.nodes.pop()
        return PassResult(graph, True, "oops")

    def breaking(graph, ctx):
        g = graph.copy()
        g.outputs = ["nowhere"]
        return PassResult(g, True, "oops")

    for fn, msg in ((mutating, "modified its input"), (breaking, "invalid after pass breaking")):
        with pytest.raises(VerificationError, match=msg):
            PassManager([Pass(fn.__name__, fn)]).run(small_cnn(), PassContext(debug=True))


def test_fixed_point_log_has_one_entry_per_pass_and_progress_is_reported():
    calls = []
    counter = {"n": 0}

    def flaky(graph, ctx):          # changes twice, then reaches its fixed point
        counter["n"] += 1
        return PassResult(graph.copy(), counter["n"] <= 2, f"change {counter['n']}")

    pipeline = [FixedPoint((Pass("flaky", flaky), eliminate_dead_code.PASS)), eliminate_dead_code.PASS]
    out, log = PassManager(pipeline).run(small_cnn(), PassContext(progress=lambda *a: calls.append(a)))
    assert [e["pass"] for e in log] == ["flaky", "eliminate_dead_code", "eliminate_dead_code"]
    assert log[0]["runs"] == 3 and log[0]["summary"] == "change 1; change 2"
    assert log[1]["changed"] is False and log[1]["summary"] == "no change"
    assert calls == [("flaky", 1, 3), ("eliminate_dead_code", 2, 3), ("eliminate_dead_code", 3, 3)]
