"""CUDA backend benchmark: accelc vs PyTorch eager vs torch.compile(max-autotune), same GPU.

Cases (each in its own child process, so that a crash or a hang of one case is reported and the next
case still runs; the parent keeps the whole script inside --budget-s, 215 s by default):

* ``bert_b1`` / ``bert_b32``: a BERT-base-like encoder (12 layers, d 768, 12 heads, ffn 3072, seq 128,
  weights drawn afresh per layer), bf16 compute, built as the pass pipeline leaves it
  (tests/test_backend_cuda.py's builder).
* ``membound``: a memory-bound fused kernel (Add + Gelu over 64M fp32) vs device-to-device copy bandwidth.
* ``onnx_bert_b1`` / ``onnx_bert_b32`` / ``resnet50_b1`` / ``resnet50_b64`` (not in the default set: run
  them with ``--cases``): the product path end to end. A PyTorch model (nn.TransformerEncoder, BERT-base
  sizes, seq 128; a ResNet-50 built like torchvision's) is exported to ONNX, compiled with
  ``accelc.compile(..., dtype="bf16")`` (``--dtype fp16``: fp16, peers in fp16 too) and run through
  ``CompiledModule.run`` on torch CUDA tensors
  (DLPack, ``out=``, torch's current stream). Also printed: the cold or warm compile time, and the cosine
  of accelc's output against the fp32 eager model's. ``--compile-only`` stops after compiling, which
  also works without a GPU (to check the path, or to warm the build cache).
* any case with ``_sm80`` appended (``bert_b32_sm80``): accelc alone, compiled with ``ACCELC_CUDA_GEMM=sm80``
  (every GEMM on CUTLASS 2.x), the baseline of the sm_90a CUTLASS 3 GEMMs; with ``_nchw`` appended
  (``resnet50_b64_nchw``): accelc alone, compiled with ``ACCELC_CUDA_LAYOUT=nchw`` (im2col + batched GEMM
  convolutions), the baseline of the channels-last ones.

accelc is timed exactly as a user would run it: ``accelc_run_device`` on torch's current stream, with
CUDA events recorded on that stream around each call (median of 20). The library enqueues all of a run
(input copies, the CUDA graph launch, output copies) on the stream it is given, so the events bracket
the work. Two cross-checks make a wrong bracket visible: a wall-clock time (``time.perf_counter``
around N back-to-back runs, then ``torch.cuda.synchronize()``), and the achieved TFLOP/s (the GEMM
flops of the graph over the event time) next to the GPU's dense bf16 peak. Eager and torch.compile are
timed the same way. Prints one line per measurement; writes JSON to --out. For accelc (and eager, in
the bert cases) a CUPTI trace through torch.profiler then lists the GPU time per kernel, the layer index
folded out of the generated kernels' names, so a slow run says which kernels to work on.

Usage: python3 bench/bench_cuda.py [--out bench.json] [--budget-s 215] [--cases bert_b1,bert_b32,membound]
       python3 bench/bench_cuda.py --cases onnx_bert_b1,onnx_bert_b32,resnet50_b1,resnet50_b64 --budget-s 540
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("bert_b1", "bert_b32", "membound")
ONNX_CASES = {"onnx_bert_b1": ("bert", 1), "onnx_bert_b32": ("bert", 32), "resnet50_b1": ("resnet50", 1),
              "resnet50_b64": ("resnet50", 64)}
RESERVE_S = {"bert_b1": 0, "bert_b32": 0, "membound": 30}   # time a case leaves for the cases after it
MIN_CASE_S = {"bert_b1": 60, "bert_b32": 60, "membound": 25, **{c: 90 for c in ONNX_CASES}}


# ---- parent: runs every case in a child process, within the time budget --------------------------------------
def _run_cases(args) -> int:
    t_end = time.monotonic() + args.budget_s
    cases = [c for c in args.cases.split(",") if c]
    results: dict = {"cases": {}}
    failed = []
    for i, case in enumerate(cases):
        later = cases[i + 1:]
        reserve = sum(MIN_CASE_S[_base(c)] for c in later)
        limit = t_end - time.monotonic() - reserve
        if case == "bert_b1" and "bert_b32" in later:
            limit = min(limit, (t_end - time.monotonic() - RESERVE_S["membound"]) * 0.5)
        if limit < MIN_CASE_S[_base(case)] * 0.5:
            print(f"[{case}] SKIPPED: {max(limit, 0):.0f} s left of the --budget-s {args.budget_s:.0f} s budget",
                  flush=True)
            results["cases"][case] = {"status": "skipped (time budget)"}
            continue
        with tempfile.NamedTemporaryFile(prefix=f"bench_{case}_", suffix=".json", delete=False) as fh:
            out_path = fh.name
        cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--result", out_path,
               "--cache", args.cache, "--deadline-s", f"{limit:.1f}", "--compile-mode", args.compile_mode,
               "--dtype", args.dtype]
        if args.compile_only:
            cmd.append("--compile-only")
        print(f"== [{case}] (limit {limit:.0f} s)", flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, start_new_session=True)     # own process group: nvcc/inductor workers too
        try:
            rc = proc.wait(timeout=limit)
            status = "ok" if rc == 0 else (f"died with signal {-rc} ({signal.Signals(-rc).name})" if rc < 0
                                           else f"failed (exit {rc})")
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            status = f"timed out after {limit:.0f} s (partial results kept)"
        try:
            row = json.loads(Path(out_path).read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            row = {}
        Path(out_path).unlink(missing_ok=True)
        row["status"] = status
        row["case_s"] = round(time.monotonic() - t0, 1)
        results["cases"][case] = row
        if status != "ok":
            print(f"[{case}] {status.upper()}", flush=True)
            if not status.startswith("timed out") or "accelc" not in row:
                failed.append(case)
    import torch  # noqa: F401  (only for the device name in the JSON)
    results["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    ok = [c for c in cases if results["cases"][c]["status"] == "ok"]
    others = [f"{c}: {results['cases'][c]['status']}" for c in cases if c not in ok]
    print(f"bench: {len(ok)}/{len(cases)} cases ok" + (f" ({'; '.join(others)})" if others else ""), flush=True)
    return 1 if failed else 0


_BASELINES = {"_sm80": ("ACCELC_CUDA_GEMM", "sm80"), "_nchw": ("ACCELC_CUDA_LAYOUT", "nchw")}


def _base(case: str) -> str:
    """A case name without its baseline suffix ("_sm80": every GEMM on CUTLASS 2.x; "_nchw": NCHW
    convolutions); such a variant times accelc alone."""
    for suffix in _BASELINES:
        if case.endswith(suffix):
            return case[:-len(suffix)]
    return case


# ---- child: one case ------------------------------------------------------------------------------------------
def _child(args) -> int:
    import faulthandler
    faulthandler.enable()                      # a segfault prints the Python stack of where it happened
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    deadline = time.monotonic() + args.deadline_s
    row: dict = {}

    def save():
        Path(args.result).write_text(json.dumps(row, default=float))

    case = _base(args.case)
    if case != args.case:          # the same model built as a baseline of the newer code paths
        var, value = _BASELINES[args.case[len(case):]]
        os.environ[var] = value
        args.accelc_only = True
        row["baseline"] = f"{var}={value}"
    try:
        if case.startswith("bert_b"):
            _bench_bert(int(case[len("bert_b"):]), args, row, save, deadline)
        elif case == "membound":
            _bench_membound(args, row, save)
        elif case in ONNX_CASES:
            _bench_onnx(*ONNX_CASES[case], args, row, save, deadline)
        else:
            raise ValueError(f"unknown case {args.case}")
    except Exception as e:  # noqa: BLE001 (report, the parent continues with the next case)
        traceback.print_exc()
        row["error"] = f"{type(e).__name__}: {e}"
        save()
        return 1
    save()
    return 0


def _target_for_gpu(torch) -> str:
    major, minor = torch.cuda.get_device_capability()
    return {(8, 0): "a100", (8, 6): "a10g", (8, 9): "l4", (9, 0): "h200"}.get((major, minor), "a100")


def _peak_bf16_tflops(torch) -> float | None:
    """Dense bf16 tensor-core peak (an upper bound for the family): achieved TFLOP/s above it is impossible."""
    return {(8, 0): 312.0, (8, 6): 160.0, (8, 9): 370.0, (9, 0): 990.0}.get(torch.cuda.get_device_capability())


def _time_events(torch, fn, reps=20, warmup=3) -> float:
    """Median ms of fn() between two events recorded on torch's current stream (fn enqueues on it)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    stream = torch.cuda.current_stream()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(stream)
        fn()
        b.record(stream)
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def _time_wall(torch, fn, reps=20) -> float:
    """ms per run of N back-to-back runs, by the host clock, ending with a device-wide synchronize."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / reps


class AccelcModel:
    """One compiled model through its C ABI (ctypes, every restype/argtypes set)."""

    def __init__(self, torch, graph, target: str, cache: str):
        import ctypes as c
        from accelc.backends.base import BackendOptions
        from accelc.backends.cuda import CudaBackend
        from accelc.ir import DType
        from accelc.targets import get_target
        t0 = time.perf_counter()
        parts = CudaBackend().lower(graph, get_target(target), BackendOptions(cache_dir=cache))
        self.compile_s = time.perf_counter() - t0
        self.build = parts.manifest["build"]
        data = parts.files["model.so"]
        # Content-addressed and never rewritten: overwriting a loaded library in place changes its mapped
        # code under the process (that was the bench's segfault), and dlopen of an already loaded path
        # returns the library loaded first, so each model needs its own file.
        lib_path = Path(cache) / "bench_libs" / f"model_{hashlib.sha256(data).hexdigest()[:32]}.so"
        if not lib_path.is_file():
            lib_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=lib_path.parent, prefix=".lib.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, lib_path)
        lib = c.CDLL(str(lib_path))
        lib.accelc_last_error.restype, lib.accelc_last_error.argtypes = c.c_char_p, []
        lib.accelc_create.restype = c.c_int
        lib.accelc_create.argtypes = [c.c_void_p, c.c_size_t, c.c_int, c.POINTER(c.c_void_p)]
        lib.accelc_run_device.restype = c.c_int
        lib.accelc_run_device.argtypes = [c.c_void_p, c.POINTER(c.c_void_p), c.POINTER(c.c_void_p), c.c_void_p]
        lib.accelc_destroy.restype, lib.accelc_destroy.argtypes = None, [c.c_void_p]
        self.lib, self.c, self.torch = lib, c, torch
        import numpy as np
        self._weights = np.frombuffer(parts.files["weights.bin"], np.uint8)
        self.handle = c.c_void_p()
        rc = lib.accelc_create(self._weights.ctypes.data if self._weights.size else None, self._weights.size, 0,
                               c.byref(self.handle))
        if rc or not self.handle.value:
            raise RuntimeError(f"accelc_create failed ({rc}): {lib.accelc_last_error().decode()}")

        def tensor(v, fill):
            t = graph.types[v]
            dt = torch.bfloat16 if t.dtype == DType.bfloat16 else getattr(torch, t.dtype.np.name)
            shape = tuple(int(d) for d in t.shape)
            return torch.randn(shape, device="cuda").to(dt) if fill else torch.empty(shape, device="cuda", dtype=dt)
        # kept alive as long as the model: the library reads/writes them asynchronously
        self.inputs = [tensor(v, True) for v in graph.inputs]
        self.outputs = [tensor(v, False) for v in graph.outputs]
        self.in_ptrs = (c.c_void_p * max(1, len(self.inputs)))(*[t.data_ptr() for t in self.inputs])
        self.out_ptrs = (c.c_void_p * max(1, len(self.outputs)))(*[t.data_ptr() for t in self.outputs])

    def __call__(self):
        stream = self.torch.cuda.current_stream().cuda_stream       # 0: the legacy default stream
        rc = self.lib.accelc_run_device(self.handle, self.in_ptrs, self.out_ptrs, self.c.c_void_p(stream or None))
        if rc:
            raise RuntimeError(f"accelc_run_device failed ({rc}): {self.lib.accelc_last_error().decode()}")

    def destroy(self):
        if self.handle.value:
            self.lib.accelc_destroy(self.handle)
            self.handle = self.c.c_void_p()
        self.inputs = self.outputs = []


def gemm_flops(graph) -> int:
    """2*M*N*K summed over the FusedGemm nodes (batch dims included): projections, FFN and attention."""
    total = 0
    for n in graph.nodes:
        if n.op == "FusedGemm":
            out = [int(d) for d in graph.types[n.outputs[0]].shape]
            k = int(graph.types[n.inputs[0]].shape[-1])
            numel = 1
            for d in out:
                numel *= d
            total += 2 * numel * k
    return total


def bert_graph(batch: int, layers: int = 12):
    """``layers`` encoder layers chained, each with its own freshly drawn weights."""
    from test_backend_cuda import encoder
    from accelc.ir import DType, Graph
    g = Graph("bert")
    x = mask = None
    cur = None
    for layer in range(layers):
        g0 = encoder(batch=batch, seq=128, d=768, heads=12, ffn=3072, compute=DType.bfloat16)
        if layer == 0:
            x = g.add_input("x", g0.types["x"])
            mask = g.add_input("mask", g0.types["mask"])
            cur = x
        rename = {"x": cur, "mask": mask}
        for c, arr in g0.constants.items():
            rename[c] = g.add_constant(arr, f"l{layer}_{c}")
        for n in g0.nodes:
            outs = g.add_node(n.op, [rename[i] if i else "" for i in n.inputs], n.attrs, name=f"l{layer}_{n.name}")
            for o, new in zip(n.outputs, outs):
                rename[o] = new
        cur = rename[g0.outputs[0]]
    g.outputs = [cur]
    return g


def _report(row, key, name, torch, fn, flops, peak, reps=20):
    ev = _time_events(torch, fn, reps=reps)
    wall = _time_wall(torch, fn, reps=reps)
    tf = flops / (ev * 1e-3) / 1e12 if flops else None
    flags = []
    if ev < 0.5 * wall:
        flags.append("EVENTS DO NOT BRACKET THE WORK (event time < half the wall-clock time)")
    if tf is not None and peak and tf > peak:
        flags.append(f"IMPOSSIBLE: above the {peak:.0f} TFLOP/s bf16 peak")
    row[key] = {"event_ms": ev, "wall_ms": wall, "tflops": tf, "flags": flags}
    tf_s = f", {tf:.1f} TFLOP/s" if tf is not None else ""
    print(f"  {name:<14} {ev:8.3f} ms (events)  {wall:8.3f} ms (wall clock){tf_s}"
          + "".join(f"  !! {f}" for f in flags), flush=True)
    return ev


def summarize_kernels(kernels, runs: int, top: int = 12) -> list[dict]:
    """Per-kernel GPU time of ``runs`` runs from (name, microseconds) pairs, the layer index folded out of
    generated kernel names (k__layers_3_norm1_... -> k__layers_N_norm1_...), biggest first."""
    import re
    total: dict[str, list] = {}
    for name, us in kernels:
        key = re.sub(r"layers_\d+", "layers_N", name)
        key = key if len(key) <= 90 else key[:60] + "..." + key[-27:]
        entry = total.setdefault(key, [0.0, 0])
        entry[0] += us
        entry[1] += 1
    whole = sum(v[0] for v in total.values()) or 1.0
    rows = [{"kernel": k, "ms_per_run": v[0] / runs / 1e3, "launches_per_run": v[1] / runs, "share": v[0] / whole}
            for k, v in total.items()]
    return sorted(rows, key=lambda r: -r["ms_per_run"])[:top]


def _kernel_profile(torch, fn, row, key, runs=5) -> None:
    """Where the GPU time of ``fn`` goes, kernel by kernel (torch.profiler's CUPTI trace sees the kernels
    of every library in the process, accelc's CUDA graph included); printed and saved as row[key]."""
    try:
        from torch.profiler import ProfilerActivity, profile
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                fn()
            torch.cuda.synchronize()
        kernels = []
        for e in prof.events():
            if str(getattr(e, "device_type", "")).endswith("CUDA"):     # a kernel (or copy) on the GPU
                kernels.append((e.name, float(e.time_range.elapsed_us())))
        rows = summarize_kernels(kernels, runs)
    except Exception as e:     # a profiler that cannot trace here must not cost the benchmark
        print(f"  (no kernel profile: {type(e).__name__}: {e})", flush=True)
        return
    row[key] = rows
    print(f"  {key}: GPU time by kernel (per run, {runs} runs; layers folded)", flush=True)
    for r in rows:
        print(f"    {r['ms_per_run']:8.4f} ms  {r['share'] * 100:5.1f}%  x{r['launches_per_run']:<5g} {r['kernel']}",
              flush=True)


def _torch_compile_peer(torch, model, x, args, row, flops, peak, t_acc, deadline) -> None:
    """Times torch.compile(model, mode=--compile-mode) on x when the case's time allows (under inference_mode)."""
    left = deadline - time.monotonic()
    if args.compile_mode == "none":
        print("  torch.compile skipped (--compile-mode none)", flush=True)
        return
    if left < 45:
        print(f"  torch.compile skipped: {left:.0f} s left of this case's time limit", flush=True)
        row["compile_skipped"] = f"{left:.0f} s left"
        return
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(model, mode=args.compile_mode)
        compiled(x)
        torch.cuda.synchronize()
        row["torch_compile_s"] = time.perf_counter() - t0
        print(f"  torch.compile({args.compile_mode}) took {row['torch_compile_s']:.1f} s", flush=True)
        t_comp = _report(row, "torch_compile", "torch.compile", torch, lambda: compiled(x), flops, peak, reps=10)
        row["speedup_vs_compile"] = t_comp / t_acc
    except Exception as e:  # noqa: BLE001 (report, keep benchmarking)
        print(f"  torch.compile failed: {type(e).__name__}: {e}", flush=True)
        row["compile_error"] = f"{type(e).__name__}: {e}"


def _print_speedups(row) -> None:
    print(f"  accelc x{row['speedup_vs_eager']:.2f} vs eager"
          + (f", x{row['speedup_vs_compile']:.2f} vs torch.compile" if "speedup_vs_compile" in row else ""),
          flush=True)


def _bench_bert(batch: int, args, row, save, deadline):
    import torch
    target = _target_for_gpu(torch)
    peak = _peak_bf16_tflops(torch)
    row.update({"batch": batch, "target": target, "gpu": torch.cuda.get_device_name()})
    g = bert_graph(batch)
    flops = gemm_flops(g)
    row["gemm_gflop"] = flops / 1e9
    print(f"BERT-base s128 b{batch}: {flops / 1e9:.1f} GFLOP of GEMMs; GPU {row['gpu']} "
          f"(dense bf16 peak ~{peak or float('nan'):.0f} TFLOP/s)", flush=True)
    acc = AccelcModel(torch, g, target, args.cache)
    row["accelc_compile_s"], row["build"] = acc.compile_s, acc.build
    print(f"  accelc compile {acc.compile_s:.1f} s ({acc.build})", flush=True)
    t_acc = _report(row, "accelc", "accelc", torch, acc, flops, peak)
    save()
    _kernel_profile(torch, acc, row, "accelc_kernels")
    save()
    acc.destroy()
    del acc
    torch.cuda.empty_cache()
    if getattr(args, "accelc_only", False):
        return

    layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, activation="gelu", batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False).cuda().eval().to(torch.bfloat16)
    x = torch.randn(batch, 128, 768, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        t_eager = _report(row, "eager", "torch eager", torch, lambda: model(x), flops, peak)
        save()
        _kernel_profile(torch, lambda: model(x), row, "eager_kernels")
        save()
        _torch_compile_peer(torch, model, x, args, row, flops, peak, t_acc, deadline)
    row["speedup_vs_eager"] = t_eager / t_acc
    _print_speedups(row)


def _onnx_model(kind: str, batch: int, path: Path):
    """(fp32 torch module, its input as NumPy, GEMM FLOPs or 0) with the module exported to ``path``."""
    import numpy as np
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_cpu
    if kind == "bert":
        exporter = bench_cpu._load_export_module()
        model = exporter.export_encoder(path, layers=12, seq=128, batch=batch, seed=0).eval()
        x = np.random.default_rng(1).standard_normal((batch, 128, 768)).astype(np.float32)
        return model, x, bench_cpu._transformer_flops(12, batch, 128, 768, 3072)
    import torch
    torch.manual_seed(0)
    model = bench_cpu.ResNet(bench_cpu.Bottleneck, (3, 4, 6, 3))
    bench_cpu._calibrate_batchnorm(model, (2, 3, 224, 224))
    x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    bench_cpu._export(model.eval(), {"x": x}, ["y"], path)
    return model, x, 0


def _bench_onnx(kind: str, batch: int, args, row, save, deadline):
    import torch
    import accelc
    gpu = torch.cuda.is_available()
    target = _target_for_gpu(torch) if gpu else "h200"
    peak = _peak_bf16_tflops(torch) if gpu else None
    row.update({"model": kind, "batch": batch, "target": target, "dtype": args.dtype,
                "gpu": torch.cuda.get_device_name() if gpu else None})
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        path = Path(tmp) / f"{kind}_b{batch}.onnx"
        t0 = time.perf_counter()
        model, x, flops = _onnx_model(kind, batch, path)
        row["export_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cm = accelc.compile(str(path), target, dtype=args.dtype, cache_dir=args.cache, measure_accuracy=False)
        row["accelc_compile_s"] = time.perf_counter() - t0
    build = cm.manifest["backend"]["build"]
    row.update({"build": build, "kernels": cm.manifest["backend"]["kernels"]})
    print(f"{kind} b{batch} (ONNX -> accelc.compile {args.dtype} for {target}): compiled in {row['accelc_compile_s']:.1f} s "
          f"({build['compiled']} units built, {build['cached']} cached), {row['kernels']} kernels", flush=True)
    save()
    if args.compile_only or not gpu:
        print("  compile only" + ("" if gpu else " (no GPU here)"), flush=True)
        return
    m = cm.module
    stream = torch.cuda.current_stream()
    xin = torch.from_numpy(x).cuda()
    torch_dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    outs = {p["name"]: torch.empty(tuple(p["shape"]), device="cuda", dtype=torch_dtypes[p["dtype"]])
            for p in m.signature["outputs"]}
    feeds = {m.input_names[0]: xin}
    m.run(feeds, out=outs, stream=stream)
    torch.cuda.synchronize()
    model = model.cuda().eval()
    with torch.inference_mode():
        ref = model(xin).float()
        got = next(iter(outs.values())).float()
        cos = torch.nn.functional.cosine_similarity(got.reshape(1, -1), ref.reshape(1, -1)).item()
    row["cosine_vs_fp32"] = cos
    print(f"  cosine vs the fp32 eager model: {cos:.6f}" + ("" if cos > 0.999 else "  !! below 0.999"), flush=True)
    t_acc = _report(row, "accelc", "accelc", torch, lambda: m.run(feeds, out=outs, stream=stream), flops, peak)
    save()
    _kernel_profile(torch, lambda: m.run(feeds, out=outs, stream=stream), row, "accelc_kernels")
    save()
    if getattr(args, "accelc_only", False):
        return
    peer_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    model = model.to(peer_dtype)
    xb = xin.to(peer_dtype)
    with torch.inference_mode():
        t_eager = _report(row, "eager", "torch eager", torch, lambda: model(xb), flops, peak)
        row["speedup_vs_eager"] = t_eager / t_acc
        save()
        _torch_compile_peer(torch, model, xb, args, row, flops, peak, t_acc, deadline)
    _print_speedups(row)


def _bench_membound(args, row, save):
    import numpy as np
    import torch
    from accelc.ir import DType, Graph, TensorType
    target = _target_for_gpu(torch)
    # y = gelu(x + b) over 64M floats vs a device-to-device copy of the same bytes
    n = 1 << 26
    g = Graph("membound")
    xin = g.add_input("x", TensorType(DType.float32, (n // 1024, 1024)))
    (a,) = g.add_node("Add", [xin, g.add_constant(np.ones(1024, np.float32))])
    (y,) = g.add_node("Gelu", [a])
    g.outputs = [y]
    print("memory-bound Add+Gelu over 64M fp32 (256 MiB in, 256 MiB out)", flush=True)
    mb = AccelcModel(torch, g, target, args.cache)
    t_mb = _report(row, "accelc", "accelc run", torch, mb, 0, None)
    save()
    mb.destroy()
    src = torch.empty(n, device="cuda")
    dst = torch.empty_like(src)
    t_copy = _report(row, "d2d_copy", "D2D copy", torch, lambda: dst.copy_(src), 0, None)
    # accelc_run_device also copies input and output device-to-device: 2 copies + the kernel
    kernel_ms = max(t_mb - 2 * t_copy, 1e-6)
    gbs = 2 * n * 4 / (kernel_ms * 1e-3) / 1e9
    copy_gbs = 2 * n * 4 / (t_copy * 1e-3) / 1e9
    row.update({"kernel_gbs_est": gbs, "copy_gbs": copy_gbs, "ratio": gbs / copy_gbs})
    print(f"  fused Add+Gelu: ~{gbs:.0f} GB/s (estimated from run - 2 copies) vs D2D copy {copy_gbs:.0f} GB/s",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--cache", default=os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                    "accelc"), help="build cache (shared with the tests')")
    ap.add_argument("--budget-s", type=float, default=215.0, help="whole script, all cases")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--compile-mode", default="max-autotune", help="torch.compile mode, or 'none'")
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16",
                    help="ONNX cases: accelc's compute dtype, and the dtype the torch peers run in")
    ap.add_argument("--compile-only", action="store_true",
                    help="ONNX cases: stop after accelc.compile (works without a GPU; warms the build cache)")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)          # child process: one case
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline-s", type=float, default=1e9, help=argparse.SUPPRESS)
    args = ap.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    if args.case:
        return _child(args)
    return _run_cases(args)


if __name__ == "__main__":
    raise SystemExit(main())
