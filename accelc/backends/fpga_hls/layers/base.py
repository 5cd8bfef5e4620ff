"""What every FPGA layer provides: float semantics, type choice, the exact fixed-point model, HLS C++,
and a resource/latency estimate.

Conventions (every layer and the driver follow them):

* A ``Value`` is one per-sample tensor: the batch dimension is removed (an FPGA design processes one
  sample per call; the C-simulation loops over the batch). Conv tensors are channels-last:
  ``(H, W, C)`` for 2-D, ``(L, C)`` for 1-D; token tensors ``(S, D)``. The driver transposes the
  model's NCHW inputs and permutes the weights that follow a Flatten.
* Every value has a ``FixedType`` after type selection. The driver declares ``typedef <type> <cname>_t;``
  for every value before any layer's declarations, so a layer's C++ names ``x_vt``-style types of its
  inputs and output by ``Value.ctype``.
* ``io_parallel``: a value is a flat C array ``<cname>_t <cname>[size]`` (row-major per-sample shape).
  ``io_stream``: a value is ``hls::stream<accelc_hls::packet<<cname>_t, P>>`` where ``P`` is the last
  dimension and the stream carries ``size / P`` packets in row-major order (one pixel or token each).
  ``hls_src/accelc_hls_common.h`` defines ``packet`` and the adapters ``stream_to_array`` /
  ``array_to_stream``, so a layer without a native streaming kernel can read its inputs into arrays,
  run its parallel kernel and write its output back (still one DATAFLOW process).
* ``fx_eval`` takes and returns ``np.int64`` codes with a leading batch dimension, and must equal the
  generated C++ bit for bit. Sums are exact unless the layer's accumulator type says otherwise (then
  the model casts after every addition, in the C++ loop order). Tables (exp, sigmoid, ...) are
  computed once in Python and emitted as constants, so both sides read the same numbers.
* Weights and tables are emitted as ``static const`` initialised arrays in the layer's declarations:
  the code synthesis sees is the code C-simulation runs.
* Names: ``Layer.name`` is a C identifier unique in the design; a layer prefixes every symbol it
  declares with it (``<name>_w``, ``<name>_acc_t``...).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from ..fixed import FixedType, integer_bits_for


def c_identifier(name: str) -> str:
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if not ident or ident[0].isdigit():
        ident = "v_" + ident
    return ident


@dataclass
class Value:
    name: str                          # C identifier (unique in the design)
    shape: tuple[int, ...]             # per-sample shape, batch removed
    type: FixedType | None = None
    source: str = ""                   # IR value it stands for (for reports)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def packet(self) -> int:
        """Elements per stream packet in io_stream: the last dimension."""
        return int(self.shape[-1]) if self.shape else 1

    @property
    def ctype(self) -> str:
        return f"{self.name}_vt"      # the suffix no layer uses for its own <name>_* symbols


@dataclass
class Estimate:
    """Post-synthesis-style figures for one layer (a model, not a synthesis report)."""
    dsp: int = 0
    bram_18k: int = 0
    lut: int = 0
    ff: int = 0
    latency: int = 0                   # cycles from first input to last output of one sample
    ii: int = 1                        # cycles between samples when pipelined

    def as_dict(self) -> dict[str, int]:
        return {"dsp": self.dsp, "bram_18k": self.bram_18k, "lut": self.lut, "ff": self.ff,
                "latency": self.latency, "ii": self.ii}


@dataclass
class Finding:
    """A static check's result: ``error`` stops the compile, ``warning`` is reported."""
    severity: str                      # "error" | "warning"
    layer: str
    message: str                       # names the problem and the fix


