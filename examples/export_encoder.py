"""Exports a BERT-style encoder (torch ``nn.TransformerEncoder``) to ONNX, for tests and benchmarks.

Defaults are BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072, GELU, post-norm, sequence 128,
batch 1. Weights are random from a fixed seed (no download). The exporter is the TorchScript one
(``dynamo=False``): it needs no extra package and emits plain opset-17 ops (LayerNormalization, Erf
GELU, MatMul/Gemm, Softmax).

    python examples/export_encoder.py out/encoder.onnx --layers 12 --seq 128
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path


def build_encoder(layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072, seed: int = 0):
    import torch
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, activation="gelu", batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
    # TransformerEncoder deep-copies one layer, so every layer would hold the same weights; a compiler that
    # merges identical constants would then keep one layer's weights (a twelfth of the memory traffic) and
    # benchmarks would flatter it. Draw each layer's weights afresh, LayerNorm scales and shifts included.
    with torch.no_grad():
        for block in encoder.layers:
            for module in block.modules():
                if isinstance(module, torch.nn.MultiheadAttention):
                    module._reset_parameters()
                elif isinstance(module, torch.nn.Linear):
                    module.reset_parameters()
                elif isinstance(module, torch.nn.LayerNorm):
                    module.weight.copy_(1 + 0.1 * torch.randn_like(module.weight))
                    module.bias.copy_(0.1 * torch.randn_like(module.bias))
    return encoder


def export_encoder(path: str | Path, *, layers: int = 12, hidden: int = 768, heads: int = 12, ffn: int = 3072,
                   seq: int = 128, batch: int = 1, seed: int = 0):
    """Writes the encoder to ``path`` (input ``x``: f32[batch, seq, hidden], output ``y``) and returns the
    torch module, for comparisons with PyTorch."""
    import torch
    model = build_encoder(layers, hidden, heads, ffn, seed)
    x = torch.zeros(batch, seq, hidden)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Not under no_grad: there PyTorch takes its fused "fast path" op, which the exporter cannot export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"])
    return model


ENCODER_OPTIONS = ("layers", "hidden", "heads", "ffn", "seq", "batch")


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """The encoder's shape options (BERT-base defaults), shared with bench/bench_encoder.py."""
    for name, default in zip(ENCODER_OPTIONS, (12, 768, 12, 3072, 128, 1)):
        parser.add_argument(f"--{name}", type=int, default=default)


def encoder_kwargs(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in ENCODER_OPTIONS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output")
    add_encoder_arguments(p)
    a = p.parse_args()
    export_encoder(a.output, **encoder_kwargs(a))
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
