"""CPU peer benchmark for the cpu_amx backend: accelc (fp32, bf16) vs ONNX Runtime, OpenVINO, PyTorch eager and
torch.compile (Inductor), on transformer, CNN, decoder-step and tiny-MLP models, same run, same thread count.

Every model is a plain torch module defined here (or examples/export_encoder.py's BERT), with random weights from
a fixed seed, exported to ONNX (TorchScript exporter, opset 17) into a temp dir; nothing is downloaded. Peers are
timed interleaved (blocks of runs, engine after engine, round after round) so that noise from other processes
hits all of them alike; cells are medians. Every engine's outputs are checked against ONNX Runtime fp32 (max abs
error, cosine), so a wrong-but-fast result shows. Then: accelc vs the fastest peer of the same precision,
accelc's achieved GFLOP/s on the transformer rows against a GEMM ceiling measured in the same run (torch matmul),
and on the decode step the bytes it streams per second (weights + KV cache) against the read bandwidth measured
in the same run (torch sum over 1 GB). ``--tune`` compiles accelc with measured work splits (cached).

    python bench/bench_cpu.py --quick                            # smoke run: 2-layer models, few runs
    python bench/bench_cpu.py                                     # everything, 2 threads
    python bench/bench_cpu.py --models bert-base --skip accelc-bf16,torch-compile
    python bench/bench_cpu.py --models jet-mlp,resnet18 --peers accelc,ort --runs 30 --json out/cpu.json
    python bench/bench_cpu.py --target spr --threads 8            # on a Sapphire Rapids (AMX) machine

Models: bert-base, minilm, resnet18, resnet50, gpt2-decode, jet-mlp. Peers (each optional; a missing package or
a failure is a note, never a crash): accelc-fp32, accelc-bf16, ort-fp32, openvino-fp32, openvino-bf16,
torch-eager-fp32, torch-eager-bf16, torch-compile-fp32, torch-compile-bf16. ``--peers``/``--skip`` take names or
prefixes/suffixes of them (``torch-compile``, ``openvino``, ``bf16``). OpenVINO runs f32 when the CPU has no
bf16, whatever the hint: the column says so when the precision it reads back is not bf16. On a CPU without
AMX/AVX512-BF16, accelc bf16 is an emulation (bf16 rounding, fp32 arithmetic): it checks numerics, not speed.
Needs the bench extra: pip install -e '.[bench]'. Not a test.
"""
from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import accelc  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

PEERS = ("accelc-fp32", "accelc-bf16", "ort-fp32", "openvino-fp32", "openvino-bf16",
         "torch-eager-fp32", "torch-eager-bf16", "torch-compile-fp32", "torch-compile-bf16")
COLUMN = {"accelc-fp32": "accelc fp32", "accelc-bf16": "accelc bf16", "ort-fp32": "ort fp32",
          "openvino-fp32": "ov f32", "openvino-bf16": "ov bf16", "torch-eager-fp32": "torch fp32",
          "torch-eager-bf16": "torch bf16", "torch-compile-fp32": "inductor fp32",
          "torch-compile-bf16": "inductor bf16"}
