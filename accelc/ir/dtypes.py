"""The element types of the IR and their NumPy equivalents.

bfloat16 and the float8 types come from ``ml_dtypes`` (the NumPy extension types that JAX and ONNX use),
so every IR dtype has a real NumPy dtype and constants of any dtype are plain ``np.ndarray``.
"""
from __future__ import annotations

import enum

import ml_dtypes
import numpy as np


class DType(enum.Enum):
    float32 = "f32"
    float16 = "f16"
    bfloat16 = "bf16"
    float8_e4m3fn = "f8e4m3"
    float8_e5m2 = "f8e5m2"
    int4 = "i4"
    uint4 = "u4"
    int8 = "i8"
    uint8 = "u8"
    int16 = "i16"
    int32 = "i32"
    int64 = "i64"
    bool = "bool"
    float64 = "f64"

    @property
    def short(self) -> str:
        """The name used in printed IR, e.g. ``f32``."""
        return self.value

    @property
    def np(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return self in _INTS

    @classmethod
    def from_numpy(cls, dtype) -> "DType":
        dt = np.dtype(dtype)
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise TypeError(f"NumPy dtype {dt} has no accelc equivalent") from None

    @classmethod
    def parse(cls, text: str) -> "DType":
        """Accepts ``f32``/``float32``/``fp32``/``bf16``... as written by users and by the printer."""
        key = text.strip().lower()
        key = _ALIASES.get(key, key)
        for d in cls:
            if key in (d.value, d.name):
                return d
        raise ValueError(f"unknown dtype '{text}'; expected one of {', '.join(d.value for d in cls)}")


_TO_NUMPY = {
    DType.float32: np.dtype(np.float32),
    DType.float16: np.dtype(np.float16),
    DType.bfloat16: np.dtype(ml_dtypes.bfloat16),
    DType.float8_e4m3fn: np.dtype(ml_dtypes.float8_e4m3fn),
    DType.float8_e5m2: np.dtype(ml_dtypes.float8_e5m2),
    DType.int4: np.dtype(ml_dtypes.int4),
    DType.uint4: np.dtype(ml_dtypes.uint4),
    DType.int8: np.dtype(np.int8),
    DType.uint8: np.dtype(np.uint8),
    DType.int16: np.dtype(np.int16),
    DType.int32: np.dtype(np.int32),
    DType.int64: np.dtype(np.int64),
    DType.bool: np.dtype(np.bool_),
    DType.float64: np.dtype(np.float64),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}
_FLOATS = {DType.float32, DType.float16, DType.bfloat16, DType.float8_e4m3fn, DType.float8_e5m2, DType.float64}
_INTS = {DType.int4, DType.uint4, DType.int8, DType.uint8, DType.int16, DType.int32, DType.int64}
_ALIASES = {"fp32": "f32", "fp16": "f16", "half": "f16", "float": "f32", "double": "f64", "fp64": "f64",
            "int": "i64", "long": "i64", "bool_": "bool"}
