// accelc CUDA runtime: the C ABI of a built model library (ABI version 1, see include/accelc_model.h).
//
// The same entry points as the CPU library, so the generic runtime loads either; `variants` are the
// SM architectures compiled into the fatbin instead of ISA variants. The library links cudart
// statically and needs only the NVIDIA driver. A model owns: the weights (uploaded once), ONE device
// arena planned at compile time (graph inputs, outputs, intermediates and kernel scratch at fixed
// offsets), an internal stream (accelc_run's stream, and the stream the CUDA graph is captured on), an
// event that orders consecutive runs of the model, and a CUDA graph of the whole forward captured at the
// second run and replayed afterwards (the first run executes eagerly so that errors are reported at their
// kernel). Nothing is global: every model has its own arena, stream, event and graph, so several models
// (of one library or of different libraries) live in one process.
//
// Stream contract of accelc_run_device (like a cuBLAS call on a user stream): every piece of work of the
// call (input copies into the arena, the kernels or the graph launch, output copies) is enqueued on the
// caller's stream (NULL: the legacy default stream) and the call returns without synchronising. The graph
// is CAPTURED on the internal stream (capture is impossible on the legacy stream) but LAUNCHED on the
// caller's stream. A run first waits (cudaStreamWaitEvent, on the device) for the previous run of the
// same model, whatever stream that ran on, because both use the one arena.
//
// Return codes: 0 ok, 1 no usable GPU / the GPU cannot run this fatbin, 2 weights mismatch, 3 out of
// memory, 4 invalid argument, 5 a CUDA error while running (message names it).
#include <cuda_runtime.h>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>

#include "accelc_model_config.h"
#include "accelc_abi_common.h"

#define ACCELC_EXPORT extern "C" __attribute__((visibility("default")))

namespace accelc_generated {
// Generated (accelc_model.cu): launches every kernel of the forward on `stream`.
cudaError_t forward(unsigned char* arena, const unsigned char* weights, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream);
// Generated: the bytes of device workspace the model's GEMMs need on the current GPU.
size_t gemm_workspace_bytes();
extern const char* g_failed_node;   // the node whose kernel or GEMM failed last
}

namespace {

// Compiled with the model's -gencode list: whether the device can load it tells us whether the fatbin
// holds SASS or PTX this GPU runs.
__global__ void accelc_probe_kernel(int* p) { if (p) *p = 1; }

// The architecture of the fatbin this device runs, or nullptr with `why` filled in.
const char* pick_arch(int device, char* why, size_t cap) {
  cudaDeviceProp prop;
  cudaError_t e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) {
    std::snprintf(why, cap, "cannot query GPU %d: %s", device, cudaGetErrorString(e));
    return nullptr;
  }
  const int cc = prop.major * 10 + prop.minor;
  for (int i = 0; i < kAccelcNumArchs; ++i) {
    const AccelcArch& a = kAccelcArchs[i];
    if (a.exact ? cc == a.cc : cc >= a.cc) return a.name;
  }
  std::snprintf(why, cap, "GPU %d (%s) has compute capability %d.%d, the model was built for %s; recompile "
                "for a target matching this GPU", device, prop.name, prop.major, prop.minor, kAccelcArchList);
  return nullptr;
}

}  // namespace

struct accelc_model {
  const char* arch;
  int device;
  unsigned char* weights;      // device
  unsigned char* arena;        // device
  void* workspace;             // device: the GEMMs' scratch (stream-K partial sums), sized on this GPU at create
  size_t workspace_bytes;
  cudaStream_t stream;         // internal: accelc_run's stream and the graph-capture stream
  cudaEvent_t done;            // recorded on the run's stream after each run (orders the next run)
  bool pending;                // `done` has been recorded at least once
  cudaGraphExec_t graph;
  long long runs;
};

