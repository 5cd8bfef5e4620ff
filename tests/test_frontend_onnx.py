"""The ONNX frontend: every handler against onnxruntime through the reference interpreter, the model-zoo
light models, a torch-exported transformer layer, and the loader's errors."""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelc.errors import ModelLoadError, ShapeError, UnsupportedOpError
from accelc.frontend.onnx import load_onnx, require_static_inputs
from accelc.ir import DType, evaluate, verify

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(f[:-5] for f in os.listdir(LIGHT_DIR) if f.endswith(".onnx"))

_NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
               np.dtype(np.int32): TensorProto.INT32, np.dtype(np.bool_): TensorProto.BOOL,
               np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.uint8): TensorProto.UINT8}


# ---- helpers -----------------------------------------------------------------------------------------
def make_model(nodes, feeds: dict[str, np.ndarray], outputs: list[str], *, opset: int = 17,
               inits: dict[str, np.ndarray] | None = None, symbolic: dict[str, tuple] | None = None) -> onnx.ModelProto:
    """A one-graph model; input value infos come from the feeds (or ``symbolic`` shapes), output types
    from ONNX shape inference."""
    inputs = []
    for name, value in feeds.items():
        shape = symbolic.get(name, value.shape) if symbolic else value.shape
        inputs.append(helper.make_tensor_value_info(name, _NP_TO_ONNX[value.dtype], list(shape)))
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "test", inputs, [helper.make_empty_tensor_value_info(o) for o in outputs],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 10
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    del model.graph.output[:]
    for o in outputs:
        vi = known[o]
        model.graph.output.append(helper.make_tensor_value_info(o, vi.type.tensor_type.elem_type, None))
    return model


def run_both(model: onnx.ModelProto, feeds: dict[str, np.ndarray], **load_kwargs):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)
    graph = load_onnx(model, **load_kwargs)
    verify(graph)
    got = evaluate(graph, feeds)
    return graph, expected, [got[o] for o in graph.outputs]


def check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, rtol: float = 1e-5, atol: float = 1e-6,
          **load_kwargs):
    graph, expected, got = run_both(model, feeds, **load_kwargs)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        assert g.shape == e.shape, (g.shape, e.shape)
        np.testing.assert_allclose(g.astype(np.float64) if g.dtype != np.bool_ else g,
                                   e.astype(np.float64) if e.dtype != np.bool_ else e, rtol=rtol, atol=atol)
    return graph


def rand(*shape, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def single(op: str, feeds: dict, *, opset: int = 17, n_out: int = 1, inits=None, **attrs) -> onnx.ModelProto:
    inputs = list(feeds) + list(inits or {})
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, inputs, outs, name=f"{op.lower()}_node", **attrs)
    return make_model([node], feeds, outs, opset=opset, inits=inits)


# ---- elementwise -----------------------------------------------------------------------------------
UNARY_DOMAINS = {
    "Abs": (-2, 2), "Neg": (-2, 2), "Exp": (-2, 2), "Log": (0.1, 3), "Sqrt": (0.1, 3), "Reciprocal": (0.5, 3),
    "Floor": (-3, 3), "Ceil": (-3, 3), "Round": (-3, 3), "Sign": (-2, 2), "Sin": (-2, 2), "Cos": (-2, 2),
    "Tan": (-1, 1), "Asin": (-0.9, 0.9), "Acos": (-0.9, 0.9), "Atan": (-2, 2), "Sinh": (-2, 2),
    "Cosh": (-2, 2), "Asinh": (-2, 2), "Acosh": (1.1, 3), "Atanh": (-0.9, 0.9), "Erf": (-2, 2),
    "Relu": (-2, 2), "Sigmoid": (-4, 4), "Tanh": (-2, 2), "Softplus": (-3, 3), "Softsign": (-3, 3),
    "HardSwish": (-4, 4), "Mish": (-3, 3), "Identity": (-2, 2),
}


@pytest.mark.parametrize("op", sorted(UNARY_DOMAINS))
def test_unary_ops_match_onnxruntime(op):
    lo, hi = UNARY_DOMAINS[op]
    x = rand(3, 4, 5, low=lo, high=hi)
    graph = check(single(op, {"x": x}, opset=18), {"x": x})
    assert [n.op for n in graph.nodes] == [op]


