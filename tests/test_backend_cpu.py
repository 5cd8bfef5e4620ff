"""The cpu_amx backend: generated C++ vs the reference interpreter, the C ABI, variants and the build cache.

Models are built for target ``host`` (the best variant this machine runs) unless a test is about variants.
A small ctypes loader below calls the library's C ABI directly, so these tests do not depend on
accelc.runtime. Tests marked ``amx`` need a CPU with AMX and are skipped elsewhere.
"""
from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import accelc
from accelc.backends.base import BackendOptions
from accelc.backends.cpu_amx import CpuAmxBackend
from accelc.backends.cpu_amx import isa
from accelc.errors import BackendError, ShapeError
from accelc.ir import DType, Graph, TensorType, evaluate
from accelc.ir.ops.conv import ConvAttrs, PoolAttrs
from accelc.ir.ops.elementwise import AlphaAttrs, CastAttrs, GeluAttrs
from accelc.ir.ops.fused import Activation, FusedConvAttrs, FusedElementwiseAttrs, FusedGemmAttrs, Step
from accelc.ir.ops.indexing import GatherAttrs, GatherElementsAttrs, TopKAttrs
from accelc.ir.ops.linalg import GemmAttrs
from accelc.ir.ops.normalization import (BatchNormAttrs, InstanceNormAttrs, LayerNormAttrs, LRNAttrs,
                                         SoftmaxAttrs)
from accelc.ir.ops.reduce import ArgReduceAttrs, CumSumAttrs, ReduceAttrs
from accelc.ir.ops.shape import (ConcatAttrs, ConstantOfShapeAttrs, DepthToSpaceAttrs, FlattenAttrs, PadAttrs,
                                 ReshapeAttrs, SpaceToDepthAttrs, SplitAttrs, SqueezeAttrs, TransposeAttrs,
                                 UnsqueezeAttrs)
from accelc.targets import get_target

HOST_FLAGS = isa.cpu_flags()
HAS_AMX = "amx_bf16" in HOST_FLAGS
amx = pytest.mark.amx
needs_amx = pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX (amx_bf16)")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    # one cache for the session: the kernel library is compiled once per variant
    return str(tmp_path_factory.mktemp("accelc_cache"))


# ---- a tiny ctypes loader for the C ABI --------------------------------------------------------------------
class Loaded:
    def __init__(self, parts, tmp: Path, threads: int = 0):
        self.dir = tmp
        for name, data in parts.files.items():
            p = tmp / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        self.lib = lib = ctypes.CDLL(str(tmp / "model.so"))
        lib.accelc_signature_json.restype = ctypes.c_char_p
        lib.accelc_variants.restype = ctypes.c_char_p
        lib.accelc_select_variant.restype = ctypes.c_char_p
        lib.accelc_last_error.restype = ctypes.c_char_p
        lib.accelc_model_variant.restype = ctypes.c_char_p
        lib.accelc_model_variant.argtypes = [ctypes.c_void_p]
        lib.accelc_create.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
        lib.accelc_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.accelc_destroy.argtypes = [ctypes.c_void_p]
        self.signature = json.loads(lib.accelc_signature_json())
        self.weights = parts.files["weights.bin"]
        self.handle = ctypes.c_void_p()
        self.create_rc = lib.accelc_create(self.weights, len(self.weights), threads, ctypes.byref(self.handle))
        self.error = lib.accelc_last_error().decode()

    @property
    def variant(self) -> str:
        return self.lib.accelc_model_variant(self.handle).decode()

    def __call__(self, feeds: dict) -> dict:
        assert self.create_rc == 0, self.error
        ins = []
        for e in self.signature["inputs"]:
            ins.append(np.ascontiguousarray(np.asarray(feeds[e["name"]]).astype(DType.parse(e["dtype"]).np)))
        outs = [np.empty(e["shape"], DType.parse(e["dtype"]).np) for e in self.signature["outputs"]]
        in_ptrs = (ctypes.c_void_p * max(len(ins), 1))(*[a.ctypes.data for a in ins])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[a.ctypes.data for a in outs])
        rc = self.lib.accelc_run(self.handle, in_ptrs, out_ptrs)
        if rc != 0:
            raise RuntimeError(f"accelc_run returned {rc}: {self.lib.accelc_last_error().decode()}")
        return {e["name"]: a for e, a in zip(self.signature["outputs"], outs)}

    def close(self):
        if self.handle:
            self.lib.accelc_destroy(self.handle)
            self.handle = ctypes.c_void_p()


def build(graph: Graph, tmp_path: Path, cache_dir: str, target: str = "host", threads: int = 0):
    parts = CpuAmxBackend().lower(graph, get_target(target), BackendOptions(threads=threads, cache_dir=cache_dir))
    return parts, Loaded(parts, tmp_path, threads)


