"""Channels-last (NHWC) layout for convolutional networks on the CPU.

Why: an NCHW convolution vectorises over pixels and needs an im2col matrix (each input value copied
R*S times) to become a GEMM; that copy cost ResNet's 3x3 convolutions about 30% of their time, and
pixel counts like 7x7 = 49 fill 16-wide vectors badly. In NHWC the output channels (multiples of 16 in
practice) are the vector axis, each output pixel's receptive field is read in place per kernel tap,
and a 1x1 convolution is a plain GEMM over the activations (kernels/accelc_gemm.h, conv2d_nhwc_f32).

Rewrite (backend-local, after attention fusion): the channels-last walk of ``backends/channels_last.py``,
in which an fp32 2-D Conv/FusedConv with constant weights becomes ``accelc_cpu.ConvNhwc`` on the NHWC
twins of its input and residual (its weights packed for the NHWC kernel at compile time) and an fp32 2-D
MaxPool/AveragePool on a twin becomes ``accelc_cpu.PoolNhwc``. A ResNet runs NHWC from the transposed
input image to the global pooling, with no transposes in between.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ...ir import DType, Graph, Node
from ...ir.ops.fused import Activation
from ..channels_last import TO_NCHW, TO_NHWC, NhwcWalk, to_channels_last  # noqa: F401  (re-exported)
from . import packing
from .codegen_context import LowerCtx, lowering, numel, static_shape
from .codegen_linalg import conv_parts, emit_epilogue, f32_operand
from .tuning import Site

CONV_OP = "accelc_cpu.ConvNhwc"
POOL_OP = "accelc_cpu.PoolNhwc"
# Opt-out for comparisons and debugging: ACCELC_CPU_LAYOUT=nchw keeps every convolution NCHW.
LAYOUT_ENV = "ACCELC_CPU_LAYOUT"


@dataclass(frozen=True)
class ConvNhwcAttrs:
    """``shape`` is the kernels' Conv2dShape, field for field: N, C, H, W, K, R, S, OH, OW, stride_h,
    stride_w, pad_top, pad_left, dil_h, dil_w, groups."""
    shape: tuple[int, ...]
    activation: Activation = Activation()
    winograd: int = 0        # Winograd tile size m (F(m x m, 3 x 3)); 0: the direct implicit GEMM


@dataclass(frozen=True)
class PoolNhwcAttrs:
    is_max: bool
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads_begin: tuple[int, int]
    pads_end: tuple[int, int]
    dilations: tuple[int, int]
    count_include_pad: bool = False


def _conv_shape(graph: Graph, node: Node) -> tuple[int, ...] | None:
    """The Conv2dShape of an eligible convolution, else None."""
    if node.op not in ("Conv", "FusedConv"):
        return None
    attrs, _, compute, x, w, bias, res = conv_parts(node)
    out = node.outputs[0]
    if compute != DType.float32 or w not in graph.constants:
        return None
    values = [v for v in (x, w, bias, res, out) if v]
    if any(graph.types[v].dtype != DType.float32 or not graph.types[v].is_static for v in values):
        return None
    xs, ws, ys = static_shape(graph, x), static_shape(graph, w), static_shape(graph, out)
    if len(xs) != 4 or len(ws) != 4 or numel(ys) == 0:
        return None
    if res and static_shape(graph, res) != ys:
        return None          # a broadcast residual keeps the NCHW path
    if bias and numel(static_shape(graph, bias)) != ws[0]:
        return None
    g = attrs.geometry(2, tuple(ws[2:]))
    return (xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], ys[2], ys[3], g.strides[0], g.strides[1],
            g.pads_begin[0], g.pads_begin[1], g.dilations[0], g.dilations[1], attrs.group)


def _pool_attrs(graph: Graph, node: Node) -> PoolNhwcAttrs | None:
    if node.op not in ("MaxPool", "AveragePool") or len(node.outputs) != 1:
        return None
    x = node.inputs[0]
    if graph.types[x].dtype != DType.float32 or len(static_shape(graph, x)) != 4:
        return None
    g = node.attrs.geometry(2)
    return PoolNhwcAttrs(node.op == "MaxPool", tuple(g.kernel), tuple(g.strides), tuple(g.pads_begin),
                         tuple(g.pads_end), tuple(g.dilations), bool(node.attrs.count_include_pad))


# Output tiles (of all images) a layer needs for Winograd to pay: F(4x4)'s 36 transformed filters are 4x
# the bytes of the 3x3 ones, and a layer of few tiles is bound by reading them, so F(4x4) needs
# WINOGRAD_MIN_TILES_F4 of its tiles, else F(2x2) (16 filters, 1.8x) WINOGRAD_MIN_TILES_F2 of its own.
# ResNet-18 at batch 1, 2 threads, interleaved A/B: F(4x4) on 56x56 and 28x28 (196 and 49 tiles) and
# F(2x2) on 14x14 (49 tiles) ran 1.51x the all-direct artifact, F(4x4) on 14x14 (16 tiles) instead
# gained nothing more; F(2x2) on 7x7 (16 tiles, 512 channels) took those layers from 1.59-1.66 to
# 1.36-1.40 ms (+5% on the model).
WINOGRAD_MIN_TILES_F4 = 40
WINOGRAD_MIN_TILES_F2 = 16


def winograd_tile(shape: tuple[int, ...]) -> int:
    """The Winograd tile size m (F(m x m, 3 x 3), kernels/accelc_winograd.cpp) for a convolution of this
    Conv2dShape, 0 for the direct kernel. Only 3x3 stride-1 undilated single-group convolutions with at
    least 16 input and output channels qualify (fewer make each per-position GEMM too thin to gain); the
    larger tile where the output has enough tiles of it (WINOGRAD_MIN_TILES_F4 / _F2)."""
    n, c, _, _, k, r, s, oh, ow, sh, sw, _, _, dh, dw, groups = shape
    if (r, s, sh, sw, dh, dw, groups) != (3, 3, 1, 1, 1, 1, 1) or c < 16 or k < 16:
        return 0
    for m, least in ((4, WINOGRAD_MIN_TILES_F4), (2, WINOGRAD_MIN_TILES_F2)):
        if n * -(-oh // m) * -(-ow // m) >= least:
            return m
    return 0


def count_winograd(graph: Graph) -> int:
    """How many convolutions of a :func:`to_nhwc` graph run as Winograd convolutions."""
    return sum(1 for n in graph.nodes if n.op == CONV_OP and n.attrs.winograd)


def to_nhwc(graph: Graph, winograd: bool = True) -> tuple[Graph, int]:
    """The graph with its convolutions (and what lies between them) in NHWC, and how many convolutions
    were converted (see the module doc). ``winograd``: 3x3 convolutions may run as Winograd
    convolutions (:func:`winograd_tile`)."""
    if os.environ.get(LAYOUT_ENV, "").lower() == "nchw":
        return graph, 0

    def convert(w: NhwcWalk, node: Node) -> bool:
        shape = _conv_shape(graph, node)
        if shape is None:
            return False
        _, act, _, x, wt, bias, res = conv_parts(node)
        ins = (w.nhwc(x), wt, bias, w.nhwc(res) if res else "")
        y = w.produce(node.outputs[0])
        tile = winograd_tile(shape) if winograd else 0
        w.nodes.append(Node(CONV_OP, ins, (y,), ConvNhwcAttrs(shape, act, tile), node.name))
        return True

    def pool(g: Graph, node: Node):
        attrs = _pool_attrs(g, node)
        return None if attrs is None else (POOL_OP, attrs)
    return to_channels_last(graph, convert, pool)


# ---- lowering --------------------------------------------------------------------------------------------
@lowering(CONV_OP)
def lower_conv_nhwc(ctx: LowerCtx, node: Node) -> None:
    a: ConvNhwcAttrs = node.attrs
    x, w, bias, res = (list(node.inputs) + ["", ""])[:4]
    out = node.outputs[0]
    N, C, H, W, K, R, S, OH, OW, sh, sw, pt, pl, dh, dw, groups = a.shape
    em = ctx.em
    m = a.winograd
    packed = packing.pack_winograd_f32(ctx.const(w), m) if m else packing.pack_conv_nhwc_f32(ctx.const(w), groups)
    w_expr = ctx.weight(packed, "float")
    bias_expr = f32_operand(ctx, bias, (K,), (K,), "bias") if bias else None
    res_expr = ctx.ptr(res) if res else None
    if res:
        ctx.write_over(out, res)
    em.comment(f"NHWC {R}x{S} convolution, {C} -> {K} channels, {H}x{W} -> {OH}x{OW}"
               + (f", {groups} groups" if groups > 1 else "") + (f", Winograd F({m}x{m}, 3x3)" if m else ""))
    em.line("const Conv2dShape s{" + ", ".join(str(v) for v in a.shape) + "};")
    if m:
        em.line(f"if (!winograd_supported(s, {m}) || winograd_packed_elems({C}, {K}, {m}) != {packed.size}) "
                "return fail(4, \"internal: Winograd conv weights were packed for another shape\");")
    else:
        em.line(f"if (conv_nhwc_packed_elems(s) != {packed.size}) "
                "return fail(4, \"internal: NHWC conv weights were packed for another shape\");")
    emit_epilogue(ctx, 1.0, 1.0, a.activation, bias_expr, 1 if bias_expr else 0, res_expr, K)
    if m:
        blk = ctx.blocking(Site("winograd", tuple(a.shape), m, a.activation.kind, bool(res)))
        em.line(f"conv2d_winograd_nhwc_f32(s, {m}, {ctx.ptr(x)}, {w_expr}, {ctx.ptr(out)}, ep, {blk});")
    elif groups == C and groups == K:     # depthwise: no work split to tune
        em.line(f"conv2d_nhwc_f32(s, {ctx.ptr(x)}, {w_expr}, {ctx.ptr(out)}, ep);")
    else:
        blk = ctx.blocking(Site("conv", tuple(a.shape), 0, a.activation.kind, bool(res)))
        em.line(f"conv2d_nhwc_f32(s, {ctx.ptr(x)}, {w_expr}, {ctx.ptr(out)}, ep, {blk});")


@lowering(POOL_OP)
def lower_pool_nhwc(ctx: LowerCtx, node: Node) -> None:
    a: PoolNhwcAttrs = node.attrs
    x, out = node.inputs[0], node.outputs[0]
    n, h, w, c = ctx.shape(x)
    _, oh, ow, _ = ctx.shape(out)
    em = ctx.em
    em.line("PoolShape s;")
    em.line(f"s.n = {n}; s.c = {c};")
    fields = {"in": (1, h, w), "out": (1, oh, ow), "kernel": (1,) + a.kernel, "stride": (1,) + a.strides,
              "pad_begin": (0,) + a.pads_begin, "pad_end": (0,) + a.pads_end, "dilation": (1,) + a.dilations}
    for name, vals in fields.items():
        em.line(" ".join(f"s.{name}[{k}] = {int(v)};" for k, v in enumerate(vals)))
    if a.is_max:
        em.line(f"max_pool_nhwc_f32(s, {ctx.ptr(x)}, {ctx.ptr(out)});")
    else:
        em.line(f"avg_pool_nhwc_f32(s, {'true' if a.count_include_pad else 'false'}, {ctx.ptr(x)}, {ctx.ptr(out)});")


__all__ = ["CONV_OP", "POOL_OP", "ConvNhwcAttrs", "PoolNhwcAttrs", "count_winograd", "to_nhwc", "winograd_tile"]
