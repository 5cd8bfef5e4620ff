"""The conv family of FPGA layers: ``Conv`` (1-D/2-D, dense or depthwise), ``Pool`` (max/average
windows) and ``GlobalPool`` (max/average over every position). Channels-last per-sample tensors:
``(H, W, C)`` for 2-D and ``(L, C)`` for 1-D; a 1-D layer is a 2-D one of height 1 internally, both in
the NumPy model and in the generated C++ (``hls_src/accelc_hls_conv.h``, ``accelc_hls_pool.h``).

Numerics (the NumPy model below and the C++ compute the same integers):

* ``Conv``: per output pixel and channel, ``acc = bias`` then ``acc = acc + x * w`` for the taps in
  ``(ky, kx, ci)`` order (padding taps included, with x = 0), then ``out = out_t(acc)``. The default
  accumulator is exact: its fractional bits are ``x.frac + w.frac`` and its width holds the worst case
  ``|bias| + sum |w| * max|x|`` of the actual weights, so every assignment to it is an identity. A user
  ``"accum"`` override is applied after EVERY addition in that order (including the bias assignment).
  The bias is stored at the exact accumulator's fractional precision (fewer fractional bits only when
  that would exceed 53 bits, the exact range of the double literals the weights are written with).
* ``Pool`` max: the largest real pixel (padding never takes part); the output type is the input type
  unless the user overrides ``"result"``. ``Pool`` average and ``GlobalPool`` average: the exact sum
  ``s`` times ``r_n``, where ``r_n`` is ``1/n`` rounded to nearest with ``F_r`` fractional bits (a table
  indexed by the divisor ``n``, the number of real pixels, or the kernel size with
  ``count_include_pad``); the product is exact and the output type's rounding mode then rounds it.
  ``F_r`` leaves 8 guard bits below the output LSB (``|s * r_n - s / n| <= 2**-8`` output LSB), so the
  result is the correctly rounded mean except when the exact mean lies within 2**-8 LSB of a rounding
  boundary; power-of-two divisors are exact.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ....errors import BackendError
from ..fixed import FixedType, integer_bits_for, require_exact
from .base import (MAX_PARTITION, Estimate, Finding, Layer, Precision, Value, bram_18k_for,
                   dsp_per_multiply)

MAX_LITERAL_BITS = 53       # codes written as double literals stay exact up to this width
RECIP_GUARD_BITS = 8        # average pools: reciprocal precision below the output LSB
LUTRAM_DEPTH = 32           # estimates: memories shallower than this are assumed to map to LUTRAM/registers


def _bram(bits: int, depth: int) -> int:
    return 0 if depth < LUTRAM_DEPTH else bram_18k_for(bits, depth)


# ---- shared helpers -------------------------------------------------------------------------------
def _literal(code: int, frac: int) -> str:
    return repr(math.ldexp(float(int(code)), -frac))


def _c_array(ctype: str, name: str, codes: np.ndarray, frac: int, per_line: int = 12) -> str:
    flat = [int(c) for c in np.asarray(codes, dtype=np.int64).ravel()]
    if any(abs(c) >= 1 << MAX_LITERAL_BITS for c in flat):
        raise BackendError(f"constant table '{name}' has codes wider than {MAX_LITERAL_BITS} bits, which the "
                           f"generated C++ cannot write exactly; use narrower types")
    items = [_literal(c, frac) for c in flat] or ["0"]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{max(len(flat), 1)}] = {{\n    {body}\n}};"


def _typedef(t: FixedType, name: str) -> str:
    return f"typedef {t.cpp()} {name};"


class _Geometry:
    """A sliding window over a channels-last 1-D or 2-D tensor, normalised to 2-D (1-D: height 1)."""

    def __init__(self, layer: str, what: str, in_shape: Sequence[int], kernel: Sequence[int],
                 strides: Sequence[int], pads: Sequence[int]):
        shape = tuple(int(s) for s in in_shape)
        nd = len(shape) - 1
        if nd not in (1, 2):
            raise BackendError(f"{what} '{layer}': the FPGA backend supports 1-D (L, C) and 2-D (H, W, C) "
                               f"channels-last inputs, got per-sample shape {shape}")
        kernel = tuple(int(k) for k in kernel)
        strides = tuple(int(s) for s in (strides if strides is not None and len(strides) else (1,) * nd))
        pads = tuple(int(p) for p in (pads if pads is not None and len(pads) else (0,) * (2 * nd)))
        if len(kernel) != nd or len(strides) != nd or len(pads) != 2 * nd:
            raise BackendError(f"{what} '{layer}': a {nd}-D window needs {nd} kernel sizes, {nd} strides and "
                               f"{2 * nd} pads (ONNX order: begins then ends), got kernel {kernel}, "
                               f"strides {strides}, pads {pads}")
        if min(kernel) < 1 or min(strides) < 1 or min(pads) < 0:
            raise BackendError(f"{what} '{layer}': kernel sizes and strides must be >= 1 and pads >= 0, got "
                               f"kernel {kernel}, strides {strides}, pads {pads}")
        self.nd = nd
        if nd == 1:
            self.H, self.W, self.C = 1, shape[0], shape[1]
            self.KH, self.KW = 1, kernel[0]
            self.sh, self.sw = 1, strides[0]
            self.pt, self.pl, self.pb, self.pr = 0, pads[0], 0, pads[1]
        else:
            self.H, self.W, self.C = shape
            self.KH, self.KW = kernel
            self.sh, self.sw = strides
            self.pt, self.pl, self.pb, self.pr = pads
        self.Hp, self.Wp = self.H + self.pt + self.pb, self.W + self.pl + self.pr
        if self.Hp < self.KH or self.Wp < self.KW:
            raise BackendError(f"{what} '{layer}': the kernel {kernel} is larger than the padded input "
                               f"{(self.Hp, self.Wp)[2 - nd:]}")
        self.Ho = (self.Hp - self.KH) // self.sh + 1
        self.Wo = (self.Wp - self.KW) // self.sw + 1

    def out_shape(self, channels: int) -> tuple[int, ...]:
        return (self.Wo, channels) if self.nd == 1 else (self.Ho, self.Wo, channels)

    def as_2d(self, a: np.ndarray) -> np.ndarray:
        """Batch-first channels-last array -> (B, H, W, C)."""
        return a.reshape(a.shape[0], self.H, self.W, self.C)

    def windows(self, a: np.ndarray, fill) -> np.ndarray:
        """(B, H, W, C) -> (B, Ho, Wo, KH, KW, C): every output pixel's window, borders = ``fill``."""
        b = a.shape[0]
        p = np.full((b, self.Hp, self.Wp, self.C), fill, dtype=a.dtype)
        p[:, self.pt:self.pt + self.H, self.pl:self.pl + self.W, :] = a
        iy = (np.arange(self.Ho) * self.sh)[:, None] + np.arange(self.KH)[None, :]
        ix = (np.arange(self.Wo) * self.sw)[:, None] + np.arange(self.KW)[None, :]
        return p[:, iy[:, None, :, None], ix[None, :, None, :], :]

    def real_mask(self) -> np.ndarray:
        """(Ho, Wo, KH, KW) bool: which window taps are real pixels (not padding)."""
        iy = (np.arange(self.Ho) * self.sh - self.pt)[:, None] + np.arange(self.KH)[None, :]
        ix = (np.arange(self.Wo) * self.sw - self.pl)[:, None] + np.arange(self.KW)[None, :]
        ry = (iy >= 0) & (iy < self.H)
        rx = (ix >= 0) & (ix < self.W)
        return ry[:, None, :, None] & rx[None, :, None, :]

    def config_fields(self) -> list[str]:
        return [f"static const int in_height = {self.H};", f"static const int in_width = {self.W};",
                f"static const int n_chan = {self.C};",
                f"static const int out_height = {self.Ho};", f"static const int out_width = {self.Wo};",
                f"static const int filt_height = {self.KH};", f"static const int filt_width = {self.KW};",
                f"static const int stride_height = {self.sh};", f"static const int stride_width = {self.sw};",
                f"static const int pad_top = {self.pt};", f"static const int pad_left = {self.pl};",
                f"static const int pad_bottom = {self.pb};", f"static const int pad_right = {self.pr};",
                f"static const int n_taps = {self.KH * self.KW * self.C};"]

    def line_buffer_bram(self, bits: int) -> int:
        """io_stream line buffers: KH-1 rows, each one memory of Wp words of C*bits (ARRAY_RESHAPE)."""
        return (self.KH - 1) * _bram(self.C * bits, self.Wp)