@pytest.mark.parametrize("op,attrs", [
    ("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}), ("Celu", {"alpha": 1.3}),
    ("ThresholdedRelu", {"alpha": 0.4}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("Selu", {"alpha": 1.5, "gamma": 1.1}), ("Selu", {}), ("LeakyRelu", {}),
    ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
])
def test_activations_with_attributes(op, attrs):
    x = rand(2, 7)
    check(single(op, {"x": x}, opset=20, **attrs), {"x": x})


def test_not_isnan_and_logical_ops():
    a = np.random.default_rng(1).random((3, 4)) > 0.5
    b = np.random.default_rng(2).random((4,)) > 0.5
    nodes = [helper.make_node("Not", ["a"], ["n"]), helper.make_node("And", ["a", "b"], ["c"]),
             helper.make_node("Or", ["a", "b"], ["d"]), helper.make_node("Xor", ["a", "b"], ["e"])]
    check(make_model(nodes, {"a": a, "b": b}, ["n", "c", "d", "e"]), {"a": a, "b": b})
    x = rand(3, 4)
    x[0, 1] = np.nan
    check(single("IsNaN", {"x": x}), {"x": x})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater",
                                "LessOrEqual", "GreaterOrEqual", "PRelu"])
def test_binary_ops_broadcast(op):
    a = rand(2, 3, 4, seed=1, low=0.5, high=2)
    b = rand(3, 1, seed=2, low=0.5, high=2)
    if op == "PRelu":
        a = rand(2, 3, 4, seed=1)
    check(single(op, {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_int_follows_fmod_attribute(fmod):
    a = np.array([[-7, 7, -3, 9]], np.int64)
    b = np.array([3, -3, 2, -4], np.int64)
    graph = check(single("Mod", {"a": a, "b": b}, fmod=fmod), {"a": a, "b": b})
    assert graph.nodes[0].op == ("Mod" if fmod else "FloorMod")


def test_bitwise_ops():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.array([5, 3, 6, 1], np.int32)
    nodes = [helper.make_node(op, ["a", "b"], [op]) for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor")]
    check(make_model(nodes, {"a": a, "b": b}, ["BitwiseAnd", "BitwiseOr", "BitwiseXor"], opset=18),
          {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Sum", "Max", "Min", "Mean"])
def test_variadic_ops_become_binary_chains(op):
    feeds = {"a": rand(2, 3, seed=1), "b": rand(3, seed=2), "c": rand(2, 1, seed=3)}
    graph = check(single(op, feeds), feeds)
    assert len(graph.nodes) == (3 if op == "Mean" else 2)
    one = {"a": rand(2, 3)}
    assert [n.op for n in check(single(op, one), one).nodes] == ["Identity"]


def test_clip_with_attributes_before_opset_11_and_inputs_after():
    x = rand(4, 5, low=-3, high=3)
    check(single("Clip", {"x": x}, opset=9, min=-1.0, max=0.5), {"x": x})
    check(single("Clip", {"x": x}, opset=9, max=0.5), {"x": x})
    check(single("Clip", {"x": x}, opset=13, inits={"lo": np.float32(-0.5), "hi": np.float32(1.0)}), {"x": x})
    node = helper.make_node("Clip", ["x", "", "hi"], ["y"])
    check(make_model([node], {"x": x}, ["y"], inits={"hi": np.float32(0.25)}), {"x": x})


def test_where_cast_and_castlike():
    c = np.random.default_rng(0).random((3, 4)) > 0.5
    a, b = rand(3, 4, seed=1), rand(4, seed=2)
    nodes = [helper.make_node("Where", ["c", "a", "b"], ["w"]),
             helper.make_node("Cast", ["w"], ["i"], to=TensorProto.INT32),
             helper.make_node("Cast", ["i"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("CastLike", ["h", "a"], ["f"])]
    graph = check(make_model(nodes, {"c": c, "a": a, "b": b}, ["w", "i", "h", "f"]), {"c": c, "a": a, "b": b})
    assert graph.types["i"].dtype == DType.int32 and graph.types["h"].dtype == DType.float16


def test_identity_and_dropout_become_identity_and_unused_mask_is_fine():
    x = rand(2, 3)
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], ratio=0.3),
             helper.make_node("Identity", ["d"], ["y"])]
    graph = check(make_model(nodes, {"x": x}, ["y"], opset=11), {"x": x})
    assert [n.op for n in graph.nodes] == ["Identity", "Identity"]
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"])
    check(make_model([node], {"x": x}, ["y"], opset=13,
                     inits={"r": np.float32(0.5), "t": np.array(False)}), {"x": x})


def test_dropout_training_mode_is_refused():
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")
    model = make_model([node], {"x": rand(2, 3)}, ["y"], opset=13,
                       inits={"r": np.float32(0.5), "t": np.array(True)})
    with pytest.raises(UnsupportedOpError, match="drop.*training_mode"):
        load_onnx(model)


# ---- reductions ------------------------------------------------------------------------------------
REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum"]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [11, 18])
def test_reductions_with_axes_attribute_or_input(op, opset):
    x = rand(2, 3, 4, low=0.2, high=1.5)
    if opset < 18 and not (op == "ReduceSum" and opset >= 13):
        model = single(op, {"x": x}, opset=opset, axes=[1, -1], keepdims=0)
    else:
        model = single(op, {"x": x}, opset=opset, inits={"axes": np.array([1, -1], np.int64)}, keepdims=0)
    graph = check(model, {"x": x})
    assert graph.nodes[0].attrs.axes == (1, -1)
    check(single(op, {"x": x}, opset=opset), {"x": x})  # default: every axis, keepdims


def test_reduce_noop_with_empty_axes_and_nonconstant_axes():
    x = rand(2, 3)
    graph = check(single("ReduceMean", {"x": x}, opset=18, noop_with_empty_axes=1), {"x": x})
    assert graph.nodes[0].attrs.axes == ()
    axes = np.array([1], np.int64)
    model = single("ReduceSum", {"x": x, "axes": axes}, opset=13)
    with pytest.raises(UnsupportedOpError, match="axes.*compile-time constant"):
        load_onnx(model)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reductions(op):
    x = np.array([[1, 3, 3, 0], [2, 2, 1, 1]], np.float32)
    for last in (0, 1):
        check(single(op, {"x": x}, opset=13, axis=1, keepdims=0, select_last_index=last), {"x": x})


def test_cumsum():
    x = rand(3, 4)
    for exclusive, reverse in [(0, 0), (1, 1)]:
        check(single("CumSum", {"x": x}, inits={"axis": np.array(1, np.int64)}, exclusive=exclusive,
                     reverse=reverse), {"x": x})


# ---- normalization -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (11, -1), (11, 0), (13, 1), (13, -1)])
def test_softmax_old_and_new_semantics(op, opset, axis):
    x = rand(2, 3, 4)
    graph = check(single(op, {"x": x}, opset=opset, axis=axis), {"x": x})
    if opset == 11 and axis != -1:
        assert [n.op for n in graph.nodes] == ["Flatten", op, "Reshape"]


def test_old_softmax_with_symbolic_dims_reshapes_back_dynamically():
    x = rand(2, 3, 4)
    model = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], {"x": x}, ["y"], opset=11,
                       symbolic={"x": ("batch", 3, 4)})
    graph = check(model, {"x": x})
    assert [n.op for n in graph.nodes] == ["Flatten", "Softmax", "Shape", "Reshape"]


def test_layer_norm_batch_norm_instance_norm_lrn():
    x = rand(2, 5, 6)
    inits = {"s": rand(6, seed=1), "b": rand(6, seed=2)}
    check(single("LayerNormalization", {"x": x}, inits=inits, epsilon=1e-3), {"x": x}, rtol=1e-4, atol=1e-5)
    check(single("LayerNormalization", {"x": x}, inits={"s": rand(5, 6, seed=3)}, axis=1), {"x": x},
          rtol=1e-4, atol=1e-5)
    x4 = rand(2, 3, 5, 5)
    bn = {"scale": rand(3, seed=1), "bias": rand(3, seed=2), "mean": rand(3, seed=3),
          "var": rand(3, seed=4, low=0.5, high=2)}
    for opset in (9, 15):
        check(single("BatchNormalization", {"x": x4}, inits=bn, opset=opset, epsilon=1e-4), {"x": x4},
              rtol=1e-4, atol=1e-5)
    check(single("InstanceNormalization", {"x": x4}, inits={"s": bn["scale"], "b": bn["bias"]}), {"x": x4},
          rtol=1e-4, atol=1e-5)
    check(single("LRN", {"x": x4}, size=3, alpha=1e-3, beta=0.7, bias=1.5), {"x": x4}, rtol=1e-4)


def test_batch_norm_training_outputs_and_layer_norm_stats_are_reported_together():
    x4 = rand(2, 3, 4, 4)
    bn = {k: rand(3, seed=i, low=0.5, high=1) for i, k in enumerate(["scale", "bias", "mean", "var"])}
    nodes = [helper.make_node("BatchNormalization", ["x", *bn], ["y", "rm", "rv"], name="bn", training_mode=1),
             helper.make_node("LayerNormalization", ["y", "ls"], ["z", "mu"], name="ln")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("z", "mu", "rm")],
                              [numpy_helper.from_array(v, k) for k, v in bn.items()]
                              + [numpy_helper.from_array(rand(4), "ls")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError) as err:
        load_onnx(model)
    assert {n for n, _ in err.value.unsupported} == {"bn", "ln"}
    assert "training_mode" in str(err.value) and "Mean/InvStdDev" in str(err.value)


# ---- linalg --------------------------------------------------------------------------------------------
def test_matmul_batched_and_1d():
    a, b = rand(2, 1, 3, 4, seed=1), rand(5, 4, 6, seed=2)
    check(single("MatMul", {"a": a, "b": b}), {"a": a, "b": b}, rtol=1e-5, atol=1e-5)
    v = rand(4, seed=3)
    check(single("MatMul", {"a": a, "v": v}), {"a": a, "v": v}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_a,trans_b,with_c", [(0, 0, True), (1, 0, True), (0, 1, False), (1, 1, True)])
def test_gemm(trans_a, trans_b, with_c):
    a = rand(*((4, 3) if trans_a else (3, 4)), seed=1)
    b = rand(*((5, 4) if trans_b else (4, 5)), seed=2)
    inits = {"c": rand(5, seed=3)} if with_c else None
    check(single("Gemm", {"a": a, "b": b}, inits=inits, opset=13, alpha=0.5, beta=2.0, transA=trans_a,
                 transB=trans_b), {"a": a, "b": b}, rtol=1e-5, atol=1e-5)


# ---- conv and pooling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs", [
    {"pads": [1, 0, 2, 1], "strides": [2, 1]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER", "strides": [2, 3]},
    {"auto_pad": "VALID", "dilations": [2, 1]},
    {"group": 2},
])
def test_conv_2d_and_auto_pad(attrs):
    x, w = rand(2, 4, 9, 8, seed=1), rand(6, 4 // attrs.get("group", 1), 3, 3, seed=2)
    graph = check(single("Conv", {"x": x}, inits={"w": w, "b": rand(6, seed=3)}, **attrs), {"x": x},
                  rtol=1e-4, atol=1e-5)
    assert len(graph.nodes[0].attrs.pads) == 4


def test_conv_1d_and_3d_without_bias():
    x1 = rand(2, 3, 11)
    check(single("Conv", {"x": x1}, inits={"w": rand(4, 3, 3)}, auto_pad="SAME_UPPER"), {"x": x1}, rtol=1e-4,
          atol=1e-5)
    x3 = rand(1, 2, 5, 6, 4)
    check(single("Conv", {"x": x3}, inits={"w": rand(3, 2, 2, 3, 2)}, strides=[1, 2, 1]), {"x": x3}, rtol=1e-4,
          atol=1e-5)


def test_auto_pad_same_needs_static_spatial_dims():
    x = rand(1, 2, 5, 5)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", name="c")],
                       {"x": x}, ["y"], inits={"w": rand(2, 2, 3, 3)}, symbolic={"x": (1, 2, "h", "w")})
    with pytest.raises(ShapeError, match="'c'.*symbolic"):
        load_onnx(model)
    check(model, {"x": x}, shapes={"x": (1, 2, 5, 5)}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attrs", [
    {"strides": [2, 2], "pads": [0, 0, 1, 1]},
    {"strides": [2, 2], "output_padding": [1, 1]},
    {"strides": [2, 2], "output_shape": [10, 9]},
    {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
])
def test_conv_transpose(attrs):
    x = rand(1, 3, 5, 4)
    check(single("ConvTranspose", {"x": x}, inits={"w": rand(3, 2, 3, 3, seed=1)}, **attrs), {"x": x},
          rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"},
])
def test_pooling(op, attrs):
    x = rand(2, 3, 9, 8)
    check(single(op, {"x": x}, opset=13, **attrs), {"x": x}, rtol=1e-5, atol=1e-6)


def test_average_pool_count_include_pad_and_global_pools():
    x = rand(2, 3, 7, 6)
    check(single("AveragePool", {"x": x}, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), {"x": x})
    check(single("GlobalAveragePool", {"x": x}), {"x": x})
    check(single("GlobalMaxPool", {"x": x}), {"x": x})


def test_max_pool_indices_output_is_refused():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="mp")
    model = make_model([node], {"x": rand(1, 1, 4, 4)}, ["y", "idx"])
    with pytest.raises(UnsupportedOpError, match="'mp'.*Indices"):
        load_onnx(model)


# ---- shape ops -----------------------------------------------------------------------------------------
def test_reshape_flatten_transpose():
    x = rand(2, 3, 4)
    check(single("Reshape", {"x": x}, inits={"s": np.array([0, -1], np.int64)}), {"x": x})
    check(single("Reshape", {"x": x}, inits={"s": np.array([4, 0, 2], np.int64)}, allowzero=0, opset=14),
          {"x": x})
    for axis in (0, 2, -1):
        check(single("Flatten", {"x": x}, axis=axis), {"x": x})
    graph = check(single("Transpose", {"x": x}), {"x": x})
    assert graph.types["y0"].shape == (4, 3, 2)
    check(single("Transpose", {"x": x}, perm=[1, 0, 2]), {"x": x})


def test_squeeze_unsqueeze_attribute_and_input_forms():
    x = rand(1, 3, 1, 2)
    check(single("Squeeze", {"x": x}, opset=11, axes=[0, -2]), {"x": x})
    check(single("Squeeze", {"x": x}, opset=11), {"x": x})
    check(single("Squeeze", {"x": x}, opset=13, inits={"a": np.array([2], np.int64)}), {"x": x})
    check(single("Squeeze", {"x": x}, opset=13), {"x": x})
    check(single("Unsqueeze", {"x": x}, opset=11, axes=[0, -1]), {"x": x})
    check(single("Unsqueeze", {"x": x}, opset=13, inits={"a": np.array([1, 5], np.int64)}), {"x": x})


def test_concat_and_split_forms():
    a, b = rand(2, 3, seed=1), rand(2, 5, seed=2)
    check(single("Concat", {"a": a, "b": b}, axis=-1), {"a": a, "b": b})
    x = rand(6, 7)
    check(single("Split", {"x": x}, opset=11, n_out=3, axis=0), {"x": x})
    check(single("Split", {"x": x}, opset=11, n_out=2, axis=1, split=[3, 4]), {"x": x})
    check(single("Split", {"x": x}, opset=13, n_out=2, axis=1, inits={"s": np.array([5, 2], np.int64)}),
          {"x": x})
    check(single("Split", {"x": x}, opset=18, n_out=3, axis=1, num_outputs=3), {"x": x})


def test_split_with_an_unused_middle_output_keeps_positions():
    x = rand(6, 4)
    node = helper.make_node("Split", ["x"], ["p", "q", "r"], axis=0)
    graph = check(make_model([node, helper.make_node("Identity", ["r"], ["z"])], {"x": x}, ["p", "z"],
                             opset=11), {"x": x})
    assert graph.types["p"].shape == (2, 4) and graph.types["r"].shape == (2, 4)


def test_slice_attribute_and_input_forms():
    x = rand(5, 6, 7)
    check(single("Slice", {"x": x}, opset=9, starts=[1, 0], ends=[4, -1], axes=[0, 2]), {"x": x})
    check(single("Slice", {"x": x}, opset=9, starts=[1, 2, 0], ends=[3, 100, 5]), {"x": x})
    inits = {"st": np.array([4, -1], np.int64), "en": np.array([0, -8], np.int64),
             "ax": np.array([0, 1], np.int64), "sp": np.array([-2, -2], np.int64)}
    check(single("Slice", {"x": x}, opset=13, inits=inits), {"x": x})
    starts = np.array([1], np.int64)
    model = make_model([helper.make_node("Slice", ["x", "st", "en"], ["y"])], {"x": x, "st": starts}, ["y"],
                       inits={"en": np.array([4], np.int64)})
    check(model, {"x": x, "st": starts})   # starts computed at run time stay an input


def test_expand_tile_pad():
    x = rand(3, 1)
    check(single("Expand", {"x": x}, inits={"s": np.array([2, 3, 4], np.int64)}), {"x": x})
    check(single("Tile", {"x": x}, inits={"r": np.array([2, 3], np.int64)}), {"x": x})
    x = rand(2, 3, 4)
    check(single("Pad", {"x": x}, opset=2, pads=[0, 1, 2, 0, 2, 1], value=1.5), {"x": x})
    for mode in ("constant", "reflect", "edge"):
        check(single("Pad", {"x": x}, opset=13, mode=mode,
                     inits={"p": np.array([0, 1, 2, 1, 2, 1], np.int64), "v": np.float32(0.5)}), {"x": x})
    check(single("Pad", {"x": x}, opset=18,
                 inits={"p": np.array([1, 2, 0, 3], np.int64), "v": np.float32(-1), "a": np.array([-1, 1])}),
          {"x": x})


def test_shape_size_constant_of_shape_range():
    x = rand(2, 3, 4, 5)
    check(single("Shape", {"x": x}, opset=15, start=1, end=-1), {"x": x})
    check(single("Size", {"x": x}), {"x": x})
    s = np.array([2, 3], np.int64)
    check(single("ConstantOfShape", {"s": s}, value=helper.make_tensor("v", TensorProto.INT32, [1], [7])),
          {"s": s})
    check(single("ConstantOfShape", {"s": s}), {"s": s})
    check(single("Range", {}, inits={"a": np.float32(1), "b": np.float32(4), "d": np.float32(0.5)}), {})
    nodes = [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("ConstantOfShape", ["sh"], ["y"])]
    check(make_model(nodes, {"x": x}, ["y"], symbolic={"x": ("n", 3, 4, 5)}), {"x": x})


def test_depth_to_space_and_space_to_depth():
    x = rand(1, 8, 2, 3)
    for mode in ("DCR", "CRD"):
        check(single("DepthToSpace", {"x": x}, blocksize=2, mode=mode), {"x": x})
    check(single("SpaceToDepth", {"x": rand(1, 2, 4, 6)}, blocksize=2), {"x": rand(1, 2, 4, 6)})


def test_constant_forms_become_graph_constants():
    nodes = [
        helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(rand(2, 3), "t")),
        helper.make_node("Constant", [], ["f"], value_float=2.5),
        helper.make_node("Constant", [], ["fs"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Constant", [], ["i"], value_int=4),
        helper.make_node("Constant", [], ["is"], value_ints=[1, 2]),
        helper.make_node("Constant", [], ["sp"], sparse_value=helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([5.0, 6.0], np.float32)),
            numpy_helper.from_array(np.array([1, 4], np.int64)), [2, 3])),
        helper.make_node("Add", ["x", "t"], ["a"]), helper.make_node("Mul", ["a", "f"], ["m"]),
        helper.make_node("Add", ["m", "sp"], ["y"]),
    ]
    x = rand(2, 3)
    graph = check(make_model(nodes, {"x": x}, ["y", "fs", "i", "is"]), {"x": x})
    assert {"t", "f", "fs", "i", "is", "sp"} <= set(graph.constants)
    assert [n.op for n in graph.nodes] == ["Add", "Mul", "Add"]


