"""Reading tensors of other frameworks through DLPack, without copying them.

Any object with ``__dlpack__`` (PyTorch, CuPy, JAX, NumPy >= 1.22 tensors) hands over a capsule that
holds a ``DLManagedTensor`` (or, from producers that speak DLPack 1.x, a ``DLManagedTensorVersioned``).
``borrow`` reads it with ctypes into a ``Borrowed``: the data pointer, the device, the NumPy dtype, the
shape and the strides. The capsule stays unconsumed and referenced by the ``Borrowed``, so the memory
stays valid while the ``Borrowed`` lives and is released by the producer's own capsule destructor
afterwards (the protocol's rule for a capsule whose name is still ``dltensor``).

The struct layouts follow dlpack.h (DLPack 0.8 and 1.x); they are plain C and the same on every 64-bit
platform the runtime supports.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ..errors import InputMismatchError

# DLDeviceType values used here
CPU, CUDA, CUDA_HOST, CUDA_MANAGED = 1, 2, 3, 13
_DEVICE_NAMES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi",
                 10: "rocm", 11: "rocm_host", 13: "cuda_managed", 14: "oneapi"}
# DLDataTypeCode
_INT, _UINT, _FLOAT, _BFLOAT, _BOOL = 0, 1, 2, 4, 6
_FLAG_READ_ONLY = 1


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):             # DLManagedTensor (capsule name "dltensor")
    _fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _ManagedVersioned(ctypes.Structure):    # DLManagedTensorVersioned (capsule name "dltensor_versioned")
    _fields_ = [("version", _Version), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p),
                ("flags", ctypes.c_uint64), ("dl_tensor", _Tensor)]


_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


def _numpy_dtype(code: int, bits: int, lanes: int) -> np.dtype | None:
    if lanes != 1:
        return None
    if code == _FLOAT:
        return {16: np.dtype(np.float16), 32: np.dtype(np.float32), 64: np.dtype(np.float64)}.get(bits)
    if code == _BFLOAT and bits == 16:
        return np.dtype(ml_dtypes.bfloat16)
    if code == _INT:
        return {8: np.dtype(np.int8), 16: np.dtype(np.int16), 32: np.dtype(np.int32),
                64: np.dtype(np.int64)}.get(bits)
    if code == _UINT:
        return {8: np.dtype(np.uint8), 16: np.dtype(np.uint16), 32: np.dtype(np.uint32),
                64: np.dtype(np.uint64)}.get(bits)
    if code == _BOOL and bits == 8:
        return np.dtype(np.bool_)
    return None


def is_dlpack(obj: Any) -> bool:
    """Whether ``obj`` is a foreign tensor to read through DLPack (NumPy arrays are taken directly)."""
    return hasattr(obj, "__dlpack__") and not isinstance(obj, np.ndarray)


def device_of(obj: Any) -> tuple[int, int]:
    """(DLDeviceType, device id) of a DLPack object, asked without exporting it."""
    try:
        kind, index = obj.__dlpack_device__()
        return int(kind), int(index)
    except Exception:  # noqa: BLE001 (a producer without __dlpack_device__: say CPU, borrow() checks again)
        return CPU, 0


def device_name(kind: int, index: int) -> str:
    name = _DEVICE_NAMES.get(kind, f"device type {kind}")
    return name if kind == CPU else f"{name}:{index}"


@dataclass
class Borrowed:
    """One tensor read from a DLPack capsule; valid while this object (which holds the capsule) lives."""
    name: str                 # the port it is for, for messages
    capsule: Any
    data: int                 # address of the first element (byte_offset applied)
    device_type: int
    device_id: int
    dtype: np.dtype | None    # None: a DLPack dtype NumPy has no equivalent of
    dtype_text: str
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None   # in elements; None: compact row-major
    read_only: bool

    @property
    def device(self) -> str:
        return device_name(self.device_type, self.device_id)

    @property
    def contiguous(self) -> bool:
        if self.strides is None:
            return True
        expect = 1
        for dim, stride in zip(reversed(self.shape), reversed(self.strides)):
            if dim != 1 and stride != expect:
                return False
            expect *= dim
        return True

    def host_array(self) -> np.ndarray:
        """A NumPy array over this CPU tensor's memory (no copy; strided tensors keep their strides)."""
        if self.device_type not in (CPU, CUDA_HOST):
            raise InputMismatchError(f"'{self.name}' is on {self.device}, not in host memory")
        item = self.dtype.itemsize
        if not self.shape or 0 in self.shape:
            return np.zeros(self.shape, self.dtype)
        strides = self.strides or _compact_strides(self.shape)
        if any(s < 0 for s in strides):
            raise InputMismatchError(f"'{self.name}' has negative strides {strides}; pass a copy "
                                     f"(e.g. .contiguous() or .copy())")
        span = (sum((d - 1) * s for d, s in zip(self.shape, strides)) + 1) * item
        buf = (ctypes.c_byte * span).from_address(self.data)
        buf.capsule = self.capsule        # the memory lives as long as any array made from it
        flat = np.frombuffer(buf, dtype=self.dtype)
        arr = np.lib.stride_tricks.as_strided(flat, self.shape, tuple(s * item for s in strides),
                                              writeable=not self.read_only)
        return arr


