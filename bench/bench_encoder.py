"""Latency of a BERT-style encoder: accelc (fp32, bf16) vs ONNX Runtime and PyTorch eager, same run.

Peers run on the same machine, in the same process, with the same thread count, so the ratios mean
something even though absolute numbers depend on the machine. Medians over ``--runs`` runs after
``--warmup`` runs. Also prints the runtime's per-call overhead on a tiny model (call-overhead bound).

    python bench/bench_encoder.py                       # BERT-base, seq 128, batch 1, 2 threads
    python bench/bench_encoder.py --layers 2 --seq 64 --runs 50
Needs the bench extra: pip install -e '.[bench]'. Not a test.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import accelc  # noqa: E402


def _load_export_module():
    spec = importlib.util.spec_from_file_location("export_encoder", ROOT / "examples" / "export_encoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def call_overhead(threads: int, tmp: Path) -> list[tuple[str, float]]:
    """Microseconds per call of a one-Relu model: the fixed cost of the Python -> native path."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp / "tiny.onnx"
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8   # the oldest IR that carries opset 17, so older ONNX Runtime releases load it too
    onnx.save(model, path)
    x = np.ones((1, 4), np.float32)
    m = accelc.compile(path, "host", threads=1, measure_accuracy=False)
    rows = [("accelc run({'x': x})", median_ms(lambda: m.run({"x": x}), 2000, 200) * 1e3),
            ("accelc m(x)", median_ms(lambda: m(x), 2000, 200) * 1e3)]
    try:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        rows.append(("onnxruntime run", median_ms(lambda: sess.run(None, {"x": x}), 2000, 200) * 1e3))
    except ImportError:
        pass
    return rows


def main() -> None:
    exporter = _load_export_module()
    p = argparse.ArgumentParser(description="BERT-style encoder latency: accelc vs ONNX Runtime vs PyTorch")
    exporter.add_encoder_arguments(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--target", default="host", help="accelc target (spr on an AMX machine)")
    p.add_argument("--skip", action="append", default=[], help="peer to skip: ort, torch, bf16")
    a = p.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "encoder.onnx"
        print(f"exporting encoder: {a.layers} layers, hidden {a.hidden}, heads {a.heads}, ffn {a.ffn}, "
              f"seq {a.seq}, batch {a.batch}; {a.threads} threads", file=sys.stderr)
        model = exporter.export_encoder(path, **exporter.encoder_kwargs(a))
        x = np.random.default_rng(0).standard_normal((a.batch, a.seq, a.hidden)).astype(np.float32)

        for dtype in ("fp32", "bf16"):
            if dtype == "bf16" and "bf16" in a.skip:
                continue
            t0 = time.perf_counter()
            m = accelc.compile(path, a.target, dtype=dtype, threads=a.threads)
            print(f"accelc {dtype}: compiled in {time.perf_counter() - t0:.1f}s, variant {m.variant}, "
                  f"accuracy cosine {m.manifest['accuracy'].get('min_cosine', float('nan')):.6f}", file=sys.stderr)
            results.append((f"accelc {dtype} ({m.variant})", median_ms(lambda: m(x), a.runs, a.warmup)))

        if "ort" not in a.skip:
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = a.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            results.append(("onnxruntime fp32", median_ms(lambda: sess.run(None, {"x": x}), a.runs, a.warmup)))

        if "torch" not in a.skip:
            xt = torch.from_numpy(x)
            with torch.inference_mode():
                results.append(("pytorch eager fp32", median_ms(lambda: model(xt), a.runs, a.warmup)))
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    results.append(("pytorch eager bf16 autocast", median_ms(lambda: model(xt), a.runs, a.warmup)))

        overhead = call_overhead(a.threads, tmp)

    base = next((ms for name, ms in results if name.startswith("onnxruntime")), results[0][1])
    width = max(len(n) for n, _ in results)
    print(f"\n{'engine':<{width}}  median ms  vs onnxruntime")
    for name, ms in results:
        print(f"{name:<{width}}  {ms:9.2f}  {base / ms:6.2f}x faster" if ms < base else
              f"{name:<{width}}  {ms:9.2f}  {ms / base:6.2f}x slower" if ms > base else
              f"{name:<{width}}  {ms:9.2f}  (baseline)")
    print("\nper-call overhead, 1x4 Relu model (microseconds, median):")
    for name, us in overhead:
        print(f"  {name:<24} {us:8.1f}")


if __name__ == "__main__":
    main()
