"""Loading a built CPU library through its C ABI and running it from NumPy.

The library of an artifact is written to a content-addressed cache directory (named by its sha256),
never next to the user's files, and loaded with ctypes. The model is created through the C ABI of
docs/INTERNALS.md: ``accelc_create`` copies or packs the weights, so the artifact bytes can be freed
after ``load``.

The call path of ``run`` is kept short on purpose: tiny models are bound by call overhead, so
everything that does not depend on the input values (dtypes, shapes, ctypes pointer arrays) is
computed once in ``CompiledModule.__init__``.

``CompiledModule.profile`` uses the per-node profiler of CPU libraries (``accelc_profile_*`` in the C
ABI): the library times every node block of the generated code while profiling is on and keeps the
counters in the model; this module only switches it on, runs, reads the counters and names the nodes.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_dtypes
import numpy as np

from ..errors import (AccelcError, ArtifactError, InputMismatchError, UnsupportedFeatureError,
                      UnsupportedHardwareError)
from . import artifact as _artifact
from . import dlpack as _dlpack
from .artifact import Artifact

ABI_VERSION = 1

# Short dtype names of the signature (the IR's DType.short) -> NumPy. Duplicated here on purpose: the
# runtime must not import the IR.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16),
    "f64": np.dtype(np.float64), "f8e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "f8e5m2": np.dtype(ml_dtypes.float8_e5m2), "i4": np.dtype(ml_dtypes.int4), "u4": np.dtype(ml_dtypes.uint4),
    "i8": np.dtype(np.int8), "u8": np.dtype(np.uint8), "i16": np.dtype(np.int16),
    "i32": np.dtype(np.int32), "i64": np.dtype(np.int64), "bool": np.dtype(np.bool_),
}
_NP_NAMES = {np.dtype(ml_dtypes.bfloat16): "ml_dtypes.bfloat16", np.dtype(ml_dtypes.float8_e4m3fn):
             "ml_dtypes.float8_e4m3fn", np.dtype(ml_dtypes.float8_e5m2): "ml_dtypes.float8_e5m2"}

_ERROR_CODES = {1: "the CPU lacks an instruction set the model needs", 2: "weights size or checksum mismatch",
                3: "out of memory", 4: "invalid argument"}


def numpy_dtype(short: str) -> np.dtype:
    try:
        return DTYPES[short]
    except KeyError:
        raise ArtifactError(f"artifact signature uses dtype '{short}', unknown to this runtime; "
                            f"upgrade accelc") from None


def _np_name(dt: np.dtype) -> str:
    return _NP_NAMES.get(dt, f"np.{dt.name}")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "accelc"


class _Port:
    """One input or output of the signature, with what the call path needs precomputed."""
    __slots__ = ("name", "dtype", "shape", "nbytes")

    def __init__(self, spec: Mapping[str, Any]):
        self.name = str(spec["name"])
        self.dtype = numpy_dtype(spec["dtype"])
        shape = spec["shape"]
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ArtifactError(f"artifact signature of '{self.name}' has a non-static shape {shape}; "
                                f"the artifact is corrupted, recompile the model")
        self.shape = tuple(shape)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.name, "shape": self.shape}


def _library_path(lib_bytes: bytes, lib_name: str, cache_dir: str | os.PathLike | None) -> Path:
    """Puts the library in the content-addressed cache and returns its path (reused when present)."""
    digest = hashlib.sha256(lib_bytes).hexdigest()
    base = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = base / "lib" / digest[:2] / digest
    path = folder / Path(lib_name).name
    try:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
            return path
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".lib.", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(lib_bytes)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except OSError as e:
        raise ArtifactError(f"cannot write the model library to the cache '{folder}': {e.strerror or e}; "
                            f"pass cache_dir= (or set XDG_CACHE_HOME) to a writable directory") from None
    return path


def _bind(lib: ctypes.CDLL, path: Path) -> None:
    c = ctypes
    try:
        lib.accelc_abi_version.restype = c.c_int
        lib.accelc_abi_version.argtypes = []
        for fn in ("accelc_signature_json", "accelc_variants", "accelc_select_variant", "accelc_last_error"):
            getattr(lib, fn).restype = c.c_char_p
            getattr(lib, fn).argtypes = []
        lib.accelc_create.restype = c.c_int
        lib.accelc_create.argtypes = [c.c_void_p, c.c_size_t, c.c_int, c.POINTER(c.c_void_p)]
        lib.accelc_run.restype = c.c_int
        lib.accelc_run.argtypes = [c.c_void_p, c.POINTER(c.c_void_p), c.POINTER(c.c_void_p)]
        lib.accelc_model_variant.restype = c.c_char_p
        lib.accelc_model_variant.argtypes = [c.c_void_p]
        lib.accelc_destroy.restype = None
        lib.accelc_destroy.argtypes = [c.c_void_p]
    except AttributeError as e:
        raise ArtifactError(f"library '{path.name}' does not export the accelc C ABI ({e}); "
                            f"the artifact is corrupted, recompile the model") from None


_PROFILER_SYMBOLS = ("accelc_profile_count", "accelc_profile_node", "accelc_profile_node_op",
                     "accelc_profile_enable", "accelc_profile_read")


def _open_library(art: Artifact, cache_dir: str | os.PathLike | None) -> ctypes.CDLL:
    """The artifact's model library, put in the cache, loaded and bound (no model created yet)."""
    lib_name = art.manifest["backend"].get("library")
    if not lib_name:
        raise ArtifactError("artifact manifest names no library (backend.library); this runtime can only "
                            "run artifacts of CPU targets, recompile for a CPU target")
    path = _library_path(art.member(lib_name), lib_name, cache_dir)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise ArtifactError(f"cannot load the model library of this artifact: {e}; it was built for "
                            f"another OS or architecture, recompile on a matching machine") from None
    _bind(lib, path)
    return lib


