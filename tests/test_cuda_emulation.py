"""The host emulator of the generated CUDA code (backends/cuda/emulate.py, kernels/emulation/).

Part 1 checks the emulator itself on small CUDA programs built with g++: barriers and shared memory,
warp shuffles, the errors a GPU would raise (divergent barriers, bad launch configurations, misaligned or
ill-fitting GEMMs), 16-bit float rounding, and the host GEMM against NumPy.

Part 2 runs the CUDA backend's generated code under the emulator against the reference interpreter: the
test models of test_backend_cuda.py in fp32 and bf16, the op families, an exported encoder through
``accelc.compile(emulate=True)``, and a deliberately broken kernel, which must be caught. None of it
needs nvcc, CUTLASS or a GPU.
"""
from __future__ import annotations

import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

from accelc.backends.base import BackendOptions
from accelc.ir import DType, evaluate

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the CUDA emulation")

from accelc.backends.cuda.emulate import EMULATION_DIR  # noqa: E402
from accelc.backends.cuda.build import KERNELS_DIR  # noqa: E402


# ---- part 1: the emulator ------------------------------------------------------------------------------------
def _run_cuda(tmp_path, body: str, kernels: str = "") -> str:
    """Builds a CUDA program (kernels + main body) against the emulation headers and returns its stdout."""
    src = tmp_path / "prog.cu"
    src.write_text('#include "accelc_cuda_common.cuh"\n#include <cstdio>\n' + kernels +
                   "\nint main() {\n" + body + "\n  return 0;\n}\n")
    exe = tmp_path / "prog"
    proc = subprocess.run(["g++", "-std=c++17", "-O1", "-I", str(EMULATION_DIR), "-I", str(KERNELS_DIR), "-x", "c++",
                           str(src), "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


BLOCK_SUM = """
__global__ void block_sums(const float* x, float* out, int n) {
  __shared__ float red[32];
  float v = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) v += x[blockIdx.x * n + i];
  v = accelc::block_reduce<accelc::Red::Sum>(v, red);
  if (threadIdx.x == 0) out[blockIdx.x] = v;
}
__global__ void shuffles(int* out) {
  const int t = threadIdx.x;
  out[4 * t + 0] = __shfl_xor_sync(0xffffffffu, t, 5);
  out[4 * t + 1] = __shfl_down_sync(0xffffffffu, t, 3);
  out[4 * t + 2] = __shfl_up_sync(0xffffffffu, t, 2, 16);
  out[4 * t + 3] = __shfl_sync(0xffffffffu, t, 7);
}
__global__ void stencil(const float* x, float* y, int n) {
  __shared__ float tile[128];
  const int i = blockIdx.x * 128 + threadIdx.x;
  tile[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();    // a neighbour's value is read only after every thread of the block wrote its own
  if (i < n) y[i] = tile[threadIdx.x] + tile[(threadIdx.x + 1) % 128];
}
"""


def test_barriers_shared_memory_and_shuffles(tmp_path):
    out = _run_cuda(tmp_path, kernels=BLOCK_SUM, body="""
  const int rows = 3, n = 1000;
  static float x[rows * n], sums[rows], y[300];
  for (int i = 0; i < rows * n; ++i) x[i] = float(i % 17) - 8.0f;
  ACCELC_LAUNCH(block_sums, rows, 96, 0, nullptr)(x, sums, n);
  for (int r = 0; r < rows; ++r) printf("%g ", sums[r]);
  printf("\\n");
  static int sh[64 * 4];
  ACCELC_LAUNCH(shuffles, 1, 64, 0, nullptr)(sh);
  for (int i = 0; i < 64 * 4; ++i) printf("%d ", sh[i]);
  printf("\\n");
  ACCELC_LAUNCH(stencil, 3, 128, 0, nullptr)(x, y, 300);
  for (int i = 0; i < 300; ++i) printf("%g ", y[i]);
  printf("\\n%d\\n", (int)cudaGetLastError());""")
    lines = out.splitlines()
    x = (np.arange(3 * 1000) % 17 - 8.0).astype(np.float32)
    np.testing.assert_allclose([float(v) for v in lines[0].split()], x.reshape(3, -1).sum(1))
    sh = np.array(lines[1].split(), int).reshape(64, 4)
    t = np.arange(64)
    lane, base = t % 32, t - t % 32
    np.testing.assert_array_equal(sh[:, 0], base + (lane ^ 5))
    np.testing.assert_array_equal(sh[:, 1], np.where(lane + 3 < 32, t + 3, t))
    np.testing.assert_array_equal(sh[:, 2], np.where(lane % 16 >= 2, t - 2, t))
    np.testing.assert_array_equal(sh[:, 3], base + 7)
    xs = x[:300]
    tile = [np.concatenate([xs[b:b + 128], np.zeros(max(0, b + 128 - 300), np.float32)]) for b in (0, 128, 256)]
    want = np.concatenate([tl + np.roll(tl, -1) for tl in tile])[:300]
    np.testing.assert_allclose([float(v) for v in lines[2].split()], want)
    assert lines[3] == "0"


def test_gpu_errors_are_reported(tmp_path):
    """What would fail on a GPU fails here too, with the kernel's name, instead of hanging or passing."""
    out = _run_cuda(tmp_path, kernels="""
__global__ void divergent(float* p) {   // half a warp at the block barrier, half at a full-warp shuffle
  if (threadIdx.x % 32 < 16) __syncthreads();
  else p[0] = __shfl_xor_sync(0xffffffffu, p[0], 1);
}
__global__ void nothing(float*) {}
""", body="""
  float v = 0.0f;
  ACCELC_LAUNCH(divergent, 2, 64, 0, nullptr)(&v);
  printf("%d|%s\\n", (int)cudaGetLastError(), accelc_emu::g_message);
  ACCELC_LAUNCH(nothing, 1, 2048, 0, nullptr)(&v);
  printf("%d|%s\\n", (int)cudaGetLastError(), accelc_emu::g_message);
  ACCELC_LAUNCH(nothing, dim3(1, 70000), 32, 0, nullptr)(&v);
  printf("%d|%s\\n", (int)cudaGetLastError(), accelc_emu::g_message);
  printf("%d\\n", (int)cudaGetLastError());""")
    lines = out.splitlines()
    assert lines[0].startswith("719|kernel divergent, block (0, 0, 0)") and "divergent barrier" in lines[0]
    assert lines[1].startswith("9|kernel nothing") and "2048 threads" in lines[1]
    assert lines[2].startswith("9|kernel nothing: grid (1, 70000, 1)")
    assert lines[3] == "0"      # cudaGetLastError clears the error


def test_16_bit_floats_round_like_the_gpu(tmp_path):
    values = np.concatenate([np.random.default_rng(1).standard_normal(2000).astype(np.float32) * 300,
                             np.array([0.0, -0.0, 1e-40, 65504.0, 65520.0, 1e30, np.inf, -np.inf, 3.0078125,
                                       1.00390625, 1.01171875], np.float32)])
    (tmp_path / "in.txt").write_text(" ".join(v.tobytes().hex() for v in values))
    out = _run_cuda(tmp_path, body=f"""
  FILE* f = fopen("{tmp_path / 'in.txt'}", "r");
  char hex[9];
  while (fscanf(f, "%8s", hex) == 1) {{
    uint32_t u = 0;
    for (int i = 0; i < 4; ++i) {{ unsigned b; sscanf(hex + 2 * i, "%2x", &b); u |= b << (8 * i); }}
    float x;
    memcpy(&x, &u, 4);
    printf("%u %u %a %a\\n", (unsigned)__float2bfloat16_rn(x).bits, (unsigned)__float2half_rn(x).bits,
           __bfloat162float(__float2bfloat16_rn(x)), __half2float(__float2half_rn(x)));
  }}""")
    rows = [line.split() for line in out.splitlines()]
    with np.errstate(over="ignore"):                      # 65520 and 1e30 overflow fp16 on purpose
        want_bf, want_hf = values.astype(ml_dtypes.bfloat16), values.astype(np.float16)
    np.testing.assert_array_equal(np.array([int(r[0]) for r in rows], np.uint16), want_bf.view(np.uint16))
    np.testing.assert_array_equal(np.array([int(r[1]) for r in rows], np.uint16), want_hf.view(np.uint16))
    np.testing.assert_array_equal([float.fromhex(r[2]) for r in rows], want_bf.astype(np.float64))
    np.testing.assert_array_equal([float.fromhex(r[3]) for r in rows], want_hf.astype(np.float64))


GEMM_PROGRAM = """
  const int M = 5, N = 8, K = 16, B = 2;
  alignas(64) static __nv_bfloat16 a[B * K * M], b[N * K];
  alignas(64) static float c[N], d[B * M * N];
  for (int i = 0; i < B * K * M; ++i) a[i] = __float2bfloat16_rn(0.25f * float((i * 7) % 11) - 1.0f);
  for (int i = 0; i < N * K; ++i) b[i] = __float2bfloat16_rn(0.5f * float((i * 5) % 9) - 2.0f);
  for (int i = 0; i < N; ++i) c[i] = float(i) - 3.0f;
  // A column-major [M, K] (lda = M), B column-major [K, N] stored as [N][K] (ldb = K), C a bias row (ldc = 0)
  AccelcGemmArgs p{M, N, K, B, a, M, (long long)M * K, b, K, 0, c, 0, 0, d, N, (long long)M * N, 0.5f, 1.0f};
  cudaError_t e = accelc_emu::gemm<__nv_bfloat16, true, __nv_bfloat16, true, float, accelc_emu::Act::ReLu, 1, 8, 4,
                                   false>(p, "t");
  printf("%d\\n", (int)e);
  for (int i = 0; i < B * M * N; ++i) printf("%a ", d[i]);
  printf("\\n");
  e = accelc_emu::gemm<__nv_bfloat16, true, __nv_bfloat16, true, float, accelc_emu::Act::ReLu, 1, 8, 8, false>(p, "t");
  printf("%d|%s\\n", (int)e, accelc_emu::g_message);     // N = 8 fits AlignC 8, d's row stride does too ...
  p.b = b + 1;
  e = accelc_emu::gemm<__nv_bfloat16, true, __nv_bfloat16, true, float, accelc_emu::Act::ReLu, 1, 8, 4, false>(p, "t");
  printf("%d|%s\\n", (int)e, accelc_emu::g_message);     // ... but B moved by one element is misaligned
  p.b = b;
  p.k = 12;
  e = accelc_emu::gemm<__nv_bfloat16, true, __nv_bfloat16, true, float, accelc_emu::Act::ReLu, 1, 8, 4, false>(p, "t");
  printf("%d|%s\\n", (int)e, accelc_emu::g_message);     // K = 12 is not a multiple of B's alignment 8
  p.k = K;
  p.batch = 1;
  e = accelc_emu::gemm<__nv_bfloat16, true, __nv_bfloat16, true, float, accelc_emu::Act::ReLu, 1, 8, 4, false>(p, "t");
  printf("%d|%s\\n", (int)e, accelc_emu::g_message);     // a single GEMM needs its (stream-K) workspace
  alignas(64) static unsigned char ws[4096];
  p.workspace = ws;
  p.workspace_bytes = accelc_emu::gemm_workspace(p);
  e = accelc_emu::gemm<__nv_bfloat16, true, __nv_bfloat16, true, float, accelc_emu::Act::ReLu, 1, 8, 4, false>(p, "t");
  printf("%d|%zu\\n", (int)e, p.workspace_bytes);
"""


def test_host_gemm_computes_the_cutlass_contract(tmp_path):
    out = _run_cuda(tmp_path, body=GEMM_PROGRAM, kernels='#include "accelc_emu_gemm.h"\n')
    lines = out.splitlines()
    assert lines[0] == "0"
    M, N, K, B = 5, 8, 16, 2
    a = (0.25 * ((np.arange(B * K * M) * 7) % 11) - 1.0).astype(ml_dtypes.bfloat16).astype(np.float64)
    b = (0.5 * ((np.arange(N * K) * 5) % 9) - 2.0).astype(ml_dtypes.bfloat16).astype(np.float64)
    A = a.reshape(B, K, M).transpose(0, 2, 1)          # column-major [M, K] per batch
    Bm = b.reshape(N, K).T                              # column-major [K, N], shared by the batch
    want = np.maximum(0.5 * (A @ Bm) + (np.arange(N) - 3.0), 0.0)
    np.testing.assert_allclose([float.fromhex(v) for v in lines[1].split()], want.reshape(-1), rtol=1e-6)
    assert lines[2].startswith("0|")
    assert lines[3].startswith("716|GEMM t: an operand pointer")
    assert lines[4].startswith("1|GEMM t: extents m=5 n=8 k=12")
    assert lines[5].startswith("1|GEMM t: needs 256 bytes of workspace, got 0")
    assert lines[6] == "0|256"


WMMA_KERNELS = """
#include <mma.h>
namespace wm = nvcuda::wmma;
// C[M, N] = A[M, K] @ B[K, N] (+ C when accumulate) with one warp per 16 x 16 tile of C; A row-major,
// B column-major (stored [N][K]); C read and written in the layout `layout`
template <typename T>
__global__ void tile_gemm(const T* a, const T* b, float* c, int K, int N, wm::layout_t layout, bool accumulate,
                          bool sync) {
  const int tm = blockIdx.y, tn = blockIdx.x;
  __shared__ __align__(32) float staged[16 * 16];
  wm::fragment<wm::accumulator, 16, 16, 16, float> acc;
  float* ct = layout == wm::mem_row_major ? c + tm * 16 * N + tn * 16 : c + tn * 16 * (gridDim.y * 16) + tm * 16;
  const unsigned ldc = layout == wm::mem_row_major ? N : gridDim.y * 16;
  if (accumulate) wm::load_matrix_sync(acc, ct, ldc, layout);
  else wm::fill_fragment(acc, 0.0f);
  for (int k0 = 0; k0 < K; k0 += 16) {
    wm::fragment<wm::matrix_a, 16, 16, 16, T, wm::row_major> fa;
    wm::fragment<wm::matrix_b, 16, 16, 16, T, wm::col_major> fb;
    wm::load_matrix_sync(fa, a + tm * 16 * K + k0, K);
    wm::load_matrix_sync(fb, b + tn * 16 * K + k0, K);
    wm::mma_sync(acc, fa, fb, acc);
  }
  // through shared memory: every lane then doubles a row it did not store (needs the __syncwarp)
  wm::store_matrix_sync(staged, acc, 16, wm::mem_row_major);
  if (sync) __syncwarp();
  const int lane = threadIdx.x, r = lane / 2, c0 = (lane % 2) * 8;
  float twice[8];
  for (int j = 0; j < 8; ++j) twice[j] = 2.0f * staged[r * 16 + c0 + j];
  for (int j = 0; j < 8; ++j) {
    const int row = tm * 16 + r, col = tn * 16 + c0 + j;
    (layout == wm::mem_row_major ? c[row * N + col] : c[col * (gridDim.y * 16) + row]) = twice[j];
  }
}
__global__ void early_exit(const __half* a, float* c) {
  if (threadIdx.x == 31) return;
  wm::fragment<wm::matrix_a, 16, 16, 16, __half, wm::row_major> fa;
  wm::fragment<wm::matrix_b, 16, 16, 16, __half, wm::row_major> fb;
  wm::fragment<wm::accumulator, 16, 16, 16, float> acc;
  wm::fill_fragment(acc, 0.0f);
  wm::load_matrix_sync(fa, a, 16);
  wm::load_matrix_sync(fb, a, 16);
  wm::mma_sync(acc, fa, fb, acc);
  wm::store_matrix_sync(c, acc, 16, wm::mem_row_major);
}
__global__ void misaligned(const __half* a, float* c) {
  wm::fragment<wm::matrix_a, 16, 16, 16, __half, wm::row_major> fa;
  wm::load_matrix_sync(fa, a + 8, 16);
}
"""

WMMA_PROGRAM = """
  const int M = 32, N = 48, K = 64;
  alignas(64) static __nv_bfloat16 a[M * K], b[N * K];
  alignas(64) static __half ah[M * K], bh[N * K];
  alignas(64) static float c[M * N];
  for (int i = 0; i < M * K; ++i) {       // values exact in both 16-bit types
    a[i] = __float2bfloat16_rn(0.125f * float((i * 7) % 13) - 0.75f);
    ah[i] = __float2half_rn(__bfloat162float(a[i]));
  }
  for (int i = 0; i < N * K; ++i) {
    b[i] = __float2bfloat16_rn(0.25f * float((i * 5) % 9) - 1.0f);
    bh[i] = __float2half_rn(__bfloat162float(b[i]));
  }
  auto dump = [&]() { for (int i = 0; i < M * N; ++i) printf("%a ", c[i]); printf("|%d\\n", (int)cudaGetLastError()); };
  ACCELC_LAUNCH(tile_gemm<__nv_bfloat16>, dim3(N / 16, M / 16), 32, 0, nullptr)(a, b, c, K, N, wm::mem_row_major,
                                                                              false, true);
  dump();
  for (int i = 0; i < M * N; ++i) c[i] = float(i % 5);     // column-major C, accumulated, fp16 operands
  ACCELC_LAUNCH(tile_gemm<__half>, dim3(N / 16, M / 16), 32, 0, nullptr)(ah, bh, c, K, N, wm::mem_col_major, true,
                                                                       true);
  dump();
  ACCELC_LAUNCH(tile_gemm<__nv_bfloat16>, dim3(N / 16, M / 16), 32, 0, nullptr)(a, b, c, K, N, wm::mem_row_major,
                                                                              false, false);
  dump();
  ACCELC_LAUNCH(early_exit, 1, 32, 0, nullptr)(ah, c);
  printf("%d|%s\\n", (int)cudaGetLastError(), accelc_emu::g_message);
  ACCELC_LAUNCH(misaligned, 1, 32, 0, nullptr)(ah, c);
  printf("%d|%s\\n", (int)cudaGetLastError(), accelc_emu::g_message);
"""


def test_wmma_fragments_multiply_and_catch_missing_syncs(tmp_path):
    out = _run_cuda(tmp_path, kernels=WMMA_KERNELS, body=WMMA_PROGRAM)
    lines = out.splitlines()
    M, N, K = 32, 48, 64
    a = (0.125 * ((np.arange(M * K) * 7) % 13) - 0.75).astype(ml_dtypes.bfloat16).astype(np.float64).reshape(M, K)
    b = (0.25 * ((np.arange(N * K) * 5) % 9) - 1.0).astype(ml_dtypes.bfloat16).astype(np.float64).reshape(N, K)

    def values(line):
        body, err = line.rsplit("|", 1)
        assert err == "0"
        return np.array([float.fromhex(v) for v in body.split()])

    np.testing.assert_allclose(values(lines[0]).reshape(M, N), 2 * (a @ b.T), rtol=1e-6)
    c0 = (np.arange(M * N) % 5).astype(np.float64).reshape(N, M).T       # column-major C
    np.testing.assert_allclose(values(lines[1]).reshape(N, M).T, 2 * (a @ b.T + c0), rtol=1e-6)
    # without the __syncwarp a lane reads rows the other lanes have not stored yet
    assert not np.allclose(values(lines[2]).reshape(M, N), 2 * (a @ b.T), equal_nan=False)
    assert lines[3].startswith("719|kernel early_exit, block (0, 0, 0)") and "without all 32 lanes" in lines[3]
    assert lines[4].startswith("716|kernel misaligned") and "not 32-byte aligned" in lines[4]


# ---- part 2: the generated code under the emulator -------------------------------------------------------
from accelc.backends.cuda import CudaBackend  # noqa: E402
from accelc.runtime.module import CompiledModule  # noqa: E402
from accelc.targets import get_target  # noqa: E402
from test_backend_cuda import _cosine, _feeds, _pack, _signature, cnn, encoder, families, mlp, resnet  # noqa: E402


def _load(files: dict, manifest: dict, graph, target: str, cache) -> CompiledModule:
    art = _pack({"format_version": 1, "target": target, "signature": _signature(graph), "options": {},
                 "backend": manifest}, files)
    return CompiledModule(art, cache_dir=str(cache))


def _emulated(graph, cache, target="h100") -> CompiledModule:
    parts = CudaBackend().lower(graph, get_target(target), BackendOptions(cache_dir=str(cache), emulate=True))
    assert parts.manifest["emulated"] is True and parts.manifest["cuda_graph"] is False
    m = _load(parts.files, parts.manifest, graph, target, cache)
    assert m.variant == f"{get_target(target).sm} (host emulation)"
    return m


@pytest.mark.parametrize("build,kw", [(mlp, {"batch": 1}), (mlp, {"batch": 33}), (cnn, {"batch": 1}),
                                      (cnn, {"batch": 3, "hw": 23}), (encoder, {"batch": 1, "seq": 7}),
                                      (encoder, {"batch": 2, "seq": 33}), (families, {})])
def test_fp32_code_matches_reference(build, kw, build_cache):
    g = build(**kw)
    feeds = _feeds(g)
    want = evaluate(g, feeds)
    got = _emulated(g, build_cache).run(feeds)
    for name in g.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("build", [cnn, encoder])
@pytest.mark.parametrize("target,compute", [("a100", DType.bfloat16), ("h200", DType.bfloat16),
                                            ("h200", DType.float16)])
def test_16_bit_code_matches_reference(build, target, compute, build_cache):
    """bf16 / fp16 GEMMs and convolutions: within the numerics contract of the fp32 model, and equal (up to
    summation order and the fused attention's fp32 arithmetic) to the interpreter's 16-bit graph."""
    import dataclasses
    g = build(compute=compute)
    fp32 = g.copy()
    fp32.nodes = [dataclasses.replace(n, attrs=dataclasses.replace(n.attrs, compute=DType.float32))
                  if n.op in ("FusedGemm", "FusedConv") else n for n in g.nodes]
    feeds = _feeds(g)
    want_low, want_fp32 = evaluate(g, feeds), evaluate(fp32, feeds)
    got = _emulated(g, build_cache, target).run(feeds)
    for name in g.outputs:
        assert _cosine(got[name], want_fp32[name]) > (0.999 if compute == DType.bfloat16 else 0.99999)
        assert _cosine(got[name], want_low[name]) > 0.99995
        assert not np.array_equal(got[name], want_fp32[name])      # the 16-bit GEMMs really ran


def test_exported_encoder_compiles_and_measures_accuracy_without_gpu(tmp_path, build_cache):
    """An nn.TransformerEncoder through ONNX and the whole pipeline: the fused attention reads the packed
    projection through strides and views replace the head-splitting copies; emulated, its accuracy is
    measured at compile time like a CPU artifact's."""
    pytest.importorskip("torch")
    import accelc
    from test_backend_cuda import _load_exporter
    path = tmp_path / "enc.onnx"
    _load_exporter().export_encoder(path, layers=2, hidden=64, heads=4, ffn=128, seq=40, batch=2)
    for dtype, check in (("fp32", lambda a: a["max_abs_error"] < 2e-5), ("bf16", lambda a: a["cosine"] > 0.9999),
                         ("fp16", lambda a: a["max_abs_error"] < 2e-3)):
        compiled = accelc.compile(str(path), "h200", dtype=dtype, emulate=True, cache_dir=build_cache)
        backend = compiled.manifest["backend"]
        assert backend["emulated"] and backend["fused_attention"] == 2
        assert compiled.manifest["options"]["emulate"] is True
        (acc,) = compiled.manifest["accuracy"]["outputs"].values()
        assert check(acc), (dtype, acc)


def test_emulation_is_for_cuda_targets():
    import accelc
    from accelc.errors import AccelcError
    with pytest.raises(AccelcError, match="emulation applies to CUDA targets"):
        accelc.compile(b"", "host", emulate=True)


def _generate(graph, target="h100"):
    from accelc.backends.cuda.arch import arch_for
    from accelc.backends.cuda.codegen import generate
    return generate(graph, arch_for(get_target(target)), BackendOptions())


def _run_generated(gen, graph, cache, feeds):
    from accelc.backends.cuda.emulate import build_emulated
    files = {"model.so": build_emulated(gen, str(cache)), "weights.bin": gen.weights}
    manifest = {"name": "cuda", "library": "model.so", "weights": "weights.bin", "abi_version": 1,
                "variants": ["sm_90a"]}
    return _load(files, manifest, graph, "h100", cache).run(feeds)


def test_a_broken_kernel_is_caught(build_cache):
    """The check can fail: the attention kernel without the online-softmax correction (it matters once a row
    spans more than one key tile), and a final softmax that leaves its first row unwritten, both disagree
    with the reference."""
    g = encoder(batch=1, seq=40)
    feeds = _feeds(g)
    want = evaluate(g, feeds)[g.outputs[0]]
    gen = _generate(g)
    src = gen.files["accelc_model.cu"]
    assert "__expf(m - m_new)" in src
    gen.files["accelc_model.cu"] = src.replace("__expf(m - m_new)", "1.0f")
    got = _run_generated(gen, g, build_cache, feeds)[g.outputs[0]]
    assert np.abs(got - want).max() > 1e-2

    m = mlp()
    feeds = _feeds(m)
    gen = _generate(m)
    src = gen.files["accelc_model.cu"]
    kernel = src.index("__global__", src.index("Softmax '"))
    store = src.index("out[", kernel)                      # the first store of the softmax kernel
    gen.files["accelc_model.cu"] = src[:store] + "if (blockIdx.x > 0) " + src[store:]
    got = _run_generated(gen, m, build_cache, feeds)[m.outputs[0]]
    want = evaluate(m, feeds)[m.outputs[0]]
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], want[0], atol=1e-3)       # whatever the plan left there: not the softmax


