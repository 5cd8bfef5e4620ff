"""Fusion passes and BN folding / bf16 conversion: structure, semantics (reference interpreter before and
after on random inputs), verifier, and no-match cases."""
import ml_dtypes
import numpy as np
import pytest

from accelc.ir import DType, Graph, TensorType, evaluate, print_graph, verify
from accelc.ir.ops.conv import ConvAttrs
from accelc.ir.ops.elementwise import AlphaAttrs, GeluAttrs
from accelc.ir.ops.fused import Activation
from accelc.ir.ops.linalg import GemmAttrs
from accelc.ir.ops.normalization import BatchNormAttrs, SoftmaxAttrs
from accelc.passes import PassContext
from accelc.passes import convert_precision, fold_batchnorm, fuse_elementwise, fuse_epilogues

F32 = DType.float32
RNG = np.random.default_rng(1234)


def const(g: Graph, shape, name=None, scale=0.5, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32) * scale
    return g.add_constant(np.abs(a) + 0.5 if positive else a, name)


def run_and_check(pass_module, g: Graph, rtol=1e-5, atol=1e-5):
    result = pass_module.run(g, PassContext())
    verify(result.graph)
    feeds = {i: np.random.default_rng(7).standard_normal(g.types[i].shape).astype(np.float32) for i in g.inputs}
    before, after = evaluate(g, feeds), evaluate(result.graph, feeds)
    assert list(before) == list(after) == g.outputs
    for k in before:
        assert before[k].shape == after[k].shape and before[k].dtype == after[k].dtype
        np.testing.assert_allclose(after[k], before[k], rtol=rtol, atol=atol)
    return result


def assert_no_change(pass_module, g: Graph):
    text = print_graph(g)
    r = pass_module.run(g, PassContext())
    assert r.changed is False and r.graph is g and print_graph(g) == text


# ---- fuse_elementwise ----------------------------------------------------------------------------
def test_fuse_elementwise_builds_one_program_with_dedup_inputs_and_broadcasting():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (4, 8)))
    b = g.add_input("b", TensorType(F32, (8,)))
    (s,) = g.add_node("Add", [x, b], name="add")
    (sig,) = g.add_node("Sigmoid", [s], name="sig")
    (m,) = g.add_node("Mul", [s, sig], name="mul")            # s read twice inside the group
    (t,) = g.add_node("Mul", [m, b], name="mul_b")             # b read twice: one fused input
    (y,) = g.add_node("LeakyRelu", [t], AlphaAttrs(0.2), name="lrelu")
    g.outputs = [y]
    r = run_and_check(fuse_elementwise, g, rtol=1e-6, atol=1e-6)
    assert r.changed and r.summary == "fused 5 elementwise ops into 1 FusedElementwise node"
    (node,) = r.graph.nodes
    assert node.op == "FusedElementwise" and node.inputs == ("x", "b") and node.outputs == (y,)
    assert [s.op for s in node.attrs.steps] == ["Add", "Sigmoid", "Mul", "Mul", "LeakyRelu"]
    assert [s.args for s in node.attrs.steps] == [(0, 1), (2,), (2, 3), (4, 1), (5,)]
    assert node.attrs.steps[-1].attrs == AlphaAttrs(0.2)
    assert_no_change(fuse_elementwise, r.graph)


def test_fuse_elementwise_stops_at_multi_use_values_and_non_elementwise_ops():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 6)))
    (e,) = g.add_node("Exp", [x], name="exp")
    (n,) = g.add_node("Neg", [e], name="neg")
    (sm,) = g.add_node("Softmax", [n], SoftmaxAttrs(-1), name="softmax")
    (a,) = g.add_node("Abs", [sm], name="abs")
    (sq,) = g.add_node("Sqrt", [a], name="sqrt")
    (t,) = g.add_node("Tanh", [e], name="tanh")                    # e has two users: exp stays alone
    (y,) = g.add_node("Add", [sq, t], name="add")
    g.outputs = [y, n]                                             # n is an output: cannot be interior
    r = run_and_check(fuse_elementwise, g, rtol=1e-6, atol=1e-6)
    assert r.graph.ops_histogram() == {"Exp": 1, "FusedElementwise": 1, "Neg": 1, "Softmax": 1}
    fused = next(n for n in r.graph.nodes if n.op == "FusedElementwise")
    assert [s.op for s in fused.attrs.steps] == ["Abs", "Sqrt", "Tanh", "Add"]
    assert r.graph.outputs == [y, n]


