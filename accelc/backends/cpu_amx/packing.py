"""Compile-time packing of constant GEMM weights for the cpu_amx kernels (kernels/accelc_gemm.h).

The byte layouts here are the contract with ``pack_b_f32`` / ``pack_b_bf16`` in
``kernels/accelc_gemm.cpp``: a ``weights.bin`` packed by this module is read by every ISA variant of
the built library without repacking. B is the K x N right-hand operand of ``C = A @ B``.

- f32 panels: columns in panels of 16, N padded to a multiple of 16 with zeros,
  ``Bp[(n // 16) * K * 16 + k * 16 + n % 16] = B[k, n]``. One K row of a panel is one 64-byte vector.
- bf16 VNNI-pair panels: K padded to ``Kp``, a multiple of 32, N to a multiple of 16, both with zeros,
  ``Bp[(n // 16) * (Kp // 2) * 32 + (k // 2) * 32 + (n % 16) * 2 + k % 2] = bf16(B[k, n])``.
  Each 32-deep K block of a panel is exactly one AMX B tile (16 rows of 64 bytes, K pairs per row),
  and one 64-byte row is one ``vdpbf16ps`` operand.

NCHW convolution weights need no packing: ``conv2d_*`` take them as row-major ``[Cout][Cin/groups*R*S]``
(fp32, or bf16 bits from :func:`round_to_bf16`). NHWC convolutions (``conv2d_nhwc_f32``) take them packed
by :func:`pack_conv_nhwc_f32`: per group, the f32 panels of the ``(tap, input channel) x output channel``
matrix; depthwise ones as a dense ``[tap][channel]`` table.
"""
from __future__ import annotations

import numpy as np

PANEL = 16       # columns per packed panel: one AMX C tile / one zmm of fp32
BF16_K_BLOCK = 32  # bf16 K padding: one AMX tile row of bf16 pairs is 32 values deep


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """fp32 values -> bf16 bit patterns (``uint16``), rounded to nearest even.

    NaN stays a quiet NaN of the same sign (rounding its bits could carry into an infinity);
    infinities and overflow to infinity follow IEEE round-to-nearest-even. Bit-identical to
    ``f32_to_bf16`` in ``kernels/simd.h``.
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet_nan = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet_nan, rounded).astype(np.uint16)


def bf16_to_float(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (``uint16``) -> the fp32 values they denote (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _as_k_by_n(b: np.ndarray, trans: bool) -> np.ndarray:
    b = np.asarray(b)
    if b.ndim != 2:
        raise ValueError(f"packing expects a 2-D matrix, got shape {b.shape}")
    return b.T if trans else b


def packed_b_elems_f32(k: int, n: int) -> int:
    """Number of fp32 elements of the f32 packed form of a K x N matrix."""
    return -(-n // PANEL) * PANEL * k


def packed_b_elems_bf16(k: int, n: int) -> int:
    """Number of uint16 elements of the bf16 packed form of a K x N matrix."""
    kp = -(-max(k, 1) // BF16_K_BLOCK) * BF16_K_BLOCK
    return -(-n // PANEL) * PANEL * kp


def pack_b_f32(b: np.ndarray, trans: bool = False) -> np.ndarray:
    """Packs B (K x N, or N x K when ``trans``) into f32 panels of 16 columns (1-D float32 array)."""
    b = _as_k_by_n(b, trans).astype(np.float32, copy=False)
    k, n = b.shape
    panels = -(-n // PANEL)
    padded = np.zeros((k, panels * PANEL), dtype=np.float32)
    padded[:, :n] = b
    # [k, panel, 16] -> [panel, k, 16]
    return np.ascontiguousarray(padded.reshape(k, panels, PANEL).transpose(1, 0, 2)).reshape(-1)


def pack_b_bf16(b: np.ndarray, trans: bool = False) -> np.ndarray:
    """Packs B (K x N, or N x K when ``trans``) into bf16 VNNI-pair panels (1-D uint16 array of bf16 bits)."""
    b = _as_k_by_n(b, trans)
    k, n = b.shape
    kp = -(-max(k, 1) // BF16_K_BLOCK) * BF16_K_BLOCK
    panels = -(-n // PANEL)
    padded = np.zeros((kp, panels * PANEL), dtype=np.uint16)
    padded[:k, :n] = round_to_bf16(b.astype(np.float32, copy=False))
    # [kp/2, 2, panel, 16] -> [panel, kp/2, 16, 2]
    pairs = padded.reshape(kp // 2, 2, panels, PANEL).transpose(2, 0, 3, 1)
    return np.ascontiguousarray(pairs).reshape(-1)


def pack_conv_nhwc_f32(w: np.ndarray, groups: int) -> np.ndarray:
    """ONNX conv weights ``[K][C/groups][R][S]`` in the layout ``conv2d_nhwc_f32`` reads (1-D float32).

    Depthwise (one input and one output channel per group): ``wd[(r*S + s)*K + k] = w[k, 0, r, s]``.
    Otherwise group g holds :func:`pack_b_f32` of ``Wg[(r*S + s)*Cg + c, m] = w[g*Mg + m, c, r, s]``, the
    groups one after the other. Must equal ``pack_conv_nhwc_f32`` in kernels/accelc_conv.cpp.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 4:
        raise ValueError(f"NHWC packing expects [K, C/groups, R, S] weights, got shape {w.shape}")
    k, cg, r, s = w.shape
    if groups < 1 or k % groups:
        raise ValueError(f"{k} output channels do not split into {groups} groups")
    mg = k // groups
    if cg == 1 and mg == 1:
        return np.ascontiguousarray(w.reshape(k, r * s).T).reshape(-1)
    parts = []
    for g in range(groups):
        wg = w[g * mg:(g + 1) * mg]                          # [Mg, Cg, R, S]
        matrix = wg.transpose(2, 3, 1, 0).reshape(r * s * cg, mg)
        parts.append(pack_b_f32(matrix))
    return np.concatenate(parts)


# Winograd F(m x m, 3 x 3) filter transforms G (Lavin & Gray 2015), a = m + 2 rows each.
WINOGRAD_G = {
    2: np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
    4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
}


def winograd_filters(w: np.ndarray, m: int) -> np.ndarray:
    """``U[i, j, c, k] = (G w[k, c] G^T)[i, j]`` for 3x3 weights ``[K][C][3][3]``, computed in float64
    and rounded once to float32: shape ``[m+2, m+2, C, K]``."""
    w = np.asarray(w)
    if m not in WINOGRAD_G:
        raise ValueError(f"Winograd tile size {m} is not one of {sorted(WINOGRAD_G)}")
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise ValueError(f"Winograd filters need 3x3 weights [K, C, 3, 3], got shape {w.shape}")
    g = WINOGRAD_G[m]
    u = np.einsum("ir,kcrs,js->ijck", g, w.astype(np.float64), g, optimize=True)
    return u.astype(np.float32)


def pack_winograd_f32(w: np.ndarray, m: int) -> np.ndarray:
    """3x3 weights ``[K][C][3][3]`` in the layout ``conv2d_winograd_nhwc_f32`` reads (1-D float32): the
    ``(m+2)^2`` transformed filters ``U[pos]`` (``pos = i*(m+2) + j``, each ``[C][K]``) packed by
    :func:`pack_b_f32`, one after the other."""
    u = winograd_filters(w, m)
    a = m + 2
    return np.concatenate([pack_b_f32(u[i, j]) for i in range(a) for j in range(a)])