def test_int64_min_max(build_cache):
    """int64 Min/Max call CUDA's global min/max overloads (int64_t is `long` here), found by running ONNX's
    node tests through the emulator (bench/onnx_conformance_report.py --target h100 --emulate)."""
    from accelc.ir import Graph, TensorType
    g = Graph("minmax")
    x = g.add_input("x", TensorType(DType.int64, (3, 4)))
    y = g.add_input("y", TensorType(DType.int64, (3, 4)))
    g.outputs = [g.add_node("Max", [x, y])[0], g.add_node("Min", [x, y])[0]]
    rng = np.random.default_rng(2)
    feeds = {v: rng.integers(-2**40, 2**40, (3, 4)).astype(np.int64) for v in ("x", "y")}
    got, want = _emulated(g, build_cache).run(feeds), evaluate(g, feeds)
    for name in g.outputs:
        np.testing.assert_array_equal(got[name], want[name])


# ---- the tensor-core attention ---------------------------------------------------------------------------------
def attention(batch, heads, sq, sk, d, dv, masked, compute):
    """softmax(Q K^T / sqrt(d) + mask) V with both products in ``compute``, as the passes leave it."""
    from accelc.ir import Graph, TensorType
    from accelc.ir.ops.fused import FusedGemmAttrs
    from test_backend_cuda import _attrs
    g = Graph("attention")
    q = g.add_input("q", TensorType(DType.float32, (batch, heads, sq, d)))
    k = g.add_input("k", TensorType(DType.float32, (batch, heads, sk, d)))
    v = g.add_input("v", TensorType(DType.float32, (batch, heads, sk, dv)))
    (s,) = g.add_node("FusedGemm", [q, k], FusedGemmAttrs(trans_b=True, compute=compute))
    (s,) = g.add_node("Mul", [s, g.add_constant(np.array(1.0 / np.sqrt(d), np.float32))])
    if masked:
        mask = g.add_input("mask", TensorType(DType.float32, (batch, 1, 1, sk)))
        (s,) = g.add_node("Add", [s, mask])
    (p,) = g.add_node("Softmax", [s], _attrs("Softmax", axis=-1))
    (o,) = g.add_node("FusedGemm", [p, v], FusedGemmAttrs(compute=compute))
    g.outputs = [o]
    return g


