"""The runtime's DLPack paths: foreign tensors in, caller-provided ``out`` buffers, and the GPU-memory path
of CUDA artifacts.

Like test_runtime.py these tests need no compiler and no GPU: small C libraries implement the C ABI
(``y = x * w + 1``). The CUDA-like one also exports ``accelc_run_device`` and ``accelc_model_device`` and
records the stream it was given; "GPU tensors" are NumPy arrays whose DLPack capsule reports a CUDA
device, so everything the Python side does with them (checks, pointers, stream hand-over) is exercised
while the memory stays readable on the host. The real GPU path is tested in test_backend_cuda.py.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

from accelc.errors import InputMismatchError
from accelc.runtime import FORMAT_VERSION, load, pack
from accelc.runtime import dlpack
from test_runtime import FAKE_LIB, W, expected

torch = pytest.importorskip("torch")

# test_runtime.py's fake CPU library, plus the entry points of a CUDA library (on host memory here)
DEVICE_PART = r"""
static void* last_stream = (void*)-1;
static int device_runs = 0;
int accelc_run_device(accelc_model* m, const void* const* in, void* const* out, void* stream) {
  last_stream = stream;
  ++device_runs;
  return accelc_run(m, in, out);
}
int accelc_model_device(const accelc_model* m) { (void)m; return 0; }
void* fake_last_stream(void) { return last_stream; }
int fake_device_runs(void) { return device_runs; }
"""


def _artifact(tmp_path_factory, device: bool):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("cudalike" if device else "cpulib")
    (d / "lib.c").write_text(FAKE_LIB + (DEVICE_PART if device else ""))
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "model.so"), str(d / "lib.c")], check=True)
    sig = {"inputs": [{"name": "x", "dtype": "f32", "shape": [2, 4]}],
           "outputs": [{"name": "y", "dtype": "f32", "shape": [2, 4]}]}
    backend = {"name": "cuda", "library": "model.so", "abi_version": 1, "variants": ["sm_90a"]} if device else \
        {"name": "cpu_amx", "library": "model.so", "abi_version": 1, "variants": ["avx2"]}
    manifest = {"format_version": FORMAT_VERSION, "accelc_version": "test", "target": "h200" if device else "host",
                "signature": sig, "options": {"dtype": "fp32", "opt_level": 2, "threads": 0}, "backend": backend}
    return pack(manifest, {"model.so": (d / "model.so").read_bytes(), "weights.bin": W.tobytes()})


@pytest.fixture(scope="module")
def cpu_artifact(tmp_path_factory):
    return _artifact(tmp_path_factory, device=False)


@pytest.fixture(scope="module")
def cuda_like_artifact(tmp_path_factory):
    return _artifact(tmp_path_factory, device=True)


class FakeGpuTensor:
    """A NumPy array presented through DLPack as memory of CUDA device ``device_id``; it records the
    ``stream`` argument of every export, as a CUDA producer would use it to order its writes."""

    def __init__(self, array: np.ndarray, device_id: int = 0):
        self.array, self.device_id, self.streams = array, device_id, []

    def __dlpack_device__(self):
        return (dlpack.CUDA, self.device_id)

    def __dlpack__(self, stream=None, max_version=None):
        self.streams.append(stream)
        capsule = self.array.__dlpack__(max_version=max_version) if max_version else self.array.__dlpack__()
        name = dlpack._capsule_name(capsule)
        kind = dlpack._ManagedVersioned if name == b"dltensor_versioned" else dlpack._Managed
        managed = kind.from_address(dlpack._capsule_pointer(capsule, name))
        managed.dl_tensor.device.device_type = dlpack.CUDA
        managed.dl_tensor.device.device_id = self.device_id
        return capsule


class TorchLikeStream:
    def __init__(self, handle):
        self.cuda_stream = handle


# ---- reading DLPack tensors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,np_dtype", [(torch.float32, np.float32), (torch.float16, np.float16),
                                            (torch.bfloat16, ml_dtypes.bfloat16), (torch.int64, np.int64),
                                            (torch.int8, np.int8), (torch.uint8, np.uint8), (torch.bool, np.bool_)])
def test_borrow_reads_dtype_shape_and_memory(dtype, np_dtype):
    t = (torch.arange(24) % 5).reshape(2, 3, 4).to(dtype)
    view = dlpack.borrow(t, "t")
    assert view.dtype == np.dtype(np_dtype) and view.shape == (2, 3, 4) and view.device == "cpu"
    assert view.data == t.data_ptr() and view.contiguous
    arr = view.host_array()
    want = t.to(torch.float32).numpy().copy()
    np.testing.assert_array_equal(arr.astype(np.float32), want)
    del t, view
    np.testing.assert_array_equal(arr.astype(np.float32), want)      # the array keeps the tensor alive


def test_borrow_strided_and_offset_views():
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    view = base[1:5:2, 2:7].t()                      # offset, strides (1, 16), transposed
    b = dlpack.borrow(view, "v")
    assert not b.contiguous and b.data == view.data_ptr()
    np.testing.assert_array_equal(b.host_array(), view.numpy())
    unit = torch.zeros(3, 1, 4)[:, :, :]             # size-1 dims may carry any stride
    assert dlpack.borrow(unit, "u").contiguous


def test_borrow_refuses_what_it_cannot_read():
    class NotATensor:
        def __dlpack__(self, stream=None):
            raise BufferError("cannot export")
    with pytest.raises(InputMismatchError, match="could not be exported through DLPack: cannot export"):
        dlpack.borrow(NotATensor(), "x")
    c = torch.zeros(2, dtype=torch.complex64)
    assert dlpack.borrow(c, "c").dtype is None      # complex: reported, not misread


# ---- CPU artifacts -------------------------------------------------------------------------------------------
def test_torch_inputs_and_out_buffers_without_copies(cpu_artifact, tmp_path):
    m = load(cpu_artifact, cache_dir=tmp_path)
    x = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    np.testing.assert_array_equal(m(x), expected(x.numpy()))
    y = torch.full((2, 4), float("nan"))
    ptr = y.data_ptr()
    res = m.run({"x": x}, out={"y": y})
    assert res["y"] is y and y.data_ptr() == ptr
    np.testing.assert_array_equal(y.numpy(), expected(x.numpy()))
    y_np = np.empty((2, 4), np.float32)
    assert m.run([x], out=[y_np])["y"] is y_np
    np.testing.assert_array_equal(y_np, expected(x.numpy()))
    xt = torch.arange(8, dtype=torch.float32).reshape(4, 2).t()      # strided: read through a contiguous copy
    np.testing.assert_array_equal(m(xt), expected(xt.contiguous().numpy()))


def test_dlpack_errors_name_the_problem(cpu_artifact, tmp_path):
    m = load(cpu_artifact, cache_dir=tmp_path)
    x = torch.zeros(2, 4)
    with pytest.raises(InputMismatchError, match=r"input 'x' has dtype float64, expected float32"):
        m(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(InputMismatchError, match=r"input 'x' has shape \(4, 2\), expected \(2, 4\)"):
        m(torch.zeros(4, 2))
    with pytest.raises(InputMismatchError, match=r"output 'y' buffer is not contiguous"):
        m.run([x], out=[torch.zeros(4, 2).t()])
    ro = np.zeros((2, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(InputMismatchError, match="read-only"):
        m.run([x], out=[ro])
    with pytest.raises(InputMismatchError, match=r"output 'y' has dtype float16"):
        m.run([x], out=[torch.zeros(2, 4, dtype=torch.float16)])
    with pytest.raises(InputMismatchError, match="must name every output once \\(y\\); unknown 'z'"):
        m.run([x], out={"z": np.zeros((2, 4), np.float32)})
    with pytest.raises(InputMismatchError, match="missing 'y'"):
        m.run([x], out={})
    with pytest.raises(InputMismatchError, match="out= has 2 buffers"):
        m.run([x], out=[np.zeros((2, 4), np.float32)] * 2)
    with pytest.raises(InputMismatchError, match="this artifact runs on the CPU"):
        m(FakeGpuTensor(np.zeros((2, 4), np.float32)))
    with pytest.raises(InputMismatchError, match="drop stream="):
        m.run([x], stream=TorchLikeStream(7))


# ---- the GPU-memory path of CUDA artifacts (a CUDA-like library on the host) ----------------------------------
def _lib(m):
    lib = m._lib
    lib.fake_last_stream.restype, lib.fake_last_stream.argtypes = ctypes.c_void_p, []
    lib.fake_device_runs.restype, lib.fake_device_runs.argtypes = ctypes.c_int, []
    return lib


def test_gpu_tensors_run_through_run_device_on_the_given_stream(cuda_like_artifact, tmp_path):
    m = load(cuda_like_artifact, cache_dir=tmp_path)
    lib = _lib(m)
    x_host = np.arange(8, dtype=np.float32).reshape(2, 4)
    x, y = FakeGpuTensor(x_host), FakeGpuTensor(np.full((2, 4), np.nan, np.float32))
    res = m.run({"x": x}, out={"y": y}, stream=TorchLikeStream(0x1234))
    assert res["y"] is y and lib.fake_device_runs() == 1
    assert lib.fake_last_stream() == 0x1234
    assert x.streams[-1] == 0x1234 and y.streams[-1] == 0x1234      # producers order their writes on it
    np.testing.assert_array_equal(y.array, expected(x_host))
    m.run([x], out=[y])                                             # default: the legacy default stream
    assert lib.fake_last_stream() is None and x.streams[-1] == 1    # NULL to the library, 1 in DLPack terms
    m.run([x], out=[y], stream=0x99)
    assert lib.fake_last_stream() == 0x99
    np.testing.assert_array_equal(m(x_host), expected(x_host))     # host arrays still take accelc_run
    assert lib.fake_device_runs() == 3


def test_gpu_path_errors_name_the_problem(cuda_like_artifact, tmp_path):
    m = load(cuda_like_artifact, cache_dir=tmp_path)
    x = FakeGpuTensor(np.zeros((2, 4), np.float32))
    y = FakeGpuTensor(np.zeros((2, 4), np.float32))
    with pytest.raises(InputMismatchError, match=r"pass out= with one per output \(y: float32\[2, 4\]\)"):
        m.run([x])
    with pytest.raises(InputMismatchError, match="output 'y' is a ndarray while other tensors of this run are on "
                                                 "the GPU"):
        m.run([x], out=[np.zeros((2, 4), np.float32)])
    with pytest.raises(InputMismatchError, match="output 'y' is on cuda:0 while other tensors of this run are in "
                                                 "host memory"):
        m.run([np.zeros((2, 4), np.float32)], out=[y])
    with pytest.raises(InputMismatchError, match="input 'x' is on cuda:1, the model runs on cuda:0"):
        m.run([FakeGpuTensor(np.zeros((2, 4), np.float32), device_id=1)], out=[y])
    with pytest.raises(InputMismatchError, match=r"input 'x' is not contiguous"):
        m.run([FakeGpuTensor(np.zeros((4, 2), np.float32).T)], out=[y])
    with pytest.raises(InputMismatchError, match="input 'x' has dtype float16"):
        m.run([FakeGpuTensor(np.zeros((2, 4), np.float16))], out=[y])
    with pytest.raises(InputMismatchError, match="stream= must be a CUDA stream"):
        m.run([x], out=[y], stream="default")
    assert _lib(m).fake_device_runs() == 0
