"""The runtime on its own: artifact format, hash checks, loading a library through the C ABI, input checks.

These tests do not need the compiler: a tiny hand-written C library implements the ABI of
docs/INTERNALS.md (``y = x * w + 1`` with ``w`` from weights.bin), so the runtime is tested apart from
the backend that normally builds the library.
"""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from accelc.errors import ArtifactError, InputMismatchError, UnsupportedHardwareError
from accelc.runtime import Artifact, FORMAT_VERSION, load, pack, read, read_manifest, write

FAKE_LIB = r"""
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
typedef struct accelc_model { float w[4]; } accelc_model;
static __thread const char* err = "";
int accelc_abi_version(void) { return 1; }
const char* accelc_signature_json(void) {
  return "{\"inputs\":[{\"name\":\"x\",\"dtype\":\"f32\",\"shape\":[2,4]}],"
         "\"outputs\":[{\"name\":\"y\",\"dtype\":\"f32\",\"shape\":[2,4]}]}";
}
const char* accelc_variants(void) { return "avx2"; }
const char* accelc_select_variant(void) { return "avx2"; }
int accelc_create(const void* weights, size_t size, int threads, accelc_model** out) {
  if (threads == 999) { err = "missing CPU features: amx_tile amx_bf16"; return 1; }
  if (size != 4 * sizeof(float)) { err = "weights.bin has the wrong size"; return 2; }
  accelc_model* m = (accelc_model*)malloc(sizeof *m);
  memcpy(m->w, weights, size);
  *out = m;
  return 0;
}
int accelc_run(accelc_model* m, const void* const* in, void* const* out) {
  const float* x = (const float*)in[0]; float* y = (float*)out[0];
  for (int i = 0; i < 8; ++i) y[i] = x[i] * m->w[i % 4] + 1.0f;
  return 0;
}
const char* accelc_model_variant(const accelc_model* m) { (void)m; return "avx2"; }
void accelc_destroy(accelc_model* m) { free(m); }
const char* accelc_last_error(void) { return err; }
"""

W = np.array([1, 2, 3, 4], np.float32)


@pytest.fixture(scope="module")
def fake_artifact(tmp_path_factory) -> Artifact:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("fakelib")
    (d / "fake.c").write_text(FAKE_LIB)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "model.so"), str(d / "fake.c")], check=True)
    sig = {"inputs": [{"name": "x", "dtype": "f32", "shape": [2, 4]}],
           "outputs": [{"name": "y", "dtype": "f32", "shape": [2, 4]}]}
    manifest = {"format_version": FORMAT_VERSION, "accelc_version": "test", "target": "host", "signature": sig,
                "options": {"dtype": "fp32", "opt_level": 2, "threads": 0},
                "backend": {"name": "cpu_amx", "library": "model.so", "abi_version": 1, "variants": ["avx2"]}}
    return pack(manifest, {"model.so": (d / "model.so").read_bytes(), "weights.bin": W.tobytes(),
                           "src/fake.c": FAKE_LIB.encode()})


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def expected(x):
    return x * W + 1


def test_run_in_memory_and_call_forms(fake_artifact, cache):
    m = load(fake_artifact, cache_dir=cache)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(m.run({"x": x})["y"], expected(x))
    np.testing.assert_array_equal(m.run([x])["y"], expected(x))
    np.testing.assert_array_equal(m(x), expected(x))
    np.testing.assert_array_equal(m(x=x), expected(x))
    assert m.variant == "avx2"
    assert m.signature["inputs"][0]["name"] == "x"
    # the library lives in the content-addressed cache, not next to anything of the user's
    assert list(cache.rglob("model.so"))


def test_non_contiguous_input_is_made_contiguous(fake_artifact, cache):
    m = load(fake_artifact, cache_dir=cache)
    x = np.arange(16, dtype=np.float32).reshape(4, 4)[::2]
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(m(x), expected(np.ascontiguousarray(x)))


