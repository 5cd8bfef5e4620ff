"""The ONNX handler table and the context handlers translate with.

A handler turns one ONNX node into IR nodes. Handlers are keyed by ``(domain, op_type, since)``; for a
model whose opset for that domain is ``v`` the handler with the largest ``since <= v`` translates the
node, so a change of meaning between opsets (Softmax's 2-D coercion before 13, Slice's attributes
before 10) is a second handler rather than an ``if opset`` buried in one.

A handler may also declare ``check(node, opset) -> reason | None``. The loader runs every check over
the whole model *before* translating anything, so that a model with three problems reports all three at
once (in one ``UnsupportedOpError``) instead of one per attempt. Checks only see the node itself
(attributes, which outputs are used); problems that depend on values (an axes input that is not a
constant) are raised during translation by ``ConvertContext.const_value``.

The table is filled at import of ``accelc.frontend.onnx_ops`` and never changes afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ShapeError, UnsupportedOpError, VerificationError
from ...ir.dtypes import DType
from ...ir.graph import Graph
from ...ir.types import TensorType

HandlerFn = Callable[["ConvertContext", onnx.NodeProto], Sequence[str]]
CheckFn = Callable[[onnx.NodeProto, int], "str | None"]

DEFAULT_DOMAIN = ""


def canonical_domain(domain: str) -> str:
    """``ai.onnx`` and the empty string are the same (default) domain."""
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


@dataclass(frozen=True)
class Handler:
    op_type: str
    domain: str
    since: int
    fn: HandlerFn
    check: CheckFn | None = None


_HANDLERS: dict[tuple[str, str], list[Handler]] = {}


def onnx_op(op_type: str, since: int, *, domain: str = DEFAULT_DOMAIN,
            check: CheckFn | None = None) -> Callable[[HandlerFn], HandlerFn]:
    """Registers the decorated function as the handler of ``op_type`` for opsets ``>= since``."""
    def register(fn: HandlerFn) -> HandlerFn:
        key = (canonical_domain(domain), op_type)
        entries = _HANDLERS.setdefault(key, [])
        if any(h.since == since for h in entries):
            raise RuntimeError(f"ONNX handler {op_type} since {since} is registered twice")
        entries.append(Handler(op_type, key[0], since, fn, check))
        entries.sort(key=lambda h: h.since)
        return fn
    return register


def find_handler(domain: str, op_type: str, opset: int) -> Handler | None:
    """The newest handler whose ``since`` is at most ``opset``, or None."""
    best = None
    for h in _HANDLERS.get((canonical_domain(domain), op_type), ()):
        if h.since <= opset:
            best = h
    return best


def oldest_handler_since(domain: str, op_type: str) -> int | None:
    entries = _HANDLERS.get((canonical_domain(domain), op_type))
    return entries[0].since if entries else None


def supported_ops() -> dict[str, list[int]]:
    """``op_type -> [since, ...]`` for the default domain (documentation and the CLI's op list)."""
    return {op: [h.since for h in hs] for (dom, op), hs in sorted(_HANDLERS.items()) if dom == DEFAULT_DOMAIN}


# ---- ONNX attribute and dtype helpers ---------------------------------------------------------------
_MISSING = object()


def get_attr(node: onnx.NodeProto, name: str, default: Any = _MISSING) -> Any:
    """The value of attribute ``name`` as plain Python: ints, floats, ``str`` (not bytes), tuples (not
    lists), ``np.ndarray`` for tensors. Raises ``UnsupportedOpError`` when it is absent and has no default."""
    for a in node.attribute:
        if a.name == name:
            if a.ref_attr_name:
                raise UnsupportedOpError(f"{describe(node)}: attribute '{name}' refers to a function "
                                         f"attribute; accelc translates graphs, not function bodies",
                                         [(node.name, node.op_type)])
            return _plain(helper.get_attribute_value(a))
    if default is _MISSING:
        raise UnsupportedOpError(f"{describe(node)}: required attribute '{name}' is missing; the model is "
                                 f"malformed (re-export it)", [(node.name, node.op_type)])
    return default


def has_attr(node: onnx.NodeProto, name: str) -> bool:
    return any(a.name == name for a in node.attribute)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def describe(node: onnx.NodeProto) -> str:
    """``Conv 'conv1'`` — how error messages name a node."""
    return f"{node.op_type} '{node.name}'"


_ONNX_TO_DTYPE: dict[int, DType] = {
    onnx.TensorProto.FLOAT: DType.float32,
    onnx.TensorProto.FLOAT16: DType.float16,
    onnx.TensorProto.BFLOAT16: DType.bfloat16,
    onnx.TensorProto.FLOAT8E4M3FN: DType.float8_e4m3fn,
    onnx.TensorProto.FLOAT8E5M2: DType.float8_e5m2,
    onnx.TensorProto.INT4: DType.int4,
    onnx.TensorProto.UINT4: DType.uint4,
    onnx.TensorProto.INT8: DType.int8,
    onnx.TensorProto.UINT8: DType.uint8,
    onnx.TensorProto.INT16: DType.int16,
    onnx.TensorProto.INT32: DType.int32,
    onnx.TensorProto.INT64: DType.int64,
    onnx.TensorProto.BOOL: DType.bool,
    onnx.TensorProto.DOUBLE: DType.float64,
}


def dtype_from_onnx(elem_type: int) -> DType | None:
    """The IR dtype of an ONNX ``TensorProto.DataType``, or None when the IR has no equivalent."""
    return _ONNX_TO_DTYPE.get(elem_type)


def onnx_dtype_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"data type {elem_type}"


# Inputs that IR ops read at compile time when they are constants (their infer uses ``consts[i]``).
COMPILE_TIME_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Slice": (1, 2, 3, 4), "Expand": (1,), "Tile": (1,), "Range": (0, 1, 2),
    "ConstantOfShape": (0,), "OneHot": (1,), "Trilu": (1,), "Clip": (1, 2),
}


