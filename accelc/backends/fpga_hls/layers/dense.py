"""The dense family of FPGA layers: Dense, Activation, Softmax, Add, ScaleShift, Concat and Reshape.

Every layer follows ``layers/base.py``: per-sample channels-last shapes, int64 codes in ``fx_eval``
equal bit for bit to the C++ it emits (``hls_src/accelc_hls_dense.h`` and
``hls_src/accelc_hls_activation.h``), constants emitted as exactly representable decimals.

Estimates (``estimate``) are a model, not a synthesis report. What it counts:

* DSPs: multiplies that run in parallel (per sample in io_parallel, per row/packet in io_stream)
  divided by the reuse factor, times ``dsp_per_multiply`` of the operand widths.
* BRAM18K: weight memories when the reuse factor is at least 32 (deep enough for block RAM), and
  lookup tables of more than 1 Kbit, one copy per two parallel lookups (dual-port ROM); smaller
  memories are counted as LUTs.
* LUT: one adder (output-width LUTs) per accumulating lane, comparators and multiplexers per element,
  LUT-ROM for small tables; FF: registers for the accumulators and one pipeline stage of the outputs.
* Latency in cycles from first input to last output of one sample; II the cycles between samples.

``estimate`` cannot see the design's io style (its signature has none); a layer uses the io style it
last saw in ``checks(io)`` or ``cpp_call(io, ...)``, or the ``io`` attribute the driver may set, and
assumes io_parallel otherwise.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ....errors import BackendError
from ..fixed import FixedType, integer_bits_for, require_exact
from .base import (MAX_PARTITION, Estimate, Finding, Layer, Precision, Value, bram_18k_for,
                   dsp_per_multiply)

COMMON_H = "accelc_hls_common.h"
DENSE_H = "accelc_hls_dense.h"
ACT_H = "accelc_hls_activation.h"
LITERAL_BITS = 53          # constants are emitted as doubles: codes must be exact in a double


# ---- helpers ----------------------------------------------------------------------------------------
def _lit(t: FixedType, code: int) -> str:
    """An exactly representable C++ double literal for ``code`` of type ``t``."""
    code = int(code)
    if abs(code) >= 1 << LITERAL_BITS:
        raise BackendError(f"constant code {code} of type {t.short()} is not exact as a double; use a type of "
                           f"at most {LITERAL_BITS} bits for weights and tables")
    return repr(math.ldexp(float(code), -t.frac))


def _c_array(ctype: str, name: str, t: FixedType, codes, per_line: int = 8) -> str:
    flat = [_lit(t, c) for c in np.asarray(codes, dtype=np.int64).ravel().tolist()]
    if not flat:
        flat = ["0"]
    lines = [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    {body}\n}};"


def _int_array(name: str, values) -> str:
    flat = [str(int(v)) for v in np.asarray(values).ravel().tolist()] or ["0"]
    lines = [", ".join(flat[i:i + 16]) for i in range(0, len(flat), 16)]
    return f"static const int {name}[{len(flat)}] = {{\n    " + ",\n    ".join(lines) + "\n};"


def _result_type(layer: Layer, p: Precision, default: Callable[[], FixedType]) -> FixedType:
    """The user's ``result`` override, else a type already set on the output value, else ``default``."""
    o = p.override(layer.name, "result")
    if o is not None:
        return o
    if layer.output.type is not None:
        return layer.output.type
    return default()


def _need_type(v: Value, layer: Layer) -> FixedType:
    if v.type is None:
        raise BackendError(f"layer '{layer.name}' ({layer.kind}): input '{v.name}' has no fixed-point type yet; "
                           f"types are chosen in execution order, set the design inputs' types first")
    return v.type


def _lshift(c: np.ndarray, s: int) -> np.ndarray:
    return c << np.int64(s) if s > 0 else c


def _max_abs_code(t: FixedType) -> int:
    return max(-t.min_code, t.max_code)


def _clog2(n: int) -> int:
    return max(0, math.ceil(math.log2(max(n, 1))))


def _const_type(values: np.ndarray, frac: int, signed: bool = True) -> FixedType:
    """A type holding ``values`` at ``frac`` fractional bits (fewer when that would pass 53 bits),
    rounded to nearest even, saturating (bias/shift constants added to an exact accumulator)."""
    m = float(np.max(np.abs(values))) if np.size(values) else 0.0
    integer = integer_bits_for(m, signed)
    frac = min(frac, LITERAL_BITS - integer)
    width = max(integer + frac, 2)
    return FixedType(width, width - frac, signed, "RND_CONV", "SAT")


def _rounding_error_lsb(t: FixedType) -> float:
    """Largest error of one assignment to ``t`` in LSBs (quantization only)."""
    return 1.0 if t.rounding in ("TRN", "TRN_ZERO") else 0.5


def _check_exact_cast(layer: Layer, what: str, t: FixedType) -> None:
    if t.width > LITERAL_BITS:
        raise BackendError(f"layer '{layer.name}': {what} type {t.short()} is wider than {LITERAL_BITS} bits; "
                           f"choose a narrower {what} type")


class _FamilyLayer(Layer):
    io: str | None = None

    def _io(self) -> str:
        return self.io or "io_parallel"

    def _note_io(self, io: str) -> None:
        if io not in ("io_parallel", "io_stream"):
            raise BackendError(f"unknown FPGA io style '{io}'; use io_parallel or io_stream")
        self.io = io

    def _stream_decl(self, name: str, ctype: str, packet: int, depth: int) -> list[str]:
        return [f"hls::stream<accelc_hls::packet<{ctype}, {packet}> > {name}(\"{name}\");",
                f"#pragma HLS STREAM variable={name} depth={max(2, depth)}"]