BF16, FP16 = DType.bfloat16, DType.float16


@pytest.mark.parametrize("shape,masked,compute,sms,tiles", [
    ((2, 3, 40, 70, 64, 64), True, BF16, 1, (64, 32)),      # 3 key tiles, the last one partial
    ((2, 2, 64, 64, 64, 64), True, FP16, 6, (32, 64)),      # 4 blocks of 64 rows would leave SMs idle
    ((1, 2, 33, 100, 32, 48), False, FP16, 132, (16, 64)),  # V's head dim differs from Q's
    ((1, 2, 20, 50, 128, 128), True, BF16, 132, (16, 32)),  # head dim 128: beyond the fp32 kernel's 96
])
def test_tensor_core_attention_matches_reference(shape, masked, compute, sms, tiles, build_cache):
    """The wmma kernel under the emulator (fragments spread over the lanes, see accelc_emu_wmma.h) against
    the interpreter running the same 16-bit graph and the fp32 one, for each choice of tile sizes."""
    import dataclasses
    from accelc.backends.cuda.arch import arch_for
    from accelc.backends.cuda.codegen import generate
    g = attention(*shape, masked, compute)
    fp32 = g.copy()
    fp32.nodes = [dataclasses.replace(n, attrs=dataclasses.replace(n.attrs, compute=DType.float32))
                  if n.op == "FusedGemm" else n for n in g.nodes]
    arch = dataclasses.replace(arch_for(get_target("h100")), sm_count=sms)
    gen = generate(g, arch, BackendOptions())
    src = gen.files["accelc_model.cu"]
    assert gen.gemm_instances == [] and "nvcuda::wmma::mma_sync" in src
    bq, bk = tiles
    assert f"{bq} query rows ({bq // 16} warps) x {bk} keys per tile" in src
    feeds = _feeds(g)
    got = _run_generated(gen, g, build_cache, feeds)[g.outputs[0]]
    want_low, want_fp32 = evaluate(g, feeds)[g.outputs[0]], evaluate(fp32, feeds)[g.outputs[0]]
    assert _cosine(got, want_low) > 0.99999
    assert _cosine(got, want_fp32) > (0.9995 if compute == BF16 else 0.99999)
    assert np.abs(got - want_low).max() < (1e-2 if compute == BF16 else 1e-3)


