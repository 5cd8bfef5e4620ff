"""FPGA conv-family layers (Conv, Pool, GlobalPool): float semantics against onnx.reference, the NumPy
fixed-point model against float (error bounds from the LSBs) and against an independent scalar loop, and
the generated HLS C++ against the NumPy model bit for bit in both io styles (8 g++ builds in all)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from accelc.backends.fpga_hls import codegen, toolchain
from accelc.backends.fpga_hls.codegen import Design
from accelc.backends.fpga_hls.fixed import FixedType
from accelc.backends.fpga_hls.layers.base import MAX_PARTITION, Precision, Value, dsp_per_multiply
from accelc.backends.fpga_hls.layers.conv import Conv, GlobalPool, Pool
from accelc.errors import BackendError

IO = ("io_parallel", "io_stream")


def _he(rng, shape):
    fan_in = int(np.prod(shape[1:]))
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


# ---- float semantics against the ONNX reference --------------------------------------------------------
def _onnx_run(op, x_nc, attrs, inits=()):
    """Runs one ONNX op on a channels-first batch with onnx.reference; returns channels-first output."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    names = ["x"] + [f"i{k}" for k in range(len(inits))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, list(x_nc.shape))],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
        initializer=[numpy_helper.from_array(np.asarray(a, dtype=np.float64), f"i{k}") for k, a in enumerate(inits)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, {"x": x_nc})[0]


def _to_nc(a):     # (B, ..., C) -> (B, C, ...)
    return np.moveaxis(a, -1, 1)


def _to_nl(a):     # (B, C, ...) -> (B, ..., C)
    return np.moveaxis(a, 1, -1)


