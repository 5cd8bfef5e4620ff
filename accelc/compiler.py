"""``accelc.compile``: frontend -> static shapes -> passes -> backend -> in-memory artifact -> accuracy.

The driver owns no transformation of its own; it sequences the pieces of docs/INTERNALS.md, checks
the user's options up front (so a typo in a target name fails before a minute of work), and records
what happened in the manifest: options, the pass log, timings and the measured accuracy of the
optimized artifact against the fp32 reference interpreter (the numerics contract of DESIGN.md says a
bf16 artifact is judged by such metrics, so ``compile`` measures them rather than leaving it to users).
"""
from __future__ import annotations

import datetime as _dt
import os
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from . import __version__
from .errors import AccelcError, ModelLoadError, ShapeError, UnsupportedHardwareError, UnsupportedOpError
from .runtime import Artifact, CompiledModule, pack
from .runtime.artifact import FORMAT_VERSION
from .targets import Target, get_target

Progress = Callable[[str], None]

DTYPE_ALIASES = {"fp32": "fp32", "f32": "fp32", "float32": "fp32", "float": "fp32",
                 "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "f16": "fp16", "float16": "fp16",
                 "half": "fp16"}
ACCURACY_SEED = 0


def parse_shape(text: str | Iterable[int]) -> tuple[int, ...]:
    """``"1x128"`` (or ``"1,128"``, or a sequence) -> ``(1, 128)``; every dim a positive integer."""
    if isinstance(text, str):
        parts = [p for p in text.replace(",", "x").lower().split("x") if p.strip()]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise ShapeError(f"bad shape '{text}'; write dimensions as integers separated by 'x', "
                             f"e.g. 1x3x224x224") from None
    else:
        try:
            dims = tuple(int(d) for d in text)
        except (TypeError, ValueError):
            raise ShapeError(f"bad shape {text!r}; give a sequence of integers such as (1, 128)") from None
    if any(d <= 0 for d in dims):
        raise ShapeError(f"bad shape {text!r}; every dimension must be a positive integer")
    return dims


def normalize_dtype(dtype: str) -> str:
    try:
        return DTYPE_ALIASES[str(dtype).lower()]
    except KeyError:
        raise AccelcError(f"unsupported dtype '{dtype}'; use fp32, bf16 or fp16 (CUDA targets)") from None


class CompiledModel:
    """The result of ``accelc.compile``: an in-memory artifact, loaded and ready to run.

    ``manifest`` is the artifact's manifest (signature, options, pass log, accuracy, backend section);
    ``pass_log`` the passes that ran; ``graph`` the optimized IR that was lowered. When this machine
    cannot run the artifact (e.g. compiled for ``spr`` with AMX only), compiling still succeeds and
    ``save`` works; calling the model raises the ``UnsupportedHardwareError`` that loading raised.
    """

    def __init__(self, artifact: Artifact, graph: Any, module: CompiledModule | None,
                 load_error: AccelcError | None, loader: Callable[[], CompiledModule] | None = None,
                 cache_dir: str | os.PathLike | None = None):
        self.artifact = artifact
        self.graph = graph
        self._module = module
        self._load_error = load_error
        self._loader = loader          # loads the module on first use (compiled without accuracy)
        self._cache_dir = cache_dir
        self._variant: str | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        return self.artifact.manifest

    @property
    def signature(self) -> dict[str, Any]:
        return self.artifact.manifest["signature"]

    @property
    def pass_log(self) -> list[dict]:
        return self.artifact.manifest["pass_log"]

    @property
    def accuracy(self) -> dict[str, Any]:
        return self.artifact.manifest.get("accuracy", {})

    def _load(self) -> None:
        if self._module is None and self._load_error is None and self._loader is not None:
            loader, self._loader = self._loader, None
            try:
                self._module = loader()
            except UnsupportedHardwareError as e:
                self._load_error = e

    @property
    def module(self) -> CompiledModule:
        self._load()
        if self._module is None:
            raise self._load_error or AccelcError("the compiled model could not be loaded")
        return self._module

    @property
    def variant(self) -> str | None:
        """The ISA variant the model runs as on this machine; None when this machine cannot run it. A CPU
        artifact not loaded yet is asked through its library alone (no weights copied)."""
        if self._module is None and self._loader is not None and self.manifest["backend"].get("name") == "cpu_amx":
            if self._variant is None:
                from .runtime.module import probe_variant
                self._variant = probe_variant(self.artifact, self._cache_dir) or ""
            return self._variant or None
        self._load()
        return self._module.variant if self._module is not None else None

    def run(self, inputs: Mapping[str, Any] | list[Any] = (), *, out: Any = None, stream: Any = None) -> dict[str, Any]:
        """``CompiledModule.run``: NumPy or DLPack inputs, optional ``out`` buffers, a CUDA ``stream``."""
        return self.module.run(inputs, out=out, stream=stream)

    def __call__(self, *arrays: Any, **named: Any):
        return self.module(*arrays, **named)

    def save(self, path: str | os.PathLike, overwrite: bool = False, layout: str | None = None):
        """Writes the artifact (a stored zip; a directory with ``layout="dir"`` or a trailing slash)."""
        return self.artifact.save(path, overwrite=overwrite, layout=layout)

    def __repr__(self) -> str:
        return (f"<accelc.CompiledModel target={self.manifest['target']} dtype={self.manifest['options']['dtype']} "
                f"variant={self.variant or 'not loadable here'}>")