def random_feeds(graph: Graph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        t = graph.types[v]
        shape = tuple(t.shape)
        if t.dtype == DType.bool:
            feeds[v] = rng.random(shape) < 0.5
        elif t.dtype.is_int:
            info = np.iinfo(t.dtype.np)
            lo, hi = max(info.min, -50), min(info.max, 50)
            feeds[v] = rng.integers(lo, hi + 1, size=shape).astype(t.dtype.np)
        else:
            feeds[v] = rng.standard_normal(shape).astype(np.float32).astype(t.dtype.np)
    return feeds


TOL = {DType.float32: (2e-5, 2e-5), DType.float16: (2e-3, 2e-3), DType.bfloat16: (1.6e-2, 1.6e-2),
       DType.float64: (1e-12, 1e-12)}


def check(graph: Graph, tmp_path: Path, cache_dir: str, feeds=None, tol=None, target="host"):
    feeds = feeds if feeds is not None else random_feeds(graph)
    expected = evaluate(graph, feeds)
    _, model = build(graph, tmp_path, cache_dir, target)
    try:
        got = model(feeds)
    finally:
        model.close()
    for name in graph.outputs:
        e, g = np.asarray(expected[name]), got[name]
        assert g.shape == e.shape, (name, g.shape, e.shape)
        dt = graph.types[name].dtype
        if dt in TOL or tol is not None:
            rtol, atol = tol or TOL[dt]
            np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(g, e, err_msg=name)
    return got


def graph_with_inputs(*specs) -> tuple[Graph, list[str]]:
    g = Graph("t")
    names = [g.add_input(f"in{k}", TensorType(dt, tuple(shape))) for k, (dt, shape) in enumerate(specs)]
    return g, names


F32, F16, BF16 = DType.float32, DType.float16, DType.bfloat16


# ---- smoke ------------------------------------------------------------------------------------------------
def test_add_relu_smoke(tmp_path, cache_dir):
    g, (a, b) = graph_with_inputs((F32, (3, 5)), (F32, (5,)))
    (s,) = g.add_node("Add", [a, b])
    (r,) = g.add_node("Relu", [s])
    g.outputs = [r]
    check(g, tmp_path, cache_dir)


# ---- elementwise ------------------------------------------------------------------------------------------
UNARY_OPS = ["Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
             "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Erf", "Relu", "Sigmoid",
             "Tanh", "Softplus", "Softsign", "HardSwish", "Mish", "Silu", "IsNaN"]


def test_unary_ops_f32(tmp_path, cache_dir):
    g, (x,) = graph_with_inputs((F32, (2, 3, 37)))
    outs = []
    for op in UNARY_OPS:
        outs += g.add_node(op, [x], name=op.lower())
    for op, attrs in [("LeakyRelu", AlphaAttrs(0.1)), ("Elu", AlphaAttrs(0.7)), ("Celu", AlphaAttrs(1.3)),
                      ("ThresholdedRelu", AlphaAttrs(0.2)), ("Gelu", GeluAttrs()), ("Gelu", GeluAttrs("tanh"))]:
        outs += g.add_node(op, [x], attrs)
    outs += g.add_node("HardSigmoid", [x])
    outs += g.add_node("Selu", [x])
    g.outputs = outs
    feeds = random_feeds(g)
    feeds[x][0, 0, :5] = [0.5, -0.5, 1.5, 2.5, -2.5]  # Round half to even
    check(g, tmp_path, cache_dir, feeds, tol=(2e-5, 1e-5))


@pytest.mark.parametrize("shapes", [((4, 5), (4, 5)), ((4, 5), (5,)), ((4, 1), (1, 5)), ((2, 3, 4, 5), (3, 1, 1)),
                                    ((1,), (7, 3)), ((), (2, 2)), ((2, 1, 6), (2, 6, 1)), ((70, 33, 17), (33, 1))])
def test_binary_broadcasting(tmp_path, cache_dir, shapes):
    g, (a, b) = graph_with_inputs((F32, shapes[0]), (F32, shapes[1]))
    outs = []
    for op in ["Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu", "Mod", "FloorMod", "Equal", "Less",
               "GreaterOrEqual"]:
        outs += g.add_node(op, [a, b])
    (absb,) = g.add_node("Abs", [b])
    outs += g.add_node("Pow", [a, absb])
    g.outputs = outs
    check(g, tmp_path, cache_dir)


@pytest.mark.parametrize("dtype", [DType.int8, DType.uint8, DType.int32, DType.int64])
def test_integer_elementwise(tmp_path, cache_dir, dtype):
    g, (a, b) = graph_with_inputs((dtype, (3, 17)), (dtype, (17,)))
    outs = []
    for op in ["Add", "Sub", "Mul", "Div", "Max", "Min", "Mod", "FloorMod", "BitwiseAnd", "BitwiseOr",
               "BitwiseXor", "Equal", "Greater", "LessOrEqual"]:
        outs += g.add_node(op, [a, b])
    for op in ["Neg", "Abs", "Sign", "Relu"]:
        outs += g.add_node(op, [a])
    outs += g.add_node("Cast", [a], CastAttrs(DType.float32))
    g.outputs = outs
    feeds = random_feeds(g, seed=3)
    feeds[b][:3] = 0   # division and modulo by zero follow the references
    check(g, tmp_path, cache_dir, feeds)


def test_bool_ops_and_where(tmp_path, cache_dir):
    g, (p, q, x, y) = graph_with_inputs((DType.bool, (4, 9)), (DType.bool, (9,)), (F32, (4, 9)), (F32, (1, 9)))
    outs = []
    for op in ["And", "Or", "Xor", "Equal"]:
        outs += g.add_node(op, [p, q])
    outs += g.add_node("Not", [p])
    outs += g.add_node("Where", [p, x, y])
    (lt,) = g.add_node("Less", [x, y])
    outs += g.add_node("Where", [lt, x, y])
    outs += g.add_node("Cast", [x], CastAttrs(DType.bool))
    outs += g.add_node("Cast", [p], CastAttrs(DType.float32))
    g.outputs = outs
    check(g, tmp_path, cache_dir)


@pytest.mark.parametrize("src,dst", [(F32, DType.int32), (F32, DType.int8), (F32, DType.uint8), (F32, DType.int64),
                                     (F32, BF16), (F32, F16), (BF16, F32), (F16, F32), (DType.int64, F32),
                                     (DType.int32, DType.int8), (DType.int64, DType.int32), (BF16, F16)])
def test_cast(tmp_path, cache_dir, src, dst):
    g, (x,) = graph_with_inputs((src, (5, 13)))
    g.outputs = g.add_node("Cast", [x], CastAttrs(dst))
    feeds = random_feeds(g)
    if src == F32:
        feeds[x] = (feeds[x] * 100).astype(np.float32)
        feeds[x][0, :4] = [1e-8, 65504.0, 1e5, -7e-5]
    check(g, tmp_path, cache_dir, feeds, tol=(0, 0) if dst in (F16, BF16) else None)


def test_low_precision_elementwise(tmp_path, cache_dir):
    for k, dt in enumerate((F16, BF16)):
        g, (a, b) = graph_with_inputs((dt, (3, 40)), (dt, (40,)))
        (s,) = g.add_node("Add", [a, b])
        (e,) = g.add_node("Exp", [s])
        (c,) = g.add_node("Clip", [e, g.add_constant(np.array(0.5, dt.np)), g.add_constant(np.array(2.0, dt.np))])
        g.outputs = [s, c]
        d = tmp_path / str(k)
        d.mkdir()
        check(g, d, cache_dir, tol=(0, 0))   # one rounding per node, exactly as the reference


def test_clip_and_fused_elementwise(tmp_path, cache_dir):
    g, (x, b) = graph_with_inputs((F32, (2, 64, 33)), (F32, (64, 1)))
    lo = g.add_constant(np.array(-0.5, np.float32))
    outs = g.add_node("Clip", [x, lo, ""])
    steps = (Step("Add", (0, 1)), Step("Gelu", (2,), GeluAttrs()), Step("Mul", (3, 0)),
             Step("LeakyRelu", (4,), AlphaAttrs(0.2)), Step("Clip", (5, 2)))
    outs += g.add_node("FusedElementwise", [x, b], FusedElementwiseAttrs(steps))
    g.outputs = outs
    check(g, tmp_path, cache_dir)


def test_large_elementwise_parallel(tmp_path, cache_dir):
    g, (a, b) = graph_with_inputs((F32, (8, 96, 129)), (F32, (96, 1)))
    (s,) = g.add_node("Mul", [a, b])
    g.outputs = g.add_node("Tanh", [s])
    check(g, tmp_path, cache_dir)


# ---- reductions, normalization -----------------------------------------------------------------------------
@pytest.mark.parametrize("axes,keep", [(None, True), ((1,), False), ((0, 2), True), ((-1,), True), ((1, 2), False)])
def test_reductions(tmp_path, cache_dir, axes, keep):
    g, (x,) = graph_with_inputs((F32, (3, 7, 11)))
    (ax,) = g.add_node("Abs", [x])
    outs = []
    for op in ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceSumSquare", "ReduceLogSumExp"]:
        outs += g.add_node(op, [ax if op == "ReduceProd" else x], ReduceAttrs(axes, keep))
    g.outputs = outs
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-5))


def test_integer_reductions_argmax_cumsum(tmp_path, cache_dir):
    g, (x, f) = graph_with_inputs((DType.int32, (4, 9)), (F32, (4, 9, 5)))
    outs = g.add_node("ReduceSum", [x], ReduceAttrs((1,), False))
    outs += g.add_node("ReduceMax", [x], ReduceAttrs((0,), True))
    outs += g.add_node("ArgMax", [f], ArgReduceAttrs(1, False, False))
    outs += g.add_node("ArgMin", [f], ArgReduceAttrs(-1, True, True))
    outs += g.add_node("ArgMax", [x], ArgReduceAttrs(1, True, True))
    outs += g.add_node("CumSum", [f], CumSumAttrs(1, False, False))
    outs += g.add_node("CumSum", [x], CumSumAttrs(1, True, True))
    g.outputs = outs
    feeds = random_feeds(g)
    feeds[x][0, :] = 7    # ties: select_last_index decides
    check(g, tmp_path, cache_dir, feeds, tol=(1e-5, 1e-5))


