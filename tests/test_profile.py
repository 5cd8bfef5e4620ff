"""The per-node profiler of CPU artifacts: generated timers, the accelc_profile_* C ABI, ``profile()`` and
``accelc run --profile``.

Timings are never compared with fixed numbers: the tests check structure (one record per node of the
generated code, labels, runs counted) and relations that hold by construction (every node time >= 0,
the node times add up to at most the run time measured around them).
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import accelc
from accelc.errors import AccelcError, ArtifactError, UnsupportedFeatureError
from accelc.runtime import FORMAT_VERSION, load, pack, write

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["[0] MatMul 'mm'", "[1] Add 'bias'", "[2] Relu 'relu'", "[3] Softmax 'softmax'"]
OPS = ["MatMul", "Add", "Relu", "Softmax"]


def small_model() -> onnx.ModelProto:
    """y = softmax(relu(x @ w + b)): four nodes at -O0, where no pass fuses them."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "profiled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("profile")
    onnx.save(small_model(), d / "small.onnx")
    compiled = accelc.compile(str(d / "small.onnx"), target="host", opt_level=0, measure_accuracy=False)
    compiled.save(d / "small_dir", layout="dir")
    return d / "small_dir"


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)


def accelc_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "accelc", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


# ---- generated code ----------------------------------------------------------------------------------

def test_generated_code_times_every_node_and_names_it(artifact_dir):
    cpp = (artifact_dir / "src" / "model.cpp").read_text()
    commented = re.findall(r"^\s*// (\[\d+\] \w+ '[^']*') \(", cpp, flags=re.M)
    assert commented == LABELS
    steps = [int(s) for s in re.findall(r"const NodeTimer accelc_node_timer\(node_seconds, (\d+)\);", cpp)]
    assert steps == list(range(len(LABELS)))
    config = (artifact_dir / "src" / "accelc_model_config.h").read_text()
    assert f"kAccelcNumNodes = {len(LABELS)};" in config
    header = (artifact_dir / "include" / "accelc_model.h").read_text()
    for fn in ("accelc_profile_count(void)", "accelc_profile_node(int i)", "accelc_profile_node_op(int i)",
               "accelc_profile_enable(accelc_model* m, int on)", "accelc_profile_read(const accelc_model* m"):
        assert fn in header


# ---- Python API --------------------------------------------------------------------------------------

def test_profile_has_one_record_per_node(artifact_dir, x):
    m = load(artifact_dir)
    p = m.profile(x, runs=5, warmup=1)
    assert [n.label for n in p.nodes] == LABELS
    assert [n.op for n in p.nodes] == OPS
    assert [n.step for n in p.nodes] == list(range(len(LABELS)))
    assert p.runs == 5 and p.warmup == 1 and p.variant == m.variant
    for n in p.nodes:
        assert n.total_ms >= 0 and n.mean_ms >= 0 and 0 <= n.share <= 1
        assert n.mean_ms == pytest.approx(n.total_ms / 5)
    # the node timers run inside the library's run timer, which runs inside the Python call
    assert p.run_ms > 0
    assert p.nodes_ms <= p.run_ms * (1 + 1e-9) + 1e-9
    assert p.run_ms <= p.wall_ms * 1.05 + 0.05
    assert sum(n.share for n in p.nodes) <= 1 + 1e-9
    # by_time sorts, by_op adds up
    ranked = p.by_time()
    assert sorted(ranked, key=lambda n: n.step) == p.nodes
    assert all(a.total_ms >= b.total_ms for a, b in zip(ranked, ranked[1:]))
    ops = p.by_op()
    assert sorted(o.op for o in ops) == sorted(OPS) and all(o.nodes == 1 for o in ops)
    assert sum(o.mean_ms for o in ops) == pytest.approx(p.nodes_ms)
    # the outputs are still right, and each profile starts from zero
    assert m.profile(x, runs=2, warmup=0).runs == 2
    np.testing.assert_allclose(m(x).sum(axis=-1), 1.0, rtol=1e-5)


def test_profile_table_lists_top_nodes_and_ops(artifact_dir, x):
    p = load(artifact_dir).profile(x, runs=2)
    table = p.table(top=2)
    assert table.startswith("profile: 4 nodes on ")
    rows = [ln for ln in table.splitlines() if re.match(r"\s+\[\d+\] ", ln)]
    assert len(rows) == 2
    assert all(row.strip().startswith(n.label) for row, n in zip(rows, p.by_time()))
    assert "(2 more nodes)" in table and "by op:" in table
    assert "more nodes" not in p.table(top=10)


def test_profile_argument_checks(artifact_dir, x):
    m = load(artifact_dir)
    with pytest.raises(ValueError, match="runs must be an integer >= 1"):
        m.profile(x, runs=0)
    with pytest.raises(ValueError, match="warmup must be an integer >= 0"):
        m.profile(x, warmup=-1)
    m.close()
    with pytest.raises(AccelcError, match="closed"):
        m.profile(x)