def _bind_device_entry(lib: ctypes.CDLL):
    """``accelc_run_device`` of a CUDA library (device pointers, a stream), or None for CPU libraries."""
    fn = getattr(lib, "accelc_run_device", None)
    if fn is not None:
        c = ctypes
        fn.restype = c.c_int
        fn.argtypes = [c.c_void_p, c.POINTER(c.c_void_p), c.POINTER(c.c_void_p), c.c_void_p]
    return fn


def _model_device(lib: ctypes.CDLL, handle: ctypes.c_void_p) -> int | None:
    """The CUDA device of a model of a CUDA library (``accelc_model_device``), None for other libraries."""
    fn = getattr(lib, "accelc_model_device", None)
    if fn is None:
        return None
    fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_void_p]
    return int(fn(handle))


def _stream_handle(stream: Any) -> int:
    """A ``cudaStream_t`` as an int from a torch/CuPy stream object, an int, or None (0: legacy default)."""
    if stream is None:
        return 0
    if isinstance(stream, bool):
        raise InputMismatchError("stream= must be a CUDA stream (torch.cuda.Stream, a CuPy stream or a "
                                 "cudaStream_t as an int), got a bool")
    if isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr"):            # torch.cuda.Stream, cupy.cuda.Stream
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value
    raise InputMismatchError(f"stream= must be a CUDA stream (torch.cuda.Stream, a CuPy stream or a "
                             f"cudaStream_t as an int), got a {type(stream).__name__}")


def _bind_profiler(lib: ctypes.CDLL) -> bool:
    """Declares the profiler functions; False when the library predates them (or its backend has none)."""
    c = ctypes
    if not all(hasattr(lib, fn) for fn in _PROFILER_SYMBOLS):
        return False
    lib.accelc_profile_count.restype = c.c_int
    lib.accelc_profile_count.argtypes = []
    for fn in ("accelc_profile_node", "accelc_profile_node_op"):
        getattr(lib, fn).restype = c.c_char_p
        getattr(lib, fn).argtypes = [c.c_int]
    lib.accelc_profile_enable.restype = c.c_int
    lib.accelc_profile_enable.argtypes = [c.c_void_p, c.c_int]
    lib.accelc_profile_read.restype = c.c_int
    lib.accelc_profile_read.argtypes = [c.c_void_p, c.POINTER(c.c_double), c.c_int,
                                        c.POINTER(c.c_longlong), c.POINTER(c.c_double)]
    return True


@dataclass(frozen=True)
class NodeProfile:
    """Time of one graph node over the profiled runs. ``share`` is the fraction of the time spent inside
    the library's ``accelc_run`` (so the shares of all nodes add up to a little less than 1)."""
    step: int          # position in the graph (the order of model.cpp)
    label: str         # "[3] FusedGemm 'fc1'", as in the comments of model.cpp
    op: str            # "FusedGemm"
    total_ms: float    # over all profiled runs
    mean_ms: float     # per run
    share: float


