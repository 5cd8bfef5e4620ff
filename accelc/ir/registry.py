"""The op registry: one ``OpDef`` per op with its attributes, type inference and NumPy reference.

Ops register themselves at import of ``accelc.ir.ops``; the registry is filled once and never changed
afterwards, so tests need no resetting.

* ``attrs`` is a frozen dataclass type; its ``__post_init__`` checks the values (raising ``ValueError``
  with a message naming the attribute), and every field is hashable so that nodes compare structurally.
* ``infer(in_types, attrs, consts)`` returns the output ``TensorType``s. ``consts[i]`` is the NumPy value
  of input ``i`` when it is a constant, else None (Reshape, Slice... need it); ``in_types[i]`` is None for
  an omitted optional input.
* ``reference(inputs, attrs)`` computes the outputs with NumPy. Low-precision float inputs (f16, bf16,
  fp8) arrive as float32 and the interpreter rounds the results to the declared output dtype, so a
  reference never has to care about ml_dtypes arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ShapeError, VerificationError
from .types import TensorType


@dataclass(frozen=True)
class NoAttrs:
    pass


InferFn = Callable[[Sequence[TensorType | None], Any, Sequence[np.ndarray | None]], list[TensorType]]
ReferenceFn = Callable[[Sequence[np.ndarray | None], Any], Sequence[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: InferFn
    reference: ReferenceFn
    attrs: type = NoAttrs
    min_inputs: int = 1
    max_inputs: int | None = 1          # None: variadic
    doc: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)   # e.g. {"elementwise", "unary"}
    # The interpreter widens f16/bf16/fp8 inputs to fp32 before calling ``reference``, unless this is
    # set: a composite op (FusedElementwise) needs its inputs' real dtypes to round every inner step as
    # the unfused graph would, and widens them itself.
    takes_low_precision: bool = False


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise RuntimeError(f"op '{opdef.name}' is registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VerificationError(f"unknown IR op '{name}'") from None


def has_op(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return dict(_REGISTRY)


def _ensure_loaded() -> None:
    from . import ops  # noqa: F401  (importing registers every op)


def check_arity(opdef: OpDef, n_inputs: int) -> None:
    if n_inputs < opdef.min_inputs or (opdef.max_inputs is not None and n_inputs > opdef.max_inputs):
        hi = "any" if opdef.max_inputs is None else opdef.max_inputs
        raise VerificationError(f"{opdef.name} takes {opdef.min_inputs}..{hi} inputs, got {n_inputs}")


def infer_types(opdef: OpDef, in_types: Sequence[TensorType | None], attrs: Any,
                consts: Sequence[np.ndarray | None]) -> list[TensorType]:
    check_arity(opdef, len(in_types))
    if not isinstance(attrs, opdef.attrs):
        raise VerificationError(f"{opdef.name} expects attrs of type {opdef.attrs.__name__}, "
                                f"got {type(attrs).__name__}")
    try:
        out = opdef.infer(in_types, attrs, consts)
    except (ShapeError, VerificationError):
        raise
    except (ValueError, IndexError, TypeError) as e:
        shapes = ", ".join(str(t) for t in in_types)
        raise ShapeError(f"{opdef.name}: cannot infer output types from inputs ({shapes}): {e}") from e
    return list(out)
