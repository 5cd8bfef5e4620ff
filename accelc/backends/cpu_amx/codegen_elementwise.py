"""Lowering of elementwise ops and FusedElementwise: generated loops with broadcasting index math.

Every elementwise node is lowered as a chain of scalar steps over a register file (a plain node is a
one-step chain), evaluated inside one loop nest over the output. Broadcasting is resolved at compile
time: size-1 axes are dropped and adjacent axes whose strides chain in every operand are merged, which
leaves (a) one flat loop when every operand is dense or a scalar, or (b) rows: an outer loop computing
each operand's row base and an inner loop where every operand has stride 1 or 0 (row broadcast). Both
inner loops are plain countable loops over restrict-free pointers that g++ vectorizes.

Arithmetic follows the IR references: f16/bf16 are loaded as fp32, computed in fp32 and rounded to
nearest even on store; integer ops wrap (the model is built with -fwrapv); integer division truncates;
float->int casts truncate (accelc_scalar.h).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...ir import DType, Graph, Node, TensorType
from ...ir.registry import get_op, infer_types
from .codegen_context import COMPUTABLE, CTYPE, FLOAT_DTYPES, LowerCtx, lowering, numel
from .emitter import CppEmitter, c_float

PARALLEL_ELEMENTS = 1 << 15

def _fn(L, name: str) -> str:
    """fp32 formulas use the vectorizable vexp/verf/vtanh of accelc_types.h (<= 4.5e-7 relative error),
    float64 ones libm's functions."""
    return f"v{name}" if L is c_float else f"std::{name}"