def test_softmax_layernorm_batchnorm(tmp_path, cache_dir):
    g, (x, y) = graph_with_inputs((F32, (2, 5, 33)), (F32, (2, 6, 4, 5)))
    outs = g.add_node("Softmax", [x], SoftmaxAttrs(-1))
    outs += g.add_node("Softmax", [x], SoftmaxAttrs(1))
    outs += g.add_node("LogSoftmax", [x], SoftmaxAttrs(2))
    rng = np.random.default_rng(1)
    scale = g.add_constant(rng.standard_normal(33).astype(np.float32))
    bias = g.add_constant(rng.standard_normal(33).astype(np.float32))
    outs += g.add_node("LayerNormalization", [x, scale, bias], LayerNormAttrs(-1, 1e-5))[:1]
    c = [g.add_constant(v.astype(np.float32)) for v in
         (rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal(6), rng.random(6) + 0.5)]
    outs += g.add_node("BatchNormalization", [y] + c, BatchNormAttrs(1e-5))
    outs += g.add_node("InstanceNormalization", [y, c[0], c[1]], InstanceNormAttrs(1e-5))
    outs += g.add_node("LRN", [y], LRNAttrs(3, 1e-2, 0.75, 1.0))
    g.outputs = outs
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-5))


# ---- pooling ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs", [
    PoolAttrs(kernel_shape=(3, 3), strides=(2, 2)),
    PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True),
    PoolAttrs(kernel_shape=(2, 3), strides=(2, 1), pads=(1, 0, 0, 2), count_include_pad=True),
    PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True, count_include_pad=True),
    PoolAttrs(kernel_shape=(2, 2), dilations=(2, 2)),
])
def test_pooling_2d(tmp_path, cache_dir, attrs):
    g, (x,) = graph_with_inputs((F32, (2, 3, 10, 9)))
    outs = g.add_node("MaxPool", [x], attrs) + g.add_node("AveragePool", [x], attrs)
    outs += g.add_node("GlobalAveragePool", [x]) + g.add_node("GlobalMaxPool", [x])
    g.outputs = outs
    check(g, tmp_path, cache_dir)


def test_pooling_1d_3d(tmp_path, cache_dir):
    g, (x, z) = graph_with_inputs((F32, (2, 3, 17)), (F32, (1, 2, 5, 6, 7)))
    outs = g.add_node("MaxPool", [x], PoolAttrs(kernel_shape=(3,), strides=(2,), pads=(1, 1)))
    outs += g.add_node("AveragePool", [z], PoolAttrs(kernel_shape=(2, 2, 3), pads=(0, 1, 1, 1, 0, 1)))
    g.outputs = outs
    check(g, tmp_path, cache_dir)



# Vector paths of the pooling kernels: interior columns kW at a time (8 or 16 lanes), stride 1 and 2 with
# even/odd splitting, scalar borders, rows wider than a vector with tails.
@pytest.mark.parametrize("shape,attrs", [
    ((1, 5, 31, 37), PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),     # ResNet stem, odd
    ((2, 3, 32, 48), PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),     # ResNet stem, even
    ((1, 3, 12, 70), PoolAttrs(kernel_shape=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1))),
    ((1, 3, 12, 61), PoolAttrs(kernel_shape=(2, 2), strides=(2, 2))),
    ((1, 3, 13, 67), PoolAttrs(kernel_shape=(2, 4), strides=(2, 2), pads=(0, 1, 1, 2), ceil_mode=True)),
    ((1, 3, 13, 66), PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True,
                               count_include_pad=True)),
    ((1, 3, 11, 59), PoolAttrs(kernel_shape=(3, 3), strides=(2, 1), dilations=(2, 3), pads=(2, 1, 0, 2))),
    ((1, 3, 11, 75), PoolAttrs(kernel_shape=(2, 3), strides=(1, 2), dilations=(1, 2), pads=(0, 2, 1, 1),
                               ceil_mode=True)),
    ((1, 2, 7, 80), PoolAttrs(kernel_shape=(1, 5), strides=(1, 3), pads=(0, 2, 0, 2))),   # stride 3: scalar
    ((1, 2, 9, 20), PoolAttrs(kernel_shape=(3, 7), strides=(1, 1), pads=(1, 3, 1, 3))),
])
def test_pooling_2d_wide_rows(tmp_path, cache_dir, shape, attrs):
    g, (x,) = graph_with_inputs((F32, shape))
    outs = g.add_node("MaxPool", [x], attrs) + g.add_node("AveragePool", [x], attrs)
    g.outputs = outs
    feeds = random_feeds(g)
    got = check(g, tmp_path, cache_dir, feeds=feeds)
    # max pooling returns input values: exact
    np.testing.assert_array_equal(got[outs[0]], evaluate(g, feeds)[outs[0]])


def test_pooling_1d_3d_wide_rows(tmp_path, cache_dir):
    g, (x, z) = graph_with_inputs((F32, (2, 3, 71)), (F32, (1, 2, 5, 6, 41)))
    a1 = PoolAttrs(kernel_shape=(3,), strides=(2,), pads=(1, 1))
    a3 = PoolAttrs(kernel_shape=(2, 2, 3), strides=(1, 2, 2), pads=(0, 1, 1, 1, 0, 1), ceil_mode=True)
    outs = g.add_node("MaxPool", [x], a1) + g.add_node("AveragePool", [x], a1)
    outs += g.add_node("MaxPool", [z], a3) + g.add_node("AveragePool", [z], a3)
    outs += g.add_node("AveragePool", [z], PoolAttrs(kernel_shape=(2, 2, 3), pads=(1, 0, 1, 0, 1, 1),
                                                     count_include_pad=True))
    g.outputs = outs
    check(g, tmp_path, cache_dir)


@pytest.mark.parametrize("attrs", [
    PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    PoolAttrs(kernel_shape=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1)),
    PoolAttrs(kernel_shape=(2, 2), strides=(2, 2), ceil_mode=True),
])
def test_pooling_nan_inf(tmp_path, cache_dir, attrs):
    # NaN anywhere in a window makes the max NaN; -inf inputs are ordinary values (never beaten by pads);
    # +-0 ties
    g, (x,) = graph_with_inputs((F32, (2, 3, 14, 45)))
    outs = g.add_node("MaxPool", [x], attrs) + g.add_node("AveragePool", [x], attrs)
    outs += g.add_node("GlobalMaxPool", [x]) + g.add_node("GlobalAveragePool", [x])
    g.outputs = outs
    feeds = random_feeds(g)
    v = feeds[x]
    rng = np.random.default_rng(5)
    v[rng.random(v.shape) < 0.01] = np.nan
    v[rng.random(v.shape) < 0.05] = -np.inf
    v[0, 1] = -np.inf                        # a whole plane of -inf
    v[1, 2] = np.where(rng.random(v.shape[2:]) < 0.5, 0.0, -0.0)   # only zeros of both signs
    v[1, 2, 3, 7] = -1.0
    v[0, 2, :, 20:] = rng.standard_normal((14, 25))   # half a plane without specials
    v[0, 2, :, :20] = np.nan
    feeds[x] = v
    got = check(g, tmp_path, cache_dir, feeds=feeds)
    expected = evaluate(g, feeds)
    for name in (outs[0], outs[2]):
        np.testing.assert_array_equal(got[name], expected[name])
    assert np.isnan(got[outs[0]][0, 2]).any() and not np.isnan(got[outs[0]][0, 2]).all()
    assert np.isneginf(got[outs[0]][0, 1]).all() and np.isneginf(got[outs[2]][0, 1]).all()


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_pooling_16bit(tmp_path, cache_dir, dtype):
    g, (x,) = graph_with_inputs((dtype, (2, 3, 17, 41)))
    stem = PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    outs = g.add_node("MaxPool", [x], stem) + g.add_node("AveragePool", [x], stem)
    outs += g.add_node("AveragePool", [x], PoolAttrs(kernel_shape=(2, 2), strides=(2, 2), ceil_mode=True,
                                                     count_include_pad=True))
    outs += g.add_node("MaxPool", [x], PoolAttrs(kernel_shape=(3, 3), pads=(1, 1, 1, 1)))
    outs += g.add_node("GlobalMaxPool", [x])
    g.outputs = outs
    feeds = random_feeds(g)
    feeds[x][0, 0, 3, 5] = np.nan
    got = check(g, tmp_path, cache_dir, feeds=feeds)
    expected = evaluate(g, feeds)
    for name in (outs[0], outs[3], outs[4]):
        np.testing.assert_array_equal(got[name].astype(np.float32), expected[name].astype(np.float32))