def test_fuse_elementwise_inlines_existing_fused_nodes_and_keeps_dtype():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (5,)))
    (a,) = g.add_node("Exp", [x])
    (b,) = g.add_node("Neg", [a])
    first = fuse_elementwise.run(g, PassContext()).graph
    (c,) = first.add_node("Greater", [b, x])        # bool result: the fused output dtype must follow
    first.outputs = [c]
    r = run_and_check(fuse_elementwise, first)
    (node,) = r.graph.nodes
    assert [s.op for s in node.attrs.steps] == ["Exp", "Neg", "Greater"]
    assert r.graph.types[c].dtype == DType.bool


def test_fuse_elementwise_no_match_single_ops():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3, 3)))
    (e,) = g.add_node("Exp", [x])
    (m,) = g.add_node("MatMul", [e, e])
    (r_,) = g.add_node("Relu", [m])
    g.outputs = [r_, e]
    assert_no_change(fuse_elementwise, g)


# ---- fuse_epilogues ------------------------------------------------------------------------------
def test_gelu_of_matmul_plus_bias_fuses():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3, 16)))
    w, b = const(g, (16, 24), "w"), const(g, (24,), "b")
    (mm,) = g.add_node("MatMul", [x, w])
    (add,) = g.add_node("Add", [b, mm])
    (y,) = g.add_node("Gelu", [add], GeluAttrs("none"))
    g.outputs = [y]
    r = run_and_check(fuse_epilogues, g)
    (node,) = r.graph.nodes
    assert node.op == "FusedGemm" and node.outputs == (y,)
    assert node.attrs.activation == Activation("gelu") and node.inputs[:2] == (x, w) and len(node.inputs) == 3
    np.testing.assert_array_equal(r.graph.constants[node.inputs[2]], g.constants[b])
    assert "1 MatMul+Add+Gelu" in r.summary
    assert_no_change(fuse_epilogues, r.graph)


def test_residual_without_activation_and_two_biases_merge():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (4, 8)))
    r_in = g.add_input("r", TensorType(F32, (4, 8)))
    w, b1, b2 = const(g, (8, 8), "w"), const(g, (1, 8), "b1"), const(g, (8,), "b2")
    (mm,) = g.add_node("MatMul", [x, w])
    (a1,) = g.add_node("Add", [mm, b1])
    (a2,) = g.add_node("Add", [r_in, a1])           # residual
    (a3,) = g.add_node("Add", [a2, b2])             # a second constant bias, after the residual
    g.outputs = [a3]
    r = run_and_check(fuse_epilogues, g)
    (node,) = r.graph.nodes
    assert node.inputs[0:2] == (x, w) and node.inputs[3] == r_in
    assert node.attrs.activation.kind == "none"
    np.testing.assert_allclose(r.graph.constants[node.inputs[2]], g.constants[b1][0] + g.constants[b2], rtol=1e-6)


def test_gemm_alpha_beta_trans_and_clip_activation():
    g = Graph()
    a = g.add_input("a", TensorType(F32, (6, 5)))      # trans_a: op(a) is 5x6
    bw = const(g, (7, 6), "bw")                          # trans_b: op(b) is 6x7
    c = const(g, (5, 7), "c")
    lo = g.add_constant(np.array(-0.3, np.float32), "lo")
    hi = g.add_constant(np.array(0.4, np.float32), "hi")
    bias = const(g, (7,), "bias")
    (y0,) = g.add_node("Gemm", [a, bw, c], GemmAttrs(alpha=0.7, beta=1.3, trans_a=True, trans_b=True))
    (y1,) = g.add_node("Add", [y0, bias])
    (y,) = g.add_node("Clip", [y1, lo, hi])
    g.outputs = [y]
    r = run_and_check(fuse_epilogues, g)
    (node,) = r.graph.nodes
    at = node.attrs
    assert (at.trans_a, at.trans_b, at.alpha, at.beta) == (True, True, 0.7, 1.0)
    assert at.activation == Activation("clip", alpha=float(np.float32(-0.3)), beta=float(np.float32(0.4)))


