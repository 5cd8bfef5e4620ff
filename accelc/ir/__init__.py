"""The accelc graph IR: types, graph, op registry, reference interpreter, verifier and printer."""
from .dtypes import DType
from .graph import Graph, Node, topological_sort
from .interpreter import evaluate
from .printer import print_graph
from .registry import NoAttrs, OpDef, all_ops, get_op, has_op, register
from .types import Dim, QuantParams, SparseLayout, TensorType
from .verify import verify

__all__ = ["DType", "Graph", "Node", "topological_sort", "evaluate", "print_graph", "NoAttrs", "OpDef",
           "all_ops", "get_op", "has_op", "register", "Dim", "QuantParams", "SparseLayout", "TensorType",
           "verify"]
