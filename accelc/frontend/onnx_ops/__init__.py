"""ONNX op handlers, one module per op family; importing this package fills the handler table.

See ``registry.py`` for how handlers are keyed and chosen, and docs/INTERNALS.md for the handler API.
"""
from . import conv, elementwise, indexing, linalg, normalization, reduce, shape  # noqa: F401
from .registry import (ConvertContext, Handler, find_handler, get_attr, oldest_handler_since, onnx_op,
                       supported_ops)

__all__ = ["ConvertContext", "Handler", "find_handler", "get_attr", "oldest_handler_since", "onnx_op",
           "supported_ops"]