def _check_shape(layer: str, what: str, out: Value, expected: tuple[int, ...]) -> None:
    if tuple(out.shape) != tuple(expected):
        raise BackendError(f"{what} '{layer}': the output value '{out.name}' has per-sample shape "
                           f"{tuple(out.shape)} but the layer computes {tuple(expected)} (channels-last)")


def _recip_frac(out_t: FixedType, x_t: FixedType, sum_t: FixedType, divisor_max: int) -> int:
    """Fractional bits of the 1/n constants: RECIP_GUARD_BITS below the output LSB for the largest sum,
    limited so that the exact product sum * r stays within the int64 model and r within a double."""
    sum_int = max(sum_t.integer, 0) + 1
    want = out_t.frac + sum_int + RECIP_GUARD_BITS
    cap = min(61 - sum_t.width, MAX_LITERAL_BITS - 1)
    if cap < 2:
        raise BackendError(f"an average pool over a {x_t.short()} input needs a {sum_t.width}-bit sum, too wide "
                           f"to multiply by a reciprocal exactly; use a narrower input type")
    return max(2, min(want, cap))


def _recip_finding(layer: Layer, what: str) -> list[Finding]:
    """A warning when the reciprocal had to be shorter than RECIP_GUARD_BITS below the output LSB."""
    out_t, sum_t, r_t = layer.output.type, layer.sum_t, layer.recip_t
    if out_t is None or r_t is None:
        return []
    guard = r_t.frac - out_t.frac - (max(sum_t.integer, 0) + 1)
    if guard >= RECIP_GUARD_BITS:
        return []
    return [Finding("warning", layer.name,
                    f"{what} '{layer.name}': the 1/n constants have only {r_t.frac} fractional bits (the exact "
                    f"product must stay within 62 bits), {guard} below the output LSB instead of "
                    f"{RECIP_GUARD_BITS}, so some means may round differently from the exact quotient; "
                    f"use a narrower input type or fewer fractional bits in the output")]


