"""The fused attention kernels for ``accelc_cuda.Attention`` nodes (see attention_pattern.py).

Both are FlashAttention-style: a block owns a tile of query rows of one (batch, head) and walks the keys
in tiles held in shared memory. For each key tile it computes the scores ``q . k * scale + mask``,
updates each row's running max ``m`` and sum ``l`` (online softmax) and rescales the partial output
before adding ``P @ V``. The [S, S] scores never reach global memory. Q, K, V and the output are
addressed through the node's [batch, head, row, column] strides, so the kernel reads the projections
where they were written and writes the layout its reader wants. Rows whose mask is -inf everywhere give 0.

- Tensor cores (``attrs.tensor_core`` is bf16 or fp16, i.e. both products of the graph were computed in
  that type): warp matrix operations (``nvcuda::wmma``, 16x16x16, fp32 accumulate). Each warp owns 16
  query rows. Q and the key/value tiles are staged in shared memory in the 16-bit type; the scores go
  to shared memory in fp32, two lanes per row compute the softmax in fp32 and write P in the 16-bit
  type, and the output accumulator [rows, DV] lives in shared memory in fp32, where it is rescaled per
  row (a fragment's element-to-row mapping is unspecified, so it cannot be rescaled in registers)
  before ``P @ V`` is added on tensor cores. Rounding Q, K, P and V to the 16-bit type is what the
  graph's own products do. The query tile is 64, 32 or 16 rows, the largest that still gives every SM
  of the target a block, and the key tile 64 or 32, the largest that fits 48 KiB of shared memory.
- CUDA cores otherwise: a block of 128 threads owns 32 query rows (4 threads per row) and key tiles of
  32; all arithmetic is fp32 (inputs of any float storage type are widened on load), which is at least
  as accurate as the unfused path it replaces.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...ir import Node
from ..cpu_amx.emitter import c_float
from .codegen_elementwise import broadcast_view
from .lowering import LowerCtx, load_expr, lowering, storage, store_expr
from .attention_pattern import ATTENTION_OP

BQ, BK, THREADS = 32, 32, 128                  # the fp32 kernel
SHARED_LIMIT = 48 * 1024                       # static shared memory per block


def _address(spec, b: str, h: str, row: str, col: str) -> str:
    """The element offset of (b, h, row, col) under a stride spec (offset, sb, sh, srow, scol)."""
    terms = [str(spec[0])] if spec[0] else []
    for var, stride in ((b, spec[1]), (h, spec[2]), (row, spec[3]), (col, spec[4])):
        if stride:
            terms.append(f"(long long)({var}) * {stride}")
    return " + ".join(terms) or "0"


def _mask_strides(ctx: LowerCtx, node: Node) -> tuple[int, int, int, int] | None:
    """(batch, head, query, key) strides of the mask broadcast over the scores [batch(, head), Sq, Sk]."""
    a = node.attrs
    if not a.has_mask:
        return None
    score_shape = (a.batch, a.heads, a.sq, a.sk) if a.rank == 4 else (a.batch, a.sq, a.sk)
    mv = broadcast_view(ctx.shape(node.inputs[3]), score_shape).strides
    return mv[0], mv[1] if a.rank == 4 else 0, mv[-2], mv[-1]


def _params(ctx: LowerCtx, node: Node) -> list[str]:
    """The kernel's parameters: q, k, v, the mask if any, out."""
    ins = list(node.inputs[:4 if node.attrs.has_mask else 3])
    params = [f"const {storage(ctx.dtype(v))}* __restrict__ {n}" for v, n in zip(ins, ("q", "k", "v", "mask"))]
    return params + [f"{storage(ctx.dtype(node.outputs[0]))}* __restrict__ out"]


def _mask_score(em, ctx: LowerCtx, mask: str | None, m_k: int, sk: int, col: str, slot: str) -> None:
    """Adds the mask to score ``s`` of key ``k0 + col``, sets keys past the end to -inf, keeps the score in
    ``s_loc[slot]`` and folds it into the thread's ``tile_max``."""
    if mask:
        msrc = f"mask[mbase + (long long)(k0 + {col}) * {m_k}]"
        em.line(f"if (k0 + {col} < {sk}) s += {load_expr(ctx.dtype(mask), msrc)};")
    em.line(f"if (k0 + {col} >= {sk}) s = -CUDART_INF_F;")
    em.line(f"s_loc[{slot}] = s; tile_max = fmaxf(tile_max, s);")


