"""The CPU backend's channels-last rewrite (backends/cpu_amx/layout.py): where transposes go, and that the
NHWC convolutions, pools and everything between them compute what the NCHW graph does.

End-to-end cases run the generated library against the reference interpreter (helpers from
test_backend_cpu), so each conversion rule is checked on real numbers, with the NCHW opt-out
(ACCELC_CPU_LAYOUT=nchw) as a second opinion where a case could hide a layout mistake.
"""
from __future__ import annotations

import numpy as np
import pytest

from accelc.backends.cpu_amx import layout
from accelc.backends.cpu_amx.packing import pack_b_f32, pack_conv_nhwc_f32
from accelc.ir import DType, Graph
from accelc.ir.ops.conv import ConvAttrs, PoolAttrs
from accelc.ir.ops.fused import Activation, FusedConvAttrs
from accelc.ir.ops.reduce import ReduceAttrs
from accelc.ir.ops.shape import ConcatAttrs, FlattenAttrs, ReshapeAttrs
from accelc.ir.ops.normalization import SoftmaxAttrs
from test_backend_cpu import F32, build, cache_dir, check, graph_with_inputs, random_feeds  # noqa: F401 (fixture)

RNG = np.random.default_rng(21)


def conv(g: Graph, x: str, cin: int, cout: int, k: int = 3, *, stride: int = 1, pad: int | None = None,
         group: int = 1, dil: int = 1, act: str = "relu", residual: str | None = None, bias: bool = True) -> str:
    pad = (k // 2) * dil if pad is None else pad
    w = g.add_constant((RNG.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k))
                       .astype(np.float32))
    ins = [x, w, g.add_constant(RNG.standard_normal(cout).astype(np.float32) * 0.1) if bias else ""]
    if residual:
        ins.append(residual)
    attrs = FusedConvAttrs(ConvAttrs(strides=(stride, stride), pads=(pad,) * 4, dilations=(dil, dil), group=group),
                           Activation(act))
    return g.add_node("FusedConv", ins, attrs)[0]


def ops(g: Graph) -> dict[str, int]:
    return g.ops_histogram()


# ---- the rewrite itself -----------------------------------------------------------------------------------
def resnet_block_graph() -> Graph:
    g, (x,) = graph_with_inputs((F32, (1, 3, 32, 32)))
    s = conv(g, x, 3, 16, 7, stride=2)
    (p,) = g.add_node("MaxPool", [s], PoolAttrs(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)))
    a = conv(g, p, 16, 16)
    b = conv(g, a, 16, 16, act="none")
    (add,) = g.add_node("Add", [b, p])
    (r,) = g.add_node("Relu", [add])
    d = conv(g, r, 16, 32, 1, stride=2, act="none")
    c = conv(g, r, 16, 32, stride=2)
    e = conv(g, c, 32, 32, residual=d)
    (gp,) = g.add_node("GlobalAveragePool", [e])
    g.outputs = g.add_node("Flatten", [gp], FlattenAttrs(1), outputs=["features"])
    return g


def test_resnet_block_runs_nhwc_from_the_input_transpose_to_the_pooling():
    g = resnet_block_graph()
    out, n = layout.to_nhwc(g)
    assert n == 6
    hist = ops(out)
    assert hist[layout.CONV_OP] == 6 and hist[layout.POOL_OP] == 1 and "FusedConv" not in hist
    transposes = [nd for nd in out.nodes if nd.op == "Transpose"]
    # one into NHWC (the image), one out of it (the pooled [1,1,1,C] -> [1,C,1,1], a view); nothing between
    assert [t.attrs.perm for t in transposes] == [layout.TO_NHWC, layout.TO_NCHW]
    assert out.types[transposes[1].inputs[0]].shape == (1, 1, 1, 32)
    assert hist["ReduceMean"] == 1 and hist["Add"] == 1 and hist["Relu"] == 1
    assert out.outputs == ["features"] and out.types["features"] == g.types["features"]
    # the unconverted graph is untouched
    assert "FusedConv" in ops(g)


