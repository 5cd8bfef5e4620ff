"""Canonical passes: DCE, CSE, constant folding, identity removal. Each test checks the rewrite
structurally, semantics with the reference interpreter, the verifier, and a no-match case."""
import numpy as np
import pytest

from accelc.ir import DType, Graph, TensorType, evaluate, print_graph, verify
from accelc.ir.ops.elementwise import CastAttrs, GeluAttrs
from accelc.passes import PassContext
from accelc.passes import (eliminate_common_subexpressions as cse, eliminate_dead_code as dce,
                           fold_constants, remove_identities)

F32 = DType.float32


def random_feeds(g: Graph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal(g.types[i].shape).astype(g.types[i].dtype.np) for i in g.inputs}


def assert_same_outputs(before: Graph, after: Graph, seed: int = 0, rtol: float = 1e-5) -> None:
    feeds = random_feeds(before, seed)
    a, b = evaluate(before, feeds), evaluate(after, feeds)
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=1e-6)


def assert_unchanged(pass_module, g: Graph) -> None:
    text = print_graph(g)
    result = pass_module.run(g, PassContext())
    assert result.changed is False
    assert result.graph is g and print_graph(result.graph) == text


# ---- eliminate_dead_code -------------------------------------------------------------------------
def test_dce_removes_dead_nodes_and_unused_constants_but_keeps_inputs():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3)))
    unused_in = g.add_input("unused", TensorType(F32, (1,)))
    c = g.add_constant(np.ones(3, np.float32), "c")
    g.add_constant(np.zeros(5, np.float32), "orphan")
    (dead,) = g.add_node("Mul", [x, c], name="dead_mul")
    g.add_node("Exp", [dead], name="dead_exp")
    (y,) = g.add_node("Relu", [x], name="relu")
    g.outputs = [y]
    before = print_graph(g)
    r = dce.run(g, PassContext())
    assert r.changed and "removed 2 dead nodes" in r.summary and "2 unused constants" in r.summary
    assert r.graph.ops_histogram() == {"Relu": 1}
    assert r.graph.inputs == ["x", "unused"] and not r.graph.constants
    assert print_graph(g) == before          # input untouched
    verify(r.graph)
    assert_same_outputs(g, r.graph)
    assert_unchanged(dce, r.graph)


# ---- eliminate_common_subexpressions ----------------------------------------------------------
def test_cse_merges_nodes_transitively_and_constants_by_bytes():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (4, 3)))
    c1 = g.add_constant(np.arange(3, dtype=np.float32), "c1")
    c2 = g.add_constant(np.arange(3, dtype=np.float32), "c2")          # same bytes as c1
    c3 = g.add_constant(np.arange(3, dtype=np.int32).astype(np.float32) + 1, "c3")
    (a1,) = g.add_node("Add", [x, c1], name="a1")
    (a2,) = g.add_node("Add", [x, c2], name="a2")   # same as a1 once c2 -> c1
    (a3,) = g.add_node("Add", [x, c3], name="a3")   # different constant: stays
    (e1,) = g.add_node("Exp", [a1], name="e1")
    (e2,) = g.add_node("Exp", [a2], name="e2")      # same as e1 once a2 -> a1
    (s,) = g.add_node("Add", [e1, e2], name="s")
    (y,) = g.add_node("Mul", [s, a3], name="y")
    g.outputs = [y]
    r = cse.run(g, PassContext())
    assert r.changed
    assert r.summary == "merged 2 duplicate nodes, 1 duplicate constant"
    assert r.graph.ops_histogram() == {"Add": 3, "Exp": 1, "Mul": 1}
    assert set(r.graph.constants) == {"c1", "c3"}
    s_node = next(n for n in r.graph.nodes if n.name == "s")
    assert s_node.inputs[0] == s_node.inputs[1]
    verify(r.graph)
    assert_same_outputs(g, r.graph)
    assert_unchanged(cse, r.graph)


def test_cse_does_not_merge_same_bytes_of_different_dtype_or_shape():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 2)))
    g.add_constant(np.zeros((2, 2), np.float32), "a")
    g.add_constant(np.zeros((4,), np.float32), "b")
    g.add_constant(np.zeros((2, 2), np.int32), "c")
    (y,) = g.add_node("Add", [x, "a"])
    g.outputs = [y, "b", "c"]
    assert_unchanged(cse, g)


