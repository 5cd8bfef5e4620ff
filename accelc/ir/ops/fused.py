"""Fused ops made by passes (never by frontends): FusedGemm, FusedConv, FusedElementwise.

Their references are built from the unfused ops' references so that a fusion pass is checked against
the same oracle as the graph it rewrote:

* ``FusedGemm(a, b, bias?, residual?)``: ``act(alpha * op(a) @ op(b) + beta * bias + residual)`` with
  MatMul batch broadcasting.
* ``FusedConv(x, w, bias?, residual?)``: ``act(conv(x, w) + bias[c] + residual)``. Its attrs hold the
  Conv attrs by composition (``conv: ConvAttrs``) rather than inheritance, so a pass builds one from a
  Conv node with ``FusedConvAttrs(conv=node.attrs, ...)`` and a backend lowers it with the same Conv
  code path, and a new Conv field can never be silently dropped by a fusion.
* ``FusedElementwise(*inputs)``: a chain of elementwise ``Step``s over a register file.

``compute`` is the dtype the products are formed in (float32, bfloat16 or float16); with a 16-bit type
both operands are rounded to it first (what AMX / tensor cores do) and accumulation stays fp32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ...errors import ShapeError
from ..dtypes import DType
from ..registry import OpDef, get_op, infer_types, register
from ..types import TensorType
from .conv import ConvAttrs, conv_infer, conv_reference
from .elementwise import ELEMENTWISE_OPS, erf
from .linalg import matmul_reference, matmul_shape
from .shape_inference import broadcast_shapes

ACTIVATION_KINDS = ("none", "relu", "leaky_relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "silu", "clip")
COMPUTE_DTYPES = (DType.float32, DType.bfloat16, DType.float16)


@dataclass(frozen=True)
class Activation:
    """An epilogue activation. ``clip`` uses alpha=min and beta=max; ``leaky_relu`` uses alpha."""
    kind: str = "none"
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self):
        if self.kind not in ACTIVATION_KINDS:
            raise ValueError(f"activation kind must be one of {', '.join(ACTIVATION_KINDS)}, got '{self.kind}'")
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"activation {name} must be a number, got {v!r}")
        if self.kind == "clip" and self.alpha > self.beta:
            raise ValueError(f"clip activation needs alpha (min) <= beta (max), got {self.alpha} > {self.beta}")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The reference: same formulas as the elementwise ops, computed in float64, cast back."""
        k = self.kind
        if k == "none":
            return x
        x64 = x.astype(np.float64)
        with np.errstate(over="ignore"):
            if k == "relu":
                y = np.maximum(x64, 0.0)
            elif k == "leaky_relu":
                y = np.where(x64 >= 0, x64, x64 * self.alpha)
            elif k == "gelu":
                y = 0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))
            elif k == "gelu_tanh":
                y = 0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
            elif k == "sigmoid":
                y = 1.0 / (1.0 + np.exp(-x64))
            elif k == "tanh":
                y = np.tanh(x64)
            elif k == "silu":
                y = x64 / (1.0 + np.exp(-x64))
            else:  # clip
                y = np.clip(x64, self.alpha, self.beta)
        return y.astype(x.dtype)


def _check_compute(compute) -> None:
    if compute not in COMPUTE_DTYPES:
        raise ValueError(f"compute must be DType.float32, DType.bfloat16 or DType.float16, got {compute!r}")


@dataclass(frozen=True)
class FusedGemmAttrs:
    trans_a: bool = False
    trans_b: bool = False
    alpha: float = 1.0
    beta: float = 1.0
    activation: Activation = Activation()
    compute: DType = DType.float32

    def __post_init__(self):
        if not isinstance(self.trans_a, bool) or not isinstance(self.trans_b, bool):
            raise ValueError("trans_a and trans_b must be bools")
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"{name} must be a number, got {v!r}")
        if not isinstance(self.activation, Activation):
            raise ValueError(f"activation must be an Activation, got {self.activation!r}")
        _check_compute(self.compute)


@dataclass(frozen=True)
class FusedConvAttrs:
    conv: ConvAttrs = ConvAttrs()
    activation: Activation = Activation()
    compute: DType = DType.float32

    def __post_init__(self):
        if not isinstance(self.conv, ConvAttrs):
            raise ValueError(f"conv must be a ConvAttrs, got {self.conv!r}")
        if not isinstance(self.activation, Activation):
            raise ValueError(f"activation must be an Activation, got {self.activation!r}")
        _check_compute(self.compute)


