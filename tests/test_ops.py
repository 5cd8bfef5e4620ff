"""Every IR op's NumPy reference against ONNX's own reference implementation, plus shape inference and
attrs validation.

Each case builds a one-node IR graph and a one-node ONNX model of the same computation, runs both on the
same random inputs (fixed seeds) and compares; it also checks that the inferred output types match the
arrays the reference produced.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from accelc.errors import ShapeError
from accelc.ir import DType, Graph, TensorType, evaluate, get_op, verify
from accelc.ir.ops.conv import ConvAttrs, ConvTransposeAttrs, PoolAttrs
from accelc.ir.ops.elementwise import (BINARY, COMPARE, UNARY, AlphaAttrs, AlphaBetaAttrs, CastAttrs,
                                       GeluAttrs, SeluAttrs)
from accelc.ir.ops.fused import (Activation, FusedConvAttrs, FusedElementwiseAttrs, FusedGemmAttrs, Step)
from accelc.ir.ops.indexing import GatherAttrs, GatherElementsAttrs, OneHotAttrs, TopKAttrs, TriluAttrs
from accelc.ir.ops.linalg import GemmAttrs
from accelc.ir.ops.normalization import (BatchNormAttrs, InstanceNormAttrs, LayerNormAttrs, LRNAttrs,
                                         SoftmaxAttrs)
from accelc.ir.ops.reduce import ArgReduceAttrs, CumSumAttrs, ReduceAttrs
from accelc.ir.ops.shape import (ConcatAttrs, ConstantOfShapeAttrs, DepthToSpaceAttrs, FlattenAttrs, PadAttrs,
                                 ReshapeAttrs, ShapeAttrs, SpaceToDepthAttrs, SplitAttrs, SqueezeAttrs,
                                 TransposeAttrs, UnsqueezeAttrs)

OPSET = 21


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def randn(*shape, seed=0, dtype=np.float32) -> np.ndarray:
    return rng(seed).standard_normal(shape).astype(dtype)


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# ---- harness ------------------------------------------------------------------------------------
def run_ir(op: str, inputs, attrs=None, consts=(), n_out=None):
    """Runs ``op`` in a one-node graph; inputs at indices in ``consts`` become graph constants (as the
    frontend would make shape-like operands). Checks inferred types against the produced arrays."""
    g = Graph()
    names, feeds = [], {}
    for i, x in enumerate(inputs):
        if x is None:
            names.append("")
        elif i in consts:
            names.append(g.add_constant(x, f"c{i}"))
        else:
            names.append(g.add_input(f"x{i}", TensorType(DType.from_numpy(x.dtype), tuple(x.shape))))
            feeds[f"x{i}"] = x
    outs = g.add_node(op, names, attrs)
    g.outputs = list(outs)
    verify(g)
    result = evaluate(g, feeds)
    values = [result[o] for o in outs]
    for o, v in zip(outs, values):
        t = g.types[o]
        assert v.dtype == t.dtype.np, f"{op}: reference dtype {v.dtype} vs inferred {t}"
        assert tuple(v.shape) == tuple(t.shape), f"{op}: reference shape {v.shape} vs inferred {t}"
    return values


def run_onnx(op_type: str, inputs, attrs: dict | None = None, n_out: int = 1, opset: int = OPSET,
             engine: str = "reference"):
    """Runs one ONNX node with ONNX's reference evaluator, or with ONNX Runtime (``engine="ort"``) where the
    reference evaluator itself is wrong (noted at each use)."""
    in_names = [f"i{k}" if x is not None else "" for k, x in enumerate(inputs)]
    out_names = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op_type, in_names, out_names, **(attrs or {}))
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
          for n, x in zip(in_names, inputs) if x is not None]
    outs = [helper.make_empty_tensor_value_info(n) for n in out_names]
    model = helper.make_model(helper.make_graph([node], "g", vi, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    feeds = {n: x for n, x in zip(in_names, inputs) if x is not None}
    if engine == "ort":
        import onnxruntime
        model.ir_version = 10
        sess = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    return ReferenceEvaluator(model).run(None, feeds)


def check(ir_op, ir_inputs, ir_attrs, onnx_op, onnx_inputs=None, onnx_attrs=None, *, consts=(), n_out=1,
          rtol=1e-5, atol=1e-6, opset=OPSET, engine="reference"):
    got = run_ir(ir_op, ir_inputs, ir_attrs, consts)
    want = run_onnx(onnx_op, ir_inputs if onnx_inputs is None else onnx_inputs, onnx_attrs, n_out, opset, engine)
    assert len(got) == len(want)
    for g_, w in zip(got, want):
        w = np.asarray(w)
        assert g_.shape == w.shape, f"{ir_op}: shape {g_.shape} vs ONNX {w.shape}"
        if g_.dtype.kind in "fc":
            np.testing.assert_allclose(g_, w.astype(g_.dtype), rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(g_, w)
    return got


# ---- reduce ------------------------------------------------------------------------------------
REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSumExp"]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("axes,keepdims", [(None, True), ((1,), False), ((-1, 0), True), ((0, 2), False)])
def test_reduce_matches_onnx(op, axes, keepdims):
    x = randn(3, 5, 7, seed=1) * (0.5 if op == "ReduceProd" else 1)
    onnx_inputs = [x] if axes is None else [x, i64(*axes)]
    check(op, [x], ReduceAttrs(axes, keepdims), op, onnx_inputs, {"keepdims": int(keepdims)}, opset=18,
          rtol=1e-5, atol=1e-5)


def test_reduce_empty_axes_is_identity():
    x = randn(2, 3)
    check("ReduceSum", [x], ReduceAttrs((), True), "ReduceSum", [x, np.zeros(0, np.int64)],
          {"noop_with_empty_axes": 1}, opset=18)


def test_reduce_int():
    x = rng(2).integers(-5, 5, (4, 6)).astype(np.int32)
    check("ReduceSum", [x], ReduceAttrs((1,), False), "ReduceSum", [x, i64(1)], {"keepdims": 0}, opset=18)
    check("ReduceMax", [x], ReduceAttrs((0,), True), "ReduceMax", [x, i64(0)], {"keepdims": 1}, opset=18)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(0, True, False), (1, False, True), (-1, True, True)])
def test_arg_reduce_with_ties(op, axis, keepdims, last):
    x = rng(3).integers(0, 3, (4, 5, 3)).astype(np.float32)   # many ties
    check(op, [x], ArgReduceAttrs(axis, keepdims, last), op, None,
          {"axis": axis, "keepdims": int(keepdims), "select_last_index": int(last)})


@pytest.mark.parametrize("axis,exclusive,reverse", [(0, False, False), (1, True, False), (-1, False, True),
                                                    (1, True, True)])
def test_cumsum(axis, exclusive, reverse):
    x = randn(3, 4, 5, seed=4)
    check("CumSum", [x], CumSumAttrs(axis, exclusive, reverse), "CumSum", [x, np.array(axis, np.int64)],
          {"exclusive": int(exclusive), "reverse": int(reverse)}, atol=1e-5)


# ---- normalization -----------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(op, axis):
    x = randn(3, 4, 5, seed=5) * 4
    check(op, [x], SoftmaxAttrs(axis), op, None, {"axis": axis})


@pytest.mark.parametrize("axis,with_bias", [(-1, True), (1, False), (-2, True)])
def test_layer_norm(axis, with_bias):
    x = randn(2, 3, 6, seed=6)
    norm_shape = x.shape[axis:]
    scale, bias = randn(*norm_shape, seed=7), randn(*norm_shape, seed=8)
    inputs = [x, scale, bias] if with_bias else [x, scale]
    check("LayerNormalization", inputs, LayerNormAttrs(axis, 1e-3), "LayerNormalization", None,
          {"axis": axis, "epsilon": 1e-3}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (1, 4, 3, 5), (2, 3, 2, 3, 2)])
def test_batch_norm(shape):
    c = shape[1]
    x = randn(*shape, seed=9)
    s, b, m = randn(c, seed=10), randn(c, seed=11), randn(c, seed=12)
    v = np.abs(randn(c, seed=13)) + 0.1
    check("BatchNormalization", [x, s, b, m, v], BatchNormAttrs(1e-4), "BatchNormalization", None,
          {"epsilon": 1e-4}, rtol=1e-4, atol=1e-5)


def test_instance_norm():
    x = randn(2, 3, 5, 4, seed=14)
    check("InstanceNormalization", [x, randn(3, seed=15), randn(3, seed=16)], InstanceNormAttrs(1e-5),
          "InstanceNormalization", None, {"epsilon": 1e-5}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn(size):
    x = randn(2, 7, 3, 4, seed=17)
    a = LRNAttrs(size, 2e-3, 0.6, 1.5)
    # ONNX's reference LRN loops over the batch axis instead of channels (onnx 1.23), so ORT is the oracle
    check("LRN", [x], a, "LRN", None, {"size": size, "alpha": 2e-3, "beta": 0.6, "bias": 1.5}, rtol=1e-5,
          engine="ort")


def test_lrn_even_size_follows_the_onnx_window_formula():
    """ORT refuses even sizes; the ONNX window is c - floor((size-1)/2) .. c + ceil((size-1)/2)."""
    x, size, alpha, beta, bias = randn(1, 6, 2, 3, seed=33), 4, 0.1, 0.75, 2.0
    want = np.empty_like(x)
    for c in range(6):
        lo, hi = max(0, c - (size - 1) // 2), min(6, c + -(-(size - 1) // 2) + 1)
        sq = np.sum(x[:, lo:hi].astype(np.float64) ** 2, axis=1)
        want[:, c] = x[:, c] / (bias + alpha / size * sq) ** beta
    (got,) = run_ir("LRN", [x], LRNAttrs(size, alpha, beta, bias))
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ---- linalg ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                                   ((2, 1, 3, 4), (5, 4, 6)), ((7, 3, 4), (4, 2))])
def test_matmul(sa, sb):
    check("MatMul", [randn(*sa, seed=18), randn(*sb, seed=19)], None, "MatMul", rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ta,tb,c_shape", [(False, False, (5,)), (True, False, (3, 5)), (False, True, (1, 5)),
                                           (True, True, None), (False, False, ())])
def test_gemm(ta, tb, c_shape):
    a = randn(*((4, 3) if ta else (3, 4)), seed=20)
    b = randn(*((5, 4) if tb else (4, 5)), seed=21)
    inputs = [a, b] + ([randn(*c_shape, seed=22)] if c_shape is not None else [])
    check("Gemm", inputs, GemmAttrs(0.5, 2.0, ta, tb), "Gemm", None,
          {"alpha": 0.5, "beta": 2.0, "transA": int(ta), "transB": int(tb)}, atol=1e-5)


# ---- conv and pooling --------------------------------------------------------------------------
CONV_CASES = [
    # x shape, w shape, strides, pads, dilations, group
    ((1, 3, 9, 11), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 4, 10, 7), (6, 2, 3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    ((1, 6, 8, 8), (6, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6),       # depthwise
    ((2, 3, 13), (5, 3, 4), (3,), (2, 1), (2,), 1),                      # 1-D
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), (1, 2, 1), (1, 0, 1, 0, 1, 1), (1, 1, 2), 1),  # 3-D
]


@pytest.mark.parametrize("xs,ws,strides,pads,dil,group", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv(xs, ws, strides, pads, dil, group, bias):
    x, w = randn(*xs, seed=23), randn(*ws, seed=24)
    inputs = [x, w] + ([randn(ws[0], seed=25)] if bias else [])
    check("Conv", inputs, ConvAttrs(tuple(ws[2:]), strides, pads, dil, group), "Conv", None,
          {"kernel_shape": list(ws[2:]), "strides": list(strides), "pads": list(pads),
           "dilations": list(dil), "group": group}, rtol=1e-4, atol=1e-4)


def test_conv_defaults_read_kernel_from_weight():
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3)
    check("Conv", [x, w], ConvAttrs(), "Conv", rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("xs,ws,strides,pads,dil,group,opad", [
    ((1, 3, 5, 4), (3, 2, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 0)),
    ((2, 4, 3, 5), (4, 3, 2, 3), (1, 2), (0, 0, 0, 1), (2, 1), 2, (0, 0)),
    ((1, 2, 7), (2, 3, 3), (3,), (1, 2), (1,), 1, (2,)),
])
def test_conv_transpose(xs, ws, strides, pads, dil, group, opad):
    x, w, b = randn(*xs, seed=26), randn(*ws, seed=27), randn(ws[1] * group, seed=28)
    check("ConvTranspose", [x, w, b], ConvTransposeAttrs(tuple(ws[2:]), strides, pads, dil, group, opad),
          "ConvTranspose", None, {"kernel_shape": list(ws[2:]), "strides": list(strides), "pads": list(pads),
                                  "dilations": list(dil), "group": group, "output_padding": list(opad)},
          rtol=1e-4, atol=1e-4, engine="ort")   # ONNX's reference ConvTranspose cannot do group > 1


POOL_CASES = [
    # x shape, kernel, strides, pads, dilations, ceil_mode
    ((1, 2, 9, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((2, 3, 10, 7), (3, 2), (2, 2), (0, 1, 1, 0), (1, 1), True),
    ((1, 2, 11, 8), (2, 3), (3, 2), (1, 0, 0, 1), (2, 1), True),
    ((1, 1, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True),
    ((2, 2, 12), (3,), (2,), (1, 1), (1,), True),                           # 1-D
    ((1, 2, 5, 6, 4), (2, 3, 2), (2, 2, 1), (0, 1, 0, 1, 1, 1), (1, 1, 1), False),   # 3-D
]


@pytest.mark.parametrize("xs,k,strides,pads,dil,ceil", POOL_CASES)
def test_max_pool(xs, k, strides, pads, dil, ceil):
    x = randn(*xs, seed=29)
    check("MaxPool", [x], PoolAttrs(k, strides, pads, dil, ceil_mode=ceil), "MaxPool", None,
          {"kernel_shape": list(k), "strides": list(strides), "pads": list(pads), "dilations": list(dil),
           "ceil_mode": int(ceil)})


@pytest.mark.parametrize("xs,k,strides,pads,dil,ceil", POOL_CASES)
@pytest.mark.parametrize("include_pad", [False, True])
def test_average_pool(xs, k, strides, pads, dil, ceil, include_pad):
    x = randn(*xs, seed=30)
    check("AveragePool", [x], PoolAttrs(k, strides, pads, dil, ceil, include_pad), "AveragePool", None,
          {"kernel_shape": list(k), "strides": list(strides), "pads": list(pads), "dilations": list(dil),
           "ceil_mode": int(ceil), "count_include_pad": int(include_pad)}, rtol=1e-5, atol=1e-6)


def test_max_pool_int8_pads_with_dtype_minimum():
    x = rng(31).integers(-128, -100, (1, 1, 4, 4)).astype(np.int8)
    check("MaxPool", [x], PoolAttrs((3, 3), (1, 1), (1, 1, 1, 1)), "MaxPool", None,
          {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, engine="ort")  # reference pads int with NaN


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 3, 7), (1, 2, 3, 2, 4)])
def test_global_pool(op, shape):
    # ONNX's reference GlobalMaxPool only handles 4-D inputs correctly
    check(op, [randn(*shape, seed=32)], None, op, engine="ort")


def test_conv_reference_is_fast_enough_for_resnet_sized_layers():
    """A 224x224 stem conv plus a 56x56x64 3x3 conv must be cheap (ResNet-50 in seconds)."""
    import time
    x, w = randn(1, 3, 224, 224), randn(64, 3, 7, 7)
    x2, w2 = randn(1, 64, 56, 56), randn(64, 64, 3, 3)
    t = time.perf_counter()
    get_op("Conv").reference([x, w, None], ConvAttrs((7, 7), (2, 2), (3, 3, 3, 3)))
    get_op("Conv").reference([x2, w2, None], ConvAttrs((3, 3), (1, 1), (1, 1, 1, 1)))
    get_op("MaxPool").reference([randn(1, 64, 112, 112)], PoolAttrs((3, 3), (2, 2), (1, 1, 1, 1)))
    assert time.perf_counter() - t < 2.0


# ---- shape ops ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,target,allowzero", [
    ((2, 3, 4), (4, -1), False), ((2, 3, 4), (0, -1), False), ((2, 3, 4), (0, 0, 2, 2), False),
    ((2, 0, 4), (0, 4), True), ((6,), (-1, 1, 2), False), ((2, 3, 4), (24,), False),
])
def test_reshape(shape, target, allowzero):
    x = randn(*shape, seed=40)
    check("Reshape", [x, i64(*target)], ReshapeAttrs(allowzero), "Reshape", None,
          {"allowzero": int(allowzero)}, consts={1})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    check("Flatten", [randn(2, 3, 4)], FlattenAttrs(axis), "Flatten", None, {"axis": axis})


@pytest.mark.parametrize("perm", [None, (0, 2, 1), (2, 0, 1)])
def test_transpose(perm):
    check("Transpose", [randn(2, 3, 4)], TransposeAttrs(perm), "Transpose", None,
          {} if perm is None else {"perm": list(perm)})


@pytest.mark.parametrize("axes", [None, (2,), (-1, 0)])
def test_squeeze(axes):
    x = randn(1, 3, 1, 1)
    onnx_inputs = [x] if axes is None else [x, i64(*axes)]
    check("Squeeze", [x], SqueezeAttrs(axes), "Squeeze", onnx_inputs)


@pytest.mark.parametrize("axes", [(0,), (-1,), (1, 3), (0, -1)])
def test_unsqueeze(axes):
    x = randn(3, 4)
    check("Unsqueeze", [x], UnsqueezeAttrs(axes), "Unsqueeze", [x, i64(*axes)])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for k, s in enumerate(shapes):
        s[axis] = k + 1
    xs = [randn(*s, seed=41 + k) for k, s in enumerate(shapes)]
    check("Concat", xs, ConcatAttrs(axis), "Concat", None, {"axis": axis})


@pytest.mark.parametrize("axis,sizes", [(0, (1, 3)), (1, (2, 0, 3)), (-1, (4,))])
def test_split(axis, sizes):
    x = randn(4, 5, 4)
    check("Split", [x], SplitAttrs(axis, sizes), "Split", [x, i64(*sizes)], {"axis": axis}, n_out=len(sizes))


BIG = 2 ** 63 - 1
SLICE_CASES = [
    ((0, 1), (3, 4), None, None),
    ((-3,), (BIG,), (1,), None),
    ((10, -1), (-BIG, 0), (0, 2), (-1, -2)),          # negative steps, clamping of huge values
    ((4, 1), (-100, 100), (1, -1), (-2, 3)),
    ((1,), (1,), (2,), None),                         # empty result
    ((-1,), (-6,), (0,), (-1,)),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICE_CASES)
def test_slice(starts, ends, axes, steps):
    x = randn(5, 6, 7, seed=44)
    inputs = [x, i64(*starts), i64(*ends), None if axes is None else i64(*axes),
              None if steps is None else i64(*steps)]
    while inputs[-1] is None:
        inputs.pop()
    if len(inputs) == 5 and inputs[3] is None:
        inputs[3] = i64(*range(len(starts)))
    check("Slice", inputs, None, "Slice", consts=set(range(1, len(inputs))))


@pytest.mark.parametrize("shape,target", [((3, 1), (2, 3, 4)), ((1, 4), (3, 1)), ((2, 1, 3), (2, 5, 3)),
                                          ((3,), ())])
def test_expand(shape, target):
    check("Expand", [randn(*shape), np.array(target, np.int64)], None, "Expand", consts={1})


@pytest.mark.parametrize("reps", [(1, 1), (2, 3), (0, 2)])
def test_tile(reps):
    check("Tile", [randn(2, 3), i64(*reps)], None, "Tile", consts={1})


PAD_CASES = [((1, 0, 2, 0, 3, 1), "constant", 1.5), ((2, 1, 0, 1, 2, 2), "reflect", 0.0),
             ((0, 3, 1, 2, 0, 4), "edge", 0.0), ((1, 2, 0, 0, 3, 1), "wrap", 0.0),
             ((-1, 1, 0, 1, -2, 2), "constant", -2.0)]


@pytest.mark.parametrize("pads,mode,value", PAD_CASES)
def test_pad(pads, mode, value):
    x = randn(3, 4, 5, seed=45)
    # ONNX's reference Pad cannot crop (negative pads); ORT can
    check("Pad", [x], PadAttrs(pads, mode, value), "Pad", [x, i64(*pads), np.array(value, np.float32)],
          {"mode": mode}, engine="ort" if min(pads) < 0 else "reference")


@pytest.mark.parametrize("start,end", [(0, None), (1, None), (-2, None), (0, -1), (1, 2), (5, None)])
def test_shape(start, end):
    attrs = {"start": start} | ({} if end is None else {"end": end})
    check("Shape", [randn(2, 3, 4)], ShapeAttrs(start, end), "Shape", None, attrs)


def test_size():
    check("Size", [randn(2, 3, 4)], None, "Size")


@pytest.mark.parametrize("value,dtype", [(0.0, DType.float32), (3, DType.int64), (True, DType.bool)])
def test_constant_of_shape(value, dtype):
    tensor = helper.make_tensor("value", helper.np_dtype_to_tensor_dtype(dtype.np), [1], [value])
    check("ConstantOfShape", [i64(2, 3)], ConstantOfShapeAttrs(value, dtype), "ConstantOfShape", None,
          {"value": tensor}, consts={0})


@pytest.mark.parametrize("start,limit,delta,dtype", [(0, 10, 3, np.int64), (10, 2, -2, np.int32),
                                                     (1.5, 4.0, 0.7, np.float32), (5, 5, 1, np.int64)])
def test_range(start, limit, delta, dtype):
    xs = [np.array(v, dtype) for v in (start, limit, delta)]
    check("Range", xs, None, "Range", consts={0, 1, 2})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    check("DepthToSpace", [randn(2, 8, 3, 5)], DepthToSpaceAttrs(2, mode), "DepthToSpace", None,
          {"blocksize": 2, "mode": mode})


def test_space_to_depth():
    check("SpaceToDepth", [randn(2, 3, 6, 9)], SpaceToDepthAttrs(3), "SpaceToDepth", None, {"blocksize": 3})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_is_inverted_by_depth_to_space_of_the_same_mode(mode):
    x = randn(2, 3, 4, 6)
    (packed,) = run_ir("SpaceToDepth", [x], SpaceToDepthAttrs(2, mode))
    (back,) = run_ir("DepthToSpace", [packed], DepthToSpaceAttrs(2, mode))
    np.testing.assert_array_equal(back, x)
    other = "CRD" if mode == "DCR" else "DCR"
    (mixed,) = run_ir("DepthToSpace", [packed], DepthToSpaceAttrs(2, other))
    assert not np.array_equal(mixed, x)


# ---- indexing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,idx_shape", [(0, (4,)), (1, (2, 3)), (-1, ()), (2, (5, 1))])
def test_gather_negative_indices(axis, idx_shape):
    x = randn(4, 5, 6)
    n = x.shape[axis]
    idx = rng(50).integers(-n, n, idx_shape).astype(np.int64)
    check("Gather", [x, idx], GatherAttrs(axis), "Gather", None, {"axis": axis})


def test_gather_out_of_range_is_an_error():
    with pytest.raises(IndexError, match="out of range"):
        get_op("Gather").reference([randn(3), i64(3)], GatherAttrs(0))


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("smaller", [False, True])
def test_gather_elements(axis, smaller):
    x = randn(4, 5, 3)
    shape = [3, 4, 2] if smaller else [4, 5, 3]
    shape[axis] = 6
    idx = rng(51).integers(-x.shape[axis], x.shape[axis], shape).astype(np.int64)
    # ONNX's reference evaluator requires equal non-axis dims and a non-negative axis; the spec and ORT don't
    check("GatherElements", [x, idx], GatherElementsAttrs(axis), "GatherElements", None, {"axis": axis},
          engine="ort" if smaller or axis < 0 else "reference")


@pytest.mark.parametrize("k,axis,largest", [(3, -1, True), (2, 0, False), (5, 1, True), (0, 1, True)])
def test_topk_with_ties(k, axis, largest):
    x = rng(52).integers(0, 4, (4, 6, 5)).astype(np.float32)     # many ties: ONNX keeps lower index first
    check("TopK", [x], TopKAttrs(k, axis, largest), "TopK", [x, i64(k)],
          {"axis": axis, "largest": int(largest), "sorted": 1}, n_out=2)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis):
    idx = np.array([[0, 2, -1], [5, -4, 1]], np.int64)      # 5 and -4 are out of range for depth 3: all off
    check("OneHot", [idx, np.array(3, np.int64), np.array([-1.0, 2.0], np.float32)], OneHotAttrs(axis),
          "OneHot", None, {"axis": axis}, consts={1})


@pytest.mark.parametrize("upper,k", [(True, None), (False, 1), (True, -2)])
def test_trilu(upper, k):
    x = randn(2, 4, 5)
    inputs = [x] if k is None else [x, np.array(k, np.int64)]
    check("Trilu", inputs, TriluAttrs(upper), "Trilu", None, {"upper": int(upper)})


# ---- fused ops ---------------------------------------------------------------------------------
ACTIVATION_AS_ONNX = {  # kind -> (ONNX op, attrs) computing the same function
    "relu": ("Relu", {}), "leaky_relu": ("LeakyRelu", {"alpha": 0.2}), "gelu": ("Gelu", {}),
    "gelu_tanh": ("Gelu", {"approximate": "tanh"}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
}


@pytest.mark.parametrize("kind", list(ACTIVATION_AS_ONNX) + ["silu", "clip", "none"])
def test_activation_apply_matches_onnx_ops(kind):
    x = randn(5, 7, seed=60) * 3
    act = Activation(kind, alpha=0.2 if kind == "leaky_relu" else (-1.0 if kind == "clip" else 0.0),
                     beta=0.5 if kind == "clip" else 0.0)
    got = act.apply(x)
    assert got.dtype == np.float32
    if kind in ACTIVATION_AS_ONNX:
        op, attrs = ACTIVATION_AS_ONNX[kind]
        (want,) = run_onnx(op, [x], attrs, opset=20)
    elif kind == "silu":
        want = x / (1 + np.exp(-x.astype(np.float64)))
    elif kind == "clip":
        want = np.clip(x, -1.0, 0.5)
    else:
        want = x
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _unfused_gemm(a, b, bias, residual, attrs: FusedGemmAttrs):
    a = np.swapaxes(a, -1, -2) if attrs.trans_a else a
    b = np.swapaxes(b, -1, -2) if attrs.trans_b else b
    (y,) = run_onnx("MatMul", [a, b])
    y = attrs.alpha * y
    if bias is not None:
        y = y + attrs.beta * bias
    if residual is not None:
        y = y + residual
    return attrs.activation.apply(y.astype(np.float32))


@pytest.mark.parametrize("sa,sb,ta,tb,bias,residual", [
    ((3, 5), (5, 7), False, False, (7,), None),
    ((2, 5, 3), (7, 5), True, True, (1, 7), (2, 3, 7)),
    ((4, 3, 6), (6, 2), False, False, None, (4, 3, 2)),
])
def test_fused_gemm_matches_unfused(sa, sb, ta, tb, bias, residual):
    a, b = randn(*sa, seed=61), randn(*sb, seed=62)
    bv = randn(*bias, seed=63) if bias else None
    rv = randn(*residual, seed=64) if residual else None
    attrs = FusedGemmAttrs(ta, tb, 0.5, 2.0, Activation("gelu"))
    (got,) = run_ir("FusedGemm", [a, b, bv, rv], attrs)
    np.testing.assert_allclose(got, _unfused_gemm(a, b, bv, rv, attrs), rtol=1e-5, atol=1e-5)


def test_fused_gemm_bf16_compute_rounds_operands():
    a, b = randn(8, 33, seed=65), randn(33, 9, seed=66)
    attrs = FusedGemmAttrs(compute=DType.bfloat16)
    (got,) = run_ir("FusedGemm", [a, b], attrs)
    a16 = a.astype(ml_dtypes.bfloat16).astype(np.float64)
    b16 = b.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_allclose(got, a16 @ b16, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(got - a @ b)) > 1e-4      # really differs from the fp32 product


def test_fused_conv_matches_conv_then_epilogue():
    x, w, b = randn(2, 4, 9, 8, seed=67), randn(6, 2, 3, 3, seed=68), randn(6, seed=69)
    conv = ConvAttrs((3, 3), (2, 1), (1, 0, 1, 2), (1, 2), 2)
    (y,) = run_ir("Conv", [x, w, b], conv)
    r = randn(*y.shape, seed=70)
    attrs = FusedConvAttrs(conv, Activation("clip", 0.0, 6.0))
    (got,) = run_ir("FusedConv", [x, w, b, r], attrs)
    np.testing.assert_allclose(got, np.clip(y + r, 0, 6), rtol=1e-5, atol=1e-5)


def test_fused_elementwise_composes_registry_references():
    x, s, b = randn(3, 4, seed=71), randn(4, seed=72), randn(3, 1, seed=73)
    steps = (Step("Mul", (0, 1)), Step("Add", (3, 2)), Step("LeakyRelu", (4,), AlphaAttrs(0.3)),
             Step("Sigmoid", (5,)), Step("Greater", (6, 0)))
    (got,) = run_ir("FusedElementwise", [x, s, b], FusedElementwiseAttrs(steps))
    t = x * s + b
    t = np.where(t >= 0, t, 0.3 * t)
    np.testing.assert_array_equal(got, (1 / (1 + np.exp(-t))) > x)


def test_fused_elementwise_rounds_intermediates_to_step_dtype():
    x = randn(64, seed=74)
    steps = (Step("Cast", (0,), CastAttrs(DType.bfloat16)), Step("Mul", (1, 1)), Step("Cast", (2,), CastAttrs(DType.float32)))
    (got,) = run_ir("FusedElementwise", [x], FusedElementwiseAttrs(steps))
    xb = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got, (xb * xb).astype(ml_dtypes.bfloat16).astype(np.float32))


def test_fused_elementwise_on_bf16_inputs_matches_the_unfused_graph_exactly():
    """Without an explicit Cast inside the chain, bf16 inputs still round after every step, as unfused."""
    from accelc.ir import evaluate
    rng = np.random.default_rng(75)
    xs = [rng.standard_normal(33).astype(ml_dtypes.bfloat16) for _ in range(2)]
    unfused, fused = Graph(), Graph()
    a, b = (unfused.add_input(n, TensorType(DType.bfloat16, (33,))) for n in "ab")
    (m,) = unfused.add_node("Mul", [a, b])
    (y,) = unfused.add_node("Add", [m, a])
    unfused.outputs = [y]
    fa, fb = (fused.add_input(n, TensorType(DType.bfloat16, (33,))) for n in "ab")
    (fy,) = fused.add_node("FusedElementwise", [fa, fb],
                           FusedElementwiseAttrs((Step("Mul", (0, 1)), Step("Add", (2, 0)))))
    fused.outputs = [fy]
    assert fused.types[fy].dtype is DType.bfloat16
    want = evaluate(unfused, {"a": xs[0], "b": xs[1]})[y]
    got = evaluate(fused, {"a": xs[0], "b": xs[1]})[fy]
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_fused_elementwise_rejects_bad_register():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (2,)))
    with pytest.raises(ShapeError, match="register 3"):
        g.add_node("FusedElementwise", [x], FusedElementwiseAttrs((Step("Add", (0, 3)),)))


# ---- elementwise ops (elementwise.py) against ONNX ---------------------------------------------
_UNARY_DOMAIN = {  # inputs that keep each op inside its domain
    "Log": lambda x: np.abs(x) + 0.1, "Sqrt": lambda x: np.abs(x), "Reciprocal": lambda x: np.abs(x) + 0.5,
    "Asin": lambda x: np.tanh(x), "Acos": lambda x: np.tanh(x), "Atanh": lambda x: np.tanh(x) * 0.9,
    "Acosh": lambda x: np.abs(x) + 1.0, "Round": lambda x: np.round(x * 2) / 2,   # exact halves: ties to even
}
_ONNX_NAME = {"Silu": None}   # no ONNX op of that name; checked against its formula below


@pytest.mark.parametrize("op", sorted(set(UNARY) - {"Not", "IsNaN"}))
def test_unary_elementwise_matches_onnx(op):
    x = _UNARY_DOMAIN.get(op, lambda v: v)(randn(3, 7, seed=80) * 2).astype(np.float32)
    if op == "Silu":
        (got,) = run_ir(op, [x])
        np.testing.assert_allclose(got, x / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
        return
    check(op, [x], None, op, rtol=1e-5, atol=1e-6, opset=22 if op == "Mish" else OPSET)


def test_not_and_isnan():
    check("Not", [rng(81).random((3, 4)) > 0.5], None, "Not")
    check("IsNaN", [np.array([1.0, np.nan, np.inf], np.float32)], None, "IsNaN")


@pytest.mark.parametrize("op,attrs,onnx_attrs", [
    ("LeakyRelu", AlphaAttrs(0.1), {"alpha": 0.1}), ("Elu", AlphaAttrs(0.7), {"alpha": 0.7}),
    ("Celu", AlphaAttrs(1.3), {"alpha": 1.3}), ("ThresholdedRelu", AlphaAttrs(0.4), {"alpha": 0.4}),
    ("HardSigmoid", AlphaBetaAttrs(0.3, 0.4), {"alpha": 0.3, "beta": 0.4}), ("Selu", SeluAttrs(), {}),
    ("Gelu", GeluAttrs(), {}), ("Gelu", GeluAttrs("tanh"), {"approximate": "tanh"}),
])
def test_unary_with_attrs_matches_onnx(op, attrs, onnx_attrs):
    check(op, [randn(4, 5, seed=82) * 2], attrs, op, None, onnx_attrs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.5), (None, 0.2), (0.1, None)])
def test_clip(lo, hi):
    x = randn(3, 4, seed=83)
    inputs = [x, None if lo is None else np.array(lo, np.float32), None if hi is None else np.array(hi, np.float32)]
    while inputs[-1] is None:
        inputs.pop()
    check("Clip", inputs, None, "Clip")


_FLOAT_BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu", "Pow"]
_INT_BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "BitwiseAnd", "BitwiseOr", "BitwiseXor"]


@pytest.mark.parametrize("op", _FLOAT_BINARY + sorted(COMPARE))
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((2, 1, 4), (3, 1)), ((5,), ())])
def test_binary_float_broadcasting(op, sa, sb):
    a, b = randn(*sa, seed=84), randn(*sb, seed=85)
    if op == "Pow":
        a = np.abs(a) + 0.1
    if op == "PRelu" and len(sb) > len(sa):
        return                                          # PRelu broadcasts the slope to x only
    check(op, [a, b], None, op, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", _INT_BINARY)
def test_binary_int(op):
    a = rng(86).integers(-20, 20, (3, 5)).astype(np.int32)
    b = rng(87).integers(1, 7, (5,)).astype(np.int32) * np.array([1, -1, 1, -1, 1], np.int32)
    check(op, [a, b], None, op)


@pytest.mark.parametrize("fmod,op", [(1, "Mod"), (0, "FloorMod")])
def test_mod(fmod, op):
    a = rng(88).integers(-20, 20, (4, 5)).astype(np.int64)
    b = (rng(89).integers(1, 6, (5,)) * np.array([1, -1, 1, -1, 1])).astype(np.int64)
    got = run_ir(op, [a, b])[0]
    np.testing.assert_array_equal(got, run_onnx("Mod", [a, b], {"fmod": fmod})[0])
    af, bf = randn(4, 5, seed=90), randn(5, seed=91)
    if fmod:
        check(op, [af, bf], None, "Mod", None, {"fmod": 1})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical(op):
    a, b = rng(92).random((3, 4)) > 0.5, rng(93).random((4,)) > 0.5
    check(op, [a, b], None, op)


def test_where():
    c = rng(94).random((3, 1)) > 0.5
    check("Where", [c, randn(1, 4, seed=95), randn(3, 4, seed=96)], None, "Where")


@pytest.mark.parametrize("src,dst", [(np.float32, DType.int32), (np.float32, DType.float16),
                                     (np.int64, DType.float32), (np.float32, DType.bool)])
def test_cast(src, dst):
    x = (randn(4, 5, seed=97) * 10).astype(src)
    check("Cast", [x], CastAttrs(dst), "Cast", None, {"to": helper.np_dtype_to_tensor_dtype(dst.np)})


# ---- attrs validation --------------------------------------------------------------------------
@pytest.mark.parametrize("make,field", [
    (lambda: ConvAttrs(pads=(1, 1, 1)), "pads"),
    (lambda: ConvAttrs(strides=(0, 1)), "strides"),
    (lambda: ConvAttrs(group=0), "group"),
    (lambda: ConvAttrs((3, 3), strides=(1,)), "disagree"),
    (lambda: PoolAttrs(), "kernel_shape"),
    (lambda: ReduceAttrs(axes=(1, 1)), "axes"),
    (lambda: ReduceAttrs(axes=[0]), "axes"),
    (lambda: ArgReduceAttrs(axis=1.0), "axis"),
    (lambda: LayerNormAttrs(epsilon=0.0), "epsilon"),
    (lambda: LRNAttrs(size=0), "size"),
    (lambda: GemmAttrs(trans_a=1), "trans_a"),
    (lambda: TransposeAttrs((0, 2)), "perm"),
    (lambda: SplitAttrs(0, ()), "sizes"),
    (lambda: PadAttrs((1, 2, 3)), "pads"),
    (lambda: PadAttrs((1, 1), mode="mirror"), "mode"),
    (lambda: UnsqueezeAttrs(()), "axes"),
    (lambda: DepthToSpaceAttrs(2, "XYZ"), "mode"),
    (lambda: TopKAttrs(-1), "k"),
    (lambda: Activation("swish"), "kind"),
    (lambda: Activation("clip", 1.0, 0.0), "alpha"),
    (lambda: FusedGemmAttrs(compute=DType.float64), "compute"),
    (lambda: FusedConvAttrs(conv=GemmAttrs()), "conv"),
    (lambda: Step("MatMul", (0, 1)), "elementwise"),
    (lambda: Step("Add", ()), "args"),
    (lambda: FusedElementwiseAttrs(()), "steps"),
])
def test_attrs_validation_names_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_attrs_are_hashable_and_compare_structurally():
    a = FusedConvAttrs(ConvAttrs((3, 3), (1, 1), (1, 1, 1, 1)), Activation("relu"))
    b = FusedConvAttrs(ConvAttrs((3, 3), (1, 1), (1, 1, 1, 1)), Activation("relu"))
    assert a == b and hash(a) == hash(b)
    assert hash(FusedElementwiseAttrs((Step("LeakyRelu", (0,), AlphaAttrs(0.2)),)))


# ---- shape inference: symbolic dims and bad shapes ---------------------------------------------
def _infer(op, types, attrs=None, consts=None):
    g = Graph()
    names = []
    for i, t in enumerate(types):
        if consts and consts.get(i) is not None:
            names.append(g.add_constant(consts[i], f"c{i}"))
        else:
            names.append(g.add_input(f"x{i}", t))
    outs = g.add_node(op, names, attrs)
    return [g.types[o] for o in outs]


def f32(*shape):
    return TensorType(DType.float32, tuple(shape))


def test_symbolic_batch_flows_through_conv_pool_and_matmul():
    (y,) = _infer("Conv", [f32("n", 3, 224, 224), f32(64, 3, 7, 7)], ConvAttrs((7, 7), (2, 2), (3, 3, 3, 3)))
    assert y.shape == ("n", 64, 112, 112)
    (p,) = _infer("MaxPool", [f32("n", 64, 112, 112)], PoolAttrs((3, 3), (2, 2), (1, 1, 1, 1)))
    assert p.shape == ("n", 64, 56, 56)
    (m,) = _infer("MatMul", [f32("b", "s", 64), f32(64, 10)])
    assert m.shape == ("b", "s", 10)
    (r,) = _infer("ReduceMean", [f32("b", "s", 64)], ReduceAttrs((-1,), True))
    assert r.shape == ("b", "s", 1)


def test_reshape_with_symbolic_batch_and_constant_shape():
    (y,) = _infer("Reshape", [f32("n", 2, 3), TensorType(DType.int64, (2,))], ReshapeAttrs(),
                  {1: i64(0, -1)})
    assert y.shape == ("n", 6)
    (z,) = _infer("Reshape", [f32("n", 2, 3), TensorType(DType.int64, (2,))], ReshapeAttrs(), {1: i64(-1, 3)})
    assert z.shape[1] == 3 and isinstance(z.shape[0], str)


def test_computed_shape_operands_give_fresh_symbolic_dims():
    (y,) = _infer("Reshape", [f32(2, 3), TensorType(DType.int64, (3,))], ReshapeAttrs())
    assert len(y.shape) == 3 and all(isinstance(d, str) for d in y.shape)
    (s,) = _infer("Slice", [f32(5, 6), TensorType(DType.int64, (1,)), TensorType(DType.int64, (1,)),
                            TensorType(DType.int64, (1,))], None, {3: i64(1)})
    assert s.shape[0] == 5 and isinstance(s.shape[1], str)
    (e,) = _infer("Expand", [f32(3, 1), TensorType(DType.int64, (3,))])
    assert len(e.shape) == 3
    (c,) = _infer("ConstantOfShape", [TensorType(DType.int64, (2,))], ConstantOfShapeAttrs())
    assert len(c.shape) == 2
    (r,) = _infer("Range", [TensorType(DType.int64, ())] * 3)
    assert len(r.shape) == 1 and isinstance(r.shape[0], str)
    (t,) = _infer("Tile", [f32(2, 3), TensorType(DType.int64, (2,))])
    assert all(isinstance(d, str) for d in t.shape)


@pytest.mark.parametrize("op,types,attrs,consts,match", [
    ("Conv", [f32(1, 4, 8, 8), f32(6, 3, 3, 3)], ConvAttrs(), None, "channels"),
    ("Conv", [f32(1, 4, 2, 2), f32(6, 4, 3, 3)], ConvAttrs(), None, "smaller than the window"),
    ("MatMul", [f32(2, 3), f32(4, 5)], None, None, "contraction"),
    ("Gemm", [f32(2, 3, 4), f32(4, 5)], GemmAttrs(), None, "2-D"),
    ("Reshape", [f32(2, 3), TensorType(DType.int64, (2,))], ReshapeAttrs(), {1: i64(4, -1)}, "cannot infer"),
    ("Reshape", [f32(2, 3), TensorType(DType.int64, (2,))], ReshapeAttrs(), {1: i64(-1, -1)}, "more than one"),
    ("Concat", [f32(2, 3), f32(3, 3)], ConcatAttrs(1), None, "differ on axis 0"),
    ("Split", [f32(5, 2)], SplitAttrs(0, (2, 2)), None, "sum to 4"),
    ("Squeeze", [f32(2, 3)], SqueezeAttrs((0,)), None, "not 1"),
    ("ReduceSum", [f32(2, 3)], ReduceAttrs((2,)), None, "out of range"),
    ("TopK", [f32(2, 3)], TopKAttrs(4), None, "exceeds"),
    ("Pad", [f32(2, 3)], PadAttrs((1, 1)), None, "2 x rank"),
    ("Softmax", [TensorType(DType.int32, (2, 3))], SoftmaxAttrs(), None, "floating-point"),
    ("BatchNormalization", [f32(2, 3, 4), f32(4), f32(3), f32(3), f32(3)], BatchNormAttrs(), None, "per channel"),
])
def test_bad_shapes_raise_shape_error(op, types, attrs, consts, match):
    with pytest.raises(ShapeError, match=match):
        _infer(op, types, attrs, consts)


def test_every_registered_op_is_covered_here():
    """A new op without a test in this file fails here: add a case above when you register one."""
    import pathlib
    text = pathlib.Path(__file__).read_text()
    from accelc.ir import all_ops
    tabled = set(UNARY) | set(COMPARE) | set(BINARY)   # tested table-driven above
    missing = [name for name in all_ops() if f'"{name}"' not in text and name not in tabled]
    assert not missing, f"ops without a test in test_ops.py: {missing}"
