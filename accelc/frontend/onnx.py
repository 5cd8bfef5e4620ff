"""ONNX -> accelc IR.

``load_onnx`` reads a model (path, bytes or ``ModelProto``), checks that it is usable, reports every
unsupported op at once, and translates each node with the handler registered for its op and opset in
``accelc.frontend.onnx_ops``. It only translates: no folding, no fusion, no dead-code removal (passes do
that), so the IR graph is the ONNX graph node for node, with the ONNX value names.

Weights stored as external data are memory-mapped read-only rather than copied, which is what lets a
model larger than 2 GB (the protobuf limit; such models must use external data) load without holding two
copies of its weights.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, numpy_helper

from ..errors import AccelcError, ModelLoadError, ShapeError, UnsupportedFeatureError, UnsupportedOpError
from ..ir.dtypes import DType
from ..ir.graph import Graph, Node
from ..ir.types import Dim, TensorType, format_shape
from .onnx_ops import ConvertContext, find_handler, oldest_handler_since
from .onnx_ops.registry import DEFAULT_DOMAIN, canonical_domain, describe, dtype_from_onnx, onnx_dtype_name

NEWEST_OPSET = onnx.defs.onnx_opset_version()
_UNSUPPORTED_DOMAINS = {
    "com.microsoft": "com.microsoft contrib ops are not supported; export with standard ONNX ops only "
                     "(e.g. without onnxruntime's transformer optimizer)",
    "ai.onnx.ml": "ai.onnx.ml (classical ML) ops are not supported",
}


def load_onnx(model: "str | os.PathLike[str] | onnx.ModelProto | bytes", *,
              shapes: Mapping[str, Sequence[int | str]] | None = None) -> Graph:
    """Translates an ONNX model into an IR ``Graph``.

    ``shapes`` fixes graph input dims (``{"input_ids": (1, 128)}``); a string entry keeps or renames a
    symbolic dim. A symbol fixed on one input is fixed wherever else it appears (``batch`` on
    ``input_ids`` and ``attention_mask``), since ONNX uses one ``dim_param`` name for one quantity.
    """
    proto, base_dir, label = _read_model(model)
    _check_structure(proto, label)
    if proto.functions:
        # Model-local functions are macros of standard ops; inlining them is translation, not optimization.
        proto = onnx.inliner.inline_local_functions(proto)
    # ONNX's checker only adds a hint to our own structural errors, so it runs only when one is raised
    # (on a large model it costs 0.5-1.4 s); given a file, it reads the file natively (no re-serialization
    # of the weights in Python)
    on_disk = isinstance(model, (str, os.PathLike)) and not proto.functions
    checker = _LazyChecker(os.fspath(model) if on_disk else proto)
    opsets = _opsets(proto, label)
    graph_proto = proto.graph
    nodes = _ordered_nodes(graph_proto, label, checker)
    nodes = _drop_unused_outputs(graph_proto, nodes)
    _report_unsupported(nodes, opsets, label)

    graph = Graph(graph_proto.name or "main")
    initializer_names = {t.name for t in graph_proto.initializer}
    for tensor in graph_proto.initializer:
        graph.add_constant(tensor_to_array(tensor, base_dir, label), tensor.name)
    for sparse in graph_proto.sparse_initializer:
        dense = _sparse_to_dense(sparse, base_dir, label)
        graph.add_constant(dense, sparse.values.name)
        initializer_names.add(sparse.values.name)
    _add_inputs(graph, graph_proto, initializer_names, shapes, label)

    reserved = {v for n in nodes for v in list(n.input) + list(n.output) if v}
    reserved.update(graph.types)
    ctx = ConvertContext(graph, opsets, reserved, base_dir=base_dir, model_label=label)
    for index, node in enumerate(nodes):
        _convert_node(ctx, node, index)

    outputs = []
    for out in graph_proto.output:
        if out.name not in graph.types:
            raise ModelLoadError(f"{label}: graph output '{out.name}' is never computed; the model is malformed")
        outputs.append(out.name)
    graph.outputs = outputs

    graph.metadata.update({
        "source": "onnx",
        "model_name": graph_proto.name,
        "opset": opsets.get(DEFAULT_DOMAIN, 1),
        "opsets": dict(opsets),
        "ir_version": proto.ir_version,
        "producer": " ".join(p for p in (proto.producer_name, proto.producer_version) if p),
    })
    return graph


def require_static_inputs(graph: Graph) -> None:
    """Raises ``ShapeError`` naming every graph input that still has a symbolic dim, with the fix."""
    problems = []
    for name in graph.inputs:
        shape = graph.types[name].shape
        if not all(isinstance(d, int) for d in shape):
            example = "x".join(str(d) if isinstance(d, int) else "1" for d in shape) or "1"
            dims = ", ".join(str(d) for d in shape)
            problems.append((name, dims, example))
    if not problems:
        return
    listed = "; ".join(f"'{n}' has shape [{d}]" for n, d, _ in problems)
    cli = " ".join(f"--shape {n}={ex}" for n, _, ex in problems)
    py = ", ".join(f'"{n}": ({ex.replace("x", ", ")}{"," if "x" not in ex else ""})' for n, _, ex in problems)
    raise ShapeError(f"symbolic input dims must be fixed before compiling: {listed}. "
                     f"Fix them with {cli} (CLI) or shapes={{{py}}} (Python)")


# ---- reading ---------------------------------------------------------------------------------------
def _read_model(model) -> tuple[onnx.ModelProto, str | None, str]:
    if isinstance(model, onnx.ModelProto):
        return model, None, f"model '{model.graph.name or '<ModelProto>'}'"
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _parse(bytes(model), "model bytes"), None, "model bytes"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        label = f"'{path}'"
        if not os.path.exists(path):
            raise ModelLoadError(f"{label}: no such file; check the path")
        if os.path.isdir(path):
            raise ModelLoadError(f"{label}: is a directory, expected an .onnx file")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelLoadError(f"{label}: cannot read the file ({e.strerror})") from e
        return _parse(data, label), os.path.dirname(os.path.abspath(path)), label
    raise ModelLoadError(f"cannot load a model from a {type(model).__name__}; pass a path, bytes or an "
                         f"onnx.ModelProto")


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{label}: the file is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{label}: not a valid ONNX protobuf (truncated or corrupt file: {e})") from e
    return proto


def _check_structure(proto: onnx.ModelProto, label: str) -> None:
    """Protobuf parsing accepts many byte strings that are not ONNX models; refuse them here."""
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelLoadError(f"{label}: not an ONNX model (no ir_version or no graph); it may be another "
                             f"protobuf or a corrupt file")
    if proto.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(f"{label}: ONNX IR version {proto.ir_version} is newer than this onnx package "
                             f"supports ({onnx.IR_VERSION}); upgrade onnx")
    if not proto.graph.output:
        raise ModelLoadError(f"{label}: the graph has no outputs")


class _LazyChecker:
    """_run_checker's finding on ``source``, computed the first time it is asked for."""

    def __init__(self, source: "onnx.ModelProto | str"):
        self._source, self._message = source, None

    def message(self) -> str:
        if self._message is None:
            self._message = _run_checker(self._source)
        return self._message


