"""Backend-local: convolutional networks run channels-last (NHWC), their convolutions as plain GEMMs.

Why: an NCHW convolution is ``out[n] (Co x P) = W (Co x K) @ col[n]^T``. That needs an im2col matrix for
every convolution, a 1x1 one included, and one GEMM per image. At ResNet-50 batch 64, the patches are
5.6 GB of writes and reads per forward pass, and each per-image GEMM has only P = 49 to 3136 columns.
In NHWC, a convolution is ``out (N*P x Co) = col (N*P x K) @ W' (K x Co)``, one GEMM over the whole batch:

- A 1x1, stride-1, unpadded convolution needs no col at all. The GEMM reads the activations where they
  are (36 of ResNet-50's 53 convolutions).
- Any other convolution gets ``accelc_cuda.Im2colNhwc``. Its columns run over (kernel row, kernel column,
  channel), so each run of C channels is one contiguous copy. They are written in the GEMM's operand type
  and padded with zeros to a multiple of 8, so every row starts on 16 bytes. A convolution whose input is
  not NHWC (the network's input image) reads it NCHW, through strides: there is no transpose kernel.
- The convolution becomes an ordinary ``FusedGemm``: bias, activation and residual, with the residual's
  NHWC twin. So it takes the GEMM paths the encoders use: sm_90a CUTLASS 3 with an fp32 bias row, stream-K,
  and 16-bit results for 16-bit readers (``narrow.py``, to which the im2col is such a reader).
- Pooling runs NHWC too (``accelc_cuda.PoolNhwc``): neighbouring threads read neighbouring channels.
- The walk is ``backends/channels_last.py``, shared with the CPU backend.

A grouped or depthwise convolution whose input is already NHWC runs NHWC too
(``accelc_cuda.GroupConvNhwc``): the direct kernel, with neighbouring threads on neighbouring channels.

The numbers are those of the NCHW path: the same rounded operands and fp32 accumulation, with the bias
added in fp32 (the NCHW path folds it into the GEMM as two 16-bit columns). Only the summation order
differs. ``ACCELC_CUDA_LAYOUT=nchw`` at compile time keeps every convolution NCHW (for comparisons).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ...ir import DType, Graph, Node
from ...ir.ops.conv import PoolAttrs
from ...ir.ops.fused import FusedConvAttrs, FusedGemmAttrs
from ..channels_last import NhwcWalk, to_channels_last
from ..cpu_amx.codegen_context import static_shape
from .codegen_linalg import conv_parts, lower_direct_conv, operand_dtype
from .codegen_reduce import emit_pool
from .lowering import FLOATS, LowerCtx, load_expr, lowering, storage, store_expr

IM2COL_OP = "accelc_cuda.Im2colNhwc"
POOL_OP = "accelc_cuda.PoolNhwc"
GROUP_CONV_OP = "accelc_cuda.GroupConvNhwc"
LAYOUT_ENV = "ACCELC_CUDA_LAYOUT"
_CONV_TYPES = (DType.float32, DType.float16, DType.bfloat16)


@dataclass(frozen=True)
class Im2colAttrs:
    """col[n, oh, ow, (i * kw + j) * C + c] = x[n, c, oh * sh - ph + i * dh, ow * sw - pw + j * dw] (zero
    outside the image), columns k..kp zero. ``nchw``: x is stored [N, C, H, W], else [N, H, W, C]."""
    nchw: bool
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int]          # top, left (the output shape fixes the rest)
    dilations: tuple[int, int]
    k: int                         # kh * kw * C
    kp: int                        # k padded to a multiple of 8
    dtype: DType                   # col's type: the GEMM's operand type


@dataclass(frozen=True)
class PoolNhwcAttrs:
    is_max: bool
    pool: PoolAttrs


def _convert(w: NhwcWalk, node: Node) -> bool:
    """Replaces a single-group 2-D convolution with constant weights by [Im2colNhwc +] FusedGemm, and a
    grouped one over an NHWC twin by GroupConvNhwc."""
    g = w.source
    if node.op not in ("Conv", "FusedConv"):
        return False
    conv, bias, res, act, compute = conv_parts(node)
    x, wt, out = node.inputs[0], node.inputs[1], node.outputs[0]
    if wt not in g.constants or any(not g.types[v].is_static for v in (x, out)):
        return False
    xs, ys, ws = static_shape(g, x), static_shape(g, out), tuple(g.constants[wt].shape)
    if len(xs) != 4 or len(ws) != 4 or g.types[x].dtype not in _CONV_TYPES or g.types[out].dtype not in _CONV_TYPES:
        return False
    if bias is not None and (bias not in g.constants or g.constants[bias].size != ws[0]):
        return False
    if res is not None and static_shape(g, res) != ys:
        return False
    if conv.group != 1:
        if x not in w.twin:
            return False
        ins = (w.twin[x], wt, bias or "", w.nhwc(res) if res else "")
        y = w.produce(out)
        w.nodes.append(Node(GROUP_CONV_OP, ins, (y,), FusedConvAttrs(conv, act, compute), node.name))
        return True
    N, C, _, _ = xs
    CO, _, KH, KW = ws
    _, _, OH, OW = ys
    geo = conv.geometry(2, (KH, KW))
    el = operand_dtype(None, g.types[x].dtype, compute)[0]    # the GEMM's operand type (no tf32 for col)
    K = KH * KW * C
    direct = (KH, KW) == (1, 1) and tuple(geo.strides) == (1, 1) and not any(geo.pads_begin) \
        and not any(geo.pads_end) and x in w.twin
    if direct:
        a, Kp = w.twin[x], K
    else:
        Kp = -(-K // 8) * 8
        nchw = x not in w.twin
        a = w.new_value(f"{out}_col", out, (N, OH, OW, Kp), el)
        attrs = Im2colAttrs(nchw, (KH, KW), tuple(geo.strides), tuple(geo.pads_begin), tuple(geo.dilations), K, Kp, el)
        w.nodes.append(Node(IM2COL_OP, (x if nchw else w.twin[x],), (a,), attrs, f"{node.name}_im2col"))
    # W'[(i * kw + j) * C + c, co] = w[co, c, i, j], zero rows up to Kp
    wk = np.zeros((Kp, CO), np.float32)
    wk[:K] = np.asarray(g.constants[wt], np.float32).transpose(2, 3, 1, 0).reshape(K, CO)
    wk.flags.writeable = False
    b_name = w.g.add_constant(wk, w.g.fresh_name(f"{wt}_nhwc"))
    ins = (a, b_name, bias or "", w.nhwc(res) if res else "")
    y = w.produce(out)
    w.nodes.append(Node("FusedGemm", ins if res else ins[:3] if bias else ins[:2], (y,),
                        FusedGemmAttrs(activation=act, compute=compute), node.name))
    return True


def _pool(g: Graph, node: Node):
    t = g.types[node.inputs[0]]
    if len(node.outputs) != 1 or t.dtype not in FLOATS or len(t.shape) != 4:
        return None
    return POOL_OP, PoolNhwcAttrs(node.op == "MaxPool", node.attrs)


def channels_last(graph: Graph) -> tuple[Graph, int]:
    """The graph with its single-group 2-D convolutions (and what lies between them) in NHWC, and how many
    convolutions were converted. Nothing changes under ``ACCELC_CUDA_LAYOUT=nchw``."""
    if os.environ.get(LAYOUT_ENV, "").lower() == "nchw":
        return graph, 0
    return to_channels_last(graph, _convert, _pool, _CONV_TYPES)


# ---- lowerings ---------------------------------------------------------------------------------------------
VEC = 8      # channels one im2col thread moves (16 bytes of a 16-bit col)


@lowering(IM2COL_OP)
def lower_im2col(ctx: LowerCtx, node: Node) -> None:
    a: Im2colAttrs = node.attrs
    x, col = node.inputs[0], node.outputs[0]
    xs = ctx.shape(x)
    N, C, H, W = xs if a.nchw else (xs[0], xs[3], xs[1], xs[2])
    _, OH, OW, Kp = ctx.shape(col)
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = a.kernel, a.strides, a.pads, a.dilations
    dt, el = ctx.dtype(x), ctx.dtype(col)
    vec = not a.nchw and C % VEC == 0
    per = VEC if vec else 1
    n = N * OH * OW * Kp // per
    name = ctx.kernel_name()
    k = ctx.kernels
    src = "NCHW" if a.nchw else "NHWC"
    k.comment(f"{node.op} '{node.name}': {KH}x{KW} patches of a {src} [{N}, {C}, {H}, {W}] input, stride {sh}x{sw}, "
              f"-> col [{N * OH * OW}, {Kp}] {el.short}" + (f" ({a.k} + {Kp - a.k} zero columns)" if Kp > a.k else "")
              + (f"; {VEC} channels per thread" if vec else ""))

    def address(c: str) -> str:
        if a.nchw:
            return f"((nb * {C} + {c}) * {H}LL + h) * {W} + w"
        return f"((nb * {H} + h) * {W}LL + w) * {C} + {c}"
    with k.block(f"__global__ void __launch_bounds__(256) {name}(const {storage(dt)}* __restrict__ x, "
                 f"{storage(el)}* __restrict__ col)"):
        with k.block(f"for (long long t = blockIdx.x * 256LL + threadIdx.x; t < {n}LL; t += gridDim.x * 256LL)"):
            k.line(f"const int kk = int(t % {Kp // per}) * {per};")
            k.line(f"const long long pix = t / {Kp // per};")
            k.line(f"const int ow = int(pix % {OW}), oh = int((pix / {OW}) % {OH});")
            k.line(f"const long long nb = pix / {OW * OH};")
            k.line(f"const int tap = kk / {C}, c = kk % {C};")
            k.line(f"const int h = oh * {sh} - {ph} + (tap / {KW}) * {dh}, w = ow * {sw} - {pw} + (tap % {KW}) * {dw};")
            k.line(f"const bool inside = kk < {a.k} && h >= 0 && h < {H} && w >= 0 && w < {W};")
            if not vec:
                k.line(f"col[t] = inside ? {store_expr(el, load_expr(dt, 'x[' + address('c') + ']'))} : "
                       f"{store_expr(el, '0.0f')};")
            elif dt == el:     # a copy of 16 bytes (or two of them for fp32)
                k.line(f"using V = accelc::Vec<{storage(el)}, {VEC}>;")
                k.line("V v;")
                k.line(f"if (inside) v = *reinterpret_cast<const V*>(x + {address('c')});")
                k.line(f"else for (int e = 0; e < {VEC}; ++e) v.v[e] = {store_expr(el, '0.0f')};")
                k.line("*reinterpret_cast<V*>(col + t * " + str(VEC) + ") = v;")
            else:              # convert on the way
                k.line(f"accelc::Vec<{storage(dt)}, {VEC}> in;")
                k.line(f"if (inside) in = *reinterpret_cast<const accelc::Vec<{storage(dt)}, {VEC}>*>(x + {address('c')});")
                k.line(f"accelc::Vec<{storage(el)}, {VEC}> v;")
                k.line(f"for (int e = 0; e < {VEC}; ++e) v.v[e] = inside ? {store_expr(el, load_expr(dt, 'in.v[e]'))} : "
                       f"{store_expr(el, '0.0f')};")
                k.line(f"*reinterpret_cast<accelc::Vec<{storage(el)}, {VEC}>*>(col + t * {VEC}) = v;")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // 256), 65535 * 8))), "256", [ctx.ptr(x), ctx.ptr(col)])


@lowering(GROUP_CONV_OP)
def lower_group_conv_nhwc(ctx: LowerCtx, node: Node) -> None:
    lower_direct_conv(ctx, node, nhwc=True)


@lowering(POOL_OP)
def lower_pool_nhwc(ctx: LowerCtx, node: Node) -> None:
    a: PoolNhwcAttrs = node.attrs
    emit_pool(ctx, node, a.pool, a.is_max, nhwc=True)


__all__ = ["GROUP_CONV_OP", "IM2COL_OP", "LAYOUT_ENV", "POOL_OP", "Im2colAttrs", "PoolNhwcAttrs", "channels_last"]