MODELS = ("bert-base", "minilm", "resnet18", "resnet50", "gpt2-decode", "jet-mlp")
# Agreement with ONNX Runtime fp32 below which a cell is flagged '!' (cosine over all outputs).
MIN_COSINE = {"fp32": 0.9999, "bf16": 0.99}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load_export_module():
    spec = importlib.util.spec_from_file_location("export_encoder", ROOT / "examples" / "export_encoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _randomize_norms(model: nn.Module) -> None:
    """LayerNorm/BatchNorm scales and shifts away from 1 and 0, so that no compiler can drop them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.copy_(1 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))


# ---- models ------------------------------------------------------------------------------------------------
# Each builder returns the eval-mode torch module, its ONNX input and output names and the example inputs (the
# module's forward takes the inputs positionally, in input-name order). All shapes are static.

class BertSelfLayer(nn.Module):
    """One HuggingFace-BERT layer written out: separate Q/K/V Linears, additive mask, post-LayerNorm, GELU (erf).
    Head split/merge read the sizes from the tensor, as HF does, so the export carries Shape/Reshape arithmetic."""

    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out, self.attn_norm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate, self.output = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:          # [b, s, h] -> [b, heads, s, head_dim]
        b, s, _ = t.shape
        return t.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        context = context.view(x.shape[0], x.shape[1], -1)
        x = self.attn_norm(self.attn_out(context) + x)
        return self.out_norm(self.output(F.gelu(self.intermediate(x))) + x)


class MiniLM(nn.Module):
    """The encoder stack of a MiniLM-style (HF BERT) model; input = embeddings output, mask = [b, 1, 1, s] additive."""

    def __init__(self, layers: int, hidden: int = 384, heads: int = 12, ffn: int = 1536):
        super().__init__()
        self.layers = nn.ModuleList(BertSelfLayer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.downsample = _downsample(cin, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block: type, depths: tuple[int, ...], classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            for j in range(depth):
                stages.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1)
        return self.fc(torch.flatten(x, 1))


def _calibrate_batchnorm(model: nn.Module, image: tuple[int, ...]) -> None:
    """Non-trivial BatchNorm running statistics: the true per-channel mean/variance of a few random images
    (cumulative average), so activations stay in range through 50 layers, as in a trained network."""
    _randomize_norms(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(4, *image[1:]))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


class GPT2Block(nn.Module):
    """GPT-2 block for one decode step (batch 1, one new token): pre-LayerNorm, fused QKV, GELU (tanh)."""

    def __init__(self, hidden: int, heads: int, mlp: int):
        super().__init__()
        self.hidden, self.heads, self.head_dim = hidden, heads, hidden // heads
        self.ln_1, self.c_attn = nn.LayerNorm(hidden), nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        self.ln_2, self.c_fc, self.mlp_proj = nn.LayerNorm(hidden), nn.Linear(hidden, mlp), nn.Linear(mlp, hidden)

    def forward(self, x, past_k, past_v):      # x [1, 1, h]; past [1, heads, P, head_dim]
        q, k, v = self.c_attn(self.ln_1(x)).split(self.hidden, dim=-1)
        q, k, v = (t.reshape(1, 1, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        att = torch.softmax(torch.matmul(q, keys.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        y = torch.matmul(att, values).transpose(1, 2).reshape(1, 1, self.hidden)
        x = x + self.c_proj(y)
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x, k, v


class GPT2Decode(nn.Module):
    """One decoder step with the KV cache as inputs (past_k_i, past_v_i per layer); returns the new hidden
    state (after ln_f) and the step's new K/V stacked over layers ([layers, 1, heads, 1, head_dim])."""

    def __init__(self, layers: int, hidden: int = 768, heads: int = 12, mlp: int = 3072):
        super().__init__()
        self.blocks = nn.ModuleList(GPT2Block(hidden, heads, mlp) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)

    def forward(self, x, *past):
        n = len(self.blocks)
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, past[i], past[n + i])
            new_k.append(k)
            new_v.append(v)
        return self.ln_f(x), torch.stack(new_k), torch.stack(new_v)