def test_tensor_core_attention_is_for_16_bit_products():
    """fp32 (or mixed) products keep the fp32 kernel; head dims that are not multiples of 16 too."""
    src = _generate(attention(1, 2, 20, 20, 32, 32, True, DType.float32)).files["accelc_model.cu"]
    assert "wmma" not in src.split("accelc generated CUDA code", 1)[1] and "online softmax in fp32" in src
    src = _generate(attention(1, 2, 20, 20, 40, 40, True, BF16)).files["accelc_model.cu"]
    assert "wmma::mma_sync" not in src and "online softmax in fp32" in src


def test_tensor_core_tiles_follow_the_sm_count():
    from accelc.backends.cuda.attention_kernel import tensor_core_tiles
    t = tensor_core_tiles(12, 128, 64, 64, 132)          # BERT-base, batch 1: 96 blocks of 16 rows
    assert (t.bq, t.bk) == (16, 64)
    t = tensor_core_tiles(32 * 12, 128, 64, 64, 132)     # batch 32: 768 blocks of 64 rows
    assert (t.bq, t.bk, t.shared_bytes <= 48 * 1024) == (64, 32, True)
    assert tensor_core_tiles(4, 8, 64, 64, 1).bq == 16     # 8 rows: no 32- or 64-row tiles