namespace {

// Makes the model's GPU current for the duration of a call and restores the caller's device afterwards.
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&prev) != cudaSuccess) { cudaGetLastError(); prev = -1; }
    if (prev != device) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    int now = -1;
    if (prev >= 0 && cudaGetDevice(&now) == cudaSuccess && now != prev) cudaSetDevice(prev);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

}  // namespace

ACCELC_EXPORT int accelc_abi_version(void) { return 1; }
ACCELC_EXPORT const char* accelc_signature_json(void) { return kAccelcSignatureJson; }
ACCELC_EXPORT const char* accelc_variants(void) { return kAccelcArchList; }
ACCELC_EXPORT const char* accelc_last_error(void) { return g_last_error; }
ACCELC_EXPORT const char* accelc_model_variant(const accelc_model* m) { return m ? m->arch : nullptr; }

ACCELC_EXPORT const char* accelc_select_variant(void) {
  int count = 0, device = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) { cudaGetLastError(); return nullptr; }
  if (cudaGetDevice(&device) != cudaSuccess) return nullptr;
  char why[256];
  return pick_arch(device, why, sizeof why);
}

// Waits for the model's last run (on whatever stream it was enqueued), then frees everything it owns.
ACCELC_EXPORT void accelc_destroy(accelc_model* m) {
  if (!m) return;
  DeviceGuard guard(m->device);
  if (m->done && m->pending) cudaEventSynchronize(m->done);
  if (m->graph) cudaGraphExecDestroy(m->graph);
  if (m->done) cudaEventDestroy(m->done);
  if (m->stream) cudaStreamDestroy(m->stream);
  if (m->weights) cudaFree(m->weights);
  if (m->arena) cudaFree(m->arena);
  if (m->workspace) cudaFree(m->workspace);
  cudaGetLastError();   // leave no sticky-looking error behind for the caller's next CUDA call
  delete m;
}

ACCELC_EXPORT int accelc_create(const void* weights, size_t weights_size, int /*num_threads: unused on GPU*/,
                                accelc_model** out) {
  if (!out) return fail(4, "accelc_create: out is NULL");
  *out = nullptr;
  if (int rc = check_weights(weights, weights_size)) return rc;

  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return fail(1, "no CUDA GPU is visible (%s); this artifact needs an NVIDIA GPU (%s) and its driver",
                e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0", kAccelcArchList);
  }
  int device = 0;
  cudaGetDevice(&device);
  char why[320];
  const char* arch = pick_arch(device, why, sizeof why);
  if (!arch) return fail(1, "%s", why);
  cudaFuncAttributes attr;
  e = cudaFuncGetAttributes(&attr, accelc_probe_kernel);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return fail(1, "this GPU cannot load the model's code (%s); it was built for %s, recompile for this GPU",
                cudaGetErrorString(e), kAccelcArchList);
  }

  accelc_model* m = new (std::nothrow) accelc_model{arch, device, nullptr, nullptr, nullptr, 0, nullptr, nullptr, false, nullptr, 0};
  if (!m) return fail(3, "out of host memory allocating the model");
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  m->workspace_bytes = accelc_generated::gemm_workspace_bytes();
  if ((e = cudaMalloc(&m->weights, weights_size ? weights_size : 256)) != cudaSuccess ||
      (e = cudaMalloc(&m->arena, kAccelcArenaBytes ? kAccelcArenaBytes : 256)) != cudaSuccess ||
      (m->workspace_bytes && (e = cudaMalloc(&m->workspace, m->workspace_bytes)) != cudaSuccess)) {
    cudaGetLastError();
    accelc_destroy(m);
    return fail(3, "out of GPU memory: the model needs %llu bytes of weights, %llu bytes of activations and %zu "
                "bytes of GEMM workspace, %zu of %zu bytes are free (%s)", (unsigned long long)weights_size,
                (unsigned long long)kAccelcArenaBytes, m->workspace_bytes, free_b, total_b, cudaGetErrorString(e));
  }
  if ((e = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) != cudaSuccess ||
      (e = cudaEventCreateWithFlags(&m->done, cudaEventDisableTiming)) != cudaSuccess ||
      (weights_size && (e = cudaMemcpy(m->weights, weights, weights_size, cudaMemcpyHostToDevice)) != cudaSuccess)) {
    accelc_destroy(m);
    return fail(5, "cannot set up the model on the GPU: %s", cudaGetErrorString(e));
  }
  *out = m;
  return 0;
}

