// accelc CUDA emulation: the C ABI of a model library (version 1, include/accelc_model.h) over host memory,
// for the generated CUDA code built with g++ against accelc_cuda_emulation.h. A model owns a copy of the
// weights and one arena of kAccelcArenaBytes, the same plan as on the GPU. Each run starts with the arena
// filled with 0xFF bytes (NaN for every float type): a kernel that reads bytes nothing of this run wrote
// yet, or an output nothing wrote, shows NaN instead of passing with a previous run's values. There is no accelc_run_device: the emulation has no GPU memory.
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "accelc_cuda_emulation.h"
#include "accelc_model_config.h"
#include "accelc_abi_common.h"

#define ACCELC_EXPORT extern "C" __attribute__((visibility("default")))

namespace accelc_generated {
cudaError_t forward(unsigned char* arena, const unsigned char* weights, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream);
size_t gemm_workspace_bytes();
extern const char* g_failed_node;
}

namespace {

unsigned char* allocate(size_t n) {
  void* p = nullptr;
  return posix_memalign(&p, 256, n ? n : 256) == 0 ? static_cast<unsigned char*>(p) : nullptr;
}

}  // namespace

struct accelc_model {
  unsigned char* weights;
  unsigned char* arena;
  unsigned char* workspace;   // the GEMMs' scratch, as sized by the stand-ins (accelc_emu_gemm.h)
  size_t workspace_bytes;
};

ACCELC_EXPORT int accelc_abi_version(void) { return 1; }
ACCELC_EXPORT const char* accelc_signature_json(void) { return kAccelcSignatureJson; }
ACCELC_EXPORT const char* accelc_variants(void) { return kAccelcArchList; }
// "sm_90a (host emulation)": what the library computes like, and that it is not the GPU build
static const char* variant_name() {
  static char name[96] = "";
  if (!name[0]) std::snprintf(name, sizeof name, "%s (host emulation)", kAccelcArchs[0].name);
  return name;
}

ACCELC_EXPORT const char* accelc_select_variant(void) { return variant_name(); }
ACCELC_EXPORT const char* accelc_last_error(void) { return g_last_error; }
ACCELC_EXPORT const char* accelc_model_variant(const accelc_model* m) { return m ? variant_name() : nullptr; }

ACCELC_EXPORT void accelc_destroy(accelc_model* m) {
  if (!m) return;
  std::free(m->weights);
  std::free(m->arena);
  std::free(m->workspace);
  delete m;
}

ACCELC_EXPORT int accelc_create(const void* weights, size_t weights_size, int, accelc_model** out) {
  if (!out) return fail(4, "accelc_create: out is NULL");
  *out = nullptr;
  if (int rc = check_weights(weights, weights_size)) return rc;
  const size_t ws = accelc_generated::gemm_workspace_bytes();
  accelc_model* m = new (std::nothrow) accelc_model{allocate(weights_size), allocate(kAccelcArenaBytes),
                                                    ws ? allocate(ws) : nullptr, ws};
  if (!m || !m->weights || !m->arena || (ws && !m->workspace)) {
    accelc_destroy(m);
    return fail(3, "out of host memory for the emulated model (%llu bytes of weights, %llu of arena)",
                (unsigned long long)weights_size, (unsigned long long)kAccelcArenaBytes);
  }
  if (weights_size) std::memcpy(m->weights, weights, weights_size);
  *out = m;
  return 0;
}

ACCELC_EXPORT int accelc_run(accelc_model* m, const void* const* inputs, void* const* outputs) {
  if (int rc = check_ports(m, inputs, outputs, "accelc_run")) return rc;
  std::memset(m->arena, 0xFF, kAccelcArenaBytes);
  for (int i = 0; i < kAccelcNumInputs; ++i)
    if (kAccelcInputBytes[i]) std::memcpy(m->arena + kAccelcInputOffsets[i], inputs[i], kAccelcInputBytes[i]);
  cudaGetLastError();
  accelc_emu::g_message[0] = '\0';
  const cudaError_t e = accelc_generated::forward(m->arena, m->weights, m->workspace, m->workspace_bytes, nullptr);
  if (e != cudaSuccess)
    return fail(5, "running the model failed at %s: %s (%s)", accelc_generated::g_failed_node, cudaGetErrorString(e),
                accelc_emu::g_message);
  for (int i = 0; i < kAccelcNumOutputs; ++i)
    if (kAccelcOutputBytes[i]) std::memcpy(outputs[i], m->arena + kAccelcOutputOffsets[i], kAccelcOutputBytes[i]);
  return 0;
}