def test_pooling_threads_bitwise(tmp_path, cache_dir):
    # one work item per output row: the split between threads does not change any bit
    g, (x,) = graph_with_inputs((F32, (1, 3, 40, 57)))
    attrs = PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    g.outputs = g.add_node("MaxPool", [x], attrs) + g.add_node("AveragePool", [x], attrs)
    feeds = random_feeds(g)
    results = []
    for threads in (1, 2, 3):
        parts = CpuAmxBackend().lower(g, get_target("host"), BackendOptions(threads=threads, cache_dir=cache_dir))
        d = tmp_path / f"t{threads}"
        d.mkdir()
        model = Loaded(parts, d, threads)
        try:
            results.append(model(feeds))
        finally:
            model.close()
    for r in results[1:]:
        for name in g.outputs:
            assert r[name].tobytes() == results[0][name].tobytes()

# ---- data movement ----------------------------------------------------------------------------------------
def test_transpose_reshape_concat_split(tmp_path, cache_dir):
    g, (x, y) = graph_with_inputs((F32, (2, 3, 4, 5)), (F32, (2, 3, 4, 2)))
    outs = g.add_node("Transpose", [x], TransposeAttrs((0, 2, 3, 1)))
    outs += g.add_node("Transpose", [x], TransposeAttrs((3, 1, 2, 0)))
    (r,) = g.add_node("Reshape", [x, g.add_constant(np.array([6, 20], np.int64))], ReshapeAttrs())
    (f,) = g.add_node("Flatten", [x], FlattenAttrs(2))
    (u,) = g.add_node("Unsqueeze", [f], UnsqueezeAttrs((0,)))
    outs += g.add_node("Squeeze", [u], SqueezeAttrs((0,)))
    outs += g.add_node("Neg", [r])
    outs += g.add_node("Concat", [x, y, y], ConcatAttrs(-1))
    outs += g.add_node("Split", [x], SplitAttrs(1, (1, 2)))
    outs += g.add_node("Identity", [y])
    g.outputs = outs + [x]       # a graph input that is also an output
    check(g, tmp_path, cache_dir)


@pytest.mark.parametrize("dtype", [F32, F16, DType.int8, DType.int64])
def test_transposes_of_two_axis_groups(tmp_path, cache_dir, dtype):
    """Transposes that swap two groups of axes take the tiled block transpose (transpose_blocks); the
    others (and the size-1-only ones, views) the index copy: all must agree with NumPy."""
    from accelc.backends.cpu_amx.codegen_data import swapped_groups
    cases = [((2, 3, 17, 19), (0, 2, 3, 1)), ((2, 17, 19, 3), (0, 3, 1, 2)), ((2, 33, 5, 7), (0, 2, 1, 3)),
             ((37, 21), (1, 0)), ((3, 4, 5), (2, 0, 1)), ((1, 5, 1, 6), (3, 0, 2, 1)), ((2, 3, 4, 5), (0, 3, 2, 1))]
    assert [swapped_groups(s, p) is not None for s, p in cases] == [True] * 6 + [False]
    g, xs = graph_with_inputs(*[(dtype, s) for s, _ in cases])
    outs = []
    for x, (_, perm) in zip(xs, cases):
        outs += g.add_node("Transpose", [x], TransposeAttrs(perm))
    g.outputs = outs
    feeds = random_feeds(g, seed=4)
    got = check(g, tmp_path, cache_dir, feeds=feeds, tol=(0, 0) if dtype.is_float else None)
    for x, o, (_, perm) in zip(xs, outs, cases):
        np.testing.assert_array_equal(got[o], np.transpose(feeds[x], perm))


def test_slice_expand_tile_pad(tmp_path, cache_dir):
    g, (x, s) = graph_with_inputs((F32, (4, 6, 7)), (DType.int64, (3, 1)))
    c = lambda v: g.add_constant(np.array(v, np.int64))
    outs = g.add_node("Slice", [x, c([1, 5]), c([3, -1]), c([0, 2]), c([1, 2])])
    outs += g.add_node("Slice", [x, c([-1, 5]), c([-100, 0]), c([1, 2]), c([-2, -1])])
    outs += g.add_node("Expand", [s, c([2, 3, 4])])
    outs += g.add_node("Tile", [x, c([2, 1, 3])])
    for mode, pads in [("constant", (1, 0, 2, 0, 3, 1)), ("reflect", (0, 2, 1, 1, 3, 2)), ("edge", (2, 1, 0, 0, 0, 3)),
                       ("constant", (0, -1, 1, -1, 0, 2))]:
        outs += g.add_node("Pad", [x], PadAttrs(pads, mode, 1.5))
    g.outputs = outs
    check(g, tmp_path, cache_dir)


def test_gather_topk_depth_space(tmp_path, cache_dir):
    g, (x, idx, e) = graph_with_inputs((F32, (5, 8, 3)), (DType.int64, (2, 3)), (F32, (1, 8, 4, 6)))
    outs = g.add_node("Gather", [x, idx], GatherAttrs(1))
    outs += g.add_node("Gather", [x, g.add_constant(np.array([4, -1, 0], np.int32))], GatherAttrs(0))
    ge_idx = g.add_constant(np.random.default_rng(0).integers(-8, 8, size=(5, 4, 3)).astype(np.int64))
    outs += g.add_node("GatherElements", [x, ge_idx], GatherElementsAttrs(1))
    outs += g.add_node("TopK", [x], TopKAttrs(3, 1, True, True))
    outs += g.add_node("TopK", [x], TopKAttrs(2, 0, False, True))
    outs += g.add_node("DepthToSpace", [e], DepthToSpaceAttrs(2, "DCR"))
    outs += g.add_node("DepthToSpace", [e], DepthToSpaceAttrs(2, "CRD"))
    outs += g.add_node("SpaceToDepth", [e], SpaceToDepthAttrs(2))
    g.outputs = outs
    feeds = random_feeds(g)
    feeds[idx] = np.array([[0, 7, -3], [2, 2, -8]], np.int64)
    check(g, tmp_path, cache_dir, feeds)


def test_gather_out_of_range_index_fails_cleanly(tmp_path, cache_dir):
    g, (x, idx) = graph_with_inputs((F32, (5, 4)), (DType.int64, (2,)))
    g.outputs = g.add_node("Gather", [x, idx], GatherAttrs(0))
    _, model = build(g, tmp_path, cache_dir)
    with pytest.raises(RuntimeError, match="returned 4.*out of range"):
        model({x: np.zeros((5, 4), np.float32), idx: np.array([1, 9], np.int64)})
    model.close()


def test_shape_ops_and_constants(tmp_path, cache_dir):
    g, (x,) = graph_with_inputs((F32, (3, 4)))
    outs = g.add_node("Shape", [x]) + g.add_node("Size", [x])
    outs += g.add_node("ConstantOfShape", [g.add_constant(np.array([2, 3], np.int64))],
                       ConstantOfShapeAttrs(2.5, F32))
    outs += g.add_node("Range", [g.add_constant(np.array(1, np.int64)), g.add_constant(np.array(10, np.int64)),
                                 g.add_constant(np.array(3, np.int64))])
    w = g.add_constant(np.arange(12, dtype=np.float32).reshape(3, 4))
    outs += g.add_node("Add", [x, w])
    g.outputs = outs + [w]       # a constant that is also an output
    check(g, tmp_path, cache_dir)


