"""Row lowerings of the CUDA backend: reductions, Softmax/LogSoftmax, LayerNormalization,
InstanceNormalization, global and windowed pooling.

Every reduction is viewed as ``[outer, R, inner]`` (R = the reduced extent, which must be one run of
adjacent axes). With ``inner == 1`` a block reduces one row (warp shuffles, then one shared-memory round,
``accelc::block_reduce``) so R is read coalesced; otherwise one thread owns one (outer, inner) pair
and walks R, which keeps neighbouring threads on neighbouring addresses. Sums accumulate in fp32 whatever
the storage type, as the numerics contract requires.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import DType, Graph, Node
from ..cpu_amx.emitter import c_float
from .codegen_elementwise import broadcast_view, contiguous_strides, elementwise_body
from .lowering import COMPUTE, FLOATS, LowerCtx, load_expr, lowering, storage, store_expr

_REDUCE = {  # op: (init, accumulate(acc, x), combine kind, finalize(acc, R))
    "ReduceSum": ("0.0f", "acc += x", "Sum", "acc"),
    "ReduceMean": ("0.0f", "acc += x", "Sum", "acc / float({R})"),
    "ReduceMax": ("-CUDART_INF_F", "acc = fmaxf(acc, x)", "Max", "acc"),
    "ReduceMin": ("CUDART_INF_F", "acc = fminf(acc, x)", "Min", "acc"),
    "ReduceProd": ("1.0f", "acc *= x", "Prod", "acc"),
    "ReduceL1": ("0.0f", "acc += fabsf(x)", "Sum", "acc"),
    "ReduceL2": ("0.0f", "acc += x * x", "Sum", "sqrtf(acc)"),
    "ReduceSumSquare": ("0.0f", "acc += x * x", "Sum", "acc"),
    "ReduceLogSumExp": ("0.0f", "acc += __expf(x - mx)", "Sum", "logf(acc) + mx"),
}
REDUCE_OPS = tuple(_REDUCE)


def _threads(r: int) -> int:
    return 256 if r >= 2048 else 128 if r >= 256 else 64 if r >= 64 else 32


def _rows(shape, first: int, last: int) -> tuple[int, int, int]:
    outer = int(np.prod(shape[:first], dtype=np.int64))
    r = int(np.prod(shape[first:last + 1], dtype=np.int64))
    inner = int(np.prod(shape[last + 1:], dtype=np.int64))
    return outer, r, inner


def _reduce_axes(graph: Graph, node: Node) -> list[int]:
    rank = len(graph.types[node.inputs[0]].shape)
    axes = node.attrs.axes
    return sorted(range(rank)) if axes is None else sorted(a % rank for a in axes)


def _check_reduce(graph: Graph, node: Node) -> str | None:
    if graph.types[node.inputs[0]].dtype not in FLOATS:
        return f"{node.op} on {graph.types[node.inputs[0]].dtype.short} is not supported on CUDA (float inputs only)"
    axes = _reduce_axes(graph, node)
    if axes and axes != list(range(axes[0], axes[-1] + 1)):
        shape = graph.types[node.inputs[0]].shape
        if any(shape[a] != 1 for a in range(axes[0], axes[-1] + 1) if a not in axes):
            return f"{node.op} over non-adjacent axes {axes} is not supported on CUDA (transpose first)"
    return None


def _emit_row_reduce(ctx: LowerCtx, node: Node, x: str, out: str, outer: int, r: int, inner: int,
                     init: str, acc_stmt: str, kind: str, final: str, needs_max: bool) -> None:
    name = ctx.kernel_name()
    k = ctx.kernels
    dt, odt = ctx.dtype(x), ctx.dtype(out)
    final = final.format(R=r)
    k.comment(f"{node.op} '{node.name}': [{outer}, {r}, {inner}] -> [{outer}, {inner}]")
    sig = f"const {storage(dt)}* __restrict__ in, {storage(odt)}* __restrict__ out"
    if inner == 1:
        threads = _threads(r)
        with k.block(f"__global__ void __launch_bounds__({threads}) {name}({sig})"):
            k.line("__shared__ float red[32];")
            k.line(f"const {storage(dt)}* row = in + (long long)blockIdx.x * {r};")
            if needs_max:
                k.line("float mx = -CUDART_INF_F;")
                k.line(f"for (int j = threadIdx.x; j < {r}; j += blockDim.x) mx = fmaxf(mx, {load_expr(dt, 'row[j]')});")
                k.line("mx = accelc::block_reduce<accelc::Red::Max>(mx, red);")
            k.line(f"float acc = {init};")
            with k.block(f"for (int j = threadIdx.x; j < {r}; j += blockDim.x)"):
                k.line(f"const float x = {load_expr(dt, 'row[j]')};")
                k.line(f"{acc_stmt};")
            k.line(f"acc = accelc::block_reduce<accelc::Red::{kind}>(acc, red);")
            k.line(f"if (threadIdx.x == 0) out[blockIdx.x] = {store_expr(odt, final)};")
        k.blank()
        ctx.launch(name, str(outer), str(threads), [ctx.ptr(x), ctx.ptr(out)])
        return
    n = outer * inner
    with k.block(f"__global__ void __launch_bounds__(256) {name}({sig})"):
        with k.block(f"for (long long t = blockIdx.x * 256LL + threadIdx.x; t < {n}LL; t += gridDim.x * 256LL)"):
            k.line(f"const {storage(dt)}* p = in + (t / {inner}) * {r}LL * {inner} + t % {inner};")
            if needs_max:
                k.line("float mx = -CUDART_INF_F;")
                k.line(f"for (int j = 0; j < {r}; ++j) mx = fmaxf(mx, {load_expr(dt, f'p[(long long)j * {inner}]')});")
            k.line(f"float acc = {init};")
            with k.block(f"for (int j = 0; j < {r}; ++j)"):
                k.line(f"const float x = {load_expr(dt, f'p[(long long)j * {inner}]')};")
                k.line(f"{acc_stmt};")
            k.line(f"out[t] = {store_expr(odt, final)};")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // 256), 65535 * 8))), "256", [ctx.ptr(x), ctx.ptr(out)])


@lowering(*_REDUCE, check=_check_reduce)
def lower_reduce(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axes = _reduce_axes(ctx.graph, node)
    if not axes:   # axes=() reduces nothing: a copy through the finalizer is not what ONNX means; plain copy
        from .codegen_elementwise import alias_or_copy
        alias_or_copy(ctx, out, x, f"{node.op} '{node.name}' over no axes")
        return
    outer, r, inner = _rows(shape, axes[0], axes[-1])
    init, acc, kind, final = _REDUCE[node.op]
    _emit_row_reduce(ctx, node, x, out, outer, r, inner, init, acc, kind, final, node.op == "ReduceLogSumExp")


@lowering("GlobalAveragePool", "GlobalMaxPool", check=lambda g, n: None if g.types[n.inputs[0]].dtype in FLOATS
          else "global pooling needs a float input")
def lower_global_pool(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    outer, r, inner = _rows(shape, 2, len(shape) - 1)
    init, acc, kind, final = _REDUCE["ReduceMean" if node.op == "GlobalAveragePool" else "ReduceMax"]
    _emit_row_reduce(ctx, node, x, out, outer, r, inner, init, acc, kind, final, False)


# ---- ArgMax / ArgMin -------------------------------------------------------------------------------------
@lowering("ArgMax", "ArgMin", check=lambda g, n: None if g.types[n.inputs[0]].dtype in FLOATS
          else f"{n.op} needs a float input on CUDA")
def lower_arg(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axis = node.attrs.axis % len(shape)
    outer, r, inner = _rows(shape, axis, axis)
    n = outer * inner
    cmp = ">" if node.op == "ArgMax" else "<"
    cmp = cmp + "=" if node.attrs.select_last_index else cmp
    name = ctx.kernel_name()
    k = ctx.kernels
    dt = ctx.dtype(x)
    k.comment(f"{node.op} '{node.name}' along axis {axis}: one thread per output")
    with k.block(f"__global__ void __launch_bounds__(256) {name}(const {storage(dt)}* __restrict__ in, "
                 f"{storage(ctx.dtype(out))}* __restrict__ out)"):
        with k.block(f"for (long long t = blockIdx.x * 256LL + threadIdx.x; t < {n}LL; t += gridDim.x * 256LL)"):
            k.line(f"const {storage(dt)}* p = in + (t / {inner}) * {r}LL * {inner} + t % {inner};")
            k.line(f"float best = {load_expr(dt, 'p[0]')}; long long at = 0;")
            with k.block(f"for (int j = 1; j < {r}; ++j)"):
                k.line(f"const float v = {load_expr(dt, f'p[(long long)j * {inner}]')};")
                k.line(f"if (v {cmp} best || (isnan(v) && !isnan(best))) {{ best = v; at = j; }}")
            k.line(f"out[t] = {storage(ctx.dtype(out))}(at);")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // 256), 65535 * 8))), "256", [ctx.ptr(x), ctx.ptr(out)])


# ---- Softmax / LogSoftmax -----------------------------------------------------------------------------
@lowering("Softmax", "LogSoftmax", check=lambda g, n: None if g.types[n.inputs[0]].dtype in FLOATS
          else f"{n.op} needs a float input")
def lower_softmax(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    shape = ctx.shape(x)
    axis = node.attrs.axis % len(shape)
    outer, r, inner = _rows(shape, axis, axis)
    dt, odt = ctx.dtype(x), ctx.dtype(out)
    log = node.op == "LogSoftmax"
    result = "(v - mx - logf(sum))" if log else "(__expf(v - mx) * inv)"
    name = ctx.kernel_name()
    k = ctx.kernels
    sig = f"const {storage(dt)}* __restrict__ in, {storage(odt)}* __restrict__ out"
    k.comment(f"{node.op} '{node.name}': rows [{outer}, {r}, {inner}], max-subtracted, fp32 sums")
    if inner == 1:
        threads = _threads(r)
        with k.block(f"__global__ void __launch_bounds__({threads}) {name}({sig})"):
            k.line("__shared__ float red[32];")
            k.line(f"const long long base = (long long)blockIdx.x * {r};")
            k.line("float mx = -CUDART_INF_F;")
            k.line(f"for (int j = threadIdx.x; j < {r}; j += blockDim.x) mx = fmaxf(mx, {load_expr(dt, 'in[base + j]')});")
            k.line("mx = accelc::block_reduce<accelc::Red::Max>(mx, red);")
            k.line("float sum = 0.0f;")
            k.line(f"for (int j = threadIdx.x; j < {r}; j += blockDim.x) sum += __expf({load_expr(dt, 'in[base + j]')} - mx);")
            k.line("sum = accelc::block_reduce<accelc::Red::Sum>(sum, red);")
            k.line("const float inv = 1.0f / sum; (void)inv;")
            with k.block(f"for (int j = threadIdx.x; j < {r}; j += blockDim.x)"):
                k.line(f"const float v = {load_expr(dt, 'in[base + j]')};")
                k.line(f"out[base + j] = {store_expr(odt, result)};")
        k.blank()
        ctx.launch(name, str(outer), str(threads), [ctx.ptr(x), ctx.ptr(out)])
        return
    n = outer * inner
    with k.block(f"__global__ void __launch_bounds__(256) {name}({sig})"):
        with k.block(f"for (long long t = blockIdx.x * 256LL + threadIdx.x; t < {n}LL; t += gridDim.x * 256LL)"):
            k.line(f"const long long base = (t / {inner}) * {r}LL * {inner} + t % {inner};")
            k.line("float mx = -CUDART_INF_F, sum = 0.0f;")
            k.line(f"for (int j = 0; j < {r}; ++j) mx = fmaxf(mx, {load_expr(dt, f'in[base + (long long)j * {inner}]')});")
            k.line(f"for (int j = 0; j < {r}; ++j) sum += __expf({load_expr(dt, f'in[base + (long long)j * {inner}]')} - mx);")
            k.line("const float inv = 1.0f / sum; (void)inv;")
            with k.block(f"for (int j = 0; j < {r}; ++j)"):
                k.line(f"const float v = {load_expr(dt, f'in[base + (long long)j * {inner}]')};")
                k.line(f"out[base + (long long)j * {inner}] = {store_expr(odt, result)};")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // 256), 65535 * 8))), "256", [ctx.ptr(x), ctx.ptr(out)])


# ---- LayerNormalization / InstanceNormalization ----------------------------------------------------------
# backend-local (narrow.py): a LayerNormalization whose outputs are (y, y in a 16-bit type)
LAYERNORM_TWICE = "accelc_cuda.LayerNormalizationTwice"
# backend-local (fuse_norm.py): a LayerNorm (or LayerNormTwice) that computes its input from an elementwise node
NORM_PROLOGUE = "accelc_cuda.NormWithPrologue"

def _check_layernorm(graph: Graph, node: Node) -> str | None:
    if graph.types[node.inputs[0]].dtype not in FLOATS:
        return f"{node.op} needs a float input"
    for i in node.inputs[1:]:
        if i and i not in graph.constants:
            shape = graph.types[node.inputs[0]].shape
            rank = len(shape)
            axis = node.attrs.axis % rank if node.op == "LayerNormalization" else 2
            if tuple(graph.types[i].shape) != tuple(shape[axis:]) and node.op == "LayerNormalization":
                return "a non-constant LayerNormalization scale/bias must have the normalized shape exactly"
    return None


MAX_CACHED = 16     # row elements a thread keeps in registers between the norm's passes


@dataclass(frozen=True)
class NormPrologueAttrs:
    """``accelc_cuda.NormWithPrologue``: ``norm`` (a LayerNormalization, or one storing y twice) of the
    elementwise ``prologue``'s result, which is computed while the row is loaded and never stored unless
    ``store_x`` (other nodes read it too). See ``fuse_norm.py``."""
    prologue: Node
    norm: Node
    store_x: bool


def row_operand_kind(shape, x_shape, axis: int) -> str | None:
    """How a norm kernel reads an operand of ``shape`` broadcast to ``x_shape`` (normalized over the axes
    from ``axis`` on) at element j of row ``blockIdx.x``: "full" (base + j), "row" (j: the same values in
    every row, a bias), "per_row" (one value per row), "scalar"; None when it broadcasts otherwise."""
    def significant(strides, dims):      # a stride along an extent-1 axis is never used
        return tuple(0 if d == 1 else s for s, d in zip(strides, dims))
    strides = significant(broadcast_view(shape, x_shape).strides, x_shape)
    if strides == significant(contiguous_strides(x_shape), x_shape):
        return "full"
    if not any(strides):
        return "scalar"
    rows, row = x_shape[:axis], x_shape[axis:]
    if not any(strides[:axis]) and strides[axis:] == significant(contiguous_strides(row), row):
        return "row"
    if not any(strides[axis:]) and strides[:axis] == significant(contiguous_strides(rows), rows):
        return "per_row"
    return None


NORM_VEC = 4        # row elements a norm thread moves per load and store when rows allow it


def _vector_threads(r: int) -> int:
    """Threads of a norm block that moves rows of ``r`` in runs of NORM_VEC (so that each thread keeps
    at most MAX_CACHED elements), or 0 when the rows do not split so."""
    if r % NORM_VEC:
        return 0
    runs = r // NORM_VEC
    threads = min(256, 32 * max(1, -(-runs // (MAX_CACHED // NORM_VEC * 32))))
    return threads if -(-runs // threads) * NORM_VEC <= MAX_CACHED else 0


def _norm_vector_body(k, name: str, params: list[str], r: int, threads: int, sources, kinds, dtypes, body,
                      x_dtype: DType, store_x: bool, scale_dt: DType, bias_dt: DType | None, odt: DType,
                      low_dt: DType | None, eps: str, channels: int) -> None:
    """The norm kernel whose threads own runs of NORM_VEC adjacent row elements: run kk of a thread starts
    at element (threadIdx.x + kk * threads) * NORM_VEC, is loaded and stored with one vector access per
    tensor, and stays in registers (v) between the passes. ``channels``: InstanceNorm's scale and bias
    are per row (modulo channels), else per column."""
    W = NORM_VEC
    runs = r // W
    per = -(-runs // threads)

    def vec(dt: DType) -> str:
        return f"accelc::Vec<{storage(dt)}, {W}>"

    def over_runs(emit):
        k.line("#pragma unroll")
        with k.block(f"for (int kk = 0; kk < {per}; ++kk)"):
            k.line(f"const int j = (threadIdx.x + kk * {threads}) * {W};")
            if runs % threads:
                with k.block(f"if (j < {r})"):
                    emit()
            else:
                emit()

    with k.block(f"__global__ void __launch_bounds__({threads}) {name}({', '.join(params)})"):
        k.line("__shared__ float red[32];")
        k.line(f"const long long base = (long long)blockIdx.x * {r};")
        k.line(f"float v[{per * W}];")
        k.line("float s = 0.0f;")

        def first():
            for n, (kind, dt) in enumerate(zip(kinds, dtypes)):
                if kind in ("full", "row"):
                    at = "base + j" if kind == "full" else "j"
                    k.line(f"const {vec(dt)} p{n} = *reinterpret_cast<const {vec(dt)}*>(in{n} + {at});")
                else:
                    at = "blockIdx.x" if kind == "per_row" else "0"
                    k.line(f"const float q{n} = {load_expr(dt, f'in{n}[{at}]')};")
            if store_x:
                k.line(f"{vec(x_dtype)} xs;")
            k.line("#pragma unroll")
            with k.block(f"for (int e = 0; e < {W}; ++e)"):
                loaded = []
                for n, (kind, dt) in enumerate(zip(kinds, dtypes)):
                    if kind in ("full", "row"):
                        k.line(f"const {COMPUTE[dt]} a{n} = {load_expr(dt, f'p{n}.v[e]')};")
                        loaded.append(f"a{n}")
                    else:
                        loaded.append(f"q{n}")
                k.line(f"const float x = {body(k, loaded)};")
                k.line(f"v[kk * {W} + e] = x;")
                k.line("s += x;")
                if store_x:
                    k.line(f"xs.v[e] = {store_expr(x_dtype, 'x')};")
            if store_x:
                k.line(f"*reinterpret_cast<{vec(x_dtype)}*>(x_out + base + j) = xs;")
        over_runs(first)
        k.line(f"const float mean = accelc::block_reduce<accelc::Red::Sum>(s, red) / float({r});")
        k.line("float q = 0.0f;")
        k.line("#pragma unroll")
        with k.block(f"for (int i = 0; i < {per * W}; ++i)"):
            if runs % threads:
                k.line(f"if ((threadIdx.x + (i / {W}) * {threads}) * {W} >= {r}) break;")
            k.line("const float d = v[i] - mean;")
            k.line("q += d * d;")
        k.line(f"const float rstd = rsqrtf(accelc::block_reduce<accelc::Red::Sum>(q, red) / float({r}) + {eps});")
        if channels:
            k.line(f"const int c = blockIdx.x % {channels};")

        def third():
            params = [("scale", scale_dt)] + ([("bias", bias_dt)] if bias_dt else [])
            for p_name, dt in params:
                if channels:
                    k.line(f"const float {p_name}_c = {load_expr(dt, f'{p_name}[c]')};")
                else:
                    k.line(f"const {vec(dt)} {p_name}_v = *reinterpret_cast<const {vec(dt)}*>({p_name} + j);")
            k.line(f"{vec(odt)} ys;")
            if low_dt:
                k.line(f"{vec(low_dt)} ls;")
            k.line("#pragma unroll")
            with k.block(f"for (int e = 0; e < {W}; ++e)"):
                terms = [f"{p_name}_c" if channels else load_expr(dt, f"{p_name}_v.v[e]") for p_name, dt in params]
                y = f"(v[kk * {W} + e] - mean) * rstd * {terms[0]}" + (f" + {terms[1]}" if bias_dt else "")
                k.line(f"const float y = {y};")
                k.line(f"ys.v[e] = {store_expr(odt, 'y')};")
                if low_dt:
                    k.line(f"ls.v[e] = {store_expr(low_dt, 'y')};")
            k.line(f"*reinterpret_cast<{vec(odt)}*>(out + base + j) = ys;")
            if low_dt:
                k.line(f"*reinterpret_cast<{vec(low_dt)}*>(out_low + base + j) = ls;")
        over_runs(third)


def _emit_norm(ctx: LowerCtx, node: Node, rows: int, r: int, channels: int, per_row: bool,
               low: str | None = None, prologue: Node | None = None, x_out: str | None = None) -> None:
    """y = (x - mean) / sqrt(var + eps) * scale + bias over rows of length r; scale/bias indexed per
    column (LayerNorm) or per row modulo ``channels`` (InstanceNorm). Two-pass mean/variance in fp32.
    ``low``: a second output that receives y in its own (16-bit) type as well. ``prologue``: x is this
    elementwise node's result, computed from its inputs as the row is loaded (``x_out`` stores it too).

    A thread owns the row elements j = threadIdx.x + k * threads; up to MAX_CACHED of them stay in
    registers, so x is read (or computed) once; longer rows are read again in each pass."""
    if prologue is None:
        sources = [node.inputs[0]]
        x_dtype = ctx.dtype(node.inputs[0])
        body, desc = (lambda em, xs: xs[0]), ""
    else:
        sources = [i for i in prologue.inputs if i]
        x_dtype = ctx.dtype(prologue.outputs[0])
        body, desc = elementwise_body(ctx.graph, prologue)
        desc = f"{prologue.op} '{prologue.name}' ({desc}) -> "
    x_shape = ctx.shape(prologue.outputs[0] if prologue is not None else node.inputs[0])
    # a prologue comes with LayerNorms only (fuse_norm.py checks that every operand has one of the kinds)
    kinds = ["full"] * len(sources) if prologue is None else \
        [row_operand_kind(ctx.shape(v), x_shape, node.attrs.axis % len(x_shape)) for v in sources]
    out = node.outputs[0]
    odt = ctx.dtype(out)
    scale = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    n_param = channels if per_row else r

    def param(value: str | None) -> tuple[str, DType] | None:
        if value is None:
            return None
        if ctx.is_const(value):
            arr = np.broadcast_to(ctx.const(value).astype(np.float32), ctx.shape(value)).reshape(-1)
            if arr.size != n_param:
                arr = np.broadcast_to(ctx.const(value).astype(np.float32).reshape(
                    ctx.shape(value)), x_shape[len(x_shape) - len(ctx.shape(value)):]).reshape(-1)
            return ctx.weight(np.ascontiguousarray(arr, np.float32), "float"), DType.float32
        return ctx.ptr(value), ctx.dtype(value)

    sp, bp = param(scale), param(bias)
    eps = c_float(node.attrs.epsilon)
    threads = _threads(r)
    per_thread = -(-r // threads)
    cached = per_thread <= MAX_CACHED
    vec_threads = _vector_threads(r)
    name = ctx.kernel_name()
    k = ctx.kernels
    if vec_threads:
        k.comment(f"{desc}{node.op} '{node.name}': {rows} rows of {r}, eps {node.attrs.epsilon}; each thread "
                  f"keeps its {-(-r // (NORM_VEC * vec_threads))} runs of {NORM_VEC} elements of a row in registers")
    else:
        k.comment(f"{desc}{node.op} '{node.name}': {rows} rows of {r}, eps {node.attrs.epsilon}"
                  + (f"; each thread keeps its {per_thread} elements of a row in registers" if cached else ""))
    params = [f"const {storage(ctx.dtype(v))}* __restrict__ in{j}" for j, v in enumerate(sources)]
    params.append(f"const {storage(sp[1])}* __restrict__ scale")
    if bp:
        params.append(f"const {storage(bp[1])}* __restrict__ bias")
    params.append(f"{storage(odt)}* __restrict__ out")
    if low:
        params.append(f"{storage(ctx.dtype(low))}* __restrict__ out_low")
    if x_out:
        params.append(f"{storage(x_dtype)}* __restrict__ x_out")

    def value_at(j: str, store: bool) -> str:
        """Emits the statements computing x at row element ``j``; returns its (fp32) name."""
        loaded = []
        for n, (v, kind) in enumerate(zip(sources, kinds)):
            at = {"full": f"base + {j}", "row": j, "per_row": "blockIdx.x", "scalar": "0"}[kind]
            k.line(f"const {COMPUTE[ctx.dtype(v)]} a{n} = {load_expr(ctx.dtype(v), f'in{n}[{at}]')};")
            loaded.append(f"a{n}")
        # (a 16-bit step result is rounded by the body itself, as the elementwise kernel rounds it)
        k.line(f"const float x = {body(k, loaded)};")
        if store:
            k.line(f"x_out[base + {j}] = {store_expr(x_dtype, 'x')};")
        return "x"

    def each(stmt, uses_j: bool = True):
        """A loop over this thread's row elements; ``stmt(j, kk)`` emits the body (kk: the register slot)."""
        if cached:
            k.line("#pragma unroll")
            with k.block(f"for (int kk = 0; kk < {per_thread}; ++kk)"):
                if uses_j or r % threads:
                    k.line(f"const int j = threadIdx.x + kk * {threads};")
                if r % threads:
                    with k.block(f"if (j < {r})"):
                        stmt("j", "kk")
                else:
                    stmt("j", "kk")
        else:
            with k.block(f"for (int j = threadIdx.x; j < {r}; j += blockDim.x)"):
                stmt("j", None)

    if vec_threads:
        _norm_vector_body(k, name, params, r, vec_threads, sources, kinds, [ctx.dtype(v) for v in sources], body,
                          x_dtype, x_out is not None, sp[1], bp[1] if bp else None, odt,
                          ctx.dtype(low) if low else None, eps, channels if per_row else 0)
        threads = vec_threads
    else:
        with k.block(f"__global__ void __launch_bounds__({threads}) {name}({', '.join(params)})"):
            k.line("__shared__ float red[32];")
            k.line(f"const long long base = (long long)blockIdx.x * {r};")
            if cached:
                k.line(f"float v[{per_thread}];")
            k.line("float s = 0.0f;")

            def first(j, kk):
                x = value_at(j, x_out is not None)
                if kk:
                    k.line(f"v[{kk}] = {x};")
                k.line(f"s += {x};")
            each(first)
            k.line(f"const float mean = accelc::block_reduce<accelc::Red::Sum>(s, red) / float({r});")
            k.line("float q = 0.0f;")

            def second(j, kk):
                x = f"v[{kk}]" if kk else value_at(j, False)
                k.line(f"const float d = {x} - mean;")
                k.line("q += d * d;")
            each(second, uses_j=not cached)
            k.line(f"const float rstd = rsqrtf(accelc::block_reduce<accelc::Red::Sum>(q, red) / float({r}) + {eps});")
            if per_row:
                k.line(f"const int c = blockIdx.x % {channels};")

            def third(j, kk):
                x = f"v[{kk}]" if kk else value_at(j, False)
                pi = "c" if per_row else j
                y = f"({x} - mean) * rstd * {load_expr(sp[1], f'scale[{pi}]')}"
                if bp:
                    y += f" + {load_expr(bp[1], f'bias[{pi}]')}"
                k.line(f"const float y = {y};")
                k.line(f"out[base + {j}] = {store_expr(odt, 'y')};")
                if low:
                    k.line(f"out_low[base + {j}] = {store_expr(ctx.dtype(low), 'y')};")
            each(third)
    k.blank()
    args = [ctx.ptr(v) for v in sources] + [sp[0]] + ([bp[0]] if bp else []) + [ctx.ptr(out)] + \
        ([ctx.ptr(low)] if low else []) + ([ctx.ptr(x_out)] if x_out else [])
    ctx.launch(name, str(rows), str(threads), args)