def test_cse_keeps_output_names_when_duplicates_are_outputs():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3,)))
    (a,) = g.add_node("Exp", [x], outputs=["first"])
    (b,) = g.add_node("Exp", [x], outputs=["second"])
    (t,) = g.add_node("Neg", [x], outputs=["t1"])
    (u,) = g.add_node("Neg", [x], outputs=["t2"])
    (v,) = g.add_node("Abs", [u], outputs=["third"])
    g.outputs = [a, b, v]
    r = cse.run(g, PassContext())
    assert r.graph.outputs == ["first", "second", "third"]
    # first and second are both outputs: merging would need a copy, so both stay; t2 merges into t1
    assert r.graph.ops_histogram() == {"Abs": 1, "Exp": 2, "Neg": 1}
    verify(r.graph)
    assert_same_outputs(g, r.graph)


def test_cse_interior_duplicate_of_an_output_takes_the_output_name():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3,)))
    (a,) = g.add_node("Exp", [x], outputs=["inner"])
    (b,) = g.add_node("Neg", [a], outputs=["other"])
    (c,) = g.add_node("Exp", [x], outputs=["y"])
    g.outputs = [c, b]
    r = cse.run(g, PassContext())
    assert r.graph.outputs == ["y", "other"]
    assert r.graph.ops_histogram() == {"Exp": 1, "Neg": 1}
    assert r.graph.nodes[0].outputs == ("y",) and r.graph.nodes[1].inputs == ("y",)
    verify(r.graph)
    assert_same_outputs(g, r.graph)


# ---- fold_constants --------------------------------------------------------------------------
def test_fold_constants_evaluates_constant_subgraphs():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3)))
    a = g.add_constant(np.full((3,), 2.0, np.float32), "a")
    b = g.add_constant(np.arange(3, dtype=np.float32), "b")
    (ab,) = g.add_node("Mul", [a, b], name="ab")
    (e,) = g.add_node("Exp", [ab], name="e")
    (y,) = g.add_node("Add", [x, e], name="y")
    g.outputs = [y]
    r = fold_constants.run(g, PassContext())
    assert r.changed and r.summary == "folded 2 nodes into constants (1 Exp, 1 Mul)"
    assert r.graph.ops_histogram() == {"Add": 1}
    np.testing.assert_allclose(r.graph.constants[e], np.exp(2.0 * np.arange(3)), rtol=1e-6)
    assert not r.graph.constants[e].flags.writeable
    verify(r.graph)
    assert_same_outputs(g, r.graph)
    assert_unchanged(fold_constants, r.graph)


def test_fold_constants_rounds_low_precision_like_the_interpreter():
    import ml_dtypes
    g = Graph()
    x = g.add_input("x", TensorType(DType.bfloat16, (4,)))
    c = g.add_constant(np.array([1.0, 3.0, 7.0, 1e-3], ml_dtypes.bfloat16), "c")
    (r_,) = g.add_node("Reciprocal", [c], name="recip")
    (y,) = g.add_node("Mul", [x, r_], name="y")
    g.outputs = [y]
    r = fold_constants.run(g, PassContext())
    folded = r.graph.constants[r_]
    assert folded.dtype == ml_dtypes.bfloat16
    expected = evaluate(g, {"x": np.ones(4, np.float32)}, keep_all=True)[r_]
    np.testing.assert_array_equal(folded.astype(np.float32), expected.astype(np.float32))
    assert_same_outputs(g, r.graph)


def test_fold_constants_leaves_huge_broadcasts_alone():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (1,)))
    big = g.add_constant(np.zeros((1,), np.float32), "z")
    ones = g.add_constant(np.ones((5000, 4000), np.float32), "ones")   # 80 MB once added
    (s,) = g.add_node("Add", [ones, big], name="big_add")
    (y,) = g.add_node("Mul", [x, s], name="y")
    g.outputs = [y]
    r = fold_constants.run(g, PassContext())
    assert r.changed is False
    assert fold_constants.MAX_FOLD_BYTES == 64 << 20


def test_fold_constants_no_match():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3,)))
    (y,) = g.add_node("Gelu", [x], GeluAttrs())
    g.outputs = [y]
    assert_unchanged(fold_constants, g)


