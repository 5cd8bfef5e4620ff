"""The fused attention kernel for ``accelc_cuda.Attention`` nodes (see attention_pattern.py).

FlashAttention-style: a block of 128 threads owns 32 query rows (4 threads per row) of one (batch,
head); it walks the keys in tiles of 32 held in shared memory, computes the tile's scores
``q . k * scale + mask`` in fp32, updates each row's running max ``m`` and sum ``l`` (online softmax)
and rescales the partial output before adding ``P @ V``. The [S, S] scores never reach global memory.
Q, K, V and the output are addressed through the node's [batch, head, row, column] strides, so the
kernel reads the projections where they were written and writes the layout its reader wants.
Arithmetic is fp32 on CUDA cores (inputs of any float storage type are widened on load), which is at
least as accurate as the unfused bf16 path it replaces. Rows whose mask is -inf everywhere give 0.
"""
from __future__ import annotations

from ...ir import Node
from ..cpu_amx.emitter import c_float
from .codegen_elementwise import broadcast_view
from .lowering import LowerCtx, load_expr, lowering, storage, store_expr
from .attention_pattern import ATTENTION_OP

BQ, BK, THREADS = 32, 32, 128


def _address(spec, b: str, h: str, row: str, col: str) -> str:
    """The element offset of (b, h, row, col) under a stride spec (offset, sb, sh, srow, scol)."""
    terms = [str(spec[0])] if spec[0] else []
    for var, stride in ((b, spec[1]), (h, spec[2]), (row, spec[3]), (col, spec[4])):
        if stride:
            terms.append(f"(long long)({var}) * {stride}")
    return " + ".join(terms) or "0"