def _run_checker(proto: "onnx.ModelProto | str") -> str:
    """ONNX's checker, leniently: its finding is a hint in our errors, and only our own structural checks
    (undefined values, duplicate definitions) reject a model, because exporters in the wild produce many
    models that violate the letter of the spec yet are perfectly usable."""
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - the checker raises several types, all only advisory here
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ""


def _opsets(proto: onnx.ModelProto, label: str) -> dict[str, int]:
    opsets: dict[str, int] = {}
    for imp in proto.opset_import:
        opsets[canonical_domain(imp.domain)] = int(imp.version)
    opsets.setdefault(DEFAULT_DOMAIN, 1)
    if opsets[DEFAULT_DOMAIN] > NEWEST_OPSET:
        raise ModelLoadError(f"{label}: uses ai.onnx opset {opsets[DEFAULT_DOMAIN]}, newer than the newest "
                             f"this accelc knows ({NEWEST_OPSET}); convert it down with onnx.version_converter")
    return opsets


def _ordered_nodes(graph: onnx.GraphProto, label: str, checker: _LazyChecker) -> list[onnx.NodeProto]:
    """The nodes in topological order; undefined or twice-defined values make the model unusable."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    producers: dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for o in node.output:
            if not o:
                continue
            if o in producers or o in defined:
                raise ModelLoadError(f"{label}: value '{o}' is defined twice (again by {describe(node)}); "
                                     f"the model is malformed" + _hint(checker.message()))
            producers[o] = idx
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    ready = set(defined)
    while pending:
        rest = []
        for node in pending:
            if all(not i or i in ready for i in node.input):
                ordered.append(node)
                ready.update(o for o in node.output if o)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            node = rest[0]
            missing = [i for i in node.input if i and i not in ready]
            why = "is never defined" if missing[0] not in producers else "is part of a cycle"
            raise ModelLoadError(f"{label}: input '{missing[0]}' of {describe(node)} {why}; the model is "
                                 f"malformed" + _hint(checker.message()))
        pending = rest
    return ordered


def _hint(checker_message: str) -> str:
    return f" (onnx.checker: {checker_message})" if checker_message else ""


def _drop_unused_outputs(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Blanks optional outputs nothing reads (Dropout's mask, MaxPool's Indices...), so that handlers and
    checks only refuse outputs the model actually uses."""
    used = {i for n in nodes for i in n.input if i} | {o.name for o in graph.output}
    result = []
    for node in nodes:
        if any(o and o not in used for o in node.output[1:]):
            node = _copy_node(node)
            for k in range(1, len(node.output)):
                if node.output[k] not in used:
                    node.output[k] = ""   # kept in place: Split's output count is its number of pieces
        result.append(node)
    return result


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