@pytest.mark.parametrize("mutation", ["correction", "syncwarp"])
def test_a_broken_tensor_core_attention_is_caught(mutation, build_cache):
    """Without the per-row rescaling of the accumulator, or without the __syncwarp between the lanes'
    writes of P's row factors and the warp's use of them, the result is wrong under the emulator."""
    g = attention(1, 2, 40, 100, 32, 32, True, BF16)
    gen = _generate(g)
    src = gen.files["accelc_model.cu"]
    if mutation == "correction":
        assert src.count("*= srow[r];") == 1
        src = src.replace("*= srow[r];", "*= 1.0f;")
    else:
        at = src.index("srow[row] = corr;")
        sync = src.index("__syncwarp();", at)
        src = src[:sync] + src[sync + len("__syncwarp();"):]
    gen.files["accelc_model.cu"] = src
    feeds = _feeds(g)
    got = _run_generated(gen, g, build_cache, feeds)[g.outputs[0]]
    want = evaluate(g, feeds)[g.outputs[0]]
    assert not np.allclose(got, want, atol=2e-2)


@pytest.mark.parametrize("target", ["h100", "a100"])
def test_narrowed_gemm_operands_give_the_same_bits(target, build_cache, monkeypatch):
    """The attention's output, read only by the (bf16) output projection, is stored in bf16 by the
    attention kernel itself; the first LayerNorm, read by the FFN's GEMM and as its residual, stores
    a bf16 copy next to its fp32 output; the FFN's first GEMM (fp32 bias row: CUTLASS 3 on h100,
    CUTLASS 2.x's GemmBiasOf on a100) stores its GELU in bf16 for the second: three conversion kernels
    fewer. The Q, K and V projections store bf16 too, which the tensor-core attention would round them to
    (half the traffic, no kernel to save). The results are exactly the same."""
    from accelc.backends.cuda import codegen
    g = encoder(batch=2, seq=19, compute=BF16)
    feeds = _feeds(g)
    narrowed = _generate(g, target)
    assert narrowed.narrowed == 6
    kernel = narrowed.files["accelc_model.cu"]
    kernel = kernel[kernel.index("__global__", kernel.index("Attention '")):]
    assert kernel[:kernel.index("{")].count("const __nv_bfloat16* __restrict__") == 3
    assert any(i.element_c == BF16 and i.act == "gelu" for i in narrowed.gemm_instances)
    src = narrowed.files["accelc_model.cu"]
    assert src.count("*reinterpret_cast<accelc::Vec<__nv_bfloat16, 4>*>(out_low + base + j) = ls;") == 1
    kernel = src[src.index("__global__", src.index("Attention '")):]
    assert kernel[:kernel.index("{")].endswith("__nv_bfloat16* __restrict__ out) ")
    monkeypatch.setattr(codegen, "narrow_gemm_operands", lambda graph, *_: (graph, 0))
    plain = _generate(g, target)
    assert plain.narrowed == 0 and plain.kernels == narrowed.kernels + 3
    out = g.outputs[0]
    got = _run_generated(narrowed, g, build_cache, feeds)[out]
    want = _run_generated(plain, g, build_cache, feeds)[out]
    np.testing.assert_array_equal(got, want)


def test_operands_with_other_readers_are_not_narrowed():
    """A value some fp32 reader (the residual, a graph output, an fp32 GEMM) also reads keeps fp32."""
    from accelc.backends.cuda.narrow import narrow_gemm_operands
    from accelc.ir import Graph, TensorType
    from accelc.ir.ops.fused import FusedGemmAttrs
    g = Graph("mixed")
    x = g.add_input("x", TensorType(DType.float32, (4, 32)))
    (r,) = g.add_node("Relu", [x])
    (t,) = g.add_node("Tanh", [x])
    (s,) = g.add_node("Sigmoid", [x])
    w = g.add_constant(np.ones((32, 32), np.float32))
    (a,) = g.add_node("FusedGemm", [r, w], FusedGemmAttrs(compute=BF16))
    (b,) = g.add_node("FusedGemm", [t, w, "", r], FusedGemmAttrs(compute=BF16))   # r is b's residual too
    (c,) = g.add_node("FusedGemm", [s, w], FusedGemmAttrs(compute=DType.float32))
    (d,) = g.add_node("FusedGemm", [s, w], FusedGemmAttrs(compute=BF16))
    g.outputs = [a, b, c, d, t]
    out, n = narrow_gemm_operands(g)
    assert n == 0 and all(out.types[v].dtype == DType.float32 for v in (r, t, s))
    g.outputs = [a, b, c, d]
    out, n = narrow_gemm_operands(g)
    assert n == 1 and out.types[t].dtype == BF16 and g.types[t].dtype == DType.float32



def test_narrowing_through_views_in_an_exported_encoder(tmp_path, build_cache, monkeypatch):
    """In an exported nn.TransformerEncoder the next layer's QKV projection reads the LayerNorm through a
    Transpose: the bf16 copy gets its own Transpose view. Per layer the attention, both LayerNorms
    (but not the last, a graph output) and the FFN's first GEMM lose their conversion kernel, and the packed
    QKV projection stores bf16 for the tensor-core attention; the outputs are the same bits."""
    pytest.importorskip("torch")
    import accelc
    from accelc.backends.cuda import codegen
    from test_backend_cuda import _load_exporter
    path = tmp_path / "enc.onnx"
    _load_exporter().export_encoder(path, layers=2, hidden=64, heads=4, ffn=128, seq=24, batch=1)
    x = np.random.default_rng(3).standard_normal((1, 24, 64)).astype(np.float32)
    narrowed = accelc.compile(str(path), "h200", dtype="bf16", emulate=True, cache_dir=build_cache)
    monkeypatch.setattr(codegen, "narrow_gemm_operands", lambda graph, *_: (graph, 0))
    plain = accelc.compile(str(path), "h200", dtype="bf16", emulate=True, cache_dir=build_cache)
    nb, pb = narrowed.manifest["backend"], plain.manifest["backend"]
    assert nb["narrowed_operands"] == 9 and pb["kernels"] == nb["kernels"] + 7
    np.testing.assert_array_equal(narrowed.run({"x": x})["y"], plain.run({"x": x})["y"])


def norm_chains() -> "Graph":
    """LayerNorms over elementwise results: a plain residual Add; an Add with a bias row that is also a
    graph output; a pre-norm residual stream read again after its norm; a row too long to keep in
    registers (4100 > 16 x 256); an fp16 product; and two that must stay apart. Two InstanceNorms (per-channel
    scale and bias, short and long rows) share the norm kernel: an operand broadcast across rows of
    another shape, and a reader placed before the norm."""
    from accelc.ir import Graph, TensorType
    from test_backend_cuda import _attrs, _w
    g = Graph("norm_chains")
    x = g.add_input("x", TensorType(DType.float32, (3, 5, 96)))
    r = g.add_input("r", TensorType(DType.float32, (3, 5, 96)))
    m = g.add_input("m", TensorType(DType.float32, (3, 5, 1)))
    z = g.add_input("z", TensorType(DType.float32, (2, 4100)))
    s = g.add_input("s", TensorType(DType.float32, (1, 5, 1)))
    p = g.add_input("p", TensorType(FP16, (4, 64)))

    def ln(v, width=96, axis=-1):
        return g.add_node("LayerNormalization", [v, g.add_constant(1 + _w(width)), g.add_constant(_w(width))],
                          _attrs("LayerNormalization", axis=axis, epsilon=1e-5))[0]
    (a,) = g.add_node("Add", [x, r])
    n1 = ln(a)
    (d,) = g.add_node("Add", [n1, g.add_constant(_w(1, 1, 96))])         # a bias row; d is an output too
    n2 = ln(d)
    (e,) = g.add_node("Add", [n2, x])
    n3 = ln(e)
    (f,) = g.add_node("Add", [e, n3])                                    # e is read after its norm
    (c,) = g.add_node("Mul", [x, m])                                     # one value per row
    n7 = ln(c)
    (zz,) = g.add_node("Mul", [z, z])
    n4 = ln(zz, 4100)
    (pp,) = g.add_node("Mul", [p, p])                                    # an fp16 sum is rounded before the norm
    n8 = ln(pp, 64)
    wide = g.add_input("wide", TensorType(DType.float32, (3, 1000)))   # 250 runs of 4: 4 per thread, guarded
    (ww,) = g.add_node("Add", [wide, g.add_constant(_w(1000))])
    n9 = ln(ww, 1000)
    from accelc.ir.ops.normalization import InstanceNormAttrs
    outs = []
    for shape in ((2, 3, 5, 7), (1, 2, 70, 70)):                          # rows of 35 (in registers) and 4900
        img = g.add_input(f"img{shape[-1]}", TensorType(DType.float32, shape))
        outs += g.add_node("InstanceNormalization", [img, g.add_constant(1 + _w(shape[1])),
                                                     g.add_constant(_w(shape[1]))], InstanceNormAttrs(1e-5))
    (h,) = g.add_node("Add", [x, s])                                     # s: one value per position, not row
    n5 = ln(h)
    (k,) = g.add_node("Sub", [x, m])
    (early,) = g.add_node("Relu", [k])                                   # reads k before the norm does
    n6 = ln(k)
    g.outputs = [d, f, n4, n5, n6, n7, n8, n9, early] + outs
    return g