CONV_CASES = [  # (in shape, weight shape, bias, strides, pads, group)
    ((7, 8, 3), (4, 3, 3, 3), True, (1, 1), (1, 1, 1, 1), 1),
    ((9, 7, 2), (5, 2, 3, 2), True, (2, 2), (1, 0, 2, 1), 1),
    ((6, 6, 4), (4, 1, 3, 3), True, (1, 2), (0, 1, 1, 0), 4),
    ((11, 3), (6, 3, 5), False, (2,), (2, 1), 1),
    ((10, 4), (4, 1, 3), True, (1,), (1, 1), 4),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_float_eval_matches_onnx(case):
    shape, wshape, has_b, strides, pads, group = CONV_CASES[case]
    rng = np.random.default_rng(case)
    x = rng.standard_normal((2, *shape))
    w = _he(rng, wshape)
    b = rng.standard_normal(wshape[0]) if has_b else None
    ref = _onnx_run("Conv", _to_nc(x), {"strides": list(strides), "pads": list(pads), "group": group},
                    [w] + ([b] if has_b else []))
    out = Value("y", tuple(_to_nl(ref).shape[1:]))
    layer = Conv("c", Value("x", shape), out, w, b, strides, pads, group=group)
    np.testing.assert_allclose(layer.float_eval(x), _to_nl(ref), rtol=1e-12, atol=1e-12)


POOL_CASES = [  # (in shape, op, kernel, strides, pads, count_include_pad)
    ((8, 8, 3), "MaxPool", (2, 2), (2, 2), (0, 0, 0, 0), 0),
    ((9, 7, 3), "MaxPool", (3, 3), (2, 2), (1, 1, 1, 1), 0),
    ((8, 8, 3), "AveragePool", (2, 2), (2, 2), (0, 0, 0, 0), 0),
    ((9, 7, 3), "AveragePool", (3, 3), (2, 2), (1, 1, 1, 1), 0),
    ((9, 7, 3), "AveragePool", (3, 3), (2, 2), (1, 1, 1, 1), 1),
    ((7, 6, 2), "AveragePool", (3, 2), (1, 2), (2, 0, 0, 1), 0),
    ((13, 4), "MaxPool", (3,), (2,), (1, 1), 0),
    ((13, 4), "AveragePool", (4,), (3,), (2, 1), 0),
]


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_pool_float_eval_matches_onnx(case):
    shape, op, kernel, strides, pads, cip = POOL_CASES[case]
    x = np.random.default_rng(10 + case).standard_normal((2, *shape)) - 1.0   # mostly negative: pads must not win
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads)}
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    ref = _to_nl(_onnx_run(op, _to_nc(x), attrs))
    layer = Pool("p", Value("x", shape), Value("y", tuple(ref.shape[1:])), "max" if op == "MaxPool" else "avg",
                 kernel, strides, pads, count_include_pad=bool(cip))
    np.testing.assert_allclose(layer.float_eval(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool_float_eval_matches_onnx(op):
    x = np.random.default_rng(3).standard_normal((2, 5, 4, 3)) - 0.5
    ref = _onnx_run(op, _to_nc(x), {})                        # (B, C, 1, 1)
    layer = GlobalPool("g", Value("x", (5, 4, 3)), Value("y", (1, 1, 3)), "avg" if "Average" in op else "max")
    got = layer.float_eval(x)
    assert got.shape == (2, 1, 1, 3)
    np.testing.assert_allclose(got.reshape(2, 3), ref.reshape(2, 3), rtol=1e-12, atol=1e-12)


# ---- refusals and checks ---------------------------------------------------------------------------------
def test_conv_refuses_grouped_and_dilated():
    x = Value("x", (6, 6, 4))
    with pytest.raises(BackendError, match=r"Conv 'c'.*group=2.*supported are group=1 and depthwise"):
        Conv("c", x, Value("y", (4, 4, 4)), np.zeros((4, 2, 3, 3)), None, (1, 1), (0, 0, 0, 0), group=2)
    with pytest.raises(BackendError, match=r"Conv 'c'.*dilations \(2, 2\).*only dilation 1"):
        Conv("c", x, Value("y", (2, 2, 4)), np.zeros((4, 4, 3, 3)), None, (1, 1), (0, 0, 0, 0), dilations=(2, 2))
    with pytest.raises(BackendError, match=r"per-sample shape \(5, 5, 4\) but the layer computes \(4, 4, 4\)"):
        Conv("c", x, Value("y", (5, 5, 4)), np.zeros((4, 4, 3, 3)), None, (1, 1), (0, 0, 0, 0))
    Conv("c", x, Value("y", (4, 4, 4)), np.zeros((4, 4, 3, 3)), None, (1, 1), (0, 0, 0, 0), dilations=(1, 1))


def test_pool_refuses_pads_as_large_as_the_kernel():
    with pytest.raises(BackendError, match=r"Pool 'p'.*pads .* must be smaller than the kernel"):
        Pool("p", Value("x", (6, 6, 2)), Value("y", (4, 4, 2)), "max", (2, 2), (2, 2), (2, 2, 2, 2))
    with pytest.raises(BackendError, match="mode must be 'max' or 'avg'"):
        Pool("p", Value("x", (6, 6, 2)), Value("y", (3, 3, 2)), "min", (2, 2), (2, 2), (0, 0, 0, 0))
    with pytest.raises(BackendError, match="has 4 elements but the input has 3 channels"):
        GlobalPool("g", Value("x", (4, 4, 3)), Value("y", (4,)), "avg")


def test_checks_and_estimates():
    x = Value("x", (16, 16, 64), FixedType(16, 6))
    w = np.random.default_rng(0).standard_normal((128, 64, 3, 3)) * 0.05
    big = Conv("big", x, Value("y", (16, 16, 128)), w, None, (1, 1), (1, 1, 1, 1))
    big.choose_types(Precision(bits=16))
    errors = [f for f in big.checks("io_stream") if f.severity == "error"]
    assert len(errors) == 1 and "reuse_factor >= 18" in errors[0].message   # 73728 / 4096 = 18
    par = big.checks("io_parallel")
    assert any(f.severity == "warning" and "use io_stream" in f.message for f in par)
    fixed = Conv("big", x, Value("y", (16, 16, 128)), w, None, (1, 1), (1, 1, 1, 1), reuse_factor=18)
    fixed.choose_types(Precision(bits=16))
    assert not [f for f in fixed.checks("io_stream") if f.severity == "error"]
    assert fixed.n_mult <= MAX_PARTITION
    e = fixed.estimate("io_stream")
    assert e.dsp == math.ceil(73728 / 18) * dsp_per_multiply(16, 16)
    assert e.ii == 18 * 18 * 18 + 18 and e.latency > e.ii       # padded pixels x R + clearing the lines
    assert e.bram_18k == 0              # 18-word line buffers and an 18-deep weight ROM: LUTRAM by the model
    assert fixed.multiplies() == 16 * 16 * 73728
    assert fixed.estimate("io_parallel").ii == 16 * 16 * 18
    wide = Conv("wide", Value("x", (4, 100, 8), FixedType(16, 6)), Value("y", (2, 98, 4)),
                np.ones((4, 8, 3, 3)), None, (1, 1), (0, 0, 0, 0), reuse_factor=64)
    wide.choose_types(Precision(bits=16))
    # two line buffers of 100 words x (8 x 16 bits) + a 64-deep ROM of ceil(288/64) x 16-bit lanes
    assert wide.estimate("io_stream").bram_18k == 2 * math.ceil(128 / 36) + math.ceil(5 * 16 / 36)
    assert wide.estimate("io_parallel").bram_18k == math.ceil(5 * 16 / 36)
    # a pool's window above the partition limit
    p = Pool("p", Value("x", (8, 8, 600), FixedType(8, 2)), Value("y", (4, 4, 600)), "max", (3, 3), (2, 2),
             (1, 1, 1, 1))
    p.choose_types(Precision())
    assert any(f.severity == "error" and "window" in f.message for f in p.checks("io_stream"))


# ---- the fixed-point model -------------------------------------------------------------------------------
def _scalar_conv_reference(layer: Conv, xc: np.ndarray) -> np.ndarray:
    """An independent, slow model of one sample: Python ints, the documented order and casts."""
    g, x_t, w_t, acc_t, out_t = layer.g, layer.inputs[0].type, layer.w_t, layer.acc_t, layer.output.type
    fp = x_t.frac + w_t.frac
    x = xc.reshape(g.H, g.W, g.C)
    w4 = w_t.from_float(layer.weight.reshape(layer.cout, -1, g.KH, g.KW))
    out = np.zeros((g.Ho, g.Wo, layer.cout), dtype=np.int64)
    for oy in range(g.Ho):
        for ox in range(g.Wo):
            for co in range(layer.cout):
                acc = int(acc_t.cast(np.array([layer.b_codes[co]]), layer.b_t.frac)[0])
                fa = acc_t.frac
                f = max(fa, fp)
                for ky in range(g.KH):
                    for kx in range(g.KW):
                        for ci in ([co] if layer.depthwise else range(layer.cin)):
                            iy, ix = oy * g.sh - g.pt + ky, ox * g.sw - g.pl + kx
                            xv = int(x[iy, ix, ci]) if 0 <= iy < g.H and 0 <= ix < g.W else 0
                            wv = int(w4[co, 0 if layer.depthwise else ci, ky, kx])
                            s = (acc << (f - fa)) + ((xv * wv) << (f - fp))
                            acc = int(acc_t.cast(np.array([s]), f)[0])
                out[oy, ox, co] = int(out_t.cast(np.array([acc]), fa)[0])
    return out


@pytest.mark.parametrize("depthwise", [False, True])
def test_accum_override_follows_the_documented_order(depthwise):
    rng = np.random.default_rng(5)
    c = 3
    x = Value("x", (5, 6, c), FixedType(9, 3, True, "RND", "SAT"))
    wshape = (c, 1, 3, 2) if depthwise else (4, c, 3, 2)
    out = Value("y", (3, 3, wshape[0]), FixedType(9, 3, True, "RND_INF", "SAT"))
    layer = Conv("c", x, out, _he(rng, wshape) * 2, rng.standard_normal(wshape[0]), (2, 2), (1, 1, 1, 0),
                 group=c if depthwise else 1, reuse_factor=4)
    layer.choose_types(Precision(overrides={"c": {"accum": FixedType(10, 3, True, "RND_ZERO", "SAT_SYM")}}))
    assert not layer.acc_exact
    xc = rng.integers(x.type.min_code, x.type.max_code + 1, size=(2, *x.shape))
    got = layer.fx_eval(xc)
    for b in range(2):
        np.testing.assert_array_equal(got[b], _scalar_conv_reference(layer, xc[b]))
    # the exact accumulator is the same loop with an accumulator that never rounds or overflows
    exact = Conv("c", x, Value("y", out.shape, out.type), layer.weight, layer.bias, (2, 2), (1, 1, 1, 0),
                 group=c if depthwise else 1)
    exact.choose_types(Precision())
    assert exact.acc_exact
    np.testing.assert_array_equal(exact.fx_eval(xc)[0], _scalar_conv_reference(exact, xc[0]))


def test_fixed_model_is_close_to_float():
    """Exact accumulators: the only errors are the weight/bias quantization (bounded by half a weight
    LSB times the window's sum of |x|, plus half a bias LSB) and the output rounding (one LSB covers
    every rounding mode). Pools on unsaturated data: max is exact, average within one output LSB."""
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((3, 9, 8, 4))
    x = Value("x", (9, 8, 4), FixedType(12, 3, True, "RND", "SAT"))
    codes = x.type.from_float(xs)
    xf = x.type.to_float(codes)
    for group, wshape in ((1, (5, 4, 3, 3)), (4, (4, 1, 3, 3))):
        w = _he(rng, wshape)
        y = Value("y", (5, 4, wshape[0]))
        layer = Conv("c", x, y, w, rng.standard_normal(wshape[0]) * 0.3, (2, 2), (1, 1, 1, 0), group=group)
        ref = layer.float_eval(xf)
        layer.choose_types(Precision(bits=14, rounding="TRN", ranges={"y": float(np.abs(ref).max())}))
        got = y.type.to_float(layer.fx_eval(codes))
        absx = layer.g.windows(layer.g.as_2d(np.abs(xf)), 0.0).sum(axis=(3, 4))    # (B, Ho, Wo, C)
        absx = absx.sum(axis=-1, keepdims=True) if group == 1 else absx
        bound = 0.5 * layer.w_t.lsb * absx + 0.5 * layer.b_t.lsb + y.type.lsb
        assert np.all(np.abs(got - ref) <= bound + 1e-12)
    for mode, kernel, strides, pads, cip, shape in (("max", (3, 3), (2, 2), (1, 1, 1, 1), False, (5, 4, 4)),
                                                     ("avg", (3, 3), (2, 2), (1, 1, 1, 1), False, (5, 4, 4)),
                                                     ("avg", (3, 2), (1, 2), (2, 0, 1, 1), True, (10, 4, 4))):
        y = Value("y", shape)
        layer = Pool("p", x, y, mode, kernel, strides, pads, count_include_pad=cip)
        ref = layer.float_eval(xf)
        layer.choose_types(Precision(bits=12, ranges={"y": float(np.abs(ref).max())}))
        got = y.type.to_float(layer.fx_eval(codes))
        if mode == "max":
            np.testing.assert_array_equal(got, ref)
        else:
            assert np.abs(got - ref).max() <= 0.5 * y.type.lsb * (1 + 2 ** -7)
    y = Value("y", (4,))
    gp = GlobalPool("g", x, y, "avg")
    ref = gp.float_eval(xf)
    gp.choose_types(Precision(bits=16, ranges={"y": float(np.abs(ref).max())}))
    assert np.abs(y.type.to_float(gp.fx_eval(codes)) - ref).max() <= 0.5 * y.type.lsb * (1 + 2 ** -7)


# ---- generated C++ against the model, bit for bit ----------------------------------------------------------
def _headers_or_skip():
    try:
        toolchain.ap_types_dir()
        toolchain.cxx()
    except Exception as e:      # BackendError / BuildError: no headers or no compiler here
        pytest.skip(str(e))


def _test_codes(rng, t: FixedType, shape, xs_float):
    """Calibration-like samples, uniform codes over the whole range, and the extremes (min/max codes)."""
    normal = t.from_float(xs_float)
    uniform = rng.integers(t.min_code, t.max_code + 1, size=(2, *shape))
    extremes = np.where(rng.random((2, *shape)) < 0.5, t.min_code, t.max_code)
    extremes[1] = t.max_code
    return np.concatenate([normal, uniform, extremes]).astype(np.int64)


def _calibrate_and_check(design: Design, x: Value, codes: np.ndarray, p: Precision, tmp_path, n_cal: int,
                         sanitize=False):
    env = codegen.float_eval_design(design, [x.type.to_float(codes[:n_cal])], keep=True)
    p.ranges.update({k: float(np.abs(v).max()) for k, v in env.items() if k != x.name})
    for layer in design.layers:
        layer.choose_types(p)
    want = codegen.fx_eval_design(design, [codes])
    got = codegen.run_codes(design, [codes], tmp_path, sanitize=sanitize)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    return want


@pytest.mark.parametrize("io", IO)
def test_bit_exact_conv_pool_chain_2d(io, tmp_path):
    """3x3 stride-1 pad-1 conv -> 2x2/2 max pool -> stride-2 conv with asymmetric pads (reuse 5) ->
    3x3/2 pad-1 average pool -> global average pool."""
    _headers_or_skip()
    rng = np.random.default_rng(11)
    x = Value("x", (12, 11, 3), FixedType(10, 3, True, "RND", "SAT"))
    c1, m1 = Value("c1", (12, 11, 4)), Value("m1", (6, 5, 4))
    c2, a1, gp = Value("c2", (4, 2, 5)), Value("a1", (2, 1, 5)), Value("gp", (1, 1, 5))
    layers = [Conv("conv1", x, c1, _he(rng, (4, 3, 3, 3)), rng.standard_normal(4) * 0.2, (1, 1), (1, 1, 1, 1)),
              Pool("pool1", c1, m1, "max", (2, 2), (2, 2), (0, 0, 0, 0)),
              Conv("conv2", m1, c2, _he(rng, (5, 4, 3, 3)), rng.standard_normal(5) * 0.2, (2, 2), (1, 0, 2, 1),
                   reuse_factor=5),
              Pool("pool2", c2, a1, "avg", (3, 3), (2, 2), (1, 1, 1, 1)),
              GlobalPool("gap", a1, gp, "avg")]
    d = Design("chain2d", layers, [x], [gp], io=io)
    codes = _test_codes(rng, x.type, x.shape, rng.standard_normal((2, *x.shape)))
    # The io_stream build runs under the address and undefined-behaviour sanitizers. The vendor's
    # ap_private sign-extends every signed value with a left shift of a negative (or overflowing) int64
    # (ap_private.h clearUnusedBits: UB before C++20, exempted there for clang only), which g++'s UBSan
    # reports for any negative ap_fixed; that one check is turned off, everything else stays on.
    _calibrate_and_check(d, x, codes, Precision(bits=12, rounding="RND", overflow="SAT"), tmp_path, 2,
                         sanitize=(io == "io_stream"))
    assert layers[2].n_mult == math.ceil(180 / 5)


@pytest.mark.parametrize("io", IO)
def test_bit_exact_depthwise_and_pools(io, tmp_path):
    """Depthwise 3x3 (reuse 2) -> 2x2/2 average pool -> 3x3/2 pad-1 max pool -> global max pool, with
    convergent rounding and WRAP overflow."""
    _headers_or_skip()
    rng = np.random.default_rng(12)
    x = Value("x", (10, 9, 6), FixedType(8, 2, True, "RND_CONV", "WRAP"))
    dw, av = Value("dw", (10, 9, 6)), Value("av", (5, 4, 6))
    mx, gm = Value("mx", (3, 2, 6)), Value("gm", (6,))
    layers = [Conv("dw1", x, dw, _he(rng, (6, 1, 3, 3)), rng.standard_normal(6) * 0.1, (1, 1), (1, 1, 1, 1),
                   group=6, reuse_factor=2),
              Pool("avg1", dw, av, "avg", (2, 2), (2, 2), (0, 0, 0, 0)),
              Pool("max1", av, mx, "max", (3, 3), (2, 2), (1, 1, 1, 1)),
              GlobalPool("gmax", mx, gm, "max")]
    d = Design("dwpool", layers, [x], [gm], io=io)
    codes = _test_codes(rng, x.type, x.shape, rng.standard_normal((2, *x.shape)) * 0.8)
    p = Precision(bits=10, rounding="RND_CONV", overflow="WRAP")
    _calibrate_and_check(d, x, codes, p, tmp_path, 2)
    assert layers[0].depthwise and mx.type == av.type and gm.type == av.type


@pytest.mark.parametrize("io", IO)
def test_bit_exact_1d(io, tmp_path):
    """1-D conv (k5, stride 2, pads (2,1), reuse 4) -> max pool k3 pad 1 -> average pool k2/2 with a
    front pad counted in the divisor -> global average to a (C,) output; truncating/saturating types."""
    _headers_or_skip()
    rng = np.random.default_rng(13)
    x = Value("x", (20, 3), FixedType(12, 4, True, "TRN", "SAT"))
    c1, m1, a1, g1 = Value("c1", (10, 6)), Value("m1", (10, 6)), Value("a1", (6, 6)), Value("g1", (6,))
    layers = [Conv("conv1d", x, c1, _he(rng, (6, 3, 5)), rng.standard_normal(6) * 0.1, (2,), (2, 1),
                   reuse_factor=4),
              Pool("mp1d", c1, m1, "max", (3,), (1,), (1, 1)),
              Pool("ap1d", m1, a1, "avg", (2,), (2,), (1, 1), count_include_pad=True),
              GlobalPool("gap1d", a1, g1, "avg")]
    d = Design("conv1d", layers, [x], [g1], io=io)
    codes = _test_codes(rng, x.type, x.shape, rng.standard_normal((2, *x.shape)) * 2)
    _calibrate_and_check(d, x, codes, Precision(bits=11, rounding="TRN_ZERO", overflow="SAT"), tmp_path, 2)


@pytest.mark.parametrize("io", IO)
def test_bit_exact_accum_override_and_unsigned_input(io, tmp_path):
    """An unsigned (post-ReLU style) input; a conv whose accumulator is overridden to a narrow saturating
    type (cast after every addition) with reuse 9 and an overridden result type; then a depthwise conv
    whose accumulator wraps; then a 3x3 average pool with a non-power-of-two divisor everywhere."""
    _headers_or_skip()
    rng = np.random.default_rng(14)
    x = Value("x", (7, 6, 5), FixedType(8, 2, False, "RND", "SAT"))
    c1, c2, a1 = Value("c1", (7, 6, 4)), Value("c2", (6, 5, 4)), Value("a1", (3, 3, 4))
    layers = [Conv("ov1", x, c1, _he(rng, (4, 5, 3, 3)), rng.standard_normal(4) * 0.3, (1, 1), (0, 1, 2, 1),
                   reuse_factor=9),
              Conv("ov2", c1, c2, _he(rng, (4, 1, 2, 2)) * 3, None, (1, 1), (0, 0, 0, 0), group=4),
              Pool("avg3", c2, a1, "avg", (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=True)]
    d = Design("accov", layers, [x], [a1], io=io)
    xs = np.abs(rng.standard_normal((2, *x.shape)))
    codes = _test_codes(rng, x.type, x.shape, xs)
    p = Precision(bits=12, rounding="RND", overflow="SAT",
                  overrides={"ov1": {"accum": FixedType(13, 5, True, "RND", "SAT"),
                                     "result": FixedType(10, 4, True, "RND_INF", "SAT_SYM")},
                             "ov2": {"accum": FixedType(12, 3, True, "TRN_ZERO", "WRAP")}})
    want = _calibrate_and_check(d, x, codes, p, tmp_path, 2)
    assert c1.type == FixedType(10, 4, True, "RND_INF", "SAT_SYM")
    assert not layers[0].acc_exact and not layers[1].acc_exact
    # the narrow accumulators really clip: the model differs from an exact-accumulator run
    exact = Conv("ov1", x, Value("c1", c1.shape, c1.type), layers[0].weight, layers[0].bias, (1, 1), (0, 1, 2, 1))
    exact.choose_types(Precision())
    assert (exact.fx_eval(codes) != layers[0].fx_eval(codes)).any()
    assert want[0].shape == (len(codes), 3, 3, 4)