def conv_graph(with_residual=True, act="Relu"):
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3, 8, 8)))
    w = const(g, (4, 3, 3, 3), "w")
    cb = const(g, (4, 1, 1), "cb")
    (c,) = g.add_node("Conv", [x, w], ConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1)))
    (cur,) = g.add_node("Add", [c, cb])
    if with_residual:
        r = g.add_input("res", TensorType(F32, (2, 4, 8, 8)))
        (cur,) = g.add_node("Add", [cur, r])
    if act == "Relu":
        (cur,) = g.add_node("Relu", [cur])
    elif act == "SiluPattern":
        (s,) = g.add_node("Sigmoid", [cur])
        (cur,) = g.add_node("Mul", [s, cur])
    g.outputs = [cur]
    return g


def test_relu_of_conv_bias_residual_fuses_everything():
    g = conv_graph()
    r = run_and_check(fuse_epilogues, g)
    (node,) = r.graph.nodes
    assert node.op == "FusedConv" and node.attrs.activation.kind == "relu"
    assert node.attrs.conv == ConvAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1))
    assert node.inputs[3] == "res" and r.graph.types[node.inputs[2]].shape == (4,)


def test_silu_written_as_x_times_sigmoid_fuses():
    g = conv_graph(with_residual=False, act="SiluPattern")
    r = run_and_check(fuse_epilogues, g)
    (node,) = r.graph.nodes
    assert node.attrs.activation.kind == "silu"


def test_multi_use_intermediate_is_not_fused_but_linear_op_is_canonicalised():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3, 4)))
    w, b = const(g, (4, 4), "w"), const(g, (4,), "b")
    (mm,) = g.add_node("MatMul", [x, w])
    (a,) = g.add_node("Add", [mm, b])
    (r1,) = g.add_node("Relu", [a])
    (t,) = g.add_node("Tanh", [a])                 # a has two users: no activation fusion
    (o,) = g.add_node("Add", [r1, t])
    g.outputs = [o]
    r = run_and_check(fuse_epilogues, g)
    assert r.graph.ops_histogram() == {"Add": 1, "FusedGemm": 1, "Relu": 1, "Tanh": 1}
    fused = r.graph.nodes[0]
    assert fused.attrs.activation.kind == "none" and len(fused.inputs) == 3
    # the MatMul output itself being a graph output blocks the bias too: plain canonicalisation
    g2 = Graph()
    x2 = g2.add_input("x", TensorType(F32, (3, 4)))
    (mm2,) = g2.add_node("MatMul", [x2, const(g2, (4, 4))])
    (a2,) = g2.add_node("Add", [mm2, const(g2, (4,))])
    g2.outputs = [a2, mm2]
    r2 = run_and_check(fuse_epilogues, g2)
    assert r2.graph.ops_histogram() == {"Add": 1, "FusedGemm": 1}
    assert r2.summary == "made 1 fused node (1 MatMul)"


def test_fuse_epilogues_no_match():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3, 4)))
    (y,) = g.add_node("Relu", [x])
    g.outputs = [y]
    assert_no_change(fuse_epilogues, g)


# ---- fold_batchnorm -------------------------------------------------------------------------------
def bn_params(g: Graph, c: int):
    return [const(g, (c,)), const(g, (c,)), const(g, (c,)), const(g, (c,), positive=True)]


