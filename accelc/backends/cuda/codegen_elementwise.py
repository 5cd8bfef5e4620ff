"""Elementwise and data-movement lowerings of the CUDA backend: one generated "map" kernel per node.

A map kernel computes ``out[i] = f(in_0[view_0(i)], in_1[view_1(i)], ...)`` for every output element
``i``. A *view* maps output coordinates to an input element: affine (offset + coordinate . strides, which
covers broadcasting, Transpose, Slice with steps, Expand, Squeeze...) or, when no affine map exists
(Tile, DepthToSpace, Pad), a gather through an index table computed at compile time. Views of
data-movement ops are derived by running the op's own NumPy reference on an array of element indices,
so the backend can never disagree with the oracle about what a Transpose or a Slice means.

When the last output dimension is a multiple of 4 and every operand reads it contiguously (or
broadcasts it), each thread moves 4 elements with vector loads and stores (``accelc::Vec``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ...ir import DType, Graph, Node, get_op
from ...ir.ops.elementwise import BINARY, COMPARE, ELEMENTWISE_OPS, UNARY, UNARY_WITH_ATTRS
from ...ir.registry import infer_types
from ..cpu_amx.emitter import CppEmitter, c_float
from .lowering import COMPUTE, FLOATS, LowerCtx, load_expr, lowering, storage, store_expr

THREADS = 256
VEC = 4


# ---- views ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """How an operand is read at output coordinates: affine, or through an index table."""
    offset: int = 0
    strides: tuple[int, ...] = ()
    table: str | None = None        # C expression of an int32/int64 table (one entry per output element)
    table_ctype: str = "int32_t"
    fill: float | None = None       # value for table entries of -1 (Pad)


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= int(d)
    return tuple(reversed(strides))


def broadcast_view(in_shape: Sequence[int], out_shape: Sequence[int]) -> View:
    """numpy broadcasting of ``in_shape`` against ``out_shape``: size-1 and missing dims get stride 0."""
    cs = contiguous_strides(in_shape)
    lead = len(out_shape) - len(in_shape)
    strides = []
    for j, d in enumerate(out_shape):
        k = j - lead
        strides.append(0 if k < 0 or in_shape[k] == 1 and d != 1 else cs[k] if k >= 0 else 0)
    return View(0, tuple(strides))


def affine_of(index_map: np.ndarray) -> View | None:
    """The affine view equal to ``index_map`` (an array of input element indices), or None."""
    if index_map.size == 0:
        return View(0, (0,) * index_map.ndim)
    if (index_map < 0).any():
        return None
    origin = int(index_map.flat[0])
    strides = []
    for j, d in enumerate(index_map.shape):
        if d > 1:
            idx = [0] * index_map.ndim
            idx[j] = 1
            strides.append(int(index_map[tuple(idx)]) - origin)
        else:
            strides.append(0)
    expect = np.full(index_map.shape, origin, dtype=np.int64)
    for j, s in enumerate(strides):
        shape = [1] * index_map.ndim
        shape[j] = index_map.shape[j]
        expect = expect + np.arange(index_map.shape[j], dtype=np.int64).reshape(shape) * s
    if not np.array_equal(expect, index_map):
        return None
    return View(origin, tuple(strides))


# ---- elementwise expressions ---------------------------------------------------------------------
_UNARY_FLOAT = {
    "Identity": "{0}", "Neg": "(-{0})", "Abs": "fabs({0})", "Exp": "exp({0})", "Log": "log({0})",
    "Sqrt": "sqrt({0})", "Reciprocal": "({c}(1) / {0})", "Floor": "floor({0})", "Ceil": "ceil({0})",
    "Round": "rint({0})", "Sign": "{c}(({0} > 0) - ({0} < 0))", "Sin": "sin({0})", "Cos": "cos({0})",
    "Tan": "tan({0})", "Asin": "asin({0})", "Acos": "acos({0})", "Atan": "atan({0})", "Sinh": "sinh({0})",
    "Cosh": "cosh({0})", "Asinh": "asinh({0})", "Acosh": "acosh({0})", "Atanh": "atanh({0})",
    "Erf": "erf({0})", "Relu": "fmax({0}, {c}(0))", "Sigmoid": "({c}(1) / ({c}(1) + exp(-{0})))",
    "Tanh": "tanh({0})", "Softplus": "({0} > {c}(20) ? {0} : log1p(exp({0})))",
    "Softsign": "({0} / ({c}(1) + fabs({0})))",
    "HardSwish": "({0} * fmin(fmax({0} / {c}(6) + {c}(0.5), {c}(0)), {c}(1)))",
    "Mish": "({0} * tanh({0} > {c}(20) ? {0} : log1p(exp({0}))))",
    "Silu": "({0} / ({c}(1) + exp(-{0})))", "Not": "(!{0})", "IsNaN": "isnan({0})",
}
_UNARY_INT = {"Identity": "{0}", "Neg": "(-{0})", "Abs": "({0} < 0 ? -{0} : {0})",
              "Relu": "({0} > 0 ? {0} : {c}(0))", "Sign": "{c}(({0} > 0) - ({0} < 0))", "Not": "(!{0})"}
_BINARY_FLOAT = {
    "Add": "({0} + {1})", "Sub": "({0} - {1})", "Mul": "({0} * {1})", "Div": "({0} / {1})",
    "Pow": "pow({0}, {c}({1}))", "Max": "fmax({0}, {1})", "Min": "fmin({0}, {1})", "Mod": "fmod({0}, {1})",
    "FloorMod": "accelc::floor_mod({0}, {1})", "PRelu": "({0} >= 0 ? {0} : {0} * {1})",
}
_BINARY_INT = {
    "Add": "({0} + {1})", "Sub": "({0} - {1})", "Mul": "({0} * {1})", "Div": "accelc::int_div({0}, {1})",
    "Pow": "accelc::int_pow({0}, {c}({1}))", "Max": "max({0}, {1})", "Min": "min({0}, {1})",
    "Mod": "({1} == 0 ? {c}(0) : {0} % {1})", "FloorMod": "({1} == 0 ? {c}(0) : accelc::floor_mod({0}, {1}))",
    "PRelu": "({0} >= 0 ? {0} : {0} * {1})", "BitwiseAnd": "({0} & {1})", "BitwiseOr": "({0} | {1})",
    "BitwiseXor": "({0} ^ {1})",
}
_BOOL_BINARY = {"And": "({0} && {1})", "Or": "({0} || {1})", "Xor": "({0} != {1})",
                "BitwiseAnd": "({0} & {1})", "BitwiseOr": "({0} | {1})", "BitwiseXor": "({0} != {1})"}
_COMPARE = {"Equal": "({0} == {1})", "Less": "({0} < {1})", "LessOrEqual": "({0} <= {1})",
            "Greater": "({0} > {1})", "GreaterOrEqual": "({0} >= {1})"}


def _lit(value: float, ctype: str) -> str:
    if ctype in ("float", "double"):
        return f"{ctype}({c_float(value)})"
    return f"{ctype}({int(value)})"


def step_expr(op: str, attrs, args: list[str], arg_dtypes: list[DType], out_dtype: DType) -> str | None:
    """A compute-type C expression for one elementwise op, or None when unsupported for these dtypes."""
    dt = arg_dtypes[0] if op not in ("Where",) else arg_dtypes[1]
    c = COMPUTE.get(dt)
    if c is None:
        return None
    is_float = dt in FLOATS
    if op == "Cast":
        to = COMPUTE.get(out_dtype)
        if to is None:
            return None
        if out_dtype == DType.bool:
            return f"({args[0]} != 0)"
        return f"{to}({args[0]})"
    if op == "Where":
        return f"({args[0]} ? {args[1]} : {args[2]})"
    if op == "Clip":
        x = args[0]
        if len(args) > 1 and args[1] is not None:
            x = f"({x} < {args[1]} ? {args[1]} : {x})"
        if len(args) > 2 and args[2] is not None:
            x = f"({x} > {args[2]} ? {args[2]} : {x})"
        return x
    if op in UNARY_WITH_ATTRS:
        if not is_float:
            return None
        x = args[0]
        a = attrs if attrs is not None else get_op(op).attrs()
        if op == "LeakyRelu":
            return f"({x} >= 0 ? {x} : {x} * {_lit(a.alpha, c)})"
        if op == "Elu":
            return f"({x} >= 0 ? {x} : {_lit(a.alpha, c)} * expm1({x}))"
        if op == "Celu":
            al = _lit(a.alpha, c)
            return f"(fmax({x}, {c}(0)) + fmin({c}(0), {al} * expm1({x} / {al})))"
        if op == "ThresholdedRelu":
            return f"({x} > {_lit(a.alpha, c)} ? {x} : {c}(0))"
        if op == "HardSigmoid":
            return f"fmin(fmax({_lit(a.alpha, c)} * {x} + {_lit(a.beta, c)}, {c}(0)), {c}(1))"
        if op == "Selu":
            g, al = _lit(a.gamma, c), _lit(a.alpha, c)
            return f"({x} > 0 ? {g} * {x} : {g} * {al} * expm1({x}))"
        if op == "Gelu":
            fn = "accelc::gelu_tanhf" if a.approximate == "tanh" else "accelc::geluf"
            return f"{c}({fn}(float({x})))"
        return None
    if op in UNARY:
        table = _UNARY_FLOAT if is_float else (_UNARY_INT if dt != DType.bool else {"Identity": "{0}", "Not": "(!{0})"})
        t = table.get(op)
        return t.format(args[0], c=c) if t else None
    if op in COMPARE:
        return _COMPARE[op].format(*args)
    if op in BINARY:
        if dt == DType.bool:
            t = _BOOL_BINARY.get(op)
        else:
            t = (_BINARY_FLOAT if is_float else _BINARY_INT).get(op)
        return t.format(*args, c=c) if t else None
    return None


def _node_types(graph: Graph, node: Node) -> list[DType]:
    return [graph.types[i].dtype if i else None for i in node.inputs]


def _fused_steps(graph: Graph, node: Node):
    """(op, attrs, arg registers, arg dtypes, out dtype) for every step, with register dtypes inferred."""
    regs = [graph.types[i] for i in node.inputs]
    out = []
    for step in node.attrs.steps:
        attrs = step.attrs if step.attrs is not None else get_op(step.op).attrs()
        (t,) = infer_types(get_op(step.op), [regs[i] for i in step.args], attrs, [None] * len(step.args))
        out.append((step.op, attrs, step.args, [regs[i].dtype for i in step.args], t.dtype))
        regs.append(t)
    return out


def check_elementwise(graph: Graph, node: Node) -> str | None:
    if node.op == "FusedElementwise":
        steps = _fused_steps(graph, node)
    else:
        steps = [(node.op, node.attrs, tuple(range(len(node.inputs))), _node_types(graph, node),
                  graph.types[node.outputs[0]].dtype)]
    for op, attrs, args, dts, out in steps:
        for d in list(dts) + [out]:
            if d is not None and d not in COMPUTE:
                return f"dtype {d.short} has no CUDA arithmetic (only f32/f16/bf16/f64, integers and bool)"
        names = [f"a{k}" if d is not None else None for k, d in enumerate(dts)]
        if step_expr(op, attrs, names, list(dts), out) is None:
            return f"{op} on {dts[0].short} is not supported by the CUDA backend"
    return None


# ---- the map kernel -------------------------------------------------------------------------------
@dataclass
class Operand:
    ptr: str
    dtype: DType
    view: View


def _idx_type(n: int, operands: Sequence[Operand], out_shape) -> str:
    big = n >= 2 ** 31 - 1 or any(
        o.view.table is None and o.view.offset + sum(abs(s) * (d - 1) for s, d in zip(o.view.strides, out_shape))
        >= 2 ** 31 - 1 for o in operands)
    return "long long" if big else "int"


def _vectorizable(out_shape, operands: Sequence[Operand]) -> bool:
    if not out_shape or out_shape[-1] % VEC != 0:
        return False
    for o in operands:
        v = o.view
        if v.table is not None or v.strides[-1] not in (0, 1):
            return False
        if v.strides[-1] == 1 and (v.offset % VEC or any(s % VEC for s in v.strides[:-1])):
            return False
    return True


def emit_map(ctx: LowerCtx, *, out_ptr: str, out_dtype: DType, out_shape: Sequence[int],
             operands: Sequence[Operand], body: Callable[[CppEmitter, list[str]], str], comment: str,
             suffix: str = "") -> None:
    """Emits and launches one map kernel. ``body(em, loaded)`` writes statements computing the result from
    the loaded compute-type operand names and returns the result expression."""
    out_shape = tuple(int(d) for d in out_shape)
    n = int(np.prod(out_shape, dtype=np.int64)) if out_shape else 1
    if n == 0:
        return
    name = ctx.kernel_name(suffix)
    idx = _idx_type(n, operands, out_shape)
    vec = _vectorizable(out_shape, operands) and n >= VEC
    shape = out_shape if out_shape else (1,)
    k = ctx.kernels
    k.comment(comment)
    params = [f"const {storage(o.dtype)}* __restrict__ in{j}" for j, o in enumerate(operands)]
    params += [f"const {o.view.table_ctype}* __restrict__ map{j}" for j, o in enumerate(operands) if o.view.table]
    params.append(f"{storage(out_dtype)}* __restrict__ out")
    full = contiguous_strides(shape)

    def offsets(em: CppEmitter, first: str) -> list[str]:
        """Declares the coordinates of element ``first`` and returns each operand's offset expression."""
        need = [o for o in operands if o.view.table is None and tuple(o.view.strides) != full or o.view.offset]
        coords = []
        if any(any(o.view.strides) for o in need):
            em.line(f"{idx} r = {first};")
            for j in range(len(shape) - 1, -1, -1):
                if shape[j] == 1:
                    coords.append(None)
                    continue
                em.line(f"const {idx} c{j} = r % {shape[j]}; r /= {shape[j]};")
                coords.append(f"c{j}")
            coords.reverse()
        offs = []
        for j, o in enumerate(operands):
            v = o.view
            if v.table is not None:
                offs.append(f"map{j}[{first}]")
            elif tuple(v.strides) == full and not v.offset:
                offs.append(first)
            else:
                terms = [str(v.offset)] if v.offset else []
                terms += [f"c{d} * {s}" if s != 1 else f"c{d}" for d, s in enumerate(v.strides)
                          if s and coords and coords[d] is not None]
                offs.append(" + ".join(terms) or "0")
        return offs

    with k.block(f"__global__ void __launch_bounds__({THREADS}) {name}({', '.join(params)})"):
        total = n // VEC if vec else n
        with k.block(f"for ({idx} t = blockIdx.x * {idx}(blockDim.x) + threadIdx.x; t < {total}; "
                     f"t += {idx}(gridDim.x) * blockDim.x)"):
            first = f"t * {VEC}" if vec else "t"
            if vec:
                k.line(f"const {idx} i = {first};")
                first = "i"
            offs = offsets(k, first)
            if vec:
                for j, o in enumerate(operands):
                    st = storage(o.dtype)
                    if o.view.strides[-1] == 1:
                        k.line(f"const accelc::Vec<{st}, {VEC}> p{j} = "
                               f"*reinterpret_cast<const accelc::Vec<{st}, {VEC}>*>(in{j} + ({offs[j]}));")
                    else:
                        k.line(f"const {st} p{j} = in{j}[{offs[j]}];")
                k.line(f"accelc::Vec<{storage(out_dtype)}, {VEC}> o;")
                k.line("#pragma unroll")
                with k.block(f"for (int e = 0; e < {VEC}; ++e)"):
                    loaded = []
                    for j, o in enumerate(operands):
                        ref = f"p{j}.v[e]" if o.view.strides[-1] == 1 else f"p{j}"
                        k.line(f"const {COMPUTE[o.dtype]} x{j} = {load_expr(o.dtype, ref)};")
                        loaded.append(f"x{j}")
                    result = body(k, loaded)
                    k.line(f"o.v[e] = {store_expr(out_dtype, result)};")
                k.line(f"*reinterpret_cast<accelc::Vec<{storage(out_dtype)}, {VEC}>*>(out + i) = o;")
            else:
                loaded = []
                for j, o in enumerate(operands):
                    if o.view.table is not None:
                        k.line(f"const long long m{j} = {offs[j]};")
                        fill = _lit(o.view.fill or 0.0, COMPUTE[o.dtype])
                        k.line(f"const {COMPUTE[o.dtype]} x{j} = m{j} < 0 ? {fill} : "
                               f"{load_expr(o.dtype, f'in{j}[m{j}]')};")
                    else:
                        k.line(f"const {COMPUTE[o.dtype]} x{j} = {load_expr(o.dtype, f'in{j}[{offs[j]}]')};")
                    loaded.append(f"x{j}")
                result = body(k, loaded)
                k.line(f"out[t] = {store_expr(out_dtype, result)};")
    k.blank()
    args = [o.ptr for o in operands] + [o.view.table for o in operands if o.view.table] + [out_ptr]
    blocks = max(1, min(-(-(n // VEC if vec else n) // THREADS), 65535 * 8))
    ctx.launch(name, str(blocks), str(THREADS), args)


# ---- elementwise ops --------------------------------------------------------------------------------
def _check(graph: Graph, node: Node) -> str | None:
    return check_elementwise(graph, node)


def elementwise_body(graph: Graph, node: Node) -> tuple[Callable[[CppEmitter, list[str]], str], str]:
    """The statements of an elementwise node (one op or a ``FusedElementwise`` chain) as a map kernel
    body: ``body(em, loaded)`` takes the compute-type names of its non-empty inputs, in order, emits the
    steps and returns the result's name. Also a short description of the steps."""
    inputs = list(node.inputs)
    reg_of = {}
    k = 0
    for j, i in enumerate(inputs):
        if i:
            reg_of[j] = k
            k += 1
    if node.op == "FusedElementwise":
        steps = _fused_steps(graph, node)
        desc = " -> ".join(s.op for s in node.attrs.steps)
    else:
        steps = [(node.op, node.attrs, tuple(range(len(inputs))), _node_types(graph, node),
                  graph.types[node.outputs[0]].dtype)]
        desc = node.op

    def body(em: CppEmitter, loaded: list[str]) -> str:
        regs: list[str | None] = [loaded[reg_of[j]] if j in reg_of else None for j in range(len(inputs))]
        for s, (op, attrs, args, dts, odt) in enumerate(steps):
            expr = step_expr(op, attrs, [regs[a] for a in args], list(dts), odt)
            if odt in (DType.float16, DType.bfloat16):      # intermediates round like the reference
                expr = load_expr(odt, store_expr(odt, expr))
            name = f"s{s}"
            em.line(f"const {COMPUTE[odt]} {name} = {expr};")
            regs.append(name)
        return regs[-1]
    return body, desc


@lowering(*sorted(ELEMENTWISE_OPS), "FusedElementwise", check=_check)
def lower_elementwise(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    if node.op == "Identity":
        alias_or_copy(ctx, out, node.inputs[0], f"Identity '{node.name}': {out} = {node.inputs[0]}")
        return
    out_shape = ctx.shape(out)
    operands = [Operand(ctx.ptr(i), ctx.dtype(i), broadcast_view(ctx.shape(i), out_shape)) for i in node.inputs if i]
    body, desc = elementwise_body(ctx.graph, node)
    emit_map(ctx, out_ptr=ctx.ptr(out), out_dtype=ctx.dtype(out), out_shape=out_shape, operands=operands,
             body=body, comment=f"{node.op} '{node.name}': {desc}")


# ---- data movement through index maps ------------------------------------------------------------------
MOVEMENT_OPS = ("Identity_", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Expand",
                "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Split")
_ALIASING = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def _check_movement(graph: Graph, node: Node) -> str | None:
    for i in node.inputs[1:]:
        if i and i not in graph.constants:
            return (f"input '{i}' must be a compile-time constant (run fold_constants / simplify_shapes so "
                    f"that shapes, starts and repeats are known)")
    if node.op == "Pad" and node.attrs.mode != "constant" and graph.types[node.inputs[0]].dtype not in FLOATS:
        return None
    return None


def index_maps(graph: Graph, node: Node) -> list[np.ndarray]:
    """Runs the op's reference on element indices (+1, so that 0 marks Pad's fill) -> one map per output."""
    x = node.inputs[0]
    shape = tuple(int(d) for d in graph.types[x].shape)
    ids = np.arange(1, int(np.prod(shape, dtype=np.int64)) + 1, dtype=np.int64).reshape(shape)
    args = [ids] + [graph.constants[i] if i else None for i in node.inputs[1:]]
    attrs = node.attrs
    if node.op == "Pad":
        from dataclasses import replace
        attrs = replace(attrs, value=0.0)
    outs = get_op(node.op).reference(args, attrs)
    return [np.asarray(o).astype(np.int64) - 1 for o in outs]


def slab_offset(view: View | None, shape: Sequence[int]) -> int | None:
    """The element offset where an output of ``shape`` read through ``view`` lies in its input as one
    contiguous run in the same order (so the output can share the input's bytes), or None."""
    if view is None:
        return None
    dense = contiguous_strides(shape)
    if all(d == 1 or s == c for d, s, c in zip(shape, view.strides, dense)):
        return view.offset
    return None


@lowering(*[op for op in MOVEMENT_OPS if op != "Identity_"], check=_check_movement)
def lower_movement(ctx: LowerCtx, node: Node) -> None:
    x = node.inputs[0]
    if node.op in _ALIASING and ctx.alias(node.outputs[0], x):
        ctx.fwd.comment(f"{node.op} '{node.name}': {node.outputs[0]} is a view of {x} (no kernel)")
        return
    maps = index_maps(ctx.graph, node)
    fill = float(node.attrs.value) if node.op == "Pad" else None
    for k, (out, m) in enumerate(zip(node.outputs, maps)):
        view = affine_of(m)
        start = slab_offset(view, ctx.shape(out))
        if start is not None and ctx.alias(out, x, start):
            ctx.fwd.comment(f"{node.op} '{node.name}': {out} is the elements [{start}, {start + ctx.numel(out)}) "
                            f"of {x} in order: a view (no kernel)")
            continue
        if view is None:
            ctype = "int32_t" if m.max(initial=0) < 2 ** 31 - 1 else "int64_t"
            table = ctx.weight(m.astype(np.int32 if ctype == "int32_t" else np.int64), ctype)
            view = View(table=table, table_ctype=ctype, fill=fill)
            how = "index table"
        else:
            how = f"offset {view.offset}, strides {list(view.strides)}"
        emit_map(ctx, out_ptr=ctx.ptr(out), out_dtype=ctx.dtype(out), out_shape=ctx.shape(out),
                 operands=[Operand(ctx.ptr(x), ctx.dtype(x), view)], body=lambda em, xs: xs[0],
                 comment=f"{node.op} '{node.name}' -> {out}: copy through {how}", suffix=str(k) if k else "")


@lowering("Concat")
def lower_concat(ctx: LowerCtx, node: Node) -> None:
    out = node.outputs[0]
    shape = ctx.shape(out)
    axis = node.attrs.axis % len(shape)
    start = 0
    for k, x in enumerate(i for i in node.inputs if i):
        xs = ctx.shape(x)
        if not xs[axis]:
            continue
        # copy x into the slab [start, start + xs[axis]) of the output along `axis`
        out_strides = contiguous_strides(shape)
        view = View(start * out_strides[axis], tuple(out_strides[d] for d in range(len(shape))))
        _emit_scatter(ctx, x, out, xs, view, f"Concat '{node.name}': {x} -> {out}[{start}:{start + xs[axis]}] "
                      f"along axis {axis}", str(k))
        start += xs[axis]


def _emit_scatter(ctx: LowerCtx, x: str, out: str, x_shape, out_view: View, comment: str, suffix: str) -> None:
    """out[out_view(c)] = x[c] for every coordinate c of x (a strided write into a slab of ``out``)."""
    n = int(np.prod(x_shape, dtype=np.int64))
    if n == 0:
        return
    name = ctx.kernel_name(suffix)
    k = ctx.kernels
    k.comment(comment)
    st, ot = storage(ctx.dtype(x)), storage(ctx.dtype(out))
    idx = "long long" if n >= 2 ** 31 - 1 or ctx.numel(out) >= 2 ** 31 - 1 else "int"
    with k.block(f"__global__ void __launch_bounds__({THREADS}) {name}(const {st}* __restrict__ in, "
                 f"{ot}* __restrict__ out)"):
        with k.block(f"for ({idx} t = blockIdx.x * {idx}(blockDim.x) + threadIdx.x; t < {n}; "
                     f"t += {idx}(gridDim.x) * blockDim.x)"):
            k.line(f"{idx} r = t;")
            terms = [str(out_view.offset)] if out_view.offset else []
            for j in range(len(x_shape) - 1, -1, -1):
                if x_shape[j] > 1:
                    k.line(f"const {idx} c{j} = r % {x_shape[j]}; r /= {x_shape[j]};")
                    terms.append(f"c{j} * {out_view.strides[j]}")
            k.line(f"out[{' + '.join(terms) or '0'}] = in[t];")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // THREADS), 65535 * 8))), str(THREADS), [ctx.ptr(x), ctx.ptr(out)])


# ---- Gather ---------------------------------------------------------------------------------------------
def _check_gather(graph: Graph, node: Node) -> str | None:
    if graph.types[node.inputs[1]].dtype not in (DType.int32, DType.int64):
        return "Gather indices must be int32 or int64"
    return None


@lowering("Gather", check=_check_gather)
def lower_gather(ctx: LowerCtx, node: Node) -> None:
    data, indices = node.inputs[0], node.inputs[1]
    out = node.outputs[0]
    ds = ctx.shape(data)
    axis = node.attrs.axis % len(ds)
    outer = int(np.prod(ds[:axis], dtype=np.int64))
    inner = int(np.prod(ds[axis + 1:], dtype=np.int64))
    n_idx = ctx.numel(indices)
    n = outer * n_idx * inner
    if n == 0:
        return
    if ctx.is_const(indices):       # constant indices picking one contiguous slab (e.g. q, k, v of a QKV tensor)
        start = slab_offset(affine_of(index_maps(ctx.graph, node)[0]), ctx.shape(out))
        if start is not None and ctx.alias(out, data, start):
            ctx.fwd.comment(f"Gather '{node.name}': {out} is the elements [{start}, {start + n}) of {data} in "
                            f"order: a view (no kernel)")
            return
    name = ctx.kernel_name()
    k = ctx.kernels
    st, it = storage(ctx.dtype(data)), storage(ctx.dtype(indices))
    k.comment(f"Gather '{node.name}': {out}[o, j, i] = {data}[o, idx[j] (negative from the end), i] along axis {axis}")
    with k.block(f"__global__ void __launch_bounds__({THREADS}) {name}(const {st}* __restrict__ data, "
                 f"const {it}* __restrict__ idx, {st}* __restrict__ out)"):
        with k.block(f"for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < {n}LL; "
                     f"t += (long long)gridDim.x * blockDim.x)"):
            k.line(f"const long long i = t % {inner}, j = (t / {inner}) % {n_idx}, o = t / ({inner}LL * {n_idx});")
            k.line(f"long long g = (long long)idx[j]; if (g < 0) g += {ds[axis]};")
            k.line(f"g = g < 0 ? 0 : (g >= {ds[axis]} ? {ds[axis] - 1} : g);   // out-of-range indices clamp")
            k.line(f"out[t] = data[(o * {ds[axis]} + g) * {inner} + i];")
    k.blank()
    ctx.launch(name, str(max(1, min(-(-n // THREADS), 65535 * 8))), str(THREADS),
               [ctx.ptr(data), ctx.ptr(indices), ctx.ptr(out)])


# ---- BatchNormalization (inference form: a per-channel affine map) ------------------------------------
def _check_bn(graph: Graph, node: Node) -> str | None:
    if any(i not in graph.constants for i in node.inputs[1:5]):
        return "BatchNormalization needs constant scale, bias, mean and variance (inference form)"
    if graph.types[node.inputs[0]].dtype not in FLOATS:
        return "BatchNormalization needs a float input"
    return None


@lowering("BatchNormalization", check=_check_bn)
def lower_batchnorm(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    scale, bias, mean, var = (ctx.const(i).astype(np.float64) for i in node.inputs[1:5])
    a = scale / np.sqrt(var + node.attrs.epsilon)
    b = bias - mean * a
    shape = ctx.shape(x)
    cshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    va = broadcast_view(cshape, shape)
    ops = [Operand(ctx.ptr(x), ctx.dtype(x), broadcast_view(shape, shape)),
           Operand(ctx.weight(a.astype(np.float32), "float"), DType.float32, va),
           Operand(ctx.weight(b.astype(np.float32), "float"), DType.float32, va)]
    emit_map(ctx, out_ptr=ctx.ptr(out), out_dtype=ctx.dtype(out), out_shape=shape, operands=ops,
             body=lambda em, xs: f"({xs[0]} * {xs[1]} + {xs[2]})",
             comment=f"BatchNormalization '{node.name}': y = x * a[c] + b[c] (a, b folded at compile time)")


def alias_or_copy(ctx: LowerCtx, out: str, src: str, comment: str) -> None:
    """``out`` takes ``src``'s bytes when it can, else a contiguous copy kernel."""
    if ctx.alias(out, src):
        ctx.fwd.comment(comment + " (view, no kernel)")
        return
    shape = ctx.shape(out)
    emit_map(ctx, out_ptr=ctx.ptr(out), out_dtype=ctx.dtype(out), out_shape=shape,
             operands=[Operand(ctx.ptr(src), ctx.dtype(src), View(0, contiguous_strides(shape)))],
             body=lambda em, xs: xs[0], comment=comment)


__all__ = ["View", "Operand", "emit_map", "broadcast_view", "contiguous_strides", "affine_of", "alias_or_copy",
           "math"]