def compile(model: Any, target: str | Target = "host", *, dtype: str = "fp32", opt_level: int = 2,
            shapes: Mapping[str, Any] | None = None, threads: int = 0, cache_dir: str | os.PathLike | None = None,
            debug: bool = False, dump_after: Iterable[str] = (), stop_after: str | None = None,
            progress: Progress | None = None, measure_accuracy: bool = True,
            fpga: Mapping[str, Any] | None = None, winograd: bool = True, tune: bool = False,
            tune_budget: float = 60.0, allow_tf32: bool = False, emulate: bool = False) -> CompiledModel:
    """Compiles an ONNX model (path, bytes or ``onnx.ModelProto``) for ``target``.

    ``shapes`` fixes symbolic input dimensions (``{"input_ids": (1, 128)}`` or ``"1x128"``); backends
    need every dimension static. ``stop_after`` ends the pass pipeline after that pass and lowers the
    graph as it is then (to bisect a pass that breaks numerics); ``dump_after`` prints the IR after the
    named passes to stderr. ``progress`` receives one line per step (the CLI prints them).

    ``fpga`` sets the FPGA backend's options for FPGA targets (``u280``...): ``bits`` (default 16),
    ``io`` (``io_parallel``/``io_stream``), ``reuse_factor``, ``rounding``/``overflow`` modes,
    ``clock_mhz``, ``accum`` (every dense/conv accumulator; default exact), per-layer ``layers``
    settings and ``calibration`` data ({input name: samples}).

    ``winograd`` (CPU targets): fp32 3x3 stride-1 convolutions may run as Winograd convolutions, 1.5-2.7x
    faster on ResNet-style layers, with a rounding error up to ~10x the direct convolution's (still
    ~1e-6 of the summed magnitudes; see docs/INTERNALS.md). ``False`` keeps every convolution direct.

    ``tune`` (CPU targets): time candidate work splits of every fp32 GEMM and convolution on this machine
    and keep the fastest (backends/cpu_amx/tuning.py). Results are bit-identical either way; measurements
    are cached, and ``tune_budget`` bounds the seconds they may take in one compile.

    ``allow_tf32`` (CUDA targets): fp32 GEMMs and convolutions may run on TF32 tensor cores, whose products
    keep 10 mantissa bits (about 1e-3 relative error per product) instead of fp32's 23. Off by default:
    an fp32 model then computes in fp32 on CUDA cores.

    ``emulate`` (CUDA targets): build the generated CUDA code for the host emulator instead of the GPU
    (g++ only; no nvcc, CUTLASS or GPU needed). The artifact runs on this CPU, slowly, and computes what
    the GPU code would, so its accuracy is measured here; it is for checking numerics, not for deployment
    (backends/cuda/emulate.py says what it does and does not check).
    """
    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    tgt = target if isinstance(target, Target) else get_target(str(target))
    dtype = normalize_dtype(dtype)
    if opt_level not in (0, 1, 2, 3):
        raise AccelcError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    if not isinstance(threads, int) or threads < 0:
        raise AccelcError(f"threads must be a non-negative integer (0: all cores), got {threads!r}")
    fixed_shapes = {str(k): parse_shape(v) for k, v in (shapes or {}).items()}
    if tune and tgt.backend != "cpu_amx":
        raise AccelcError(f"tuning applies to CPU targets; '{tgt.name}' is a {tgt.backend} target (drop --tune)")
    if allow_tf32 and tgt.backend != "cuda":
        raise AccelcError(f"TF32 applies to CUDA targets; '{tgt.name}' is a {tgt.backend} target "
                          f"(drop --allow-tf32)")
    if dtype == "fp16" and tgt.backend == "cpu_amx":
        raise AccelcError(f"dtype fp16 is for CUDA targets; '{tgt.name}' computes in fp32 or bf16 (AMX and "
                          f"AVX-512 BF16 form bf16 products): use --dtype bf16")
    if emulate and tgt.backend != "cuda":
        raise AccelcError(f"emulation applies to CUDA targets; '{tgt.name}' is a {tgt.backend} target "
                          f"(drop --emulate)")
    if isinstance(tune_budget, bool) or not isinstance(tune_budget, (int, float)) or not tune_budget >= 0:
        raise AccelcError(f"tune_budget must be a number of seconds >= 0, got {tune_budget!r}")
    if tgt.backend == "fpga_hls":
        if dtype != "fp32":
            raise AccelcError(f"dtype '{dtype}' does not apply to FPGA targets: they compute in fixed point, "
                              f"chosen per layer from calibration; set the width with fpga={{'bits': N}} "
                              f"(--fpga-bits N)")
        from .backends.fpga_hls.config import FpgaOptions
        fpga = FpgaOptions.parse(fpga)
    elif fpga is not None:
        raise AccelcError(f"fpga options apply to FPGA targets only; '{tgt.name}' is a {tgt.backend} target")

    from .backends import BackendOptions, get_backend
    backend = get_backend(tgt.backend)          # fails early for targets whose backend is not built

    # ---- frontend -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    _refuse_torch_module(model)
    from .frontend.onnx import load_onnx, require_static_inputs
    say("frontend: reading the ONNX model")
    graph = load_onnx(model, shapes=fixed_shapes or None)
    require_static_inputs(graph)
    reference_graph = graph
    timings["frontend"] = time.perf_counter() - t0
    say(f"frontend: {len(graph.nodes)} nodes, {len(graph.constants)} constants")

    # ---- passes -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    from .passes.manager import PassContext, PassManager
    ctx = PassContext(target=tgt, dtype=dtype, opt_level=opt_level, debug=debug, dump_after=set(dump_after),
                      stop_after=stop_after,
                      progress=(lambda name, i, n: say(f"pass {i}/{n}: {name}")) if progress and debug else None)
    say(f"passes: O{opt_level} {dtype} pipeline")
    graph, pass_log = PassManager().run(graph, ctx)
    if not debug:   # debug mode verified after every pass; otherwise check once before code generation
        from .ir.verify import verify
        verify(graph)
    timings["passes"] = time.perf_counter() - t0
    changed = [e["pass"] for e in pass_log if e["changed"]]
    say(f"passes: {len(pass_log)} run, {len(changed)} changed the graph; {len(graph.nodes)} nodes "
        f"({timings['passes']:.1f}s)")

    # ---- backend ------------------------------------------------------------------------------
    missing = backend.unsupported(graph, tgt)
    if missing:
        details = "; ".join(f"{node.op} '{node.name}': {reason}" for node, reason in missing)
        raise UnsupportedOpError(f"{len(missing)} node(s) cannot be compiled for target '{tgt.name}': {details}",
                                 [(node.name, reason) for node, reason in missing])
    t0 = time.perf_counter()
    say(f"backend: generating and building code for '{tgt.name}' ({len(graph.nodes)} nodes)")
    parts = backend.lower(graph, tgt, BackendOptions(threads=threads, cache_dir=_str(cache_dir), debug=debug,
                                                     verbose=debug, fpga=fpga, winograd=bool(winograd),
                                                     tune=bool(tune), tune_budget_s=float(tune_budget),
                                                     allow_tf32=bool(allow_tf32), emulate=bool(emulate),
                                                     progress=progress))
    timings["backend"] = time.perf_counter() - t0

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "accelc_version": __version__,
        "target": tgt.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": _describe_model(model, reference_graph),
        "signature": signature_of(graph),
        "options": {"dtype": dtype, "opt_level": opt_level, "threads": threads, "winograd": bool(winograd),
                    "tune": bool(tune), **({"allow_tf32": True} if allow_tf32 else {}),
                    **({"emulate": True} if emulate else {}),
                    "shapes": {k: list(v) for k, v in fixed_shapes.items()},
                    **({"stop_after": stop_after} if stop_after else {})},
        "pass_log": pass_log,
        "accuracy": {},
        "backend": parts.manifest,
    }
    artifact = pack(manifest, parts.files)

    # ---- load and measure ---------------------------------------------------------------------
    module: CompiledModule | None = None
    load_error: AccelcError | None = None

    def loader() -> CompiledModule:
        return CompiledModule(artifact, threads=threads, cache_dir=_runtime_cache(cache_dir))
    if not measure_accuracy:
        # loaded on first use: creating the model copies and checks every weight (BERT-base: ~1 s)
        artifact.manifest["accuracy"] = {"skipped": "not requested"}
        artifact.manifest["timings"] = {k: round(v, 3) for k, v in timings.items()}
        return CompiledModel(artifact, graph, None, None, loader, _runtime_cache(cache_dir))
    try:
        module = loader()
    except UnsupportedHardwareError as e:
        load_error = e
    if module is None:
        artifact.manifest["accuracy"] = {"skipped": str(load_error)}     # it says what this machine lacks
    else:
        t0 = time.perf_counter()
        say("accuracy: running the artifact and the fp32 reference on a seeded random input")
        artifact.manifest["accuracy"] = measure(module, reference_graph)
        timings["accuracy"] = time.perf_counter() - t0
    artifact.manifest["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return CompiledModel(artifact, graph, module, load_error)


def signature_of(graph: Any) -> dict[str, Any]:
    def port(name: str) -> dict[str, Any]:
        t = graph.types[name]
        return {"name": name, "dtype": t.dtype.short, "shape": [int(d) for d in t.shape]}
    return {"inputs": [port(n) for n in graph.inputs], "outputs": [port(n) for n in graph.outputs]}


def random_inputs(graph: Any, seed: int = ACCURACY_SEED) -> dict[str, np.ndarray]:
    """Seeded inputs for each graph input: standard normal floats, 0/1 integers (valid as indices into
    any non-trivial table, e.g. token ids), random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        t = graph.types[name]
        shape = tuple(int(d) for d in t.shape)
        if t.dtype.is_float:
            feeds[name] = rng.standard_normal(shape, dtype=np.float32).astype(t.dtype.np)
        elif t.dtype.np == np.bool_:
            feeds[name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[name] = rng.integers(0, 2, shape).astype(t.dtype.np)
    return feeds


def compare_outputs(actual: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Max/mean absolute error, cosine similarity, and top-1 agreement for 2-D outputs (classifiers)."""
    a = np.asarray(actual).astype(np.float64).ravel()
    r = np.asarray(reference).astype(np.float64).ravel()
    if a.size == 0:
        return {"max_abs_error": 0.0, "mean_abs_error": 0.0, "cosine": 1.0}
    diff = np.abs(a - r)
    finite = np.isfinite(diff)
    metrics: dict[str, Any] = {
        "max_abs_error": float(diff[finite].max()) if finite.any() else float("nan"),
        "mean_abs_error": float(diff[finite].mean()) if finite.any() else float("nan"),
    }
    if not finite.all():
        metrics["nonfinite_mismatches"] = int((~finite).sum())
    na, nr = np.linalg.norm(a), np.linalg.norm(r)
    metrics["cosine"] = float(a @ r / (na * nr)) if na > 0 and nr > 0 else float(np.array_equal(a, r))
    ref = np.asarray(reference)
    if ref.ndim == 2 and ref.shape[1] > 1:
        metrics["top1_agreement"] = float(np.mean(np.asarray(actual).astype(np.float32).argmax(1) == ref.argmax(1)))
    return metrics


def measure(module: CompiledModule, reference_graph: Any, seed: int = ACCURACY_SEED) -> dict[str, Any]:
    """Runs the artifact and the fp32 reference interpreter on the same seeded input and compares."""
    from .ir import evaluate
    feeds = random_inputs(reference_graph, seed)
    try:
        got = module.run({k: v.astype(_port_dtype(module, k), copy=False) for k, v in feeds.items()})
    except AccelcError as e:
        return {"skipped": f"the artifact failed to run: {e}"}
    want = evaluate(reference_graph, feeds)
    outputs = {}
    for name, ref_name in zip(module.output_names, reference_graph.outputs):
        if np.asarray(want[ref_name]).dtype.kind in "fc" or got[name].dtype.kind == "V":
            outputs[name] = compare_outputs(got[name], want[ref_name])
        else:
            outputs[name] = {"exact_match": bool(np.array_equal(got[name], want[ref_name]))}
    summary: dict[str, Any] = {"reference": "fp32 reference interpreter", "seed": seed, "outputs": outputs}
    floats = [m for m in outputs.values() if "cosine" in m]
    if floats:
        summary["max_abs_error"] = max(m["max_abs_error"] for m in floats)
        summary["mean_abs_error"] = max(m["mean_abs_error"] for m in floats)
        summary["min_cosine"] = min(m["cosine"] for m in floats)
    return summary


def _port_dtype(module: CompiledModule, name: str) -> np.dtype:
    from .runtime import numpy_dtype
    spec = next(p for p in module.signature["inputs"] if p["name"] == name)
    return numpy_dtype(spec["dtype"])


def _refuse_torch_module(model: Any) -> None:
    cls = type(model)
    if any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in cls.__mro__):
        raise ModelLoadError("compiling a torch.nn.Module directly is not supported yet; export it first with "
                             "torch.onnx.export(module, example_inputs, 'model.onnx') and compile the .onnx file")


def _describe_model(model: Any, graph: Any) -> dict[str, Any]:
    if isinstance(model, (str, os.PathLike)):
        source = os.path.basename(os.fspath(model))
    elif isinstance(model, (bytes, bytearray)):
        source = "<bytes>"
    else:
        source = f"<{type(model).__name__}>"
    return {"source": source, "name": getattr(graph, "name", ""), "nodes": len(graph.nodes)}


def _str(path: str | os.PathLike | None) -> str | None:
    return os.fspath(path) if path is not None else None


def _runtime_cache(cache_dir: str | os.PathLike | None):
    return os.path.join(os.fspath(cache_dir), "runtime") if cache_dir is not None else None