# ---- GEMM and convolution ---------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape,b_shape,const_b", [
    ((7, 13), (13, 5), True), ((1, 33), (33, 17), True), ((2, 3, 19, 24), (24, 40), True),
    ((3, 5, 8), (3, 8, 6), False), ((2, 1, 4, 9), (3, 9, 5), False), ((13,), (13, 4), True), ((6, 13), (13,), False),
    ((5, 64), (64, 130), False)])
def test_matmul(tmp_path, cache_dir, a_shape, b_shape, const_b):
    g, (a,) = graph_with_inputs((F32, a_shape))
    rng = np.random.default_rng(4)
    if const_b:
        b = g.add_constant(rng.standard_normal(b_shape).astype(np.float32))
    else:
        b = g.add_input("b", TensorType(F32, b_shape))
    g.outputs = g.add_node("MatMul", [a, b])
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-4))


@pytest.mark.parametrize("ta,tb,c_shape", [(False, False, (9,)), (True, False, (11, 1)), (False, True, (11, 9)),
                                            (True, True, ()), (False, False, None)])
def test_gemm(tmp_path, cache_dir, ta, tb, c_shape):
    rng = np.random.default_rng(5)
    a_shape = (7, 11) if ta else (11, 7)
    b_shape = (9, 7) if tb else (7, 9)
    g, (a,) = graph_with_inputs((F32, a_shape))
    b = g.add_constant(rng.standard_normal(b_shape).astype(np.float32))
    ins = [a, b] + ([g.add_input("c", TensorType(F32, c_shape))] if c_shape is not None else [])
    g.outputs = g.add_node("Gemm", ins, GemmAttrs(0.5, 2.0, ta, tb))
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-4))


@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh", "sigmoid", "silu", "tanh", "leaky_relu", "clip", "none"])
def test_fused_gemm_epilogue(tmp_path, cache_dir, act):
    rng = np.random.default_rng(6)
    g, (a, res) = graph_with_inputs((F32, (2, 10, 24)), (F32, (2, 10, 18)))
    w = g.add_constant(rng.standard_normal((18, 24)).astype(np.float32))
    bias = g.add_constant(rng.standard_normal(18).astype(np.float32))
    activation = Activation(act, -0.5, 0.5) if act == "clip" else Activation(act, 0.1)
    g.outputs = g.add_node("FusedGemm", [a, w, bias, res], FusedGemmAttrs(False, True, 0.7, 1.3, activation))
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-4))


@pytest.mark.parametrize("compute", [F32, BF16])
def test_fused_gemm_writes_over_a_residual_read_for_the_last_time(tmp_path, cache_dir, compute):
    rng = np.random.default_rng(12)
    g, (a, x) = graph_with_inputs((F32, (2, 10, 24)), (F32, (2, 10, 18)))
    c = lambda *shape: g.add_constant(rng.standard_normal(shape).astype(np.float32))
    (r1,) = g.add_node("Relu", [x])
    (r2,) = g.add_node("Sigmoid", [x])
    (y1,) = g.add_node("FusedGemm", [a, c(18, 24), c(18), r1], FusedGemmAttrs(trans_b=True, compute=compute))
    (y2,) = g.add_node("FusedGemm", [a, c(24, 18), c(18), r2], FusedGemmAttrs(compute=compute))  # r2: read below
    (y3,) = g.add_node("FusedGemm", [y2, c(18, 18), "", y2], FusedGemmAttrs())  # residual is also A
    (s,) = g.add_node("Add", [y1, r2])
    g.outputs = [s, y3]
    parts, model = build(g, tmp_path / "inspect", cache_dir)
    model.close()
    assert parts.files["src/model.cpp"].decode().count("in place: the output takes the bytes of") == 1
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-4) if compute == F32 else (2e-2, 2e-2))


@pytest.mark.parametrize("geom", [
    dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1)), dict(kernel_shape=(3, 3), strides=(2, 2)),
    dict(kernel_shape=(1, 1)), dict(kernel_shape=(3, 5), pads=(0, 2, 1, 1), dilations=(2, 1), group=3),
    dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1), group=6)])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_conv2d(tmp_path, cache_dir, geom, layout, monkeypatch):
    """fp32 convolutions run channels-last by default (layout.py); ACCELC_CPU_LAYOUT=nchw keeps the NCHW
    im2col kernels, which bf16 and 1-D convolutions always use, covered too."""
    monkeypatch.setenv("ACCELC_CPU_LAYOUT", layout)
    rng = np.random.default_rng(7)
    group = geom.get("group", 1)
    g, (x,) = graph_with_inputs((F32, (2, 6, 11, 10)))
    w = g.add_constant(rng.standard_normal((12, 6 // group) + geom["kernel_shape"]).astype(np.float32))
    b = g.add_constant(rng.standard_normal(12).astype(np.float32))
    g.outputs = g.add_node("Conv", [x, w, b], ConvAttrs(**geom))
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-4))


def test_conv1d_and_fused_conv_with_residual(tmp_path, cache_dir):
    rng = np.random.default_rng(8)
    g, (x, y) = graph_with_inputs((F32, (3, 4, 20)), (F32, (1, 5, 9, 9)))
    w1 = g.add_constant(rng.standard_normal((6, 4, 3)).astype(np.float32))
    outs = g.add_node("Conv", [x, w1], ConvAttrs(strides=(2,), pads=(1, 1)))
    w2 = g.add_constant(rng.standard_normal((5, 5, 3, 3)).astype(np.float32))
    b2 = g.add_constant(rng.standard_normal(5).astype(np.float32))
    attrs = FusedConvAttrs(ConvAttrs(pads=(1, 1, 1, 1)), Activation("relu"))
    outs += g.add_node("FusedConv", [y, w2, b2, y], attrs)
    g.outputs = outs
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-4))


def test_bf16_fused_gemm_and_conv(tmp_path, cache_dir):
    rng = np.random.default_rng(9)
    g, (a, x) = graph_with_inputs((F32, (9, 70)), (F32, (2, 3, 12, 12)))
    w = g.add_constant(rng.standard_normal((70, 33)).astype(np.float32))
    bias = g.add_constant(rng.standard_normal(33).astype(np.float32))
    outs = g.add_node("FusedGemm", [a, w, bias], FusedGemmAttrs(activation=Activation("gelu"), compute=BF16))
    cw = g.add_constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    outs += g.add_node("FusedConv", [x, cw], FusedConvAttrs(ConvAttrs(pads=(1, 1, 1, 1)), compute=BF16))
    g.outputs = outs
    # the reference rounds the operands to bf16 as well: only accumulation order differs
    check(g, tmp_path, cache_dir, tol=(1e-3, 1e-3))


def test_bf16_activations_gemm(tmp_path, cache_dir):
    rng = np.random.default_rng(10)
    g, (a,) = graph_with_inputs((BF16, (2, 5, 40)))
    w = g.add_constant(rng.standard_normal((40, 24)).astype(np.float32).astype(ml_dtypes.bfloat16))
    outs = g.add_node("FusedGemm", [a, w], FusedGemmAttrs(compute=BF16))
    outs += g.add_node("FusedGemm", [a, w], FusedGemmAttrs(compute=F32))
    g.outputs = outs
    check(g, tmp_path, cache_dir, tol=(1.6e-2, 1e-2))