# ---- indexing -------------------------------------------------------------------------------------------
def test_gather_and_gather_elements():
    x = rand(5, 4)
    idx = np.array([[0, -1], [2, 3]], np.int64)
    check(single("Gather", {"x": x, "i": idx}, axis=0), {"x": x, "i": idx})
    check(single("Gather", {"x": x}, inits={"i": np.array(-2, np.int64)}, axis=1), {"x": x})
    ge = np.random.default_rng(0).integers(0, 4, (5, 3)).astype(np.int64)
    check(single("GatherElements", {"x": x, "i": ge}, axis=1), {"x": x, "i": ge})


def test_topk_attribute_and_input_forms():
    x = rand(3, 7)
    check(single("TopK", {"x": x}, opset=9, n_out=2, k=3), {"x": x})
    check(single("TopK", {"x": x}, opset=11, n_out=2, axis=0, largest=0, inits={"k": np.array([2], np.int64)}),
          {"x": x})


def test_one_hot_and_trilu():
    idx = np.array([[0, 2], [1, 3]], np.int64)
    inits = {"d": np.array(4, np.int64), "v": np.array([0.5, 2.0], np.float32)}
    check(single("OneHot", {"i": idx}, inits=inits, axis=1), {"i": idx})
    x = rand(2, 4, 5)
    check(single("Trilu", {"x": x}, upper=0, inits={"k": np.array(1, np.int64)}), {"x": x})
    check(single("Trilu", {"x": x}), {"x": x})