def test_norm_prologues_give_the_same_bits(build_cache, monkeypatch):
    """Each fusable (elementwise, LayerNorm) pair becomes one kernel whose results are the same bits as
    the two kernels': full rows, bias rows, per-row values, a stored result and the long-row path."""
    from accelc.backends.cuda import codegen
    g = norm_chains()
    feeds = _feeds(g)
    fused = _generate(g)
    assert fused.norm_prologues == 7
    src = fused.files["accelc_model.cu"]
    assert src.count("in registers") == 9 and src.count("runs of 4 elements") == 8   # 35: one by one
    assert "float v[4];" in src and "if (j < 96)" in src       # 96 = 24 runs of 4 for 32 threads, guarded
    assert "(x_out + base + j) = xs;" in src and "in1[blockIdx.x]" in src
    monkeypatch.setattr(codegen, "fuse_norm_prologues", lambda graph: (graph, 0))
    plain = _generate(g)
    assert plain.kernels == fused.kernels + 7
    got = _run_generated(fused, g, build_cache, feeds)
    want = _run_generated(plain, g, build_cache, feeds)
    ref = evaluate(g, feeds)
    for v in g.outputs:
        np.testing.assert_array_equal(got[v], want[v])
        tol = 1e-2 if got[v].dtype == np.float16 else 1e-4
        np.testing.assert_allclose(got[v], ref[v], rtol=tol, atol=tol)


def test_a_gemm_residual_moves_into_the_norm():
    """An encoder's FusedGemm(bias, residual) -> LayerNorm loses its residual to the norm's prologue (no C
    map kernel); one with an activation, or whose output something else reads, keeps it."""
    from accelc.backends.cuda.fuse_norm import fuse_norm_prologues
    from accelc.backends.cuda.codegen_reduce import NORM_PROLOGUE
    g = encoder(batch=2, seq=7)
    out, n = fuse_norm_prologues(g)
    assert n == 2
    gemms = [node for node in out.nodes if node.op == "FusedGemm"]
    assert all(len(node.inputs) <= 3 or not node.inputs[3] for node in gemms)
    norms = [node for node in out.nodes if node.op == NORM_PROLOGUE]
    assert [node.attrs.prologue.op for node in norms] == ["Add", "Add"] and not any(a.attrs.store_x for a in norms)
    assert all(node.op != "LayerNormalization" for node in out.nodes)
    src = _generate(g).files["accelc_model.cu"]
    assert "C = beta * bias + residual" not in src
    # keep: the GEMM output is also a graph output; the GEMM has an activation
    g2 = encoder(batch=2, seq=7)
    residual_gemms = [node for node in g2.nodes if node.op == "FusedGemm" and len(node.inputs) > 3]
    g2.outputs = g2.outputs + [residual_gemms[0].outputs[0]]
    out2, _ = fuse_norm_prologues(g2)
    assert sum(len(node.inputs) > 3 for node in out2.nodes if node.op == "FusedGemm") == 1
    from dataclasses import replace
    from accelc.ir.ops.fused import Activation
    g3 = encoder(batch=2, seq=7)
    g3.nodes = [replace(node, attrs=replace(node.attrs, activation=Activation("relu")))
                if node is residual_gemms[0] or (node.op == "FusedGemm" and len(node.inputs) > 3) else node
                for node in g3.nodes]
    out3, _ = fuse_norm_prologues(g3)
    assert sum(len(node.inputs) > 3 for node in out3.nodes if node.op == "FusedGemm") == 2


def hopper_epilogues() -> "Graph":
    """GEMMs whose epilogues the sm_90a (CUTLASS 3) instantiation computes itself: bias row + residual in
    fp32 with alpha and beta not 1 (no C map kernel), and fp16 activations with an fp16 residual."""
    from accelc.ir import Graph, TensorType
    from accelc.ir.ops.fused import Activation, FusedGemmAttrs
    from test_backend_cuda import _w
    g = Graph("hopper_epilogues")
    x = g.add_input("x", TensorType(DType.float32, (24, 40)))
    r = g.add_input("r", TensorType(DType.float32, (24, 32)))
    h = g.add_input("h", TensorType(FP16, (16, 48)))
    hr = g.add_input("hr", TensorType(FP16, (16, 64)))
    (y,) = g.add_node("FusedGemm", [x, g.add_constant(_w(40, 32)), g.add_constant(_w(32)), r],
                      FusedGemmAttrs(alpha=0.75, beta=1.5, activation=Activation("gelu"), compute=BF16))
    (z,) = g.add_node("FusedGemm", [h, g.add_constant(_w(48, 64).astype(np.float16)),
                                    g.add_constant(_w(64).astype(np.float16)), hr],
                      FusedGemmAttrs(activation=Activation("silu"), compute=FP16))
    g.outputs = [y, z]
    return g


def test_hopper_gemms_fuse_bias_and_residual(build_cache, monkeypatch):
    """On h100 the aligned 16-bit GEMMs use the CUTLASS 3 instantiation: bias as an fp32 vector, the
    residual as C, no map kernel; its emulated results match the interpreter, and ACCELC_CUDA_GEMM=sm80
    (or an a100 target) goes back to CUTLASS 2.x with the C map kernel."""
    g = hopper_epilogues()
    feeds = _feeds(g)
    want = evaluate(g, feeds)
    gen = _generate(g)
    keys = [i.key for i in gen.gemm_instances]
    assert len(keys) == 2 and all(k.startswith("sm90_") for k in keys), keys
    assert {i.element_source for i in gen.gemm_instances} == {DType.float32, FP16}
    src = gen.files["accelc_model.cu"]
    assert "for the GEMM epilogue" not in src and src.count("CUTLASS 3 wgmma") == 2
    got = _run_generated(gen, g, build_cache, feeds)
    for v, tol in zip(g.outputs, (2e-5, 2e-3)):
        np.testing.assert_allclose(got[v].astype(np.float32), want[v].astype(np.float32), rtol=tol, atol=tol)
    monkeypatch.setenv("ACCELC_CUDA_GEMM", "sm80")
    old = _generate(g)
    assert {i.family for i in old.gemm_instances} == {"sm80bias"}
    assert "for the GEMM epilogue" not in old.files["accelc_model.cu"]
    got80 = _run_generated(old, g, build_cache, feeds)
    for v in g.outputs:           # the same arithmetic in the same order
        np.testing.assert_array_equal(got80[v], got[v])
    monkeypatch.delenv("ACCELC_CUDA_GEMM")
    assert {i.family for i in _generate(g, "a100").gemm_instances} == {"sm80bias"}