def test_batchnorm_folds_into_conv_weights_and_bias():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (1, 3, 6, 6)))
    w, b = const(g, (5, 3, 3, 3), "w"), const(g, (5,), "b")
    (c,) = g.add_node("Conv", [x, w, b], ConvAttrs(kernel_shape=(3, 3)))
    (y,) = g.add_node("BatchNormalization", [c, *bn_params(g, 5)], BatchNormAttrs(1e-3))
    g.outputs = [y]
    r = run_and_check(fold_batchnorm, g, rtol=1e-4)
    assert r.graph.ops_histogram() == {"Conv": 1}
    assert r.graph.nodes[0].outputs == (y,)
    assert r.summary == "folded 1 BatchNormalization (1 into Conv)"
    assert_no_change(fold_batchnorm, r.graph)


@pytest.mark.parametrize("trans_b", [False, True])
def test_batchnorm_folds_into_gemm_and_matmul(trans_b):
    g = Graph()
    x = g.add_input("x", TensorType(F32, (4, 6)))
    w = const(g, (3, 6) if trans_b else (6, 3))
    (y0,) = g.add_node("Gemm", [x, w, const(g, (3,))], GemmAttrs(alpha=1.5, beta=0.5, trans_b=trans_b))
    (y1,) = g.add_node("BatchNormalization", [y0, *bn_params(g, 3)])
    (y2,) = g.add_node("MatMul", [y1, const(g, (3, 5))])
    (y3,) = g.add_node("BatchNormalization", [y2, *bn_params(g, 5)])
    g.outputs = [y3]
    r = run_and_check(fold_batchnorm, g, rtol=1e-4)
    assert r.graph.ops_histogram() == {"Add": 1, "Gemm": 1, "MatMul": 1}


def test_standalone_batchnorm_becomes_mul_add_and_shared_conv_output_is_not_folded():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 4, 3, 3)))
    (c,) = g.add_node("Conv", [x, const(g, (4, 4, 1, 1))], ConvAttrs(kernel_shape=(1, 1)))
    (y,) = g.add_node("BatchNormalization", [c, *bn_params(g, 4)])
    (z,) = g.add_node("BatchNormalization", [x, *bn_params(g, 4)])
    g.outputs = [y, z, c]                     # c is also an output: its BN cannot fold into the conv
    r = run_and_check(fold_batchnorm, g, rtol=1e-4)
    assert r.graph.ops_histogram() == {"Add": 2, "Conv": 1, "Mul": 2}
    mul = next(n for n in r.graph.nodes if n.op == "Mul")
    assert r.graph.types[mul.inputs[1]].shape == (4, 1, 1)


def test_batchnorm_with_runtime_params_is_left_alone():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 4)))
    mean = g.add_input("mean", TensorType(F32, (4,)))
    (y,) = g.add_node("BatchNormalization", [x, const(g, (4,)), const(g, (4,)), mean, const(g, (4,), positive=True)])
    g.outputs = [y]
    assert_no_change(fold_batchnorm, g)


# ---- convert_to_bf16 ---------------------------------------------------------------------------
def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_bf16_conversion_stores_constant_weights_as_bf16_and_marks_dynamic_gemms():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (8, 32)))
    w = const(g, (32, 32), "w", scale=0.2)
    (q,) = g.add_node("MatMul", [x, w])
    (s,) = g.add_node("Gemm", [q, x], GemmAttrs(trans_b=True))     # q @ x^T: no constant operand
    (p,) = g.add_node("Softmax", [s], SoftmaxAttrs(-1))
    g.outputs = [p]
    fused = fuse_epilogues.run(g, PassContext()).graph
    r = convert_precision.run_bf16(fused, PassContext(dtype="bf16"))
    verify(r.graph)
    gemms = [n for n in r.graph.nodes if n.op == "FusedGemm"]
    assert len(gemms) == 2 and all(n.attrs.compute == DType.bfloat16 for n in gemms)
    weight = r.graph.constants[gemms[0].inputs[1]]
    # bf16 storage where FusedGemm's inference accepts a bf16 operand, else fp32 holding bf16 values
    assert weight.dtype in (ml_dtypes.bfloat16, np.float32)
    np.testing.assert_array_equal(weight.astype(np.float32),
                                  g.constants[w].astype(ml_dtypes.bfloat16).astype(np.float32))
    assert r.graph.types[r.graph.outputs[0]].dtype == F32
    assert next(n for n in r.graph.nodes if n.op == "Softmax").inputs[0] == gemms[1].outputs[0]
    assert r.summary.startswith("bf16 compute for 2 GEMM/conv nodes (") and "1 converting at run time" in r.summary
    feeds = {"x": np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)}
    ref, low = evaluate(g, feeds)[p], evaluate(r.graph, feeds)[p]
    assert cosine(ref, low) > 0.999
    assert not np.array_equal(ref, low)          # it really computes in bf16
    assert_no_change(convert_precision.BF16_PASS, r.graph)