def _compact_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def stream_argument(kind: int, stream: int | None) -> int | None:
    """The ``stream`` to pass to ``__dlpack__`` for work that will run on CUDA stream ``stream``
    (a cudaStream_t as an int; None or 0: the legacy default stream, which DLPack spells 1)."""
    if kind not in (CUDA, CUDA_MANAGED):
        return None
    return 1 if not stream else int(stream)


def borrow(obj: Any, name: str, stream: int | None = None) -> Borrowed:
    """Exports ``obj`` through DLPack and reads the tensor; ``stream`` (CUDA tensors: the stream the
    data will be used on) lets the producer order its pending writes before that use."""
    kind, _ = device_of(obj)
    kwargs = {"stream": stream_argument(kind, stream)}
    try:
        capsule = obj.__dlpack__(max_version=(1, 0), **kwargs)
    except TypeError:                 # a producer older than DLPack 1.0's max_version keyword
        try:
            capsule = obj.__dlpack__(**kwargs)
        except Exception as e:  # noqa: BLE001
            raise InputMismatchError(f"'{name}' ({type(obj).__name__}) could not be exported through DLPack: "
                                     f"{e}") from None
    except Exception as e:  # noqa: BLE001 (BufferError for read-only or unsupported tensors, ...)
        raise InputMismatchError(f"'{name}' ({type(obj).__name__}) could not be exported through DLPack: "
                                 f"{e}") from None
    raw = _capsule_name(capsule)
    if raw == b"dltensor_versioned":
        managed = _ManagedVersioned.from_address(_capsule_pointer(capsule, raw))
        if managed.version.major != 1:
            raise InputMismatchError(f"'{name}' uses DLPack {managed.version.major}.{managed.version.minor}; "
                                     f"this runtime reads DLPack 1.x")
        read_only = bool(managed.flags & _FLAG_READ_ONLY)
    elif raw == b"dltensor":
        managed = _Managed.from_address(_capsule_pointer(capsule, raw))
        read_only = False
    else:
        raise InputMismatchError(f"'{name}' ({type(obj).__name__}) returned a capsule named {raw!r} from "
                                 f"__dlpack__, not a DLPack tensor")
    t = managed.dl_tensor
    ndim = int(t.ndim)
    shape = tuple(int(t.shape[i]) for i in range(ndim))
    strides = tuple(int(t.strides[i]) for i in range(ndim)) if t.strides else None
    dt = t.dtype
    dtype = _numpy_dtype(dt.code, dt.bits, dt.lanes)
    text = str(dtype) if dtype is not None else f"DLPack type code {dt.code}, {dt.bits} bits x {dt.lanes}"
    return Borrowed(name, capsule, int(t.data or 0) + int(t.byte_offset), int(t.device.device_type),
                    int(t.device.device_id), dtype, text, shape, strides, read_only)