@dataclass(frozen=True)
class Step:
    """One elementwise op applied to registers ``args``; its result becomes the next register."""
    op: str
    args: tuple[int, ...]
    attrs: Any = None

    def __post_init__(self):
        if self.op not in ELEMENTWISE_OPS:
            raise ValueError(f"Step op must be an elementwise IR op, got '{self.op}'")
        if not isinstance(self.args, tuple) or not self.args or not all(
                isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in self.args):
            raise ValueError(f"Step args must be a non-empty tuple of register indices >= 0, got {self.args!r}")
        hash(self.attrs)  # raises TypeError for unhashable attrs: nodes must compare structurally


@dataclass(frozen=True)
class FusedElementwiseAttrs:
    steps: tuple[Step, ...] = ()

    def __post_init__(self):
        if not isinstance(self.steps, tuple) or not self.steps:
            raise ValueError("steps must be a non-empty tuple of Step")
        for s in self.steps:
            if not isinstance(s, Step):
                raise ValueError(f"steps must hold Step objects, got {s!r}")


def round_to(x: np.ndarray, compute: DType) -> np.ndarray:
    """Operands of a 16-bit product are rounded to that type (round-to-nearest-even; fp16 overflows to
    inf beyond 65504, as on the hardware) and widened back to fp32."""
    if compute == DType.bfloat16:
        return x.astype(ml_dtypes.bfloat16).astype(np.float32)
    if compute == DType.float16:
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)
    return x


def _epilogue_check(op: str, out: TensorType, bias: TensorType | None, residual: TensorType | None,
                    bias_shape) -> None:
    if bias is not None and broadcast_shapes(bias_shape, out.shape) != tuple(out.shape):
        raise ShapeError(f"{op} bias {bias} does not broadcast to the result {out}")
    if residual is not None and (residual.dtype != out.dtype or
                                 broadcast_shapes(residual.shape, out.shape) != tuple(out.shape)):
        raise ShapeError(f"{op} residual {residual} must have the result's dtype and broadcast to {out}")


def _optional(xs, i):
    return xs[i] if len(xs) > i else None


# ---- FusedGemm ----------------------------------------------------------------------------------
def _operand_dtypes_ok(a: DType, b: DType, compute: DType) -> bool:
    """Operands share a float dtype, except that a bf16 (fp16) product may take a weight stored in bf16
    (fp16) next to fp32 activations: the activations are rounded to that type anyway, and storing the
    weight in it halves its memory traffic. The result keeps the activations' dtype."""
    if a.is_float and a == b:
        return True
    return compute in (DType.bfloat16, DType.float16) and {a, b} <= {DType.float32, compute}


def _fused_gemm_infer(types, attrs: FusedGemmAttrs, consts):
    a, b = types[0], types[1]
    if not _operand_dtypes_ok(a.dtype, b.dtype, attrs.compute):
        raise ShapeError(f"FusedGemm needs float operands of one dtype (or f32 and the compute dtype), "
                         f"got {a.dtype.short} and {b.dtype.short}")
    sa, sb = list(a.shape), list(b.shape)
    for s, t, name in ((sa, attrs.trans_a, "a"), (sb, attrs.trans_b, "b")):
        if t:
            if len(s) < 2:
                raise ShapeError(f"FusedGemm trans_{name} needs {name} of rank >= 2")
            s[-1], s[-2] = s[-2], s[-1]
    out = TensorType(a.dtype, matmul_shape(tuple(sa), tuple(sb)))
    bias, residual = _optional(types, 2), _optional(types, 3)
    _epilogue_check("FusedGemm", out, bias, residual, bias.shape if bias is not None else ())
    return [out]


def _fused_gemm_reference(xs, attrs: FusedGemmAttrs):
    a, b = xs[0], xs[1]
    bias, residual = _optional(xs, 2), _optional(xs, 3)
    a = np.swapaxes(a, -1, -2) if attrs.trans_a else a
    b = np.swapaxes(b, -1, -2) if attrs.trans_b else b
    y = matmul_reference(round_to(a, attrs.compute), round_to(b, attrs.compute)).astype(np.float32)
    y = y * np.float32(attrs.alpha) if attrs.alpha != 1.0 else y
    if bias is not None:
        y = y + np.float32(attrs.beta) * bias.astype(np.float32)
    if residual is not None:
        y = y + residual.astype(np.float32)
    return [attrs.activation.apply(y).astype(xs[0].dtype, copy=False)]


register(OpDef("FusedGemm", _fused_gemm_infer, _fused_gemm_reference, attrs=FusedGemmAttrs, min_inputs=2,
               max_inputs=4, doc="act(alpha * op(a) @ op(b) + beta * bias + residual), batch-broadcasting",
               tags=frozenset({"fused", "linalg"})))


