"""Static memory plan: arena offsets for intermediates and scratch, weights.bin offsets for constants.

Every intermediate value (and every scratch request of a lowering: im2col, run-time packed B, transposed
operands) is a ``Buffer`` with a byte size and a live interval ``[first, last]`` in node steps. Buffers
whose intervals overlap must not overlap in memory; others may share bytes. Placement is greedy by size
(largest first) with best fit: each buffer takes the smallest gap between already placed, overlapping
buffers that holds it (TFLite's "greedy by size" arena planner). All offsets are 64-byte aligned, the
alignment of an AVX-512 register and of a cache line.

Graph inputs and outputs live in caller buffers and are not planned here; constants are appended to
weights.bin by ``WeightsBuilder``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.content import ContentIndex

ALIGN = 64


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass
class Buffer:
    name: str
    nbytes: int
    first: int       # first node step that writes or reads it
    last: int        # last node step that reads it
    offset: int = -1


@dataclass(frozen=True)
class ArenaPlan:
    offsets: dict[str, int]
    arena_bytes: int
    naive_bytes: int      # what one buffer per value would need (for reports)


def plan_arena(buffers: list[Buffer]) -> ArenaPlan:
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-align_up(b.nbytes), b.first, b.name)):
        size = align_up(max(buf.nbytes, 1))
        busy = sorted((p.offset, p.offset + align_up(max(p.nbytes, 1))) for p in placed
                      if p.first <= buf.last and buf.first <= p.last)
        best_offset, best_gap = None, None
        cursor = 0
        for start, end in busy:
            gap = start - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best_offset, best_gap = cursor, gap
            cursor = max(cursor, end)
        buf.offset = best_offset if best_offset is not None else cursor
        placed.append(buf)
    arena = max((b.offset + align_up(max(b.nbytes, 1)) for b in placed), default=0)
    naive = sum(align_up(max(b.nbytes, 1)) for b in buffers)
    return ArenaPlan({b.name: b.offset for b in placed}, arena, naive)


class WeightsBuilder:
    """Appends arrays to weights.bin at 64-byte aligned offsets; identical contents (e.g. a weight shared
    by two layers, repeated index tables) are stored once."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._by_content: ContentIndex[int] = ContentIndex()

    def add(self, array: np.ndarray) -> int:
        known = self._by_content.find(array)
        if known is not None:
            return known
        data = np.ascontiguousarray(array).tobytes()
        offset = align_up(self._size)
        if offset > self._size:
            self._chunks.append(b"\0" * (offset - self._size))
        self._chunks.append(data)
        self._size = offset + len(data)
        self._by_content.add(np.frombuffer(data, dtype=np.uint8), offset)   # a view of the stored bytes
        return offset

    @property
    def nbytes(self) -> int:
        return self._size

    def tobytes(self) -> bytes:
        return b"".join(self._chunks)


def weights_checksum(data: bytes) -> int:
    """Checksum of weights.bin, the same function as weights_checksum() in
    runtime_src/accelc_weights_checksum.h (which every ABI checks at create):
    sum over the little-endian 64-bit words w_i (the last one zero-padded) of (w_i ^ i*K1) * K2, mod 2^64,
    xor the length. Computed in chunks, without copying the weights."""
    n = len(data)
    whole = n // 8
    words = np.frombuffer(memoryview(data)[: whole * 8], dtype="<u8")
    k1, k2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xFF51AFD7ED558CCD)
    chunk = 1 << 20
    steps = np.arange(min(chunk, max(whole, 1)), dtype=np.uint64)
    total = 0
    with np.errstate(over="ignore"):
        for start in range(0, whole, chunk):
            w = words[start:start + chunk]
            idx = steps[: w.size] + np.uint64(start)
            total += int(((w ^ (idx * k1)) * k2).sum(dtype=np.uint64))
        if n % 8:
            tail = np.frombuffer(bytes(data[whole * 8:]) + b"\0" * (8 - n % 8), dtype="<u8")
            total += int(((tail ^ (np.uint64(whole) * k1)) * k2).sum(dtype=np.uint64))
    return ((total & 0xFFFFFFFFFFFFFFFF) ^ n) & 0xFFFFFFFFFFFFFFFF
