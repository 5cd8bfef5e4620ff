"""The FPGA backend end to end: ONNX -> Vitis HLS project -> C-simulation, bit-exact with the NumPy
fixed-point model, on the jet-tagging MLP, a small CNN and a tiny transformer encoder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import accelc
from accelc.backends.fpga_hls import toolchain
from accelc.errors import AccelcError, BackendError, UnsupportedOpError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import fpga_models  # noqa: E402

try:
    toolchain.ap_types_dir()
except BackendError as e:   # the fpga extra (hls4ml, which carries the ap_fixed headers) is missing
    pytest.skip(str(e), allow_module_level=True)


def _design_of(compiled, fpga: dict):
    """The typed design the backend built for ``compiled`` (rebuilt: the mapping is deterministic)."""
    from accelc.backends.fpga_hls.backend import FpgaHlsBackend
    from accelc.backends.fpga_hls.config import FpgaOptions
    from accelc.targets import get_target
    target = get_target(compiled.manifest["target"])
    built = FpgaHlsBackend().build_design(compiled.graph, target, FpgaOptions.parse(fpga))
    return built.design, built.in_ports, built.out_ports


def _check_bit_exact(compiled, fpga: dict, feeds: dict[str, np.ndarray], tmp_path: Path, codes_main: bool = True):
    """C-simulation through the runtime (floats) and through a codes main (raw integers) both equal the
    NumPy fixed-point model exactly."""
    from accelc.backends.fpga_hls import codegen
    from accelc.backends.fpga_hls.config import from_design_layout, to_design_layout
    design, ins, outs = _design_of(compiled, fpga)
    codes = [p.value.type.from_float(to_design_layout(feeds[p.ir_name].astype(np.float64), p)) for p in ins]
    want = codegen.fx_eval_design(design, codes)
    got = compiled.run(feeds)
    for p, w in zip(outs, want):
        np.testing.assert_array_equal(got[p.ir_name], from_design_layout(p.value.type.to_float(w), p).astype(np.float32))
        assert len(np.unique(w)) > 4, "outputs collapsed to a few values: the test data cannot find bugs"
    if codes_main:
        raw = codegen.run_codes(design, codes, tmp_path / "codes")
        for r, w in zip(raw, want):
            np.testing.assert_array_equal(r, w)
    return design, got


def _calib(name: str, shape, n: int = 256, seed: int = 5, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {name: (np.random.default_rng(seed).standard_normal((n, *shape)) * scale).astype(np.float32)}


@pytest.fixture(scope="module")
def jet(tmp_path_factory):
    fpga = {"calibration": _calib("x", (16,), 512, seed=11)}
    compiled = accelc.compile(fpga_models.jet_mlp(), "u280", shapes={"x": (300, 16)}, fpga=fpga)
    return compiled, fpga


def test_jet_mlp_io_parallel_is_bit_exact_and_accurate(jet, tmp_path):
    compiled, fpga = jet
    # inputs beyond the calibration range reach saturation of the input type
    x = (np.random.default_rng(3).standard_normal((300, 16)) * 1.5).astype(np.float32)
    x[:4] = [[40.0] * 16, [-40.0] * 16, [0.0] * 16, [1e-4] * 16]
    _check_bit_exact(compiled, fpga, {"x": x}, tmp_path)
    report = compiled.manifest["backend"]["report"]
    fx = report["float_vs_fixed"]
    assert fx["max_abs_error"] < 0.01, fx          # softmax outputs in [0, 1]
    out = next(iter(fx["outputs"].values()))
    assert out["top1_agreement"] > 0.98
    acc = compiled.manifest["accuracy"]
    assert acc["max_abs_error"] < 0.02, acc
    kinds = [layer["kind"] for layer in report["layers"]]
    assert kinds.count("dense") == 4 and "softmax" in kinds
    t = report["total"]
    assert t["dsp"] > 0 and t["latency_cycles"] > 0 and t["latency_ns"] > 0


def test_jet_mlp_project_files_and_testbench(jet, tmp_path):
    compiled, _ = jet
    members = compiled.artifact.members
    for f in ("project/firmware/model.cpp", "project/firmware/parameters.h", "project/build_prj.tcl",
              "project/tb/model_test.cpp", "project/README.md", "project/report.json",
              "project/tb_data/tb_input_features.dat", "project/tb_data/tb_output_predictions.dat"):
        assert f in members, f
    tcl = members["project/build_prj.tcl"].decode()
    assert "set_part {xcu280-fsvh2892-2L-e}" in tcl and "create_clock -period 3.333" in tcl
    fw = members["project/firmware/model.cpp"].decode()
    assert "#pragma HLS PIPELINE" in fw
    weights = b"".join(v for k, v in members.items() if k.startswith("project/firmware/weights/")).decode()
    assert "static const" in weights and "fopen" not in weights     # weights are initialisers, not files
    root = tmp_path / "prj"
    for name, data in members.items():
        if name.startswith("project/"):
            (root / name[8:]).parent.mkdir(parents=True, exist_ok=True)
            (root / name[8:]).write_bytes(data)
    exe = _build_testbench(root, sanitize=False)
    run = subprocess.run([str(exe), str(root / "tb_data")], capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 output values differ" in run.stdout


def _build_testbench(root: Path, sanitize: bool) -> Path:
    cmd = [toolchain.cxx(), *toolchain.CXXFLAGS, *(toolchain.SANITIZE if sanitize else ()),
           *toolchain.include_flags(root / "firmware"), str(root / "tb" / "model_test.cpp"),
           str(root / "firmware" / "model.cpp"), "-o", str(root / "tb_model")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "tb_model"


def test_testbench_runs_clean_under_sanitizers(jet, tmp_path):
    compiled, _ = jet
    root = tmp_path / "prj"
    for name, data in compiled.artifact.members.items():
        if name.startswith("project/"):
            (root / name[8:]).parent.mkdir(parents=True, exist_ok=True)
            (root / name[8:]).write_bytes(data)
    exe = _build_testbench(root, sanitize=True)
    run = subprocess.run([str(exe), str(root / "tb_data")], capture_output=True, text=True,
                         env={"UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "ASAN_OPTIONS": "detect_leaks=1"})
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr, run.stderr[-3000:]


def test_jet_mlp_io_stream_with_reuse_is_bit_exact_and_cheaper(jet, tmp_path):
    base, _ = jet
    fpga = {"calibration": _calib("x", (16,), 512, seed=11), "io": "io_stream", "reuse_factor": 4}
    compiled = accelc.compile(fpga_models.jet_mlp(), "u280", shapes={"x": (64, 16)}, fpga=fpga)
    x = np.random.default_rng(4).standard_normal((64, 16)).astype(np.float32) * 2
    _check_bit_exact(compiled, fpga, {"x": x}, tmp_path)
    r1, r4 = base.manifest["backend"]["report"]["total"], compiled.manifest["backend"]["report"]["total"]
    assert r4["dsp"] * 3 < r1["dsp"], (r1, r4)
    assert "#pragma HLS DATAFLOW" in compiled.artifact.members["project/firmware/model.cpp"].decode()


def test_small_cnn_io_stream_is_bit_exact(tmp_path):
    fpga = {"calibration": _calib("image", (3, 32, 32), 64, seed=2), "io": "io_stream",
            "layers": {"fc1": {"reuse_factor": 16}}}
    model = fpga_models.small_cnn()
    fc1 = next(n.name for n in model.graph.node if n.name.startswith("fc1_mm"))
    fpga["layers"] = {fc1: {"reuse_factor": 16}}
    compiled = accelc.compile(model, "u280", shapes={"image": (6, 3, 32, 32)}, fpga=fpga)
    x = np.random.default_rng(9).standard_normal((6, 3, 32, 32)).astype(np.float32)
    _check_bit_exact(compiled, fpga, {"image": x}, tmp_path, codes_main=False)
    report = compiled.manifest["backend"]["report"]
    assert report["float_vs_fixed"]["max_abs_error"] < 0.02
    assert [layer["kind"] for layer in report["layers"]].count("conv") == 2


@pytest.mark.parametrize("io,reuse", [("io_stream", 4), ("io_parallel", 64)])
def test_tiny_transformer_is_bit_exact(tmp_path, io, reuse):
    # io_parallel unrolls every token's products: the u280 holds it with a reuse factor of 64
    fpga = {"calibration": _calib("tokens", (8, 32), 128, seed=8), "io": io, "reuse_factor": reuse}
    compiled = accelc.compile(fpga_models.tiny_transformer(), "u280", shapes={"tokens": (12, 8, 32)}, fpga=fpga)
    x = np.random.default_rng(10).standard_normal((12, 8, 32)).astype(np.float32)
    _check_bit_exact(compiled, fpga, {"tokens": x}, tmp_path, codes_main=False)
    fx = compiled.manifest["backend"]["report"]["float_vs_fixed"]
    assert fx["max_abs_error"] < 0.1, fx      # LayerNorm outputs are O(1)
    kinds = {layer["kind"] for layer in compiled.manifest["backend"]["report"]["layers"]}
    assert {"layernorm", "matmul", "softmax", "transpose", "dense"} <= kinds


# ---- errors and static checks ---------------------------------------------------------------------

def test_io_parallel_refuses_tensors_over_the_partition_limit():
    with pytest.raises(BackendError, match="io_stream"):
        accelc.compile(fpga_models.small_cnn(), "u280", shapes={"image": (1, 3, 32, 32)},
                       fpga={"calibration_samples": 8})


def test_capacity_error_names_the_layer_and_a_reuse_factor():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((64, 64)) * 0.1).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="big")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(BackendError, match=r"DSP.*reuse factor to \d+"):
        accelc.compile(m, "zcu104", fpga={"calibration_samples": 8})    # 4096 multiplies > 1728 DSPs


def test_bad_fpga_options_are_explained():
    with pytest.raises(AccelcError, match="fixed point"):
        accelc.compile(fpga_models.jet_mlp(1), "u280", dtype="bf16")
    with pytest.raises(AccelcError, match="unknown fpga option 'bitz'"):
        accelc.compile(fpga_models.jet_mlp(1), "u280", fpga={"bitz": 8})
    with pytest.raises(AccelcError, match="bad fixed-point type"):
        accelc.compile(fpga_models.jet_mlp(1), "u280", fpga={"layers": {"fc1_mm_2": {"result": "float"}}})
    with pytest.raises(AccelcError, match="does not have"):
        accelc.compile(fpga_models.jet_mlp(1), "u280", fpga={"layers": {"nope": {"reuse_factor": 2}}})
    with pytest.raises(AccelcError, match="calibration data for 'x' has shape"):
        accelc.compile(fpga_models.jet_mlp(1), "u280", fpga={"calibration": {"x": np.zeros((4, 15))}})
    with pytest.raises(AccelcError, match="FPGA targets only"):
        accelc.compile(fpga_models.jet_mlp(1), "host", fpga={"bits": 8})


def test_unsupported_op_is_named():
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Cos", ["x"], ["y"], name="cosine")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError, match="Cos 'cosine'"):
        accelc.compile(m, "u280")


def test_cli_compile_writes_project_and_run_simulates(tmp_path):
    import onnx
    model = tmp_path / "jet.onnx"
    onnx.save(fpga_models.jet_mlp(1), model)
    art, prj = tmp_path / "jet.accelc", tmp_path / "prj"
    cmd = [sys.executable, "-m", "accelc", "compile", str(model), "--target", "u55c", "-o", str(art),
           "--hls-project", str(prj), "--fpga-bits", "18", "--reuse-factor", "2", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "FPGA estimate" in proc.stdout and (prj / "build_prj.tcl").is_file()
    report = json.loads((prj / "report.json").read_text())
    assert report["options"]["bits"] == 18 and all(layer["reuse_factor"] == 2 for layer in report["layers"])
    np.save(tmp_path / "x.npy", np.ones((1, 16), np.float32))
    proc = subprocess.run([sys.executable, "-m", "accelc", "run", str(art), "--input", f"x={tmp_path / 'x.npy'}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode != 0 and "--force" in again.stderr
    np.save(tmp_path / "calib.npy", np.ones((8, 16), np.float32))
    single = subprocess.run(cmd[:-1] + ["--force", "--calibration", str(tmp_path / "calib.npy")],
                            capture_output=True, text=True)
    assert single.returncode == 1 and "numpy.savez" in single.stderr, single.stderr
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))
    ok = subprocess.run(cmd[:-1] + ["--force", "--calibration", str(tmp_path / "calib.npz")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((prj / "report.json").read_text())["calibration"].startswith("user data (64 samples)")


def test_narrow_accumulators_and_a_wide_softmax_input_stay_bit_exact(tmp_path):
    """hls4ml-style 16-bit accumulators (truncate and wrap) everywhere, and a 37-bit result type feeding
    the softmax (the configuration whose table index is too coarse in hls4ml): still bit-exact, and the
    softmax, indexed at its input's resolution, stays accurate."""
    model = fpga_models.jet_mlp()
    fc4 = next(n.name for n in model.graph.node if n.name.startswith("fc4_mm"))
    fpga = {"calibration": _calib("x", (16,), 256, seed=12), "accum": "fixed<16,6,TRN,WRAP>",
            "layers": {fc4: {"result": "fixed<37,17>", "accum": "fixed<40,18>"}}}
    compiled = accelc.compile(model, "u280", shapes={"x": (64, 16)}, fpga=fpga)
    x = np.random.default_rng(13).standard_normal((64, 16)).astype(np.float32)
    _check_bit_exact(compiled, fpga, {"x": x}, tmp_path, codes_main=False)
    report = compiled.manifest["backend"]["report"]
    assert report["options"]["accum"] == "fixed<16,6,TRN,WRAP>"
    dense = [layer for layer in report["layers"] if layer["kind"] == "dense"]
    assert dense[-1]["type"].startswith("fixed<37,17")
    assert report["float_vs_fixed"]["max_abs_error"] < 0.05, report["float_vs_fixed"]