def test_residual_add_of_two_convolutions_is_fused_once():
    """ResNet's projection block: Add(conv_main, conv_shortcut) -> Relu. Both convs reach the Add; exactly one
    of them takes it as its epilogue (the other's output becomes the residual), and the result stays valid."""
    from accelc.ir.ops.conv import ConvAttrs
    from accelc.passes import fuse_epilogues
    rng = np.random.default_rng(7)
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (1, 4, 5, 5)))
    attrs = ConvAttrs(kernel_shape=(1, 1))
    w1 = g.add_constant(rng.standard_normal((8, 4, 1, 1)).astype(np.float32))
    w2 = g.add_constant(rng.standard_normal((8, 4, 1, 1)).astype(np.float32))
    (main,) = g.add_node("Conv", [x, w1], attrs, name="main")
    (short,) = g.add_node("Conv", [x, w2], attrs, name="shortcut")
    (s,) = g.add_node("Add", [main, short])
    (y,) = g.add_node("Relu", [s])
    g.outputs = [y]
    res = fuse_epilogues.run(g, PassContext())
    verify(res.graph)
    fused = [n for n in res.graph.nodes if n.op == "FusedConv"]
    assert len(fused) == 2
    assert sum(len(n.inputs) == 4 and n.attrs.activation.kind == "relu" for n in fused) == 1
    xv = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(evaluate(res.graph, {"x": xv})[y], evaluate(g, {"x": xv})[y], rtol=1e-5, atol=1e-6)


def test_fp16_conversion_stores_fp16_weights_and_keeps_out_of_range_nodes_in_fp32():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (8, 32)))
    w = const(g, (32, 32), "w", scale=0.2)
    big = g.add_constant(np.full((32, 4), 7.0e4, np.float32), "big")     # beyond fp16's 65504
    (q,) = g.add_node("MatMul", [x, w])
    (y,) = g.add_node("MatMul", [q, big])
    g.outputs = [y]
    fused = fuse_epilogues.run(g, PassContext()).graph
    r = convert_precision.run_fp16(fused, PassContext(dtype="fp16"))
    verify(r.graph)
    first, second = [n for n in r.graph.nodes if n.op == "FusedGemm"]
    assert first.attrs.compute == DType.float16 and second.attrs.compute == F32
    weight = r.graph.constants[first.inputs[1]]
    assert weight.dtype in (np.float16, np.float32)
    np.testing.assert_array_equal(weight.astype(np.float32), g.constants[w].astype(np.float16).astype(np.float32))
    assert r.graph.constants[second.inputs[1]].dtype == np.float32
    assert "fp16 compute for 1 GEMM/conv nodes" in r.summary and "1 kept fp32: weights beyond fp16's range" in r.summary
    feeds = {"x": np.random.default_rng(3).standard_normal((8, 32)).astype(np.float32)}
    ref, low = evaluate(g, feeds)[y], evaluate(r.graph, feeds)[y]
    assert np.isfinite(low).all() and cosine(ref, low) > 0.99999
    assert not np.array_equal(ref, low)
    assert_no_change(convert_precision.FP16_PASS, r.graph)