def test_sm80_bias_row_gemms_fuse_what_the_c_slot_cannot():
    """CUTLASS 2.x keeps the bias in C where that loses nothing: an fp32 result without a residual. A bias
    that is not a constant row, or a batch, keep the plain instantiation (the first with its C map kernel)."""
    from accelc.ir import Graph, TensorType
    from accelc.ir.ops.fused import FusedGemmAttrs
    from test_backend_cuda import _w
    g = Graph("sm80")
    x = g.add_input("x", TensorType(DType.float32, (24, 40)))
    bias_in = g.add_input("b", TensorType(DType.float32, (32,)))
    xb = g.add_input("xb", TensorType(DType.float32, (3, 24, 40)))
    w, b = g.add_constant(_w(40, 32)), g.add_constant(_w(32))
    (plain,) = g.add_node("FusedGemm", [x, w, b], FusedGemmAttrs(compute=BF16))
    (runtime_bias,) = g.add_node("FusedGemm", [x, w, bias_in], FusedGemmAttrs(compute=BF16))
    wb = g.add_constant(_w(3, 40, 32))
    (batched,) = g.add_node("FusedGemm", [xb, wb, b], FusedGemmAttrs(compute=BF16))
    g.outputs = [plain, runtime_bias, batched]
    gen = _generate(g, "a100")
    assert gen.gemm_instances and all(i.family == "sm80" for i in gen.gemm_instances)
    assert gen.files["accelc_model.cu"].count("for the GEMM epilogue") == 1


def test_sm80_bias_row_stand_in_refuses_what_cutlass_would(tmp_path):
    """The emulator's GemmBiasOf stand-in computes act(beta*C + (alpha*acc + bias)) and fails a call whose
    bias row is missing or not aligned to its vectors, or that has a batch, as CUTLASS 2.x would."""
    out = _run_cuda(tmp_path, r"""
  alignas(32) float a[16 * 8];
  alignas(32) float b[8 * 8];
  alignas(32) float c[16 * 8];
  alignas(32) float d[16 * 8];
  alignas(32) float bias[8 + 1];
  alignas(16) float ws[64];
  for (int i = 0; i < 16 * 8; ++i) { a[i] = float(i % 7) - 3.0f; c[i] = float(i % 5); }
  for (int i = 0; i < 8 * 8; ++i) b[i] = float(i % 3) - 1.0f;
  for (int j = 0; j < 9; ++j) bias[j] = 0.25f * j;
  AccelcGemmArgs p{16, 8, 8, 1, a, 8, 0, b, 8, 0, c, 8, 0, d, 8, 0, 2.0f, 0.5f, bias, ws, sizeof ws};
  using accelc_emu::Act;
  printf("%d\n", (int)accelc_emu::gemm_bias<float, false, true, float, Act::ReLu, 4, 4, 4>(p, "ok"));
  double err = 0;
  for (int i = 0; i < 16; ++i) for (int j = 0; j < 8; ++j) {
    float acc = 0; for (int k = 0; k < 8; ++k) acc += a[i * 8 + k] * b[j * 8 + k];
    err += fabs(d[i * 8 + j] - fmaxf(0.5f * c[i * 8 + j] + (2.0f * acc + bias[j]), 0.0f));
  }
  printf("%g\n", err);
  AccelcGemmArgs q = p; q.bias = bias + 1;
  printf("%d\n", (int)accelc_emu::gemm_bias<float, false, true, float, Act::ReLu, 4, 4, 4>(q, "shifted bias"));
  AccelcGemmArgs r = p; r.bias = nullptr;
  printf("%d\n", (int)accelc_emu::gemm_bias<float, false, true, float, Act::ReLu, 4, 4, 4>(r, "no bias"));
  AccelcGemmArgs s = p; s.batch = 2;
  printf("%d\n", (int)accelc_emu::gemm_bias<float, false, true, float, Act::ReLu, 4, 4, 4>(s, "batched"));
""", kernels='#include "accelc_emu_gemm.h"\n')
    lines = out.split()
    assert lines[0] == "0" and float(lines[1]) == 0.0
    assert lines[2:] == ["716", "1", "1"]      # cudaErrorMisalignedAddress, cudaErrorInvalidValue twice


def test_hopper_gemm_stand_in_refuses_what_tma_cannot_describe(tmp_path):
    """The emulator's sm90 stand-in fails a launch whose operand rows do not start on 16 bytes, or that
    has a batch, as the CUTLASS 3 kernel would; an aligned call computes act(beta*C + (alpha*acc + bias))."""
    out = _run_cuda(tmp_path, r"""
  alignas(16) float a[16 * 8];
  alignas(16) float b[8 * 8];
  alignas(16) float c[16 * 8];
  alignas(16) float d[16 * 8];
  alignas(16) float bias[8];
  alignas(16) float ws[64];
  for (int i = 0; i < 16 * 8; ++i) { a[i] = float(i % 7) - 3.0f; c[i] = float(i % 5); }
  for (int i = 0; i < 8 * 8; ++i) b[i] = float(i % 3) - 1.0f;
  for (int j = 0; j < 8; ++j) bias[j] = 0.25f * j;
  alignas(16) float A[16 * 8 + 4];
  for (int i = 0; i < 16 * 8; ++i) A[i + 1] = a[i];
  AccelcGemmArgs p{16, 8, 8, 1, a, 8, 0, b, 8, 0, c, 8, 0, d, 8, 0, 2.0f, 0.5f, bias, ws, sizeof ws};
  printf("%d\n", (int)accelc_emu::gemm_sm90<float, false, true, float, float, accelc_emu::Act::Identity>(p, "ok"));
  double err = 0;
  for (int i = 0; i < 16; ++i) for (int j = 0; j < 8; ++j) {
    float acc = 0; for (int k = 0; k < 8; ++k) acc += a[i * 8 + k] * b[j * 8 + k];
    err += fabs(d[i * 8 + j] - (0.5f * c[i * 8 + j] + (2.0f * acc + bias[j])));
  }
  printf("%g\n", err);
  AccelcGemmArgs q = p; q.a = A + 1;
  printf("%d\n", (int)accelc_emu::gemm_sm90<float, false, true, float, float, accelc_emu::Act::Identity>(q, "shifted"));
  AccelcGemmArgs r = p; r.batch = 2;
  printf("%d\n", (int)accelc_emu::gemm_sm90<float, false, true, float, float, accelc_emu::Act::Identity>(r, "batched"));
""", kernels='#include "accelc_emu_gemm.h"\n')
    lines = out.split()
    assert lines[0] == "0" and float(lines[1]) == 0.0
    assert lines[2] == str(716) and lines[3] == str(1)      # cudaErrorMisalignedAddress, cudaErrorInvalidValue


def test_gemm_producers_narrow_only_where_the_epilogue_is_exact(monkeypatch):
    """A GEMM read only by a bf16 GEMM stores bf16 itself: on h100 (CUTLASS 3, fp32 bias row) and on a100
    or with ACCELC_CUDA_GEMM=sm80 (CUTLASS 2.x's GemmBiasOf, fp32 bias row), but not with an activation
    CUTLASS does not fuse (a second rounding), nor on a100 with an fp32 residual (C is in D's type there)."""
    from dataclasses import replace
    from accelc.backends.cuda.arch import arch_for
    from accelc.backends.cuda.narrow import narrow_gemm_operands
    from accelc.ir.ops.fused import Activation
    g = encoder(batch=2, seq=8, compute=BF16)
    ffn1 = next(n for n in g.nodes if n.op == "FusedGemm" and n.attrs.activation.kind == "gelu")
    opts = BackendOptions()

    def narrowed(graph, target):
        out, _ = narrow_gemm_operands(graph, opts, arch_for(get_target(target)))
        return out.types[ffn1.outputs[0]].dtype == BF16
    assert all(narrowed(g, t) for t in ("h100", "h200", "a100", "l40s"))
    leaky = g.copy()
    leaky.nodes = [replace(n, attrs=replace(n.attrs, activation=Activation("leaky_relu", alpha=0.1)))
                   if n is ffn1 else n for n in g.nodes]
    assert not narrowed(leaky, "h100") and not narrowed(leaky, "a100")
    from accelc.ir import TensorType
    with_residual = g.copy()          # an fp32 residual of FFN1's shape
    with_residual.types = dict(g.types)
    with_residual.types["r"] = TensorType(DType.float32, g.types[ffn1.outputs[0]].shape)
    with_residual.inputs = list(g.inputs) + ["r"]
    with_residual.nodes = [replace(n, inputs=tuple(n.inputs[:3]) + ("r",)) if n is ffn1 else n for n in g.nodes]
    assert narrowed(with_residual, "h100") and not narrowed(with_residual, "a100")
    monkeypatch.setenv("ACCELC_CUDA_GEMM", "sm80")
    assert narrowed(g, "h100") and not narrowed(with_residual, "h100")