# ---- the conversion context --------------------------------------------------------------------------
class ConvertContext:
    """What a handler sees: the IR graph being built, the model's opset, and helpers to read the node.

    Handlers never touch ``graph`` directly; ``emit`` names nodes and values so that IR names stay the
    ONNX names (the loader renames a handler's final values to the node's ONNX output names) and fresh
    names never collide with an ONNX name that appears later in the model.
    """

    def __init__(self, graph: Graph, opsets: dict[str, int], reserved: set[str], *,
                 base_dir: str | None = None, model_label: str = "model"):
        self.graph = graph
        self.opsets = opsets
        self.base_dir = base_dir
        self.model_label = model_label
        self._reserved = reserved
        self._counter = 0
        self.node: onnx.NodeProto | None = None
        self.node_name = ""
        self._emitted = 0
        self._created: set[str] = set()
        self._resolved: dict[str, str] = {}
        self._producer: dict[str, int] = {}
        self._runtime: set[str] = set(graph.inputs)

    @property
    def opset(self) -> int:
        """The opset of the current node's domain."""
        assert self.node is not None
        return self.opsets.get(canonical_domain(self.node.domain), 0)

    # -- naming
    def fresh(self, base: str) -> str:
        while True:
            self._counter += 1
            name = f"{base}__{self._counter}"
            if name not in self._reserved and name not in self.graph.types:
                self._reserved.add(name)
                self._created.add(name)
                return name

    def begin(self, node: onnx.NodeProto, node_name: str) -> None:
        self.node = node
        self.node_name = node_name
        self._emitted = 0
        self._created = set()

    def created_since_begin(self) -> set[str]:
        """Values the current handler made (the loader may rename them to the ONNX output names)."""
        return set(self._created)

    # -- reading the node
    def attr(self, node: onnx.NodeProto, name: str, default: Any = _MISSING) -> Any:
        return get_attr(node, name, default)

    def input(self, node: onnx.NodeProto, index: int) -> str:
        """The name of input ``index``, or "" when it is omitted (absent or empty)."""
        return node.input[index] if index < len(node.input) else ""

    def inputs(self, node: onnx.NodeProto) -> list[str]:
        return list(node.input)

    def input_type(self, name: str) -> TensorType:
        return self.graph.types[name]

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.graph.constants

    def const_value(self, name: str, what: str = "") -> np.ndarray:
        """The value of a constant input; a clear error when the model computes it at run time.

        A value the model computes only from constants (TorchScript exports spell ``head_dim`` as
        ``Mod(Constant, Constant)``) is a compile-time value too, and is evaluated (see ``resolve``)."""
        resolved = self.resolve(name) if name else None
        if resolved is not None:
            return self.graph.constants[resolved]
        node = self.node
        label = describe(node) if node is not None else "a node"
        what = what or f"input '{name}'"
        raise UnsupportedOpError(
            f"{label}: {what} must be a compile-time constant (an initializer or Constant), but the model "
            f"computes it at run time; fix the input shapes with shapes={{...}} / --shape and constant-fold "
            f"the model (e.g. onnxsim), or export with static shapes",
            [(self.node_name, node.op_type)] if node is not None else [])

    # values computed only from constants and at most this many elements are resolved on demand
    RESOLVE_MAX_ELEMENTS = 4096

    def resolve(self, name: str) -> str | None:
        """A constant holding the value of ``name`` when it is a compile-time value, else None.

        A compile-time value is computed only from constants and from ``Shape``/``Size`` of tensors whose
        shape is static. It is resolved only where the IR *reads* a value at compile time (an axes input,
        a Reshape shape, Slice bounds): the nodes that compute it stay in the graph untouched and the
        consumer reads a constant copy of their result. This resolves compile-time values; folding in
        general is left to passes.
        """
        if name in self.graph.constants:
            return name
        if name in self._resolved:
            return self._resolved[name]
        if name in self._runtime or name not in self._producer:
            return None
        producer = self.graph.nodes[self._producer[name]]
        if producer.op in ("Shape", "Size"):
            args = [np.broadcast_to(np.zeros((), np.bool_), self.graph.types[producer.inputs[0]].shape)]
        else:
            args = []
            for i in producer.inputs:
                c = self.resolve(i) if i else None
                if i and c is None:
                    return None
                args.append(self.graph.constants[c] if c else None)
        from ...ir.registry import get_op
        try:
            results = get_op(producer.op).reference(args, producer.attrs)
        except Exception:  # noqa: BLE001 - a value we cannot evaluate simply stays a run-time value
            return None
        for out, value in zip(producer.outputs, results):
            value = np.asarray(value).astype(self.graph.types[out].dtype.np)
            if value.size <= self.RESOLVE_MAX_ELEMENTS:
                self._resolved[out] = self.graph.add_constant(value, self.fresh(f"{out}__value"))
        return self._resolved.get(name)

    def index_nodes(self, start: int) -> None:
        """Records producers of ``graph.nodes[start:]`` and which of their outputs are run-time values."""
        for k in range(start, len(self.graph.nodes)):
            n = self.graph.nodes[k]
            if n.op in ("Shape", "Size") and self.graph.types[n.inputs[0]].is_static:
                runtime = False
            else:
                runtime = any(i in self._runtime for i in n.inputs if i)
            for o in n.outputs:
                self._producer[o] = k
                if runtime:
                    self._runtime.add(o)

    def const_ints(self, name: str, what: str = "") -> tuple[int, ...]:
        return tuple(int(v) for v in np.asarray(self.const_value(name, what)).reshape(-1))

    def fail(self, message: str) -> UnsupportedOpError:
        """An ``UnsupportedOpError`` about the current node (the handler raises it)."""
        node = self.node
        assert node is not None
        return UnsupportedOpError(f"{describe(node)}: {message}", [(self.node_name, node.op_type)])

    # -- building
    def const(self, value: Any, dtype: Any = None, base: str = "const") -> str:
        """Adds a constant (a helper value the handler needs, e.g. Clip bounds from old attributes)."""
        array = np.asarray(value, dtype=dtype)
        return self.graph.add_constant(array, self.fresh(f"{self.node_name}/{base}"))

    def tensor_array(self, tensor: onnx.TensorProto) -> np.ndarray:
        """A tensor attribute's value, reading external data relative to the model like initializers."""
        from ..onnx import tensor_to_array
        return tensor_to_array(tensor, self.base_dir, self.model_label)

    def emit(self, op: str, inputs: Sequence[str], attrs: Any = None) -> list[str]:
        """Adds one IR node and returns its output names (fresh; the loader renames the final ones).

        Inputs the IR reads at compile time (``COMPILE_TIME_INPUTS``) are resolved to constants when the
        model computes them from constants only; when the IR still cannot type the node, every input is
        tried that way once more before the error is reported."""
        inputs = list(inputs)
        for k in COMPILE_TIME_INPUTS.get(op, ()):
            if k < len(inputs) and inputs[k] and inputs[k] not in self.graph.constants:
                inputs[k] = self.resolve(inputs[k]) or inputs[k]
        try:
            return self._emit(op, inputs, attrs)
        except ShapeError as first:
            resolved = [(self.resolve(i) or i) if i and i not in self.graph.constants else i for i in inputs]
            if resolved == inputs:
                raise
            try:
                return self._emit(op, resolved, attrs)
            except ShapeError:
                raise first from None

    def _emit(self, op: str, inputs: Sequence[str], attrs: Any) -> list[str]:
        from ...ir.registry import get_op, infer_types
        name = self.node_name if self._emitted == 0 else f"{self.node_name}/{op}_{self._emitted}"
        try:
            opdef = get_op(op)
            if attrs is None:
                attrs = opdef.attrs()
            # type inference first (it decides how many outputs there are), then fresh names
            in_types = [self.graph.types[i] if i else None for i in inputs]
            consts = [self.graph.constants.get(i) if i else None for i in inputs]
            n_out = len(infer_types(opdef, in_types, attrs, consts))
            outputs = [self.fresh(f"{self.node_name}/{op}") for _ in range(n_out)]
            start = len(self.graph.nodes)
            result = self.graph.add_node(op, list(inputs), attrs, name=name, outputs=outputs)
            self.index_nodes(start)
        except (ShapeError, VerificationError) as e:
            node = self.node
            label = describe(node) if node is not None else op
            raise type(e)(f"{label}: {e}") from e
        self._emitted += 1
        return result

    def emit1(self, op: str, inputs: Sequence[str], attrs: Any = None) -> str:
        (out,) = self.emit(op, inputs, attrs)
        return out