# ---- Dense ------------------------------------------------------------------------------------------
class Dense(_FamilyLayer):
    """``y = x @ W + b`` over the last dimension: ``x`` (..., K) -> ``out`` (..., N); leading dims are rows.

    Types: weights ``Precision.for_weights`` (override ``weight``); bias at the exact accumulator's
    fractional precision so adding it is exact (override ``bias``); an exact accumulator (override
    ``accum``: then every addition is cast to it, bias first, then k = 0..K-1); output
    ``result`` override or the calibrated type of ``out``.

    io_parallel: the whole tensor in one call; reuse factor R shares each multiplier R times (II = R).
    io_stream: one packet is one row; the same kernel per row (II = R per row).
    """
    kind = "dense"
    headers = (COMMON_H, DENSE_H)

    def __init__(self, name: str, x: Value, out: Value, weight: np.ndarray, bias: np.ndarray | None,
                 nodes: Sequence[str] = (), reuse_factor: int = 1):
        super().__init__(name, [x], out, nodes, reuse_factor)
        w = np.asarray(weight, dtype=np.float64)
        if w.ndim != 2:
            raise BackendError(f"dense layer '{self.name}': weight must be 2-D (K, N), got shape {w.shape}")
        k, n = w.shape
        if not x.shape or x.shape[-1] != k:
            raise BackendError(f"dense layer '{self.name}': input '{x.name}' has shape {x.shape}, whose last "
                               f"dimension must equal the weight's K = {k}")
        if tuple(out.shape) != (*x.shape[:-1], n):
            raise BackendError(f"dense layer '{self.name}': output '{out.name}' has shape {out.shape}; expected "
                               f"{(*x.shape[:-1], n)}")
        if not np.isfinite(w).all():
            raise BackendError(f"dense layer '{self.name}': the weight holds NaN or infinity")
        self.weight = w
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
        if self.bias is not None and self.bias.shape != (n,):
            raise BackendError(f"dense layer '{self.name}': bias has {self.bias.size} values; expected N = {n}")
        if self.bias is not None and not np.isfinite(self.bias).all():
            raise BackendError(f"dense layer '{self.name}': the bias holds NaN or infinity")
        if self.reuse_factor < 1:
            raise BackendError(f"dense layer '{self.name}': reuse factor must be >= 1, got {self.reuse_factor}")
        self.k, self.n = k, n
        self.rows = x.size // k
        self.weight_t = self.bias_t = self.accum_t = None
        self.user_accum = False

    # ---- semantics ---------------------------------------------------------------------------------
    def float_eval(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, np.float64) @ self.weight
        return y + self.bias if self.bias is not None else y

    def choose_types(self, p: Precision) -> None:
        xt = _need_type(self.inputs[0], self)
        wt = p.override(self.name, "weight") or p.for_weights(self.weight)
        _check_exact_cast(self, "weight", wt)
        self.weight_t = wt
        self.w_codes = wt.from_float(self.weight)
        prod_frac = xt.frac + wt.frac
        self.prod_frac = prod_frac
        if self.bias is None:
            bt = FixedType(2, 2 - prod_frac, True, "TRN", "WRAP")
            self.b_codes = np.zeros(self.n, dtype=np.int64)
        else:
            bt = p.override(self.name, "bias") or _const_type(self.bias, prod_frac)
            _check_exact_cast(self, "bias", bt)
            self.b_codes = bt.from_float(self.bias)
        self.bias_t = bt
        user = p.override(self.name, "accum")
        if user is not None:
            self.accum_t, self.user_accum = user, True
            f = max(user.frac, prod_frac)
            require_exact(max(user.width + f - user.frac, xt.width + wt.width + f - prod_frac) + 1,
                          f"layer '{self.name}': an addition into the accumulator")
        else:
            acc_frac = max(prod_frac, bt.frac)
            xmax = _max_abs_code(xt)
            col = np.abs(self.w_codes).sum(axis=0)
            bound = 0
            for j in range(self.n):
                v = (xmax * int(col[j]) << (acc_frac - prod_frac)) + (abs(int(self.b_codes[j])) << (acc_frac - bt.frac))
                bound = max(bound, v)
            width = max(bound.bit_length() + 1, 2)
            require_exact(width, f"layer '{self.name}': the exact accumulator")
            self.accum_t, self.user_accum = FixedType(width, width - acc_frac, True, "TRN", "WRAP"), False
        self.output.type = _result_type(self, p, lambda: p.for_value(self.output))

    def fx_eval(self, xc: np.ndarray) -> np.ndarray:
        xc = np.asarray(xc, dtype=np.int64)
        b = xc.shape[0]
        x = xc.reshape(b, self.rows, self.k)
        acc_t, bt = self.accum_t, self.bias_t
        if not self.user_accum:
            f = acc_t.frac
            acc = _lshift(x @ self.w_codes, f - self.prod_frac) + _lshift(self.b_codes, f - bt.frac)
        else:
            f = max(acc_t.frac, self.prod_frac)
            acc = np.broadcast_to(acc_t.cast(self.b_codes, bt.frac), (b, self.rows, self.n)).copy()
            for k in range(self.k):
                prod = x[:, :, k:k + 1] * self.w_codes[k][None, None, :]
                s = _lshift(acc, f - acc_t.frac) + _lshift(prod, f - self.prod_frac)
                acc = acc_t.cast(s, f)
            f = acc_t.frac
        y = self.output.type.cast(acc, f)
        return y.reshape(b, *self.output.shape)

    # ---- code --------------------------------------------------------------------------------------
    def cpp_decls(self) -> str:
        n = self.name
        return "\n".join([
            f"typedef {self.weight_t.cpp()} {n}_weight_t;",
            f"typedef {self.bias_t.cpp()} {n}_bias_t;",
            f"typedef {self.accum_t.cpp()} {n}_accum_t;"
            + ("  // user accumulator: cast after every addition" if self.user_accum else "  // exact"),
            f"struct {n}_config {{",
            f"    static const int n_in = {self.k};",
            f"    static const int n_out = {self.n};",
            f"    static const int n_rows = {self.rows};",
            f"    static const int reuse = {self.reuse_factor};",
            f"    typedef {n}_weight_t weight_t;",
            f"    typedef {n}_bias_t bias_t;",
            f"    typedef {n}_accum_t accum_t;",
            "};",
            _c_array(f"{n}_weight_t", f"{n}_w", self.weight_t, self.w_codes),
            _c_array(f"{n}_bias_t", f"{n}_b", self.bias_t, self.b_codes),
            ""])

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        self._note_io(io)
        x, n = self.inputs[0], self.name
        if io == "io_parallel":
            return (f"accelc_hls::dense<{x.ctype}, {self.output.ctype}, {n}_config, {self.rows}>"
                    f"({ins[0]}, {out}, {n}_w, {n}_b);")
        return f"accelc_hls::dense_stream<{x.ctype}, {self.output.ctype}, {n}_config>({ins[0]}, {out}, {n}_w, {n}_b);"

    # ---- cost and checks ---------------------------------------------------------------------------
    def multiplies(self) -> int:
        return self.rows * self.k * self.n

    def _lanes(self, io: str) -> tuple[int, int]:
        """(multiplies the kernel instance covers, parallel multipliers = ceil(that / R))."""
        m = self.multiplies() if io == "io_parallel" else self.k * self.n
        return m, math.ceil(m / self.reuse_factor)

    def estimate(self, io: str | None = None) -> Estimate:
        """DSPs = ceil(M / R) * dsp_per_multiply (M: multiplies of one kernel call: the tensor in
        io_parallel, one row in io_stream); latency R + ceil(log2 K) + 3 per call; II = R (io_parallel)
        or rows * R (io_stream)."""
        io = io or self._io()
        xt, wt = self.inputs[0].type, self.weight_t
        xw = xt.width if xt else 16
        ww = wt.width if wt else 16
        aw = self.accum_t.width if self.accum_t else 32
        ow = self.output.type.width if self.output.type else 16
        m, lanes = self._lanes(io)
        dpm = dsp_per_multiply(xw, ww)
        r = self.reuse_factor
        bram = bram_18k_for(lanes * ww, r) if r >= 32 else 0
        lut = lanes * aw + (lanes * xw * ww // 2 if dpm == 0 else 0) + (lanes * xw if r > 1 else 0)
        if r > 1 and bram == 0:
            lut += math.ceil(self.k * self.n * ww / 64)       # weights in LUT-RAM
        out_regs = (self.rows if io == "io_parallel" else 1) * self.n
        ff = lanes * aw + out_regs * ow
        depth = r + _clog2(self.k) + 3
        if io == "io_parallel":
            return Estimate(lanes * dpm, bram, lut, ff, depth, r)
        return Estimate(lanes * dpm, bram, lut, ff, depth + (self.rows - 1) * r, self.rows * r)

    def checks(self, io: str) -> list[Finding]:
        self._note_io(io)
        out = []
        m, lanes = self._lanes(io)
        if lanes > MAX_PARTITION:
            r_fit = math.ceil(m / MAX_PARTITION)
            alt = "" if io == "io_stream" or self.rows == 1 else \
                f", or compile with io_stream (one row of {self.k * self.n} multiplies at a time)"
            out.append(Finding("error", self.name,
                               f"dense layer unrolls {lanes} multiplies (M = {m}, reuse factor {self.reuse_factor}); "
                               f"Vitis HLS refuses more than {MAX_PARTITION}: use reuse factor {r_fit} or more "
                               f"(fpga layers: {{'{self.name}': {{'reuse_factor': {r_fit}}}}}){alt}"))
        if self.reuse_factor == 1 and self.k * self.n > MAX_PARTITION and lanes <= MAX_PARTITION:
            r_fit = math.ceil(self.k * self.n / MAX_PARTITION)
            out.append(Finding("error", self.name,
                               f"reuse factor 1 partitions the {self.k}x{self.n} weight array completely "
                               f"({self.k * self.n} > {MAX_PARTITION} elements): use reuse factor {r_fit} or more"))
        if self.reuse_factor > m:
            out.append(Finding("warning", self.name,
                               f"reuse factor {self.reuse_factor} exceeds the {m} multiplies of a call; "
                               f"{self.reuse_factor - m} steps idle: use reuse factor {m} or less"))
        return out

    def describe(self):
        d = super().describe()
        d.update({"weight": self.weight_t.short() if self.weight_t else None,
                  "bias": self.bias_t.short() if self.bias is not None and self.bias_t else None,
                  "accum": self.accum_t.short() if self.accum_t else None,
                  "accum_kind": "user" if self.user_accum else "exact"})
        return d


# ---- Activation -------------------------------------------------------------------------------------
def _sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def _gelu(x):
    from ....ir.ops.elementwise import erf
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _silu(x):
    x = np.asarray(x, np.float64)
    return x * _sigmoid(x)


# fn: (float function, low tail, high tail, largest |slope|); a tail is ("const", value) or ("x",)
TABLE_FUNCTIONS: dict[str, tuple[Callable, tuple, tuple, float]] = {
    "sigmoid": (_sigmoid, ("const", 0.0), ("const", 1.0), 0.25),
    "tanh": (np.tanh, ("const", -1.0), ("const", 1.0), 1.0),
    "gelu": (_gelu, ("const", 0.0), ("x",), 1.13),
    "silu": (_silu, ("const", 0.0), ("x",), 1.1),
}
ACTIVATIONS = ("relu", "leaky_relu", *TABLE_FUNCTIONS)
DEFAULT_TABLE_SIZE = 4096
FEW_CODES = 256            # fewer input codes than this over a table's range: a Finding


class Activation(_FamilyLayer):
    """Elementwise ``relu`` (unsigned output), ``leaky_relu`` (alpha as a fixed constant) and the table
    functions ``sigmoid``, ``tanh``, ``gelu`` (erf form) and ``silu``.

    A table function covers input values in [-T, T) with T the smallest power of two (1..64) beyond
    which the function is within half an output LSB of its tail (sigmoid 0/1, tanh -1/1, GELU/SiLU 0
    below and x above); inputs outside are given the tail exactly. The table has at most
    ``table_size`` (default 4096) entries, each covering 2**shift consecutive input codes (index =
    (code - lo) >> shift, integer arithmetic on the raw bits), and holds the function at the middle
    of the codes it covers, so its error is at most max|f'| * (2**shift - 1) * lsb_in / 2 plus the
    rounding of the table value. ``table`` overrides the table values' type (default: the output type).
    Output types: sigmoid ufixed<bits,1>, tanh fixed<bits,2> (both hold the saturated values exactly),
    ReLU unsigned from calibration, the others from calibration (or a ``result`` override).
    """
    kind = "activation"
    headers = (COMMON_H, ACT_H)

    def __init__(self, name: str, x: Value, out: Value, fn: str, alpha: float = 0.01, nodes: Sequence[str] = (),
                 *, table_size: int | None = None):
        super().__init__(name, [x], out, nodes)
        fn = str(fn).lower()
        if fn not in ACTIVATIONS:
            raise BackendError(f"activation layer '{self.name}': function '{fn}' has no FPGA implementation; "
                               f"supported: {', '.join(ACTIVATIONS)}")
        if tuple(out.shape) != tuple(x.shape):
            raise BackendError(f"activation layer '{self.name}': output shape {out.shape} differs from the input's "
                               f"{x.shape}")
        if table_size is not None and not (2 <= int(table_size) <= 1 << 16):
            raise BackendError(f"activation layer '{self.name}': table_size {table_size} is outside 2..65536")
        self.fn = fn
        self.alpha = float(alpha)
        self.table_size = int(table_size) if table_size is not None else DEFAULT_TABLE_SIZE
        self.alpha_t = None
        self.table_t = None
        self.table_codes = np.zeros(1, dtype=np.int64)

    # ---- semantics ---------------------------------------------------------------------------------
    def float_eval(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.fn == "relu":
            return np.maximum(x, 0.0)
        if self.fn == "leaky_relu":
            return np.where(x >= 0, x, self.alpha * x)
        return TABLE_FUNCTIONS[self.fn][0](x)

    def _default_out(self, p: Precision) -> FixedType:
        if self.fn == "relu":
            return p.for_value(self.output, signed=False)
        if self.fn == "sigmoid":
            return p.for_range(1.0, signed=False)
        if self.fn == "tanh":
            return p.for_range(1.0)
        return p.for_value(self.output)

    def choose_types(self, p: Precision) -> None:
        xt = _need_type(self.inputs[0], self)
        out = _result_type(self, p, lambda: self._default_out(p))
        self.output.type = out
        self.alpha_t = FixedType(2, 1)
        self.alpha_code = 0
        if self.fn == "leaky_relu":
            self.alpha_t = p.for_range(abs(self.alpha), signed=True, rounding="RND_CONV", overflow="SAT")
            self.alpha_code = int(self.alpha_t.from_float(self.alpha))
        self.table_t = out
        self.lo_code, self.hi_code, self.shift = 0, 1, 0
        self.tail_codes = [0, 0]
        self.tail_modes = [0, 0]
        if self.fn in TABLE_FUNCTIONS:
            self.table_t = p.override(self.name, "table") or out
            _check_exact_cast(self, "table", self.table_t)
            self._build_table(xt, out)

    def _tail_range(self, out: FixedType) -> float:
        f, low, high, _ = TABLE_FUNCTIONS[self.fn]
        tol = out.lsb / 2
        for t in range(0, 7):
            big = float(1 << t)
            err_hi = abs(f(big) - (big if high[0] == "x" else high[1]))
            err_lo = abs(f(-big) - (-big if low[0] == "x" else low[1]))
            if max(err_hi, err_lo) <= tol:
                return big
        return 64.0

    def _build_table(self, xt: FixedType, out: FixedType) -> None:
        f, low, high, _ = TABLE_FUNCTIONS[self.fn]
        self.T = t = self._tail_range(out)
        lo = max(math.ceil(math.ldexp(-t, xt.frac)), xt.min_code)
        hi = min(math.ceil(math.ldexp(t, xt.frac)), xt.max_code + 1)
        if hi <= lo:
            hi = lo + 1
        n_codes = hi - lo
        shift = 0
        while (n_codes + (1 << shift) - 1) >> shift > self.table_size:
            shift += 1
        n_table = (n_codes + (1 << shift) - 1) >> shift
        first = lo + (np.arange(n_table, dtype=np.int64) << np.int64(shift))
        last = np.minimum(first + (1 << shift), hi) - 1
        mid = np.ldexp((first + last).astype(np.float64), -xt.frac - 1)
        self.table_codes = self.table_t.from_float(f(mid))
        self.lo_code, self.hi_code, self.shift, self.n_codes = lo, hi, shift, n_codes
        self.tail_modes = [1 if low[0] == "x" else 0, 1 if high[0] == "x" else 0]
        self.tail_codes = [0 if low[0] == "x" else int(out.from_float(low[1])),
                           0 if high[0] == "x" else int(out.from_float(high[1]))]

    def fx_eval(self, xc: np.ndarray) -> np.ndarray:
        c = np.asarray(xc, dtype=np.int64)
        xt, out = self.inputs[0].type, self.output.type
        if self.fn == "relu":
            return out.cast(np.maximum(c, 0), xt.frac)
        if self.fn == "leaky_relu":
            pos = out.cast(c, xt.frac)
            neg = out.cast(c * np.int64(self.alpha_code), xt.frac + self.alpha_t.frac)
            return np.where(c >= 0, pos, neg)
        idx = np.clip(c - self.lo_code, 0, self.hi_code - self.lo_code - 1) >> np.int64(self.shift)
        y = out.cast(self.table_codes[idx], self.table_t.frac)
        ident = out.cast(c, xt.frac)
        lo_v = ident if self.tail_modes[0] else np.int64(self.tail_codes[0])
        hi_v = ident if self.tail_modes[1] else np.int64(self.tail_codes[1])
        y = np.where(c < self.lo_code, lo_v, y)
        return np.where(c >= self.hi_code, hi_v, y).astype(np.int64)

    # ---- code --------------------------------------------------------------------------------------
    def cpp_decls(self) -> str:
        n, xt, out = self.name, self.inputs[0].type, self.output.type
        kind = {"relu": 0, "leaky_relu": 1}.get(self.fn, 2)
        lines = [f"typedef {self.table_t.cpp()} {n}_table_t;",
                 f"typedef {self.alpha_t.cpp()} {n}_alpha_t;",
                 f"struct {n}_config {{",
                 f"    static const int kind = {kind};  // {self.fn}",
                 f"    static const int in_width = {xt.width};",
                 f"    static const long long lo_code = {self.lo_code}LL;",
                 f"    static const long long hi_code = {self.hi_code}LL;",
                 f"    static const int shift = {self.shift};",
                 f"    static const int n_table = {len(self.table_codes)};",
                 f"    static const int low_mode = {self.tail_modes[0]};",
                 f"    static const int high_mode = {self.tail_modes[1]};",
                 f"    typedef {n}_table_t table_t;",
                 f"    typedef {n}_alpha_t alpha_t;",
                 "};"]
        if kind == 2:
            lines.append(f"// {self.fn} at the middle of each run of 2**{self.shift} input codes over "
                         f"[{xt.to_float(self.lo_code)}, {xt.to_float(self.hi_code)})")
        lines += [_c_array(f"{n}_table_t", f"{n}_table", self.table_t, self.table_codes),
                  _c_array(self.output.ctype, f"{n}_tails", out, self.tail_codes),
                  f"static const {n}_alpha_t {n}_alpha = {_lit(self.alpha_t, self.alpha_code)};", ""]
        return "\n".join(lines)

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        self._note_io(io)
        x, n = self.inputs[0], self.name
        args = f"{ins[0]}, {out}, {n}_table, {n}_tails, {n}_alpha"
        if io == "io_parallel":
            return f"accelc_hls::activation<{x.ctype}, {self.output.ctype}, {n}_config, {x.size}>({args});"
        return (f"accelc_hls::activation_stream<{x.ctype}, {self.output.ctype}, {n}_config, {x.packet}, "
                f"{x.size // x.packet}>({args});")

    # ---- cost and checks ---------------------------------------------------------------------------
    def multiplies(self) -> int:
        return self.inputs[0].size if self.fn == "leaky_relu" else 0

    def estimate(self, io: str | None = None) -> Estimate:
        """Per parallel element: a comparator and a multiplexer (output-width LUTs); leaky ReLU one
        constant multiply; tables one ROM copy per two parallel lookups (BRAM when over 1 Kbit, else
        LUT-ROM). Latency 1 (ReLU), 2 (multiply or table read); io_stream adds one cycle per packet."""
        io = io or self._io()
        x = self.inputs[0]
        par = x.size if io == "io_parallel" else x.packet
        ow = self.output.type.width if self.output.type else 16
        xw = x.type.width if x.type else 16
        dsp, bram, lut = 0, 0, par * ow
        lat = 1
        if self.fn == "leaky_relu":
            aw = self.alpha_t.width if self.alpha_t else 16
            dsp = par * dsp_per_multiply(xw, aw)
            lat = 2
        elif self.fn in TABLE_FUNCTIONS:
            tw = self.table_t.width if self.table_t else ow
            entries = len(self.table_codes)
            copies = math.ceil(par / 2)
            lut += par * 2 * xw
            if entries * tw > 1024:
                bram = copies * bram_18k_for(tw, entries)
            else:
                lut += copies * math.ceil(entries * tw / 64)
            lat = 2
        ff = par * ow
        npack = x.size // x.packet
        if io == "io_parallel":
            return Estimate(dsp, bram, lut, ff, lat, 1)
        return Estimate(dsp, bram, lut, ff, lat + npack, npack)

    def table_error(self) -> float:
        """Bound of |table output - f(input)| for inputs inside the table range (float units):
        the slope times half the spread of the codes an entry covers, plus rounding the table value
        and assigning it to the output."""
        if self.fn not in TABLE_FUNCTIONS or self.table_t is None:
            return 0.0
        xt, out = self.inputs[0].type, self.output.type
        slope = TABLE_FUNCTIONS[self.fn][3]
        spread = ((1 << self.shift) - 1) * xt.lsb / 2
        tab = _rounding_error_lsb(self.table_t) * self.table_t.lsb
        cast = 0.0 if self.table_t == out else _rounding_error_lsb(out) * out.lsb
        return slope * spread + tab + cast

    def checks(self, io: str) -> list[Finding]:
        self._note_io(io)
        out: list[Finding] = []
        if self.fn not in TABLE_FUNCTIONS or self.table_t is None:
            return out
        xt, ot = self.inputs[0].type, self.output.type
        x = self.inputs[0]
        fix_int = integer_bits_for(self.T, xt.signed)
        finer = FixedType(xt.width, min(xt.integer, fix_int), xt.signed, xt.rounding, xt.overflow)
        if self.n_codes < FEW_CODES:
            slope = TABLE_FUNCTIONS[self.fn][3]
            out.append(Finding("warning", self.name,
                               f"{self.fn} input '{x.name}' is {xt.short()} (LSB {xt.lsb:g}): only {self.n_codes} "
                               f"input codes fall in [-{self.T:g}, {self.T:g}) where {self.fn} is not saturated, "
                               f"so the output takes at most {self.n_codes} values (error up to about "
                               f"{slope * xt.lsb / 2:.3g} from the input's LSB alone). A wide type (e.g. an "
                               f"accumulator) feeds this table: give '{x.name}' fewer integer bits and more "
                               f"fraction, e.g. 'result': '{finer.short()}' on the layer that produces it"))
        err = self.table_error()
        if err > max(64 * ot.lsb, 2.0 ** -8):
            need = self.table_size << max(1, math.ceil(math.log2(err / max(64 * ot.lsb, 2.0 ** -8))))
            out.append(Finding("warning", self.name,
                               f"the {len(self.table_codes)}-entry {self.fn} table steps every {1 << self.shift} "
                               f"input codes; its error can reach {err:.3g} ({err / ot.lsb:.0f} output LSBs): "
                               f"use a larger table (table_size={min(need, 1 << 16)}) or a coarser input type"))
        if io == "io_parallel" and math.ceil(x.size / 2) > 64 and len(self.table_codes) * self.table_t.width > 1024:
            out.append(Finding("warning", self.name,
                               f"io_parallel looks up {x.size} elements at once: the {len(self.table_codes)}-entry "
                               f"table is copied {math.ceil(x.size / 2)} times; use io_stream or a smaller table"))
        return out

    def describe(self):
        d = super().describe()
        d["function"] = self.fn
        if self.fn in TABLE_FUNCTIONS and self.table_t is not None:
            xt = self.inputs[0].type
            d.update({"table": self.table_t.short(), "table_entries": int(len(self.table_codes)),
                      "table_range": [xt.to_float(self.lo_code).item(), xt.to_float(self.hi_code).item()],
                      "table_error_bound": self.table_error()})
        if self.fn == "leaky_relu" and self.alpha_t is not None:
            d["alpha"] = self.alpha_t.to_float(self.alpha_code).item()
        return d


# ---- Softmax ----------------------------------------------------------------------------------------
SOFTMAX_RECIP_MAX_INDEX_BITS = 10      # at most 1024 reciprocal seeds (one BRAM18K pair per row)


def softmax_internal_bits(out: FixedType, length: int) -> int:
    """The accuracy target a (the model aims at 2**-a): the output's fraction, at least 8 bits, at most
    what keeps every intermediate of a row of ``length`` within 61 bits."""
    lg, lg1 = _clog2(length), _clog2(length + 1)
    cap = (58 - lg - lg1) // 2
    return min(max(out.frac, 8), cap)


def softmax_recip_params(out: FixedType, length: int) -> dict[str, int]:
    """Widths of the fast reciprocal of a row sum (see ``Softmax``): a, fe, sum width SW, lg = ceil(log2 L),
    index bits T, seed bits R (r0 is ufixed<R, 0>, r0**2 is ufixed<2R, 0>, exact), normalised sum bits M,
    reciprocal fraction bits Q."""
    a = softmax_internal_bits(out, length)
    lg = _clog2(length)
    fe = a + 1 + _clog2(length + 1)
    sw = fe + 1 + lg
    t = min((a + 2) // 2, SOFTMAX_RECIP_MAX_INDEX_BITS)       # ceil((a + 1) / 2)
    r = t + 3
    m = min(sw, a + 5)
    q = min(a + 5, 61 - sw)                 # the output product (fe+1+lg) x (Q+1) bits stays within 62 bits
    return {"a": a, "fe": fe, "sw": sw, "lg": lg, "t": t, "r": r, "m": m, "q": q}


def softmax_recip_table(t: int, r: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The reciprocal seeds for mantissas m in [1, 2) binned by their top ``t`` fraction bits: r0[i] =
    round(2**r / c_i) with c_i = 1 + (i + 0.5) * 2**-t the bin's midpoint (codes of ufixed<r, 0>; every
    one is below 2**r), their exact squares (codes of ufixed<2r, 0>), and eps = max |1 - m * r0| over
    every m of every bin (the seed's relative error; one Newton step squares it)."""
    i = np.arange(1 << t, dtype=np.float64)
    c = 1.0 + (i + 0.5) * 2.0 ** -t
    r0 = np.rint(np.ldexp(1.0, r) / c).astype(np.int64)
    r0f = np.ldexp(r0.astype(np.float64), -r)
    lo, hi = 1.0 + i * 2.0 ** -t, 1.0 + (i + 1) * 2.0 ** -t        # m ranges over [lo, hi)
    eps = float(np.maximum(np.abs(1.0 - lo * r0f), np.abs(1.0 - hi * r0f)).max())
    return r0, r0 * r0, eps


def softmax_error_bound(out: FixedType, length: int, two_tables: bool = True,
                        exact_division: bool = False) -> float:
    """Largest |fixed softmax - exact softmax of the same (quantized) input| for rows of ``length``.

    With a = ``softmax_internal_bits`` and fe = a + 1 + ceil(log2(length + 1)) fractional bits of e:
    each e has error eta <= 1.5 * 2**-fe (+ 2**-(2fe+1)) with two tables (two rounded table values and
    the rounded product; 0.5 * 2**-fe with one table; cut-off terms are below 2**-(fe+1));
    since the row maximum has e = 1 exactly, s >= 1 and |e'/s' - e/s| <= eta * (1 + length)
    <= 0.75 * 2**-a. The reciprocal of s then has a relative error rho and, as e/s <= 1, adds at most
    |rho| to the output:

    * exact division (q = floor(2**P / s)): rho in [-s/2**P, 0], |rho| <= 2**-(a+2);
    * the fast path (``softmax_recip_params``): s = sv * 2**(k-1) with sv in [1, 2); the mantissa mv,
      sv truncated to M bits, satisfies 1/sv <= 1/mv < (1/sv) / (1 - 2**-(M-1)) (no error when M is
      the full sum width); one exact Newton step from the seed r0 (relative error eps, from the table)
      gives r1 = (1/mv)(1 - eps1) with eps1 = (1 - mv r0)**2 in [0, eps**2]; truncating r1 to Q
      fraction bits removes less than 2**-Q, relative to 1/sv less than sv * 2**-Q < 2**-(Q-1). So
      rho is in [-(eps**2 + 2**-(Q-1)), 2**-(M-1) / (1 - 2**-(M-1))]. With a 16-bit output,
      eps**2 ~ 0.2 * 2**-a and the other two terms 2**-(a+4) each (T is capped at 10 index bits: at
      a >= 20, e.g. a 24-bit output, eps**2 grows to ~2**-(2T+2) = 2**-22, a few output LSBs).

    Then one rounding to the output (0.5 LSB, or 1 LSB for truncation) and, where the output type
    cannot hold 1.0, saturation (1 - its largest value). With a 16-bit ufixed<16,1> output that is
    about 1.3 * 2**-15 ~= 4.0e-5 for both paths (hls4ml's 16-bit table softmax: ~3e-2 on a 5-way
    softmax).
    """
    a = softmax_internal_bits(out, length)
    fe = a + 1 + _clog2(length + 1)
    eta = (1.5 * 2.0 ** -fe + 2.0 ** -(2 * fe + 1)) if two_tables else 0.5 * 2.0 ** -fe
    if exact_division:
        rho = 0.25 * 2.0 ** -a
    else:
        p = softmax_recip_params(out, length)
        _, _, eps = softmax_recip_table(p["t"], p["r"])
        up = 0.0 if p["m"] >= p["sw"] else 2.0 ** -(p["m"] - 1) / (1.0 - 2.0 ** -(p["m"] - 1))
        rho = max(up, eps * eps + 2.0 ** -(p["q"] - 1))
    bound = eta * (1 + length) + rho + _rounding_error_lsb(out) * out.lsb
    if out.max_value < 1.0:
        if out.overflow == "WRAP" or out.overflow == "SAT_ZERO":
            return math.inf
        bound += 1.0 - out.max_value
    return bound


class Softmax(_FamilyLayer):
    """Softmax over the last axis (rows of any leading shape), low latency: no divider.

    Per row: m = max(x); D = code(m) - code(x) >= 0 exactly; e = exp(-D * lsb_in) from one table at
    input resolution (when the cut-off D_max <= 1024) or from two tables on the high and low bits of D
    (exp(a + b) = exp(a) * exp(b), product rounded to e's type ufixed<fe+1, 1>), and 0 for D >= D_max
    where exp < 2**-(fe+1); s = exact sum of the e codes (SW = fe + 1 + ceil(log2 L) bits, s >= 2**fe
    since the maximum has e = 1). Then the reciprocal, all integer arithmetic with floor shifts
    (``softmax_recip_params`` gives the widths):

    * k = bit length of s, from a priority encoder over bits fe+1 .. SW-1 (sh = SW - k in 0..lg);
    * m = (s << sh) >> (SW - M): the mantissa, M bits with the top bit set (value in [1, 2));
    * i = the T bits of m below its leading one; r0 = seed[i] ~ 1/m (ufixed<R, 0>), r0sq = r0**2 exact;
    * one Newton step r1 = r0 * (2 - m r0) = 2 r0 - m * r0sq (one multiply, exact), truncated to Q
      fraction bits (a ufixed<Q+1, 1> code <= 2**Q);
    * out = (e << sh) * r1, a value with P = Q + SW - 1 fraction bits, assigned to the output type
      (ufixed<bits, 1> unless overridden) with its rounding and overflow modes.

    ``exact_division=True`` keeps the older scheme: q = 2**P // s (one exact integer division, 20-40
    cycles deeper) and out = e * q. The error bound of either is ``softmax_error_bound`` (relative to
    the exact softmax of the quantized input).
    """
    kind = "softmax"
    headers = (COMMON_H, ACT_H)
    SINGLE_TABLE_MAX = 1024

    def __init__(self, name: str, x: Value, out: Value, nodes: Sequence[str] = (), exact_division: bool = False):
        super().__init__(name, [x], out, nodes)
        if tuple(out.shape) != tuple(x.shape):
            raise BackendError(f"softmax layer '{self.name}': output shape {out.shape} differs from the input's {x.shape}")
        self.length = x.packet
        self.rows = x.size // self.length
        self.exact_division = bool(exact_division)
        self.exp_t = None

    def float_eval(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def choose_types(self, p: Precision) -> None:
        xt = _need_type(self.inputs[0], self)
        out = _result_type(self, p, lambda: FixedType(p.bits, 1, False, p.rounding, p.overflow))
        self.output.type = out
        L = self.length
        a = softmax_internal_bits(out, L)
        lg = _clog2(L)
        fe = a + 1 + _clog2(L + 1)
        self.a, self.fe, self.lg = a, fe, lg
        self.exp_t = FixedType(fe + 1, 1, False, "RND", "SAT")
        d_range = xt.max_code - xt.min_code
        d_max = math.floor((fe + 1) * math.log(2.0) * math.ldexp(1.0, xt.frac)) + 1
        d_max = max(1, min(d_max, d_range + 1))
        self.d_max = d_max
        nb = max((d_max - 1).bit_length(), 1)
        lsb = xt.lsb
        if d_max <= self.SINGLE_TABLE_MAX:
            self.lo_bits, self.n_hi = nb, 0
            self.exp_lo = self.exp_t.from_float(np.exp(-np.arange(d_max, dtype=np.float64) * lsb))
            self.exp_hi = np.zeros(1, dtype=np.int64)
        else:
            self.lo_bits = (nb + 1) // 2
            self.n_hi = ((d_max - 1) >> self.lo_bits) + 1
            self.exp_lo = self.exp_t.from_float(np.exp(-np.arange(1 << self.lo_bits, dtype=np.float64) * lsb))
            self.exp_hi = self.exp_t.from_float(
                np.exp(-(np.arange(self.n_hi, dtype=np.float64) * float(1 << self.lo_bits)) * lsb))
        self.sum_width = fe + 1 + lg
        # the exact-division path (its C++ branch is compiled either way, so its widths always exist)
        self.p_bits = fe + lg + a + 2
        self.q_width = self.p_bits - fe + 1
        # the fast path
        rp = softmax_recip_params(out, L)
        self.rt_bits, self.rr_bits, self.rm_bits, self.rq_bits = rp["t"], rp["r"], rp["m"], rp["q"]
        self.recip_t = FixedType(self.rr_bits, 0, False, "TRN", "WRAP")
        self.recip_sq_t = FixedType(2 * self.rr_bits, 0, False, "TRN", "WRAP")
        if self.exact_division:
            require_exact(self.p_bits + 1, f"softmax layer '{self.name}': the reciprocal of the row sum")
            self.recip0 = self.recip_sq = np.zeros(1, dtype=np.int64)     # unused one-entry tables
            self.recip_eps = 0.0
        else:
            self.recip0, self.recip_sq, self.recip_eps = softmax_recip_table(self.rt_bits, self.rr_bits)
            require_exact(self.rm_bits + 2 * self.rr_bits + 1, f"softmax layer '{self.name}': the Newton step")
            require_exact(self.sum_width + self.rq_bits + 1, f"softmax layer '{self.name}': the output products")
        require_exact(xt.width + 2, f"softmax layer '{self.name}': the input differences")

    def _exp_codes(self, c: np.ndarray) -> np.ndarray:
        d = c.max(axis=-1, keepdims=True) - c
        valid = d < self.d_max
        if self.n_hi == 0:
            e = self.exp_lo[np.minimum(d, self.d_max - 1)]
        else:
            hi = np.minimum(d >> np.int64(self.lo_bits), self.n_hi - 1)
            lo = d & np.int64((1 << self.lo_bits) - 1)
            e = self.exp_t.cast(self.exp_hi[hi] * self.exp_lo[lo], 2 * self.fe)
        return np.where(valid, e, 0)

    def recip_codes(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fast path on row sums ``s`` (integers >= 2**fe): (sh = SW - bit length of s, r1 codes with
        Q fraction bits, ~ 2**(k-1) / s), exactly as the C++ computes them."""
        s = np.asarray(s, dtype=np.int64)
        sw, m_bits, t, r, q = self.sum_width, self.rm_bits, self.rt_bits, self.rr_bits, self.rq_bits
        sh = np.full(s.shape, self.lg, dtype=np.int64)
        for j in range(self.fe + 1, sw):                       # priority encoder: the highest set bit wins
            sh = np.where((s >> np.int64(j)) & 1 == 1, sw - 1 - j, sh)
        m = (s << sh) >> np.int64(sw - m_bits)
        idx = (m >> np.int64(m_bits - 1 - t)) & np.int64((1 << t) - 1)
        r0, r0sq = self.recip0[idx], self.recip_sq[idx]
        r1_full = (r0 << np.int64(m_bits + r)) - m * r0sq       # 2 r0 - m r0**2, M-1+2R fraction bits
        r1 = r1_full >> np.int64(m_bits - 1 + 2 * r - q)
        return sh, r1

    def fx_eval(self, xc: np.ndarray) -> np.ndarray:
        c = np.asarray(xc, dtype=np.int64)
        b = c.shape[0]
        c = c.reshape(b, self.rows, self.length)
        e = self._exp_codes(c)
        s = e.sum(axis=-1, keepdims=True)
        if self.exact_division:
            q = (np.int64(1) << np.int64(self.p_bits)) // s
            y = self.output.type.cast(e * q, self.p_bits)
        else:
            sh, r1 = self.recip_codes(s)
            y = self.output.type.cast((e << sh) * r1, self.rq_bits + self.sum_width - 1)
        return y.reshape(b, *self.output.shape)

    def error_bound(self) -> float:
        return softmax_error_bound(self.output.type, self.length, self.n_hi > 0, self.exact_division)

    def cpp_decls(self) -> str:
        n, xt = self.name, self.inputs[0].type
        return "\n".join([
            f"typedef {self.exp_t.cpp()} {n}_exp_t;",
            f"typedef {self.recip_t.cpp()} {n}_recip_t;",
            f"typedef {self.recip_sq_t.cpp()} {n}_recip_sq_t;",
            f"struct {n}_config {{",
            f"    static const int n = {self.length};",
            f"    static const int in_width = {xt.width};",
            f"    static const int exp_width = {self.exp_t.width};",
            f"    static const long long d_max = {self.d_max}LL;",
            f"    static const int lo_bits = {self.lo_bits};",
            f"    static const int n_lo = {len(self.exp_lo)};",
            f"    static const int n_hi = {self.n_hi};",
            f"    static const int sum_width = {self.sum_width};",
            f"    static const bool exact_division = {'true' if self.exact_division else 'false'};",
            f"    static const int p_bits = {self.p_bits};",
            f"    static const int q_width = {self.q_width};",
            f"    static const int lg = {self.lg};",
            f"    static const int m_bits = {self.rm_bits};",
            f"    static const int t_bits = {self.rt_bits};",
            f"    static const int r_bits = {self.recip_t.width};",
            f"    static const int r1_bits = {self.rq_bits};",
            f"    static const int n_recip = {len(self.recip0)};",
            f"    typedef {n}_exp_t exp_t;",
            f"    typedef {n}_recip_t recip_t;",
            f"    typedef {n}_recip_sq_t recip_sq_t;",
            "};",
            f"// exp(-D * {xt.lsb!r}) for D = 0..{len(self.exp_lo) - 1}" + ("" if self.n_hi == 0 else
                                                                          f" and D = i * 2**{self.lo_bits}"),
            _c_array(f"{n}_exp_t", f"{n}_exp_lo", self.exp_t, self.exp_lo),
            _c_array(f"{n}_exp_t", f"{n}_exp_hi", self.exp_t, self.exp_hi),
            ("// unused: exact division" if self.exact_division else
             f"// reciprocal seeds ~ 1 / (1 + (i + 0.5) * 2**-{self.rt_bits}) and their exact squares"),
            _c_array(f"{n}_recip_t", f"{n}_recip", self.recip_t, self.recip0),
            _c_array(f"{n}_recip_sq_t", f"{n}_recip_sq", self.recip_sq_t, self.recip_sq),
            ""])

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        self._note_io(io)
        x, n = self.inputs[0], self.name
        fn = "softmax" if io == "io_parallel" else "softmax_stream"
        return (f"accelc_hls::{fn}<{x.ctype}, {self.output.ctype}, {n}_config, {self.rows}>"
                f"({ins[0]}, {out}, {n}_exp_lo, {n}_exp_hi, {n}_recip, {n}_recip_sq);")

    def multiplies(self) -> int:
        rows = self.inputs[0].size // max(self.length, 1)
        return self.inputs[0].size * (2 if self.n_hi else 1) + (0 if self.exact_division else rows)

    def estimate(self, io: str | None = None) -> Estimate:
        """Per parallel row: a max tree and a sum tree (log2 L levels each, one cycle per level), L table
        lookups (one cycle; two tables: L products, one more), L output products (one cycle, rounding
        included). Exact division: one P-bit by sum-width divider (P cycles, pipelined: ~P * sum-width
        LUTs). Fast path: a priority encoder and the normalising shift (one cycle, in parallel: the L
        shifts of e by the same amount), the seed tables (one read; over 1 Kbit: BRAM, one copy per two
        rows), the Newton multiply-subtract 2 r0 - m r0**2 (one cycle, a DSP with its post-adder)."""
        io = io or self._io()
        xt = self.inputs[0].type
        L = self.length
        rows_par = self.rows if io == "io_parallel" else 1
        ew = self.exp_t.width if self.exp_t else 18
        qw = self.q_width if self.exp_t else 24
        pb = self.p_bits if self.exp_t else 40
        sw = self.sum_width if self.exp_t else 24
        xw = xt.width if xt else 16
        lg = _clog2(L)
        exp_dsp = dsp_per_multiply(ew, ew) if self.n_hi else 0
        copies = rows_par * math.ceil(L / 2)
        lut = rows_par * (L * 2 * xw + L * sw)
        ff = rows_par * L * (ew + xw)
        bram = 0
        for tab in (getattr(self, "exp_lo", []), getattr(self, "exp_hi", []) if self.n_hi else []):
            bits = len(tab) * ew
            if bits > 1024:
                bram += copies * bram_18k_for(ew, len(tab))
            elif len(tab):
                lut += copies * math.ceil(bits / 64)
        lat = 2 * lg + 2 + (1 if self.n_hi else 0)
        if self.exact_division or self.exp_t is None:
            dsp = rows_par * L * (dsp_per_multiply(ew, qw) + exp_dsp)
            lut += rows_par * pb * sw
            ff += rows_par * pb * sw // 2
            lat += pb
        else:
            mb, rb, qb = self.rm_bits, self.rr_bits, self.rq_bits
            shift_levels = max(1, _clog2(lg + 1))
            dsp = rows_par * (L * (dsp_per_multiply(ew + lg, qb + 1) + exp_dsp) + dsp_per_multiply(mb, 2 * rb))
            # priority encoder, the mantissa's and the L e's shifters, the Newton subtraction
            lut += rows_par * (lg + (mb + L * (ew + lg)) * shift_levels + mb + 2 * rb)
            ff += rows_par * (mb + 3 * rb + qb + L * (ew + lg))
            rcopies = math.ceil(rows_par / 2)
            for width in (rb, 2 * rb):
                bits = len(self.recip0) * width
                if bits > 1024:
                    bram += rcopies * bram_18k_for(width, len(self.recip0))
                else:
                    lut += rcopies * math.ceil(bits / 64)
            lat += 3
        if io == "io_parallel":
            return Estimate(dsp, bram, lut, ff, lat, 1)
        return Estimate(dsp, bram, lut, ff, lat + self.rows - 1, self.rows)

    def checks(self, io: str) -> list[Finding]:
        self._note_io(io)
        out: list[Finding] = []
        if self.length > MAX_PARTITION:
            out.append(Finding("error", self.name,
                               f"softmax rows of {self.length} elements are unrolled; Vitis HLS refuses more than "
                               f"{MAX_PARTITION}: split the row or reduce the sequence length"))
        if self.output.type is not None:
            bound = self.error_bound()
            if not math.isfinite(bound):
                out.append(Finding("warning", self.name,
                                   f"the output type {self.output.type.short()} cannot hold 1.0 and wraps: a row "
                                   f"with one dominant value gives a wrong result; use ufixed<W,1> or a SAT mode"))
        return out

    def describe(self):
        d = super().describe()
        if self.exp_t is not None:
            d.update({"exp": self.exp_t.short(), "exp_tables": [len(self.exp_lo), self.n_hi],
                      "reciprocal": ("exact division" if self.exact_division else
                                     f"{len(self.recip0)}-entry seed + 1 Newton step"),
                      "error_bound": self.error_bound()})
        return d


# ---- Add --------------------------------------------------------------------------------------------
class Add(_FamilyLayer):
    """Elementwise ``a + b`` (same shapes): the exact sum, then one cast to the output type."""
    kind = "add"
    headers = (COMMON_H, DENSE_H)

    def __init__(self, name: str, a: Value, b: Value, out: Value, nodes: Sequence[str] = ()):
        super().__init__(name, [a, b], out, nodes)
        if tuple(a.shape) != tuple(b.shape) or tuple(out.shape) != tuple(a.shape):
            raise BackendError(f"add layer '{self.name}': shapes {a.shape} + {b.shape} -> {out.shape} differ; "
                               f"only same-shape additions are supported (broadcast the operand first)")

    def float_eval(self, a, b):
        return np.asarray(a, np.float64) + np.asarray(b, np.float64)

    def choose_types(self, p: Precision) -> None:
        at, bt = (_need_type(v, self) for v in self.inputs)
        f = max(at.frac, bt.frac)
        require_exact(max(at.width + f - at.frac, bt.width + f - bt.frac) + 1, f"add layer '{self.name}'")
        self.output.type = _result_type(self, p, lambda: p.for_value(self.output))

    def fx_eval(self, a, b):
        at, bt = self.inputs[0].type, self.inputs[1].type
        f = max(at.frac, bt.frac)
        s = _lshift(np.asarray(a, np.int64), f - at.frac) + _lshift(np.asarray(b, np.int64), f - bt.frac)
        return self.output.type.cast(s, f)

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        self._note_io(io)
        a, b = self.inputs
        if io == "io_parallel":
            return f"accelc_hls::add<{a.ctype}, {b.ctype}, {self.output.ctype}, {a.size}>({ins[0]}, {ins[1]}, {out});"
        return (f"accelc_hls::add_stream<{a.ctype}, {b.ctype}, {self.output.ctype}, {a.packet}, "
                f"{a.size // a.packet}>({ins[0]}, {ins[1]}, {out});")

    def estimate(self, io: str | None = None) -> Estimate:
        """One adder (output-width LUTs) per parallel element; latency 1 (+ packets in io_stream)."""
        a = self.inputs[0]
        io = io or self._io()
        par = a.size if io == "io_parallel" else a.packet
        ow = self.output.type.width if self.output.type else 16
        npack = a.size // a.packet
        if io == "io_parallel":
            return Estimate(0, 0, par * ow, par * ow, 1, 1)
        return Estimate(0, 0, par * ow, par * ow, 1 + npack, npack)


# ---- ScaleShift -------------------------------------------------------------------------------------
class ScaleShift(_FamilyLayer):
    """``y = x * scale + shift`` with constants per last-dimension channel (shape (C,)) or scalars; either
    may be None. Types: scale like weights (override ``weight``), shift at the product's fractional
    precision (override ``bias``), the exact result cast once to the output type."""
    kind = "scale_shift"
    headers = (COMMON_H, DENSE_H)

    def __init__(self, name: str, x: Value, out: Value, scale: np.ndarray | float | None,
                 shift: np.ndarray | float | None, nodes: Sequence[str] = ()):
        super().__init__(name, [x], out, nodes)
        if tuple(out.shape) != tuple(x.shape):
            raise BackendError(f"scale/shift layer '{self.name}': output shape {out.shape} differs from the "
                               f"input's {x.shape}")
        c = x.packet
        self.chan = c
        self.scale = None if scale is None else self._vector(scale, "scale")
        self.shift = None if shift is None else self._vector(shift, "shift")
        self.scale_t = self.shift_t = None

    def _vector(self, v, what: str) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        if a.size == 1:
            a = np.full(self.chan, float(a.reshape(())))
        a = a.reshape(-1)
        if a.shape != (self.chan,):
            raise BackendError(f"scale/shift layer '{self.name}': {what} has {a.size} values; it must be a scalar or "
                               f"have one value per channel of the last dimension ({self.chan})")
        if not np.isfinite(a).all():
            raise BackendError(f"scale/shift layer '{self.name}': {what} holds NaN or infinity")
        return a

    def float_eval(self, x):
        y = np.asarray(x, np.float64)
        if self.scale is not None:
            y = y * self.scale
        if self.shift is not None:
            y = y + self.shift
        return y

    def choose_types(self, p: Precision) -> None:
        xt = _need_type(self.inputs[0], self)
        if self.scale is not None:
            st = p.override(self.name, "weight") or p.for_weights(self.scale)
            _check_exact_cast(self, "scale", st)
            self.scale_t, self.s_codes = st, st.from_float(self.scale)
            self.prod_frac = xt.frac + st.frac
            prod_bits = xt.width + st.width
        else:
            self.scale_t, self.s_codes = FixedType(2, 2), np.zeros(self.chan, np.int64)
            self.prod_frac, prod_bits = xt.frac, xt.width
        if self.shift is not None:
            tt = p.override(self.name, "bias") or _const_type(self.shift, self.prod_frac)
            _check_exact_cast(self, "shift", tt)
            self.shift_t, self.t_codes = tt, tt.from_float(self.shift)
        else:
            self.shift_t, self.t_codes = FixedType(2, 2), np.zeros(self.chan, np.int64)
        f = max(self.prod_frac, self.shift_t.frac) if self.shift is not None else self.prod_frac
        self.sum_frac = f
        require_exact(max(prod_bits + f - self.prod_frac, self.shift_t.width + f - self.shift_t.frac) + 1,
                      f"scale/shift layer '{self.name}'")
        self.output.type = _result_type(self, p, lambda: p.for_value(self.output))

    def fx_eval(self, xc):
        c = np.asarray(xc, dtype=np.int64)
        v = c * self.s_codes if self.scale is not None else c
        f = self.sum_frac
        v = _lshift(v, f - self.prod_frac)
        if self.shift is not None:
            v = v + _lshift(self.t_codes, f - self.shift_t.frac)
        return self.output.type.cast(v, f)

    def cpp_decls(self) -> str:
        n = self.name
        return "\n".join([
            f"typedef {self.scale_t.cpp()} {n}_scale_t;",
            f"typedef {self.shift_t.cpp()} {n}_shift_t;",
            f"struct {n}_config {{",
            f"    static const int n_chan = {self.chan};",
            f"    static const bool has_scale = {'true' if self.scale is not None else 'false'};",
            f"    static const bool has_shift = {'true' if self.shift is not None else 'false'};",
            f"    typedef {n}_scale_t scale_t;",
            f"    typedef {n}_shift_t shift_t;",
            "};",
            _c_array(f"{n}_scale_t", f"{n}_s", self.scale_t, self.s_codes),
            _c_array(f"{n}_shift_t", f"{n}_t", self.shift_t, self.t_codes),
            ""])

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        self._note_io(io)
        x, n = self.inputs[0], self.name
        if io == "io_parallel":
            return (f"accelc_hls::scale_shift<{x.ctype}, {self.output.ctype}, {n}_config, {x.size}>"
                    f"({ins[0]}, {out}, {n}_s, {n}_t);")
        return (f"accelc_hls::scale_shift_stream<{x.ctype}, {self.output.ctype}, {n}_config, {x.size // x.packet}>"
                f"({ins[0]}, {out}, {n}_s, {n}_t);")

    def multiplies(self) -> int:
        return self.inputs[0].size if self.scale is not None else 0

    def estimate(self, io: str | None = None) -> Estimate:
        """One multiply (when scaled) and one adder per parallel element; latency 2 (+ packets)."""
        x = self.inputs[0]
        io = io or self._io()
        par = x.size if io == "io_parallel" else x.packet
        xw = x.type.width if x.type else 16
        sw = self.scale_t.width if self.scale_t is not None and self.scale is not None else 0
        dsp = par * dsp_per_multiply(xw, sw) if self.scale is not None else 0
        ow = self.output.type.width if self.output.type else 16
        lut = par * ow + (par * xw * sw // 2 if self.scale is not None and dsp == 0 else 0)
        npack = x.size // x.packet
        if io == "io_parallel":
            return Estimate(dsp, 0, lut, par * ow, 2, 1)
        return Estimate(dsp, 0, lut, par * ow, 2 + npack, npack)


# ---- Concat -----------------------------------------------------------------------------------------
class Concat(_FamilyLayer):
    """Concatenation along ``axis`` of the per-sample (channels-last) shapes; each input is cast to the
    output type. io_stream: along the last axis each output packet joins one packet of every input;
    along an earlier axis the inputs' packets follow one another."""
    kind = "concat"
    headers = (COMMON_H, DENSE_H)

    def __init__(self, name: str, inputs: list[Value], out: Value, axis: int, nodes: Sequence[str] = ()):
        super().__init__(name, list(inputs), out, nodes)
        if not inputs:
            raise BackendError(f"concat layer '{self.name}' has no inputs")
        nd = len(inputs[0].shape)
        if not -nd <= axis < nd:
            raise BackendError(f"concat layer '{self.name}': axis {axis} is out of range for rank {nd}")
        axis %= nd
        for v in inputs:
            if len(v.shape) != nd or any(v.shape[i] != inputs[0].shape[i] for i in range(nd) if i != axis):
                raise BackendError(f"concat layer '{self.name}': input '{v.name}' has shape {v.shape}, which differs "
                                   f"from {inputs[0].shape} outside axis {axis}")
        expect = list(inputs[0].shape)
        expect[axis] = sum(v.shape[axis] for v in inputs)
        if tuple(out.shape) != tuple(expect):
            raise BackendError(f"concat layer '{self.name}': output shape {out.shape}; expected {tuple(expect)}")
        self.axis = axis
        self.outer = int(np.prod(inputs[0].shape[:axis], dtype=np.int64))
        self.inner = [int(np.prod(v.shape[axis:], dtype=np.int64)) for v in inputs]

    def float_eval(self, *xs):
        return np.concatenate([np.asarray(x, np.float64) for x in xs], axis=self.axis + 1)

    def choose_types(self, p: Precision) -> None:
        for v in self.inputs:
            _need_type(v, self)
        self.output.type = _result_type(self, p, lambda: p.for_value(self.output))

    def fx_eval(self, *xs):
        parts = [self.output.type.cast(np.asarray(c, np.int64), v.type.frac) for c, v in zip(xs, self.inputs)]
        return np.concatenate(parts, axis=self.axis + 1)

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        self._note_io(io)
        res = self.output.ctype
        total = sum(self.inner)
        lines = []
        if io == "io_parallel":
            off = 0
            for v, name, inner in zip(self.inputs, ins, self.inner):
                lines.append(f"accelc_hls::concat_part<{v.ctype}, {res}, {self.outer}, {inner}, {total}, {off}>"
                             f"({name}, {out});")
                off += inner
            return "\n".join(lines)
        last = self.axis == len(self.inputs[0].shape) - 1
        if len(self.inputs) == 1:
            v = self.inputs[0]
            return f"accelc_hls::cast_stream<{v.ctype}, {res}, {v.packet}, {v.size // v.packet}>({ins[0]}, {out});"
        cur_name, cur_t, cur_inner = ins[0], self.inputs[0].ctype, self.inner[0]
        npack_rows = self.inputs[0].size // self.inputs[0].packet
        p = self.inputs[0].packet
        for i in range(1, len(self.inputs)):
            v, name, inner = self.inputs[i], ins[i], self.inner[i]
            final = i == len(self.inputs) - 1
            dst = out if final else f"{self.name}_s{i}"
            if last:
                pa, pb = cur_inner, inner
                if not final:
                    lines += self._stream_decl(dst, res, pa + pb, npack_rows)
                lines.append(f"accelc_hls::concat2_last_stream<{cur_t}, {v.ctype}, {res}, {pa}, {pb}, {npack_rows}>"
                             f"({cur_name}, {name}, {dst});")
            else:
                na, nb = cur_inner // p, inner // p
                if not final:
                    lines += self._stream_decl(dst, res, p, self.outer * (na + nb))
                lines.append(f"accelc_hls::concat2_outer_stream<{cur_t}, {v.ctype}, {res}, {p}, {self.outer}, "
                             f"{na}, {nb}>({cur_name}, {name}, {dst});")
            cur_name, cur_t, cur_inner = dst, res, cur_inner + inner
        return "\n".join(lines)

    def estimate(self, io: str | None = None) -> Estimate:
        """Wiring only in io_parallel; io_stream: a register stage per output packet."""
        io = io or self._io()
        ow = self.output.type.width if self.output.type else 16
        out = self.output
        npack = out.size // out.packet
        if io == "io_parallel":
            return Estimate(0, 0, 0, 0, 0, 1)
        return Estimate(0, 0, out.packet * ow // 2, out.packet * ow, 1 + npack, npack)


# ---- Reshape ----------------------------------------------------------------------------------------
class Reshape(_FamilyLayer):
    """A copy to a new shape; with ``order``, ``out.flat[i] = x.flat[order[i]]``. No cast: the output
    has the input's type. io_stream: packets pass through when the packet size stays and there is no
    order; otherwise the tensor is buffered (``stream_to_array``) and re-packed."""
    kind = "reshape"
    headers = (COMMON_H, DENSE_H)

    def __init__(self, name: str, x: Value, out: Value, order: np.ndarray | None = None, nodes: Sequence[str] = ()):
        super().__init__(name, [x], out, nodes)
        if out.size != x.size:
            raise BackendError(f"reshape layer '{self.name}': {x.shape} has {x.size} elements, {out.shape} has "
                               f"{out.size}")
        if order is not None:
            order = np.asarray(order, dtype=np.int64).reshape(-1)
            if order.shape != (x.size,) or not np.array_equal(np.sort(order), np.arange(x.size)):
                raise BackendError(f"reshape layer '{self.name}': order must be a permutation of 0..{x.size - 1}")
            if np.array_equal(order, np.arange(x.size)):
                order = None
        self.order = order

    def float_eval(self, x):
        x = np.asarray(x, np.float64)
        flat = x.reshape(x.shape[0], -1)
        if self.order is not None:
            flat = flat[:, self.order]
        return flat.reshape(x.shape[0], *self.output.shape)

    def choose_types(self, p: Precision) -> None:
        self.output.type = _need_type(self.inputs[0], self)

    def fx_eval(self, xc):
        c = np.asarray(xc, np.int64)
        flat = c.reshape(c.shape[0], -1)
        if self.order is not None:
            flat = flat[:, self.order]
        return flat.reshape(c.shape[0], *self.output.shape)

    def cpp_decls(self) -> str:
        if self.order is None:
            return f"static const int {self.name}_order[1] = {{0}};\n"
        return _int_array(f"{self.name}_order", self.order) + "\n"

    def _passes(self) -> bool:
        return self.order is None and self.inputs[0].packet == self.output.packet

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        self._note_io(io)
        x, n = self.inputs[0], self.name
        if io == "io_parallel":
            if self.order is None:
                return f"accelc_hls::reshape_copy<{x.ctype}, {x.size}>({ins[0]}, {out});"
            return f"accelc_hls::reshape_gather<{x.ctype}, {x.size}>({ins[0]}, {out}, {n}_order);"
        if self._passes():
            return f"accelc_hls::reshape_pass_stream<{x.ctype}, {x.packet}, {x.size // x.packet}>({ins[0]}, {out});"
        return (f"accelc_hls::reshape_buffer_stream<{x.ctype}, {x.packet}, {self.output.packet}, {x.size}>"
                f"({ins[0]}, {out}, {n}_order, {'true' if self.order is not None else 'false'});")

    def estimate(self, io: str | None = None) -> Estimate:
        """Wiring in io_parallel; io_stream buffers the tensor when it re-packs or reorders (BRAM above
        1 Kbit, latency = elements + packets)."""
        io = io or self._io()
        x = self.inputs[0]
        w = x.type.width if x.type else 16
        if io == "io_parallel":
            return Estimate(0, 0, 0, 0, 0, 1)
        npack = x.size // x.packet
        if self._passes():
            return Estimate(0, 0, 0, x.packet * w, 1 + npack, npack)
        bits = 2 * x.size * w
        bram = 2 * bram_18k_for(w, x.size) if bits > 2048 else 0
        return Estimate(0, bram, 0 if bram else math.ceil(bits / 64), x.packet * w,
                        x.size + npack + self.output.size // self.output.packet, x.size)

    def checks(self, io: str) -> list[Finding]:
        self._note_io(io)
        return []