# ---- whole models -----------------------------------------------------------------------------------------
def small_cnn(batch: int) -> Graph:
    rng = np.random.default_rng(11)
    g = Graph("cnn")
    x = g.add_input("image", TensorType(F32, (batch, 3, 17, 17)))
    w1 = g.add_constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3)
    b1 = g.add_constant(rng.standard_normal(8).astype(np.float32) * 0.1)
    (c1,) = g.add_node("Conv", [x, w1, b1], ConvAttrs(pads=(1, 1, 1, 1), strides=(2, 2)))
    bn = [g.add_constant(v.astype(np.float32)) for v in
          (rng.random(8) + 0.5, rng.standard_normal(8) * 0.1, rng.standard_normal(8) * 0.1, rng.random(8) + 0.5)]
    (n1,) = g.add_node("BatchNormalization", [c1] + bn, BatchNormAttrs(1e-5))
    (r1,) = g.add_node("Relu", [n1])
    (p1,) = g.add_node("MaxPool", [r1], PoolAttrs(kernel_shape=(2, 2), strides=(2, 2), ceil_mode=True))
    w2 = g.add_constant(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2)
    (c2,) = g.add_node("FusedConv", [p1, w2], FusedConvAttrs(ConvAttrs(pads=(1, 1, 1, 1)), Activation("relu")))
    (gp,) = g.add_node("GlobalAveragePool", [c2])
    (fl,) = g.add_node("Flatten", [gp], FlattenAttrs(1))
    wf = g.add_constant(rng.standard_normal((10, 16)).astype(np.float32))
    bf = g.add_constant(rng.standard_normal(10).astype(np.float32))
    (logits,) = g.add_node("Gemm", [fl, wf, bf], GemmAttrs(trans_b=True))
    g.outputs = g.add_node("Softmax", [logits], SoftmaxAttrs(-1), outputs=["probs"])
    return g


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_small_cnn(tmp_path, cache_dir, batch, layout, monkeypatch):
    monkeypatch.setenv("ACCELC_CPU_LAYOUT", layout)
    check(small_cnn(batch), tmp_path, cache_dir, tol=(1e-4, 1e-5))


def transformer_block(batch: int, seq: int, d: int = 32, heads: int = 4) -> Graph:
    rng = np.random.default_rng(12)
    g = Graph("block")
    x = g.add_input("x", TensorType(F32, (batch, seq, d)))
    c = lambda shape, s=0.2: g.add_constant((rng.standard_normal(shape) * s).astype(np.float32))
    i64 = lambda v: g.add_constant(np.array(v, np.int64))
    (ln,) = g.add_node("LayerNormalization", [x, c(d, 1.0), c(d)], LayerNormAttrs(-1, 1e-5))[:1]
    (qkv,) = g.add_node("MatMul", [ln, c((d, 3 * d))])
    q, k, v = g.add_node("Split", [qkv], SplitAttrs(2, (d, d, d)))
    hd = d // heads

    def heads_of(t):
        (r,) = g.add_node("Reshape", [t, i64([batch, seq, heads, hd])], ReshapeAttrs())
        return g.add_node("Transpose", [r], TransposeAttrs((0, 2, 1, 3)))[0]

    qh, kh, vh = heads_of(q), heads_of(k), heads_of(v)
    (kt,) = g.add_node("Transpose", [kh], TransposeAttrs((0, 1, 3, 2)))
    (s,) = g.add_node("FusedGemm", [qh, kt], FusedGemmAttrs(alpha=1 / np.sqrt(hd)))
    (p,) = g.add_node("Softmax", [s], SoftmaxAttrs(-1))
    (o,) = g.add_node("MatMul", [p, vh])
    (ot,) = g.add_node("Transpose", [o], TransposeAttrs((0, 2, 1, 3)))
    (om,) = g.add_node("Reshape", [ot, i64([batch, seq, d])], ReshapeAttrs())
    (proj,) = g.add_node("FusedGemm", [om, c((d, d)), c(d), x], FusedGemmAttrs())
    (ln2,) = g.add_node("LayerNormalization", [proj, c(d, 1.0), c(d)], LayerNormAttrs(-1, 1e-5))[:1]
    (h,) = g.add_node("FusedGemm", [ln2, c((d, 4 * d)), c(4 * d)], FusedGemmAttrs(activation=Activation("gelu")))
    g.outputs = g.add_node("FusedGemm", [h, c((4 * d, d)), c(d), proj], FusedGemmAttrs())
    return g


@pytest.mark.parametrize("batch,seq", [(1, 7), (2, 16)])
def test_transformer_block(tmp_path, cache_dir, batch, seq):
    check(transformer_block(batch, seq), tmp_path, cache_dir, tol=(1e-4, 1e-4))


# ---- support table, errors, ABI, variants, cache ----------------------------------------------------------
def test_unsupported_ops_are_reported(tmp_path, cache_dir):
    g, (x, i) = graph_with_inputs((F32, (1, 2, 4, 4, 4)), (DType.int32, (3, 4)))
    w = g.add_constant(np.ones((3, 2, 2, 2, 2), np.float32))
    g.add_node("Conv", [x, w], ConvAttrs())
    g.add_node("MatMul", [i, g.add_constant(np.ones((4, 2), np.int32))])
    g.outputs = [g.nodes[-1].outputs[0]]
    found = CpuAmxBackend().unsupported(g, get_target("host"))
    reasons = {n.op: why for n, why in found}
    assert set(reasons) == {"Conv", "MatMul"}
    assert "3 spatial axes" in reasons["Conv"] and "i32" in reasons["MatMul"]
    with pytest.raises(BackendError, match="cannot lower"):
        CpuAmxBackend().lower(g, get_target("host"), BackendOptions(cache_dir=cache_dir))


def test_fp16_products_are_refused_not_computed_otherwise(tmp_path, cache_dir):
    """A graph made for a CUDA target (compute=fp16) is refused by the CPU backend instead of being run in
    fp32 or bf16, and accelc.compile refuses --dtype fp16 for CPU targets up front."""
    import accelc
    from accelc.errors import AccelcError
    from accelc.ir.ops.fused import FusedGemmAttrs
    g, (x,) = graph_with_inputs((F32, (2, 8)))
    (y,) = g.add_node("FusedGemm", [x, g.add_constant(np.ones((8, 4), np.float16))],
                      FusedGemmAttrs(compute=DType.float16))
    g.outputs = [y]
    ((node, why),) = CpuAmxBackend().unsupported(g, get_target("host"))
    assert node.op == "FusedGemm" and "fp16" in why and "bf16" in why
    with pytest.raises(AccelcError, match="fp16 is for CUDA targets.*--dtype bf16"):
        accelc.compile(b"", "host", dtype="fp16")


def test_symbolic_shapes_are_refused(tmp_path, cache_dir):
    g = Graph("dyn")
    x = g.add_input("x", TensorType(F32, ("batch", 4)))
    g.outputs = g.add_node("Relu", [x])
    with pytest.raises(ShapeError, match="batch"):
        CpuAmxBackend().lower(g, get_target("host"), BackendOptions(cache_dir=cache_dir))


def test_abi_signature_weights_checks_and_header(tmp_path, cache_dir):
    g = small_cnn(2)
    parts, model = build(g, tmp_path, cache_dir, threads=2)
    lib = model.lib
    assert lib.accelc_abi_version() == 1
    assert model.signature["inputs"] == [{"name": "image", "dtype": "f32", "shape": [2, 3, 17, 17]}]
    assert model.signature["outputs"][0]["name"] == "probs"
    assert parts.manifest["abi_version"] == 1 and parts.manifest["library"] == "model.so"
    assert parts.manifest["weights_bytes"] == len(parts.files["weights.bin"]) > 0
    assert parts.manifest["arena_bytes"] > 0
    header = parts.files["include/accelc_model.h"].decode()
    assert "accelc_create" in header and "image  f32[2,3,17,17]" in header
    src = parts.files["src/model.cpp"].decode()
    assert "// [0] Transpose" in src and "// [1] accelc_cpu.ConvNhwc 'conv" in src and "namespace ACCELC_NS" in src
    # wrong size, corrupted bytes
    h = ctypes.c_void_p()
    w = bytearray(parts.files["weights.bin"])
    assert lib.accelc_create(bytes(w[:-4]), len(w) - 4, 0, ctypes.byref(h)) == 2
    assert b"size" in lib.accelc_last_error()
    w[100] ^= 0xFF
    assert lib.accelc_create(bytes(w), len(w), 0, ctypes.byref(h)) == 2
    assert b"checksum" in lib.accelc_last_error()
    assert lib.accelc_run(None, None, None) == 4
    model.close()


