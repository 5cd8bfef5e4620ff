"""Linear algebra: MatMul (NumPy matmul semantics) and Gemm (2-D, optional transposes and bias)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ShapeError
from ..registry import OpDef, register
from ..types import Dim, TensorType
from .shape_inference import broadcast_shapes


@dataclass(frozen=True)
class GemmAttrs:
    """``y = alpha * op(a) @ op(b) + beta * c`` where op transposes when ``trans_a``/``trans_b``."""
    alpha: float = 1.0
    beta: float = 1.0
    trans_a: bool = False
    trans_b: bool = False

    def __post_init__(self):
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"{name} must be a number, got {v!r}")
        if not isinstance(self.trans_a, bool) or not isinstance(self.trans_b, bool):
            raise ValueError("trans_a and trans_b must be bools")


def matmul_shape(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """NumPy matmul shape rule: 1-D operands are promoted and the promoted axis dropped; batch dims
    broadcast."""
    if not a or not b:
        raise ShapeError("MatMul operands must have rank >= 1 (scalars are not matrices)")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    k_a, k_b = a2[-1], b2[-2]
    if isinstance(k_a, int) and isinstance(k_b, int) and k_a != k_b:
        raise ShapeError(f"MatMul contraction mismatch: {list(a)} @ {list(b)} ({k_a} vs {k_b})")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) != 1 else out[:-1]
    return tuple(out)


def matmul_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul: float products in the operand dtype (fp32 accumulates in fp32 like the backends),
    integer products wrap in the operand dtype as ONNX integer MatMul does."""
    return np.matmul(a, b)


def _matmul_infer(types, attrs, consts):
    a, b = types
    if a.dtype != b.dtype:
        raise ShapeError(f"MatMul needs operands of one dtype, got {a.dtype.short} and {b.dtype.short}")
    return [TensorType(a.dtype, matmul_shape(a.shape, b.shape))]


register(OpDef("MatMul", _matmul_infer, lambda xs, a: [matmul_reference(xs[0], xs[1])], min_inputs=2,
               max_inputs=2, doc="matrix product with NumPy matmul semantics (1-D promotion, batch broadcast)",
               tags=frozenset({"linalg"})))


def _gemm_infer(types, attrs: GemmAttrs, consts):
    a, b = types[0], types[1]
    c = types[2] if len(types) > 2 else None
    if a.rank != 2 or b.rank != 2:
        raise ShapeError(f"Gemm needs 2-D A and B, got {a} and {b}; use MatMul for batched products")
    if a.dtype != b.dtype:
        raise ShapeError(f"Gemm needs A and B of one dtype, got {a.dtype.short} and {b.dtype.short}")
    m, k = (a.shape[1], a.shape[0]) if attrs.trans_a else a.shape
    k2, n = (b.shape[1], b.shape[0]) if attrs.trans_b else b.shape
    if isinstance(k, int) and isinstance(k2, int) and k != k2:
        raise ShapeError(f"Gemm contraction mismatch: op(A) is {m}x{k}, op(B) is {k2}x{n}")
    if c is not None:
        if c.rank > 2 or broadcast_shapes(c.shape, (m, n)) != (m, n):
            raise ShapeError(f"Gemm bias C {c} does not broadcast to the {m}x{n} result")
    return [TensorType(a.dtype, (m, n))]


def _gemm_reference(xs, attrs: GemmAttrs):
    a, b = xs[0], xs[1]
    c = xs[2] if len(xs) > 2 else None
    a = a.T if attrs.trans_a else a
    b = b.T if attrs.trans_b else b
    y = np.matmul(a, b)
    if attrs.alpha != 1.0:
        y = y * np.asarray(attrs.alpha, dtype=y.dtype)
    if c is not None and attrs.beta != 0.0:
        y = y + (c * np.asarray(attrs.beta, dtype=c.dtype) if attrs.beta != 1.0 else c)
    return [y.astype(a.dtype, copy=False)]


register(OpDef("Gemm", _gemm_infer, _gemm_reference, attrs=GemmAttrs, min_inputs=2, max_inputs=3,
               doc="alpha * op(A) @ op(B) + beta * C for 2-D A, B", tags=frozenset({"linalg"})))