def _recip_table(frac: int, divisors: Sequence[int]) -> tuple[FixedType, np.ndarray]:
    t = FixedType(frac + 1, 1, False, "RND", "SAT")
    vals = np.array([0.0 if n == 0 else 1.0 / n for n in divisors], dtype=np.float64)
    return t, t.from_float(vals)


def _sum_type(x_t: FixedType, terms: int) -> FixedType:
    grow = max(0, math.ceil(math.log2(max(terms, 1))))
    require_exact(x_t.width + grow, "an exact pooling sum")
    return FixedType(x_t.width + grow, x_t.integer + grow, x_t.signed, "TRN", "WRAP")


# ---- Conv -----------------------------------------------------------------------------------------
def _pool_types(layer: Layer, p: Precision, terms: int, divisors: Sequence[int]) -> None:
    """Max pooling keeps the input type; average pooling gets an exact sum type and a reciprocal table
    of its divisors."""
    x_t = layer.inputs[0].type
    if layer.mode == "max":
        if layer.output.type is None:
            layer.output.type = p.override(layer.name, "result") or x_t
        return
    if layer.output.type is None:
        layer.output.type = p.override(layer.name, "result") or p.for_value(layer.output)
    layer.sum_t = _sum_type(x_t, terms)
    frac = _recip_frac(layer.output.type, x_t, layer.sum_t, terms)
    layer.recip_t, layer.recip_codes = _recip_table(frac, divisors)


