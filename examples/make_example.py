"""Writes the example model ``examples/mlp.onnx`` and an input ``examples/x.npy``.

A small classifier (16 features -> 64 -> 64 -> 10, GELU-free so any ONNX Runtime can check it):
Gemm + Relu, MatMul + Add + Tanh, Gemm, Softmax. Weights come from a fixed seed, so the files are
the same on every machine (about 20 KB). Run it from the repository root:

    python examples/make_example.py
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(2024)

    def weight(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w1", weight(16, 64)), ("b1", weight(64) * 0.1), ("w2", weight(64, 64)), ("b2", weight(64) * 0.1),
        ("w3", weight(64, 10)), ("b3", weight(10) * 0.1)]]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["h2"], name="fc2_bias"),
        helper.make_node("Tanh", ["h2"], ["a2"], name="tanh2"),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["logits"], name="fc3"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [4, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="accelc-example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    onnx.save(build(), HERE / "mlp.onnx")
    np.save(HERE / "x.npy", np.random.default_rng(7).standard_normal((4, 16)).astype(np.float32))
    print(f"wrote {HERE / 'mlp.onnx'} and {HERE / 'x.npy'}")


if __name__ == "__main__":
    main()
