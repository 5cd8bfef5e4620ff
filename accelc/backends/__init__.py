"""Backends lower an optimized graph to a built artifact for one family of targets."""
from .base import Backend, BackendOptions, CompiledParts, get_backend

__all__ = ["Backend", "BackendOptions", "CompiledParts", "get_backend"]
