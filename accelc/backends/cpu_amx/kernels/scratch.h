// Internal: per-thread scratch buffers of the kernels (GEMM operands converted at run time, attention
// score blocks), grown on demand and kept: paying page faults for a fresh allocation on every call
// costs more than the work. Each kernel source declares its own buffers as plain static TLS
// (constant-initialised, no destructor, so no TLS wrapper symbols are emitted):
//   static thread_local ScratchBuffer t_mine = {nullptr, 0};
// Everything here has internal linkage inside ACCELC_NS, so the per-variant copies never meet.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>

namespace ACCELC_NS {
namespace {

struct ScratchBuffer {
  void* data;
  size_t bytes;
};

[[noreturn]] inline void out_of_memory(size_t bytes, const char* what) {
  std::fprintf(stderr, "accelc: out of memory allocating %zu bytes of %s\n", bytes, what);
  std::abort();
}

// At least `bytes` bytes of `b`, 64-byte aligned; `what` names the buffer if memory runs out.
inline void* thread_scratch(ScratchBuffer& b, size_t bytes, const char* what) {
  bytes = (bytes + 63) / 64 * 64 + 64;
  if (bytes > b.bytes) {
    std::free(b.data);
    b.data = std::aligned_alloc(64, bytes);
    b.bytes = b.data ? bytes : 0;
    if (!b.data) out_of_memory(bytes, what);
  }
  return b.data;
}

}  // namespace
}  // namespace ACCELC_NS