def test_read_only_and_offset_inputs_pass_their_own_address(fake_artifact, cache):
    m = load(fake_artifact, cache_dir=cache)
    base = np.arange(12, dtype=np.float32)
    ro = np.frombuffer(base[:8].tobytes(), dtype=np.float32).reshape(2, 4)     # read-only buffer
    assert not ro.flags.writeable
    np.testing.assert_array_equal(m(ro), expected(ro))
    offset = base[4:].reshape(2, 4)                                            # a view 16 bytes into base
    np.testing.assert_array_equal(m(offset), expected(offset))
    y1, y2 = m(offset), m(offset)
    assert y1 is not y2 and not np.shares_memory(y1, y2)                     # a fresh output per call


BF16_LIB = FAKE_LIB.replace('\\"f32\\"', '\\"bf16\\"').replace(
    """  const float* x = (const float*)in[0]; float* y = (float*)out[0];
  for (int i = 0; i < 8; ++i) y[i] = x[i] * m->w[i % 4] + 1.0f;""",
    """  const unsigned short* x = (const unsigned short*)in[0]; unsigned short* y = (unsigned short*)out[0];
  (void)m; for (int i = 0; i < 8; ++i) y[i] = x[7 - i];""")


def test_extension_dtype_arrays_reach_the_library(tmp_path, cache):
    """bfloat16 (ml_dtypes) arrays have no buffer format: their addresses take the ndarray.ctypes route."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "bf16.c").write_text(BF16_LIB)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(tmp_path / "model.so"), str(tmp_path / "bf16.c")],
                   check=True)
    sig = {"inputs": [{"name": "x", "dtype": "bf16", "shape": [2, 4]}],
           "outputs": [{"name": "y", "dtype": "bf16", "shape": [2, 4]}]}
    manifest = {"format_version": FORMAT_VERSION, "accelc_version": "test", "target": "host", "signature": sig,
                "options": {"dtype": "bf16", "opt_level": 2, "threads": 0},
                "backend": {"name": "cpu_amx", "library": "model.so", "abi_version": 1, "variants": ["avx2"]}}
    m = load(pack(manifest, {"model.so": (tmp_path / "model.so").read_bytes(), "weights.bin": W.tobytes()}),
             cache_dir=cache)
    from accelc.runtime.module import numpy_dtype
    x = np.arange(8, dtype=np.float32).reshape(2, 4).astype(numpy_dtype("bf16"))
    np.testing.assert_array_equal(m(x).astype(np.float32), np.arange(8, dtype=np.float32)[::-1].reshape(2, 4))


@pytest.mark.parametrize("layout", ["zip", "dir"])
def test_save_and_load_roundtrip(fake_artifact, tmp_path, cache, layout):
    path = tmp_path / ("m.accelc" if layout == "zip" else "m_dir")
    write(fake_artifact, path, layout=layout)
    if layout == "zip":
        with zipfile.ZipFile(path) as zf:
            assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
            assert "manifest.json" in zf.namelist()
    m = load(path, cache_dir=cache)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(m(x), expected(x))
    assert read_manifest(path)["target"] == "host"


def test_save_refuses_to_overwrite(fake_artifact, tmp_path):
    path = tmp_path / "m.accelc"
    path.write_text("precious")
    with pytest.raises(ArtifactError, match="already exists.*--force"):
        write(fake_artifact, path)
    assert path.read_text() == "precious"
    write(fake_artifact, path, overwrite=True)
    assert read(path).manifest["target"] == "host"


def test_input_errors_are_clear(fake_artifact, cache):
    m = load(fake_artifact, cache_dir=cache)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InputMismatchError, match=r"dtype float64, expected float32.*astype\(np.float32\)"):
        m(x.astype(np.float64))
    with pytest.raises(InputMismatchError, match=r"shape \(3, 4\), expected \(2, 4\)"):
        m(np.ones((3, 4), np.float32))
    with pytest.raises(InputMismatchError, match="missing input 'x'"):
        m.run({})
    with pytest.raises(InputMismatchError, match="unknown input 'z'"):
        m.run({"x": x, "z": x})
    with pytest.raises(InputMismatchError, match="got 2 inputs"):
        m(x, x)


def test_tampered_member_is_refused(fake_artifact, tmp_path, cache):
    path = tmp_path / "m.accelc"
    write(fake_artifact, path)
    data = bytearray(path.read_bytes())
    idx = data.find(W.tobytes())
    data[idx] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="weights.bin"):
        load(path, cache_dir=cache)


def test_tampered_directory_member_is_refused(fake_artifact, tmp_path, cache):
    path = tmp_path / "m_dir"
    write(fake_artifact, path, layout="dir")
    (path / "weights.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    with pytest.raises(ArtifactError, match="member 'weights.bin' does not match the sha256"):
        load(path, cache_dir=cache)
    write(fake_artifact, path, layout="dir", overwrite=True)
    (path / "extra.so").write_bytes(b"evil")
    with pytest.raises(ArtifactError, match="'extra.so' that its manifest does not list"):
        load(path, cache_dir=cache)


def test_truncated_and_not_zip_are_refused(fake_artifact, tmp_path, cache):
    path = tmp_path / "m.accelc"
    write(fake_artifact, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or not a zip"):
        load(path, cache_dir=cache)
    path.write_bytes(b"hello, not an artifact")
    with pytest.raises(ArtifactError, match="not an accelc artifact"):
        load(path, cache_dir=cache)
    with pytest.raises(ArtifactError, match="does not exist"):
        load(tmp_path / "missing.accelc", cache_dir=cache)


def test_newer_format_version_is_refused(fake_artifact, tmp_path, cache):
    manifest = dict(fake_artifact.manifest, format_version=FORMAT_VERSION + 1)
    path = tmp_path / "m.accelc"
    write(Artifact(manifest, fake_artifact.members), path)
    with pytest.raises(ArtifactError, match=f"format version {FORMAT_VERSION + 1}.*upgrade accelc"):
        load(path, cache_dir=cache)


def test_create_error_codes_map_to_error_types(fake_artifact, cache):
    with pytest.raises(UnsupportedHardwareError, match="amx_tile"):
        load(fake_artifact, threads=999, cache_dir=cache)
    members = dict(fake_artifact.members, **{"weights.bin": b"\0" * 8})
    bad = pack({k: v for k, v in fake_artifact.manifest.items() if k != "members"}, members)
    with pytest.raises(ArtifactError, match="wrong size"):
        load(bad, cache_dir=cache)


def test_library_signature_must_match_manifest(fake_artifact, cache):
    manifest = json.loads(json.dumps(fake_artifact.manifest))
    manifest["signature"]["inputs"][0]["shape"] = [4, 4]
    with pytest.raises(ArtifactError, match="signature differs"):
        load(Artifact(manifest, fake_artifact.members), cache_dir=cache)


def test_runtime_imports_nothing_of_the_compiler():
    code = ("import sys, accelc.runtime, accelc; "
            "bad = [m for m in sys.modules if m.split('.')[:2] in (['accelc','ir'], ['accelc','frontend'], "
            "['accelc','passes'], ['accelc','backends'], ['accelc','compiler'])] + "
            "[m for m in ('onnx', 'torch', 'scipy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stdout + r.stderr


def test_rezipped_member_with_valid_crc_is_refused_by_hash(fake_artifact, tmp_path, cache):
    """A tamperer who rewrites the zip (valid CRCs) is still caught: the manifest's sha256 differs."""
    path = tmp_path / "m.accelc"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", fake_artifact.manifest_bytes())
        for name, data in fake_artifact.members.items():
            zf.writestr(name, np.zeros(4, np.float32).tobytes() if name == "weights.bin" else data)
    with pytest.raises(ArtifactError, match="member 'weights.bin' does not match the sha256"):
        load(path, cache_dir=cache)
