"""Tensor types: dtype + shape, plus optional quantization parameters and sparse layout.

A dimension is an ``int`` (known) or a ``str`` (symbolic, e.g. ``"batch"``). Backends need every
dimension known; the reference interpreter does not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .dtypes import DType

Dim = Union[int, str]


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of a tensor: real = scale * (q - zero_point).

    ``axis`` is None for per-tensor, else the channel axis; ``group_size`` splits that axis into groups
    (int4 weights). Scales and zero points are tuples so that the type stays hashable.
    """
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None
    group_size: int | None = None


@dataclass(frozen=True)
class SparseLayout:
    """How a sparse weight is stored: ``kind`` is "2:4", "block" or "unstructured"."""
    kind: str
    block: tuple[int, ...] = ()


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Dim, ...]
    quant: QuantParams | None = field(default=None)
    sparsity: SparseLayout | None = field(default=None)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int:
        if not self.is_static:
            raise ValueError(f"type {self} has symbolic dimensions")
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape), self.quant, self.sparsity)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape, None, None)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        text = f"{self.dtype.short}[{dims}]"
        if self.quant is not None:
            q = self.quant
            text += f"{{q:axis={q.axis},group={q.group_size},n={len(q.scale)}}}"
        if self.sparsity is not None:
            text += f"{{sparse:{self.sparsity.kind}}}"
        return text


def format_shape(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"