# ---- C ABI -------------------------------------------------------------------------------------------

@pytest.fixture
def native(artifact_dir):
    """The library loaded directly (as a C program would), with one model created."""
    lib = ctypes.CDLL(str(artifact_dir / "model.so"))
    c = ctypes
    lib.accelc_create.argtypes = [c.c_void_p, c.c_size_t, c.c_int, c.POINTER(c.c_void_p)]
    lib.accelc_run.argtypes = [c.c_void_p, c.POINTER(c.c_void_p), c.POINTER(c.c_void_p)]
    lib.accelc_destroy.argtypes = [c.c_void_p]
    lib.accelc_last_error.restype = c.c_char_p
    lib.accelc_profile_node.restype = c.c_char_p
    lib.accelc_profile_node.argtypes = [c.c_int]
    lib.accelc_profile_node_op.restype = c.c_char_p
    lib.accelc_profile_node_op.argtypes = [c.c_int]
    lib.accelc_profile_enable.argtypes = [c.c_void_p, c.c_int]
    lib.accelc_profile_read.argtypes = [c.c_void_p, c.POINTER(c.c_double), c.c_int, c.POINTER(c.c_longlong),
                                        c.POINTER(c.c_double)]
    weights = (artifact_dir / "weights.bin").read_bytes()
    handle = c.c_void_p()
    assert lib.accelc_create(weights, len(weights), 1, c.byref(handle)) == 0
    yield lib, handle
    lib.accelc_destroy(handle)


def _run(lib, handle, x, times=1):
    y = np.empty((4, 16), np.float32)
    ins = (ctypes.c_void_p * 1)(x.ctypes.data)
    outs = (ctypes.c_void_p * 1)(y.ctypes.data)
    for _ in range(times):
        assert lib.accelc_run(handle, ins, outs) == 0


def _read(lib, handle):
    n = lib.accelc_profile_count()
    seconds = (ctypes.c_double * n)()
    runs, run_seconds = ctypes.c_longlong(-1), ctypes.c_double(-1)
    assert lib.accelc_profile_read(handle, seconds, n, ctypes.byref(runs), ctypes.byref(run_seconds)) == 0
    return list(seconds), runs.value, run_seconds.value


def test_c_abi_names_the_nodes(native):
    lib, _ = native
    assert lib.accelc_profile_count() == len(LABELS)
    assert [lib.accelc_profile_node(i).decode() for i in range(len(LABELS))] == LABELS
    assert [lib.accelc_profile_node_op(i).decode() for i in range(len(LABELS))] == OPS
    for bad in (-1, len(LABELS)):
        assert lib.accelc_profile_node(bad) is None
        assert b"not a node index" in lib.accelc_last_error()
        assert lib.accelc_profile_node_op(bad) is None


def test_c_abi_counters_enable_disable_reset(native, x):
    lib, handle = native
    assert _read(lib, handle) == ([0.0] * len(LABELS), 0, 0.0)       # never enabled: zeros
    _run(lib, handle, x)
    assert _read(lib, handle) == ([0.0] * len(LABELS), 0, 0.0)       # runs while off are not counted
    assert lib.accelc_profile_enable(handle, 1) == 0
    _run(lib, handle, x, times=3)
    seconds, runs, run_seconds = _read(lib, handle)
    assert runs == 3 and run_seconds > 0 and sum(seconds) > 0
    assert all(s >= 0 for s in seconds) and sum(seconds) <= run_seconds
    assert lib.accelc_profile_enable(handle, 0) == 0
    _run(lib, handle, x, times=2)
    assert _read(lib, handle) == (seconds, runs, run_seconds)          # disabled: untouched
    assert lib.accelc_profile_enable(handle, 1) == 0
    assert _read(lib, handle) == ([0.0] * len(LABELS), 0, 0.0)       # enabling resets
    _run(lib, handle, x)
    assert _read(lib, handle)[1] == 1


def test_c_abi_rejects_bad_arguments(native):
    lib, handle = native
    n = lib.accelc_profile_count()
    seconds = (ctypes.c_double * n)()
    assert lib.accelc_profile_enable(None, 1) == 4
    assert b"model is NULL" in lib.accelc_last_error()
    assert lib.accelc_profile_enable(handle, 2) == 4
    assert b"0 (stop) or 1" in lib.accelc_last_error()
    assert lib.accelc_profile_read(None, seconds, n, None, None) == 4
    assert lib.accelc_profile_read(handle, seconds, n - 1, None, None) == 4
    assert b"capacity 3, the model has 4 nodes" in lib.accelc_last_error()
    assert lib.accelc_profile_read(handle, seconds, -1, None, None) == 4
    assert lib.accelc_profile_read(handle, None, n, None, None) == 4
    assert lib.accelc_profile_read(handle, seconds, n, None, None) == 0      # runs, run_seconds optional