def test_values_still_read_as_nchw_get_one_transpose_each():
    g, (x,) = graph_with_inputs((F32, (2, 8, 6, 6)))
    a = conv(g, x, 8, 8)
    (sm,) = g.add_node("Softmax", [a], SoftmaxAttrs(1))        # channel softmax: not converted
    (rs,) = g.add_node("Reshape", [a, g.add_constant(np.array([2, -1], np.int64))], ReshapeAttrs())
    b = conv(g, a, 8, 8)
    g.outputs = [sm, rs, b, a]
    out, n = layout.to_nhwc(g)
    assert n == 2
    back = [nd for nd in out.nodes if nd.op == "Transpose" and nd.attrs.perm == layout.TO_NCHW]
    assert sorted(nd.outputs[0] for nd in back) == sorted([a, b])   # a once for all its NCHW readers
    assert out.outputs == g.outputs


def test_bf16_and_one_dimensional_convolutions_stay_nchw():
    g, (x, y) = graph_with_inputs((F32, (1, 4, 9, 9)), (F32, (1, 4, 20)))
    w = g.add_constant(RNG.standard_normal((4, 4, 3, 3)).astype(np.float32))
    (a,) = g.add_node("FusedConv", [x, w], FusedConvAttrs(ConvAttrs(pads=(1,) * 4), compute=DType.bfloat16))
    w1 = g.add_constant(RNG.standard_normal((4, 4, 3)).astype(np.float32))
    (b,) = g.add_node("Conv", [y, w1], ConvAttrs(pads=(1, 1)))
    g.outputs = [a, b]
    out, n = layout.to_nhwc(g)
    assert n == 0 and out is g


def test_opt_out_keeps_nchw(monkeypatch):
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw")
    g = resnet_block_graph()
    out, n = layout.to_nhwc(g)
    assert n == 0 and out is g


@pytest.mark.parametrize("groups,cg,mg,k", [(1, 5, 20, 3), (2, 3, 17, 1), (4, 2, 2, 3), (6, 1, 1, 3), (3, 4, 1, 5)])
def test_nhwc_weight_packing_formula(groups, cg, mg, k):
    w = RNG.standard_normal((groups * mg, cg, k, k)).astype(np.float32)
    got = pack_conv_nhwc_f32(w, groups)
    if cg == 1 and mg == 1:
        expected = np.array([w[c, 0, r, s] for r in range(k) for s in range(k) for c in range(groups)], np.float32)
    else:
        parts = []
        for gi in range(groups):
            m = np.zeros((k * k * cg, mg), np.float32)
            for r in range(k):
                for s in range(k):
                    for c in range(cg):
                        m[(r * k + s) * cg + c] = w[gi * mg:(gi + 1) * mg, c, r, s]
            parts.append(pack_b_f32(m))
        expected = np.concatenate(parts)
    np.testing.assert_array_equal(got, expected)


# ---- end to end -------------------------------------------------------------------------------------------
TOL = (1e-4, 1e-4)


def test_resnet_block_matches_reference(tmp_path, cache_dir):
    g = resnet_block_graph()
    parts, model = build(g, tmp_path / "inspect", cache_dir)
    model.close()
    assert parts.manifest["nhwc_convolutions"] == 6
    assert "conv2d_nhwc_f32" in parts.files["src/model.cpp"].decode()
    check(g, tmp_path, cache_dir, tol=TOL)


@pytest.mark.parametrize("batch", [1, 2])
def test_geometries_groups_and_depthwise(tmp_path, cache_dir, batch):
    g, (x,) = graph_with_inputs((F32, (batch, 12, 13, 11)))
    a = conv(g, x, 12, 24, 3, stride=2)                        # stride 2, odd sizes
    b = conv(g, a, 24, 24, 3, group=24, act="none")            # depthwise
    c = conv(g, b, 24, 24, 5, group=3, dil=2, act="silu")      # groups of 8 -> 8, dilation
    d = conv(g, c, 24, 40, 1, act="none", bias=False)          # 1x1 GEMM path, no bias
    e = conv(g, d, 40, 40, 3, group=40, stride=2, pad=0)       # depthwise stride 2, no padding
    g.outputs = [e, c]
    out, n = layout.to_nhwc(g)
    assert n == 5
    check(g, tmp_path, cache_dir, tol=TOL)


