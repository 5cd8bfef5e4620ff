"""The ``accelc`` command line: compile, run, inspect, targets.

Exit codes: 0 success; 1 an ``AccelcError`` (bad model, bad input, tampered artifact... printed as one
line ``accelc: error: <message>``); 2 usage errors (argparse); 3 an internal error (a bug: one line, and
the traceback with ``--debug``). Results go to stdout, progress lines to stderr (``--quiet`` hides them),
so ``accelc run ... > out.txt`` captures only results.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import AccelcError, InputMismatchError, ModelLoadError, ShapeError

EXIT_ERROR = 1
EXIT_INTERNAL = 3


# ---- helpers ---------------------------------------------------------------------------------------

class _Progress:
    """Progress lines on stderr with the time since the command started."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


def _shape_arg(text: str) -> tuple[str, str]:
    name, sep, dims = text.rpartition("=")
    if not sep or not name or not dims:
        raise argparse.ArgumentTypeError(f"expected NAME=DIMS such as input_ids=1x128, got '{text}'")
    return name, dims


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got '{text}'")
    return value


def _count_arg(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got '{text}'")
        return value
    return parse


def _input_arg(text: str) -> tuple[str | None, str]:
    name, sep, path = text.partition("=")
    return (name, path) if sep else (None, text)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _is_artifact(path: Path) -> bool:
    if path.is_dir():
        return (path / "manifest.json").is_file()
    try:
        with zipfile.ZipFile(path) as zf:
            return "manifest.json" in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return path.suffix == ".accelc"   # a damaged artifact: let the artifact reader explain


def _accuracy_line(acc: dict[str, Any]) -> str:
    if not acc:
        return "accuracy: not measured"
    if "skipped" in acc:
        return f"accuracy: skipped ({acc['skipped']})"
    if "min_cosine" in acc:
        text = (f"accuracy vs fp32 reference: max abs err {acc['max_abs_error']:.3g}, mean abs err "
                f"{acc['mean_abs_error']:.3g}, cosine {acc['min_cosine']:.6f}")
        top1 = [m["top1_agreement"] for m in acc.get("outputs", {}).values() if "top1_agreement" in m]
        if top1:
            text += f", top-1 agreement {min(top1):.3f}"
        return text
    exact = all(m.get("exact_match", True) for m in acc.get("outputs", {}).values())
    return f"accuracy vs fp32 reference: {'exact match' if exact else 'MISMATCH'}"


# ---- compile ---------------------------------------------------------------------------------------

def cmd_compile(args: argparse.Namespace) -> int:
    from .compiler import compile as accelc_compile
    from .runtime.artifact import write

    model = Path(args.model)
    if not model.exists():
        raise ModelLoadError(f"model file '{model}' does not exist")
    out = Path(args.output) if args.output else Path(model.stem + ".accelc")
    if out.exists() and not args.force:
        raise AccelcError(f"output '{out}' already exists; pass --force to overwrite it or choose another -o path")
    shapes: dict[str, str] = {}
    for name, dims in args.shape:
        if name in shapes:
            raise ShapeError(f"--shape {name}=... is given twice; give each input once")
        shapes[name] = dims
    fpga = _fpga_options(args)
    project_dir = Path(args.hls_project) if args.hls_project else None
    if project_dir is not None and project_dir.exists() and any(project_dir.iterdir()) and not args.force:
        raise AccelcError(f"--hls-project directory '{project_dir}' is not empty; pass --force to overwrite "
                          f"the files accelc writes there, or choose another directory")
    progress = _Progress(args.quiet)
    compiled = accelc_compile(str(model), args.target, dtype=args.dtype, opt_level=args.opt_level,
                              shapes=shapes or None, threads=args.threads, cache_dir=args.cache_dir,
                              debug=args.debug, dump_after=args.dump_after, stop_after=args.stop_after,
                              progress=progress, measure_accuracy=not args.no_accuracy, fpga=fpga,
                              winograd=not args.no_winograd, tune=args.tune, tune_budget=args.tune_budget,
                              allow_tf32=args.allow_tf32, emulate=args.emulate)
    progress(f"writing {out}")
    path = write(compiled.artifact, out, overwrite=args.force, layout="dir" if args.output_dir_layout else None)
    report = compiled.manifest["backend"].get("report")
    if report is not None:
        if project_dir is not None:
            prefix = compiled.manifest["backend"].get("project", "project/")
            for name, data in compiled.artifact.members.items():
                if name.startswith(prefix):
                    dest = project_dir / name[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(data)
            print(f"wrote the Vitis HLS project to {project_dir} (vitis_hls -f build_prj.tcl to synthesize)")
        print(_fpga_summary(report))
    size = sum(len(b) for b in compiled.artifact.members.values())
    man = compiled.manifest
    variants = man["backend"].get("variants", [])
    here = compiled.variant or "cannot run on this machine"
    numbers = "fixed point" if report is not None else man['options']['dtype']
    print(f"wrote {path} (target {man['target']}, {numbers}, variants {','.join(variants) or '?'}; "
          f"runs here as: {here}; {_fmt_bytes(size)})")
    print(_accuracy_line(man.get("accuracy", {})))
    return 0


def _fpga_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """FPGA options from --fpga-* flags; None when none is given (the backend's defaults apply)."""
    opts: dict[str, Any] = {}
    if args.fpga_config:
        try:
            loaded = json.loads(Path(args.fpga_config).read_text())
        except FileNotFoundError:
            raise AccelcError(f"--fpga-config: file '{args.fpga_config}' does not exist") from None
        except (OSError, ValueError) as e:
            raise AccelcError(f"--fpga-config: '{args.fpga_config}' is not valid JSON ({e})") from None
        if not isinstance(loaded, dict):
            raise AccelcError("--fpga-config must hold a JSON object such as "
                              "{\"bits\": 16, \"layers\": {\"fc1\": {\"reuse_factor\": 4}}}")
        opts.update(loaded)
    for flag, key in (("fpga_bits", "bits"), ("fpga_io", "io"), ("reuse_factor", "reuse_factor"),
                      ("clock_mhz", "clock_mhz"), ("fpga_accum", "accum")):
        if getattr(args, flag) is not None:
            opts[key] = getattr(args, flag)
    if args.calibration:
        data = _load_calibration(args.calibration)
        opts["calibration"] = data
    return opts or None


def _load_calibration(path: str) -> dict[str, np.ndarray]:
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise AccelcError(f"--calibration: file '{path}' does not exist") from None
    except (ValueError, OSError) as e:
        raise AccelcError(f"--calibration: '{path}' is not a readable .npz file ({e})") from None
    if isinstance(z, np.ndarray):     # a .npy file: one array, no input names
        raise AccelcError(f"--calibration: '{path}' is a single array; save one array per input "
                          f"with numpy.savez(path, input_name=samples)")
    with z:
        return {k: z[k] for k in z.files}


def _fpga_summary(report: dict[str, Any]) -> str:
    t, cap = report["total"], report["capacity"]
    fx = report.get("float_vs_fixed", {})
    lines = [f"FPGA estimate ({report['part']} @ {report['clock_mhz']:g} MHz, {report['io']}; a model, not synthesis):",
             f"  {'layer':<28} {'kind':<11} {'type':<22} {'DSP':>6} {'BRAM':>6} {'LUT':>8} {'lat':>6} {'II':>4}"]
    for layer in report["layers"]:
        lines.append(f"  {layer['name'][:28]:<28} {layer['kind'][:11]:<11} {str(layer['type'])[:22]:<22} "
                     f"{layer['dsp']:>6} {layer['bram_18k']:>6} {layer['lut']:>8} {layer['latency']:>6} {layer['ii']:>4}")
    lines.append(f"  total: DSP {t['dsp']}/{cap['dsp']}, BRAM18K {t['bram_18k']}/{cap['bram_18k']}, "
                 f"LUT {t['lut']}/{cap['lut']}, FF {t['ff']}/{cap['ff']}; latency {t['latency_cycles']} cycles = "
                 f"{t['latency_ns']:g} ns, II {t['ii']}")
    if fx:
        lines.append(f"  fixed vs float model on {fx.get('samples')} calibration samples: max abs error "
                     f"{fx['max_abs_error']:.3g}, mean {fx['mean_abs_error']:.3g}")
    for f in report.get("findings", []):
        lines.append(f"  {f['severity']}: layer '{f['layer']}': {f['message']}")
    return "\n".join(lines)


# ---- run -------------------------------------------------------------------------------------------

def _load_npy(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputMismatchError(f"{what}: file '{path}' does not exist") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputMismatchError(f"{what}: '{path}' is not a readable .npy file ({e}); save arrays with "
                                 f"numpy.save") from None


def _gather_inputs(args: argparse.Namespace, signature: dict[str, Any]) -> dict[str, np.ndarray]:
    from .runtime import numpy_dtype
    specs = {p["name"]: p for p in signature["inputs"]}
    names = list(specs)
    feeds: dict[str, np.ndarray] = {}
    for name, path in args.input:
        if name is None:
            if len(names) != 1:
                raise InputMismatchError(f"--input {path}: the model takes {len(names)} inputs "
                                         f"({', '.join(names)}); name it, e.g. --input {names[0] if names else 'x'}={path}")
            name = names[0]
        if name not in specs:
            raise InputMismatchError(f"--input {name}=...: the model has no input '{name}'; its inputs are "
                                     f"{', '.join(names) or 'none'}")
        if name in feeds:
            raise InputMismatchError(f"--input {name}=... is given twice")
        arr = _load_npy(path, f"--input {name}")
        want = numpy_dtype(specs[name]["dtype"])
        if arr.dtype.kind == "V" and arr.dtype.itemsize == want.itemsize and want.kind == "V":
            arr = arr.view(want)       # bf16 arrays come back from .npy as raw 2-byte voids
        if arr.dtype != want:
            raise InputMismatchError(f"--input {name}: '{path}' holds {arr.dtype.name}, the model expects "
                                     f"{want.name}; save it as {want.name} (np.save(path, x.astype('{want.name}')))")
        feeds[name] = arr
    if args.random:
        rng = np.random.default_rng(0)
        for name in names:
            if name not in feeds:
                spec = specs[name]
                want = numpy_dtype(spec["dtype"])
                if want.kind in "fV":
                    feeds[name] = rng.standard_normal(spec["shape"], dtype=np.float32).astype(want)
                else:
                    feeds[name] = rng.integers(0, 2, spec["shape"]).astype(want)
    missing = [n for n in names if n not in feeds]
    if missing:
        hints = " ".join(f"--input {n}=FILE.npy" for n in missing)
        described = ", ".join(f"{n} ({specs[n]['dtype']} {_fmt_shape(specs[n]['shape'])})" for n in missing)
        raise InputMismatchError(f"missing input(s) {described}; pass {hints} (or --random for seeded random data)")
    return feeds


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "output"


def _check_against_onnx(model_path: str, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                        dtype: str) -> list[str]:
    """Runs ONNX Runtime on the same inputs; returns one line per output and raises on a mismatch."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise AccelcError("--check-against-onnx needs ONNX Runtime; install it with pip install onnxruntime") from None
    if not Path(model_path).exists():
        raise ModelLoadError(f"--check-against-onnx: model file '{model_path}' does not exist")
    try:
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        ort_inputs = {i.name for i in sess.get_inputs()}
        ref = sess.run(None, {k: (v.astype(np.float32) if v.dtype.kind == "V" else v)
                              for k, v in feeds.items() if k in ort_inputs})
    except Exception as e:  # onnxruntime raises its own exception types
        raise AccelcError(f"--check-against-onnx: ONNX Runtime could not run '{model_path}': "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    ort_names = [o.name for o in sess.get_outputs()]
    lines, failures = [], []
    from .compiler import compare_outputs
    for (name, got), want_name, want in zip(outputs.items(), ort_names, ref):
        want = np.asarray(want)
        if got.shape != want.shape:
            failures.append(f"{name}: shape {got.shape} vs ONNX Runtime {want.shape}")
            continue
        if want.dtype.kind not in "fc":
            ok = np.array_equal(got, want)
            lines.append(f"  {name}: {'exact match' if ok else 'DIFFERS'} with ONNX Runtime")
            if not ok:
                failures.append(f"{name}: values differ")
            continue
        m = compare_outputs(got, want)
        if dtype in ("bf16", "fp16", "fixed"):      # reduced precision: judged by cosine similarity
            ok = m["cosine"] > 0.999
            rule = "cosine > 0.999"
        else:
            g, w = got.astype(np.float64), want.astype(np.float64)
            ok = bool(np.allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max(initial=0)))))
            rule = "rtol 1e-4"
        lines.append(f"  {name}: max abs err {m['max_abs_error']:.3g}, cosine {m['cosine']:.6f} "
                     f"({'ok' if ok else 'MISMATCH'}, {rule})")
        if not ok:
            failures.append(f"{name}: max abs err {m['max_abs_error']:.3g}, cosine {m['cosine']:.6f} ({rule} failed)")
    if failures:
        print("checked against ONNX Runtime:\n" + "\n".join(lines))
        raise AccelcError("outputs differ from ONNX Runtime: " + "; ".join(failures))
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import load
    if not args.profile and (args.runs is not None or args.profile_top is not None or args.warmup is not None):
        raise AccelcError("--runs, --warmup and --profile-top go with --profile (accelc run ... --profile --runs 20)")
    progress = _Progress(args.quiet)
    progress(f"loading {args.artifact}")
    module = load(args.artifact, threads=args.threads, cache_dir=args.cache_dir)
    feeds = _gather_inputs(args, module.signature)
    if args.output_dir:
        out_dir = Path(args.output_dir)
        targets = {n: out_dir / f"{_safe_filename(n)}.npy" for n in module.output_names}
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing and not args.force:
            raise AccelcError(f"'{existing[0]}' already exists; pass --force to overwrite or choose another "
                              f"--output-dir")
    progress(f"running ({module.variant})")
    t0 = time.perf_counter()
    outputs = module.run(feeds)
    elapsed = time.perf_counter() - t0
    print(f"ran {args.artifact} on {module.variant} in {elapsed * 1e3:.2f} ms")
    for name, arr in outputs.items():
        vals = arr.astype(np.float64) if arr.dtype.kind in "fV" else arr
        summary = (f"min {vals.min():.6g} max {vals.max():.6g} mean {vals.mean():.6g}" if arr.size else "empty")
        print(f"  {name}: {arr.dtype.name} {_fmt_shape(arr.shape)}  {summary}")
    if args.check_against_onnx:
        fixed = module.manifest.get("backend", {}).get("name") == "fpga_hls"
        lines = _check_against_onnx(args.check_against_onnx, feeds, outputs,
                                    "fixed" if fixed else module.manifest.get("options", {}).get("dtype", "fp32"))
        print("checked against ONNX Runtime: ok\n" + "\n".join(lines))
    if args.output_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, path in targets.items():
                np.save(path, outputs[name])
                print(f"saved {path}")
        except OSError as e:
            raise AccelcError(f"cannot write outputs to '{out_dir}': {e.strerror or e}") from None
    if args.profile:
        runs = 10 if args.runs is None else args.runs
        warmup = 2 if args.warmup is None else args.warmup
        progress(f"profiling: {warmup} warmup runs, then {runs} timed runs")
        report = module.profile(feeds, runs=runs, warmup=warmup)
        print(report.table(top=25 if args.profile_top is None else args.profile_top))
    return 0


# ---- inspect ---------------------------------------------------------------------------------------

def _print_manifest(man: dict[str, Any]) -> None:
    from .runtime.artifact import FORMAT_VERSION
    opts = man.get("options", {})
    back = man.get("backend", {})
    print(f"artifact format {man.get('format_version')} (this accelc reads <= {FORMAT_VERSION}), "
          f"built by accelc {man.get('accelc_version', '?')} on {man.get('created', '?')}")
    print(f"target: {man.get('target')}  dtype: {opts.get('dtype')}  opt level: O{opts.get('opt_level')}  "
          f"threads: {opts.get('threads') or 'all cores'}")
    print(f"backend: {back.get('name')}  library: {back.get('library')}  C ABI: {back.get('abi_version')}  "
          f"variants: {', '.join(back.get('variants', [])) or '?'}")
    for key in ("arena_bytes", "weights_bytes"):
        if key in back:
            print(f"  {key.replace('_', ' ')}: {_fmt_bytes(int(back[key]))}")
    rewrites = [f"{back[key]} {label}" for key, label in (("nhwc_convolutions", "channels-last convolutions"),
                                                          ("winograd_convolutions", "of them Winograd"),
                                                          ("fused_attention", "fused attentions"),
                                                          ("merged_gemm_groups", "merged GEMM groups"))
                if back.get(key)]
    if rewrites:
        print(f"  backend rewrites: {', '.join(rewrites)}")
    tuned = back.get("tuning")
    if tuned:
        if tuned.get("skipped"):
            print(f"  tuning: skipped ({tuned['skipped']})")
        else:
            print(f"  tuning: {tuned.get('retuned_sites', 0)} of {tuned.get('sites', 0)} call sites run a measured "
                  f"work split ({tuned.get('variant')} variant, {tuned.get('threads')} threads)")
    sig = man.get("signature", {})
    print("inputs:")
    for p in sig.get("inputs", []):
        print(f"  {p['name']}: {p['dtype']} {_fmt_shape(p['shape'])}")
    print("outputs:")
    for p in sig.get("outputs", []):
        print(f"  {p['name']}: {p['dtype']} {_fmt_shape(p['shape'])}")
    log = man.get("pass_log", [])
    if log:
        print("pass log:")
        width = max(len(e["pass"]) for e in log)
        for e in log:
            print(f"  {e['pass']:<{width}}  {e['nodes_before']:>5} -> {e['nodes_after']:<5} "
                  f"{e.get('seconds', 0) * 1e3:8.1f} ms  {e['summary']}")
    print(_accuracy_line(man.get("accuracy", {})))
    for name, m in man.get("accuracy", {}).get("outputs", {}).items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()))
    if back.get("report"):
        print(_fpga_summary(back["report"]))
    members = man.get("members", {})
    shown = [m for m in members if not m.startswith("project/")]
    project = len(members) - len(shown)
    print(f"members: {', '.join(shown)}" + (f" + {project} files of the HLS project under project/" if project else ""))


def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise AccelcError(f"'{path}' does not exist; give an .onnx model or an .accelc artifact")
    if _is_artifact(path):
        from .runtime import read_manifest
        man = read_manifest(path)
        if args.json:
            print(json.dumps(man, indent=2))
        else:
            _print_manifest(man)
        return 0
    from .frontend.onnx import load_onnx
    from .ir import print_graph
    shapes = dict(args.shape)
    graph = load_onnx(str(path), shapes={k: _parse_dims(v) for k, v in shapes.items()} or None)
    if args.opt_level is not None:
        from .frontend.onnx import require_static_inputs
        from .passes.manager import PassContext, PassManager
        from .targets import get_target
        require_static_inputs(graph)
        ctx = PassContext(target=get_target(args.target), dtype=args.dtype, opt_level=args.opt_level)
        graph, log = PassManager().run(graph, ctx)
        for e in log:
            print(f"// {e['pass']}: {e['summary']}")
    print(print_graph(graph))
    hist = graph.ops_histogram()
    print(f"// {len(graph.nodes)} nodes: " + ", ".join(f"{op} {n}" for op, n in hist.items()))
    return 0


def _parse_dims(text: str):
    from .compiler import parse_shape
    return parse_shape(text)


# ---- targets ---------------------------------------------------------------------------------------

def cmd_targets(args: argparse.Namespace) -> int:
    from .errors import TargetError
    from .targets import TARGETS
    try:
        from .backends.cpu_amx.isa import cpu_flags, runnable_variants, variants_for
        flags = cpu_flags()
        host_variants = runnable_variants(flags)
    except ImportError:
        flags, host_variants, variants_for = frozenset(), [], None
    rows = [("target", "backend", "variants built", "on this machine", "description")]
    fallback = None
    for t in TARGETS.values():
        if t.backend == "fpga_hls":
            rows.append((t.name, t.backend, "csim", _fpga_status(),
                         f"{t.description} ({t.part}, {t.clock_mhz:g} MHz, {t.resources.get('dsp', 0)} DSP)"))
            continue
        if t.backend == "cuda":
            import shutil
            rows.append((t.name, t.backend, t.sm, "compiles (nvcc)" if shutil.which("nvcc") else "needs nvcc",
                         t.description))
            continue
        if variants_for is None:
            rows.append((t.name, t.backend, "-", "not in this version", t.description))
            continue
        try:
            built = variants_for(t, flags)
        except TargetError:
            built = []
        runs = next((v for v in built if v in host_variants), None)
        if runs and built and runs != built[0]:
            fallback = runs
        rows.append((t.name, t.backend, ",".join(built) or "-",
                     f"runs ({runs})" if runs else "compiles, cannot run", t.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r[:4], widths)) + "  " + r[4])
    if fallback:
        print(f"\nthis CPU lacks AMX: artifacts of AMX targets run their {fallback.upper()} fallback variant here "
              f"(same results, slower).")
    return 0


def _fpga_status() -> str:
    from .errors import BackendError
    try:
        from .backends.fpga_hls.toolchain import ap_types_dir
        ap_types_dir()
        return "C-simulates"
    except BackendError:
        return "needs .[fpga] extra"


# ---- parser ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="verify the IR after every pass and show tracebacks of internal errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")

    parser = argparse.ArgumentParser(prog="accelc", description="Ahead-of-time compiler for neural networks.")
    parser.add_argument("--version", action="version", version=f"accelc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", parents=[common], help="compile an ONNX model into an .accelc artifact")
    p.add_argument("model", help="the .onnx model")
    p.add_argument("--target", "-t", default="host", help="target name (see `accelc targets`); default host")
    p.add_argument("-o", "--output", help="artifact path (default: MODEL_STEM.accelc in this directory)")
    p.add_argument("--shape", action="append", default=[], type=_shape_arg, metavar="NAME=DIMS",
                   help="fix an input's shape, e.g. --shape input_ids=1x128 (repeatable)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="GEMM/convolution compute dtype (default fp32; fp16 for CUDA targets)")
    p.add_argument("-O", dest="opt_level", type=int, choices=[0, 1, 2, 3], default=2, metavar="LEVEL",
                   help="optimization level -O0..-O3 (default -O2)")
    p.add_argument("--threads", type=int, default=0, help="threads the artifact uses (default 0: all cores)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--dump-after", action="append", default=[], metavar="PASS",
                   help="print the IR after PASS to stderr (repeatable)")
    p.add_argument("--stop-after", metavar="PASS", help="end the pass pipeline after PASS, then lower as is")
    p.add_argument("--no-accuracy", action="store_true", help="skip measuring accuracy against the fp32 reference")
    p.add_argument("--no-winograd", action="store_true",
                   help="CPU: run 3x3 convolutions directly, never as Winograd convolutions (which are faster "
                        "but round differently; see docs/INTERNALS.md)")
    p.add_argument("--tune", action="store_true",
                   help="CPU: time candidate work splits of each GEMM/convolution on this machine and keep the "
                        "fastest (same results; measurements cached in the build cache)")
    p.add_argument("--tune-budget", type=_seconds_arg, default=60.0, metavar="SECONDS",
                   help="CPU: most seconds --tune may measure in one compile (default 60)")
    p.add_argument("--allow-tf32", action="store_true",
                   help="CUDA: fp32 GEMMs and convolutions may use TF32 tensor cores (10-bit mantissa "
                        "products, ~1e-3 relative error each); default: fp32 on CUDA cores")
    p.add_argument("--emulate", action="store_true",
                   help="CUDA: build the generated CUDA code for a host emulator (g++, no GPU) to check its "
                        "numbers here; slow, not for deployment")
    p.add_argument("--dir", dest="output_dir_layout", action="store_true",
                   help="write the artifact as a directory instead of a zip")
    p.add_argument("--cache-dir", help="build cache directory (default ~/.cache/accelc)")
    g = p.add_argument_group("FPGA targets (u280, u55c, u250, zcu104, vck190)")
    g.add_argument("--fpga-bits", type=int, default=None, metavar="N",
                   help="fixed-point width of activations and weights (default 16)")
    g.add_argument("--fpga-io", choices=["io_parallel", "io_stream"], default=None,
                   help="io_parallel (arrays, lowest latency; default) or io_stream (streams, DATAFLOW)")
    g.add_argument("--reuse-factor", type=int, default=None, metavar="R",
                   help="multiplies sharing one DSP in every layer (default 1)")
    g.add_argument("--clock-mhz", type=float, default=None, metavar="MHZ", help="clock (default: the part's)")
    g.add_argument("--fpga-accum", metavar="TYPE", default=None,
                   help="accumulator of every dense/conv layer, e.g. 'fixed<16,6,TRN,WRAP>' (default: exact, "
                        "wide enough that no sum is rounded)")
    g.add_argument("--fpga-config", metavar="FILE.json",
                   help="options as JSON, incl. per-layer settings: {\"layers\": {\"NAME\": {\"result\": "
                        "\"fixed<18,8>\", \"reuse_factor\": 4}}}")
    g.add_argument("--calibration", metavar="FILE.npz",
                   help="calibration samples, one array per input (numpy.savez(path, x=samples))")
    g.add_argument("--hls-project", metavar="DIR", help="also write the Vitis HLS project into DIR")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", parents=[common], help="run an .accelc artifact on .npy inputs")
    p.add_argument("artifact")
    p.add_argument("--input", "-i", action="append", default=[], type=_input_arg, metavar="NAME=FILE.npy",
                   help="an input array (repeatable); NAME= may be omitted for a one-input model")
    p.add_argument("--random", action="store_true", help="feed seeded random data to inputs not given")
    p.add_argument("--output-dir", help="save each output as NAME.npy in this directory")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--check-against-onnx", metavar="MODEL", help="also run MODEL with ONNX Runtime and compare")
    p.add_argument("--threads", type=int, default=0, help="threads (default: as compiled)")
    p.add_argument("--cache-dir", help="where the model library is unpacked (default ~/.cache/accelc)")
    g = p.add_argument_group("profiling (CPU artifacts)")
    g.add_argument("--profile", action="store_true",
                   help="also time every graph node over --runs runs and print the slowest nodes and the time per op")
    g.add_argument("--runs", type=_count_arg(1), default=None, metavar="N", help="timed runs (default 10)")
    g.add_argument("--warmup", type=_count_arg(0), default=None, metavar="N",
                   help="untimed runs before them (default 2)")
    g.add_argument("--profile-top", type=_count_arg(0), default=None, metavar="K",
                   help="nodes listed, slowest first (default 25; the rest are summed on one line)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", parents=[common], help="print an artifact's manifest or a model's IR")
    p.add_argument("path", help="an .accelc artifact or an .onnx model")
    p.add_argument("--json", action="store_true", help="artifacts: print the raw manifest JSON")
    p.add_argument("--shape", action="append", default=[], type=_shape_arg, metavar="NAME=DIMS")
    p.add_argument("-O", dest="opt_level", type=int, choices=[0, 1, 2, 3], default=None, metavar="LEVEL",
                   help="models: run the pass pipeline of this level and print the optimized IR")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--target", "-t", default="host")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("targets", parents=[common], help="list the targets and what runs on this machine")
    p.set_defaults(func=cmd_targets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)     # exits 2 on usage errors
    try:
        return args.func(args)
    except AccelcError as e:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(e).split("\n"))
        print(f"accelc: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("accelc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as e:  # a bug: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"accelc: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(this is a bug in accelc; rerun with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