# ---- scalar formulas ---------------------------------------------------------------------------------
# Each takes the argument names and a literal maker L(value) for the compute type (float or double).
UNARY_FLOAT = {
    "Identity": lambda x, L: x,
    "Neg": lambda x, L: f"(-{x})",
    "Abs": lambda x, L: f"std::fabs({x})",
    "Exp": lambda x, L: f"{_fn(L, 'exp')}({x})",
    "Log": lambda x, L: f"std::log({x})",
    "Sqrt": lambda x, L: f"std::sqrt({x})",
    "Reciprocal": lambda x, L: f"({L(1)} / {x})",
    "Floor": lambda x, L: f"std::floor({x})",
    "Ceil": lambda x, L: f"std::ceil({x})",
    "Round": lambda x, L: f"std::nearbyint({x})",
    "Sign": lambda x, L: f"({x} > {L(0)} ? {L(1)} : ({x} < {L(0)} ? {L(-1)} : {x}))",
    "Sin": lambda x, L: f"std::sin({x})",
    "Cos": lambda x, L: f"std::cos({x})",
    "Tan": lambda x, L: f"std::tan({x})",
    "Asin": lambda x, L: f"std::asin({x})",
    "Acos": lambda x, L: f"std::acos({x})",
    "Atan": lambda x, L: f"std::atan({x})",
    "Sinh": lambda x, L: f"std::sinh({x})",
    "Cosh": lambda x, L: f"std::cosh({x})",
    "Asinh": lambda x, L: f"std::asinh({x})",
    "Acosh": lambda x, L: f"std::acosh({x})",
    "Atanh": lambda x, L: f"std::atanh({x})",
    "Erf": lambda x, L: f"{_fn(L, 'erf')}({x})",
    "Relu": lambda x, L: f"({x} < {L(0)} ? {L(0)} : {x})",
    "Sigmoid": lambda x, L: f"({L(1)} / ({L(1)} + {_fn(L, 'exp')}(-{x})))",
    "Tanh": lambda x, L: f"{_fn(L, 'tanh')}({x})",
    "Softplus": lambda x, L: f"softplus({x})",
    "Softsign": lambda x, L: f"({x} / ({L(1)} + std::fabs({x})))",
    "HardSwish": lambda x, L: f"({x} * std::fmin(std::fmax({x} / {L(6)} + {L(0.5)}, {L(0)}), {L(1)}))",
    "Mish": lambda x, L: f"({x} * {_fn(L, 'tanh')}(softplus({x})))",
    "Silu": lambda x, L: f"({x} / ({L(1)} + {_fn(L, 'exp')}(-{x})))",
}
UNARY_ATTR_FLOAT = {
    "LeakyRelu": lambda x, a, L: f"({x} >= {L(0)} ? {x} : {x} * {L(a.alpha)})",
    "Elu": lambda x, a, L: f"({x} >= {L(0)} ? {x} : {L(a.alpha)} * std::expm1({x}))",
    "Celu": lambda x, a, L: (f"(std::fmax({L(0)}, {x}) + std::fmin({L(0)}, {L(a.alpha)} * "
                             f"std::expm1({x} / {L(a.alpha)})))"),
    "ThresholdedRelu": lambda x, a, L: f"({x} > {L(a.alpha)} ? {x} : {L(0)})",
    "HardSigmoid": lambda x, a, L: (f"std::fmin(std::fmax({L(a.alpha)} * {x} + {L(a.beta)}, {L(0)}), "
                                    f"{L(1)})"),
    "Selu": lambda x, a, L: (f"({x} > {L(0)} ? {L(a.gamma)} * {x} : "
                             f"{L(a.gamma * a.alpha)} * std::expm1({x}))"),
    "Gelu": lambda x, a, L: (
        f"({L(0.5)} * {x} * ({L(1)} + {_fn(L, 'tanh')}({L(math.sqrt(2 / math.pi))} * ({x} + {L(0.044715)} * {x} * {x} * {x}))))"
        if a.approximate == "tanh" else f"({L(0.5)} * {x} * ({L(1)} + {_fn(L, 'erf')}({x} * {L(1 / math.sqrt(2))})))"),
}
BINARY_ANY = {
    "Add": lambda a, b: f"({a} + {b})",
    "Sub": lambda a, b: f"({a} - {b})",
    "Mul": lambda a, b: f"({a} * {b})",
    "BitwiseAnd": lambda a, b: f"({a} & {b})",
    "BitwiseOr": lambda a, b: f"({a} | {b})",
    "BitwiseXor": lambda a, b: f"({a} ^ {b})",
    "And": lambda a, b: f"({a} && {b})",
    "Or": lambda a, b: f"({a} || {b})",
    "Xor": lambda a, b: f"(bool({a}) != bool({b}))",
    "Equal": lambda a, b: f"({a} == {b})",
    "Less": lambda a, b: f"({a} < {b})",
    "LessOrEqual": lambda a, b: f"({a} <= {b})",
    "Greater": lambda a, b: f"({a} > {b})",
    "GreaterOrEqual": lambda a, b: f"({a} >= {b})",
}
BINARY_FLOAT = {
    "Div": lambda a, b: f"({a} / {b})",
    "Pow": lambda a, b: f"std::pow({a}, {b})",
    "Max": lambda a, b: f"nan_max({a}, {b})",
    "Min": lambda a, b: f"nan_min({a}, {b})",
    "Mod": lambda a, b: f"std::fmod({a}, {b})",
    "FloorMod": lambda a, b: f"float_floor_mod({a}, {b})",
    "PRelu": lambda a, b: f"({a} >= 0 ? {a} : {a} * {b})",
}
BINARY_INT = {
    "Div": lambda a, b, t: f"int_div<{t}>({a}, {b})",
    "Pow": lambda a, b, t: f"float_to_int<{t}>(std::pow(double({a}), double({b})))",
    "Max": lambda a, b, t: f"({a} > {b} ? {a} : {b})",
    "Min": lambda a, b, t: f"({a} < {b} ? {a} : {b})",
    "Mod": lambda a, b, t: f"int_fmod<{t}>({a}, {b})",
    "FloorMod": lambda a, b, t: f"int_floor_mod<{t}>({a}, {b})",
    "PRelu": lambda a, b, t: f"({a} >= 0 ? {a} : {t}({a} * {b}))",
}
INT_UNARY = {
    "Identity": lambda x, t: x,
    "Neg": lambda x, t: f"{t}(-{x})",
    "Abs": lambda x, t: f"({x} < 0 ? {t}(-{x}) : {x})",
    "Sign": lambda x, t: f"{t}(({x} > 0) - ({x} < 0))",
    "Relu": lambda x, t: f"({x} < 0 ? {t}(0) : {x})",
    "Floor": lambda x, t: x,
    "Ceil": lambda x, t: x,
    "Round": lambda x, t: x,
    "Reciprocal": lambda x, t: f"({x} == 0 ? {t}(0) : {t}(1 / {x}))",
}
BOOL_OK = {"Identity", "Not", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
           "Where", "Cast", "Max", "Min", "Add", "Mul", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "IsNaN"}