namespace {

// Captures the forward into m->graph, on the model's internal stream: capture is impossible on the legacy
// default stream and would disturb a caller's stream, so it never happens on the stream the run is for.
// Capturing executes nothing.
int capture(accelc_model* m) {
  cudaGraph_t g = nullptr;
  cudaError_t e = cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) return fail(5, "cannot capture the CUDA graph: %s", cudaGetErrorString(e));
  cudaError_t fe = accelc_generated::forward(m->arena, m->weights, m->workspace, m->workspace_bytes, m->stream);
  e = cudaStreamEndCapture(m->stream, &g);
  if (fe != cudaSuccess || e != cudaSuccess) {
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    return fail(5, "capturing the CUDA graph failed at %s: %s", fe != cudaSuccess ? accelc_generated::g_failed_node : "end of capture",
                cudaGetErrorString(fe != cudaSuccess ? fe : e));
  }
  e = cudaGraphInstantiate(&m->graph, g, 0);
  cudaGraphDestroy(g);
  if (e != cudaSuccess) {
    m->graph = nullptr;
    return fail(5, "cannot instantiate the CUDA graph: %s", cudaGetErrorString(e));
  }
  return 0;
}

// Enqueues the forward on `stream`: eagerly the first time, then by launching the CUDA graph on it.
int forward(accelc_model* m, cudaStream_t stream) {
  cudaError_t e;
  if (m->runs++ == 0 || kAccelcDisableGraph) {
    e = accelc_generated::forward(m->arena, m->weights, m->workspace, m->workspace_bytes, stream);
    if (e != cudaSuccess)
      return fail(5, "running the model failed at %s: %s", accelc_generated::g_failed_node, cudaGetErrorString(e));
    return 0;
  }
  if (!m->graph) {
    int rc = capture(m);
    if (rc) return rc;
  }
  if ((e = cudaGraphLaunch(m->graph, stream)) != cudaSuccess)
    return fail(5, "launching the CUDA graph failed: %s", cudaGetErrorString(e));
  return 0;
}

// Whether `s` is being captured by the caller (then cross-run event ordering is left to the caller's graph).
bool capturing(cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &st) != cudaSuccess) { cudaGetLastError(); return false; }
  return st != cudaStreamCaptureStatusNone;
}

// accelc_run_device's buffers must be GPU memory of the model's device (or managed memory): a host
// pointer or another GPU's memory would fail inside a copy, far from its cause, or read the wrong data.
int check_device_pointers(const accelc_model* m, const void* const* ptrs, int n, const size_t* bytes,
                          const char* const* names, const char* role) {
  for (int i = 0; i < n; ++i) {
    if (!bytes[i]) continue;
    cudaPointerAttributes attr;
    cudaError_t e = cudaPointerGetAttributes(&attr, ptrs[i]);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return fail(4, "accelc_run_device: %s %s is not a CUDA pointer (%s)", role, names[i], cudaGetErrorString(e));
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
      return fail(4, "accelc_run_device: %s %s is host memory; pass device pointers of GPU %d, or call accelc_run "
                  "with host buffers", role, names[i], m->device);
    if (attr.type == cudaMemoryTypeDevice && attr.device != m->device)
      return fail(4, "accelc_run_device: %s %s is on GPU %d, the model runs on GPU %d", role, names[i], attr.device,
                  m->device);
  }
  return 0;
}