@lowering(ATTENTION_OP)
def lower_attention(ctx: LowerCtx, node: Node) -> None:
    a = node.attrs
    q, k, v = node.inputs[:3]
    mask = node.inputs[3] if a.has_mask else None
    out = node.outputs[0]
    D, DV, Sq, Sk, H = a.d, a.dv, a.sq, a.sk, a.heads
    BH = a.batch * a.heads
    if mask is not None:          # the mask broadcast over the scores [batch(, head), Sq, Sk]
        score_shape = (a.batch, a.heads, Sq, Sk) if a.rank == 4 else (a.batch, Sq, Sk)
        mv = broadcast_view(ctx.shape(mask), score_shape).strides
        m_b, m_h, m_q, m_k = (mv[0], mv[1] if a.rank == 4 else 0, mv[-2], mv[-1])
    dq, dk, dv, do = ctx.dtype(q), ctx.dtype(k), ctx.dtype(v), ctx.dtype(out)
    DPT = -(-DV // 4)          # output dims per thread
    name = ctx.kernel_name()
    em = ctx.kernels
    em.comment(f"Attention '{node.name}': softmax(Q K^T * {a.scale:g}{' + mask' if mask else ''}) V, "
               f"[{a.batch} x {a.heads}] heads x {Sq} queries x {Sk} keys x {D}/{DV} dims, online softmax in fp32; "
               f"Q, K, V read and the output written through strides")
    params = [f"const {storage(dq)}* __restrict__ q", f"const {storage(dk)}* __restrict__ k",
              f"const {storage(dv)}* __restrict__ v"]
    if mask:
        params.append(f"const {storage(ctx.dtype(mask))}* __restrict__ mask")
    params.append(f"{storage(do)}* __restrict__ out")
    with em.block(f"__global__ void __launch_bounds__({THREADS}) {name}({', '.join(params)})"):
        em.line(f"__shared__ float sq[{BQ}][{D}];")
        em.line(f"__shared__ float sk[{BK}][{D + 1}];")
        em.line(f"__shared__ float sv[{BK}][{DV}];")
        em.line(f"__shared__ float sp[{BQ}][{BK + 1}];")
        em.line("const int bh = blockIdx.y, q0 = blockIdx.x * %d;" % BQ)
        em.line(f"const int b = bh / {H}, h = bh % {H};")
        em.line("const int row = threadIdx.x >> 2, lane = threadIdx.x & 3, qi = q0 + row;")
        with em.block(f"for (int t = threadIdx.x; t < {BQ * D}; t += {THREADS})"):
            em.line(f"const int r = t / {D}, d = t % {D};")
            src = "q[" + _address(a.q, "b", "h", "q0 + r", "d") + "]"
            em.line(f"sq[r][d] = q0 + r < {Sq} ? {load_expr(dq, src)} : 0.0f;")
        if mask:
            em.line(f"const long long mbase = (long long)b * {m_b} + (long long)h * {m_h} "
                    f"+ (long long)(qi < {Sq} ? qi : 0) * {m_q};")
        em.line("float m = -CUDART_INF_F, l = 0.0f;")
        em.line(f"float acc[{DPT}];")
        em.line("#pragma unroll")
        em.line(f"for (int j = 0; j < {DPT}; ++j) acc[j] = 0.0f;")
        with em.block(f"for (int k0 = 0; k0 < {Sk}; k0 += {BK})"):
            em.line("__syncthreads();")
            with em.block(f"for (int t = threadIdx.x; t < {BK * D}; t += {THREADS})"):
                em.line(f"const int s = t / {D}, d = t % {D};")
                src = "k[" + _address(a.k, "b", "h", "k0 + s", "d") + "]"
                em.line(f"sk[s][d] = k0 + s < {Sk} ? {load_expr(dk, src)} : 0.0f;")
            with em.block(f"for (int t = threadIdx.x; t < {BK * DV}; t += {THREADS})"):
                em.line(f"const int s = t / {DV}, d = t % {DV};")
                src = "v[" + _address(a.v, "b", "h", "k0 + s", "d") + "]"
                em.line(f"sv[s][d] = k0 + s < {Sk} ? {load_expr(dv, src)} : 0.0f;")
            em.line("__syncthreads();")
            em.line("float tile_max = -CUDART_INF_F;")
            em.line(f"float s_loc[{BK // 4}];")
            em.line("#pragma unroll")
            with em.block(f"for (int j = 0; j < {BK // 4}; ++j)"):
                em.line("const int kk = lane + 4 * j;")
                em.line("float s = 0.0f;")
                em.line("#pragma unroll 8")
                em.line(f"for (int d = 0; d < {D}; ++d) s += sq[row][d] * sk[kk][d];")
                em.line(f"s *= {c_float(a.scale)};")
                if mask:
                    msrc = f"mask[mbase + (long long)(k0 + kk) * {m_k}]"
                    em.line(f"if (k0 + kk < {Sk}) s += {load_expr(ctx.dtype(mask), msrc)};")
                em.line(f"if (k0 + kk >= {Sk}) s = -CUDART_INF_F;")
                em.line("s_loc[j] = s; tile_max = fmaxf(tile_max, s);")
            em.line("tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));")
            em.line("tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));")
            em.line("const float m_new = fmaxf(m, tile_max);")
            em.line("const float corr = m_new == -CUDART_INF_F ? 1.0f : __expf(m - m_new);")
            em.line("float sum = 0.0f;")
            em.line("#pragma unroll")
            with em.block(f"for (int j = 0; j < {BK // 4}; ++j)"):
                em.line("const float p = m_new == -CUDART_INF_F ? 0.0f : __expf(s_loc[j] - m_new);")
                em.line("sp[row][lane + 4 * j] = p; sum += p;")
            em.line("sum += __shfl_xor_sync(0xffffffffu, sum, 1);")
            em.line("sum += __shfl_xor_sync(0xffffffffu, sum, 2);")
            em.line("l = l * corr + sum; m = m_new;")
            em.line("__syncwarp();")
            em.line("#pragma unroll")
            with em.block(f"for (int j = 0; j < {DPT}; ++j)"):
                em.line("const int d = lane + 4 * j;")
                em.line(f"if (d >= {DV}) break;")
                em.line("float o = acc[j] * corr;")
                em.line("#pragma unroll 8")
                em.line(f"for (int kk = 0; kk < {BK}; ++kk) o += sp[row][kk] * sv[kk][d];")
                em.line("acc[j] = o;")
        em.line(f"if (qi >= {Sq}) return;")
        em.line("const float inv = l > 0.0f ? 1.0f / l : 0.0f;")
        em.line("#pragma unroll")
        with em.block(f"for (int j = 0; j < {DPT}; ++j)"):
            em.line("const int d = lane + 4 * j;")
            dst = "out[" + _address(a.out, "b", "h", "qi", "d") + "]"
            em.line(f"if (d < {DV}) {dst} = {store_expr(do, 'acc[j] * inv')};")
    em.blank()
    smem = 4 * (BQ * D + BK * (D + 1) + BK * DV + BQ * (BK + 1))
    if smem > 48 * 1024:
        raise ValueError(f"attention tile needs {smem} bytes of shared memory (head dim too large)")
    args = [ctx.ptr(q), ctx.ptr(k), ctx.ptr(v)] + ([ctx.ptr(mask)] if mask else []) + [ctx.ptr(out)]
    ctx.launch(name, f"dim3({-(-Sq // BQ)}, {BH})", str(THREADS), args)