FLOAT_REFUSED = {"BitwiseAnd": "bitwise ops need integer operands", "BitwiseOr": "bitwise ops need integer operands",
                 "BitwiseXor": "bitwise ops need integer operands"}


def compute_ctype(dtype: DType) -> str:
    if dtype in FLOAT_DTYPES:
        return "float"
    if dtype == DType.bool:
        return "bool"
    return CTYPE[dtype]


def _lit_maker(dtype: DType):
    if dtype == DType.float64:
        return lambda v: repr(float(v)) if math.isfinite(v) else c_float(v)
    return c_float


def load_expr(ptr: str, index: str, dtype: DType) -> str:
    if dtype == DType.float16:
        return f"f16_to_f32({ptr}[{index}])"
    if dtype == DType.bfloat16:
        return f"bf16_to_f32({ptr}[{index}])"
    if dtype == DType.bool:
        return f"({ptr}[{index}] != 0)"
    return f"{ptr}[{index}]"


def store_expr(value: str, dtype: DType) -> str:
    if dtype == DType.float16:
        return f"f32_to_f16({value})"
    if dtype == DType.bfloat16:
        return f"f32_to_bf16({value})"
    if dtype == DType.bool:
        return f"uint8_t({value})"
    return value


def convert_expr(value: str, src: DType, dst: DType) -> str:
    """``value`` (compute type of src) converted to the compute type of dst, NumPy astype semantics."""
    if compute_ctype(src) == compute_ctype(dst):
        return value
    if dst == DType.bool:
        return f"({value} != 0)"
    if dst in FLOAT_DTYPES or dst == DType.float64:
        return f"{compute_ctype(dst)}({value})"
    if src in FLOAT_DTYPES or src == DType.float64:
        return f"float_to_int<{CTYPE[dst]}>({value})"
    return f"{CTYPE[dst]}({value})"


@dataclass(frozen=True)
class Reg:
    name: str
    dtype: DType


def step_expr(op: str, attrs, args: list[Reg | None], out_dtype: DType) -> str:
    """The C expression of one elementwise op on registers (compute types), in out_dtype's compute type."""
    x = args[0]
    kind = x.dtype
    is_float = kind in FLOAT_DTYPES or kind == DType.float64
    L = _lit_maker(kind)
    if op == "Cast":
        return convert_expr(x.name, kind, out_dtype)
    if op == "Not":
        return f"(!{x.name})"
    if op == "IsNaN":
        return f"({x.name} != {x.name})" if is_float else "false"
    if op == "Where":
        c, a, b = args
        return f"({c.name} ? {a.name} : {b.name})"
    if op == "Clip":
        y = x.name
        lo, hi = (args + [None, None])[1:3]
        if lo is not None:
            y = f"nan_max({y}, {convert_expr(lo.name, lo.dtype, kind)})" if is_float else \
                f"({y} < {lo.name} ? {lo.name} : {y})"
        if hi is not None:
            y = f"nan_min({y}, {convert_expr(hi.name, hi.dtype, kind)})" if is_float else \
                f"({y} > {hi.name} ? {hi.name} : {y})"
        return y
    if len(args) == 2:
        a, b = x.name, convert_expr(args[1].name, args[1].dtype, kind)
        if op in BINARY_ANY:
            expr = BINARY_ANY[op](a, b)
            return expr if out_dtype == DType.bool or is_float else f"{compute_ctype(out_dtype)}({expr})"
        if is_float:
            return BINARY_FLOAT[op](a, b)
        return BINARY_INT[op](a, b, CTYPE[kind] if kind != DType.bool else "bool")
    if op in UNARY_ATTR_FLOAT:
        if is_float:
            return UNARY_ATTR_FLOAT[op](x.name, attrs, L)
        return f"float_to_int<{CTYPE[kind]}>({UNARY_ATTR_FLOAT[op](f'double({x.name})', attrs, _lit_maker(DType.float64))})"
    if is_float:
        return UNARY_FLOAT[op](x.name, L)
    if op in INT_UNARY and kind != DType.bool:
        return INT_UNARY[op](x.name, CTYPE[kind])
    if kind == DType.bool and op == "Identity":
        return x.name
    # integer input through a float formula: NumPy computes in float64 and casts back
    return f"float_to_int<{CTYPE[kind]}>({UNARY_FLOAT[op](f'double({x.name})', _lit_maker(DType.float64))})"


