"""The IR core: graph construction, type inference, verifier, printer and reference interpreter."""
import ml_dtypes
import numpy as np
import pytest

from accelc.errors import InputMismatchError, ShapeError, VerificationError
from accelc.ir import DType, Graph, Node, TensorType, evaluate, get_op, print_graph, verify
from accelc.ir.ops.elementwise import CastAttrs, GeluAttrs
from accelc.ir.ops.shape_inference import broadcast_shapes


def small_graph() -> Graph:
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, ("batch", 4)))
    b = g.add_constant(np.arange(4, dtype=np.float32), "b")
    (y,) = g.add_node("Add", [x, b], name="add_bias")
    (z,) = g.add_node("Relu", [y], name="relu")
    g.outputs = [z]
    return g


def test_symbolic_dims_propagate_and_interpreter_runs_any_batch():
    g = small_graph()
    verify(g)
    assert g.types[g.outputs[0]].shape == ("batch", 4)
    for batch in (1, 3):
        x = np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)
        (out,) = evaluate(g, {"x": x}).values()
        np.testing.assert_array_equal(out, np.maximum(x + np.arange(4, dtype=np.float32), 0))


def test_printer_shows_types_attrs_and_node_names():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (2,)))
    (y,) = g.add_node("Gelu", [x], GeluAttrs("tanh"), name="act")
    g.outputs = [y]
    text = print_graph(g)
    assert "graph main(%x: f32[2]) -> (%" in text
    assert "= Gelu(%x) {approximate='tanh'}  # act" in text
    # default attributes are not printed
    g2 = Graph()
    x2 = g2.add_input("x", TensorType(DType.float32, (2,)))
    g2.add_node("Gelu", [x2], GeluAttrs(), name="act")
    assert "{" not in print_graph(g2).splitlines()[1]


def test_broadcast_shapes_with_symbols():
    assert broadcast_shapes((3, 1, 5), (4, 1)) == (3, 4, 5)
    assert broadcast_shapes(("n", 1), (1, 7)) == ("n", 7)
    with pytest.raises(ShapeError, match="do not broadcast"):
        broadcast_shapes((3,), (4,))
    # a symbol may hide a computed dim: it takes the known size, and two symbols keep the first
    assert broadcast_shapes(("reshape_0", 4), (3, 4)) == (3, 4)
    assert broadcast_shapes(("n",), ("m",)) == ("n",)


def test_type_inference_rejects_mixed_dtypes_with_clear_message():
    g = Graph()
    a = g.add_input("a", TensorType(DType.float32, (2,)))
    b = g.add_input("b", TensorType(DType.int64, (2,)))
    with pytest.raises(ShapeError, match="one dtype"):
        g.add_node("Add", [a, b])


def test_verifier_catches_use_before_definition_and_double_definition():
    g = small_graph()
    g.nodes.reverse()
    with pytest.raises(VerificationError, match="before it is defined"):
        verify(g)
    g = small_graph()
    n = g.nodes[0]
    g.nodes.append(Node(n.op, n.inputs, n.outputs, n.attrs, "dup"))
    with pytest.raises(VerificationError, match="defined twice"):
        verify(g)


def test_verifier_catches_stale_recorded_type():
    g = small_graph()
    g.types[g.nodes[0].outputs[0]] = TensorType(DType.float32, ("batch", 5))
    with pytest.raises(VerificationError, match="infers as"):
        verify(g)


def test_verifier_rejects_wrong_attrs_type_and_arity():
    g = small_graph()
    n = g.nodes[1]
    g.nodes[1] = Node("Relu", n.inputs, n.outputs, CastAttrs(), n.name)
    with pytest.raises(VerificationError, match="attrs of type"):
        verify(g)
    with pytest.raises(VerificationError, match="unknown IR op"):
        get_op("NoSuchOp")


def test_constants_are_read_only_and_copied():
    g = Graph()
    a = np.ones(3, np.float32)
    name = g.add_constant(a)
    a[0] = 5
    assert g.constants[name][0] == 1
    with pytest.raises(ValueError):
        g.constants[name][0] = 2


def test_interpreter_rounds_low_precision_results_to_declared_dtype():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (3,)))
    (h,) = g.add_node("Cast", [x], CastAttrs(DType.bfloat16))
    (y,) = g.add_node("Mul", [h, h])
    (z,) = g.add_node("Cast", [y], CastAttrs(DType.float32))
    g.outputs = [z]
    x_val = np.array([1.0 + 2 ** -10, 3.14159, -2.5], np.float32)
    out = evaluate(g, {"x": x_val})[z]
    xb = x_val.astype(ml_dtypes.bfloat16).astype(np.float32)
    expected = (xb * xb).astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert g.types[y].dtype is DType.bfloat16


def test_interpreter_reports_missing_input():
    g = small_graph()
    with pytest.raises(InputMismatchError, match="missing input 'x'"):
        evaluate(g, {})


def test_cast_float_to_int_truncates_toward_zero():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (4,)))
    (y,) = g.add_node("Cast", [x], CastAttrs(DType.int32))
    g.outputs = [y]
    out = evaluate(g, {"x": np.array([1.7, -1.7, 2.5, -0.2], np.float32)})[y]
    np.testing.assert_array_equal(out, [1, -1, 2, 0])


def test_dtype_parse_accepts_user_spellings():
    assert DType.parse("fp32") is DType.float32
    assert DType.parse("bf16") is DType.bfloat16
    assert DType.parse("float16") is DType.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        DType.parse("fp12")


def test_node_key_ignores_name_for_cse():
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (2,)))
    (a,) = g.add_node("Exp", [x], name="one")
    (b,) = g.add_node("Exp", [x], name="two")
    assert g.nodes[0].key() == g.nodes[1].key()
    assert a != b


def test_replace_all_uses_rewires_nodes_and_outputs():
    g = small_graph()
    add_out = g.nodes[0].outputs[0]
    g.replace_all_uses(add_out, "x")
    assert g.nodes[1].inputs == ("x",)
    g.nodes = g.nodes[1:]
    g.remove_unused_values()
    verify(g)
    assert add_out not in g.types


def test_content_index_finds_equal_bytes_only():
    """Weights dedup (WeightsBuilder, CSE): a sampled hash proposes, a full comparison decides."""
    from accelc.ir.content import ContentIndex
    idx = ContentIndex()
    a = np.arange(5000, dtype=np.float32)
    middle = a.copy()
    middle[2500] += 1                      # differs outside the hashed head and tail samples
    idx.add(a, "a", ("f32", (5000,)))
    assert idx.find(a.copy(), ("f32", (5000,))) == "a"
    assert idx.find(middle, ("f32", (5000,))) is None
    assert idx.find(a.copy(), ("f32", (50, 100))) is None            # same bytes, other tag
    assert idx.find(a[::2].copy(), ("f32", (5000,))) is None
    idx.add(middle, "middle", ("f32", (5000,)))                        # same sample key: both kept
    assert idx.find(middle.copy(), ("f32", (5000,))) == "middle" and idx.find(a, ("f32", (5000,))) == "a"
    assert idx.find(a.reshape(50, 100)[:, :50]) is None                 # views of any layout are accepted