# ---- the unsupported-op report ------------------------------------------------------------------------
def _report_unsupported(nodes: list[onnx.NodeProto], opsets: dict[str, int], label: str) -> None:
    problems: list[tuple[onnx.NodeProto, str, int, str]] = []
    for index, node in enumerate(nodes):
        node_label = node.name or f"{node.op_type}_{index}"   # the name _convert_node gives the IR node
        domain = canonical_domain(node.domain)
        opset = opsets.get(domain)
        if opset is None:
            problems.append((node, f"its domain '{node.domain}' is not imported by the model", 0, node_label))
            continue
        handler = find_handler(domain, node.op_type, opset)
        if handler is None:
            oldest = oldest_handler_since(domain, node.op_type)
            if domain in _UNSUPPORTED_DOMAINS:
                reason = _UNSUPPORTED_DOMAINS[domain]
            elif domain != DEFAULT_DOMAIN:
                reason = f"custom domain '{node.domain}' is not supported"
            elif oldest is not None:
                reason = (f"supported from opset {oldest}; upgrade the model with "
                          f"onnx.version_converter.convert_version(model, {max(oldest, 13)})")
            else:
                reason = "not supported by accelc"
            problems.append((node, reason, opset, node_label))
            continue
        if handler.check is not None:
            reason = handler.check(node, opset)
            if reason:
                problems.append((node, reason, opset, node_label))
    if not problems:
        return
    groups: dict[tuple[str, str, str, int], list[str]] = defaultdict(list)
    for node, reason, opset, name in problems:
        groups[(node.op_type, node.domain, reason, opset)].append(name)
    parts = []
    for (op_type, domain, reason, opset), names in groups.items():
        where = f"{domain} " if domain and domain != "ai.onnx" else ""
        shown = ", ".join(f"'{n}'" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        parts.append(f"{op_type} ({where}opset {opset}) at {shown}: {reason}")
    count = len(problems)
    raise UnsupportedOpError(f"{label}: {count} node{'s' if count != 1 else ''} cannot be compiled: "
                             + "; ".join(parts),
                             [(name, node.op_type) for node, _, _, name in problems])


# ---- weights -----------------------------------------------------------------------------------------
def tensor_to_array(tensor: onnx.TensorProto, base_dir: str | None, label: str) -> np.ndarray:
    """A read-only array of an ONNX tensor; external data is memory-mapped when its layout allows."""
    dtype = dtype_from_onnx(tensor.data_type)
    if dtype is None:
        raise UnsupportedFeatureError(f"{label}: tensor '{tensor.name}' has element type "
                                      f"{onnx_dtype_name(tensor.data_type)}, which accelc does not support")
    if external_data_helper.uses_external_data(tensor):
        array = _external_array(tensor, dtype, base_dir, label)
    else:
        try:
            array = numpy_helper.to_array(tensor)
        except Exception as e:  # noqa: BLE001 - onnx raises ValueError/TypeError for inconsistent tensors
            raise ModelLoadError(f"{label}: tensor '{tensor.name}' is corrupt ({e})") from e
    if array.dtype != dtype.np:
        array = array.astype(dtype.np)
    array.flags.writeable = False
    return array


def _external_array(tensor: onnx.TensorProto, dtype: DType, base_dir: str | None, label: str) -> np.ndarray:
    info = external_data_helper.ExternalDataInfo(tensor)
    if base_dir is None:
        raise ModelLoadError(f"{label}: tensor '{tensor.name}' keeps its data in the external file "
                             f"'{info.location}', but the model was not given as a path; pass the .onnx path "
                             f"or load it with onnx.load(path) (which reads external data) first")
    path = os.path.normpath(os.path.join(base_dir, info.location))
    if os.path.commonpath([os.path.abspath(path), os.path.abspath(base_dir)]) != os.path.abspath(base_dir):
        raise ModelLoadError(f"{label}: tensor '{tensor.name}' points at external data outside the model's "
                             f"directory ('{info.location}'); refusing to read it")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{label}: external data file '{path}' for tensor '{tensor.name}' is missing; "
                             f"keep it next to the model")
    shape = tuple(int(d) for d in tensor.dims)
    count = int(np.prod(shape, dtype=np.int64))
    offset = int(info.offset or 0)
    size = os.path.getsize(path)
    if dtype in (DType.int4, DType.uint4):
        nbytes = (count + 1) // 2
    else:
        nbytes = count * dtype.itemsize
    if offset + nbytes > size:
        raise ModelLoadError(f"{label}: external data file '{path}' is too short for tensor '{tensor.name}' "
                             f"(needs bytes {offset}..{offset + nbytes}, file has {size}); it is truncated")
    if count == 0:
        return np.zeros(shape, dtype.np)
    if dtype in (DType.int4, DType.uint4):
        try:
            return numpy_helper.to_array(tensor, base_dir)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"{label}: cannot read external data of tensor '{tensor.name}' ({e})") from e
    return np.memmap(path, dtype=dtype.np.newbyteorder("<"), mode="r", offset=offset, shape=shape)