@dataclass(frozen=True)
class OpProfile:
    """The nodes of one op type added up (``Profile.by_op``)."""
    op: str
    nodes: int
    mean_ms: float
    share: float


@dataclass(frozen=True)
class Profile:
    """Result of ``CompiledModule.profile``: ``nodes`` in graph order, means over ``runs`` runs.

    ``run_ms`` is the mean time of one run measured inside the library (``accelc_run``), the reference
    of every ``share``; ``wall_ms`` the mean time of one call seen from Python (adds the ctypes call).
    The difference between ``run_ms`` and ``nodes_ms`` is time outside node blocks (copies of outputs
    that are inputs or constants, the timers themselves).
    """
    nodes: list[NodeProfile]
    runs: int
    warmup: int
    variant: str
    run_ms: float
    wall_ms: float

    @property
    def nodes_ms(self) -> float:
        return sum(n.mean_ms for n in self.nodes)

    def by_time(self) -> list[NodeProfile]:
        """The nodes, slowest first (graph order among equal times)."""
        return sorted(self.nodes, key=lambda n: (-n.total_ms, n.step))

    def by_op(self) -> list[OpProfile]:
        """Time per op type, slowest first."""
        ms: dict[str, float] = {}
        count: dict[str, int] = {}
        for n in self.nodes:
            ms[n.op] = ms.get(n.op, 0.0) + n.mean_ms
            count[n.op] = count.get(n.op, 0) + 1
        ops = [OpProfile(op, count[op], t, t / self.run_ms if self.run_ms > 0 else 0.0) for op, t in ms.items()]
        return sorted(ops, key=lambda o: (-o.mean_ms, o.op))

    def table(self, top: int = 25) -> str:
        """The profile as text: the ``top`` slowest nodes (mean ms, % of the run, cumulative %), the rest
        summed on one line, then the time per op type."""
        def pct(share: float) -> str:
            return f"{100 * share:6.1f}%"
        ranked = self.by_time()
        shown, rest = ranked[:max(0, top)], ranked[max(0, top):]
        op_width = max([len(n.op) for n in self.nodes] + [len("op")])
        width = min(72, max([len(n.label) for n in shown] + [len("node")]))
        lines = [f"profile: {len(self.nodes)} nodes on {self.variant}, mean of {self.runs} runs "
                 f"(after {self.warmup} warmup runs)",
                 f"per run: {self.run_ms:.3f} ms in the library ({self.nodes_ms:.3f} ms in node blocks), "
                 f"{self.wall_ms:.3f} ms per call from Python",
                 f"  {'node':<{width}}  {'op':<{op_width}}  {'mean ms':>9}  {'%':>7}  {'cum %':>7}"]
        cumulative = 0.0
        for n in shown:
            cumulative += n.share
            label = n.label if len(n.label) <= width else n.label[:width - 3] + "..."
            lines.append(f"  {label:<{width}}  {n.op:<{op_width}}  {n.mean_ms:9.3f}  {pct(n.share)}  {pct(cumulative)}")
        if rest:
            ms, share = sum(n.mean_ms for n in rest), sum(n.share for n in rest)
            cumulative += share
            lines.append(f"  {f'({len(rest)} more nodes)':<{width}}  {'':<{op_width}}  {ms:9.3f}  {pct(share)}  "
                         f"{pct(cumulative)}")
        outside = self.run_ms - self.nodes_ms
        lines.append(f"  {'(outside node blocks)':<{width}}  {'':<{op_width}}  {outside:9.3f}  "
                     f"{pct(outside / self.run_ms if self.run_ms > 0 else 0.0)}")
        lines.append("by op:")
        lines.append(f"  {'op':<{op_width}}  {'nodes':>5}  {'mean ms':>9}  {'%':>7}")
        for o in self.by_op():
            lines.append(f"  {o.op:<{op_width}}  {o.nodes:>5}  {o.mean_ms:9.3f}  {pct(o.share)}")
        return "\n".join(lines)