def test_memory_plan_reuses_arena(tmp_path, cache_dir):
    g, (x,) = graph_with_inputs((F32, (64, 64)))
    v = x
    for _ in range(8):
        (v,) = g.add_node("Tanh", [v])
    g.outputs = [v]
    parts, model = build(g, tmp_path, cache_dir)
    assert parts.manifest["arena_bytes"] <= 2 * 64 * 64 * 4   # 7 intermediates share two buffers
    model.close()


def test_build_cache_makes_second_compile_free(tmp_path, cache_dir):
    g = transformer_block(1, 5)
    CpuAmxBackend().lower(g, get_target("host"), BackendOptions(cache_dir=cache_dir))
    t = time.perf_counter()
    CpuAmxBackend().lower(g, get_target("host"), BackendOptions(cache_dir=cache_dir))
    assert time.perf_counter() - t < 1.0
    # a new small model with a warm kernel cache compiles only its model.cpp
    g2, (x,) = graph_with_inputs((F32, (3, 7)))
    g2.outputs = g2.add_node("Sigmoid", [x])
    t = time.perf_counter()
    CpuAmxBackend().lower(g2, get_target("host"), BackendOptions(cache_dir=cache_dir))
    assert time.perf_counter() - t < 5.0   # < 2 s on an idle machine; loose for shared CI cores


def test_build_error_names_kept_source(tmp_path, cache_dir):
    from accelc.backends.cpu_amx.build import Builder
    from accelc.errors import BuildError
    with pytest.raises(BuildError, match="model.cpp"):
        Builder(cache_dir).build_model("this is not C++;\n", "#pragma once\n", ["avx2"], "#pragma once\n")


def test_spr_artifact_falls_back_to_avx2_here(tmp_path, cache_dir):
    if HAS_AMX:
        pytest.skip("this machine has AMX: the fallback path is not taken")
    g, (x,) = graph_with_inputs((F32, (4, 24)))
    w = g.add_constant(np.random.default_rng(0).standard_normal((24, 16)).astype(np.float32))
    g.outputs = g.add_node("FusedGemm", [x, w], FusedGemmAttrs(compute=BF16, activation=Activation("relu")))
    parts, model = build(g, tmp_path, cache_dir, target="spr")
    assert parts.manifest["variants"] == ["amx", "avx2"]
    assert "amx_bf16" in parts.manifest["required_isa"]["amx"]
    assert model.lib.accelc_variants() == b"amx,avx2"
    assert model.lib.accelc_select_variant() == b"avx2"
    assert model.create_rc == 0 and model.variant == "avx2"
    feeds = random_feeds(g)
    np.testing.assert_allclose(model(feeds)[g.outputs[0]], evaluate(g, feeds)[g.outputs[0]], rtol=1e-3, atol=1e-3)
    model.close()


def test_amx_only_artifact_refuses_cleanly_here(tmp_path, cache_dir, monkeypatch):
    if HAS_AMX:
        pytest.skip("this machine has AMX")
    from accelc.backends.cpu_amx import backend as backend_module
    monkeypatch.setattr(backend_module.isa, "variants_for", lambda target: ["amx"])
    g, (x,) = graph_with_inputs((F32, (2, 8)))
    g.outputs = g.add_node("Relu", [x])
    parts, model = build(g, tmp_path, cache_dir, target="spr")
    assert model.lib.accelc_select_variant() is None
    assert model.create_rc == 1
    assert "amx" in model.error and "amx_tile" in model.error


def test_compile_without_accuracy_loads_the_model_on_first_use(tmp_path, cache_dir, monkeypatch):
    """measure_accuracy=False returns before creating the model (which copies and checks every weight);
    the variant comes from the library alone, and the first call loads the model. An artifact this CPU
    cannot run says so then, as an eager load would have."""
    import onnx
    from onnx import TensorProto, helper
    from accelc.backends.cpu_amx import backend as backend_module
    from accelc.errors import UnsupportedHardwareError
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    m = accelc.compile(model, "host", cache_dir=cache_dir, measure_accuracy=False)
    assert m._module is None
    host = isa.runnable_variants(isa.cpu_flags())[0]
    assert m.variant == host and m._module is None
    np.testing.assert_array_equal(m(x), np.maximum(x, 0))
    assert m._module is not None and m.variant == host
    if HAS_AMX:
        return
    monkeypatch.setattr(backend_module.isa, "variants_for", lambda target: ["amx"])
    m = accelc.compile(model, "spr", cache_dir=cache_dir, measure_accuracy=False)
    assert m.variant is None and m.manifest["accuracy"] == {"skipped": "not requested"}
    with pytest.raises(UnsupportedHardwareError, match="amx"):
        m(x)
    with pytest.raises(UnsupportedHardwareError):          # the same error again, not a second load
        m.run({"x": x})


@amx
@needs_amx
def test_amx_variant_selected_and_matches(tmp_path, cache_dir):
    rng = np.random.default_rng(13)
    g, (a, x) = graph_with_inputs((F32, (37, 96)), (F32, (2, 16, 14, 14)))
    w = g.add_constant(rng.standard_normal((96, 70)).astype(np.float32))
    outs = g.add_node("FusedGemm", [a, w], FusedGemmAttrs(compute=BF16, activation=Activation("gelu")))
    cw = g.add_constant(rng.standard_normal((32, 16, 3, 3)).astype(np.float32))
    outs += g.add_node("FusedConv", [x, cw], FusedConvAttrs(ConvAttrs(pads=(1, 1, 1, 1)), compute=BF16))
    outs += g.add_node("MatMul", [a, w])
    g.outputs = outs
    parts, model = build(g, tmp_path, cache_dir, target="spr")
    assert model.create_rc == 0, model.error
    assert model.variant == "amx"
    feeds = random_feeds(g)
    got, ref = model(feeds), evaluate(g, feeds)
    for o in g.outputs:
        np.testing.assert_allclose(got[o], ref[o], rtol=2e-3, atol=2e-3)
    model.close()


@amx
@needs_amx
def test_amx_transformer_block(tmp_path, cache_dir):
    g = transformer_block(2, 16)
    feeds = random_feeds(g)
    _, model = build(g, tmp_path, cache_dir, target="spr")
    assert model.variant == "amx"
    np.testing.assert_allclose(model(feeds)[g.outputs[0]], evaluate(g, feeds)[g.outputs[0]], rtol=1e-4, atol=1e-4)
    model.close()


@pytest.mark.parametrize("nd,geom", [
    (2, dict(strides=(2, 2), pads=(1, 1, 0, 0))), (2, dict(strides=(2, 1), dilations=(1, 2), group=2,
                                                         output_padding=(1, 0))),
    (1, dict(strides=(3,), pads=(1, 2))), (3, dict(strides=(1, 2, 1)))])