def _running_max(em, lane_masks) -> None:
    """The row's tile maximum over the lanes that share the row, the new running max ``m_new`` and the
    factor ``corr`` that rescales what was summed under the old one."""
    for lm in lane_masks:
        em.line(f"tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, {lm}));")
    em.line("const float m_new = fmaxf(m, tile_max);")
    em.line("const float corr = m_new == -CUDART_INF_F ? 1.0f : __expf(m - m_new);")


@lowering(ATTENTION_OP)
def lower_attention(ctx: LowerCtx, node: Node) -> None:
    a = node.attrs
    if a.tensor_core is not None:
        sms = getattr(ctx.arch, "sm_count", 0) or 1
        cfg = tensor_core_tiles(a.batch * a.heads, a.sq, a.d, a.dv, sms)
        if cfg is not None:
            return _lower_tensor_core(ctx, node, cfg)
    _lower_simt(ctx, node)


def _lower_simt(ctx: LowerCtx, node: Node) -> None:
    a = node.attrs
    q, k, v = node.inputs[:3]
    mask = node.inputs[3] if a.has_mask else None
    out = node.outputs[0]
    D, DV, Sq, Sk, H = a.d, a.dv, a.sq, a.sk, a.heads
    BH = a.batch * a.heads
    m_k = 0
    if mask is not None:
        m_b, m_h, m_q, m_k = _mask_strides(ctx, node)
    dq, dk, dv, do = ctx.dtype(q), ctx.dtype(k), ctx.dtype(v), ctx.dtype(out)
    DPT = -(-DV // 4)          # output dims per thread
    name = ctx.kernel_name()
    em = ctx.kernels
    em.comment(f"Attention '{node.name}': softmax(Q K^T * {a.scale:g}{' + mask' if mask else ''}) V, "
               f"[{a.batch} x {a.heads}] heads x {Sq} queries x {Sk} keys x {D}/{DV} dims, online softmax in fp32; "
               f"Q, K, V read and the output written through strides")
    params = _params(ctx, node)
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
                _mask_score(em, ctx, mask, m_k, Sk, "kk", "j")
            _running_max(em, (1, 2))
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
    if smem > SHARED_LIMIT:
        raise ValueError(f"attention tile needs {smem} bytes of shared memory (head dim too large)")
    args = [ctx.ptr(q), ctx.ptr(k), ctx.ptr(v)] + ([ctx.ptr(mask)] if mask else []) + [ctx.ptr(out)]
    ctx.launch(name, f"dim3({-(-Sq // BQ)}, {BH})", str(THREADS), args)


# ---- tensor cores ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorCoreTiles:
    """Tile sizes and the shared-memory layout of the tensor-core kernel (byte offsets; leading dims in
    elements, padded so rows do not all start on the same bank and stay 32-byte aligned per 16 rows)."""
    bq: int          # query rows per block (16 per warp)
    bk: int          # keys per tile
    d: int
    dv: int

    @property
    def warps(self) -> int:
        return self.bq // 16

    ldq = property(lambda self: self.d + 8)     # Q tile [bq][ldq], 16-bit
    ldk = property(lambda self: self.d + 8)     # K tile [bk][ldk], 16-bit
    ldv = property(lambda self: self.dv + 8)    # V tile [bk][ldv], 16-bit
    lds = property(lambda self: self.bk + 4)    # scores [bq][lds], fp32
    ldp = property(lambda self: self.bk + 8)    # P [bq][ldp], 16-bit
    ldo = property(lambda self: self.dv + 4)    # output accumulator [bq][ldo], fp32 (same bytes as Q)

    @property
    def layout(self) -> dict[str, int]:
        sizes = {"qo": max(self.bq * self.ldq * 2, self.bq * self.ldo * 4), "k": self.bk * self.ldk * 2,
                 "v": self.bk * self.ldv * 2, "s": self.bq * self.lds * 4, "p": self.bq * self.ldp * 2,
                 "row": self.bq * 4, "end": 0}
        offsets, at = {}, 0
        for name, size in sizes.items():
            offsets[name] = at
            at += -(-size // 128) * 128
        return offsets

    @property
    def shared_bytes(self) -> int:
        return self.layout["end"]


def tensor_core_tiles(heads: int, sq: int, d: int, dv: int, sms: int) -> TensorCoreTiles | None:
    """The query tile is the largest of 64/32/16 rows that still gives each of the target's ``sms`` SMs a
    block (the smallest when none does, for the most blocks), never more than twice the rows there are;
    the key tile is 64 when it fits the shared memory, else 32. None when nothing fits."""
    def blocks(bq):
        return -(-sq // bq) * heads
    sizes = [bq for bq in (64, 32, 16) if bq == 16 or bq < 2 * sq]
    enough = [bq for bq in sizes if blocks(bq) >= sms]
    order = enough + [bq for bq in reversed(sizes) if bq not in enough]
    for bq in order:
        for bk in (64, 32):
            t = TensorCoreTiles(bq, bk, d, dv)
            if t.shared_bytes <= SHARED_LIMIT:
                return t
    return None


VEC = 8     # 16-bit elements per 16-byte copy when a tile is staged as it is stored


def _stage(em, buf: str, src: str, spec, first: str, rows: int, limit: int, cols: int, ld: int, dt, low,
           threads: int) -> None:
    """Emits the copy of ``rows`` x ``cols`` of ``src`` (rows from ``first``, through ``spec``) into the
    shared tile ``buf`` (leading dim ``ld``) in the 16-bit type ``low``; rows at or past ``limit`` are
    zeros. A source already stored in that type whose columns are contiguous and whose rows start on 16
    bytes moves 8 elements per 16-byte load (the projection stores them so: ``narrow.py``); others are
    converted element by element."""
    T = storage(low)
    vec = dt == low and spec[4] == 1 and cols % VEC == 0 and ld % VEC == 0 and all(x % VEC == 0 for x in spec[:4])
    if vec:
        per_row = cols // VEC
        with em.block(f"for (int t = threadIdx.x; t < {rows * per_row}; t += {threads})"):
            em.line(f"const int r = t / {per_row}, d = (t % {per_row}) * {VEC};")
            em.line(f"accelc::Vec<{T}, {VEC}> w;")
            with em.block(f"if ({first} + r < {limit})"):
                address = _address(spec, "b", "h", f"{first} + r", "d")
                em.line(f"w = *reinterpret_cast<const accelc::Vec<{T}, {VEC}>*>({src} + {address});")
            with em.block("else"):
                em.line(f"for (int e = 0; e < {VEC}; ++e) w.v[e] = accelc::from_f32<{T}>(0.0f);")
            em.line(f"*reinterpret_cast<accelc::Vec<{T}, {VEC}>*>({buf} + r * {ld} + d) = w;")
        return
    with em.block(f"for (int t = threadIdx.x; t < {rows * cols}; t += {threads})"):
        em.line(f"const int r = t / {cols}, d = t % {cols};")
        value = load_expr(dt, f"{src}[" + _address(spec, "b", "h", f"{first} + r", "d") + "]")
        em.line(f"{buf}[r * {ld} + d] = accelc::from_f32<{T}>({first} + r < {limit} ? {value} : 0.0f);")


def _lower_tensor_core(ctx: LowerCtx, node: Node, t: TensorCoreTiles) -> None:
    a = node.attrs
    q, k, v = node.inputs[:3]
    mask = node.inputs[3] if a.has_mask else None
    out = node.outputs[0]
    D, DV, Sq, Sk, H = a.d, a.dv, a.sq, a.sk, a.heads
    BQt, BKt, threads = t.bq, t.bk, 32 * t.warps
    T = storage(a.tensor_core)
    wm = "nvcuda::wmma"
    frag_a = f"{wm}::fragment<{wm}::matrix_a, 16, 16, 16, {T}, {wm}::row_major>"
    frag_b_col = f"{wm}::fragment<{wm}::matrix_b, 16, 16, 16, {T}, {wm}::col_major>"
    frag_b_row = f"{wm}::fragment<{wm}::matrix_b, 16, 16, 16, {T}, {wm}::row_major>"
    frag_c = f"{wm}::fragment<{wm}::accumulator, 16, 16, 16, float>"
    dq, dk, dv, do = ctx.dtype(q), ctx.dtype(k), ctx.dtype(v), ctx.dtype(out)
    lay = t.layout
    name = ctx.kernel_name()
    em = ctx.kernels
    em.comment(f"Attention '{node.name}': softmax(Q K^T * {a.scale:g}{' + mask' if mask else ''}) V, "
               f"[{a.batch} x {a.heads}] heads x {Sq} queries x {Sk} keys x {D}/{DV} dims on tensor cores "
               f"({a.tensor_core.short} products, fp32 accumulate and online softmax); {BQt} query rows "
               f"({t.warps} warps) x {BKt} keys per tile; Q, K, V read and the output written through strides")
    params = _params(ctx, node)
    low = f"accelc::from_f32<{T}>"
    with em.block(f"__global__ void __launch_bounds__({threads}) {name}({', '.join(params)})"):
        em.line(f"__shared__ __align__(128) unsigned char smem[{t.shared_bytes}];")
        em.line(f"{T}* sq = reinterpret_cast<{T}*>(smem + {lay['qo']});   // the Q tile, then (same bytes) ...")
        em.line(f"float* so = reinterpret_cast<float*>(smem + {lay['qo']});   // ... the output accumulator")
        em.line(f"{T}* sk = reinterpret_cast<{T}*>(smem + {lay['k']});")
        em.line(f"{T}* sv = reinterpret_cast<{T}*>(smem + {lay['v']});")
        em.line(f"float* ss = reinterpret_cast<float*>(smem + {lay['s']});")
        em.line(f"{T}* sp = reinterpret_cast<{T}*>(smem + {lay['p']});")
        em.line(f"float* srow = reinterpret_cast<float*>(smem + {lay['row']});   // a factor per query row")
        em.line(f"const int bh = blockIdx.y, q0 = blockIdx.x * {BQt}, b = bh / {H}, h = bh % {H};")
        em.line("const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;")
        em.line("const int row = warp * 16 + (lane >> 1), half = lane & 1, qi = q0 + row;   // 2 lanes a row")
        _stage(em, "sq", "q", a.q, "q0", BQt, Sq, D, t.ldq, dq, a.tensor_core, threads)
        em.line("__syncthreads();")
        em.line(f"{frag_a} qa[{D // 16}];")
        em.line("#pragma unroll")
        em.line(f"for (int kk = 0; kk < {D // 16}; ++kk) "
                f"{wm}::load_matrix_sync(qa[kk], sq + warp * {16 * t.ldq} + kk * 16, {t.ldq});")
        em.line("__syncthreads();   // every warp holds its Q before the bytes become the accumulator")
        em.line(f"for (int t = threadIdx.x; t < {BQt * t.ldo}; t += {threads}) so[t] = 0.0f;")
        m_k = 0
        if mask:
            m_b, m_h, m_q, m_k = _mask_strides(ctx, node)
            em.line(f"const long long mbase = (long long)b * {m_b} + (long long)h * {m_h} "
                    f"+ (long long)(qi < {Sq} ? qi : 0) * {m_q};")
        em.line("float m = -CUDART_INF_F, l = 0.0f;")
        with em.block(f"for (int k0 = 0; k0 < {Sk}; k0 += {BKt})"):
            em.line("__syncthreads();   // the previous tiles are no longer read")
            for buf, src_name, spec, cols, ld, dt in (("sk", "k", a.k, D, t.ldk, dk), ("sv", "v", a.v, DV, t.ldv, dv)):
                _stage(em, buf, src_name, spec, "k0", BKt, Sk, cols, ld, dt, a.tensor_core, threads)
            em.line("__syncthreads();")
            em.comment("scores of the warp's 16 rows: S = Q K^T (K's rows are B's columns)")
            em.line("#pragma unroll")
            with em.block(f"for (int j = 0; j < {BKt // 16}; ++j)"):
                em.line(f"{frag_c} acc;")
                em.line(f"{wm}::fill_fragment(acc, 0.0f);")
                em.line("#pragma unroll")
                with em.block(f"for (int kk = 0; kk < {D // 16}; ++kk)"):
                    em.line(f"{frag_b_col} kb;")
                    em.line(f"{wm}::load_matrix_sync(kb, sk + j * {16 * t.ldk} + kk * 16, {t.ldk});")
                    em.line(f"{wm}::mma_sync(acc, qa[kk], kb, acc);")
                em.line(f"{wm}::store_matrix_sync(ss + warp * {16 * t.lds} + j * 16, acc, {t.lds}, "
                        f"{wm}::mem_row_major);")
            em.line("__syncwarp();")
            em.comment("online softmax in fp32: each lane of a row's pair takes half of the tile's keys")
            half = BKt // 2
            em.line(f"float s_loc[{half}], tile_max = -CUDART_INF_F;")
            em.line("#pragma unroll")
            with em.block(f"for (int i = 0; i < {half}; ++i)"):
                em.line(f"const int c = half * {half} + i;")
                em.line(f"float s = ss[row * {t.lds} + c] * {c_float(a.scale)};")
                _mask_score(em, ctx, mask, m_k, Sk, "c", "i")
            _running_max(em, (1,))
            em.line("float sum = 0.0f;")
            em.line("#pragma unroll")
            with em.block(f"for (int i = 0; i < {half}; ++i)"):
                em.line("const float p = m_new == -CUDART_INF_F ? 0.0f : __expf(s_loc[i] - m_new);")
                em.line(f"sp[row * {t.ldp} + half * {half} + i] = {low}(p); sum += p;")
            em.line("sum += __shfl_xor_sync(0xffffffffu, sum, 1);")
            em.line("l = l * corr + sum; m = m_new;")
            em.line("if (half == 0) srow[row] = corr;")
            em.line("__syncwarp();")
            em.comment("rescale the warp's output rows, then add P V on tensor cores")
            with em.block(f"for (int t = lane; t < {16 * DV}; t += 32)"):
                em.line(f"const int r = warp * 16 + t / {DV};")
                em.line(f"so[r * {t.ldo} + t % {DV}] *= srow[r];")
            em.line("__syncwarp();")
            em.line("#pragma unroll")
            with em.block(f"for (int n = 0; n < {DV // 16}; ++n)"):
                em.line(f"{frag_c} acc;")
                em.line(f"{wm}::load_matrix_sync(acc, so + warp * {16 * t.ldo} + n * 16, {t.ldo}, {wm}::mem_row_major);")
                em.line("#pragma unroll")
                with em.block(f"for (int kk = 0; kk < {BKt // 16}; ++kk)"):
                    em.line(f"{frag_a} pa;")
                    em.line(f"{frag_b_row} vb;")
                    em.line(f"{wm}::load_matrix_sync(pa, sp + warp * {16 * t.ldp} + kk * 16, {t.ldp});")
                    em.line(f"{wm}::load_matrix_sync(vb, sv + kk * {16 * t.ldv} + n * 16, {t.ldv});")
                    em.line(f"{wm}::mma_sync(acc, pa, vb, acc);")
                em.line(f"{wm}::store_matrix_sync(so + warp * {16 * t.ldo} + n * 16, acc, {t.ldo}, {wm}::mem_row_major);")
        em.line("__syncwarp();")
        em.line("if (half == 0) srow[row] = l > 0.0f ? 1.0f / l : 0.0f;")
        em.line("__syncwarp();")
        with em.block(f"for (int t = lane; t < {16 * DV}; t += 32)"):
            em.line(f"const int r = warp * 16 + t / {DV}, d = t % {DV};")
            em.line(f"if (q0 + r >= {Sq}) continue;")
            dst = "out[" + _address(a.out, "b", "h", "q0 + r", "d") + "]"
            em.line(f"{dst} = {store_expr(do, f'so[r * {t.ldo} + d] * srow[r]')};")
    em.blank()
    args = [ctx.ptr(q), ctx.ptr(k), ctx.ptr(v)] + ([ctx.ptr(mask)] if mask else []) + [ctx.ptr(out)]
    ctx.launch(name, f"dim3({-(-Sq // BQt)}, {a.batch * a.heads})", str(threads), args)