def test_values_computed_from_constants_are_resolved_where_the_ir_needs_them():
    """TorchScript exports compute head sizes as Mod(Constant, Constant) and shapes as Shape -> Gather ->
    Concat; where the IR reads such a value at compile time it gets a constant copy, and the computing
    nodes stay in the graph."""
    x = rand(2, 3, 4)
    nodes = [helper.make_node("Mod", ["c7", "c4"], ["three"]),                 # 7 % 4 = 3
             helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Gather", ["sh", "zero"], ["batch"], axis=0),
             helper.make_node("Unsqueeze", ["batch", "zero1"], ["b1"]),
             helper.make_node("Unsqueeze", ["three", "zero1"], ["t1"]),
             helper.make_node("Concat", ["b1", "t1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Sub", ["t1", "one"], ["axes"]),
             helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0)]  # axes computed from constants
    inits = {"c7": np.array(7, np.int64), "c4": np.array(4, np.int64), "zero": np.array(0, np.int64),
             "zero1": np.array([0], np.int64), "minus1": np.array([-1], np.int64), "one": np.array([1], np.int64)}
    graph = check(make_model(nodes, {"x": x}, ["y"], inits=inits), {"x": x})
    assert graph.types["r"].shape == (2, 3, 4)
    assert graph.nodes[-1].op == "ReduceSum" and graph.nodes[-1].attrs.axes == (2,)
    assert "FloorMod" in graph.ops_histogram() and "Concat" in graph.ops_histogram()
    # with a symbolic batch the shape is a run-time value: Reshape keeps it as an input
    dynamic = make_model(nodes[:-1], {"x": x}, ["r"], inits=inits, symbolic={"x": ("n", 3, 4)})
    graph = check(dynamic, {"x": x})
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    assert reshape.inputs[1] == "shape" and graph.types["r"].rank == 3


