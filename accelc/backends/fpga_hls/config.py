"""FPGA compile options, calibration and the choice of every value's fixed-point type.

Types come from calibration: the float model of the design runs on calibration samples, each value's
largest magnitude sets its integer bits (sign included) and the rest of ``bits`` is fraction. Layers
then pick their internal types (weights, exact accumulators, tables) in execution order, so each sees
its inputs' final types. Users override any layer's types or reuse factor by layer name (or by the name
of the IR node it covers).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ...errors import AccelcError, BackendError
from .codegen import IO_STYLES, Design, float_eval_design
from .fixed import OVERFLOW, ROUNDING, FixedType
from .layers.base import Precision
from .mapping import Port

LAYER_KEYS = ("result", "weight", "bias", "accum", "table", "reuse_factor")
ACCUMULATING = ("dense", "conv")       # layers whose sums take an "accum" type
DEFAULT_CALIBRATION_SAMPLES = 512
CALIBRATION_SEED = 1


@dataclass
class FpgaOptions:
    bits: int = 16                     # total width of activations and weights (--fpga-bits)
    io: str = "io_parallel"            # io_parallel | io_stream
    reuse_factor: int = 1              # multiplies sharing one DSP, every layer unless overridden
    rounding: str = "RND"              # quantization mode of activations (weights: RND_CONV)
    overflow: str = "SAT"              # overflow mode of activations and weights
    clock_mhz: float | None = None     # None: the target's default clock
    accum: str | None = None           # accumulator type of every dense/conv layer; None: exact
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: Mapping[str, np.ndarray] | None = None
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES

    @classmethod
    def parse(cls, value: "FpgaOptions | Mapping[str, Any] | None") -> "FpgaOptions":
        if value is None:
            return cls()
        if isinstance(value, FpgaOptions):
            opts = value
        else:
            if not isinstance(value, Mapping):
                raise AccelcError(f"fpga options must be a dict, got {type(value).__name__}")
            known = set(cls.__dataclass_fields__)
            unknown = [k for k in value if k not in known]
            if unknown:
                raise AccelcError(f"unknown fpga option '{unknown[0]}'; known: {', '.join(sorted(known))}")
            opts = cls(**dict(value))
        opts.validate()
        return opts

    def validate(self) -> None:
        if not isinstance(self.bits, int) or not 4 <= self.bits <= 32:
            raise AccelcError(f"fpga bits must be an integer from 4 to 32, got {self.bits!r}")
        if self.io not in IO_STYLES:
            raise AccelcError(f"fpga io must be io_parallel or io_stream, got {self.io!r}")
        if not isinstance(self.reuse_factor, int) or self.reuse_factor < 1:
            raise AccelcError(f"reuse factor must be a positive integer, got {self.reuse_factor!r}")
        if self.rounding not in ROUNDING:
            raise AccelcError(f"rounding must be one of {', '.join(ROUNDING)}, got {self.rounding!r}")
        if self.overflow not in OVERFLOW:
            raise AccelcError(f"overflow must be one of {', '.join(OVERFLOW)}, got {self.overflow!r}")
        if self.clock_mhz is not None and not (isinstance(self.clock_mhz, (int, float)) and 1 <= self.clock_mhz <= 1000):
            raise AccelcError(f"clock must be between 1 and 1000 MHz, got {self.clock_mhz!r}")
        if self.accum is not None:
            parse_type(self.accum, self.rounding, self.overflow)
        for layer, settings in self.layers.items():
            if not isinstance(settings, Mapping):
                raise AccelcError(f"fpga settings of layer '{layer}' must be a dict such as "
                                  f"{{'result': 'fixed<16,6>', 'reuse_factor': 4}}")
            for k in settings:
                if k not in LAYER_KEYS:
                    raise AccelcError(f"unknown setting '{k}' for layer '{layer}'; known: {', '.join(LAYER_KEYS)}")

    def describe(self) -> dict[str, Any]:
        return {"bits": self.bits, "io": self.io, "reuse_factor": self.reuse_factor, "rounding": self.rounding,
                "overflow": self.overflow, "clock_mhz": self.clock_mhz, "accum": self.accum or "exact",
                "layers": self.layers,
                "calibration": "user data" if self.calibration is not None else
                f"{self.calibration_samples} seeded standard-normal samples"}


_TYPE_RE = re.compile(r"^\s*(ap_)?(u?)fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,\s*(?:AP_)?([A-Z_]+)\s*)?"
                      r"(?:,\s*(?:AP_)?([A-Z_]+)\s*)?>\s*$")


def parse_type(text: str | FixedType, default_rounding: str = "RND", default_overflow: str = "SAT") -> FixedType:
    """``"fixed<16,6>"``, ``"ap_fixed<18,8,AP_RND,AP_SAT>"`` or ``"ufixed<8,0>"`` -> FixedType."""
    if isinstance(text, FixedType):
        return text
    m = _TYPE_RE.match(str(text))
    if not m:
        raise AccelcError(f"bad fixed-point type '{text}'; write it as fixed<W,I> or ap_fixed<W,I,AP_RND,AP_SAT> "
                          f"(ufixed/ap_ufixed for unsigned)")
    try:
        return FixedType(int(m.group(3)), int(m.group(4)), not m.group(2), m.group(5) or default_rounding,
                         m.group(6) or default_overflow)
    except BackendError as e:
        raise AccelcError(f"bad fixed-point type '{text}': {e}") from None


def resolve_overrides(design: Design, opts: FpgaOptions) -> dict[str, dict[str, Any]]:
    """User settings keyed by layer name; a setting keyed by an IR node name applies to every layer
    made from that node. Unknown names are an error listing the layer names."""
    by_node: dict[str, list[str]] = {}
    for layer in design.layers:
        for n in layer.nodes:
            by_node.setdefault(n, []).append(layer.name)
    names = {layer.name for layer in design.layers}
    out: dict[str, dict[str, Any]] = {}
    for key, settings in opts.layers.items():
        parsed = {k: (v if k == "reuse_factor" else parse_type(v, opts.rounding, opts.overflow))
                  for k, v in settings.items()}
        if "reuse_factor" in parsed and (not isinstance(parsed["reuse_factor"], int) or parsed["reuse_factor"] < 1):
            raise AccelcError(f"reuse_factor of layer '{key}' must be a positive integer")
        targets = [key] if key in names else by_node.get(key, [])
        if not targets:
            raise AccelcError(f"fpga settings name layer '{key}', which the design does not have; layers: "
                              f"{', '.join(sorted(names))} (or the names of the ONNX nodes they come from)")
        for t in targets:
            out.setdefault(t, {}).update(parsed)
    if opts.accum is not None:       # the global accumulator, where a layer has none of its own
        acc = parse_type(opts.accum, "TRN", "WRAP")
        for layer in design.layers:
            if layer.kind in ACCUMULATING and "accum" not in out.get(layer.name, {}):
                out.setdefault(layer.name, {})["accum"] = acc
    return out


def calibration_inputs(ports: list[Port], opts: FpgaOptions) -> tuple[list[np.ndarray], str]:
    """Calibration samples in design layout (batch-first, channels-last), and where they came from."""
    arrays = []
    if opts.calibration is not None:
        data = dict(opts.calibration)
        extra = [k for k in data if k not in {p.ir_name for p in ports}]
        if extra:
            raise AccelcError(f"calibration data names '{extra[0]}', not an input of the model; inputs: "
                              f"{', '.join(p.ir_name for p in ports)}")
        for p in ports:
            if p.ir_name not in data:
                raise AccelcError(f"calibration data lacks input '{p.ir_name}'")
            a = np.asarray(data[p.ir_name], dtype=np.float64)
            if a.shape[1:] != tuple(p.ir_shape[1:]):
                raise AccelcError(f"calibration data for '{p.ir_name}' has shape {a.shape}; expected "
                                  f"(samples, {', '.join(map(str, p.ir_shape[1:]))})")
            if not np.isfinite(a).all():
                raise AccelcError(f"calibration data for '{p.ir_name}' holds NaN or infinity")
            arrays.append(to_design_layout(a, p))
        return arrays, f"user data ({arrays[0].shape[0] if arrays else 0} samples)"
    rng = np.random.default_rng(CALIBRATION_SEED)
    for p in ports:
        a = rng.standard_normal((opts.calibration_samples, *p.ir_shape[1:]))
        arrays.append(to_design_layout(a, p))
    return arrays, f"{opts.calibration_samples} seeded standard-normal samples (pass calibration data for real ranges)"


def to_design_layout(a: np.ndarray, p: Port) -> np.ndarray:
    if p.perm is not None:
        a = np.transpose(a, (0, *(i + 1 for i in p.perm)))
    return np.ascontiguousarray(a.reshape(a.shape[0], *p.value.shape))


def from_design_layout(a: np.ndarray, p: Port) -> np.ndarray:
    """Design-layout samples -> the model's layout (inverse of ``to_design_layout``)."""
    if p.perm is not None:
        inner = tuple(p.ir_shape[1 + i] for i in p.perm)
        a = a.reshape(a.shape[0], *inner)
        inv = np.argsort(p.perm)
        a = np.transpose(a, (0, *(int(i) + 1 for i in inv)))
    return a.reshape(a.shape[0], *p.ir_shape[1:])


def assign_types(design: Design, opts: FpgaOptions, calib: list[np.ndarray]) -> list[np.ndarray]:
    """Calibrates ranges and sets the type of every value and the internals of every layer. Returns the
    float model's outputs on ``calib`` (the reference the fixed model's error is measured against)."""
    overrides = resolve_overrides(design, opts)
    env = float_eval_design(design, calib, keep=True)
    ranges = {k: float(np.max(np.abs(v))) if v.size else 0.0 for k, v in env.items()}
    p = Precision(bits=opts.bits, rounding=opts.rounding, overflow=opts.overflow, ranges=ranges, overrides=overrides)
    for v in design.inputs:
        v.type = overrides.get(v.name, {}).get("result") or p.for_value(v)
    for layer in design.layers:
        layer.reuse_factor = int(overrides.get(layer.name, {}).get("reuse_factor", opts.reuse_factor))
        layer.choose_types(p)
        if layer.output.type is None:
            raise BackendError(f"layer '{layer.name}' ({layer.kind}) chose no output type")
    return [env[v.name] for v in design.outputs]
