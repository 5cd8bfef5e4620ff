"""The CPU backend: C++ with AMX / AVX-512 / AVX2 variants, one model.so with a small C ABI."""
from .backend import CpuAmxBackend

__all__ = ["CpuAmxBackend"]