# ---- channels-last convolutions (layout.py) ------------------------------------------------------------------
def _low_and_fp32(g):
    """The interpreter's results for graph ``g`` and for the same graph with fp32 products."""
    import dataclasses
    fp32 = g.copy()
    fp32.nodes = [dataclasses.replace(n, attrs=dataclasses.replace(n.attrs, compute=DType.float32))
                  if n.op in ("FusedGemm", "FusedConv") else n for n in g.nodes]
    feeds = _feeds(g)
    return feeds, evaluate(g, feeds), evaluate(fp32, feeds)


@pytest.mark.parametrize("target,compute", [("h200", DType.float32), ("h200", FP16), ("h200", BF16), ("a100", BF16)])
def test_channels_last_convolutions_match_reference(target, compute, build_cache):
    """Every single-group convolution of a ResNet stem and bottleneck runs as an NHWC GEMM (an im2col first
    unless it is 1x1, stride 1, unpadded), the depthwise one and pooling run NHWC (no transposes but the
    global pooling's view), and the results match the interpreter: fp32 to 2e-4, 16-bit within the
    numerics contract of the fp32 model and equal (up to summation order) to the interpreter's 16-bit
    graph."""
    g = resnet(compute=compute)
    feeds, want_low, want_fp32 = _low_and_fp32(g)
    gen = _generate(g, target)
    assert gen.channels_last == 9
    src = gen.files["accelc_model.cu"]
    assert src.count("// accelc_cuda.Im2colNhwc") == 4 and "PoolNhwc 'maxpool" in src and ", NHWC" in src
    assert src.count("direct convolution, group 12 (1 in / 1 out channels per group), NHWC") == 1
    transposes = [line for line in src.splitlines() if "// Transpose '" in line]
    assert "implicit by im2col" not in src and len(transposes) == 1 and "a view (no kernel)" in transposes[0]
    m = _emulated(g, build_cache, target)
    got = m.run(feeds)[g.outputs[0]]
    if compute == DType.float32:
        np.testing.assert_allclose(got, want_fp32[g.outputs[0]], rtol=2e-4, atol=2e-4)
        return
    assert _cosine(got, want_fp32[g.outputs[0]]) > (0.999 if compute == BF16 else 0.99999)
    assert _cosine(got, want_low[g.outputs[0]]) > 0.99999
    assert not np.array_equal(got, want_fp32[g.outputs[0]])


def test_nchw_layout_stays_available(build_cache, monkeypatch):
    """ACCELC_CUDA_LAYOUT=nchw keeps the im2col + batched GEMM convolutions; both layouts compute the same
    numbers up to summation order."""
    g = resnet(compute=DType.float32)
    feeds = _feeds(g)
    nhwc = _emulated(g, build_cache, "h200").run(feeds)[g.outputs[0]]
    monkeypatch.setenv("ACCELC_CUDA_LAYOUT", "nchw")
    gen = _generate(g, "h200")
    assert gen.channels_last == 0 and "implicit by im2col" in gen.files["accelc_model.cu"]
    nchw = _emulated(g, build_cache, "h200").run(feeds)[g.outputs[0]]
    np.testing.assert_allclose(nhwc, nchw, rtol=1e-5, atol=1e-6)


def test_channels_last_narrowing_gives_the_same_bits(build_cache, monkeypatch):
    """On h200 in fp16 the convolutions read only by an im2col or a 1x1 convolution store fp16 themselves
    (CUTLASS 3, fp32 bias row), as do the MaxPool and the global pooling (read by the classifier): the
    im2col of a 16-bit input is a 16-byte copy. The bits are those of the fp32 stores plus conversion
    kernels."""
    from accelc.backends.cuda import codegen
    g = resnet(compute=FP16)
    feeds = _feeds(g)
    narrowed = _generate(g, "h200")
    src = narrowed.files["accelc_model.cu"]
    assert narrowed.narrowed == 5
    assert "using V = accelc::Vec<__half, 8>;" in src            # the bottleneck's 3x3 im2col copies fp16
    monkeypatch.setattr(codegen, "narrow_gemm_operands", lambda graph, *_: (graph, 0))
    plain = _generate(g, "h200")
    assert plain.kernels > narrowed.kernels
    out = g.outputs[0]
    np.testing.assert_array_equal(_run_generated(narrowed, g, build_cache, feeds)[out],
                                  _run_generated(plain, g, build_cache, feeds)[out])


@pytest.mark.parametrize("mutation", ["taps", "stride"])
def test_a_broken_im2col_is_caught(mutation, build_cache):
    """The check can fail: kernel rows and columns swapped in the dilated 3x3's patches, or the strided
    downsample's rows read without the stride, disagree with the reference."""
    g = resnet(compute=DType.float32)
    feeds = _feeds(g)
    gen = _generate(g, "h200")
    src = gen.files["accelc_model.cu"]
    if mutation == "taps":
        old = "(tap / 3) * 2, w = ow * 1 - 2 + (tap % 3) * 2"
        new = "(tap % 3) * 2, w = ow * 1 - 2 + (tap / 3) * 2"
    else:
        old = "const int h = oh * 2 - 0 + (tap / 1) * 1"
        new = "const int h = oh * 1 - 0 + (tap / 1) * 1"
    assert src.count(old) == 1
    gen.files["accelc_model.cu"] = src.replace(old, new)
    got = _run_generated(gen, g, build_cache, feeds)[g.outputs[0]]
    assert not np.allclose(got, evaluate(g, feeds)[g.outputs[0]], rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("target,compute", [("h200", FP16), ("a100", BF16)])
def test_squeeze_and_excitation_runs_channels_last(target, compute, build_cache):
    """An SE block: the pooled [N, C, 1, 1] feeds 1x1 convolutions on its NHWC twin (GEMMs with M = N), the
    sigmoid gate and a per-channel scale broadcast over the NHWC activations; the only transpose kernel
    writes the result back NCHW."""
    from accelc.ir import Graph, TensorType
    from accelc.ir.ops.conv import ConvAttrs
    from accelc.ir.ops.fused import Activation, FusedConvAttrs
    from test_backend_cuda import _w
    g = Graph("se")
    x = g.add_input("x", TensorType(DType.float32, (2, 8, 9, 9)))

    def conv(inp, cin, cout, k, act):
        attrs = FusedConvAttrs(ConvAttrs(kernel_shape=(k, k), pads=(k // 2,) * 4), Activation(act), compute)
        return g.add_node("FusedConv", [inp, g.add_constant(_w(cout, cin, k, k)), g.add_constant(_w(cout))], attrs)[0]
    a = conv(x, 8, 16, 3, "relu")
    (p,) = g.add_node("GlobalAveragePool", [a])
    s = conv(conv(p, 16, 8, 1, "relu"), 8, 16, 1, "sigmoid")
    (m,) = g.add_node("Mul", [a, s])
    (m,) = g.add_node("Mul", [m, g.add_constant(1 + _w(16, 1, 1))])
    g.outputs = [conv(m, 16, 8, 3, "none")]
    feeds, want_low, want_fp32 = _low_and_fp32(g)
    gen = _generate(g, target)
    src = gen.files["accelc_model.cu"]
    transposes = [line for line in src.splitlines() if "ACCELC_LAUNCH(k_" in line and ("_to_nchw" in line or "_to_nhwc" in line)]
    assert gen.channels_last == 4 and len(transposes) == 1 and "ACCELC_LAUNCH(k_fusedconv" in transposes[0]  # the result
    got = _emulated(g, build_cache, target).run(feeds)[g.outputs[0]]
    assert _cosine(got, want_low[g.outputs[0]]) > 0.99999
    assert _cosine(got, want_fp32[g.outputs[0]]) > 0.999