# ---- names, metadata, shapes ---------------------------------------------------------------------------
def test_names_and_metadata_are_kept():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="my_relu"), helper.make_node("Neg", ["r"], ["out"])]
    model = make_model(nodes, {"x": rand(2)}, ["out"], opset=15)
    model.producer_name, model.producer_version = "unit-test", "1.0"
    graph = load_onnx(model)
    assert graph.inputs == ["x"] and graph.outputs == ["out"]
    assert [n.name for n in graph.nodes] == ["my_relu", "Neg_1"]
    assert [n.outputs for n in graph.nodes] == [("r",), ("out",)]
    assert graph.metadata["opset"] == 15 and graph.metadata["producer"] == "unit-test 1.0"
    assert graph.metadata["model_name"] == "test"


def test_symbolic_dims_stay_symbolic_unless_fixed():
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       {"a": rand(2, 8), "b": rand(2, 8)}, ["y"], symbolic={"a": ("batch", 8), "b": ("batch", 8)})
    model.graph.input[1].type.tensor_type.shape.dim[1].Clear()   # a dim with neither value nor name
    graph = load_onnx(model)
    assert graph.types["a"].shape == ("batch", 8)
    assert graph.types["b"].shape == ("batch", "b_dim1")
    with pytest.raises(ShapeError) as err:
        require_static_inputs(graph)
    message = str(err.value)
    assert "'a'" in message and "'b'" in message and "--shape a=1x8" in message and 'shapes={"a": (1, 8)' in message
    fixed = load_onnx(model, shapes={"a": (3, 8), "b": (3, 8)})
    assert fixed.types["y"].shape == (3, 8)
    require_static_inputs(fixed)
    # a symbol fixed on one input is fixed on every input that uses it
    assert load_onnx(model, shapes={"a": (4, 8)}).types["b"].shape == (4, "b_dim1")


