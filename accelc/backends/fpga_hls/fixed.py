"""Fixed-point numbers as Vitis HLS ``ap_fixed``/``ap_ufixed`` computes them, on integer codes in NumPy.

A value of type ``FixedType(W, I)`` is stored as an integer *code* ``c`` of ``W`` bits, meaning
``c * 2**-(W - I)``. Every function here works on codes (``np.int64`` arrays) so that the NumPy model
of a graph is exact, and equal bit for bit to the C++ the backend generates, which assigns the same
values to the same ``ap_fixed`` types. ``tests/test_fpga_fixed.py`` checks each rounding and overflow
mode against the real ``ap_fixed`` headers compiled with g++.

Conversions follow ``ap_fixed`` assignment: first the quantization mode removes the fractional bits
the destination lacks, then the overflow mode brings the result into the destination's range.
Codes must fit in 62 bits; ``require_exact`` refuses wider intermediate types with a clear message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ...errors import BackendError

ROUNDING = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV")
OVERFLOW = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
MAX_BITS = 62          # codes and every intermediate product/sum stay exact in int64


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, AP_<rounding>, AP_<overflow>>`` (``ap_ufixed`` when not signed).

    ``integer`` counts the sign bit for signed types and may be negative or larger than ``width``
    (as in ap_fixed): a type with ``integer = -2`` holds values below 1/8 with ``width`` bits of detail.
    """
    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    overflow: str = "WRAP"

    def __post_init__(self):
        if not 1 <= self.width <= MAX_BITS:
            raise BackendError(f"fixed-point width {self.width} is outside 1..{MAX_BITS}; "
                               f"choose a smaller --fpga-bits or per-layer width")
        if self.signed and self.width < 2:
            raise BackendError("a signed fixed-point type needs at least 2 bits")
        if self.rounding not in ROUNDING:
            raise BackendError(f"unknown rounding mode '{self.rounding}'; use one of {', '.join(ROUNDING)}")
        if self.overflow not in OVERFLOW:
            raise BackendError(f"unknown overflow mode '{self.overflow}'; use one of {', '.join(OVERFLOW)}")

    # ---- facts ----------------------------------------------------------------------------------
    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def min_code(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_code(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.frac)

    @property
    def max_value(self) -> float:
        return math.ldexp(float(self.max_code), -self.frac)

    @property
    def min_value(self) -> float:
        return math.ldexp(float(self.min_code), -self.frac)

    def cpp(self) -> str:
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.width},{self.integer},AP_{self.rounding},AP_{self.overflow}>"

    def short(self) -> str:
        """``fixed<16,6,RND,SAT>`` (``ufixed`` when unsigned): how reports and errors name the type."""
        base = "fixed" if self.signed else "ufixed"
        return f"{base}<{self.width},{self.integer},{self.rounding},{self.overflow}>"

    def with_modes(self, rounding: str | None = None, overflow: str | None = None) -> "FixedType":
        return replace(self, rounding=rounding or self.rounding, overflow=overflow or self.overflow)

    # ---- conversions ----------------------------------------------------------------------------
    def from_float(self, x) -> np.ndarray:
        """Codes of ``x`` (float32 or float64 values) assigned to this type, as ``ap_fixed(double)`` does.

        A double has a 53-bit significand, so ``x * 2**frac`` is exact for every |x| < 2**(62-frac)
        and the modes then act on an exact value; NaN is refused, infinities saturate or wrap to the
        type's extremes like any huge value.
        """
        v = np.asarray(x, dtype=np.float64)
        require_exact(self.width + 13, "converting floats to this type")
        if np.isnan(v).any():
            raise BackendError("a NaN reached fixed-point conversion; fixed-point types have no NaN, "
                               "check the input data")
        # Represent the value exactly as a code with 'extra' more fractional bits, then quantize.
        # float64 values carry at most 52 fractional bits beyond their leading bit; 12 guard bits are
        # enough to decide every rounding mode (we only need the bits below the LSB and 'sticky').
        extra = 12
        scaled = np.ldexp(v, self.frac + extra)
        limit = float(1 << (MAX_BITS - 1))     # code * 2 + sticky below must stay in int64
        big = np.abs(scaled) >= limit
        scaled = np.where(big, np.sign(scaled) * (limit / 2), scaled)
        floor_part = np.floor(scaled)
        sticky = (scaled != floor_part).astype(np.int64)      # any bit below the guard bits
        code = floor_part.astype(np.int64) * 2 + sticky      # one more bit: 'something below' marker
        q = _quantize(code, extra + 1, self.rounding)
        out = self.overflow_codes(q)
        if big.any():   # far outside any range: integers at this LSB, exact as Python ints
            for i in zip(*np.nonzero(big)) if out.ndim else [()]:
                out[i] = self._overflow_big(int(np.ldexp(v[i], self.frac)) if np.isfinite(v[i]) else None,
                                            v[i] > 0)
        return out

    def _overflow_big(self, code: int | None, positive: bool) -> int:
        """The overflow mode on a value too large for int64 (``code`` None: an infinity)."""
        if self.overflow == "WRAP":
            if code is None:
                return self.max_code if positive else self.min_code
            return (code - self.min_code) % (1 << self.width) + self.min_code
        beyond = self.max_code + 1 if positive else self.min_code - 1     # the saturating modes' verdict
        return int(self.overflow_codes(np.array([beyond], dtype=np.int64))[0])

    def to_float(self, codes) -> np.ndarray:
        return np.ldexp(np.asarray(codes, dtype=np.float64), -self.frac)

    def cast(self, codes, src_frac: int) -> np.ndarray:
        """Codes of another fixed-point value (``codes * 2**-src_frac``, exact) assigned to this type."""
        c = np.asarray(codes, dtype=np.int64)
        shift = src_frac - self.frac
        if shift > 0:
            c = _quantize(c, shift, self.rounding)
        elif shift < 0:
            require_exact(int(np.abs(c).max(initial=0)).bit_length() - shift, "a fixed-point cast")
            c = c << np.int64(-shift)
        return self.overflow_codes(c)

    def overflow_codes(self, c: np.ndarray) -> np.ndarray:
        """Applies the overflow mode to codes already at this type's fractional precision."""
        lo, hi = self.min_code, self.max_code
        over = (c > hi) | (c < lo)
        if self.overflow == "WRAP":
            span = np.int64(1) << np.int64(self.width)
            w = np.mod(c - lo, span) + lo if self.signed else np.mod(c, span)
            return w.astype(np.int64)
        if self.overflow == "SAT":
            return np.clip(c, lo, hi).astype(np.int64)
        if self.overflow == "SAT_ZERO":
            return np.where(over, 0, c).astype(np.int64)
        # SAT_SYM: the symmetric range [-max, max] for signed types; ap_fixed maps the most negative
        # code to -max even when the value is exactly representable
        return np.clip(c, -hi if self.signed else lo, hi).astype(np.int64)