def _address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's first byte. ``a.ctypes.data`` builds a helper object (~1.4 us
    a call, a tenth of a tiny model's run); a writable, non-empty array of a NumPy-native dtype takes the
    quicker buffer route (extension dtypes such as ml_dtypes' bfloat16 have no buffer format)."""
    if a.flags.writeable and a.nbytes:
        try:
            return ctypes.addressof(ctypes.c_char.from_buffer(a))
        except (ValueError, TypeError):
            pass
    return a.ctypes.data


def _last_error(lib: ctypes.CDLL) -> str:
    msg = lib.accelc_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


class CompiledModule:
    """A loaded artifact, ready to run. Create it with ``accelc.load(path)`` (or ``accelc.compile``).

    ``signature`` is the artifact's input/output signature (names, dtype short names, shapes);
    ``variant`` the ISA variant the library picked on this CPU (e.g. ``amx`` or ``avx2``).
    A module may be called from several threads; calls are serialised because a native model is
    safe to run from one thread at a time.
    """

    def __init__(self, art: Artifact, *, threads: int = 0, cache_dir: str | os.PathLike | None = None):
        manifest = art.manifest
        backend = manifest["backend"]
        if not backend.get("library"):
            raise ArtifactError("artifact manifest names no library (backend.library); this runtime can only "
                                "run artifacts of CPU targets, recompile for a CPU target")
        abi = backend.get("abi_version", ABI_VERSION)
        if abi != ABI_VERSION:
            raise ArtifactError(f"artifact library uses C ABI version {abi}, this runtime speaks version "
                                f"{ABI_VERSION}; use the accelc version that built it or recompile")
        self.manifest = manifest
        self.signature: dict[str, Any] = manifest["signature"]
        self._inputs = [_Port(s) for s in self.signature["inputs"]]
        self._outputs = [_Port(s) for s in self.signature["outputs"]]
        self._input_index = {p.name: i for i, p in enumerate(self._inputs)}
        self.input_names = [p.name for p in self._inputs]
        self.output_names = [p.name for p in self._outputs]

        lib = _open_library(art, cache_dir)
        self._lib = lib
        got = lib.accelc_abi_version()
        if got != ABI_VERSION:
            raise ArtifactError(f"model library reports C ABI version {got}, this runtime speaks version "
                                f"{ABI_VERSION}; recompile the model with this accelc")
        self._check_library_signature()

        weights_name = backend.get("weights", "weights.bin")
        weights = art.members.get(weights_name, b"")
        # A view of the bytes (no copy: weights can be hundreds of MB); accelc_create copies what it keeps.
        view = np.frombuffer(weights, dtype=np.uint8) if weights else None
        handle = ctypes.c_void_p()
        n_threads = int(threads or manifest.get("options", {}).get("threads", 0) or 0)
        code = lib.accelc_create(view.ctypes.data if view is not None else None,
                                 len(weights), n_threads, ctypes.byref(handle))
        del view
        if code != 0:
            msg = _last_error(lib) or _ERROR_CODES.get(code, f"error code {code}")
            if code == 1:
                variants = ", ".join(backend.get("variants", [])) or "?"
                if backend.get("name") == "cuda":
                    raise UnsupportedHardwareError(f"this machine cannot run the CUDA artifact: {msg} (built for "
                                                   f"{variants}); run it on a machine with such an NVIDIA GPU, "
                                                   f"or recompile for its GPU (`accelc targets` lists them)")
                raise UnsupportedHardwareError(f"this CPU cannot run the artifact: {msg} (built variants: "
                                               f"{variants}); recompile with --target host")
            if code == 2:
                raise ArtifactError(f"the artifact's weights do not match its library: {msg}; recompile the model")
            raise AccelcError(f"cannot create the model: {msg} (code {code})")
        self._handle = handle
        variant = lib.accelc_model_variant(handle)
        self.variant: str = variant.decode() if variant else "?"
        self._lock = threading.Lock()
        self._in_ptrs = (ctypes.c_void_p * max(1, len(self._inputs)))()
        self._out_ptrs = (ctypes.c_void_p * max(1, len(self._outputs)))()
        self._run_fn = lib.accelc_run
        self._run_device_fn = _bind_device_entry(lib)
        self._device = _model_device(lib, handle)     # the CUDA device a GPU model lives on, else None
        self._destroy = lib.accelc_destroy
        self._profiler: bool | None = None           # bound on the first profile()
        self._profile_nodes: list[tuple[str, str]] = []

    def _check_library_signature(self) -> None:
        """The library embeds its own signature; it must agree with the manifest (else buffers overflow)."""
        raw = self._lib.accelc_signature_json()
        try:
            sig = json.loads(raw.decode()) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            sig = None
        if sig is None:
            raise ArtifactError("the model library returned no valid signature; recompile the model")

        def norm(ports):
            return [(p["name"], p["dtype"], list(p["shape"])) for p in ports]
        if norm(sig["inputs"]) != norm(self.signature["inputs"]) or \
                norm(sig["outputs"]) != norm(self.signature["outputs"]):
            raise ArtifactError("the model library's signature differs from the artifact manifest; "
                                "the artifact is inconsistent, recompile the model")

    # ---- running ------------------------------------------------------------------------------
    def _prepare(self, port: _Port, value: Any) -> np.ndarray:
        if _dlpack.is_dlpack(value):
            value = self._host_view(port, value, "input")
        if not isinstance(value, np.ndarray):
            if isinstance(value, (np.generic, int, float, bool, list, tuple)):
                value = np.asarray(value, dtype=port.dtype)
            else:
                raise InputMismatchError(f"input '{port.name}' is a {type(value).__name__}; pass a NumPy "
                                         f"array (or a DLPack tensor: torch, CuPy, JAX) of "
                                         f"{_np_name(port.dtype)} with shape {port.shape}")
        if value.dtype != port.dtype:
            raise InputMismatchError(
                f"input '{port.name}' has dtype {value.dtype.name}, expected {port.dtype.name}; "
                f"cast it first, e.g. x.astype({_np_name(port.dtype)})")
        if value.shape != port.shape:
            raise InputMismatchError(
                f"input '{port.name}' has shape {value.shape}, expected {port.shape}; the artifact is "
                f"compiled for that shape (recompile with --shape {port.name}="
                f"{'x'.join(str(d) for d in value.shape) or '1'} to change it)")
        if not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)
        return value

    def _order(self, inputs: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
        if type(inputs) is dict and len(inputs) == len(self.input_names):
            try:
                return [inputs[n] for n in self.input_names]      # the common case, kept cheap
            except KeyError:
                pass
        if isinstance(inputs, Mapping):
            extra = [k for k in inputs if k not in self._input_index]
            if extra:
                raise InputMismatchError(f"unknown input '{extra[0]}'; the model takes "
                                         f"{', '.join(self.input_names) or 'no inputs'}")
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise InputMismatchError(f"missing input '{missing[0]}'; the model takes "
                                         f"{', '.join(self.input_names)}")
            return [inputs[n] for n in self.input_names]
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        values = list(inputs)
        if len(values) != len(self._inputs):
            raise InputMismatchError(f"got {len(values)} inputs, the model takes {len(self._inputs)} "
                                     f"({', '.join(self.input_names) or 'none'})")
        return values

    def _bind_buffers(self, arrays: list[np.ndarray], outputs: list[np.ndarray]):
        """The C pointer arrays of one call (hold self._lock while they are in use)."""
        if self._handle is None:
            raise AccelcError("this module was closed; load the artifact again")
        in_ptrs, out_ptrs = self._in_ptrs, self._out_ptrs
        for i, a in enumerate(arrays):
            in_ptrs[i] = _address(a)
        for i, a in enumerate(outputs):
            out_ptrs[i] = _address(a)
        return in_ptrs, out_ptrs

    def run(self, inputs: Mapping[str, Any] | Sequence[Any] = (), *, out: Mapping[str, Any] | Sequence[Any] | None = None,
            stream: Any = None) -> dict[str, Any]:
        """Runs the model; ``inputs`` by name (dict) or in signature order (list). Returns name -> array.

        Inputs are NumPy arrays or tensors of other frameworks read through DLPack without a copy (torch,
        CuPy, JAX). ``out`` (by name or in order) receives the outputs in place of new NumPy arrays: NumPy
        arrays or DLPack tensors of the outputs' dtypes and shapes; the returned dict then holds them.

        CUDA artifacts also run on GPU memory: when the inputs are CUDA tensors, ``out`` must be CUDA
        tensors too, and the whole run is enqueued on ``stream`` (a ``torch.cuda.Stream``, a CuPy stream or
        a ``cudaStream_t`` as an int; None: the legacy default stream, torch's default) without waiting:
        the outputs are ready once that stream has passed this call, and the tensors must stay alive
        until then (``torch.cuda.current_stream().synchronize()``, or later work on the same stream).
        """
        values = self._order(inputs)
        given = None if out is None else self._order_outputs(out)
        if self._run_device_fn is not None and self._wants_device(values + (given or [])):
            return self._run_on_device(values, given, stream)
        if stream is not None:
            raise InputMismatchError("stream= applies to CUDA artifacts run on GPU tensors; this run reads "
                                     "host memory, drop stream=")
        arrays = [self._prepare(p, v) for p, v in zip(self._inputs, values)]
        if given is None:
            outputs = given = [np.empty(p.shape, p.dtype) for p in self._outputs]
        else:
            outputs = [self._output_view(p, v) for p, v in zip(self._outputs, given)]
        with self._lock:
            in_ptrs, out_ptrs = self._bind_buffers(arrays, outputs)
            code = self._run_fn(self._handle, in_ptrs, out_ptrs)
        if code != 0:
            msg = _last_error(self._lib) or _ERROR_CODES.get(code, f"error code {code}")
            raise AccelcError(f"running the model failed: {msg} (code {code})")
        return dict(zip(self.output_names, given))

    # ---- DLPack and device memory --------------------------------------------------------------
    def _host_view(self, port: _Port, value: Any, role: str) -> np.ndarray:
        """A NumPy view of a host DLPack tensor (checked against ``port``), or a clear error for GPU memory."""
        kind, index = _dlpack.device_of(value)
        if kind not in (_dlpack.CPU, _dlpack.CUDA_HOST):
            where = _dlpack.device_name(kind, index)
            if self._run_device_fn is not None:
                raise InputMismatchError(f"{role} '{port.name}' is on {where} while other tensors of this run "
                                         f"are in host memory; pass every input and output on the GPU, or "
                                         f"every one in host memory")
            raise InputMismatchError(f"{role} '{port.name}' is on {where}; this artifact runs on the CPU "
                                     f"(target {self.manifest.get('target', '?')}): pass host memory, e.g. "
                                     f"x.cpu(), or compile for a GPU target")
        view = _dlpack.borrow(value, port.name)
        self._check_port(port, view, role)
        return view.host_array()

    def _check_port(self, port: _Port, view: "_dlpack.Borrowed", role: str) -> None:
        if view.dtype != port.dtype:
            raise InputMismatchError(f"{role} '{port.name}' has dtype {view.dtype_text}, expected "
                                     f"{port.dtype.name}; cast it first")
        if view.shape != port.shape:
            raise InputMismatchError(f"{role} '{port.name}' has shape {view.shape}, expected {port.shape}; the "
                                     f"artifact is compiled for that shape")
        if role == "output" and view.read_only:
            raise InputMismatchError(f"output '{port.name}' is read-only; pass a writable tensor")

    def _order_outputs(self, out: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
        if isinstance(out, Mapping):
            unknown = [k for k in out if k not in self.output_names]
            missing = [n for n in self.output_names if n not in out]
            if unknown or missing:
                raise InputMismatchError(f"out= must name every output once ({', '.join(self.output_names)}); "
                                         + (f"unknown '{unknown[0]}'" if unknown else f"missing '{missing[0]}'"))
            return [out[n] for n in self.output_names]
        values = [out] if isinstance(out, np.ndarray) or _dlpack.is_dlpack(out) else list(out)
        if len(values) != len(self._outputs):
            raise InputMismatchError(f"out= has {len(values)} buffers, the model has {len(self._outputs)} outputs "
                                     f"({', '.join(self.output_names)})")
        return values

    def _output_view(self, port: _Port, value: Any) -> np.ndarray:
        """The writable, C-contiguous host array the library writes output ``port`` into."""
        if _dlpack.is_dlpack(value):
            arr = self._host_view(port, value, "output")
        elif isinstance(value, np.ndarray):
            if value.dtype != port.dtype or value.shape != port.shape:
                raise InputMismatchError(f"output '{port.name}' buffer is {value.dtype.name}{list(value.shape)}, "
                                         f"expected {port.dtype.name}{list(port.shape)}")
            arr = value
        else:
            raise InputMismatchError(f"output '{port.name}' buffer is a {type(value).__name__}; pass a NumPy "
                                     f"array or a DLPack tensor")
        if not arr.flags.writeable:
            raise InputMismatchError(f"output '{port.name}' buffer is read-only; pass a writable one")
        if not arr.flags.c_contiguous:
            raise InputMismatchError(f"output '{port.name}' buffer is not contiguous; pass a contiguous one "
                                     f"(e.g. torch.empty(...) or np.empty(...))")
        return arr

    @staticmethod
    def _wants_device(tensors: list[Any]) -> bool:
        """Whether a CUDA artifact's run (its inputs, then its out= buffers) is on GPU memory: decided by the
        first DLPack tensor or NumPy array in it."""
        for v in tensors:
            if _dlpack.is_dlpack(v):
                return _dlpack.device_of(v)[0] in (_dlpack.CUDA, _dlpack.CUDA_MANAGED)
            if isinstance(v, np.ndarray):
                return False
        return False

    def _run_on_device(self, values: list[Any], given: list[Any] | None, stream: Any) -> dict[str, Any]:
        handle = _stream_handle(stream)
        if given is None:
            raise InputMismatchError(
                "a run on GPU tensors writes GPU tensors: pass out= with one per output ("
                + ", ".join(f"{p.name}: {p.dtype.name}{list(p.shape)}" for p in self._outputs)
                + "), e.g. torch.empty(shape, dtype=..., device='cuda')")
        device = self._device
        views = []
        for role, ports, objs in (("input", self._inputs, values), ("output", self._outputs, given)):
            for p, v in zip(ports, objs):
                if not _dlpack.is_dlpack(v):
                    raise InputMismatchError(f"{role} '{p.name}' is a {type(v).__name__} while other tensors of "
                                             f"this run are on the GPU; pass every input and output on the GPU "
                                             f"(DLPack tensors), or every one in host memory")
                kind, index = _dlpack.device_of(v)
                if kind not in (_dlpack.CUDA, _dlpack.CUDA_MANAGED) or (device is not None and index != device):
                    want = f"cuda:{device}" if device is not None else "the model's GPU"
                    raise InputMismatchError(f"{role} '{p.name}' is on {_dlpack.device_name(kind, index)}, the "
                                             f"model runs on {want}; pass every tensor of the run on {want}")
                view = _dlpack.borrow(v, p.name, handle)
                self._check_port(p, view, role)
                if not view.contiguous:
                    raise InputMismatchError(f"{role} '{p.name}' is not contiguous (strides {view.strides}); "
                                             f"pass a contiguous tensor, e.g. x.contiguous()")
                views.append(view)
        n_in = len(self._inputs)
        with self._lock:
            if self._handle is None:
                raise AccelcError("this module was closed; load the artifact again")
            for i, view in enumerate(views[:n_in]):
                self._in_ptrs[i] = view.data
            for i, view in enumerate(views[n_in:]):
                self._out_ptrs[i] = view.data
            code = self._run_device_fn(self._handle, self._in_ptrs, self._out_ptrs, ctypes.c_void_p(handle or None))
        if code != 0:
            msg = _last_error(self._lib) or _ERROR_CODES.get(code, f"error code {code}")
            raise AccelcError(f"running the model on GPU tensors failed: {msg} (code {code})")
        return dict(zip(self.output_names, given))

    # ---- profiling ----------------------------------------------------------------------------
    def _require_profiler(self) -> None:
        if self._profiler is None:
            self._profiler = _bind_profiler(self._lib)
            if self._profiler:
                lib = self._lib
                self._profile_nodes = [((lib.accelc_profile_node(i) or b"?").decode("utf-8", "replace"),
                                        (lib.accelc_profile_node_op(i) or b"?").decode("utf-8", "replace"))
                                       for i in range(lib.accelc_profile_count())]
        if self._profiler:
            return
        backend = self.manifest.get("backend", {}).get("name", "?")
        if backend == "cpu_amx":
            raise ArtifactError(f"the model library of this artifact has no per-node profiler (built by accelc "
                                f"{self.manifest.get('accelc_version', '?')}, before profiling existed); "
                                f"recompile the model with this accelc to profile it")
        raise UnsupportedFeatureError(f"per-node profiling is available for CPU artifacts only; this artifact is "
                                      f"for target '{self.manifest.get('target', '?')}' (backend {backend})")

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            msg = _last_error(self._lib) or _ERROR_CODES.get(code, f"error code {code}")
            raise AccelcError(f"{what} failed: {msg} (code {code})")

    def profile(self, inputs: Mapping[str, Any] | Sequence[Any] = (), runs: int = 10, warmup: int = 2) -> Profile:
        """Times every graph node: ``warmup`` untimed runs, then ``runs`` runs with the library's profiler on.

        Returns a ``Profile`` whose ``nodes`` are in graph order (``by_time()`` sorts them, ``by_op()``
        sums them per op type, ``table()`` prints them). CPU artifacts only; an artifact built before
        profiling existed raises ``ArtifactError`` (recompile it). The counters are switched off again
        afterwards, so later ``run`` calls cost what they cost before.
        """
        for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self._require_profiler()
        arrays = [self._prepare(p, v) for p, v in zip(self._inputs, self._order(inputs))]
        outputs = [np.empty(p.shape, p.dtype) for p in self._outputs]
        lib = self._lib
        count = len(self._profile_nodes)
        seconds = (ctypes.c_double * max(1, count))()
        runs_done, run_seconds = ctypes.c_longlong(0), ctypes.c_double(0.0)
        wall = 0.0
        with self._lock:
            in_ptrs, out_ptrs = self._bind_buffers(arrays, outputs)
            for _ in range(warmup):
                self._check(self._run_fn(self._handle, in_ptrs, out_ptrs), "running the model")
            self._check(lib.accelc_profile_enable(self._handle, 1), "starting the profiler")
            try:
                for _ in range(runs):
                    start = time.perf_counter()
                    code = self._run_fn(self._handle, in_ptrs, out_ptrs)
                    wall += time.perf_counter() - start
                    self._check(code, "running the model")
                self._check(lib.accelc_profile_read(self._handle, seconds, count, ctypes.byref(runs_done),
                                                    ctypes.byref(run_seconds)), "reading the profile")
            finally:
                lib.accelc_profile_enable(self._handle, 0)
        done = max(1, runs_done.value)
        run_total = run_seconds.value
        nodes = [NodeProfile(step=i, label=label, op=op, total_ms=seconds[i] * 1e3, mean_ms=seconds[i] * 1e3 / done,
                             share=seconds[i] / run_total if run_total > 0 else 0.0)
                 for i, (label, op) in enumerate(self._profile_nodes)]
        return Profile(nodes=nodes, runs=runs_done.value, warmup=warmup, variant=self.variant,
                       run_ms=run_total * 1e3 / done, wall_ms=wall * 1e3 / runs)

    def __call__(self, *arrays: Any, **named: Any):
        """``m(x)`` or ``m(x=...)``: one output returns the array, several a tuple in signature order."""
        if arrays and named:
            raise InputMismatchError("pass inputs either positionally or by name, not both")
        result = self.run(named if named else list(arrays))
        values = tuple(result[n] for n in self.output_names)
        return values[0] if len(values) == 1 else values

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_handle", None) is not None:
                self._destroy(self._handle)
                self._handle = None

    def __del__(self):
        try:
            if getattr(self, "_handle", None) is not None:
                self._destroy(self._handle)
                self._handle = None
        except Exception:
            pass

    def __repr__(self) -> str:
        ins = ", ".join(f"{p.name}: {p.dtype.name}{list(p.shape)}" for p in self._inputs)
        outs = ", ".join(f"{p.name}: {p.dtype.name}{list(p.shape)}" for p in self._outputs)
        return f"<accelc.CompiledModule {self.manifest.get('target', '?')}/{self.variant} ({ins}) -> ({outs})>"


def probe_variant(art: Artifact, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The ISA variant a CPU artifact's library picks on this machine (None: it runs none), found by
    loading the library alone: no model is created and no weights are copied or checked."""
    chosen = _open_library(art, cache_dir).accelc_select_variant()
    return chosen.decode() if chosen else None


def load(path: str | os.PathLike | Artifact, threads: int = 0, *,
         cache_dir: str | os.PathLike | None = None) -> CompiledModule:
    """Loads an artifact (``.accelc`` zip, directory, or in-memory ``Artifact``) and returns a module.

    Every member hash is checked before anything is loaded. ``threads=0`` uses the count the artifact
    was compiled with (0 there: all cores).
    """
    art = path if isinstance(path, Artifact) else _artifact.read(path)
    return CompiledModule(art, threads=threads, cache_dir=cache_dir)
