"""simplify_shapes (with fold_constants): dynamic shape arithmetic resolved, no-op layout ops removed,
chains collapsed; semantics checked with the reference interpreter."""
import numpy as np

from accelc.ir import DType, Graph, TensorType, evaluate, print_graph, verify
from accelc.ir.ops.indexing import GatherAttrs
from accelc.ir.ops.shape import (ConcatAttrs, ConstantOfShapeAttrs, FlattenAttrs, ShapeAttrs, SqueezeAttrs,
                                 TransposeAttrs, UnsqueezeAttrs)
from accelc.passes import FixedPoint, PassContext, PassManager, fold_constants, simplify_shapes

F32 = DType.float32


def check_same(before: Graph, after: Graph, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {i: rng.standard_normal(before.types[i].shape).astype(np.float32) for i in before.inputs}
    a, b = evaluate(before, feeds), evaluate(after, feeds)
    for k in a:
        assert a[k].shape == b[k].shape
        np.testing.assert_array_equal(a[k], b[k])


def i64(g, values, name=None):
    return g.add_constant(np.array(values, np.int64), name)


def test_dynamic_reshape_shape_becomes_constant_and_types_static():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3, 4)))
    (shp,) = g.add_node("Shape", [x], ShapeAttrs())
    (batch,) = g.add_node("Gather", [shp, i64(g, [0])], GatherAttrs(axis=0))
    (target,) = g.add_node("Concat", [batch, i64(g, [-1])], ConcatAttrs(axis=0))
    (y,) = g.add_node("Reshape", [x, target])
    (z,) = g.add_node("Relu", [y])
    g.outputs = [z]
    assert not g.types[z].is_static
    pm = PassManager([FixedPoint((simplify_shapes.PASS, fold_constants.SHAPE_ONLY_PASS))])
    out, log = pm.run(g, PassContext(debug=True))
    verify(out)
    assert out.ops_histogram() == {"Relu": 1, "Reshape": 1}
    assert out.types[z].shape == (2, 12)
    reshape = out.nodes[0]
    assert reshape.inputs[1] in out.constants
    np.testing.assert_array_equal(out.constants[reshape.inputs[1]], [2, -1])
    assert [e["pass"] for e in log] == ["simplify_shapes", "fold_shape_constants"]
    assert all(e["changed"] for e in log) and log[0].get("runs", 1) >= 2
    check_same(g, out)


def test_noop_layout_ops_are_removed_and_chains_collapse():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3, 4)))
    (a,) = g.add_node("Reshape", [x, i64(g, [2, 3, 4])], name="same_shape")
    (b,) = g.add_node("Transpose", [a], TransposeAttrs((0, 1, 2)), name="identity_perm")
    (c,) = g.add_node("Unsqueeze", [b], UnsqueezeAttrs((0,)), name="unsq")
    (d,) = g.add_node("Squeeze", [c], SqueezeAttrs((0,)), name="sq")          # cancels unsq
    (e,) = g.add_node("Transpose", [d], TransposeAttrs((1, 0, 2)), name="t1")
    (f,) = g.add_node("Transpose", [e], TransposeAttrs((2, 1, 0)), name="t2")  # composes with t1
    (h,) = g.add_node("Flatten", [f], FlattenAttrs(1), name="flat")
    (k,) = g.add_node("Reshape", [h, i64(g, [4, 3, 2])], name="reshape_back")  # Flatten+Reshape collapse
    (m,) = g.add_node("Expand", [k, i64(g, [4, 3, 2])], name="expand_same")
    g.outputs = [m]
    r = simplify_shapes.run(g, PassContext())
    verify(r.graph)
    assert r.graph.ops_histogram() == {"Reshape": 1, "Transpose": 1}
    t, rs = r.graph.nodes
    assert t.inputs == ("x",) and t.attrs.perm == (2, 0, 1)          # t1 then t2
    assert rs.inputs[0] == t.outputs[0] and rs.outputs == (m,)        # Flatten+Reshape in one, Expand gone
    np.testing.assert_array_equal(r.graph.constants[rs.inputs[1]], [4, 3, 2])
    assert "Squeeze removed: 1" in r.summary and "Transpose chain collapsed: 1" in r.summary
    check_same(g, r.graph)
    text = print_graph(r.graph)
    r2 = simplify_shapes.run(r.graph, PassContext())
    assert r2.changed is False and print_graph(r2.graph) == text


def test_size_and_constant_of_shape():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (3, 5)))
    (sz,) = g.add_node("Size", [x])
    (shp,) = g.add_node("Shape", [x], ShapeAttrs(start=-1))
    (filled,) = g.add_node("ConstantOfShape", [shp], ConstantOfShapeAttrs(value=1.5))
    g.outputs = [filled, sz]
    assert not g.types[filled].is_static
    r = simplify_shapes.run(g, PassContext())
    assert r.graph.ops_histogram() == {"ConstantOfShape": 1}
    assert int(r.graph.constants[sz]) == 15
    assert r.graph.types[filled].shape == (5,)
    check_same(g, r.graph)


def test_simplify_shapes_no_match_keeps_real_layout_ops():
    g = Graph()
    x = g.add_input("x", TensorType(F32, (2, 3)))
    (t,) = g.add_node("Transpose", [x], TransposeAttrs((1, 0)))
    (r_,) = g.add_node("Reshape", [t, i64(g, [6])])
    (e,) = g.add_node("Exp", [r_])
    g.outputs = [e, t]
    text = print_graph(g)
    res = simplify_shapes.run(g, PassContext())
    assert res.changed is False and print_graph(res.graph) == text