def _quantize(c: np.ndarray, s: int, mode: str) -> np.ndarray:
    """Drops ``s`` > 0 fractional bits of codes ``c`` with an ap_fixed quantization mode."""
    s64 = np.int64(s)
    floor = c >> s64                                     # arithmetic shift: toward -inf
    rem = c - (floor << s64)                             # in [0, 2**s)
    if mode == "TRN":
        return floor
    if mode == "TRN_ZERO":
        return np.where((c < 0) & (rem != 0), floor + 1, floor)
    half = np.int64(1) << np.int64(s - 1)
    above, tie = rem > half, rem == half
    up = above | (tie & {
        "RND": np.ones_like(c, dtype=bool),
        "RND_ZERO": c < 0,
        "RND_MIN_INF": np.zeros_like(c, dtype=bool),
        "RND_INF": c >= 0,
        "RND_CONV": (floor & 1) == 1,
    }[mode])
    return floor + up.astype(np.int64)


def require_exact(bits: int, what: str) -> None:
    """Refuses intermediate values the int64 model cannot hold exactly."""
    if bits > MAX_BITS:
        raise BackendError(f"{what} needs {bits} bits, more than the {MAX_BITS} this compiler models exactly; "
                           f"use narrower types (a smaller --fpga-bits or per-layer width)")


def integer_bits_for(max_abs: float, signed: bool = True) -> int:
    """Integer bits (sign included when signed) that hold values up to ``max_abs`` without overflow."""
    if not np.isfinite(max_abs):
        raise BackendError("calibration saw an infinite value; fixed-point types cannot hold it")
    if max_abs <= 0:
        return 1 if signed else 0
    bits = math.floor(math.log2(max_abs)) + 1        # 2**(bits-1) <= max_abs < 2**bits
    return bits + (1 if signed else 0)


def exact_sum_type(a: FixedType, b_frac: int, int_bits: int, terms: int = 1) -> FixedType:
    """An accumulator type that holds ``terms`` products of magnitude < 2**int_bits exactly."""
    frac = max(a.frac, b_frac)
    integer = int_bits + max(0, math.ceil(math.log2(max(terms, 1))))
    width = integer + frac
    require_exact(width, "an exact accumulator")
    return FixedType(width, integer, True, "TRN", "WRAP")
