"""Small models for the FPGA backend, built here with He-scaled seeded weights (nothing downloaded).

    python examples/fpga_models.py            # writes examples/jet_mlp.onnx, small_cnn.onnx, tiny_transformer.onnx

* ``jet_mlp``: the jet-tagging MLP 16-64-32-32-5 (ReLU, softmax), the classic hls4ml benchmark model.
* ``small_cnn``: 32x32x3 input, two conv+ReLU+max-pool stages, two dense layers, softmax.
* ``tiny_transformer``: a 2-layer encoder (hidden 32, 2 heads, FFN 64, post-LayerNorm), as ``torch.onnx``
  exports it (MatMul/Add, Reshape/Transpose, Softmax, LayerNormalization); built with onnx.helper so
  that it needs no PyTorch.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def he(self, shape, fan_in: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def op(self, op_type: str, inputs, base: str | None = None, **attrs) -> str:
        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def dense(self, x: str, k: int, n: int, base: str) -> str:
        w = self.const(self.he((k, n), k), base + "_w")
        b = self.const((self.rng.standard_normal(n) * 0.1).astype(np.float32), base + "_b")
        return self.op("Add", [self.op("MatMul", [x, w], base + "_mm"), b], base)

    def model(self, name: str, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="accelc-examples")
        onnx.checker.check_model(m)
        return m


def jet_mlp(batch: int | str = "N", seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    h = "x"
    for i, (k, n) in enumerate([(16, 64), (64, 32), (32, 32)]):
        h = b.op("Relu", [b.dense(h, k, n, f"fc{i + 1}")], f"relu{i + 1}")
    y = b.op("Softmax", [b.dense(h, 32, 5, "fc4")], "softmax", axis=-1)
    return b.model("jet_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, 5])])


def small_cnn(batch: int | str = "N", seed: int = 0, size: int = 32, channels: tuple[int, int] = (8, 16)) -> onnx.ModelProto:
    b = _Builder(seed)
    c1, c2 = channels
    h = "image"
    cin = 3
    for i, cout in enumerate((c1, c2)):
        w = b.const(b.he((cout, cin, 3, 3), cin * 9), f"conv{i + 1}_w")
        bias = b.const((b.rng.standard_normal(cout) * 0.1).astype(np.float32), f"conv{i + 1}_b")
        h = b.op("Conv", [h, w, bias], f"conv{i + 1}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        h = b.op("Relu", [h], f"relu{i + 1}")
        h = b.op("MaxPool", [h], f"pool{i + 1}", kernel_shape=[2, 2], strides=[2, 2])
        cin = cout
    h = b.op("Flatten", [h], "flatten", axis=1)
    flat = c2 * (size // 4) ** 2
    h = b.op("Relu", [b.dense(h, flat, 32, "fc1")], "relu3")
    y = b.op("Softmax", [b.dense(h, 32, 10, "fc2")], "softmax", axis=-1)
    return b.model("small_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, 10])])


def tiny_transformer(batch: int | str = "N", seq: int = 8, hidden: int = 32, heads: int = 2, ffn: int = 64,
                     layers: int = 2, seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    dh = hidden // heads
    h = "tokens"
    split = b.const(np.array([0, seq, heads, dh], np.int64), "split_shape")
    merge = b.const(np.array([0, seq, hidden], np.int64), "merge_shape")
    scale = b.const(np.array(1.0 / np.sqrt(dh), np.float32), "scale")
    for li in range(layers):
        p = f"l{li}"

        def heads_of(t: str, tag: str, perm) -> str:
            r = b.op("Reshape", [t, split], f"{p}_{tag}_split")
            return b.op("Transpose", [r], f"{p}_{tag}_heads", perm=perm)
        q = heads_of(b.dense(h, hidden, hidden, f"{p}_q"), "q", [0, 2, 1, 3])
        kt = heads_of(b.dense(h, hidden, hidden, f"{p}_k"), "k", [0, 2, 3, 1])
        v = heads_of(b.dense(h, hidden, hidden, f"{p}_v"), "v", [0, 2, 1, 3])
        scores = b.op("Mul", [b.op("MatMul", [q, kt], f"{p}_qk"), scale], f"{p}_scaled")
        probs = b.op("Softmax", [scores], f"{p}_probs", axis=-1)
        ctx = b.op("Transpose", [b.op("MatMul", [probs, v], f"{p}_pv")], f"{p}_ctx_t", perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, merge], f"{p}_ctx")
        attn = b.dense(ctx, hidden, hidden, f"{p}_o")
        gamma1 = b.const((1.0 + 0.1 * b.rng.standard_normal(hidden)).astype(np.float32), f"{p}_ln1_g")
        beta1 = b.const((0.1 * b.rng.standard_normal(hidden)).astype(np.float32), f"{p}_ln1_b")
        h = b.op("LayerNormalization", [b.op("Add", [h, attn], f"{p}_res1"), gamma1, beta1], f"{p}_ln1",
                 axis=-1, epsilon=1e-5)
        f = b.dense(b.op("Relu", [b.dense(h, hidden, ffn, f"{p}_ff1")], f"{p}_ff_relu"), ffn, hidden, f"{p}_ff2")
        gamma2 = b.const((1.0 + 0.1 * b.rng.standard_normal(hidden)).astype(np.float32), f"{p}_ln2_g")
        beta2 = b.const((0.1 * b.rng.standard_normal(hidden)).astype(np.float32), f"{p}_ln2_b")
        h = b.op("LayerNormalization", [b.op("Add", [h, f], f"{p}_res2"), gamma2, beta2], f"{p}_ln2",
                 axis=-1, epsilon=1e-5)
    return b.model("tiny_transformer",
                   [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [batch, seq, hidden])],
                   [helper.make_tensor_value_info(h, TensorProto.FLOAT, [batch, seq, hidden])])


MODELS = {"jet_mlp": jet_mlp, "small_cnn": small_cnn, "tiny_transformer": tiny_transformer}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).parent
    out.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        path = out / f"{name}.onnx"
        onnx.save(build(), path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
