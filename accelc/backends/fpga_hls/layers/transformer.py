"""The transformer family of FPGA layers: LayerNorm, MatMul of two activations, Transpose.

Each layer's ``fx_eval`` models ``hls_src/accelc_hls_transformer.h`` bit for bit (see the module
docstring of ``layers/base.py`` for the conventions on values, codes and io styles).

LayerNorm arithmetic (all exact integer work on the input codes ``c`` of one row of ``D`` values, so
``D`` need not be a power of two and nothing depends on summation order):

* ``S = sum c``, ``d_i = D*c_i - S`` (``= D * (x_i - mean)`` in code units),
  ``V = sum d_i**2 + E`` (``= D**3 * (var + eps)`` in code units), ``E = round(eps * D**3 * 2**(2F))``
  with ``F`` the input's fractional bits: eps is quantized at the variance's own precision
  (``2**-2F / D**3``). If ``E`` underflows to 0 nothing measurable changes: a row with any two
  different codes has ``V >= D*(D-1)`` units, far above eps, and a constant row has every ``d_i = 0``,
  so its output is ``beta`` whatever eps is (``V = 0`` is replaced by 1 to keep the divider defined);
  ``checks`` reports the underflow as a warning.
* Reciprocal square root with one exact integer square root and one exact division per row:
  ``L`` = position of ``V``'s leading one, ``k = ceil(L/2) - P``, ``Vn = V / 4**k`` (a shift, floor
  when ``k > 0``), so ``Vn`` has ``2P-1`` or ``2P`` bits; ``s = isqrt(Vn)`` has exactly ``P`` bits
  (bit-by-bit, ``P`` iterations in C++, ``math.isqrt`` here); ``r = floor(2**N / s)`` with
  ``N = 2P + 2``. The exponent ``k`` is applied to ``d`` by a shift: ``dn_i = floor(d_i * 2**(G-k))``
  (|dn| <= 2**(P+G) since |d_i| <= sqrt(V)).
* ``xn_i = dn_i * r * 2**-(N+G)`` rounded (RND, SAT) to ``xn_t`` = fixed<Fn+2, 2>: this is
  ``xhat_i / sqrt(D)`` and lies in [-1-2**-(P-2), 1+2**-(P-2)].
* ``y_i = xn_i * g_i + beta_i`` exactly, with ``g = gamma * sqrt(D)`` (the 1/sqrt(D) folded into the
  constant), then assigned to the output type (its rounding and overflow modes).

Precision: with ``A = ceil(log2(max |g|))``, ``P = out.frac + A + 4`` (8..28) and ``Fn = out.frac +
A + 3``, each of the three approximations (square root/division, the ``d`` shift with ``G`` guard bits,
the rounding of ``xn``) contributes at most about 1/8 of an output LSB, so the fixed output differs
from the float LayerNorm computed on the quantized input by the output rounding (1/2 LSB), the
quantization of gamma*sqrt(D) and beta (``|xhat| * lsb(g)/2 + lsb(beta)/2``) and well under one
more LSB: a few output LSBs in all (the tests assert the bound they compute from these terms).
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

from ....errors import BackendError
from ..fixed import FixedType, require_exact
from .base import MAX_PARTITION, Estimate, Finding, Layer, Precision, Value, bram_18k_for, dsp_per_multiply

HEADERS = ("accelc_hls_common.h", "accelc_hls_transformer.h")
IO_STYLES = ("io_parallel", "io_stream")


def _clog2(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def _exact_decimal(code: int, frac: int) -> str:
    """The value ``code * 2**-frac`` written so that C++ reads exactly that double."""
    return repr(float(math.ldexp(float(code), -frac)))


def _check_io(io: str) -> None:
    if io not in IO_STYLES:
        raise BackendError(f"unknown FPGA io style '{io}'; use io_parallel or io_stream")


def _array_init(values: Sequence[str], per_line: int = 8) -> str:
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(values[i:i + per_line]))
    return "{\n" + ",\n".join(lines) + "\n}"


# ===================================================================================================
# Transpose
# ===================================================================================================
class Transpose(Layer):
    """A permutation of the per-sample axes (``numpy.transpose(x, perm)`` on one sample).

    Pure data movement: the output type is the input type (a preset different output type is honoured
    as an assignment, i.e. that type's rounding/overflow apply). io_parallel: a constant index table
    that unrolls into wiring (no LUTs, no latency). io_stream: the whole tensor is buffered (it must be:
    the first output packet may need the last input packet) and read back in permuted order.
    """
    kind = "transpose"
    headers = HEADERS

    def __init__(self, name: str, x: Value, out: Value, perm: tuple, nodes: Sequence[str] = ()):
        super().__init__(name, [x], out, nodes)
        perm = tuple(int(p) for p in perm)
        if sorted(perm) != list(range(len(x.shape))):
            raise BackendError(f"Transpose '{self.name}': perm {perm} is not a permutation of the "
                               f"{len(x.shape)} per-sample axes of {x.shape} (the batch axis is not part "
                               f"of it); drop the batch axis from perm and renumber the rest from 0")
        want = tuple(x.shape[p] for p in perm)
        if tuple(out.shape) != want:
            raise BackendError(f"Transpose '{self.name}': output shape {tuple(out.shape)} does not match "
                               f"input {tuple(x.shape)} permuted by {perm} = {want}")
        self.perm = perm

    def source_index(self) -> np.ndarray:
        """For each output element (row-major), the flat index of the input element it copies."""
        x = self.inputs[0]
        return np.transpose(np.arange(x.size, dtype=np.int64).reshape(x.shape), self.perm).ravel()

    def float_eval(self, x):
        return np.transpose(np.asarray(x, dtype=np.float64), (0, *(p + 1 for p in self.perm)))

    def choose_types(self, p: Precision) -> None:
        if self.output.type is None:
            self.output.type = self.inputs[0].type

    def fx_eval(self, x):
        t_in, t_out = self.inputs[0].type, self.output.type
        y = np.transpose(np.asarray(x, dtype=np.int64), (0, *(p + 1 for p in self.perm)))
        return np.ascontiguousarray(y if t_in == t_out else t_out.cast(y, t_in.frac))

    def cpp_decls(self) -> str:
        idx = self.source_index()
        return (f"// {self.name}: output element i copies input element {self.name}_src[i]\n"
                f"static const int {self.name}_src[{idx.size}] = "
                f"{_array_init([str(int(i)) for i in idx], 16)};\n")

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        _check_io(io)
        x, y = self.inputs[0], self.output
        if io == "io_parallel":
            return f"accelc_hls::permute<{x.ctype}, {y.ctype}, {x.size}>({ins[0]}, {out}, {self.name}_src);"
        return (f"accelc_hls::permute_stream<{x.ctype}, {y.ctype}, {x.packet}, {y.packet}, {x.size}>"
                f"({ins[0]}, {out}, {self.name}_src);")

    def multiplies(self) -> int:
        return 0

    def estimate(self, io: str = "io_parallel") -> Estimate:
        """io_parallel: wiring only (0 resources, 0 cycles). io_stream: a one-tensor buffer (BRAM
        when over 1024 bits, else registers), read then written packet by packet: latency = input
        packets + output packets, II = the larger of the two; LUTs for the read multiplexers ~ bits
        of an output packet times log2 of the buffer depth."""
        _check_io(io)
        x, y = self.inputs[0], self.output
        if io == "io_parallel":
            return Estimate(latency=0, ii=1)
        bits = x.type.width
        n_in, n_out = x.size // x.packet, y.size // y.packet
        in_bram = x.size * bits > 1024
        return Estimate(bram_18k=bram_18k_for(bits, x.size) if in_bram else 0,
                        lut=y.packet * bits * max(1, _clog2(x.size)),
                        ff=0 if in_bram else x.size * bits,
                        latency=n_in + n_out, ii=max(n_in, n_out))

    def checks(self, io: str) -> list[Finding]:
        _check_io(io)
        x, y = self.inputs[0], self.output
        out: list[Finding] = []
        if io == "io_parallel" and x.size > MAX_PARTITION:
            out.append(Finding("error", self.name, f"Transpose '{self.name}' moves {x.size} elements at once, "
                               f"more than the {MAX_PARTITION} Vitis HLS can unroll; use io_stream"))
        if io == "io_stream" and y.packet > MAX_PARTITION:
            out.append(Finding("error", self.name, f"Transpose '{self.name}' writes packets of {y.packet} "
                               f"elements, more than the {MAX_PARTITION} Vitis HLS can partition; choose a "
                               f"permutation whose last output axis is smaller"))
        return out

    def describe(self):
        d = super().describe()
        d["perm"] = list(self.perm)
        return d


# ===================================================================================================
# MatMul of two activations
# ===================================================================================================
class MatMul(Layer):
    """``out = a @ b`` for two activations: a (..., M, K), b (..., K, N), identical leading dims.

    Exact accumulator (``acc_t``: wide enough for K products of the largest magnitudes, one guard bit
    for the min*min corner); the output type (``result`` override, else calibration) applies its
    rounding and overflow once per output. ``reuse_factor`` R (constructor or the ``reuse_factor``
    override) splits the B*M*N*K multiplies into R rounds sharing ceil(B*M*N*K / R) multipliers.
    io_stream uses the adapter (both operands are buffered whole, then the parallel kernel runs).
    """
    kind = "matmul"
    headers = HEADERS

    def __init__(self, name: str, a: Value, b: Value, out: Value, nodes: Sequence[str] = (),
                 reuse_factor: int = 1):
        super().__init__(name, [a, b], out, nodes, reuse_factor)
        if len(a.shape) < 2 or len(b.shape) < 2:
            raise BackendError(f"MatMul '{self.name}': both operands need at least 2 per-sample axes "
                               f"(got {tuple(a.shape)} and {tuple(b.shape)}); reshape vectors to (1, K) / "
                               f"(K, 1) before the MatMul")
        if tuple(a.shape[:-2]) != tuple(b.shape[:-2]):
            raise BackendError(f"MatMul '{self.name}': leading (batch/head) dims differ: {tuple(a.shape)} @ "
                               f"{tuple(b.shape)}; broadcasting is not supported, expand the operand first")
        if a.shape[-1] != b.shape[-2]:
            raise BackendError(f"MatMul '{self.name}': inner dims differ: {tuple(a.shape)} @ {tuple(b.shape)}")
        want = (*a.shape[:-2], a.shape[-2], b.shape[-1])
        if tuple(out.shape) != want:
            raise BackendError(f"MatMul '{self.name}': output shape {tuple(out.shape)} should be {want}")
        self._check_reuse()
        self.acc_type: FixedType | None = None

    def _check_reuse(self):
        if self.reuse_factor < 1:
            raise BackendError(f"MatMul '{self.name}': reuse factor {self.reuse_factor} must be >= 1")

    @property
    def dims(self) -> tuple[int, int, int, int]:
        a, b = self.inputs
        batch = int(np.prod(a.shape[:-2], dtype=np.int64)) if len(a.shape) > 2 else 1
        return batch, int(a.shape[-2]), int(a.shape[-1]), int(b.shape[-1])

    @property
    def per_round(self) -> int:
        return -(-self.multiplies() // self.reuse_factor)

    def float_eval(self, a, b):
        return np.matmul(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))

    def choose_types(self, p: Precision) -> None:
        a, b = self.inputs
        rf = p.override(self.name, "reuse_factor")
        if rf is not None:
            self.reuse_factor = int(rf)
            self._check_reuse()
        if self.output.type is None:
            self.output.type = p.override(self.name, "result") or p.for_value(self.output)
        _, _, k, _ = self.dims
        mag = (a.type.integer - int(a.type.signed)) + (b.type.integer - int(b.type.signed))
        integer = mag + _clog2(k) + 2          # sign + one guard bit for min*min (exact at K = 2**n)
        frac = a.type.frac + b.type.frac
        require_exact(integer + frac, f"MatMul '{self.name}' exact accumulator")
        self.acc_type = FixedType(integer + frac, integer, True, "TRN", "WRAP")

    def fx_eval(self, a, b):
        ta, tb = self.inputs[0].type, self.inputs[1].type
        acc = np.matmul(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
        return self.output.type.cast(acc, ta.frac + tb.frac)

    def cpp_decls(self) -> str:
        batch, m, k, n = self.dims
        return "\n".join([
            f"struct {self.name}_config {{",
            f"    static const int batch = {batch}, m = {m}, k = {k}, n = {n};",
            f"    static const int reuse = {self.reuse_factor}, per_round = {self.per_round};",
            f"    typedef {self.acc_type.cpp()} acc_t;   // exact for {k} products",
            "};", ""])

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        _check_io(io)
        a, b = self.inputs
        fn = "matmul" if io == "io_parallel" else "matmul_stream"
        return (f"accelc_hls::{fn}<{a.ctype}, {b.ctype}, {self.output.ctype}, {self.name}_config>"
                f"({ins[0]}, {ins[1]}, {out});")

    def multiplies(self) -> int:
        batch, m, k, n = self.dims
        return batch * m * k * n

    def estimate(self, io: str = "io_parallel") -> Estimate:
        """DSP = ceil(B*M*N*K / R) multipliers x dsp_per_multiply(a bits, b bits). LUT: one
        accumulator adder per multiplier (acc bits each), plus a LUT multiplier (a x b bits) when the
        product is too small for a DSP, plus the operand multiplexers when R > 1 (~ a+b bits x
        log2(R) per multiplier). FF: the B*M*N accumulators. Latency (io_parallel): R rounds + 3
        multiplier stages + a log2(K)-deep adder chain + 1 output cast; II = R. io_stream adds the
        buffering: max(B*M, B*K) input packets before the kernel and B*M output packets after,
        II = max(B*M, B*K) + R (one process, not overlapped)."""
        _check_io(io)
        batch, m, k, n = self.dims
        a, b = self.inputs
        wa, wb, wacc = a.type.width, b.type.width, self.acc_type.width
        per = self.per_round
        dsp1 = dsp_per_multiply(wa, wb)
        lut = per * wacc + (per * wa * wb if dsp1 == 0 else 0)
        if self.reuse_factor > 1:
            lut += per * (wa + wb) * _clog2(self.reuse_factor)
        ff = batch * m * n * wacc
        lat = self.reuse_factor + 3 + _clog2(k) + 1
        if io == "io_parallel":
            return Estimate(dsp=per * dsp1, lut=lut, ff=ff, latency=lat, ii=self.reuse_factor)
        ins = max(batch * m, batch * k)
        ff += batch * (m * k * wa + k * n * wb + m * n * self.output.type.width)
        return Estimate(dsp=per * dsp1, lut=lut, ff=ff, latency=ins + lat + batch * m,
                        ii=ins + self.reuse_factor)

    def checks(self, io: str) -> list[Finding]:
        _check_io(io)
        out: list[Finding] = []
        per = self.per_round
        if per > MAX_PARTITION:
            need = -(-self.multiplies() // MAX_PARTITION)
            out.append(Finding("error", self.name, f"MatMul '{self.name}' unrolls {per} multiplies per round "
                               f"(B*M*K*N = {self.multiplies()} / reuse {self.reuse_factor}), more than the "
                               f"{MAX_PARTITION} Vitis HLS can unroll; set reuse_factor >= {need}"))
        if io == "io_stream":
            a, b = self.inputs
            big = [v.name for v in (a, b, self.output) if v.size > MAX_PARTITION]
            if big:
                out.append(Finding("error", self.name, f"MatMul '{self.name}' buffers {', '.join(big)} whole "
                                   f"in io_stream and partitions them completely, but they exceed "
                                   f"{MAX_PARTITION} elements; split the heads/sequence into smaller MatMuls"))
        if self.reuse_factor > self.multiplies():
            out.append(Finding("warning", self.name, f"MatMul '{self.name}': reuse factor {self.reuse_factor} "
                               f"exceeds its {self.multiplies()} multiplies; rounds beyond that are idle, "
                               f"use reuse_factor <= {self.multiplies()}"))
        return out

    def describe(self):
        d = super().describe()
        d["accum"] = self.acc_type.short() if self.acc_type else None
        return d


# ===================================================================================================
# LayerNorm
# ===================================================================================================
class LayerNorm(Layer):
    """LayerNorm over the last axis (rows = the leading dims), bit-exact integer statistics, one
    integer square root and one division per row (see the module docstring for the algorithm and the
    error budget). ``gamma`` (D,), ``beta`` (D,) or None, ``eps`` as in ONNX/PyTorch (added to the
    variance). Overrides: ``result`` (output type), ``weight`` (the type of gamma*sqrt(D)),
    ``bias`` (beta's type).
    """
    kind = "layernorm"
    headers = HEADERS
    G = 2                                   # guard bits of the shifted deviations dn

    def __init__(self, name: str, x: Value, out: Value, gamma: np.ndarray, beta: np.ndarray | None,
                 eps: float, nodes: Sequence[str] = ()):
        super().__init__(name, [x], out, nodes)
        if not x.shape:
            raise BackendError(f"LayerNorm '{self.name}' needs a tensor with a last axis to normalize")
        d = int(x.shape[-1])
        if tuple(out.shape) != tuple(x.shape):
            raise BackendError(f"LayerNorm '{self.name}': output shape {tuple(out.shape)} must equal the "
                               f"input shape {tuple(x.shape)}")
        gamma = np.asarray(gamma, dtype=np.float64).reshape(-1)
        if gamma.size == 1 and d > 1:
            gamma = np.full(d, float(gamma[0]))
        if gamma.shape != (d,):
            raise BackendError(f"LayerNorm '{self.name}': gamma has {gamma.size} values, expected {d} (one "
                               f"per element of the last axis); only last-axis normalization is supported")
        if beta is not None:
            beta = np.asarray(beta, dtype=np.float64).reshape(-1)
            if beta.size == 1 and d > 1:
                beta = np.full(d, float(beta[0]))
            if beta.shape != (d,):
                raise BackendError(f"LayerNorm '{self.name}': beta has {beta.size} values, expected {d}")
        if not (np.isfinite(gamma).all() and (beta is None or np.isfinite(beta).all())):
            raise BackendError(f"LayerNorm '{self.name}': gamma/beta contain NaN or infinity")
        eps = float(eps)
        if not (eps >= 0 and math.isfinite(eps)):
            raise BackendError(f"LayerNorm '{self.name}': eps {eps} must be a finite value >= 0")
        self.d = d
        self.rows = int(x.size // d)
        self.gamma, self.beta, self.eps = gamma, beta, eps
        # set by choose_types
        self.g_type: FixedType | None = None
        self.b_type: FixedType | None = None
        self.xn_type: FixedType | None = None
        self.g_codes = self.b_codes = None
        self.p = self.n = self.wd = self.wv = 0
        self.eps_code = 0

    # ---- semantics --------------------------------------------------------------------------------
    def float_eval(self, x):
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + self.eps) * self.gamma
        return y + self.beta if self.beta is not None else y

    def choose_types(self, p: Precision) -> None:
        x = self.inputs[0]
        t = x.type
        if self.output.type is None:
            self.output.type = p.override(self.name, "result") or p.for_value(self.output)
        o = self.output.type
        d = self.d
        g = self.gamma * math.sqrt(d)
        self.g_type = p.override(self.name, "weight") or p.for_weights(g)
        self.g_codes = self.g_type.from_float(g)
        beta = self.beta if self.beta is not None else np.zeros(d)
        self.b_type = p.override(self.name, "bias") or p.for_weights(beta)
        self.b_codes = self.b_type.from_float(beta)
        for what, tt in (("gamma*sqrt(D) ('weight')", self.g_type), ("beta ('bias')", self.b_type)):
            if tt.width > 53:
                raise BackendError(f"LayerNorm '{self.name}': the {what} type {tt.short()} is wider than the 53 "
                                   f"bits the generated C++ can write exactly as constants; use a narrower type")
        gmax = float(np.max(np.abs(self.g_type.to_float(self.g_codes))))
        a = math.ceil(math.log2(gmax)) if gmax > 0 else 0
        self.p = max(8, min(28, o.frac + a + 4))
        fn = max(2, o.frac + a + 3)
        self.xn_type = FixedType(fn + 2, 2, True, "RND", "SAT")
        self.n = 2 * self.p + 2
        cd = _clog2(d)
        self.wd = t.width + cd + 2
        self.eps_code = int(Fraction(self.eps) * d ** 3 * Fraction(2) ** (2 * t.frac) + Fraction(1, 2))
        qmax = d ** 3 * ((1 << t.width) - 1) ** 2 // 4
        self.wv = max(2, (qmax + self.eps_code).bit_length())
        # y = xn * g + beta, exact, must fit the int64 model
        f_tot = max(self.xn_type.frac + self.g_type.frac, self.b_type.frac)
        i_tot = max(self.xn_type.integer + self.g_type.integer, self.b_type.integer) + 1
        require_exact(f_tot + i_tot, f"LayerNorm '{self.name}' affine output (xhat*gamma + beta)")

    def _row_scale(self, q: int) -> tuple[int, int]:
        """(k, r) for one row's V: exponent k and r = floor(2**N / isqrt(V / 4**k))."""
        q = max(q, 1)
        k = (q.bit_length() + 1) // 2 - self.p
        vn = q >> (2 * k) if k >= 0 else q << (-2 * k)
        s = math.isqrt(vn)
        return k, (1 << self.n) // s

    def fx_eval(self, x):
        x = np.asarray(x, dtype=np.int64)
        d, big = self.d, x.reshape(-1, self.d)
        rows = big.astype(object)                          # exact Python ints (V may exceed 64 bits)
        s = rows.sum(axis=1)
        dev = rows * d - s[:, None]
        q = (dev * dev).sum(axis=1) + self.eps_code
        ks, rs = zip(*(self._row_scale(int(v)) for v in q)) if len(q) else ((), ())
        sh = self.G - np.array(ks, dtype=np.int64)
        r = np.array(rs, dtype=object)
        dn = np.empty_like(dev)
        for i in range(dev.shape[0]):
            si = int(sh[i])
            dn[i] = [v << si for v in dev[i]] if si >= 0 else [v >> -si for v in dev[i]]
        prod = dn * r[:, None]
        # xn_t assignment: RND (half up) then SAT, from N+G fractional bits to Fn
        drop = self.n + self.G - self.xn_type.frac
        xn = (prod + (1 << (drop - 1))) >> drop if drop > 0 else prod << (-drop)
        xn = np.clip(xn, self.xn_type.min_code, self.xn_type.max_code).astype(np.int64)
        gf, bf = self.g_type.frac, self.b_type.frac
        f = max(self.xn_type.frac + gf, bf)
        acc = (xn * self.g_codes[None, :]) << np.int64(f - self.xn_type.frac - gf)
        if self.beta is not None:
            acc = acc + (self.b_codes[None, :] << np.int64(f - bf))
        y = self.output.type.cast(acc, f)
        return y.reshape(x.shape)

    # ---- code -------------------------------------------------------------------------------------
    def _eps_expr(self) -> str:
        e = self.eps_code
        if e < (1 << 62):
            return f"v_t({e}LL)"
        parts, sh = [], 0
        while e:
            parts.append(f"(v_t({e & ((1 << 30) - 1)}LL) << {sh})")
            e >>= 30
            sh += 30
        return " + ".join(parts)

    def cpp_decls(self) -> str:
        x = self.inputs[0]
        n = self.name
        gvals = [_exact_decimal(int(c), self.g_type.frac) for c in self.g_codes]
        bvals = [_exact_decimal(int(c), self.b_type.frac) for c in self.b_codes]
        return "\n".join([
            f"typedef {self.g_type.cpp()} {n}_g_t;   // gamma * sqrt({self.d})",
            f"typedef {self.b_type.cpp()} {n}_b_t;",
            f"static const {n}_g_t {n}_gamma[{self.d}] = {_array_init(gvals)};",
            f"static const {n}_b_t {n}_beta[{self.d}] = {_array_init(bvals)};",
            f"struct {n}_config {{",
            f"    static const int d = {self.d}, rows = {self.rows};",
            f"    static const int wx = {x.type.width};",
            f"    static const bool x_signed = {'true' if x.type.signed else 'false'};",
            f"    static const int wd = {self.wd}, wv = {self.wv};",
            f"    static const int p = {self.p}, g = {self.G}, n = {self.n};",
            f"    static const bool has_beta = {'true' if self.beta is not None else 'false'};",
            f"    typedef ap_int<{self.wv + 1}> v_t;",
            f"    typedef {self.xn_type.cpp()} xn_t;",
            f"    static v_t eps_code() {{ return {self._eps_expr()}; }}   // eps = {self.eps!r}",
            "};", ""])

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        _check_io(io)
        x, n = self.inputs[0], self.name
        targs = f"{x.ctype}, {self.output.ctype}, {n}_g_t, {n}_b_t, {n}_config"
        fn = "layernorm" if io == "io_parallel" else "layernorm_stream"
        return f"accelc_hls::{fn}<{targs}>({ins[0]}, {out}, {n}_gamma, {n}_beta);"

    # ---- cost and checks --------------------------------------------------------------------------
    def multiplies(self) -> int:
        """Per row: D squares, D (dn * r), D (xn * gamma); D*c is by a constant (shift/add)."""
        return 3 * self.d * self.rows

    def estimate(self, io: str = "io_parallel") -> Estimate:
        """DSP: per row, D squares (wd x wd), D dn*r (P+G+2 x P+4), D xn*g (xn x g bits);
        io_parallel instantiates every row, io_stream one row (II=1 over rows). LUT: the two adder
        trees (D x wd, D x wv), the leading-one detector (wv), the isqrt (P stages of 2P-bit
        subtract), the divider (N stages of P-bit subtract), the shifters (D x (P+G) x log2(shift
        range)), the output adders (D x out bits). FF: one pipeline register per stage of the row
        datapath (roughly the LUT count / 4). Latency: log2(D) (sum) + 3 (square) + log2(D) (sum) + 1
        (LOD) + P/4 (isqrt, 4 stages per cycle) + N/2 (divider, 2 bits per cycle) + 7 (shift,
        multiplies, add, cast); io_stream adds one cycle per further row."""
        _check_io(io)
        d, p, g = self.d, self.p, self.G
        cd = _clog2(d)
        per_row_dsp = d * (dsp_per_multiply(self.wd, self.wd) + dsp_per_multiply(p + g + 2, p + 4)
                           + dsp_per_multiply(self.xn_type.width, self.g_type.width))
        per_row_lut = (d * self.wd + d * self.wv + self.wv + p * 2 * p + self.n * p
                       + d * (p + g) * max(1, _clog2(self.wv)) + d * self.output.type.width)
        lat = cd + 3 + cd + 1 + -(-p // 4) + -(-self.n // 2) + 7
        inst = self.rows if io == "io_parallel" else 1
        if io == "io_parallel":
            return Estimate(dsp=inst * per_row_dsp, lut=inst * per_row_lut, ff=inst * per_row_lut // 4,
                            latency=lat, ii=1)
        return Estimate(dsp=per_row_dsp, lut=per_row_lut, ff=per_row_lut // 4,
                        latency=lat + self.rows - 1, ii=self.rows)

    def checks(self, io: str) -> list[Finding]:
        _check_io(io)
        x = self.inputs[0]
        out: list[Finding] = []
        if io == "io_parallel" and x.size > MAX_PARTITION:
            out.append(Finding("error", self.name, f"LayerNorm '{self.name}' normalizes {x.size} elements at "
                               f"once in io_parallel, more than the {MAX_PARTITION} Vitis HLS can unroll; use "
                               f"io_stream (one row per cycle)"))
        if self.d > MAX_PARTITION:
            out.append(Finding("error", self.name, f"LayerNorm '{self.name}': rows of {self.d} elements exceed "
                               f"the {MAX_PARTITION}-element partition limit; this layer needs the whole row "
                               f"in registers, so it cannot be built for this width"))
        if self.eps > 0 and self.eps_code == 0 and x.type is not None:
            out.append(Finding("warning", self.name, f"LayerNorm '{self.name}': eps={self.eps!r} is below half "
                               f"the variance resolution 2**-{2 * x.type.frac}/{self.d}**3 of input type "
                               f"{x.type.short()} and quantizes to 0. Harmless: non-constant rows have a variance "
                               f"far above eps and constant rows give beta either way; give the input more "
                               f"fractional bits to represent eps"))
        if self.g_type is not None and self.g_codes is not None:
            nz = np.abs(self.gamma) > 0
            lost = nz & (self.g_codes == 0)
            if lost.any():
                out.append(Finding("warning", self.name, f"LayerNorm '{self.name}': {int(lost.sum())} nonzero "
                                   f"gamma values round to 0 in {self.g_type.short()}; widen the 'weight' type"))
        return out

    def describe(self):
        d = super().describe()
        d.update({"eps": self.eps, "rsqrt_bits": self.p,
                  "xhat": self.xn_type.short() if self.xn_type else None,
                  "gamma": self.g_type.short() if self.g_type else None})
        return d
