"""FPGA backend benchmark: accelc vs hls4ml on the jet-tagging MLP, both C-simulated with g++ (no Vitis).

The model is the classic hls4ml jet-tagging network, 16 -> 64 -> 32 -> 32 -> 5, ReLU after the first
three dense layers and softmax at the end, He-initialised (kaiming normal, fan_in) with small random
biases, seeded. By default it is trained for a few hundred Adam steps (~1-3 s on a CPU) on a synthetic
5-class task (labels from a fixed random teacher network) so that its outputs are not near-uniform and
top-1 agreement means something; ``--no-train`` keeps the random weights.

Inputs: ``--n`` samples (2000) drawn from a seeded standard normal (``--inputs normal``, the default:
hls4ml's jet-tagging tutorials standardise the 16 jet features, so each is ~N(0, 1)), or
``--inputs jetlike``: the same with fixed per-feature scales from 0.25 to 4 (geometric), a mixture of
small and large features like unstandardised jet observables. accelc is calibrated on a separate set
from the same distribution (seed + 1), never on the evaluation set.

Both sides are measured against the float PyTorch output (softmax probabilities):

* hls4ml 1.3: ``config_from_pytorch_model(granularity='name', default_precision='ap_fixed<16,6>')``,
  ``convert_from_pytorch_model(backend='Vitis', part='xcu280-fsvh2892-2L-e', clock_period=3.33)``,
  ``compile()`` (writes the HLS project and builds its C-simulation with g++, timed) and ``predict()``.
  The config hls4ml generates at 'name' granularity leaves every result type 'auto'; hls4ml then infers
  a 37-39-bit result for each Dense layer, and the softmax derives its normalised-input type from that
  (``ap_ufixed<37,17>``), so its 1024-entry exp table is indexed in steps of 128 and every output is
  1/5. The benchmark therefore runs two hls4ml variants (``--hls4ml both``, the default):
  ``generated`` (the config exactly as hls4ml makes it) and ``fixed`` (every 'auto' type set to the
  default ap_fixed<16,6>, which is what ``granularity='model'`` gives and what hls4ml's tutorials use).
* accelc: ``accelc.compile(onnx, target="u280", fpga={"bits": 16, "io": IO, "reuse_factor": R,
  "calibration": {"x": X_calib}})``, ``run()`` (the C-simulation), and the backend report in the
  manifest. If the FPGA backend is not importable or refuses the model, that column says why.

Metrics: max and mean |output - float output|, top-1 agreement with the float model, DSP, BRAM18K,
LUT, FF, latency (cycles and ns at 300 MHz), II, and the C-simulation build time. hls4ml gives no
resource or latency figure without Vitis, so its figures are ESTIMATED BY ACCELC'S MODEL FROM HLS4ML'S
CONFIGURATION (no Vitis here), i.e. the formulas of accelc's own Dense/Activation estimates
(accelc/backends/fpga_hls/layers/dense.py) fed with hls4ml's types and reuse factors: DSP =
ceil(multiplies / reuse) x dsp_per_multiply(input bits, weight bits); a dense layer's latency = reuse +
ceil(log2(n_in)) adder tree + 3 (II = reuse); ReLU 1 cycle (+1 per packet in io_stream); hls4ml's
softmax 6 cycles, its exp table (one copy per two parallel lookups) and 1/x table in BRAM
(bram_18k_for) and one DSP per output product; weights in registers, or LUT-RAM when reuse > 1 (BRAM
from reuse 32). LUT/FF: accumulator-width adders and registers per multiplier, operand multiplexers when
reuse > 1, registered layer outputs. The accumulator width matters: hls4ml accumulates in its default
ap_fixed<16,6> (wrapping), accelc in an exact, wider accumulator.

Run:   python bench/bench_fpga_hls4ml.py [--reuse 1] [--io io_parallel|io_stream] [--n 2000] [--seed 0]
                                         [--no-train] [--inputs normal|jetlike] [--hls4ml both|generated|fixed]
                                         [--json out.json] [--keep DIR]
Needs: torch (CPU is enough), onnx, and ``pip install 'accelc[fpga]'`` (which brings hls4ml 1.3 and its
ap_fixed headers) plus g++ for the C-simulations.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))          # the checkout's accelc, not an older installed one

LAYERS = (16, 64, 32, 32, 5)
CLOCK_MHZ = 300.0                          # u280 target clock; hls4ml is given clock_period=3.33 ns
PART = "xcu280-fsvh2892-2L-e"
DEFAULT_PRECISION = "ap_fixed<16,6>"
SOFTMAX_LATENCY = 6                        # hls4ml's table softmax, cycles (model, see docstring)


# ---- accelc's estimate helpers: both columns use one model ----------------------------------------------------
from accelc.backends.fpga_hls.layers.base import bram_18k_for, dsp_per_multiply  # noqa: E402


# ---- model, data, training ----------------------------------------------------------------------------------
def build_model(seed: int):
    import torch
    from torch import nn
    torch.manual_seed(seed)
    mods: list = []
    for i, (fan_in, fan_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        lin = nn.Linear(fan_in, fan_out)
        nn.init.kaiming_normal_(lin.weight, mode="fan_in", nonlinearity="relu")
        nn.init.uniform_(lin.bias, -0.05, 0.05)
        mods += [lin, nn.ReLU() if i < len(LAYERS) - 2 else nn.Softmax(dim=-1)]
    return nn.Sequential(*mods).eval()


FEATURE_SCALES = np.geomspace(0.25, 4.0, LAYERS[0])


def make_inputs(n: int, seed: int, kind: str) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, LAYERS[0]))
    if kind == "jetlike":
        x = x * FEATURE_SCALES
    return x.astype(np.float32)


def teacher_labels(x: np.ndarray, kind: str) -> np.ndarray:
    """A fixed random two-layer teacher (independent of --seed): the synthetic 5-class task."""
    rng = np.random.default_rng(20240517)
    a = rng.standard_normal((LAYERS[0], 32)) / math.sqrt(LAYERS[0])
    b = rng.standard_normal((32, LAYERS[-1]))
    z = x / FEATURE_SCALES if kind == "jetlike" else x
    return np.argmax(np.tanh(2.0 * z @ a) @ b, axis=1)


def train(model, seed: int, kind: str, steps: int = 400, batch: int = 256) -> dict:
    import torch
    t0 = time.perf_counter()
    x = make_inputs(16384, seed + 1000, kind)
    y = teacher_labels(x, kind)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    logits_net = model[:-1]                                # shares the parameters; softmax left out
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(logits_net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return {"steps": steps, "batch": batch, "final_loss": loss.item(), "train_s": time.perf_counter() - t0}


def float_forward(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax output and the logits (the pre-softmax values), float32 as PyTorch computes them."""
    import torch
    with torch.no_grad():
        xt = torch.from_numpy(x)
        return model(xt).numpy(), model[:-1](xt).numpy()