# ---- remove_identities -----------------------------------------------------------------------
def build_identity_graph():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3)))
    zero = g.add_constant(np.zeros((3,), np.float32), "zero")
    one = g.add_constant(np.ones((1, 1), np.float32), "one")
    zeros_wide = g.add_constant(np.zeros((4, 2, 3), np.float32), "zeros_wide")
    half = g.add_constant(np.full((3,), 0.5, np.float32), "half")
    (a,) = g.add_node("Identity", [x], name="id")
    (b,) = g.add_node("Add", [zero, a], name="add0")
    (c,) = g.add_node("Mul", [b, one], name="mul1")
    (d,) = g.add_node("Cast", [c], CastAttrs(DType.float32), name="cast_same")
    (e,) = g.add_node("Div", [d, one], name="div1")
    (f,) = g.add_node("Sub", [e, zero], name="sub0")
    (h,) = g.add_node("Tanh", [f], name="tanh")
    (bc,) = g.add_node("Add", [h, zeros_wide], name="broadcasting_add0")    # changes the shape: stays
    (m,) = g.add_node("Mul", [bc, half], name="mul_half")                  # not neutral: stays
    (k,) = g.add_node("Sub", [zero, m], name="zero_minus")                 # 0 - x is -x: stays
    g.outputs = [k]
    return g


def test_remove_identities_forwards_neutral_ops_only_when_shape_is_kept():
    g = build_identity_graph()
    r = remove_identities.run(g, PassContext())
    assert r.changed
    assert r.summary == "removed 6 identity ops (1 Add, 1 Cast, 1 Div, 1 Identity, 1 Mul, 1 Sub)"
    assert r.graph.ops_histogram() == {"Add": 1, "Mul": 1, "Sub": 1, "Tanh": 1}
    assert r.graph.nodes[0].inputs == ("x",)
    verify(r.graph)
    assert_same_outputs(g, r.graph)
    assert_unchanged(remove_identities, r.graph)


def test_remove_identities_keeps_output_names_and_needed_copies():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3,)))
    (e,) = g.add_node("Exp", [x], outputs=["e"])
    (y,) = g.add_node("Identity", [e], outputs=["y"])
    (z,) = g.add_node("Identity", [x], outputs=["z"])      # output = input: a copy is needed
    g.outputs = [y, z]
    r = remove_identities.run(g, PassContext())
    assert r.graph.outputs == ["y", "z"]
    assert r.graph.ops_histogram() == {"Exp": 1, "Identity": 1}
    assert r.graph.nodes[0].outputs == ("y",)
    verify(r.graph)
    assert_same_outputs(g, r.graph)
    assert_unchanged(remove_identities, r.graph)


def test_remove_identities_ignores_non_neutral_and_int_cast():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3,)))
    c = g.add_constant(np.array([0.0, 0.0, 1e-30], np.float32), "almost_zero")
    (a,) = g.add_node("Add", [x, c])
    (b,) = g.add_node("Cast", [a], CastAttrs(DType.int32))
    g.outputs = [b]
    assert_unchanged(remove_identities, g)


def test_cse_merges_identical_scalar_constants():
    """0-d constants (exporters emit many) are compared by their bytes like any other constant."""
    from accelc.passes import eliminate_common_subexpressions as cse
    from accelc.passes.manager import PassContext
    g = Graph()
    x = g.add_input("x", TensorType(DType.float32, (3,)))
    c1 = g.add_constant(np.array(2.0, np.float32))
    c2 = g.add_constant(np.array(2.0, np.float32))
    c3 = g.add_constant(np.array(3.0, np.float32))
    (a,) = g.add_node("Mul", [x, c1])
    (b,) = g.add_node("Mul", [a, c2])
    (c,) = g.add_node("Add", [b, c3])
    g.outputs = [c]
    res = cse.run(g, PassContext())
    assert res.changed
    muls = [n for n in res.graph.nodes if n.op == "Mul"]
    assert muls[0].inputs[1] == muls[1].inputs[1]
    assert [n for n in res.graph.nodes if n.op == "Add"][0].inputs[1] == c3
    xv = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(evaluate(g, {"x": xv})[c], evaluate(res.graph, {"x": xv})[c])
