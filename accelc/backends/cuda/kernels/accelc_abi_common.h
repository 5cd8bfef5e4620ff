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

// The same function as memory_plan.weights_checksum in Python: 64-bit little-endian words mixed with
// their position.
uint64_t weights_checksum(const unsigned char* p, size_t n) {
  uint64_t h = 0;
  const size_t words = (n + 7) / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w = 0;
    std::memcpy(&w, p + i * 8, i * 8 + 8 <= n ? 8 : n - i * 8);
    h += (w ^ (uint64_t(i) * 0x9E3779B97F4A7C15ull)) * 0xFF51AFD7ED558CCDull;
  }
  return h ^ uint64_t(n);
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