def check_step(op: str, in_dtypes: list[DType], out_dtype: DType) -> str | None:
    for d in list(in_dtypes) + [out_dtype]:
        if d not in COMPUTABLE:
            return f"{op} on {d.short} values: the CPU backend computes f32/f16/bf16/f64/int8/uint8/int16/int32/int64/bool"
    x = in_dtypes[0]
    if op == "Cast":
        return None
    if x == DType.bool and op not in BOOL_OK:
        return f"{op} on bool operands has no NumPy meaning the CPU backend reproduces"
    if (x in FLOAT_DTYPES or x == DType.float64) and op in FLOAT_REFUSED:
        return f"{op} on {x.short}: {FLOAT_REFUSED[op]}"
    if op == "Where" and in_dtypes[0] != DType.bool:
        return "Where needs a bool condition"
    return None


# ---- loop nest -------------------------------------------------------------------------------------------
def collapse_broadcast(out_shape, in_shapes):
    """Merged loop axes: [(size, [stride of each operand])], size-1 axes dropped, chained axes merged."""
    rank = len(out_shape)
    strides_per_input = []
    for shape in in_shapes:
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        st, acc = [0] * rank, 1
        for d in range(rank - 1, -1, -1):
            st[d] = 0 if padded[d] == 1 else acc
            acc *= padded[d]
        strides_per_input.append(st)
    dims: list[tuple[int, list[int]]] = []
    for d in range(rank):
        size = out_shape[d]
        if size == 1:
            continue
        strides = [s[d] for s in strides_per_input]
        if dims and all(prev == s * size for prev, s in zip(dims[-1][1], strides)):
            dims[-1] = (dims[-1][0] * size, strides)
        else:
            dims.append((size, strides))
    return dims


def emit_loop(em: CppEmitter, out_ptr: str, out_dtype: DType, out_shape, operands: list[tuple[str, DType, tuple]],
              body) -> None:
    """Emits the loop nest. ``operands``: (pointer, dtype, shape); ``body(em, loads) -> result expr`` where
    loads[k] is the register name of operand k at the current element."""
    total = numel(out_shape)
    if total == 0:
        em.comment("empty tensor: nothing to compute")
        return
    dims = collapse_broadcast(tuple(out_shape), [op[2] for op in operands])
    parallel = total >= PARALLEL_ELEMENTS

    def loads_for(index_of):
        regs = []
        for k, (ptr, dtype, _) in enumerate(operands):
            name = em.fresh(f"x{k}")
            em.line(f"const {compute_ctype(dtype)} {name} = {load_expr(ptr, index_of(k), dtype)};")
            regs.append(name)
        return regs

    if not dims:                                  # a single element
        with em.block(""):
            regs = loads_for(lambda k: "0")
            em.line(f"{out_ptr}[0] = {store_expr(body(em, regs), out_dtype)};")
        return
    if len(dims) == 1:                            # dense/scalar operands: one flat loop
        size, strides = dims[0]
        em.line("#pragma omp parallel for simd schedule(static)" if parallel else "#pragma omp simd")
        with em.block(f"for (int64_t i = 0; i < {size}; ++i)"):
            regs = loads_for(lambda k: "i" if strides[k] else "0")
            em.line(f"{out_ptr}[i] = {store_expr(body(em, regs), out_dtype)};")
        return
    outer = dims[:-1]
    inner, inner_strides = dims[-1]
    n_outer = numel(d[0] for d in outer)
    if parallel and n_outer > 1:
        em.line("#pragma omp parallel for schedule(static)")
    with em.block(f"for (int64_t o = 0; o < {n_outer}; ++o)"):
        if len(outer) > 1:
            em.line("int64_t rem = o;")
        idx = []
        for d in range(len(outer) - 1, -1, -1):
            name = f"i{d}"
            if len(outer) == 1:
                em.line(f"const int64_t {name} = o;")
            elif d == 0:
                em.line(f"const int64_t {name} = rem;")
            else:
                em.line(f"const int64_t {name} = rem % {outer[d][0]}; rem /= {outer[d][0]};")
            idx.append((d, name))
        bases = []
        for k in range(len(operands)):
            terms = [f"{name} * {outer[d][1][k]}" for d, name in idx if outer[d][1][k]]
            bases.append(" + ".join(terms) if terms else "0")
        em.line(f"const int64_t out_row = o * {inner};")
        em.line("#pragma omp simd" if not (parallel and n_outer == 1) else "#pragma omp parallel for simd")
        with em.block(f"for (int64_t j = 0; j < {inner}; ++j)"):
            regs = loads_for(lambda k: f"{bases[k]} + j" if inner_strides[k] else bases[k])
            em.line(f"{out_ptr}[out_row + j] = {store_expr(body(em, regs), out_dtype)};")


