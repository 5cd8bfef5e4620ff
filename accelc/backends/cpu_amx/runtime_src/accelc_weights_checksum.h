// accelc: the checksum every model library compares with kAccelcWeightsChecksum when a model is created
// (the CPU ABI accelc_abi.cpp, the CUDA ABI and its host emulation). The same function as
// memory_plan.weights_checksum in Python: 64-bit little-endian words mixed with their position, the
// trailing bytes zero-padded to one word, plus the length.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

inline uint64_t weights_checksum(const unsigned char* p, size_t n) {
  uint64_t h = 0;
  const size_t words = (n + 7) / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w = 0;
    std::memcpy(&w, p + i * 8, i * 8 + 8 <= n ? 8 : n - i * 8);
    h += (w ^ (uint64_t(i) * 0x9E3779B97F4A7C15ull)) * 0xFF51AFD7ED558CCDull;
  }
  return h ^ uint64_t(n);
}