@pytest.mark.parametrize("pool", [
    ("MaxPool", dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),
    ("MaxPool", dict(kernel_shape=(2, 2), strides=(2, 2), ceil_mode=True)),
    ("AveragePool", dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=True)),
    ("AveragePool", dict(kernel_shape=(3, 2), strides=(1, 2), pads=(1, 0, 1, 1), ceil_mode=True)),
    ("MaxPool", dict(kernel_shape=(2, 2), dilations=(2, 2), pads=(0, 0, 1, 1)))])
def test_pools_between_convolutions(tmp_path, cache_dir, pool):
    op, attrs = pool
    g, (x,) = graph_with_inputs((F32, (2, 3, 15, 14)))
    a = conv(g, x, 3, 20)                                      # 20 channels: a vector tail in the pool
    (p,) = g.add_node(op, [a], PoolAttrs(**attrs))
    b = conv(g, p, 20, 16)
    (gm,) = g.add_node("GlobalMaxPool", [b])
    g.outputs = [gm, p]
    out, _ = layout.to_nhwc(g)
    assert ops(out)[layout.POOL_OP] == 1 and ops(out)["ReduceMax"] == 1
    check(g, tmp_path, cache_dir, tol=TOL)


def test_max_pool_keeps_nan_and_inf(tmp_path, cache_dir):
    g, (x,) = graph_with_inputs((F32, (1, 3, 8, 8)))
    a = conv(g, x, 3, 9, act="none")
    (p,) = g.add_node("MaxPool", [a], PoolAttrs(kernel_shape=(2, 2), strides=(2, 2)))
    g.outputs = [p]
    feeds = random_feeds(g)
    feeds[x][0, :, 0, 0] = np.nan                               # one NaN pixel: NaN in every channel there
    feeds[x][0, 1, 5, 5] = np.inf
    got = check(g, tmp_path, cache_dir, feeds=feeds, tol=TOL)
    assert np.isnan(got[p][0, :, 0, 0]).all()


def test_elementwise_concat_and_mixed_readers(tmp_path, cache_dir):
    g, (x, y) = graph_with_inputs((F32, (1, 8, 10, 10)), (F32, (1, 8, 10, 10)))
    a = conv(g, x, 8, 8, act="none")
    b = conv(g, y, 8, 8, 1, act="none")
    (s,) = g.add_node("Add", [a, b])
    (m,) = g.add_node("Mul", [s, g.add_constant(np.array(0.5, np.float32))])
    (r,) = g.add_node("Relu", [m])
    (cat,) = g.add_node("Concat", [r, a], ConcatAttrs(1))
    c = conv(g, cat, 16, 8)
    (mean,) = g.add_node("ReduceMean", [c], ReduceAttrs((1,), True))   # NCHW reader of a converted value
    (bias_add,) = g.add_node("Add", [c, y])                             # y has no NHWC twin: NCHW Add
    g.outputs = [mean, bias_add, cat]
    out, n = layout.to_nhwc(g)
    assert n == 3 and ops(out)["Concat"] == 1
    check(g, tmp_path, cache_dir, tol=TOL)


