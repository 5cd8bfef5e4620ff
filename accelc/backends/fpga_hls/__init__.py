"""FPGA backend: Vitis HLS C++ projects with a bit-exact NumPy fixed-point model, C-simulated with g++."""
from .backend import FpgaHlsBackend

__all__ = ["FpgaHlsBackend"]