class JetMLP(nn.Module):
    """The hls4ml jet-tagging MLP 16-64-32-32-5, ReLU, softmax."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32),
                                 nn.ReLU(), nn.Linear(32, 5), nn.Softmax(dim=-1))

    def forward(self, x):
        return self.net(x)


def _export(model: nn.Module, feeds: dict[str, np.ndarray], outputs: list[str], path: Path) -> None:
    args = tuple(torch.from_numpy(a) for a in feeds.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=list(feeds),
                          output_names=outputs)


def _transformer_flops(layers: int, batch: int, seq: int, hidden: int, ffn: int, kv_len: int | None = None) -> float:
    """GEMM FLOPs of an encoder/decoder stack, 2*M*N*K per Linear (QKV, out, FFN up/down) plus attention
    QK^T and PV (2 * batch * seq * kv_len * hidden each)."""
    m = batch * seq
    kv = seq if kv_len is None else kv_len
    linears = 2 * m * hidden * (3 * hidden) + 2 * m * hidden * hidden + 2 * 2 * m * hidden * ffn
    attention = 2 * (2 * batch * seq * kv * hidden)
    return float(layers * (linears + attention))


@dataclass
class Case:
    """One table row: a model at one shape."""
    model: str
    label: str
    build: Callable[[Path], tuple[nn.Module, dict[str, np.ndarray], list[str]]]   # writes the ONNX file
    flops: float | None = None                 # GEMM FLOPs for the transformer rows (GFLOP/s table)
    memory_bound: bool = False                 # reads every weight once per call (bandwidth table)


def make_cases(quick: bool) -> list[Case]:
    rng_seed = 0
    layers = 2 if quick else 12
    mini_layers = 2 if quick else 6
    exporter = _load_export_module()

    def bert(batch: int, seq: int = 128):
        def build(path: Path):
            model = exporter.export_encoder(path, layers=layers, seq=seq, batch=batch, seed=rng_seed)
            x = np.random.default_rng(1).standard_normal((batch, seq, 768)).astype(np.float32)
            return model.eval(), {"x": x}, ["y"]
        return Case("bert-base", f"bert-base b{batch} s{seq}", build, _transformer_flops(layers, batch, seq, 768, 3072))

    def minilm(batch: int, seq: int):
        def build(path: Path):
            torch.manual_seed(rng_seed)
            model = MiniLM(mini_layers).eval()
            _randomize_norms(model)
            rng = np.random.default_rng(1)
            x = rng.standard_normal((batch, seq, 384)).astype(np.float32)
            mask = np.zeros((batch, 1, 1, seq), np.float32)
            for i in range(batch):                     # padded batch: 1/8 .. 4/8 of the positions masked
                mask[i, ..., seq - seq // 8 * (i % 4 + 1):] = -10000.0
            feeds = {"x": x, "mask": mask}
            _export(model, feeds, ["y"], path)
            return model, feeds, ["y"]
        return Case("minilm", f"minilm b{batch} s{seq}", build, _transformer_flops(mini_layers, batch, seq, 384, 1536))

    def resnet(name: str, block: type, depths: tuple[int, ...]):
        def build(path: Path):
            torch.manual_seed(rng_seed)
            model = ResNet(block, (1, 1, 1, 1) if quick else depths)
            _calibrate_batchnorm(model, (1, 3, 224, 224))
            feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)}
            _export(model, feeds, ["y"], path)
            return model, feeds, ["y"]
        return Case(name, f"{name} b1", build)

    def gpt2(past: int = 512):
        def build(path: Path):
            torch.manual_seed(rng_seed)
            model = GPT2Decode(layers).eval()
            _randomize_norms(model)
            rng = np.random.default_rng(1)
            feeds = {"x": rng.standard_normal((1, 1, 768)).astype(np.float32)}
            for kind in ("k", "v"):
                for i in range(layers):
                    feeds[f"past_{kind}_{i}"] = rng.standard_normal((1, 12, past, 64)).astype(np.float32)
            outputs = ["y", "new_k", "new_v"]
            _export(model, feeds, outputs, path)
            return model, feeds, outputs
        return Case("gpt2-decode", f"gpt2-decode p{past}", build,
                    _transformer_flops(layers, 1, 1, 768, 3072, kv_len=past + 1), memory_bound=True)

    def jet(batch: int):
        def build(path: Path):
            torch.manual_seed(rng_seed)
            model = JetMLP().eval()
            feeds = {"x": np.random.default_rng(1).standard_normal((batch, 16)).astype(np.float32)}
            _export(model, feeds, ["y"], path)
            return model, feeds, ["y"]
        return Case("jet-mlp", f"jet-mlp b{batch}", build)

    big_batch, long_seq = (2, 256) if quick else (8, 512)
    return [bert(1), bert(big_batch), minilm(1, 128), minilm(big_batch, 128), minilm(1, long_seq),
            resnet("resnet18", BasicBlock, (2, 2, 2, 2)), resnet("resnet50", Bottleneck, (3, 4, 6, 3)),
            gpt2(), jet(1), jet(1024)]


# ---- peers -------------------------------------------------------------------------------------------------
# A peer's prepare() returns a Runner: run() does one inference, outputs() turns its result into the list of
# output arrays (fp32, in output order); precision is what the engine really computes in.

@dataclass
class Runner:
    run: Callable[[], Any]
    outputs: Callable[[Any], list[np.ndarray]]
    precision: str
    info: str = ""
    close: Callable[[], None] = lambda: None
    streamed_bytes: int | None = None          # bytes a call must read from memory: weights + inputs


@dataclass
class Context:
    path: Path
    model: nn.Module
    feeds: dict[str, np.ndarray]
    output_names: list[str]
    args: argparse.Namespace


def prep_accelc(ctx: Context, dtype: str) -> Runner:
    t0 = time.perf_counter()
    m = accelc.compile(ctx.path, ctx.args.target, dtype=dtype, threads=ctx.args.threads, measure_accuracy=False,
                       tune=ctx.args.tune)
    if m.variant is None:
        raise RuntimeError(f"the artifact does not run on this machine ({m.manifest['target']})")
    feeds = ctx.feeds
    log(f"  accelc {dtype}: compiled in {time.perf_counter() - t0:.1f}s")
    streamed = int(m.manifest["backend"].get("weights_bytes", 0)) + sum(int(v.nbytes) for v in feeds.values())
    return Runner(lambda: m.run(feeds), lambda r: [r[n] for n in ctx.output_names], dtype, f"variant {m.variant}",
                  m.module.close, streamed)


def prep_ort(ctx: Context) -> Runner:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = ctx.args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(ctx.path), so, providers=["CPUExecutionProvider"])
    feeds = ctx.feeds
    return Runner(lambda: sess.run(None, feeds), list, "fp32", f"onnxruntime {ort.__version__}")


def prep_openvino(ctx: Context, precision: str) -> Runner:
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(str(ctx.path), "CPU", {"INFERENCE_NUM_THREADS": ctx.args.threads,
                                                         "INFERENCE_PRECISION_HINT": precision,
                                                         "PERFORMANCE_HINT": "LATENCY"})
    # OpenVINO quietly runs f32 where the CPU has no bf16: believe what it reads back, not what was asked.
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    actual = (hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)).lower()   # 'f32', 'bf16'
    real = {"bf16": "bf16", "bfloat16": "bf16", "f32": "fp32", "float32": "fp32"}.get(actual, actual)
    request = compiled.create_infer_request()
    feeds = ctx.feeds
    n_out = len(compiled.outputs)
    return Runner(lambda: request.infer(feeds, share_inputs=True),
                  lambda _r: [np.array(request.get_output_tensor(i).data, np.float32) for i in range(n_out)],
                  real, f"openvino {ov.__version__.split('-')[0]}, asked {precision}, runs {actual}")


def _torch_inputs(ctx: Context, dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.from_numpy(a).to(dtype) if a.dtype == np.float32 else torch.from_numpy(a) for a in ctx.feeds.values()]


def _torch_outputs(result) -> list[np.ndarray]:
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [t.float().numpy() for t in items]


def prep_torch(ctx: Context, precision: str, compiled: bool) -> Runner:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = copy.deepcopy(ctx.model).to(dtype).eval()
    inputs = _torch_inputs(ctx, dtype)
    info = f"torch {torch.__version__}"
    if compiled:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
        torch._dynamo.reset()
        model = torch.compile(model)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(*inputs)                         # compiles
        info += f", inductor (freezing), compiled in {time.perf_counter() - t0:.1f}s"

    def run():
        with torch.inference_mode():
            return model(*inputs)
    return Runner(run, _torch_outputs, precision, info)


PREPARE: dict[str, Callable[[Context], Runner]] = {
    "accelc-fp32": lambda c: prep_accelc(c, "fp32"),
    "accelc-bf16": lambda c: prep_accelc(c, "bf16"),
    "ort-fp32": prep_ort,
    "openvino-fp32": lambda c: prep_openvino(c, "f32"),
    "openvino-bf16": lambda c: prep_openvino(c, "bf16"),
    "torch-eager-fp32": lambda c: prep_torch(c, "fp32", False),
    "torch-eager-bf16": lambda c: prep_torch(c, "bf16", False),
    "torch-compile-fp32": lambda c: prep_torch(c, "fp32", True),
    "torch-compile-bf16": lambda c: prep_torch(c, "bf16", True),
}
PACKAGE = {"ort": "onnxruntime", "openvino": "openvino"}


def _matches(peer: str, token: str) -> bool:
    """'torch-compile' matches both torch.compile peers, 'bf16' every bf16 peer, 'accelc-bf16' itself."""
    return peer == token or peer.startswith(token + "-") or peer.endswith("-" + token)


def select_peers(peers: str | None, skip: list[str]) -> list[str]:
    chosen = [p for p in PEERS if not peers or any(_matches(p, t) for t in peers.split(","))]
    tokens = [t for s in skip for t in s.split(",") if t]
    return [p for p in chosen if not any(_matches(p, t) for t in tokens)]


# ---- measurement -------------------------------------------------------------------------------------------

def time_interleaved(runners: dict[str, Runner], first_s: dict[str, float], runs: int, warmup: int,
                     budget_s: float) -> dict[str, list[float]]:
    """Per engine, up to ``runs`` samples of seconds per call; ``first_s`` is each engine's first call, made by
    the caller (it counts as the first warmup call). Engines take turns in rounds (each round, each engine runs
    a block of consecutive calls), so load from elsewhere spreads over all of them. A call shorter than ~2 ms
    is timed in a loop (one sample = the mean of the loop). An engine stops once it has spent ``budget_s`` and
    has 3 samples, or 1 sample when even 3 calls do not fit the budget (slow emulated bf16 paths)."""
    inner, est, spent, need = {}, {}, {}, {}
    for name, r in runners.items():
        best = spent[name] = first_s[name]
        for _ in range(warmup - 1 if best < 1.0 else 0):      # a call of a second or more needs no more warmup
            t0 = time.perf_counter()
            r.run()
            dt = time.perf_counter() - t0
            best, spent[name] = min(best, dt), spent[name] + dt
        est[name] = best
        inner[name] = max(1, min(2000, int(0.002 / max(best, 1e-7))))
        need[name] = min(runs, 3 if 3 * best <= budget_s else 1)
    rounds = max(1, min(runs, 5))
    per_round = [runs // rounds + (1 if i < runs % rounds else 0) for i in range(rounds)]
    samples: dict[str, list[float]] = {n: [] for n in runners}
    for block in per_round:
        for name, r in runners.items():
            done = lambda: spent[name] > budget_s and len(samples[name]) >= need[name]  # noqa: E731
            if done():
                continue
            t_block = time.perf_counter()
            if est[name] < 0.1:                   # re-warm caches/thread pools the other engines took over
                r.run()
            for _ in range(block):
                t0 = time.perf_counter()
                for _ in range(inner[name]):
                    r.run()
                samples[name].append((time.perf_counter() - t0) / inner[name])
                if done():
                    break
            spent[name] += time.perf_counter() - t_block
    return samples


def compare(actual: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """Worst max-abs error and cosine over all outputs."""
    if len(actual) != len(reference):
        return {"max_abs": math.inf, "cosine": 0.0}
    max_abs, cosine = 0.0, 1.0
    for a, r in zip(actual, reference):
        a = np.asarray(a, np.float64).ravel()
        r = np.asarray(r, np.float64).ravel()
        if a.shape != r.shape or not np.all(np.isfinite(a)):
            return {"max_abs": math.inf, "cosine": 0.0}
        max_abs = max(max_abs, float(np.max(np.abs(a - r))) if a.size else 0.0)
        denom = np.linalg.norm(a) * np.linalg.norm(r)
        cosine = min(cosine, float(a @ r / denom) if denom > 0 else float(np.array_equal(a, r)))
    return {"max_abs": max_abs, "cosine": cosine}


def gemm_ceiling(n: int, reps: int) -> dict[str, tuple[float, int]]:
    """GFLOP/s of an n^3 torch matmul, best of ``reps``, fp32 and bf16, on torch's threads; per dtype
    (GFLOP/s, size used). Where torch has no fast bf16 GEMM (no AVX512-BF16/AMX) its bf16 matmul takes
    ~100x longer: a small probe finds that and shrinks n so that one product stays under ~0.5 s."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(256, 256).to(dtype), torch.randn(256, 256).to(dtype)
        probe = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            probe = min(probe, max(time.perf_counter() - t0, 1e-6))
        size = max(256, min(n, int(256 * (0.5 / probe) ** (1 / 3)) // 256 * 256))
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        torch.matmul(a, b)
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        out[name] = (2 * size ** 3 / best / 1e9, size)
    return out


def read_bandwidth(threads: int, mbytes: int = 1024, reps: int = 5) -> float:
    """GB/s of a torch sum over ``mbytes`` MB of fp32 (far beyond the caches), best of ``reps``, on torch's
    threads: the rate at which these cores can stream memory, the bound of a memory-bound decode step."""
    x = torch.ones(mbytes * (1 << 20) // 4)
    x.sum()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def bf16_native() -> bool:
    """Whether this CPU has bf16 GEMM instructions (AVX512-BF16 or AMX) that torch can use."""
    cpu = getattr(torch, "cpu", None)
    return bool(cpu and (getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                         or getattr(cpu, "_is_amx_tile_supported", lambda: False)()))


@dataclass
class Cell:
    ms: float | None = None
    samples: int = 0
    precision: str = ""
    info: str = ""
    error: str | None = None                  # why there is no time (prepare or run failed)
    streamed_bytes: int | None = None
    check: dict[str, float] = field(default_factory=dict)

    def flagged(self) -> bool:
        return bool(self.check) and self.check["cosine"] < MIN_COSINE.get(self.precision, 0.99)


def bench_case(case: Case, peers: list[str], args: argparse.Namespace, tmp: Path, notes: list[str]) -> dict[str, Cell]:
    path = tmp / f"{case.label.replace(' ', '_')}.onnx"
    t0 = time.perf_counter()
    model, feeds, output_names = case.build(path)
    log(f"[{case.label}] exported in {time.perf_counter() - t0:.1f}s ({path.stat().st_size / 1e6:.0f} MB)")
    ctx = Context(path, model, feeds, output_names, args)
    cells: dict[str, Cell] = {}
    runners: dict[str, Runner] = {}
    for peer in peers:
        pkg = PACKAGE.get(peer.split("-")[0])
        if pkg and importlib.util.find_spec(pkg) is None:
            cells[peer] = Cell(error=f"skipped: package '{pkg}' is not installed")
            continue
        try:
            runners[peer] = PREPARE[peer](ctx)
            cells[peer] = Cell(precision=runners[peer].precision, info=runners[peer].info,
                               streamed_bytes=runners[peer].streamed_bytes)
            log(f"[{case.label}] {peer}: ready ({runners[peer].info})")
        except Exception as e:  # noqa: BLE001 - one engine failing must not end the table
            cells[peer] = Cell(error=f"{type(e).__name__}: {e}")
            log(f"[{case.label}] {peer}: FAILED {type(e).__name__}: {e}")

    # Reference outputs: ONNX Runtime fp32 (its own session if it is not a timed peer), else PyTorch eager fp32.
    reference, ref_name = None, None
    try:
        ref = runners.get("ort-fp32") or prep_ort(ctx)
        reference, ref_name = ref.outputs(ref.run()), "onnxruntime"
    except Exception as e:  # noqa: BLE001
        log(f"[{case.label}] onnxruntime reference unavailable ({type(e).__name__}: {e}); using PyTorch eager fp32")
        with torch.inference_mode():
            reference, ref_name = _torch_outputs(model(*_torch_inputs(ctx, torch.float32))), "torch eager fp32"
    # Each engine's first call: checked against the reference, and its time seeds the warmup.
    first_s: dict[str, float] = {}
    for peer, r in list(runners.items()):
        try:
            t0 = time.perf_counter()
            result = r.run()
            first_s[peer] = time.perf_counter() - t0
            cells[peer].check = compare(r.outputs(result), reference)
        except Exception as e:  # noqa: BLE001
            cells[peer].error = f"run failed: {type(e).__name__}: {e}"
            runners.pop(peer).close()

    try:
        samples = time_interleaved(runners, first_s, args.runs, args.warmup, args.budget)
    except Exception as e:  # noqa: BLE001 - find the culprit, time the others
        log(f"[{case.label}] timing failed ({type(e).__name__}: {e}); timing engines one by one")
        samples = {}
        for p, r in runners.items():
            try:
                samples.update(time_interleaved({p: r}, first_s, args.runs, args.warmup, args.budget))
            except Exception as e2:  # noqa: BLE001
                cells[p].error = f"run failed: {type(e2).__name__}: {e2}"
    for p, s in samples.items():
        cells[p].ms, cells[p].samples = statistics.median(s) * 1e3, len(s)
    for r in runners.values():
        r.close()
    if ref_name != "onnxruntime":
        notes.append(f"{case.label}: outputs checked against {ref_name} (no onnxruntime)")
    line = ", ".join(f"{p} {c.ms:.3g} ms (n={c.samples})" for p, c in cells.items() if c.ms is not None)
    log(f"[{case.label}] {line}")
    del runners, model
    torch._dynamo.reset()
    gc.collect()
    return cells


# ---- report ------------------------------------------------------------------------------------------------

def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def _ratio(accel_ms: float, peer_ms: float) -> str:
    r = peer_ms / accel_ms
    x = f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"
    return f"{x} (par)" if abs(r - 1) < 0.005 else f"{x} faster" if r > 1 else f"{x} (slower)"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def fmt(r: list[str]) -> str:                # first column left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def report(results: list[tuple[Case, dict[str, Cell]]], peers: list[str], ceiling: dict[str, Any] | None,
           notes: list[str], args: argparse.Namespace) -> None:
    out = print
    # Engine columns; a bf16 column whose engine read back another precision is labelled as such.
    headers = []
    for p in peers:
        precisions = {res[p].precision for _, res in results if p in res and res[p].precision}
        label = COLUMN[p]
        if p.endswith("bf16") and precisions and precisions != {"bf16"}:
            label += "*"
            notes.insert(0, f"* {COLUMN[p]}: the engine read back precision {'/'.join(sorted(precisions))}, not bf16 "
                            f"(this CPU has no bf16 support): the column is an f32 run, counted as an fp32 peer")
        headers.append(label)
    note_ids: dict[str, int] = {}
    rows = []
    for case, cells in results:
        row = [case.label]
        for p in peers:
            c = cells.get(p)
            if c is None:
                row.append("-")
            elif c.error is not None:
                key = f"{case.label}: {p}: {c.error}"
                note_ids.setdefault(key, len(note_ids) + 1)
                row.append("skip" if c.error.startswith("skipped") else f"fail[{note_ids[key]}]")
            else:
                row.append(_fmt_ms(c.ms) + ("!" if c.flagged() else ""))
        rows.append(row)
    out(f"\nmedian ms per call, {args.threads} threads, target '{args.target}' "
        f"('!' = outputs disagree with onnxruntime fp32: cosine below {MIN_COSINE['fp32']} fp32 / "
        f"{MIN_COSINE['bf16']} bf16)")
    out(_table(["model"] + headers, rows))
    if note_ids or notes:
        out("\nnotes:")
        for n in notes:
            out(f"  {n}")
        for key, i in note_ids.items():
            out(f"  [{i}] {key}")

    # accelc vs the fastest peer of the same (real) precision, with accelc's agreement with onnxruntime.
    rows = []
    for case, cells in results:
        row = [case.label]
        for dtype in ("fp32", "bf16"):
            mine = cells.get(f"accelc-{dtype}")
            rivals = [(p, c) for p, c in cells.items() if not p.startswith("accelc") and c.ms is not None
                      and c.precision == dtype]
            if mine is None or mine.ms is None:
                row += ["-", "-", "-", "-"]
                continue
            check = f"{mine.check['max_abs']:.1e} / {mine.check['cosine']:.6f}" + ("!" if mine.flagged() else "")
            if rivals:
                best_p, best = min(rivals, key=lambda pc: pc[1].ms)
                row += [_fmt_ms(mine.ms), f"{COLUMN[best_p]} {_fmt_ms(best.ms)}", _ratio(mine.ms, best.ms), check]
            else:
                row += [_fmt_ms(mine.ms), "-", "-", check]
        rows.append(row)
    if any(any(c != "-" for c in r[1:]) for r in rows):
        out("\naccelc vs the fastest peer of the same precision (ms; check = max abs err / cosine vs onnxruntime fp32)")
        out(_table(["model", "accelc fp32", "best fp32 peer", "ratio", "check fp32",
                    "accelc bf16", "best bf16 peer", "ratio", "check bf16"], rows))
        for dtype in ("fp32", "bf16"):
            variants = sorted({cells[f"accelc-{dtype}"].info for _, cells in results
                               if cells.get(f"accelc-{dtype}") and cells[f"accelc-{dtype}"].info})
            if variants:
                out(f"  accelc {dtype}: {'; '.join(variants)} (the ISA variant that ran)")

    # Achieved GFLOP/s on the transformer rows, against the measured matmul ceiling.
    rows = []
    for case, cells in results:
        if case.flops is None:
            continue
        row = [case.label, f"{case.flops / 1e9:.2f}"]
        for dtype in ("fp32", "bf16"):
            c = cells.get(f"accelc-{dtype}")
            if c is None or c.ms is None:
                row += ["-", "-"]
                continue
            gflops = case.flops / (c.ms / 1e3) / 1e9
            usable = ceiling and (dtype == "fp32" or ceiling["bf16_native"])
            row += [f"{gflops:.1f}", f"{100 * gflops / ceiling[dtype]:.0f}%" if usable else "n/a"]
        rows.append(row)
    if rows:
        out("\naccelc achieved GEMM GFLOP/s (Linear + attention QK^T/PV FLOPs counted analytically, / median time)")
        if ceiling:
            out(f"  ceiling: torch n^3 matmul, best of {args.gemm_reps}, {args.threads} threads, the better of a "
                f"measurement before and after the models: fp32 {ceiling['fp32']:.1f} GFLOP/s (n={ceiling['fp32_n']}, "
                f"before/after {ceiling['fp32_runs'][0]:.1f}/{ceiling['fp32_runs'][1]:.1f}), bf16 "
                f"{ceiling['bf16']:.1f} GFLOP/s (n={ceiling['bf16_n']})")
            if not ceiling["bf16_native"]:
                out("  bf16: this CPU has no AVX512-BF16/AMX, torch's bf16 matmul is not a ceiling: no bf16 fraction")
        out(_table(["model", "GFLOP", "fp32 GFLOP/s", "of ceiling", "bf16 GFLOP/s", "of ceiling"], rows))

    # Memory-bound rows: the bytes a call must read (the artifact's weights + the inputs, e.g. the KV cache)
    # over the median time, against the measured read bandwidth.
    rows = []
    bw = ceiling.get("read_gbs") if ceiling else None
    for case, cells in results:
        if not case.memory_bound:
            continue
        row = [case.label]
        for dtype in ("fp32", "bf16"):
            c = cells.get(f"accelc-{dtype}")
            if c is None or c.ms is None or not c.streamed_bytes:
                row += ["-", "-", "-"]
                continue
            gbs = c.streamed_bytes / (c.ms / 1e3) / 1e9
            row += [f"{c.streamed_bytes / 1e6:.0f}", f"{gbs:.1f}", f"{100 * gbs / bw:.0f}%" if bw else "n/a"]
        rows.append(row)
    if rows:
        out("\naccelc memory streaming (MB read per call = weights + inputs, / median time)")
        if bw:
            out(f"  bandwidth: torch sum over 1 GB of fp32, best of 5, {args.threads} threads, the better of a "
                f"measurement before and after the models: {bw:.1f} GB/s (before/after "
                f"{ceiling['read_runs'][0]:.1f}/{ceiling['read_runs'][1]:.1f})")
        out(_table(["model", "fp32 MB", "fp32 GB/s", "of bandwidth", "bf16 MB", "bf16 GB/s", "of bandwidth"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of: {', '.join(MODELS)}")
    p.add_argument("--peers", default=None, help=f"comma list of peers (or prefixes/suffixes): {', '.join(PEERS)}")
    p.add_argument("--skip", action="append", default=[],
                   help="peers to leave out, same names (comma list; repeatable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", default="host", help="accelc target (spr/emr/gnr on an AMX machine)")
    p.add_argument("--tune", action="store_true", help="compile accelc with --tune (measured work splits, cached)")
    p.add_argument("--runs", type=int, default=None, help="timed samples per engine (default 10; --quick: 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per engine (default 2; --quick: 1)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per engine and row after which timing stops at 3 samples (default 60; --quick: 5)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2-layer transformers, batch 2 for 8, seq 256 for 512, 1-block-per-stage ResNets")
    p.add_argument("--gemm-n", type=int, default=2048, help="matmul size of the GEMM ceiling")
    p.add_argument("--gemm-reps", type=int, default=5)
    p.add_argument("--no-ceiling", action="store_true", help="do not measure the matmul ceiling")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args()
    a.runs = a.runs or (3 if a.quick else 10)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    a.budget = a.budget or (5.0 if a.quick else 60.0)
    if a.quick:
        a.gemm_n, a.gemm_reps = min(a.gemm_n, 1024), min(a.gemm_reps, 3)

    wanted = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    peers = select_peers(a.peers, a.skip)
    if not peers:
        p.error("no peer left to run")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    if load_before > 0.5 and (os.cpu_count() or 1) - load_before < a.threads:
        log(f"warning: load average {load_before:.1f} on {os.cpu_count()} CPUs: other processes share the cores "
            f"this benchmark's {a.threads} threads need; OpenMP-based engines (accelc, torch) suffer most")
    log(f"accelc {accelc.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{a.threads} threads, target '{a.target}'; peers: {', '.join(peers)}")
    # The GEMM ceiling is measured before and after the models (the better of the two counts), so that a
    # burst of load from elsewhere during one of them does not lower it.
    ceiling_runs, bandwidth_runs = [], []
    if not a.no_ceiling:
        ceiling_runs.append(gemm_ceiling(a.gemm_n, a.gemm_reps))
        bandwidth_runs.append(read_bandwidth(a.threads))
        log("GEMM ceiling (torch matmul): "
            + ", ".join(f"{k} {g:.1f} GFLOP/s (n={n})" for k, (g, n) in ceiling_runs[0].items())
            + f"; read bandwidth {bandwidth_runs[0]:.1f} GB/s")

    cases = [c for c in make_cases(a.quick) if c.model in wanted]
    results: list[tuple[Case, dict[str, Cell]]] = []
    notes: list[str] = []
    if a.quick:
        notes.append("--quick: 2-layer transformers, batch 2 for 8, seq 256 for 512, ResNets with one block per "
                     "stage: not the real models")
    try:
        with tempfile.TemporaryDirectory() as d:
            for case in cases:
                try:
                    results.append((case, bench_case(case, peers, a, Path(d), notes)))
                except Exception as e:  # noqa: BLE001 - building/exporting the model itself failed
                    notes.append(f"{case.label}: could not build/export the model: {type(e).__name__}: {e}")
                    log(f"[{case.label}] FAILED to build: {type(e).__name__}: {e}")
    except KeyboardInterrupt:
        notes.append("interrupted: partial results")
    ceiling = None
    if ceiling_runs:
        ceiling_runs.append(gemm_ceiling(a.gemm_n, a.gemm_reps))
        bandwidth_runs.append(read_bandwidth(a.threads))
        ceiling = {"bf16_native": bf16_native(), "read_gbs": max(bandwidth_runs), "read_runs": bandwidth_runs}
        for k in ("fp32", "bf16"):
            best = max(ceiling_runs, key=lambda c: c[k][0])[k]
            ceiling.update({k: best[0], f"{k}_n": best[1], f"{k}_runs": [c[k][0] for c in ceiling_runs]})
    short = [f"{c.label}: {p} ({cell.samples})" for c, cells in results for p, cell in cells.items()
             if cell.ms is not None and cell.samples < 3]
    if short:
        notes.append("fewer than 3 samples (a call longer than a third of --budget): " + ", ".join(short))
    notes.append(f"1-min load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} "
                 f"CPUs (ours is up to {a.threads} of it after); with the cores shared, OpenMP engines stall in "
                 f"barriers")
    report(results, peers, ceiling, notes, a)

    if a.json:
        dump = {"args": vars(a), "machine": platform.processor() or platform.machine(), "accelc": accelc.__version__,
                "torch": torch.__version__, "gemm_ceiling": ceiling, "notes": notes,
                "rows": [{"model": c.model, "label": c.label, "gemm_flops": c.flops,
                          "engines": {p: vars(cell) for p, cell in cells.items()}} for c, cells in results]}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(dump, indent=2, default=str))
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