def export_onnx(model, n: int, path: Path) -> None:
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = dict(input_names=["x"], output_names=["y"], opset_version=17)
        try:
            torch.onnx.export(model, (torch.zeros(n, LAYERS[0]),), str(path), dynamo=False, **kwargs)
        except TypeError:                                  # a torch without the dynamo switch
            torch.onnx.export(model, (torch.zeros(n, LAYERS[0]),), str(path), **kwargs)


def errors(y: np.ndarray, ref: np.ndarray) -> dict:
    y = np.asarray(y, dtype=np.float64).reshape(ref.shape)
    d = np.abs(y - ref.astype(np.float64))
    return {"max_abs_err": float(d.max()), "mean_abs_err": float(d.mean()),
            "top1_agreement": float(np.mean(np.argmax(y, 1) == np.argmax(ref, 1)))}


@contextlib.contextmanager
def fd_to_file(path: Path):
    """Sends fd 1 and 2 (Python prints, warnings and g++ children alike) to ``path`` for the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# ---- hls4ml ---------------------------------------------------------------------------------------------------
def _prec(t) -> tuple[int, int, str]:
    """(width, integer bits, printable) of an hls4ml NamedType/PrecisionType."""
    p = getattr(t, "precision", t)
    return int(getattr(p, "width", 0)), int(getattr(p, "integer", 0)), str(p)


def _clog2(n: int) -> int:
    return max(0, math.ceil(math.log2(max(n, 1))))


def estimate_hls4ml(hls_model, io: str) -> dict:
    """hls4ml's design priced with accelc's model (see the module docstring): no Vitis involved.

    The dense and ReLU formulas mirror ``Dense.estimate`` / ``Activation.estimate`` in
    accelc/backends/fpga_hls/layers/dense.py, fed with hls4ml's types (its accumulator, weight, input and
    result widths) and reuse factors; hls4ml's softmax (two 1024-entry tables, L products by 1/sum, no
    divider) is priced with the same per-table and per-product rules and a fixed 6-cycle latency.
    """
    layers, tot = [], {"dsp": 0, "bram_18k": 0, "lut": 0, "ff": 0, "latency_cycles": 0, "ii": 1}
    for layer in hls_model.get_layers():
        cls = layer.class_name
        if cls == "Input":
            continue
        rf = int(layer.get_attr("reuse_factor", 1) or 1)
        out_w, _, _ = _prec(layer.get_output_variable().type)
        in_w, _, _ = _prec(layer.get_input_variable().type)
        e = {"name": layer.name, "class": cls, "dsp": 0, "bram_18k": 0, "lut": 0, "ff": 0, "latency": 0, "ii": 1}
        if cls == "Dense":
            k, n = int(layer.get_attr("n_in")), int(layer.get_attr("n_out"))
            ww, _, _ = _prec(layer.get_attr("weight_t"))
            aw, _, _ = _prec(layer.get_attr("accum_t"))
            lanes = math.ceil(k * n / rf)                     # multipliers instantiated (one sample = one row)
            dpm = dsp_per_multiply(in_w, ww)
            e["dsp"] = lanes * dpm
            e["bram_18k"] = bram_18k_for(lanes * ww, rf) if rf >= 32 else 0
            e["lut"] = lanes * aw + (lanes * in_w * ww // 2 if dpm == 0 else 0) + (lanes * in_w if rf > 1 else 0)
            if rf > 1 and e["bram_18k"] == 0:
                e["lut"] += math.ceil(k * n * ww / 64)             # weights in LUT-RAM
            e["ff"] = lanes * aw + n * out_w
            e["latency"] = rf + _clog2(k) + 3
            e["ii"] = rf
            e.update(multiplies=k * n, weight_t=_prec(layer.get_attr("weight_t"))[2],
                     accum_t=_prec(layer.get_attr("accum_t"))[2], input_bits=in_w)
        elif cls == "Softmax":
            L = int(layer.get_attr("n_in"))
            ew, _, _ = _prec(layer.get_attr("exp_table_t"))
            iw, _, _ = _prec(layer.get_attr("inv_table_t"))
            sw = ew + _clog2(L)                                    # hls4ml's default softmax accumulator
            size = int(layer.get_attr("table_size", 1024) or 1024)
            # L exp lookups (one table copy per two parallel lookups) and one 1/x lookup; tables over 1 Kbit: BRAM
            for bits, copies in ((ew, math.ceil(L / 2)), (iw, 1)):
                if size * bits > 1024:
                    e["bram_18k"] += copies * bram_18k_for(bits, size)
                else:
                    e["lut"] += copies * math.ceil(size * bits / 64)
            e["dsp"] = L * dsp_per_multiply(ew, iw)                 # exp(x_i - max) * 1/sum
            e["lut"] += L * 2 * in_w + L * sw                       # max tree, subtractors, sum tree
            e["ff"] = L * (ew + in_w)
            e["latency"] = SOFTMAX_LATENCY
        else:                                                       # ReLU (and other element-wise activations)
            par = int(np.prod(layer.get_output_variable().shape))
            e["lut"] = par * out_w
            e["ff"] = par * out_w
            e["latency"] = 1 + (1 if io == "io_stream" else 0)     # io_stream: + one cycle per packet
        layers.append(e)
        for key in ("dsp", "bram_18k", "lut", "ff"):
            tot[key] += e[key]
        tot["latency_cycles"] += e["latency"]
        tot["ii"] = max(tot["ii"], e["ii"])
    tot["latency_ns"] = round(tot["latency_cycles"] * 1000.0 / CLOCK_MHZ, 3)
    return {"total": tot, "layers": layers,
            "note": "estimated by accelc's model from hls4ml's configuration (no Vitis here)"}


def run_hls4ml(model, x: np.ndarray, ref: np.ndarray, args, work: Path, variant: str) -> dict:
    res: dict = {"variant": variant}
    log = work / f"hls4ml_{variant}.log"
    res["log"] = str(log)
    try:
        import hls4ml
        res["version"] = getattr(hls4ml, "__version__", "?")
        with fd_to_file(log), warnings.catch_warnings():
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            cfg = hls4ml.utils.config_from_pytorch_model(
                model, input_shape=(LAYERS[0],), granularity="name", default_precision=DEFAULT_PRECISION,
                default_reuse_factor=args.reuse)
            if variant == "fixed":
                for layer_cfg in cfg.get("LayerName", {}).values():
                    prec = layer_cfg.get("Precision", {})
                    for k, v in list(prec.items()):
                        if v == "auto":
                            prec[k] = DEFAULT_PRECISION
            hls_model = hls4ml.converters.convert_from_pytorch_model(
                model, output_dir=str(work / f"hls4ml_{variant}_prj"), project_name="jet_mlp", backend="Vitis",
                io_type=args.io, part=PART, clock_period=3.33, hls_config=cfg)
            res["convert_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            hls_model.compile()
            res["build_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            y = np.asarray(hls_model.predict(np.ascontiguousarray(x)))
            res["predict_s"] = time.perf_counter() - t0
        res["output"] = y.reshape(ref.shape)
        res.update(errors(y, ref))
        res["config"] = {
            "model": {k: v for k, v in cfg["Model"].items() if k != "Precision"} | {"default_precision":
                                                                                     cfg["Model"]["Precision"]},
            "layers": [{"name": lay.name, "class": lay.class_name, "reuse_factor": lay.get_attr("reuse_factor"),
                        "strategy": lay.get_attr("strategy"), "implementation": lay.get_attr("implementation"),
                        **{k: _prec(v)[2] for k, v in lay.attributes.items()
                           if k.endswith("_t") and hasattr(v, "precision")}}
                       for lay in hls_model.get_layers()]}
        res["estimate"] = estimate_hls4ml(hls_model, args.io)
        if float(np.ptp(y, axis=1).max()) < 1e-6:
            res["warning"] = ("every hls4ml output row is constant (uniform softmax): the softmax input type is "
                              "too coarse for its table; see the 'fixed' variant")
    except Exception as e:  # noqa: BLE001 (report and carry on with the other columns)
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
        print(f"hls4ml ({variant}) failed: {res['error']} (log: {log})", file=sys.stderr)
    return res


# ---- accelc -------------------------------------------------------------------------------------------------
def run_accelc(onnx_path: Path, x: np.ndarray, x_calib: np.ndarray, ref: np.ndarray, args,
               accum: str | None = None) -> dict:
    """accelc's column; ``accum`` sets every dense layer's accumulator (hls4ml's: ap_fixed<16,6>, which
    truncates and wraps) instead of accelc's exact ones, for a comparison at truly equal precision."""
    res: dict = {}
    try:
        import accelc
        from accelc.errors import AccelcError
    except ImportError as e:
        res["error"] = f"ImportError: {e}"
        print(f"accelc FPGA backend not available: {res['error']}")
        return res
    n = x.shape[0]
    try:
        t0 = time.perf_counter()
        m = accelc.compile(str(onnx_path), target="u280", shapes={"x": (n, LAYERS[0])},
                           fpga={"bits": 16, "io": args.io, "reuse_factor": args.reuse, "accum": accum,
                                 "calibration": {"x": x_calib}})
        res["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        outs = m.run({"x": x.astype(np.float32)})
        res["run_s"] = time.perf_counter() - t0
        y = outs["y"] if "y" in outs else next(iter(outs.values()))
        report = m.manifest["backend"]["report"]
    except (ImportError, AttributeError, TypeError, KeyError, AccelcError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
        print(f"accelc FPGA backend not available: {res['error']}")
        return res
    res["output"] = np.asarray(y).reshape(ref.shape)
    res.update(errors(y, ref))
    tot = dict(report.get("total", {}))
    if "latency_ns" not in tot and "latency_cycles" in tot:
        tot["latency_ns"] = tot["latency_cycles"] * 1000.0 / CLOCK_MHZ
    res["estimate"] = {"total": tot, "layers": report.get("layers", []),
                       "note": "accelc's own estimate (no Vitis here)"}
    res["float_vs_fixed"] = report.get("float_vs_fixed")
    for key in ("timings", "calibration", "utilization", "findings", "inputs", "outputs"):
        if key in report:
            res[key] = report[key]
    return res


# ---- table ----------------------------------------------------------------------------------------------------
ROWS = [("max \\|err\\| vs float", "max_abs_err", "{:.4g}"), ("mean \\|err\\| vs float", "mean_abs_err", "{:.4g}"),
        ("top-1 agreement", "top1_agreement", "{:.2%}"), ("DSP", "dsp", "{:d}"), ("BRAM18K", "bram_18k", "{:d}"),
        ("LUT", "lut", "{:d}"), ("FF", "ff", "{:d}"), ("latency (cycles)", "latency_cycles", "{:d}"),
        ("latency (ns @ 300 MHz)", "latency_ns", "{:.1f}"), ("II (cycles)", "ii", "{:d}"),
        ("C-sim build time (s)", "build_s", "{:.2f}")]


def _cell(col: dict, key: str, fmt: str) -> str:
    if "error" in col:
        return "n/a"
    v = col.get(key, col.get("estimate", {}).get("total", {}).get(key))
    if v is None:
        return "-"
    try:
        return fmt.format(int(v) if fmt == "{:d}" else v)
    except (TypeError, ValueError):
        return str(v)


def table(cols: dict[str, dict]) -> str:
    names = list(cols)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(cols[c], key, fmt) for c in names) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reuse", type=int, default=1, help="reuse factor for every layer (1)")
    ap.add_argument("--io", choices=("io_parallel", "io_stream"), default="io_parallel")
    ap.add_argument("--n", type=int, default=2000, help="evaluation samples (2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inputs", choices=("normal", "jetlike"), default="normal")
    ap.add_argument("--no-train", dest="train", action="store_false", help="keep the random He-initialised weights")
    ap.add_argument("--hls4ml", choices=("both", "generated", "fixed"), default="both",
                    help="hls4ml config variant(s): as generated at 'name' granularity, and/or every 'auto' "
                         "type set to ap_fixed<16,6>")
    ap.add_argument("--json", metavar="PATH", help="also write every figure (and per-layer details) as JSON")
    ap.add_argument("--keep", metavar="DIR", help="keep the ONNX model, the hls4ml projects and logs in DIR")
    args = ap.parse_args(argv)
    if args.reuse < 1 or args.n < 1:
        ap.error("--reuse and --n must be positive")

    import torch
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    tmp = None
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_fpga_hls4ml_")
        work = Path(tmp.name)

    out: dict = {"args": vars(args), "model": "16-64-32-32-5 MLP, ReLU x3, softmax", "part": PART,
                 "clock_mhz": CLOCK_MHZ}
    try:
        model = build_model(args.seed)
        if args.train:
            out["training"] = train(model, args.seed, args.inputs)
        x = make_inputs(args.n, args.seed, args.inputs)
        x_calib = make_inputs(args.n, args.seed + 1, args.inputs)
        ref, logits = float_forward(model, x)
        labels = teacher_labels(x, args.inputs)
        out["float_model"] = {"task_accuracy": float(np.mean(np.argmax(ref, 1) == labels)),
                              "max_abs_logit": float(np.abs(logits).max()),
                              "mean_max_prob": float(ref.max(1).mean())}
        print(f"model: 16-64-32-32-5 MLP, {'trained ' + str(out['training']['steps']) + ' Adam steps' if args.train else 'untrained'}"
              f"; {args.n} '{args.inputs}' inputs, seed {args.seed}; float task accuracy "
              f"{out['float_model']['task_accuracy']:.1%}, max |logit| {out['float_model']['max_abs_logit']:.2f}, "
              f"mean top prob {out['float_model']['mean_max_prob']:.2f}", flush=True)
        onnx_path = work / "jet_mlp.onnx"
        export_onnx(model, args.n, onnx_path)

        cols: dict[str, dict] = {}
        variants = ("generated", "fixed") if args.hls4ml == "both" else (args.hls4ml,)
        for v in variants:
            print(f"hls4ml ({v} config): converting and building the C-simulation ...", flush=True)
            cols[f"hls4ml ({v})"] = run_hls4ml(model, x, ref, args, work, v)
        print("accelc: compiling and building the C-simulation ...", flush=True)
        cols["accelc"] = run_accelc(onnx_path, x, x_calib, ref, args)
        cols["accelc (hls4ml's 16-bit accum)"] = run_accelc(onnx_path, x, x_calib, ref, args,
                                                             accum="fixed<16,6,TRN,WRAP>")

        print()
        print(f"Jet-tagging MLP, {args.io}, reuse factor {args.reuse}, {args.n} samples, vs the float PyTorch output "
              f"(softmax probabilities)")
        print()
        print(table(cols))
        print()
        print("hls4ml resource/latency figures: estimated by accelc's model from hls4ml's configuration "
              "(no Vitis here). accelc's are its own estimate. Neither is a synthesis result.")
        print("C-sim build time: hls4ml = hls_model.compile() (writes the project, g++); accelc = accelc.compile() "
              "end to end (frontend, passes, calibration, codegen, g++).")
        for name, col in cols.items():
            if "error" in col:
                print(f"{name}: {col['error'].splitlines()[0]}")
            if "warning" in col:
                print(f"{name}: WARNING {col['warning']}")
            if name.startswith("hls4ml") and "config" in col:
                dense = [lay for lay in col["config"]["layers"] if lay["class"] in ("Dense", "Softmax")]
                desc = "; ".join(f"{lay['name']} {lay['class']} result {lay.get('result_t')}"
                                 + (f" accum {lay.get('accum_t')} weight {lay.get('weight_t')}"
                                    if lay["class"] == "Dense" else "") + f" RF {lay['reuse_factor']}"
                                 for lay in dense)
                print(f"{name} per-layer precision: {desc}")
            if name == "accelc" and "estimate" in col and "error" not in col:
                desc = "; ".join(f"{lay.get('name')} {lay.get('kind')} result {lay.get('type')} RF {lay.get('reuse_factor')}"
                                 for lay in col["estimate"]["layers"])
                print(f"accelc per-layer types: {desc} (calibration: {col.get('calibration')})")
        # the two C-simulations against each other
        outputs = {n: c["output"] for n, c in cols.items() if "output" in c}
        if "accelc" in outputs:
            out["cross"] = {}
            for n, y in outputs.items():
                if n == "accelc":
                    continue
                d = {"max_abs_diff": float(np.abs(y - outputs["accelc"]).max()),
                     "top1_agreement": float(np.mean(np.argmax(y, 1) == np.argmax(outputs["accelc"], 1)))}
                out["cross"][f"{n} vs accelc"] = d
                print(f"{n} vs accelc C-simulation: max |diff| {d['max_abs_diff']:.4g}, "
                      f"top-1 agreement {d['top1_agreement']:.2%}")
        if "accelc" in cols and cols["accelc"].get("float_vs_fixed") is not None:
            print(f"accelc float_vs_fixed (its own report): {json.dumps(cols['accelc']['float_vs_fixed'], default=float)}")

        out["columns"] = {n: {k: v for k, v in c.items() if k != "output"} for n, c in cols.items()}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=lambda o: o.tolist()
                                                  if isinstance(o, np.ndarray) else float(o)
                                                  if isinstance(o, np.generic) else str(o)))
            print(f"wrote {args.json}")
        return 1 if all("error" in c for n, c in cols.items() if n.startswith("hls4ml")) else 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