def _sparse_to_dense(sparse: onnx.SparseTensorProto, base_dir: str | None, label: str) -> np.ndarray:
    values = tensor_to_array(sparse.values, base_dir, label)
    indices = tensor_to_array(sparse.indices, base_dir, label).astype(np.int64)
    shape = tuple(int(d) for d in sparse.dims)
    dense = np.zeros(shape, values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


# ---- graph inputs ------------------------------------------------------------------------------------
def _add_inputs(graph: Graph, graph_proto: onnx.GraphProto, initializer_names: set[str],
                shapes: Mapping[str, Sequence[int | str]] | None, label: str) -> None:
    declared: dict[str, tuple[DType, tuple[Dim, ...], tuple[bool, ...]]] = {}
    for value in graph_proto.input:
        if value.name in initializer_names:
            continue   # ONNX IR < 4 lists every initializer as an input too; it stays a constant
        if not value.type.HasField("tensor_type"):
            raise UnsupportedFeatureError(f"{label}: input '{value.name}' is not a tensor (sequence/map/optional "
                                          f"inputs are not supported)")
        tt = value.type.tensor_type
        dtype = dtype_from_onnx(tt.elem_type)
        if dtype is None:
            raise UnsupportedFeatureError(f"{label}: input '{value.name}' has element type "
                                          f"{onnx_dtype_name(tt.elem_type)}, which accelc does not support")
        if not tt.HasField("shape"):
            raise ShapeError(f"{label}: input '{value.name}' has no declared rank; give its shape with "
                             f"shapes={{'{value.name}': (...)}} / --shape {value.name}=...")
        dims: list[Dim] = []
        is_param: list[bool] = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
                is_param.append(False)
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
                is_param.append(True)
            else:
                dims.append(f"{value.name}_dim{k}")
                is_param.append(False)
        declared[value.name] = (dtype, tuple(dims), tuple(is_param))

    shapes = dict(shapes or {})
    unknown = [n for n in shapes if n not in declared]
    if unknown:
        raise ShapeError(f"{label}: shapes given for unknown input{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(n) for n in unknown)}; the model's inputs are "
                         f"{', '.join(repr(n) for n in declared) or '(none)'}")
    bindings: dict[str, Dim] = {}
    for name, given in shapes.items():
        _, dims, is_param = declared[name]
        given = tuple(given)
        if len(given) != len(dims):
            raise ShapeError(f"input '{name}': shape {format_shape(given)} has rank {len(given)}, but the model "
                             f"declares rank {len(dims)} ({format_shape(dims)})")
        for k, (g, d, param) in enumerate(zip(given, dims, is_param)):
            if not isinstance(g, (int, str)) or isinstance(g, bool) or (isinstance(g, int) and g < 0):
                raise ShapeError(f"input '{name}': dim {k} must be a non-negative int or a name, got {g!r}")
            if isinstance(d, int) and g != d:
                raise ShapeError(f"input '{name}': dim {k} is fixed to {d} by the model, but shapes gives {g}")
            if param and isinstance(g, int):
                if bindings.get(d, g) != g:
                    raise ShapeError(f"input '{name}': symbolic dim '{d}' is given as {g} here and as "
                                     f"{bindings[d]} on another input")
                bindings[d] = g
    for name, (dtype, dims, is_param) in declared.items():
        if name in shapes:
            final = tuple(int(g) if isinstance(g, int) else g for g in shapes[name])
        else:
            final = tuple(bindings.get(d, d) if p else d for d, p in zip(dims, is_param))
        graph.add_input(name, TensorType(dtype, final))


# ---- translating one node ----------------------------------------------------------------------------
def _convert_node(ctx: ConvertContext, node: onnx.NodeProto, index: int) -> None:
    handler = find_handler(node.domain, node.op_type, ctx.opsets[canonical_domain(node.domain)])
    assert handler is not None  # _report_unsupported ran first
    node_name = node.name or f"{node.op_type}_{index}"
    graph = ctx.graph
    start = len(graph.nodes)
    ctx.begin(node, node_name)
    try:
        results = list(handler.fn(ctx, node))
    except AccelcError:
        raise
    except ValueError as e:
        # attrs dataclasses refuse values they cannot represent; name the node and the value
        raise UnsupportedOpError(f"{describe(node)}: {e}", [(node.name, node.op_type)]) from e
    wanted = [o for o in node.output]
    if len(results) < len([o for o in wanted if o]):
        raise UnsupportedOpError(f"{describe(node)}: produces {len(results)} outputs but the model uses "
                                 f"{len(wanted)}", [(node.name, node.op_type)])
    created = ctx.created_since_begin()
    renames: dict[str, str] = {}
    for onnx_name, value in zip(wanted, results):
        if not onnx_name:
            continue
        value = renames.get(value, value)
        if value == onnx_name:
            continue
        if value in created and onnx_name not in graph.types:
            _rename(graph, start, value, onnx_name)
            renames[value] = onnx_name
            created.discard(value)
        else:
            graph.add_node("Identity", [value], name=f"{node_name}/Identity", outputs=[onnx_name])
    ctx.index_nodes(start)


def _rename(graph: Graph, start: int, old: str, new: str) -> None:
    """Renames a value made by the current handler (its nodes are ``graph.nodes[start:]``)."""
    graph.types[new] = graph.types.pop(old)
    if old in graph.constants:
        graph.constants[new] = graph.constants.pop(old)
    for k in range(start, len(graph.nodes)):
        n = graph.nodes[k]
        if old in n.outputs or old in n.inputs:
            graph.nodes[k] = Node(n.op, tuple(new if i == old else i for i in n.inputs),
                                  tuple(new if o == old else o for o in n.outputs), n.attrs, n.name)