@pytest.mark.parametrize("shapes,match", [
    ({"nope": (1, 8)}, "unknown input.*'nope'.*'a'"),
    ({"a": (2, 9)}, "input 'a': dim 1 is fixed to 8"),
    ({"a": (2, 8, 1)}, "input 'a'.*rank 3"),
    ({"a": (2, 8), "b": (3, 8)}, "'batch'"),
])
def test_bad_shapes_are_shape_errors(shapes, match):
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       {"a": rand(2, 8), "b": rand(2, 8)}, ["y"], symbolic={"a": ("batch", 8), "b": ("batch", 8)})
    with pytest.raises(ShapeError, match=match):
        load_onnx(model, shapes=shapes)


def test_initializers_listed_as_inputs_are_constants():
    w = rand(3)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "old",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    g = load_onnx(model)
    assert g.inputs == ["x"] and "w" in g.constants
    assert not g.constants["w"].flags.writeable


# ---- errors --------------------------------------------------------------------------------------------
def test_missing_garbage_truncated_and_foreign_files(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        load_onnx(garbage)
    model = single("Relu", {"x": rand(4)})
    model.graph.initializer.append(numpy_helper.from_array(rand(256), "unused"))
    data = model.SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        load_onnx(truncated)
    tensor = tmp_path / "tensor.pb"
    tensor.write_bytes(numpy_helper.from_array(rand(10), "t").SerializeToString())
    with pytest.raises(ModelLoadError, match="tensor.pb.*(not an ONNX model|not a valid ONNX protobuf)"):
        load_onnx(tensor)
    graph_only = tmp_path / "graph.pb"   # a protobuf that parses as a ModelProto but is not one
    graph_only.write_bytes(onnx.StringStringEntryProto(key="a", value="b").SerializeToString())
    with pytest.raises(ModelLoadError, match="graph.pb.*not an ONNX model"):
        load_onnx(graph_only)
    with pytest.raises(ModelLoadError, match="empty"):
        load_onnx(b"")
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_onnx(tmp_path)


def test_bytes_and_path_load_the_same_graph(tmp_path):
    model = single("Relu", {"x": rand(4)})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert str(load_onnx(model.SerializeToString())) == str(load_onnx(path)) == str(load_onnx(str(path)))


def test_all_unsupported_ops_are_reported_at_once():
    x = rand(2, 3)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok"),
             helper.make_node("FancyOp", ["r"], ["a"], name="first_bad"),
             helper.make_node("OtherOp", ["a"], ["b"], name="second_bad"),
             helper.make_node("FancyOp", ["b"], ["c"], name="third_bad"),
             helper.make_node("Attention", ["c", "c", "c"], ["d"], name="ms", domain="com.microsoft"),
             helper.make_node("Resize", ["d", "", "sc"], ["y"], name="resize", mode="cubic")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones(2, np.float32), "sc")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError) as err:
        load_onnx(model)
    names = {n for n, _ in err.value.unsupported}
    assert names == {"first_bad", "second_bad", "third_bad", "ms", "resize"}
    message = str(err.value)
    assert "5 nodes" in message and "FancyOp" in message and "OtherOp" in message and "com.microsoft" in message
    assert "'first_bad', 'third_bad'" in message