# ---- libraries without the profiler --------------------------------------------------------------

OLD_LIB = r"""
#include <stddef.h>
#include <stdlib.h>
typedef struct accelc_model { int unused; } accelc_model;
int accelc_abi_version(void) { return 1; }
const char* accelc_signature_json(void) {
  return "{\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[2]}],"
         "\"outputs\":[{\"name\":\"y\",\"dtype\":\"f32\",\"shape\":[2]}]}";
}
const char* accelc_variants(void) { return "avx2"; }
const char* accelc_select_variant(void) { return "avx2"; }
int accelc_create(const void* w, size_t n, int t, accelc_model** out) {
  (void)w; (void)n; (void)t; *out = (accelc_model*)malloc(sizeof **out); return 0;
}
int accelc_run(accelc_model* m, const void* const* in, void* const* out) {
  (void)m; const float* x = (const float*)in[0]; float* y = (float*)out[0]; y[0] = x[0]; y[1] = x[1]; return 0;
}
const char* accelc_model_variant(const accelc_model* m) { (void)m; return "avx2"; }
void accelc_destroy(accelc_model* m) { free(m); }
const char* accelc_last_error(void) { return ""; }
"""


@pytest.fixture(scope="module")
def old_library(tmp_path_factory) -> bytes:
    """A library with the C ABI as it was before profiling (what an older accelc built)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("oldlib")
    (d / "old.c").write_text(OLD_LIB)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "model.so"), str(d / "old.c")], check=True)
    return (d / "model.so").read_bytes()


def _artifact_with(library: bytes, backend: str, target: str):
    sig = {"inputs": [{"name": "x", "dtype": "f32", "shape": [2]}],
           "outputs": [{"name": "y", "dtype": "f32", "shape": [2]}]}
    manifest = {"format_version": FORMAT_VERSION, "accelc_version": "0.0-old", "target": target, "signature": sig,
                "options": {"dtype": "fp32", "opt_level": 2, "threads": 0},
                "backend": {"name": backend, "library": "model.so", "abi_version": 1, "variants": ["avx2"]}}
    return pack(manifest, {"model.so": library, "weights.bin": b""})


def test_old_cpu_library_asks_for_a_recompile(old_library, tmp_path):
    m = load(_artifact_with(old_library, "cpu_amx", "host"), cache_dir=tmp_path)
    with pytest.raises(ArtifactError, match=r"no per-node profiler \(built by accelc 0.0-old.*recompile"):
        m.profile(np.ones(2, np.float32))
    np.testing.assert_array_equal(m(np.ones(2, np.float32)), np.ones(2))     # running still works


def test_non_cpu_artifacts_are_declined(old_library, tmp_path):
    m = load(_artifact_with(old_library, "fpga_hls", "u280"), cache_dir=tmp_path)
    with pytest.raises(UnsupportedFeatureError, match="CPU artifacts only.*'u280' \\(backend fpga_hls\\)"):
        m.profile(np.ones(2, np.float32))


# ---- command line ------------------------------------------------------------------------------------

def test_cli_prints_the_profile_table(artifact_dir):
    r = accelc_cli("run", artifact_dir, "--random", "--profile", "--runs", "3", "--profile-top", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "ran " in out and "profile: 4 nodes on " in out and "mean of 3 runs (after 2 warmup runs)" in out
    header = next(ln for ln in out.splitlines() if "mean ms" in ln and "cum %" in ln)
    assert header.split()[:2] == ["node", "op"]
    rows = [ln for ln in out.splitlines() if re.match(r"\s+\[\d+\] ", ln)]
    assert len(rows) == 3
    assert all(any(lab in row for lab in LABELS) for row in rows)
    assert "(1 more nodes)" in out
    by_op = out.split("by op:", 1)[1]
    assert all(op in by_op for op in OPS)


def test_cli_profile_flag_errors(artifact_dir, old_library, tmp_path):
    r = accelc_cli("run", artifact_dir, "--random", "--runs", "3")
    assert r.returncode == 1 and "accelc: error: --runs, --warmup and --profile-top go with --profile" in r.stderr
    r = accelc_cli("run", artifact_dir, "--random", "--profile", "--runs", "0")
    assert r.returncode == 2 and "expected an integer >= 1" in r.stderr
    old = tmp_path / "old.accelc"
    write(_artifact_with(old_library, "cpu_amx", "host"), old)
    r = accelc_cli("run", old, "--random", "--profile", "--cache-dir", tmp_path / "cache")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("accelc:")] == [
        ln for ln in r.stderr.splitlines() if ln.startswith("accelc: error: the model library of this artifact")]
    assert "recompile" in r.stderr