@lowering("LayerNormalization", LAYERNORM_TWICE, check=_check_layernorm)
def lower_layernorm(ctx: LowerCtx, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    axis = node.attrs.axis % len(shape)
    outer, r, _ = _rows(shape, axis, len(shape) - 1)
    _emit_norm(ctx, node, outer, r, 1, False, node.outputs[1] if node.op == LAYERNORM_TWICE else None)


@lowering(NORM_PROLOGUE)
def lower_norm_with_prologue(ctx: LowerCtx, node: Node) -> None:
    a: NormPrologueAttrs = node.attrs
    shape = ctx.shape(a.prologue.outputs[0])
    axis = a.norm.attrs.axis % len(shape)
    outer, r, _ = _rows(shape, axis, len(shape) - 1)
    _emit_norm(ctx, a.norm, outer, r, 1, False, a.norm.outputs[1] if a.norm.op == LAYERNORM_TWICE else None,
               a.prologue, a.prologue.outputs[0] if a.store_x else None)


@lowering("InstanceNormalization", check=_check_layernorm)
def lower_instancenorm(ctx: LowerCtx, node: Node) -> None:
    shape = ctx.shape(node.inputs[0])
    rows, r, _ = _rows(shape, 2, len(shape) - 1)
    _emit_norm(ctx, node, rows, r, shape[1], True)


# ---- MaxPool / AveragePool (1-D and 2-D, NCHW) -------------------------------------------------------------
def _check_pool(graph: Graph, node: Node) -> str | None:
    t = graph.types[node.inputs[0]]
    if t.dtype not in FLOATS:
        return f"{node.op} needs a float input"
    if len(t.shape) not in (3, 4):
        return f"{node.op} over {len(t.shape) - 2} spatial dims is not supported on CUDA (1-D and 2-D only)"
    if len(node.outputs) > 1 and node.outputs[1]:
        return "MaxPool's Indices output is not supported on CUDA"
    return None


@lowering("MaxPool", "AveragePool", check=_check_pool)
def lower_pool(ctx: LowerCtx, node: Node) -> None:
    emit_pool(ctx, node, node.attrs, node.op == "MaxPool", nhwc=False)


def emit_pool(ctx: LowerCtx, node: Node, a, is_max: bool, nhwc: bool) -> None:
    """One thread per output element of a max/average pooling with attrs ``a``, over a [N, C, (H,) W]
    input, or an [N, H, W, C] one when ``nhwc`` (then neighbouring threads read neighbouring channels)."""
    x, out = node.inputs[0], node.outputs[0]
    xs, os_ = ctx.shape(x), ctx.shape(out)
    two_d = len(xs) == 4
    if nhwc:
        xs, os_ = (xs[0], xs[3], xs[1], xs[2]), (os_[0], os_[3], os_[1], os_[2])
    H, W = (xs[2], xs[3]) if two_d else (1, xs[2])
    OH, OW = (os_[2], os_[3]) if two_d else (1, os_[2])
    C = xs[1]
    kh, kw = (a.kernel_shape if two_d else (1, a.kernel_shape[0]))
    sh, sw = (a.strides or (1,) * (2 if two_d else 1)) if two_d else (1, (a.strides or (1,))[0])
    dh, dw = (a.dilations or (1, 1)) if two_d else (1, (a.dilations or (1,))[0])
    pads = a.pads or (0,) * (4 if two_d else 2)
    ph, pw = (pads[0], pads[1]) if two_d else (0, pads[0])
    ph_end, pw_end = (pads[2], pads[3]) if two_d else (0, pads[1])
    n = int(np.prod(os_, dtype=np.int64))
    dt = ctx.dtype(x)
    odt = ctx.dtype(out)
    name = ctx.kernel_name()
    k = ctx.kernels
    k.comment(f"{node.op} '{node.name}': kernel {kh}x{kw}, stride {sh}x{sw}, pads ({ph},{pw})..({ph_end},{pw_end})"
              + (", NHWC" if nhwc else ""))
    with k.block(f"__global__ void __launch_bounds__(256) {name}(const {storage(dt)}* __restrict__ in, "
                 f"{storage(odt)}* __restrict__ out)"):
        with k.block(f"for (long long t = blockIdx.x * 256LL + threadIdx.x; t < {n}LL; t += gridDim.x * 256LL)"):
            if nhwc:
                k.line(f"const int c = t % {C}, ow = (t / {C}) % {OW}, oh = (t / {C * OW}) % {OH};")
                k.line(f"const {storage(dt)}* p = in + (t / ({C * OW}LL * {OH})) * {H * W * C}LL + c;")
                at = f"p[(h * {W} + w) * {C}]"
            else:
                k.line(f"const int ow = t % {OW}, oh = (t / {OW}) % {OH};")
                k.line(f"const {storage(dt)}* p = in + (t / ({OW}LL * {OH})) * {H * W}LL;")
                at = f"p[h * {W} + w]"
            k.line("float acc = -CUDART_INF_F;" if is_max else "float acc = 0.0f; int cnt = 0;")
            with k.block(f"for (int i = 0; i < {kh}; ++i)"):
                k.line(f"const int h = oh * {sh} - {ph} + i * {dh};")
                k.line(f"if (h < 0 || h >= {H}) continue;")
                with k.block(f"for (int j = 0; j < {kw}; ++j)"):
                    k.line(f"const int w = ow * {sw} - {pw} + j * {dw};")
                    k.line(f"if (w < 0 || w >= {W}) continue;")
                    k.line(f"const float v = {load_expr(dt, at)};")
                    k.line("acc = fmaxf(acc, v);" if is_max else "acc += v; ++cnt;")
            if is_max:
                k.line(f"out[t] = {store_expr(odt, 'acc')};")
            elif a.count_include_pad:
                # the window clipped to the padded input (ceil_mode windows may run past it)
                k.line(f"const int h0 = oh * {sh} - {ph}, w0 = ow * {sw} - {pw};")
                k.line(f"const int h1 = min(h0 + {(kh - 1) * dh + 1}, {H + ph_end}), "
                       f"w1 = min(w0 + {(kw - 1) * dw + 1}, {W + pw_end});")
                k.line(f"const int size = ((h1 - h0 + {dh - 1}) / {dh}) * ((w1 - w0 + {dw - 1}) / {dw});")
                k.line(f"out[t] = {store_expr(odt, 'acc / float(size)')};")
            else:
                k.line(f"out[t] = {store_expr(odt, 'cnt ? acc / float(cnt) : 0.0f')};")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // 256), 65535 * 8))), "256", [ctx.ptr(x), ctx.ptr(out)])
