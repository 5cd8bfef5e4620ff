"""Whole models through the Python API: ONNX's light model zoo, a BERT-style encoder (fp32 and bf16,
against ONNX Runtime), and bad input at every stage (each a clear error, never a traceback)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import accelc
from accelc.errors import (AccelcError, ArtifactError, InputMismatchError, ModelLoadError, ShapeError,
                           UnsupportedOpError)

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

# (model, slow?) -- the slow ones fold hundreds of MB of constant weights or have ~1,000+ nodes.
LIGHT_MODELS = [
    ("light_squeezenet", False), ("light_inception_v1", False), ("light_zfnet512", True),
    ("light_bvlc_alexnet", True), ("light_resnet50", True), ("light_shufflenet", True),
    ("light_inception_v2", True), ("light_densenet121", True), ("light_vgg19", True),
]


def _light_inputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The inputs ONNX's own runner feeds light models (deterministic ramp, see Runner.generate_dummy_data)."""
    from onnx.backend.test.runner import Runner
    inits = {t.name for t in model.graph.initializer}
    return {vi.name: Runner.generate_dummy_data(vi, seed=0, random=False)
            for vi in model.graph.input if vi.name not in inits}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if slow else [])
                                  for n, slow in LIGHT_MODELS])
def test_light_model_zoo_matches_bundled_outputs(name, build_cache):
    path = LIGHT / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not part of this onnx installation")
    model = onnx.load(path)
    feeds = _light_inputs(model)
    expected = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / f"{name}_output_0.pb")))
    compiled = accelc.compile(path, "host", cache_dir=build_cache, measure_accuracy=False)
    (got,) = compiled.run(feeds).values()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


# ---- BERT-style encoder -------------------------------------------------------------------------------

def _export_encoder():
    spec = importlib.util.spec_from_file_location("export_encoder", ROOT / "examples" / "export_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.export_encoder


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


ENCODERS = [
    pytest.param(dict(layers=2, hidden=64, heads=4, ffn=256, seq=16), id="tiny"),
    pytest.param(dict(layers=12, hidden=768, heads=12, ffn=3072, seq=128), id="bert_base", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("config", ENCODERS)
def test_encoder_fp32_and_bf16_vs_onnxruntime(config, tmp_path, build_cache):
    pytest.importorskip("torch")
    path = tmp_path / "encoder.onnx"
    _export_encoder()(path, **config)
    x = np.random.default_rng(0).standard_normal((1, config["seq"], config["hidden"])).astype(np.float32)
    want = _ort(path, x)

    fp32 = accelc.compile(path, "spr", dtype="fp32", cache_dir=build_cache)
    got = fp32(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert fp32.manifest["accuracy"]["min_cosine"] > 0.99999

    bf16 = accelc.compile(path, "spr", dtype="bf16", cache_dir=build_cache)
    got16 = bf16(x)
    assert got16.dtype == np.float32
    assert _cosine(got16, want) > 0.999
    assert bf16.manifest["accuracy"]["min_cosine"] > 0.999
    assert bf16.variant in ("amx", "avx2")


# ---- bad input through the Python API ---------------------------------------------------------------

def _tiny_model(path: Path, op: str = "Relu", shape=(2, 3)) -> Path:
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="n0")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_garbage_and_truncated_onnx(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        accelc.compile(garbage)
    good = (ROOT / "examples" / "mlp.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        accelc.compile(truncated)
    with pytest.raises(ModelLoadError, match="(?i)does not exist|not found|no such file"):
        accelc.compile(tmp_path / "missing.onnx")


def test_unknown_op_lists_the_op(tmp_path):
    with pytest.raises(UnsupportedOpError, match="Frobnicate"):
        accelc.compile(_tiny_model(tmp_path / "u.onnx", op="Frobnicate"))


def test_bad_options_fail_before_work(tmp_path):
    model = _tiny_model(tmp_path / "m.onnx")
    with pytest.raises(accelc.TargetError, match="unknown target 'nosuch'"):
        accelc.compile(model, "nosuch")
    with pytest.raises(AccelcError, match="use fp32, bf16 or fp16"):
        accelc.compile(model, dtype="int3")
    with pytest.raises(AccelcError, match="opt_level"):
        accelc.compile(model, opt_level=9)
    with pytest.raises(ShapeError, match="bad shape"):
        accelc.compile(model, shapes={"x": "2xbanana"})


def test_torch_module_is_refused_with_a_hint():
    torch = pytest.importorskip("torch")
    with pytest.raises(ModelLoadError, match="torch.onnx.export"):
        accelc.compile(torch.nn.Linear(2, 2))


def test_run_time_input_errors_and_save(tmp_path, build_cache):
    m = accelc.compile(_tiny_model(tmp_path / "m.onnx"), cache_dir=build_cache)
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(m(x), np.maximum(x, 0))
    assert m.manifest["accuracy"]["max_abs_error"] == 0.0
    with pytest.raises(InputMismatchError, match="float64.*float32"):
        m(x.astype(np.float64))
    with pytest.raises(InputMismatchError, match=r"shape \(3, 3\), expected \(2, 3\)"):
        m(np.zeros((3, 3), np.float32))
    out = tmp_path / "m.accelc"
    m.save(out)
    with pytest.raises(ArtifactError, match="already exists"):
        m.save(out)
    np.testing.assert_array_equal(accelc.load(out)(x), np.maximum(x, 0))