def test_op_supported_only_from_a_newer_opset_says_so():
    model = single("Add", {"a": rand(2), "b": rand(2)}, opset=6)
    with pytest.raises(UnsupportedOpError, match="supported from opset 7"):
        load_onnx(model)


def test_bad_attribute_values_are_reported_before_translation():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", auto_pad="FOO"),
             helper.make_node("Pad", ["c", "p"], ["y"], name="pad", mode="mirror")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rand(1, 1, 3, 3), "w"),
                               numpy_helper.from_array(np.zeros(8, np.int64), "p")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError) as err:
        load_onnx(model)
    assert {n for n, _ in err.value.unsupported} == {"conv", "pad"}
    assert "auto_pad='FOO'" in str(err.value) and "mode 'mirror'" in str(err.value)


def test_undefined_value_is_a_load_error():
    graph = helper.make_graph([helper.make_node("Relu", ["ghost"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="'ghost' of Relu 'r' is never defined") as err:
        load_onnx(model)
    assert "(onnx.checker: " in str(err.value)      # the checker, run only for the error, adds its hint


def test_onnx_checker_runs_only_for_a_structural_error(monkeypatch):
    """It costs up to a second on a large model and only ever adds a hint to our own errors."""
    import onnx.checker
    calls = []
    monkeypatch.setattr(onnx.checker, "check_model", lambda *a, **k: calls.append(a))
    load_onnx(single("Relu", {"x": rand(2)}))
    assert calls == []


def test_too_new_opset_is_refused():
    model = single("Relu", {"x": rand(2)})
    model.opset_import[0].version = 99
    with pytest.raises(ModelLoadError, match="opset 99"):
        load_onnx(model)


# ---- external data -------------------------------------------------------------------------------------
def _external_model(tmp_path):
    w = rand(64, 32, seed=5)
    model = single("MatMul", {"x": rand(3, 64)}, inits={"w": w})
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    return model, path, w


def test_external_data_is_loaded_relative_to_the_model(tmp_path):
    model, path, w = _external_model(tmp_path)
    os.chdir(tmp_path.parent)   # relative to the model's directory, not the working directory
    graph = load_onnx(path)
    np.testing.assert_array_equal(graph.constants["w"], w)
    assert not graph.constants["w"].flags.writeable
    x = rand(3, 64)
    np.testing.assert_allclose(evaluate(graph, {"x": x})["y0"], x @ w, rtol=1e-5, atol=1e-5)


def test_missing_or_short_external_data_is_a_load_error(tmp_path):
    _, path, _ = _external_model(tmp_path)
    data = tmp_path / "ext.data"
    content = data.read_bytes()
    data.write_bytes(content[:100])
    with pytest.raises(ModelLoadError, match="too short"):
        load_onnx(path)
    data.unlink()
    with pytest.raises(ModelLoadError, match="ext.data.*missing"):
        load_onnx(path)
    proto = onnx.load(path, load_external_data=False)
    with pytest.raises(ModelLoadError, match="not given as a path"):
        load_onnx(proto)


# ---- real models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_zoo_models_load(name):
    graph = load_onnx(os.path.join(LIGHT_DIR, name + ".onnx"))
    verify(graph)
    assert graph.metadata["opset"] in (8, 9)
    assert len(graph.inputs) == 1 and graph.types[graph.inputs[0]].is_static


@pytest.mark.parametrize("name", ["light_resnet50", "light_squeezenet"])
def test_light_models_match_their_bundled_outputs(name):
    """Inputs as onnx's own backend runner makes them for the light models: arange(n) / n."""
    graph = load_onnx(os.path.join(LIGHT_DIR, name + ".onnx"))
    shape = graph.types[graph.inputs[0]].shape
    n = int(np.prod(shape))
    x = (np.arange(n).reshape(shape) / n).astype(np.float32)
    got = evaluate(graph, {graph.inputs[0]: x})[graph.outputs[0]]
    expected = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT_DIR, name + "_output_0.pb")))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-7)