class Conv(Layer):
    """ONNX Conv, channels-last: 1-D ``x (L, Cin) -> (Lo, Cout)`` or 2-D ``x (H, W, Cin) -> (Ho, Wo, Cout)``.

    ``weight`` is in ONNX layout ``(Cout, Cin/group, *kernel)``; ``pads`` in ONNX order (begins, then
    ends: ``(top, left, bottom, right)`` in 2-D). Supports ``group == 1`` and depthwise
    (``group == Cin == Cout``) with dilation 1.

    Hardware: a kernel computing one output pixel (all ``Cout`` channels) from a ``KH x KW x Cin``
    window, its ``n_pairs`` multiplies (``KH*KW*Cin*Cout``, or ``KH*KW*C`` depthwise) shared by
    ``ceil(n_pairs / reuse_factor)`` multipliers (``ALLOCATION``), one pixel every ``reuse_factor``
    cycles. io_parallel gathers each window from the input array; io_stream is a native line-buffer
    kernel (``KH-1`` rows of BRAM, a window of registers, zeros fed at the borders, strides by skipping).
    """
    kind = "conv"
    headers = ("accelc_hls_common.h", "accelc_hls_conv.h")

    def __init__(self, name, x: Value, out: Value, weight: np.ndarray, bias: np.ndarray | None,
                 strides: tuple, pads: tuple, dilations: tuple = None, group: int = 1, nodes=(),
                 reuse_factor=1):
        super().__init__(name, [x], out, nodes, reuse_factor)
        w = np.asarray(weight, dtype=np.float64)
        nd = len(x.shape) - 1
        if w.ndim != nd + 2:
            raise BackendError(f"Conv '{self.name}': a {nd}-D convolution needs a weight of rank {nd + 2} "
                               f"(Cout, Cin/group, *kernel), got shape {w.shape}")
        if dilations is not None and any(int(d) != 1 for d in dilations):
            raise BackendError(f"Conv '{self.name}': dilations {tuple(dilations)} are not supported by the FPGA "
                               f"backend; only dilation 1 is (rewrite the model without dilated convolutions)")
        cin = int(x.shape[-1]) if x.shape else 0
        cout = int(w.shape[0])
        group = int(group)
        if group == 1:
            if w.shape[1] != cin:
                raise BackendError(f"Conv '{self.name}': weight shape {w.shape} expects {w.shape[1]} input "
                                   f"channels but the input has {cin}")
            self.depthwise = False
        elif group == cin == cout and w.shape[1] == 1:
            self.depthwise = True
        else:
            raise BackendError(f"Conv '{self.name}': group={group} with {cin} input and {cout} output channels is "
                               f"not supported by the FPGA backend; supported are group=1 and depthwise "
                               f"(group == input channels == output channels)")
        if self.reuse_factor < 1:
            raise BackendError(f"Conv '{self.name}': reuse_factor must be >= 1, got {self.reuse_factor}")
        self.g = _Geometry(self.name, "Conv", x.shape, w.shape[2:], strides, pads)
        self.cin, self.cout = cin, cout
        _check_shape(self.name, "Conv", out, self.g.out_shape(cout))
        kh, kw = self.g.KH, self.g.KW
        w4 = w.reshape(cout, w.shape[1], kh, kw)
        if self.depthwise:       # pair i = (ky*KW + kx)*C + c
            self.w_pairs = w4[:, 0].transpose(1, 2, 0).reshape(-1)
        else:                    # pair i = ((ky*KW + kx)*Cin + ci)*Cout + co
            self.w_pairs = w4.transpose(2, 3, 1, 0).reshape(-1)
        self.weight = w
        self.bias = np.zeros(cout) if bias is None else np.asarray(bias, dtype=np.float64).reshape(cout)
        self.has_bias = bias is not None
        self.n_taps = kh * kw * cin
        self.n_pairs = self.w_pairs.size
        # set by choose_types
        self.w_t = self.b_t = self.acc_t = None
        self.acc_exact = True
        self.w_codes = self.b_codes = None

    # ---- geometry helpers ----
    @property
    def n_mult(self) -> int:
        return math.ceil(self.n_pairs / self.reuse_factor)

    def _pairs_matrix(self, w_pairs: np.ndarray) -> np.ndarray:
        """Dense: (n_taps, Cout); depthwise: (KH*KW, C)."""
        return w_pairs.reshape(-1, self.cout)

    # ---- semantics ----
    def float_eval(self, x):
        g = self.g
        win = g.windows(g.as_2d(np.asarray(x, dtype=np.float64)), 0.0)      # (B,Ho,Wo,KH,KW,C)
        b = win.shape[0]
        m = self._pairs_matrix(self.w_pairs)
        if self.depthwise:
            y = np.einsum("bhwkc,kc->bhwc", win.reshape(b, g.Ho, g.Wo, g.KH * g.KW, g.C), m)
        else:
            y = win.reshape(b, g.Ho, g.Wo, self.n_taps) @ m
        return (y + self.bias).reshape(b, *self.output.shape)

    def choose_types(self, p: Precision) -> None:
        x_t = self.inputs[0].type
        self.w_t = p.override(self.name, "weight") or p.for_weights(self.weight)
        self.w_codes = self.w_t.from_float(self.w_pairs)
        fp = x_t.frac + self.w_t.frac                       # the exact product's fractional bits
        # bias at the exact accumulator's fractional precision (fewer bits only past the literal limit)
        ib = integer_bits_for(float(np.max(np.abs(self.bias))) if self.bias.size else 0.0)
        fb = min(fp, MAX_LITERAL_BITS - ib)
        if ib + fb < 2:
            ib = 2 - fb
        self.b_t = FixedType(ib + fb, ib, True, "RND_CONV", "SAT")
        self.b_codes = self.b_t.from_float(self.bias)
        override = p.override(self.name, "accum")
        if override is not None:
            self.acc_t, self.acc_exact = override, False
            f = max(override.frac, fp)
            require_exact(max(override.width + f - override.frac, x_t.width + self.w_t.width + f - fp,
                              self.b_t.width + max(0, override.frac - fb)) + 1,
                          f"the accumulation of Conv '{self.name}' with its accumulator override")
        else:
            xmax = max(abs(x_t.min_code), abs(x_t.max_code))
            wabs = np.abs(self._pairs_matrix(self.w_codes)).astype(object)
            per_co = [int(v) * xmax for v in wabs.sum(axis=0)] if wabs.size else [0] * self.cout
            bound = max((abs(int(bc)) << (fp - fb)) + s for bc, s in zip(self.b_codes, per_co)) if self.cout else 0
            width = max(2, bound.bit_length() + 1)
            if width > 62:
                raise BackendError(f"Conv '{self.name}': the exact accumulator needs {width} bits (more than the 62 "
                                   f"this compiler models exactly); use narrower input/weight types or set an "
                                   f"'accum' override for this layer")
            self.acc_t = FixedType(width, width - fp, True, "TRN", "WRAP")
        if self.output.type is None:
            self.output.type = p.override(self.name, "result") or p.for_value(self.output)

    def fx_eval(self, xc):
        g = self.g
        x_t, w_t, acc_t, out_t = self.inputs[0].type, self.w_t, self.acc_t, self.output.type
        fp = x_t.frac + w_t.frac
        win = g.windows(g.as_2d(np.asarray(xc, dtype=np.int64)), 0)
        b = win.shape[0]
        m = self._pairs_matrix(self.w_codes)                          # int64
        if self.depthwise:
            cols = win.reshape(b * g.Ho * g.Wo, g.KH * g.KW, g.C)
        else:
            cols = win.reshape(b * g.Ho * g.Wo, self.n_taps)
        if self.acc_exact:
            bias = self.b_codes << np.int64(fp - self.b_t.frac)
            if self.depthwise:
                acc = (cols * m[None]).sum(axis=1) + bias
            else:
                acc = cols @ m + bias
        else:
            fa = acc_t.frac
            f = max(fa, fp)
            acc = np.broadcast_to(acc_t.cast(self.b_codes, self.b_t.frac), (cols.shape[0], self.cout)).copy()
            for t in range(m.shape[0]):                               # taps in (ky, kx, ci) order
                prod = cols[:, t, :] * m[t] if self.depthwise else cols[:, t:t + 1] * m[t][None, :]
                s = (acc << np.int64(f - fa)) + (prod << np.int64(f - fp))
                acc = acc_t.cast(s, f)
        y = out_t.cast(acc, acc_t.frac)
        return y.reshape(b, *self.output.shape)

    # ---- code ----
    def cpp_decls(self) -> str:
        n = self.name
        g = self.g
        lines = [f"// Conv {'depthwise ' if self.depthwise else ''}{g.KH}x{g.KW} stride ({g.sh},{g.sw}) pads "
                 f"(t{g.pt},l{g.pl},b{g.pb},r{g.pr}); accumulator "
                 f"{'exact' if self.acc_exact else 'user override, cast after each addition'}",
                 _typedef(self.w_t, f"{n}_w_t"), _typedef(self.b_t, f"{n}_b_t"), _typedef(self.acc_t, f"{n}_acc_t"),
                 f"struct {n}_config {{",
                 f"    typedef {n}_acc_t accum_t;", f"    typedef {n}_w_t weight_t;", f"    typedef {n}_b_t bias_t;"]
        lines += ["    " + f for f in g.config_fields()]
        lines += [f"    static const int n_filt = {self.cout};",
                  f"    static const int n_pairs = {self.n_pairs};",
                  f"    static const bool depthwise = {'true' if self.depthwise else 'false'};",
                  f"    static const int reuse_factor = {self.reuse_factor};",
                  f"    static const int n_mult = {self.n_mult};",
                  "};",
                  _c_array(f"{n}_w_t", f"{n}_w", self.w_codes, self.w_t.frac),
                  _c_array(f"{n}_b_t", f"{n}_b", self.b_codes, self.b_t.frac)]
        return "\n".join(lines)

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        x, y = self.inputs[0], self.output
        fn = "conv_2d_parallel" if io == "io_parallel" else "conv_2d_stream"
        n = self.name
        return f"accelc_hls::{fn}<{x.ctype}, {y.ctype}, {n}_config>({ins[0]}, {out}, {n}_w, {n}_b);"

    # ---- cost and checks ----
    def multiplies(self) -> int:
        return self.g.Ho * self.g.Wo * self.n_pairs

    def _depth(self) -> int:
        adds = self.n_taps if not self.acc_exact else math.ceil(math.log2(max(self.n_pairs // self.cout, 1) + 1))
        return 4 + adds

    def estimate(self, io: str = "io_parallel") -> Estimate:
        """Model: the multiplier array of ONE output pixel is built (``ceil(n_pairs / R)`` multipliers,
        ``dsp_per_multiply`` DSPs each) and reused over every output pixel; a pixel takes R cycles.

        * latency: io_parallel ``Ho*Wo*R + depth``; io_stream ``Hp*Wp*R + Wp + depth`` (every padded input
          pixel costs R cycles, plus clearing the line buffers), depth = 4 + adder-tree levels (exact
          accumulator) or the taps (chain of casts, override). II = latency - depth (one sample at a time).
        * BRAM: weights are registers/LUT constants when R == 1, else one ROM of depth R and width
          ``n_mult * w_bits`` (ARRAY_RESHAPE); io_stream adds the line buffers (KH-1 rows of Wp words of
          ``Cin * x_bits``). Memories shallower than ``LUTRAM_DEPTH`` (32) words are counted as LUTRAM
          (no BRAM), which is what Vitis usually picks for them.
        * caveat (io_parallel): the kernel's pixel loop is ``PIPELINE II=R`` inside an ``INLINE off``
          function; if the enclosing top function is itself PIPELINEd, Vitis unrolls the pixel loops too
          and the real cost is ``multiplies() / 1`` multipliers with a latency of about ``depth``
          (``checks`` warns when that exceeds the unroll limit).
        * LUT: ``acc_bits`` per multiplier (its adder) + ``x_bits * w_bits`` per multiplier that does not
          map to a DSP + window muxing (``n_taps * x_bits``). FF: the window (``n_taps * x_bits``), the
          accumulators (``Cout * acc_bits``) and one pipeline register per multiplier output.
        """
        x_t, w_t, acc_t = self.inputs[0].type, self.w_t, self.acc_t
        g, r = self.g, self.reuse_factor
        dpm = dsp_per_multiply(x_t.width, w_t.width)
        mults = self.n_mult
        bram = 0 if r == 1 else _bram(mults * w_t.width, r)
        depth = self._depth()
        if io == "io_stream":
            bram += g.line_buffer_bram(x_t.width)
            cycles = g.Hp * g.Wp * r + g.Wp
        else:
            cycles = g.Ho * g.Wo * r
        lut = mults * acc_t.width + (mults * x_t.width * w_t.width if dpm == 0 else 0) + self.n_taps * x_t.width
        ff = self.n_taps * x_t.width + self.cout * acc_t.width + mults * (x_t.width + w_t.width)
        return Estimate(dsp=mults * dpm, bram_18k=bram, lut=lut, ff=ff, latency=cycles + depth, ii=cycles)

    def checks(self, io: str) -> list[Finding]:
        out: list[Finding] = []
        if self.n_mult > MAX_PARTITION:
            need = math.ceil(self.n_pairs / MAX_PARTITION)
            out.append(Finding("error", self.name,
                               f"Conv '{self.name}' needs {self.n_mult} parallel multipliers per output pixel "
                               f"({self.n_pairs} multiplies / reuse_factor {self.reuse_factor}), more than the "
                               f"{MAX_PARTITION} Vitis HLS can partition/unroll; set reuse_factor >= {need} for "
                               f"this layer"))
        if self.n_taps > MAX_PARTITION:
            out.append(Finding("error", self.name,
                               f"Conv '{self.name}' has a {self.g.KH}x{self.g.KW}x{self.cin} window "
                               f"({self.n_taps} values) held in registers, more than {MAX_PARTITION}; split the "
                               f"input channels (several convolutions plus an Add) or use a smaller kernel"))
        if io == "io_parallel" and self.multiplies() > MAX_PARTITION:
            out.append(Finding("warning", self.name,
                               f"Conv '{self.name}': the io_parallel top function is PIPELINEd, and Vitis unrolls "
                               f"every loop below a pipelined function, so its {self.g.Ho * self.g.Wo} output pixels "
                               f"get their own multipliers ({self.multiplies()} multiplies, more than "
                               f"{MAX_PARTITION}; the reuse factor cannot share them across pixels there); use "
                               f"io_stream for this design"))
        if io == "io_parallel":
            for v, what in ((self.inputs[0], "input"), (self.output, "output")):
                if v.size > MAX_PARTITION:
                    out.append(Finding("warning", self.name,
                                       f"Conv '{self.name}': its {what} '{v.name}' has {v.size} elements, too many "
                                       f"to partition in io_parallel, so each output pixel waits on memory ports "
                                       f"(II grows with the window); use io_stream for this design"))
        return out

    def describe(self):
        d = super().describe()
        d.update({"depthwise": self.depthwise, "kernel": [self.g.KH, self.g.KW][2 - self.g.nd:],
                  "strides": [self.g.sh, self.g.sw][2 - self.g.nd:],
                  "weight_type": self.w_t.short() if self.w_t else None,
                  "accum_type": self.acc_t.short() if self.acc_t else None, "accum_exact": self.acc_exact})
        return d


# ---- Pool -----------------------------------------------------------------------------------------
class Pool(Layer):
    """ONNX MaxPool / AveragePool (no ceil_mode, no dilation), channels-last 1-D or 2-D.

    Max: padding is excluded (never wins); the output type is the input type unless the user overrides
    ``"result"``. Average: exact sum times the rounded reciprocal of the divisor (real pixels only unless
    ``count_include_pad``), see the module docstring for the rounding. Pads must be smaller than the
    kernel, so every window holds a real pixel.

    io_parallel: one output pixel per cycle from the input array. io_stream: the native line-buffer
    kernel shared with Conv (one padded input pixel per cycle).
    """
    kind = "pool"
    headers = ("accelc_hls_common.h", "accelc_hls_conv.h", "accelc_hls_pool.h")

    def __init__(self, name, x: Value, out: Value, mode: str, kernel: tuple, strides: tuple, pads: tuple,
                 count_include_pad=False, nodes=()):
        super().__init__(name, [x], out, nodes, 1)
        if mode not in ("max", "avg"):
            raise BackendError(f"Pool '{self.name}': mode must be 'max' or 'avg', got '{mode}'")
        self.mode = mode
        self.count_include_pad = bool(count_include_pad)
        self.g = _Geometry(self.name, "Pool", x.shape, kernel, strides, pads)
        g = self.g
        if max(g.pt, g.pb) >= g.KH or max(g.pl, g.pr) >= g.KW:
            raise BackendError(f"Pool '{self.name}': pads {tuple(pads)} must be smaller than the kernel "
                               f"{tuple(kernel)} (a window of padding only has no value); reduce the pads")
        _check_shape(self.name, "Pool", out, g.out_shape(g.C))
        self.n_win = g.KH * g.KW
        self.sum_t = self.recip_t = None
        self.recip_codes = None

    def _divisors(self) -> np.ndarray:
        """(Ho, Wo) divisor of every output pixel."""
        if self.count_include_pad:
            return np.full((self.g.Ho, self.g.Wo), self.n_win, dtype=np.int64)
        return self.g.real_mask().sum(axis=(2, 3)).astype(np.int64)

    def float_eval(self, x):
        g = self.g
        a = g.as_2d(np.asarray(x, dtype=np.float64))
        b = a.shape[0]
        if self.mode == "max":
            y = g.windows(a, -np.inf).max(axis=(3, 4))
        else:
            y = g.windows(a, 0.0).sum(axis=(3, 4)) / self._divisors()[None, :, :, None]
        return y.reshape(b, *self.output.shape)

    def choose_types(self, p: Precision) -> None:
        _pool_types(self, p, self.n_win, range(self.n_win + 1))

    def fx_eval(self, xc):
        g = self.g
        x_t, out_t = self.inputs[0].type, self.output.type
        a = g.as_2d(np.asarray(xc, dtype=np.int64))
        b = a.shape[0]
        if self.mode == "max":
            y = g.windows(a, np.iinfo(np.int64).min).max(axis=(3, 4))
            if out_t != x_t:
                y = out_t.cast(y, x_t.frac)
        else:
            s = g.windows(a, 0).sum(axis=(3, 4))
            r = self.recip_codes[self._divisors()][None, :, :, None]
            y = out_t.cast(s * r, x_t.frac + self.recip_t.frac)
        return y.reshape(b, *self.output.shape)

    def cpp_decls(self) -> str:
        n, g = self.name, self.g
        x_t = self.inputs[0].type
        sum_t = self.sum_t or x_t
        if self.recip_t is None:        # max: the kernels take a table argument they do not read
            recip_t, codes = FixedType(2, 1, False), np.zeros(1, dtype=np.int64)
        else:
            recip_t, codes = self.recip_t, self.recip_codes
        lines = [f"// {self.mode} pool {g.KH}x{g.KW} stride ({g.sh},{g.sw}) pads (t{g.pt},l{g.pl},b{g.pb},r{g.pr})"
                 + ("" if self.mode == "max" else
                    f"; mean = sum * recip[n], recip[n] = 1/n rounded to nearest at {recip_t.frac} bits, "
                    f"n = {'kernel size' if self.count_include_pad else 'real pixels'}"),
                 _typedef(sum_t, f"{n}_sum_t"), _typedef(recip_t, f"{n}_recip_t"),
                 f"struct {n}_config {{", f"    typedef {n}_sum_t sum_t;", f"    typedef {n}_recip_t recip_t;"]
        lines += ["    " + f for f in g.config_fields()]
        lines += [f"    static const bool is_max = {'true' if self.mode == 'max' else 'false'};",
                  f"    static const bool count_include_pad = {'true' if self.count_include_pad else 'false'};",
                  f"    static const int n_recip = {len(codes)};", "};",
                  _c_array(f"{n}_recip_t", f"{n}_recip", codes, recip_t.frac)]
        return "\n".join(lines)

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        x, y = self.inputs[0], self.output
        fn = "pool_2d_parallel" if io == "io_parallel" else "pool_2d_stream"
        return f"accelc_hls::{fn}<{x.ctype}, {y.ctype}, {self.name}_config>({ins[0]}, {out}, {self.name}_recip);"

    def multiplies(self) -> int:
        return 0 if self.mode == "max" else self.g.Ho * self.g.Wo * self.g.C

    def estimate(self, io: str = "io_parallel") -> Estimate:
        """Model: one output pixel per cycle (io_parallel: ``Ho*Wo`` cycles; io_stream: ``Hp*Wp + Wp``,
        every padded input pixel plus clearing the line buffers) + a depth of 3 + log2(window).
        Average pools multiply each channel's sum by a reciprocal (``C`` multipliers, DSPs by
        ``dsp_per_multiply``). BRAM: the io_stream line buffers only. LUT: a comparator or adder per
        window element and channel (``KH*KW*C*x_bits``); FF: the window registers."""
        x_t, g = self.inputs[0].type, self.g
        taps = self.n_win * g.C
        depth = 3 + math.ceil(math.log2(self.n_win + 1))
        dsp = 0 if self.mode == "max" else g.C * dsp_per_multiply(self.sum_t.width, self.recip_t.width)
        if io == "io_stream":
            cycles, bram = g.Hp * g.Wp + g.Wp, g.line_buffer_bram(x_t.width)
        else:
            cycles, bram = g.Ho * g.Wo, 0
        return Estimate(dsp=dsp, bram_18k=bram, lut=taps * x_t.width, ff=taps * x_t.width,
                        latency=cycles + depth, ii=cycles)

    def checks(self, io: str) -> list[Finding]:
        g = self.g
        out: list[Finding] = []
        if self.n_win * g.C > MAX_PARTITION:
            out.append(Finding("error", self.name,
                               f"Pool '{self.name}' holds a {g.KH}x{g.KW}x{g.C} window ({self.n_win * g.C} values) "
                               f"in registers, more than the {MAX_PARTITION} Vitis HLS can partition; use a smaller "
                               f"kernel or fewer channels per layer"))
        if io == "io_parallel" and self.inputs[0].size > MAX_PARTITION:
            out.append(Finding("warning", self.name,
                               f"Pool '{self.name}': its input has {self.inputs[0].size} elements, too many to "
                               f"partition in io_parallel, so each output pixel waits on memory ports; use io_stream"))
        return out + _recip_finding(self, "Pool")

    def describe(self):
        d = super().describe()
        d.update({"mode": self.mode, "kernel": [self.g.KH, self.g.KW][2 - self.g.nd:],
                  "strides": [self.g.sh, self.g.sw][2 - self.g.nd:], "count_include_pad": self.count_include_pad})
        return d


# ---- GlobalPool -----------------------------------------------------------------------------------
class GlobalPool(Layer):
    """ONNX GlobalMaxPool / GlobalAveragePool over every position of a channels-last input ``(..., C)``.

    The output may have any per-sample shape of ``C`` elements (``(C,)``, ``(1, 1, C)``...): element ``c``
    is channel ``c``. Max keeps the input type (unless ``"result"`` is overridden); average is the exact
    sum times ``1/N`` rounded to nearest (see the module docstring). Both io styles read one position
    per cycle into per-channel registers (io_stream natively, no adapter).
    """
    kind = "global_pool"
    headers = ("accelc_hls_common.h", "accelc_hls_conv.h", "accelc_hls_pool.h")

    def __init__(self, name, x: Value, out: Value, mode: str, nodes=()):
        super().__init__(name, [x], out, nodes, 1)
        if mode not in ("max", "avg"):
            raise BackendError(f"GlobalPool '{self.name}': mode must be 'max' or 'avg', got '{mode}'")
        if len(x.shape) < 2:
            raise BackendError(f"GlobalPool '{self.name}': the input needs at least one spatial dimension before "
                               f"its channels, got per-sample shape {tuple(x.shape)}")
        self.mode = mode
        self.C = int(x.shape[-1])
        self.n_pos = x.size // self.C if self.C else 0
        if out.size != self.C:
            raise BackendError(f"GlobalPool '{self.name}': the output '{out.name}' has {out.size} elements but the "
                               f"input has {self.C} channels")
        if self.C % out.packet:
            raise BackendError(f"GlobalPool '{self.name}': the output's last dimension {out.packet} does not divide "
                               f"the {self.C} channels; give the output shape (C,) or (1, 1, C)")
        self.sum_t = self.recip_t = None
        self.recip_codes = None

    def float_eval(self, x):
        a = np.asarray(x, dtype=np.float64)
        a = a.reshape(a.shape[0], self.n_pos, self.C)
        y = a.max(axis=1) if self.mode == "max" else a.sum(axis=1) / self.n_pos
        return y.reshape(a.shape[0], *self.output.shape)

    def choose_types(self, p: Precision) -> None:
        _pool_types(self, p, self.n_pos, [self.n_pos])

    def fx_eval(self, xc):
        x_t, out_t = self.inputs[0].type, self.output.type
        a = np.asarray(xc, dtype=np.int64)
        a = a.reshape(a.shape[0], self.n_pos, self.C)
        if self.mode == "max":
            y = a.max(axis=1)
            if out_t != x_t:
                y = out_t.cast(y, x_t.frac)
        else:
            y = out_t.cast(a.sum(axis=1) * self.recip_codes[0], x_t.frac + self.recip_t.frac)
        return y.reshape(a.shape[0], *self.output.shape)

    def cpp_decls(self) -> str:
        n = self.name
        x_t = self.inputs[0].type
        sum_t = self.sum_t or x_t
        if self.recip_t is None:
            recip_t, codes = FixedType(2, 1, False), np.zeros(1, dtype=np.int64)
        else:
            recip_t, codes = self.recip_t, self.recip_codes
        return "\n".join([
            f"// global {self.mode} pool over {self.n_pos} positions"
            + ("" if self.mode == "max" else
               f"; mean = sum * (1/{self.n_pos} rounded to nearest at {recip_t.frac} bits)"),
            _typedef(sum_t, f"{n}_sum_t"), _typedef(recip_t, f"{n}_recip_t"),
            f"struct {n}_config {{", f"    typedef {n}_sum_t sum_t;", f"    typedef {n}_recip_t recip_t;",
            f"    static const int n_pos = {self.n_pos};", f"    static const int n_chan = {self.C};",
            f"    static const int out_packet = {self.output.packet};",
            f"    static const bool is_max = {'true' if self.mode == 'max' else 'false'};", "};",
            _c_array(f"{n}_recip_t", f"{n}_recip", codes, recip_t.frac)])

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        x, y = self.inputs[0], self.output
        fn = "global_pool_parallel" if io == "io_parallel" else "global_pool_stream"
        return f"accelc_hls::{fn}<{x.ctype}, {y.ctype}, {self.name}_config>({ins[0]}, {out}, {self.name}_recip);"

    def multiplies(self) -> int:
        return 0 if self.mode == "max" else self.C

    def estimate(self, io: str = "io_parallel") -> Estimate:
        """Model: one position per cycle (``N`` cycles) + a depth of 4 (compare/add, final multiply,
        output); average pools use ``C`` multipliers for the final scaling; no BRAM (registers only).
        LUT: one comparator/adder per channel (``C * sum_bits``); FF: the per-channel registers."""
        x_t = self.inputs[0].type
        bits = self.sum_t.width if self.sum_t else x_t.width
        dsp = 0 if self.mode == "max" else self.C * dsp_per_multiply(self.sum_t.width, self.recip_t.width)
        extra = self.C // self.output.packet if io == "io_stream" else 0
        return Estimate(dsp=dsp, bram_18k=0, lut=self.C * bits, ff=self.C * (bits + x_t.width),
                        latency=self.n_pos + extra + 4, ii=self.n_pos + extra)

    def checks(self, io: str) -> list[Finding]:
        if self.C > MAX_PARTITION:
            return [Finding("error", self.name,
                            f"GlobalPool '{self.name}' keeps {self.C} channel registers, more than the "
                            f"{MAX_PARTITION} Vitis HLS can partition; split the channels across layers")]
        return _recip_finding(self, "GlobalPool")

    def describe(self):
        d = super().describe()
        d.update({"mode": self.mode, "positions": self.n_pos})
        return d