def test_residual_is_written_over_only_where_it_is_read_for_the_last_time(tmp_path, cache_dir):
    g, (x, y) = graph_with_inputs((F32, (1, 8, 10, 10)), (F32, (1, 8, 10, 10)))
    a = conv(g, x, 8, 8)
    b = conv(g, a, 8, 8, residual=a)             # the residual is also the input: not in place
    c = conv(g, b, 8, 8, residual=y)             # y's channels-last twin, read here only: in place
    d = conv(g, c, 8, 8, residual=b)             # b is read again below: not in place
    e = conv(g, d, 8, 8, 1, residual=c)          # c's last reader: in place
    (f,) = g.add_node("Add", [e, b])
    h = conv(g, f, 8, 8, residual=d)             # d is also a graph output: not in place
    g.outputs = [h, d]
    parts, model = build(g, tmp_path / "inspect", cache_dir)
    model.close()
    src = parts.files["src/model.cpp"].decode()
    assert src.count("in place: the output takes the bytes of") == 2
    feeds = random_feeds(g, seed=5)
    given = {k: v.copy() for k, v in feeds.items()}
    check(g, tmp_path, cache_dir, feeds=feeds, tol=TOL)
    for k in feeds:                              # the caller's arrays are never written
        np.testing.assert_array_equal(feeds[k], given[k])


def test_nhwc_and_nchw_builds_agree(tmp_path, cache_dir, monkeypatch):
    g = resnet_block_graph()
    feeds = random_feeds(g, seed=3)
    _, nhwc = build(g, tmp_path / "nhwc", cache_dir)
    try:
        a = nhwc(feeds)["features"]
    finally:
        nhwc.close()
    monkeypatch.setenv(layout.LAYOUT_ENV, "nchw")
    parts, nchw = build(g, tmp_path / "nchw", cache_dir)
    try:
        b = nchw(feeds)["features"]
    finally:
        nchw.close()
    assert parts.manifest["nhwc_convolutions"] == 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_inspect_reports_backend_rewrites(capsys):
    from accelc.cli import _print_manifest
    _print_manifest({"backend": {"name": "cpu_amx", "nhwc_convolutions": 6, "fused_attention": 0,
                                 "merged_gemm_groups": 2}})
    out = capsys.readouterr().out
    assert "backend rewrites: 6 channels-last convolutions, 2 merged GEMM groups" in out
    _print_manifest({"backend": {"name": "cpu_amx", "nhwc_convolutions": 6, "winograd_convolutions": 4}})
    assert "backend rewrites: 6 channels-last convolutions, 4 of them Winograd" in capsys.readouterr().out
    assert "fused attentions" not in out