# ---- FusedConv ----------------------------------------------------------------------------------
def _fused_conv_infer(types, attrs: FusedConvAttrs, consts):
    x, w = types[0], types[1]
    if not _operand_dtypes_ok(x.dtype, w.dtype, attrs.compute):
        raise ShapeError(f"FusedConv needs float operands of one dtype (or f32 and the compute dtype), "
                         f"got {x.dtype.short} and {w.dtype.short}")
    (out,) = conv_infer([x, w.with_dtype(x.dtype)], attrs.conv, consts[:2], op="FusedConv")
    bias, residual = _optional(types, 2), _optional(types, 3)
    if bias is not None and (bias.rank != 1 or (isinstance(bias.shape[0], int) and isinstance(out.shape[1], int)
                                                and bias.shape[0] != out.shape[1])):
        raise ShapeError(f"FusedConv bias must be 1-D with one value per output channel, got {bias}")
    _epilogue_check("FusedConv", out, None, residual, ())
    return [out]


def _fused_conv_reference(xs, attrs: FusedConvAttrs):
    x, w = xs[0], xs[1]
    bias, residual = _optional(xs, 2), _optional(xs, 3)
    y = conv_reference(round_to(x, attrs.compute), round_to(w, attrs.compute), None, attrs.conv)
    y = y.astype(np.float32, copy=False)
    if bias is not None:
        y = y + bias.astype(np.float32).reshape((1, -1) + (1,) * (x.ndim - 2))
    if residual is not None:
        y = y + residual.astype(np.float32)
    return [attrs.activation.apply(y).astype(x.dtype, copy=False)]


register(OpDef("FusedConv", _fused_conv_infer, _fused_conv_reference, attrs=FusedConvAttrs, min_inputs=2,
               max_inputs=4, doc="act(conv(x, w) + bias[c] + residual)", tags=frozenset({"fused", "conv"})))


# ---- FusedElementwise ---------------------------------------------------------------------------
def _step_attrs(step: Step):
    return step.attrs if step.attrs is not None else get_op(step.op).attrs()


def _register_types(types, attrs: FusedElementwiseAttrs) -> list[TensorType]:
    """Runs each step's own inference over the register file; returns every register's type."""
    regs = list(types)
    if any(t is None for t in regs):
        raise ShapeError("FusedElementwise inputs cannot be omitted")
    for n, step in enumerate(attrs.steps):
        if max(step.args) >= len(regs):
            raise ShapeError(f"FusedElementwise step {n} ({step.op}) reads register {max(step.args)}, "
                             f"but only {len(regs)} exist at that point")
        out = infer_types(get_op(step.op), [regs[i] for i in step.args], _step_attrs(step),
                          [None] * len(step.args))
        if len(out) != 1:
            raise ShapeError(f"FusedElementwise step {n} ({step.op}) must produce one value")
        regs.append(out[0])
    return regs


def _fused_elementwise_infer(types, attrs: FusedElementwiseAttrs, consts):
    return [_register_types(types, attrs)[-1]]


_LOW_FLOATS = {DType.float16, DType.bfloat16, DType.float8_e4m3fn, DType.float8_e5m2}


def _fused_elementwise_reference(xs, attrs: FusedElementwiseAttrs):
    """Composes the steps' references. Like the interpreter, every intermediate is rounded to its inferred
    dtype (so a bf16 chain rounds after each step) and low-precision floats are computed in fp32."""
    in_types = [TensorType(DType.from_numpy(x.dtype), tuple(x.shape)) for x in xs]
    types = _register_types(in_types, attrs)
    regs = [x.astype(np.float32) if t.dtype in _LOW_FLOATS else x for x, t in zip(xs, in_types)]
    for n, step in enumerate(attrs.steps):
        args = [regs[i] for i in step.args]
        (y,) = get_op(step.op).reference(args, _step_attrs(step))
        declared = types[len(xs) + n].dtype
        y = np.asarray(y).astype(declared.np, copy=False)
        if declared in _LOW_FLOATS:
            y = y.astype(np.float32)
        regs.append(y)
    return [regs[-1]]


register(OpDef("FusedElementwise", _fused_elementwise_infer, _fused_elementwise_reference,
               attrs=FusedElementwiseAttrs, min_inputs=1, max_inputs=None,
               doc="a chain of elementwise steps over a register file; the last register is the result",
               tags=frozenset({"fused", "elementwise"}), takes_low_precision=True))