int copy_io(accelc_model* m, const void* const* inputs, void* const* outputs, cudaStream_t s, bool device) {
  cudaError_t e = cudaSuccess;
  const cudaMemcpyKind in_kind = device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
  const cudaMemcpyKind out_kind = device ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost;
  if (inputs) {
    for (int i = 0; i < kAccelcNumInputs && e == cudaSuccess; ++i)
      if (kAccelcInputBytes[i])
        e = cudaMemcpyAsync(m->arena + kAccelcInputOffsets[i], inputs[i], kAccelcInputBytes[i], in_kind, s);
    if (e != cudaSuccess) return fail(5, "copying the inputs to the GPU failed: %s", cudaGetErrorString(e));
    return 0;
  }
  for (int i = 0; i < kAccelcNumOutputs && e == cudaSuccess; ++i)
    if (kAccelcOutputBytes[i])
      e = cudaMemcpyAsync(outputs[i], m->arena + kAccelcOutputOffsets[i], kAccelcOutputBytes[i], out_kind, s);
  if (e != cudaSuccess) return fail(5, "copying the outputs from the GPU failed: %s", cudaGetErrorString(e));
  return 0;
}

// Enqueues one whole run on `s`: wait for the model's previous run, inputs in, forward, outputs out, and
// the `done` record. Never synchronises.
int enqueue(accelc_model* m, const void* const* inputs, void* const* outputs, cudaStream_t s, bool device) {
  const bool cap = capturing(s);
  cudaError_t e;
  if (m->pending && !cap && (e = cudaStreamWaitEvent(s, m->done, 0)) != cudaSuccess)
    return fail(5, "cannot order the run after the model's previous run: %s", cudaGetErrorString(e));
  int rc;
  if ((rc = copy_io(m, inputs, nullptr, s, device)) || (rc = forward(m, s)) ||
      (rc = copy_io(m, nullptr, outputs, s, device)))
    return rc;
  if (!cap) {
    if ((e = cudaEventRecord(m->done, s)) != cudaSuccess)
      return fail(5, "cannot record the end of the run: %s", cudaGetErrorString(e));
    m->pending = true;
  }
  return 0;
}

}  // namespace

// Host buffers in, host buffers out; runs on the model's internal stream and returns when the outputs are
// written.
ACCELC_EXPORT int accelc_run(accelc_model* m, const void* const* inputs, void* const* outputs) {
  int rc = check_ports(m, inputs, outputs, "accelc_run");
  if (rc) return rc;
  DeviceGuard guard(m->device);
  if ((rc = enqueue(m, inputs, outputs, m->stream, false))) return rc;
  cudaError_t e = cudaStreamSynchronize(m->stream);
  if (e != cudaSuccess) return fail(5, "running the model failed: %s", cudaGetErrorString(e));
  return 0;
}

// Device buffers in and out (e.g. from DLPack). Everything is enqueued on `stream` (a cudaStream_t; NULL is
// the legacy default stream, as everywhere in CUDA) and the call returns without waiting: the outputs are
// ready when that stream reaches this point. The inputs are copied device-to-device into the model's arena
// and the outputs out of it, so the captured CUDA graph stays valid whatever pointers the caller passes.
ACCELC_EXPORT int accelc_run_device(accelc_model* m, const void* const* d_inputs, void* const* d_outputs,
                                    void* stream) {
  int rc = check_ports(m, d_inputs, d_outputs, "accelc_run_device");
  if (rc) return rc;
  DeviceGuard guard(m->device);
  if ((rc = check_device_pointers(m, d_inputs, kAccelcNumInputs, kAccelcInputBytes, kAccelcInputNames, "input")) ||
      (rc = check_device_pointers(m, d_outputs, kAccelcNumOutputs, kAccelcOutputBytes, kAccelcOutputNames, "output")))
    return rc;
  return enqueue(m, d_inputs, d_outputs, static_cast<cudaStream_t>(stream), true);
}

// The CUDA device the model lives on (its weights and arena), -1 for NULL.
ACCELC_EXPORT int accelc_model_device(const accelc_model* m) { return m ? m->device : -1; }