def test_torch_transformer_encoder_layer_matches_onnxruntime():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64,
                                                          batch_first=True, activation="gelu")

        def forward(self, x):
            # explicit is_causal keeps the TorchScript exporter off the fused fast path
            return self.layer(x, src_mask=None, is_causal=False)

    module = Encoder().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 5, 32),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "seq"}})
    model = onnx.load_from_string(buffer.getvalue())
    x = rand(2, 5, 32, seed=4)   # the TorchScript exporter bakes the traced sizes into some Reshapes
    graph = check(model, {"x": x}, rtol=1e-4, atol=1e-5)
    assert graph.types["x"].shape == ("batch", "seq", 32)
    assert "LayerNormalization" in graph.ops_histogram() and "Softmax" in graph.ops_histogram()
    with torch.no_grad():
        np.testing.assert_allclose(evaluate(graph, {"x": x})["y"], module(torch.from_numpy(x)).numpy(),
                                   rtol=1e-4, atol=1e-5)
    fixed = load_onnx(model, shapes={"x": (2, 5, 32)})
    require_static_inputs(fixed)


def test_unsupported_element_type_is_a_feature_refusal_not_a_load_error():
    """A valid model with a string input is declined as unsupported (naming the input and the type)."""
    from accelc.errors import UnsupportedFeatureError
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.STRING, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.STRING, [2])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedFeatureError, match="input 'x' has element type STRING") as err:
        load_onnx(model)
    assert not isinstance(err.value, ModelLoadError)
