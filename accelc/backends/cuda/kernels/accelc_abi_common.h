// accelc CUDA backend: what the C ABI of the GPU library (accelc_cuda_abi.cu) and of its host emulation
// (emulation/accelc_cuda_emu_abi.cpp) share: the thread-local error message, the weights checks and the
// run arguments' checks.
// Include it after accelc_model_config.h.
#pragma once
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "accelc_weights_checksum.h"   // cpu_amx/runtime_src, shared with the CPU ABI

struct accelc_model;   // each ABI defines its own

namespace {

thread_local char g_last_error[768] = "";

// Sets accelc_last_error()'s message and returns `code`.
int fail(int code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
int fail(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
  return code;
}

// accelc_create's check of the weights it is given: 0, or the failure code with the message set.
int check_weights(const void* weights, size_t weights_size) {
  if (weights_size != kAccelcWeightsBytes)
    return fail(2, "weights size mismatch: %zu bytes given, the model needs %llu (use the weights.bin built "
                "with this library)", weights_size, (unsigned long long)kAccelcWeightsBytes);
  if (weights_size && !weights) return fail(4, "accelc_create: weights is NULL");
  if (weights_size && weights_checksum(static_cast<const unsigned char*>(weights), weights_size) != kAccelcWeightsChecksum)
    return fail(2, "weights checksum mismatch: weights.bin does not belong to this library or is damaged");
  return 0;
}

// The run entry points' check of their arguments (`fn` names the entry point in the message).
int check_ports(const accelc_model* m, const void* const* inputs, void* const* outputs, const char* fn) {
  if (!m) return fail(4, "%s: model is NULL", fn);
  if ((kAccelcNumInputs && !inputs) || (kAccelcNumOutputs && !outputs))
    return fail(4, "%s: inputs or outputs array is NULL", fn);
  for (int i = 0; i < kAccelcNumInputs; ++i)
    if (!inputs[i] && kAccelcInputBytes[i]) return fail(4, "%s: input %s is NULL", fn, kAccelcInputNames[i]);
  for (int i = 0; i < kAccelcNumOutputs; ++i)
    if (!outputs[i] && kAccelcOutputBytes[i]) return fail(4, "%s: output %s is NULL", fn, kAccelcOutputNames[i]);
  return 0;
}

}  // namespace