def test_conv_transpose(tmp_path, cache_dir, nd, geom):
    from accelc.ir.ops.conv import ConvTransposeAttrs
    rng = np.random.default_rng(14)
    spatial = (5, 6, 4)[:nd]
    g, (x,) = graph_with_inputs((F32, (2, 4) + spatial))
    group = geom.get("group", 1)
    w = g.add_constant(rng.standard_normal((4, 6 // group) + (3,) * nd).astype(np.float32))
    b = g.add_constant(rng.standard_normal(6).astype(np.float32))
    g.outputs = g.add_node("ConvTranspose", [x, w, b], ConvTransposeAttrs(**geom))
    check(g, tmp_path, cache_dir, tol=(1e-4, 1e-4))


def test_trilu_one_hot(tmp_path, cache_dir):
    from accelc.ir.ops.indexing import OneHotAttrs, TriluAttrs
    g, (x, i) = graph_with_inputs((F32, (2, 5, 7)), (DType.int64, (3, 4)))
    outs = g.add_node("Trilu", [x], TriluAttrs(True))
    outs += g.add_node("Trilu", [x, g.add_constant(np.array(-1, np.int64))], TriluAttrs(False))
    outs += g.add_node("OneHot", [i, g.add_constant(np.array(6, np.int64)),
                                  g.add_constant(np.array([-1.0, 3.0], np.float32))], OneHotAttrs(1))
    g.outputs = outs
    feeds = random_feeds(g)
    feeds[i] = np.array([[0, 5, -1, 7], [-6, 2, 3, -9], [1, 1, 4, 0]], np.int64)
    check(g, tmp_path, cache_dir, feeds)


def test_special_values_exp_family_and_masked_softmax(tmp_path, cache_dir):
    g, (x, m) = graph_with_inputs((F32, (3, 11)), (F32, (2, 9)))
    outs = []
    for op in ["Exp", "Sigmoid", "Silu", "Relu", "Tanh", "Softplus", "Elu"]:
        outs += g.add_node(op, [x])
    outs += g.add_node("Softmax", [m], SoftmaxAttrs(-1)) + g.add_node("LogSoftmax", [m], SoftmaxAttrs(-1))
    g.outputs = outs
    feeds = random_feeds(g)
    feeds[x][0] = [np.inf, -np.inf, np.nan, 88.0, 89.0, -87.0, -90.0, -104.0, 0.0, -0.0, 1e-30]
    feeds[x][1] *= 30
    feeds[m][0, ::2] = -np.inf   # attention mask
    with np.errstate(all="ignore"):
        check(g, tmp_path, cache_dir, feeds, tol=(3e-6, 1e-30))   # fp32 underflow vs the float64 reference


@pytest.mark.parametrize("rows,r", [(130, 5), (3, 1), (64, 15), (7000, 2)])
def test_softmax_short_rows(tmp_path, cache_dir, rows, r):
    """Rows shorter than a vector take a blocked path (blocks of 64 rows, exponentials in one pass); a
    partial last block, a row of one, special values and a size that runs on the team are checked."""
    g, (x,) = graph_with_inputs((F32, (rows, r)))
    g.outputs = g.add_node("Softmax", [x], SoftmaxAttrs(-1)) + g.add_node("LogSoftmax", [x], SoftmaxAttrs(-1))
    feeds = random_feeds(g, seed=rows)
    feeds[x] *= 20
    if r > 1:
        feeds[x][0, 0] = -np.inf                  # a masked entry
        feeds[x][1, 1] = np.nan                   # NaN in, NaN out (the whole row)
        feeds[x][-1, -1] = 80.0                   # large: the max shift keeps exp finite
    with np.errstate(all="ignore"):
        # atol: LogSoftmax's x - max - log(sum) near 0 keeps log(sum)'s absolute fp32 error (~1e-7)
        check(g, tmp_path, cache_dir, feeds, tol=(3e-6, 2.5e-7))


def test_reduce_mean_last_axis_bf16(tmp_path, cache_dir):
    g, (x,) = graph_with_inputs((BF16, (4, 300)))
    g.outputs = g.add_node("ReduceMean", [x], ReduceAttrs((-1,), True)) + g.add_node("Softmax", [x], SoftmaxAttrs(-1))
    check(g, tmp_path, cache_dir, tol=(8e-3, 1e-6))


def test_memory_plan_never_overlaps_live_buffers():
    from accelc.backends.cpu_amx.memory_plan import Buffer, plan_arena
    rng = np.random.default_rng(0)
    for trial in range(20):
        bufs = []
        for k in range(30):
            a = int(rng.integers(0, 40))
            bufs.append(Buffer(f"b{k}", int(rng.integers(1, 5000)), a, a + int(rng.integers(0, 8))))
        plan = plan_arena(bufs)
        for p in bufs:
            assert plan.offsets[p.name] % 64 == 0 and plan.offsets[p.name] + p.nbytes <= plan.arena_bytes
            for q in bufs:
                if p is not q and p.first <= q.last and q.first <= p.last:
                    lo_p, lo_q = plan.offsets[p.name], plan.offsets[q.name]
                    assert lo_p + p.nbytes <= lo_q or lo_q + q.nbytes <= lo_p, (p, q)
        assert plan.arena_bytes <= plan.naive_bytes


def test_weights_checksum_matches_the_dispatcher(tmp_path, cache_dir):
    from accelc.backends.cpu_amx.memory_plan import weights_checksum
    g, (x,) = graph_with_inputs((F32, (2, 3)))
    w = g.add_constant(np.arange(7, dtype=np.float32)[:3])   # 12 bytes: a partial trailing word
    g.outputs = g.add_node("Mul", [x, w])
    parts, model = build(g, tmp_path, cache_dir)
    assert model.create_rc == 0
    assert weights_checksum(parts.files["weights.bin"]) != weights_checksum(parts.files["weights.bin"][:-1] + b"\1")
    model.close()


def test_variants_do_not_share_code(tmp_path, cache_dir):
    """Every weak (merged-by-the-linker) symbol lives in a variant namespace: the avx2 path can never run
    an AVX-512/AMX-compiled copy of an inline function."""
    import shutil
    import subprocess
    if shutil.which("nm") is None:
        pytest.skip("binutils nm not installed")
    g = transformer_block(1, 4)
    parts = CpuAmxBackend().lower(g, get_target("spr"), BackendOptions(cache_dir=cache_dir))
    lib = tmp_path / "model.so"
    lib.write_bytes(parts.files["model.so"])
    symbols = subprocess.run(["nm", "-C", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    weak = [ln for ln in symbols.splitlines() if ln.split()[1:2] and ln.split()[1] in ("W", "V", "u")]
    shared = [ln for ln in weak if not any(f"accelc_{v}::" in ln for v in ("amx", "avx512", "avx2"))]
    assert not shared, shared[:10]


@pytest.mark.parametrize("variant", ["amx", "avx512", "avx2"])
def test_each_runnable_variant_matches(tmp_path, cache_dir, monkeypatch, variant):
    """A library holding only `variant` (where this CPU runs it) computes the CNN, a transformer block and a
    bf16 GEMM like the reference: every ISA variant is exercised on machines that have it."""
    if variant not in isa.runnable_variants(HOST_FLAGS):
        pytest.skip(f"this CPU cannot run the {variant} variant")
    from accelc.backends.cpu_amx import backend as backend_module
    monkeypatch.setattr(backend_module.isa, "variants_for", lambda target: [variant])
    rng = np.random.default_rng(15)
    g3, (a,) = graph_with_inputs((F32, (19, 72)))
    w = g3.add_constant(rng.standard_normal((72, 40)).astype(np.float32))
    g3.outputs = g3.add_node("FusedGemm", [a, w], FusedGemmAttrs(compute=BF16, activation=Activation("silu")))
    for k, (g, tol) in enumerate([(small_cnn(2), (1e-4, 1e-5)), (transformer_block(2, 9), (1e-4, 1e-4)),
                                  (g3, (1e-3, 1e-3))]):
        d = tmp_path / str(k)
        d.mkdir()
        feeds = random_feeds(g)
        _, model = build(g, d, cache_dir, target="spr")
        assert model.create_rc == 0, model.error
        assert model.variant == variant
        got, ref = model(feeds), evaluate(g, feeds)
        for o in g.outputs:
            np.testing.assert_allclose(got[o], ref[o], rtol=tol[0], atol=tol[1], err_msg=f"{variant} {o}")
        model.close()
