"""The `accelc` command, run as users run it (a subprocess): exit codes, one-line errors, no tracebacks,
no overwriting, and the shipped example end to end (including the C example against the C ABI)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def accelc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "accelc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600)


def assert_clean_error(r: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> None:
    """Exit ``code``, exactly one line `accelc: error: ...` on stderr containing each fragment."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("accelc:")]
    assert len(lines) == 1 and lines[0].startswith("accelc: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture(scope="module")
def example_model(tmp_path_factory) -> tuple[Path, Path]:
    """The shipped example (regenerated into a tmp dir, so the test never depends on a stale file)."""
    d = tmp_path_factory.mktemp("example")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import make_example
    finally:
        sys.path.pop(0)
    onnx.save(make_example.build(), d / "mlp.onnx")
    np.save(d / "x.npy", np.random.default_rng(7).standard_normal((4, 16)).astype(np.float32))
    return d / "mlp.onnx", d / "x.npy"


@pytest.fixture(scope="module")
def compiled(example_model, tmp_path_factory) -> Path:
    model, _ = example_model
    out = tmp_path_factory.mktemp("art") / "mlp.accelc"
    r = accelc("compile", model, "--target", "host", "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "accuracy vs fp32 reference" in r.stdout
    assert r.stderr == ""          # --quiet: no progress lines
    return out


def test_readme_flow_compile_run_check(example_model, compiled, tmp_path):
    model, x = example_model
    r = accelc("run", compiled, "--input", f"x={x}", "--check-against-onnx", model, "--output-dir", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "probs: float32 4x10" in r.stdout
    assert "checked against ONNX Runtime: ok" in r.stdout
    probs = np.load(tmp_path / "o" / "probs.npy")
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    # outputs are not overwritten without --force
    r = accelc("run", compiled, "--input", f"x={x}", "--output-dir", tmp_path / "o")
    assert_clean_error(r, "already exists", "--force")


def test_compile_shows_progress_and_refuses_to_overwrite(example_model, tmp_path):
    model, _ = example_model
    out = tmp_path / "m.accelc"
    out.write_bytes(b"precious")
    r = accelc("compile", model, "-o", out)
    assert_clean_error(r, "already exists", "--force")
    assert out.read_bytes() == b"precious"
    r = accelc("compile", model, "-o", out, "--force", "-O1")
    assert r.returncode == 0, r.stderr
    assert "frontend" in r.stderr and "backend" in r.stderr       # progress lines
    assert zipfile.is_zipfile(out)


def test_inspect_artifact_and_model(example_model, compiled):
    model, _ = example_model
    r = accelc("inspect", compiled)
    assert r.returncode == 0, r.stderr
    for text in ("target: host", "x: f32 4x16", "probs: f32 4x10", "pass log:", "fuse_epilogues", "accuracy"):
        assert text in r.stdout
    r = accelc("inspect", model, "-O2")
    assert r.returncode == 0, r.stderr
    assert "FusedGemm" in r.stdout and "graph mlp" in r.stdout


def test_targets_table():
    r = accelc("targets")
    assert r.returncode == 0
    assert "spr" in r.stdout and "host" in r.stdout and "a100" in r.stdout


def test_dump_after_and_unknown_pass(example_model, tmp_path):
    model, _ = example_model
    r = accelc("compile", model, "-o", tmp_path / "a.accelc", "--dump-after", "fuse_epilogues", "--quiet",
               "--no-accuracy")
    assert r.returncode == 0, r.stderr
    assert "IR after fuse_epilogues" in r.stderr and "FusedGemm" in r.stderr
    r = accelc("compile", model, "-o", tmp_path / "b.accelc", "--stop-after", "no_such_pass")
    assert_clean_error(r, "no_such_pass")


def test_usage_error_exits_2():
    r = accelc("compile")
    assert r.returncode == 2
    r = accelc("compile", "m.onnx", "-O7")
    assert r.returncode == 2


def test_bad_models_give_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffthis is not a protobuf" * 10)
    assert_clean_error(accelc("compile", garbage, "-o", tmp_path / "g.accelc"), "garbage.onnx")
    assert_clean_error(accelc("compile", tmp_path / "missing.onnx", "-o", tmp_path / "m.accelc"), "does not exist")

    model = EXAMPLES / "mlp.onnx"
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    assert_clean_error(accelc("compile", truncated, "-o", tmp_path / "t.accelc"), "truncated.onnx")

    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    unknown = tmp_path / "unknown.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), unknown)
    assert_clean_error(accelc("compile", unknown, "-o", tmp_path / "u.accelc"), "NoSuchOp")
    assert not (tmp_path / "u.accelc").exists()


def test_symbolic_shape_needs_shape_flag(tmp_path):
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), model)
    assert_clean_error(accelc("compile", model, "-o", tmp_path / "d.accelc"), "--shape x=")
    r = accelc("compile", model, "-o", tmp_path / "d.accelc", "--shape", "x=3x8", "--quiet")
    assert r.returncode == 0, r.stderr
    r = accelc("run", tmp_path / "d.accelc", "--random")
    assert r.returncode == 0, r.stderr
    assert "y: float32 3x4" in r.stdout


def test_bad_run_inputs_give_one_line_errors(compiled, tmp_path):
    wrong_dtype = tmp_path / "x64.npy"
    np.save(wrong_dtype, np.zeros((4, 16), np.float64))
    assert_clean_error(accelc("run", compiled, "--input", f"x={wrong_dtype}"), "float64", "float32")
    wrong_shape = tmp_path / "xs.npy"
    np.save(wrong_shape, np.zeros((2, 16), np.float32))
    assert_clean_error(accelc("run", compiled, "--input", f"x={wrong_shape}"), "(2, 16)", "(4, 16)")
    assert_clean_error(accelc("run", compiled, "--input", f"nope={wrong_shape}"), "no input 'nope'")
    assert_clean_error(accelc("run", compiled), "missing input", "--input x=")
    not_npy = tmp_path / "bad.npy"
    not_npy.write_text("hello")
    assert_clean_error(accelc("run", compiled, "--input", f"x={not_npy}"), "not a readable .npy")


def test_tampered_and_corrupted_artifacts_are_refused(compiled, tmp_path):
    data = compiled.read_bytes()
    with zipfile.ZipFile(compiled) as zf:
        info = zf.getinfo("weights.bin")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    tampered = tmp_path / "tampered.accelc"
    buf = bytearray(data)
    buf[start + 5] ^= 0x40
    tampered.write_bytes(bytes(buf))
    assert_clean_error(accelc("run", tampered, "--random"), "weights.bin")

    truncated = tmp_path / "truncated.accelc"
    truncated.write_bytes(data[: len(data) // 2])
    assert_clean_error(accelc("run", truncated, "--random"), "truncated.accelc")

    not_zip = tmp_path / "random.accelc"
    not_zip.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_clean_error(accelc("run", not_zip, "--random"), "not an accelc artifact")
    assert_clean_error(accelc("inspect", not_zip), "random.accelc")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_c_example_runs_an_artifact_through_the_c_abi(example_model, tmp_path):
    model, x = example_model
    art = tmp_path / "mlp_dir"
    r = accelc("compile", model, "-o", art, "--dir", "--quiet")
    assert r.returncode == 0, r.stderr
    exe = tmp_path / "run_mlp"
    lib = art / "model.so"
    subprocess.run(["gcc", "-O2", "-std=c11", "-Wall", "-Werror", "-I", str(art / "include"),
                    str(EXAMPLES / "c_api" / "main.c"), str(lib), f"-Wl,-rpath,{art}", "-o", str(exe)],
                   check=True, capture_output=True)
    xin = np.load(x)
    xin.tofile(tmp_path / "input.f32")
    r = subprocess.run([str(exe), str(art / "weights.bin"), str(tmp_path / "input.f32")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = np.array([float(v) for v in r.stdout.split()], np.float32).reshape(4, 10)

    from accelc.runtime import load
    want = load(art)(xin)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_no_winograd_flag(tmp_path):
    """A 3x3 convolution runs as a Winograd convolution by default; --no-winograd keeps it direct, and the
    manifest says which."""
    import json
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv3x3",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 28, 28])], [w])
    model = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    for flags, count in (((), 1), (("--no-winograd",), 0)):
        out = tmp_path / f"conv{count}.accelc"
        r = accelc("compile", model, "-o", out, "--quiet", *flags)
        assert r.returncode == 0, r.stderr
        assert "accuracy vs fp32 reference" in r.stdout and "MISMATCH" not in r.stdout
        r = accelc("inspect", out, "--json")
        assert r.returncode == 0, r.stderr
        man = json.loads(r.stdout)
        assert man["options"]["winograd"] is (count == 1)
        assert man["backend"]["winograd_convolutions"] == count