# ---- lowering of plain elementwise nodes and FusedElementwise -------------------------------------------
def _scalar_type(dtype: DType) -> TensorType:
    return TensorType(dtype, ())


def _steps_of(graph: Graph, node: Node):
    """(inputs used, steps as (op, attrs, arg register indices), per-register dtypes)."""
    if node.op == "FusedElementwise":
        inputs = list(node.inputs)
        dtypes = [graph.types[i].dtype for i in inputs]
        steps = []
        for s in node.attrs.steps:
            attrs = s.attrs if s.attrs is not None else get_op(s.op).attrs()
            out_t = infer_types(get_op(s.op), [_scalar_type(dtypes[a]) for a in s.args], attrs,
                                [None] * len(s.args))[0]
            steps.append((s.op, attrs, list(s.args)))
            dtypes.append(out_t.dtype)
        return inputs, steps, dtypes
    present = [i for i in node.inputs if i]
    args: list[int | None] = []
    k = 0
    for i in node.inputs:
        if i:
            args.append(k)
            k += 1
        else:
            args.append(None)
    dtypes = [graph.types[i].dtype for i in present] + [graph.types[node.outputs[0]].dtype]
    return present, [(node.op, node.attrs, args)], dtypes


def check_elementwise(graph: Graph, node: Node) -> str | None:
    inputs, steps, dtypes = _steps_of(graph, node)
    n_in = len(inputs)
    for r, (op, attrs, args) in enumerate(steps):
        reason = check_step(op, [dtypes[a] for a in args if a is not None], dtypes[n_in + r])
        if reason:
            return reason
    return None


def emit_elementwise(ctx: LowerCtx, node: Node) -> None:
    inputs, steps, dtypes = _steps_of(ctx.graph, node)
    out = node.outputs[0]
    n_in = len(inputs)
    operands = [(ctx.ptr(v), ctx.dtype(v), ctx.shape(v)) for v in inputs]

    def body(em: CppEmitter, loads: list[str]) -> str:
        regs: list[Reg] = [Reg(name, dtypes[k]) for k, name in enumerate(loads)]
        for r, (op, attrs, args) in enumerate(steps):
            out_dtype = dtypes[n_in + r]
            expr = step_expr(op, attrs, [regs[a] if a is not None else None for a in args], out_dtype)
            name = em.fresh(f"r{n_in + r}")
            em.line(f"const {compute_ctype(out_dtype)} {name} = {expr};  // {op}")
            regs.append(Reg(name, out_dtype))
        return regs[-1].name

    emit_loop(ctx.em, ctx.ptr(out), ctx.dtype(out), ctx.shape(out), operands, body)


_ELEMENTWISE = [op for op in (
    list(UNARY_FLOAT) + list(UNARY_ATTR_FLOAT) + list(BINARY_ANY) + list(BINARY_FLOAT)
    + ["Not", "IsNaN", "Where", "Clip", "Cast", "FusedElementwise"]) if op != "Identity"]
lowering(*dict.fromkeys(_ELEMENTWISE), check=check_elementwise)(emit_elementwise)