# ---- Winograd -----------------------------------------------------------------------------------------------
def _shape(n, c, hw, k, kernel=3, stride=1, dil=1, groups=1):
    out = (hw + 2 * (kernel // 2) * dil - dil * (kernel - 1) - 1) // stride + 1
    p = (kernel // 2) * dil
    return (n, c, hw, hw, k, kernel, kernel, out, out, stride, stride, p, p, dil, dil, groups)


@pytest.mark.parametrize("shape,tile", [
    (_shape(1, 64, 56, 64), 4),        # ResNet stage 1: 196 F(4x4) tiles
    (_shape(1, 128, 28, 128), 4),      # 49 tiles
    (_shape(1, 256, 14, 256), 2),      # 16 F(4x4) tiles are too few; 49 F(2x2) tiles
    (_shape(3, 256, 14, 256), 4),      # a batch of 3 has 48
    (_shape(1, 512, 7, 512), 2),       # 4 F(4x4) tiles, 16 F(2x2) tiles
    (_shape(1, 512, 6, 512), 0),       # 9 F(2x2) tiles: direct
    (_shape(4, 512, 7, 512), 2),
    (_shape(10, 512, 7, 512), 4),
    (_shape(1, 8, 56, 64), 0),         # too few input channels
    (_shape(1, 64, 56, 8), 0),         # too few output channels
    (_shape(1, 64, 56, 64, stride=2), 0),
    (_shape(1, 64, 56, 64, dil=2), 0),
    (_shape(1, 64, 56, 64, groups=2), 0),
    (_shape(1, 64, 56, 64, kernel=5), 0),
    (_shape(1, 64, 56, 64, kernel=1), 0),
])
def test_winograd_tile_rule(shape, tile):
    assert layout.winograd_tile(shape) == tile


def winograd_graph() -> Graph:
    g, (x, y) = graph_with_inputs((F32, (2, 16, 20, 18)), (F32, (1, 16, 14, 14)))
    a = conv(g, x, 16, 24)                           # F(4x4): 2 * 5 * 5 = 50 tiles
    b = conv(g, a, 24, 24, act="none", residual=a)   # F(4x4), the residual is also the input
    c = conv(g, b, 24, 24, residual=a)               # F(4x4), a's last reader: in place
    d = conv(g, c, 24, 32, act="silu", bias=False)   # F(4x4), no bias
    e = conv(g, y, 16, 16)                           # F(2x2): 49 tiles
    f = conv(g, e, 16, 16, stride=2)                 # direct
    h = conv(g, e, 16, 16, residual=e)               # F(2x2)
    g.outputs = [d, f, h]
    return g


def test_winograd_convolutions_match_reference(tmp_path, cache_dir):
    g = winograd_graph()
    parts, model = build(g, tmp_path / "inspect", cache_dir)
    model.close()
    assert parts.manifest["nhwc_convolutions"] == 7 and parts.manifest["winograd_convolutions"] == 6
    src = parts.files["src/model.cpp"].decode()
    assert src.count("conv2d_winograd_nhwc_f32(s, 4,") == 4 and src.count("conv2d_winograd_nhwc_f32(s, 2,") == 2
    assert src.count("in place: the output takes the bytes of") == 1
    feeds = random_feeds(g, seed=8)
    given = {k: v.copy() for k, v in feeds.items()}
    check(g, tmp_path, cache_dir, feeds=feeds, tol=TOL)
    for k in feeds:
        np.testing.assert_array_equal(feeds[k], given[k])


def test_winograd_opt_out_runs_every_convolution_directly(tmp_path, cache_dir):
    from accelc.backends.base import BackendOptions
    from accelc.backends.cpu_amx.backend import CpuAmxBackend
    from accelc.targets import get_target
    from test_backend_cpu import Loaded
    g = winograd_graph()
    feeds = random_feeds(g, seed=9)
    results = []
    for winograd in (True, False):
        parts = CpuAmxBackend().lower(g, get_target("host"), BackendOptions(cache_dir=cache_dir, winograd=winograd))
        assert parts.manifest["winograd_convolutions"] == (6 if winograd else 0)
        assert ("conv2d_winograd_nhwc_f32" in parts.files["src/model.cpp"].decode()) == winograd
        model = Loaded(parts, tmp_path / str(winograd), 0)
        try:
            results.append(model(feeds))
        finally:
            model.close()
    for name in g.outputs:
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-4, atol=1e-4)


def se_block_graph() -> Graph:
    """A squeeze-and-excitation block: the global pooling feeds two 1x1 convolutions whose sigmoid gates the
    block's channels (a [N, C, 1, 1] x [N, C, H, W] Mul), then a per-channel constant scale [C, 1, 1]."""
    g, (x,) = graph_with_inputs((F32, (2, 3, 12, 12)))
    a = conv(g, x, 3, 16)
    (gp,) = g.add_node("GlobalAveragePool", [a])
    s = conv(g, gp, 16, 4, 1, pad=0)
    s = conv(g, s, 4, 16, 1, pad=0, act="sigmoid")
    (m,) = g.add_node("Mul", [a, s])
    (m,) = g.add_node("Mul", [m, g.add_constant(RNG.standard_normal((16, 1, 1)).astype(np.float32))])
    b = conv(g, m, 16, 8)
    g.outputs = [b]
    return g


def test_squeeze_and_excitation_stays_channels_last(tmp_path, cache_dir):
    """The pooled [N, C, 1, 1] is read channels-last by the SE convolutions, the gate and the per-channel
    scale broadcast over the NHWC twins: one transpose in (the image) and one out (the result), none between
    (the pooled value's NCHW view, which nothing reads, is removed)."""
    g = se_block_graph()
    out, n = layout.to_nhwc(g)
    assert n == 4
    transposes = [nd for nd in out.nodes if nd.op == "Transpose"]
    assert [t.attrs.perm for t in transposes] == [layout.TO_NHWC, layout.TO_NCHW]
    assert ops(out)["Mul"] == 2
    check(g, tmp_path, cache_dir)