@dataclass
class Precision:
    """The type policy a layer applies in ``choose_types``.

    ``ranges`` maps a value's name to the largest magnitude calibration saw (float); ``overrides``
    maps layer names to user settings such as ``{"result": "fixed<18,8>", "weight": ..., "accum":
    ..., "reuse_factor": 4}`` (parsed to FixedType by the driver before layers see them).
    """
    bits: int = 16
    rounding: str = "RND"
    overflow: str = "SAT"
    ranges: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    weight_bits: int | None = None     # None: same as bits

    def for_range(self, max_abs: float, bits: int | None = None, signed: bool = True,
                  rounding: str | None = None, overflow: str | None = None) -> FixedType:
        """A ``bits``-wide type whose integer part holds ``max_abs``; the rest is fraction."""
        w = bits or self.bits
        integer = integer_bits_for(max_abs, signed)
        return FixedType(w, integer, signed, rounding or self.rounding, overflow or self.overflow)

    def for_value(self, v: Value, signed: bool = True) -> FixedType:
        return self.for_range(self.ranges.get(v.name, 1.0), signed=signed)

    def for_weights(self, w: np.ndarray, signed: bool = True) -> FixedType:
        """Weights: integer bits from the largest magnitude, rounded to nearest, saturating."""
        m = float(np.max(np.abs(w))) if w.size else 0.0
        return self.for_range(m, self.weight_bits or self.bits, signed, "RND_CONV", "SAT")

    def override(self, layer: str, key: str, default=None):
        return self.overrides.get(layer, {}).get(key, default)


class Layer:
    """One HLS layer. Subclasses set ``kind`` and implement the methods below."""
    kind: ClassVar[str] = ""
    headers: ClassVar[tuple[str, ...]] = ("accelc_hls_common.h",)

    def __init__(self, name: str, inputs: Sequence[Value], output: Value, nodes: Sequence[str] = (),
                 reuse_factor: int = 1):
        self.name = c_identifier(name)
        self.inputs = list(inputs)
        self.output = output
        self.nodes = list(nodes)       # IR nodes this layer covers
        self.reuse_factor = int(reuse_factor)

    # ---- semantics --------------------------------------------------------------------------------
    def float_eval(self, *xs: np.ndarray) -> np.ndarray:
        """The layer in float64 (batch-first arrays): calibration and the float-vs-fixed error use it."""
        raise NotImplementedError

    def choose_types(self, p: Precision) -> None:
        """Sets ``self.output.type`` (unless already set) and the layer's internal types and tables.
        Input types are set when this is called."""
        raise NotImplementedError

    def fx_eval(self, *codes: np.ndarray) -> np.ndarray:
        """The exact fixed-point model on int64 codes (batch-first)."""
        raise NotImplementedError

    # ---- code -------------------------------------------------------------------------------------
    def cpp_decls(self) -> str:
        """Namespace-level C++: typedefs, ``static const`` weights and tables, config structs."""
        return ""

    def cpp_call(self, io: str, ins: Sequence[str], out: str) -> str:
        """Statements in the top function computing ``out`` from ``ins`` (array or stream names)."""
        raise NotImplementedError

    # ---- cost and checks --------------------------------------------------------------------------
    def multiplies(self) -> int:
        """Multiplications per sample (the DSP budget divides this by the reuse factor)."""
        return 0

    def estimate(self, io: str = "io_parallel") -> Estimate:
        raise NotImplementedError

    def checks(self, io: str) -> list[Finding]:
        """Static checks (partition/unroll limits, table precision...). Empty when all is well."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "nodes": self.nodes, "reuse_factor": self.reuse_factor,
                "inputs": [v.name for v in self.inputs], "output": self.output.name,
                "shape": list(self.output.shape), "type": self.output.type.short() if self.output.type else None}


# Vitis HLS refuses to partition/unroll beyond this many elements/iterations.
MAX_PARTITION = 4096


def bram_18k_for(bits: int, depth: int) -> int:
    """BRAM18K blocks for a ``depth`` x ``bits`` memory (36x512, 18x1024, 9x2048, ... aspect ratios)."""
    if depth <= 0 or bits <= 0:
        return 0
    for width, words in ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)):
        if bits <= width:
            return math.ceil(depth / words)
    return math.ceil(bits / 36) * math.ceil(depth / 512)


def dsp_per_multiply(a_bits: int, b_bits: int) -> int:
    """DSP48E2 slices for one a x b product (27x18 signed per slice); tiny products go to LUTs."""
    if min(a_bits, b_bits) <= 4:
        return 0
    big, small = max(a_bits, b_bits), min(a_bits, b_bits)
    return math.ceil(big / 27) * math.ceil(small / 18)
