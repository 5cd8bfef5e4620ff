// Internal: AMX bf16 tile kernel (amx variant only).
//
// Eight tile registers of at most 16 rows x 64 bytes: a 2x2 block of 16x16 fp32 C tiles (tmm0-3), two A
// tiles of 16 rows x 32 bf16 (tmm4-5) and two B tiles of 16 K-pair rows x 16 columns (tmm6-7) take all
// of them; each loaded A and B tile then feeds two TDPBF16PS. The packed-B layout makes one 32-deep K
// block of a panel exactly one B tile (1 KiB, contiguous, stride 64 bytes).
//
// Tails are handled by padding rather than by reconfiguring tiles (LDTILECFG is slow and zeroes every
// tile): the A buffer is padded with zero rows to a multiple of 16 and zero columns to a multiple of 32,
// B panels are zero padded, and C tiles are stored to a small stack buffer from which the epilogue writes
// only the valid rows and columns.
#pragma once

#include "epilogue.h"

namespace ACCELC_NS {
namespace amx {

// LDTILECFG's 64-byte operand, palette 1.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tile configuration is per-thread state: every OpenMP thread that runs amx::block calls this first
// and tile_release() when done (so that the OS need not save the 8 KiB of tile data on switches).
inline void configure_thread() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}
inline void release_thread() { _tile_release(); }

// Accumulates K blocks [kb0, kb1) of a (16*TM) x (16*TN) block into cbuf (row stride 32 floats, raw
// fp32 sums), starting from zero or, when `accumulate`, from what cbuf holds (an exact round trip, so
// splitting K into chunks does not change any result bit).
// A: bf16 rows at stride lda elements (lda a multiple of 32, rows padded to 16*TM).
// B: panels of 32-deep blocks of 512 elements, consecutive panels `pstride` elements apart.
template <int TM, int TN>
void block(int kb0, int kb1, bool accumulate, const uint16_t* A, int lda, const uint16_t* Bp, size_t pstride,
           float* cbuf) {
  constexpr int ldc = 32 * 4;  // bytes
  const size_t a_stride = static_cast<size_t>(lda) * 2;
  const uint16_t* A1 = A + static_cast<size_t>(16) * lda;
  const uint16_t* B1 = Bp + pstride;
  if (accumulate) {
    _tile_loadd(0, cbuf, ldc);
    if constexpr (TN == 2) _tile_loadd(1, cbuf + 16, ldc);
    if constexpr (TM == 2) _tile_loadd(2, cbuf + 16 * 32, ldc);
    if constexpr (TM == 2 && TN == 2) _tile_loadd(3, cbuf + 16 * 32 + 16, ldc);
  } else {
    _tile_zero(0);
    if constexpr (TN == 2) _tile_zero(1);
    if constexpr (TM == 2) _tile_zero(2);
    if constexpr (TM == 2 && TN == 2) _tile_zero(3);
  }
  for (int kb = kb0; kb < kb1; ++kb) {
    _tile_loadd(4, A + kb * 32, a_stride);
    _tile_loadd(6, Bp + static_cast<size_t>(kb) * 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (TN == 2) {
      _tile_loadd(7, B1 + static_cast<size_t>(kb) * 512, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (TM == 2) {
      _tile_loadd(5, A1 + kb * 32, a_stride);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (TN == 2) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, cbuf, ldc);
  if constexpr (TN == 2) _tile_stored(1, cbuf + 16, ldc);
  if constexpr (TM == 2) _tile_stored(2, cbuf + 16 * 32, ldc);
  if constexpr (TM == 2 && TN == 2) _tile_stored(3, cbuf + 16 * 32 + 16, ldc);
}

}  // namespace amx
}  // namespace ACCELC_NS
