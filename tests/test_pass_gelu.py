"""recognize_gelu: decomposed GELU (erf and tanh forms, any operand order, scalar or one-element constants)
becomes one Gelu node; each rewrite is checked against the reference interpreter, and every near miss
(wrong constant, shared or exported intermediate, two different x, unsupported dtype or broadcast) is left
exactly as it was. End to end: the opset-17 PyTorch encoder's GELU ends up as a FusedGemm activation."""
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from accelc.ir import DType, Graph, TensorType, evaluate, print_graph, verify
from accelc.ir.ops.fused import Activation
from accelc.passes import PassContext, PassManager, pass_names, pipeline_for
from accelc.passes import recognize_gelu

F32 = DType.float32
ROOT = Path(__file__).resolve().parents[1]
SQRT2 = np.float32(np.sqrt(2.0))            # 1.4142135
INV_SQRT2 = np.float32(1 / np.sqrt(2.0))    # 0.70710677


class Builder:
    """Writes expressions over one input ``x``; a Python number becomes a constant of ``const_shape``."""

    def __init__(self, dtype=F32, shape=(2, 3, 8), const_shape=()):
        self.g = Graph("gelu")
        self.dtype = dtype
        self.const_shape = const_shape
        self.x = self.g.add_input("x", TensorType(dtype, shape))

    def val(self, v):
        if isinstance(v, str):
            return v
        return self.g.add_constant(np.full(self.const_shape, v, dtype=self.dtype.np))

    def __call__(self, op, *args):
        (out,) = self.g.add_node(op, [self.val(a) for a in args])
        return out

    def done(self, *outputs):
        self.g.outputs = list(outputs)
        verify(self.g)
        return self.g


def feeds_for(g: Graph, seed=0):
    rng = np.random.default_rng(seed)
    return {i: (rng.standard_normal(g.types[i].shape) * 2).astype(g.types[i].dtype.np) for i in g.inputs}


def check_rewrite(g: Graph, approximate: str, count: int = 1, rtol=1e-5, atol=1e-6):
    """Runs the pass, checks that ``count`` Gelu nodes replaced every elementwise op of the patterns and
    that the reference outputs agree."""
    before_text = print_graph(g)
    r = recognize_gelu.run(g, PassContext())
    assert print_graph(g) == before_text                       # the input graph is untouched
    assert r.changed and f"replaced {count} decomposed GELU" in r.summary
    verify(r.graph)
    gelus = [n for n in r.graph.nodes if n.op == "Gelu"]
    assert len(gelus) == count
    assert all(n.attrs.approximate == approximate for n in gelus)
    assert not any(n.op in ("Erf", "Tanh", "Pow") for n in r.graph.nodes)
    assert r.graph.outputs == g.outputs and r.graph.inputs == g.inputs
    feeds = feeds_for(g)
    a, b = evaluate(g, feeds), evaluate(r.graph, feeds)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        np.testing.assert_allclose(b[k].astype(np.float64), a[k].astype(np.float64), rtol=rtol, atol=atol)
    assert recognize_gelu.run(r.graph, PassContext()).changed is False     # idempotent
    return r


def assert_unchanged(g: Graph):
    text = print_graph(g)
    r = recognize_gelu.run(g, PassContext())
    assert r.changed is False and r.graph is g and print_graph(g) == text


# ---- the erf form ---------------------------------------------------------------------------------------
def erf_torch(b: Builder, x=None, sqrt2=SQRT2, half=0.5, one=1.0):
    """torch.nn.functional.gelu exported at opset < 20: Mul(Mul(x, Add(Erf(Div(x, 1.4142135)), 1)), 0.5)."""
    x = x or b.x
    return b("Mul", b("Mul", x, b("Add", b("Erf", b("Div", x, sqrt2)), one)), half)


def test_erf_torch_order():
    b = Builder()
    check_rewrite(b.done(erf_torch(b)), "none")


def test_erf_huggingface_order_half_times_x_first():
    # 0.5 * x * (1 + erf(x * 0.70710677))
    b = Builder()
    half_x = b("Mul", 0.5, b.x)
    y = b("Mul", half_x, b("Add", 1.0, b("Erf", b("Mul", b.x, float(INV_SQRT2)))))
    check_rewrite(b.done(y), "none")


def test_erf_x_times_half_of_sum_and_commuted_constants():
    # x * ((1 + erf(0.70710677 * x)) * 0.5)
    b = Builder()
    s = b("Add", 1.0, b("Erf", b("Mul", float(INV_SQRT2), b.x)))
    y = b("Mul", b.x, b("Mul", s, 0.5))
    check_rewrite(b.done(y), "none")


def test_erf_half_first_then_div_by_two_and_distributed_forms():
    # (x * (erf(x / 1.41421356) + 1)) / 2
    b = Builder()
    y1 = b("Div", b("Mul", b.x, b("Add", b("Erf", b("Div", b.x, 1.41421356)), 1.0)), 2.0)
    # 0.5 * x + (0.5 * x) * erf(x / sqrt2): sum of the two terms, x read four times
    t = b("Erf", b("Div", b.x, float(SQRT2)))
    y2 = b("Add", b("Mul", 0.5, b.x), b("Mul", b("Mul", b.x, 0.5), t))
    check_rewrite(b.done(y1, y2), "none", count=2)


@pytest.mark.parametrize("const_shape", [(), (1,), (1, 1, 1)], ids=["scalar", "1", "1x1x1"])
def test_erf_with_one_element_tensor_constants(const_shape):
    b = Builder(const_shape=const_shape)
    check_rewrite(b.done(erf_torch(b)), "none")


@pytest.mark.parametrize("dtype,rtol", [(DType.float16, 2e-3), (DType.bfloat16, 2e-2)], ids=["f16", "bf16"])
def test_erf_low_precision_dtypes(dtype, rtol):
    b = Builder(dtype=dtype)
    check_rewrite(b.done(erf_torch(b)), "none", rtol=rtol, atol=rtol)


# ---- the tanh form --------------------------------------------------------------------------------------
def tanh_form(b: Builder, cube, k=0.7978845608, c=0.044715, half=0.5):
    """0.5 * x * (1 + tanh(k * (x + c * cube)))  (GPT-2's gelu_new, HF NewGELUActivation)."""
    inner = b("Add", b.x, b("Mul", c, cube))
    return b("Mul", b("Mul", half, b.x), b("Add", 1.0, b("Tanh", b("Mul", k, inner))))


def test_tanh_with_pow_float_exponent():
    b = Builder()
    check_rewrite(b.done(tanh_form(b, b("Pow", b.x, 3.0))), "tanh")


def test_tanh_with_pow_int_exponent_and_one_element_constants():
    b = Builder(const_shape=(1,))
    exponent = b.g.add_constant(np.array([3], np.int64))
    check_rewrite(b.done(tanh_form(b, b("Pow", b.x, exponent), k=0.79788456)), "tanh")


def test_tanh_with_x_times_x_times_x():
    b = Builder()
    check_rewrite(b.done(tanh_form(b, b("Mul", b("Mul", b.x, b.x), b.x))), "tanh")


def test_tanh_with_x_times_square_and_other_orders():
    # x * 0.5 * (tanh((0.044715 * (x * (x * x)) + x) * 0.7978845608) + 1)
    b = Builder(const_shape=(1,))
    cube = b("Mul", b.x, b("Mul", b.x, b.x))
    arg = b("Mul", b("Add", b("Mul", 0.044715, cube), b.x), 0.7978845608)
    y = b("Mul", b("Mul", b.x, 0.5), b("Add", b("Tanh", arg), 1.0))
    check_rewrite(b.done(y), "tanh")


def test_tanh_fast_gelu_factored_form():
    # 0.5 * x * (1 + tanh(x * 0.7978845608 * (1 + 0.044715 * x * x)))  (HF FastGELUActivation)
    b = Builder()
    arg = b("Mul", b("Mul", b.x, 0.7978845608), b("Add", 1.0, b("Mul", b("Mul", 0.044715, b.x), b.x)))
    y = b("Mul", b("Mul", 0.5, b.x), b("Add", 1.0, b("Tanh", arg)))
    check_rewrite(b.done(y), "tanh")


# ---- several patterns, names, nesting ---------------------------------------------------------------------
def test_output_name_kept_nested_gelu_and_other_users_of_x():
    b = Builder()
    h = b("Relu", b.x)
    g1 = erf_torch(b, h)                       # gelu(relu(x)), also read by the second pattern and an output
    g2 = erf_torch(b, g1)                      # gelu(gelu(relu(x)))
    other = b("Add", h, 1.0)                   # x of a pattern may have other users
    g = b.done(g2, g1, other)
    r = check_rewrite(g, "none", count=2)
    gelus = [n for n in r.graph.nodes if n.op == "Gelu"]
    assert [n.outputs[0] for n in gelus] == [g1, g2] and gelus[0].inputs == (h,) and gelus[1].inputs == (g1,)
    assert r.graph.ops_histogram() == {"Add": 1, "Gelu": 2, "Relu": 1}


# ---- near misses: left exactly as they were ----------------------------------------------------------------
def test_wrong_constants_are_left_alone():
    for kwargs in (dict(half=0.6), dict(sqrt2=1.5), dict(one=2.0), dict(sqrt2=1.4142)):
        b = Builder()
        assert_unchanged(b.done(erf_torch(b, **kwargs)))
    for kwargs in (dict(c=0.04), dict(k=0.75), dict(half=0.6)):
        b = Builder()
        assert_unchanged(b.done(tanh_form(b, b("Pow", b.x, 3.0), **kwargs)))
    b = Builder()
    assert_unchanged(b.done(tanh_form(b, b("Pow", b.x, 2.0))))               # x^2, not x^3
    b = Builder()                                             # tanh of the erf form's argument
    assert_unchanged(b.done(b("Mul", b("Mul", b.x, b("Add", b("Tanh", b("Div", b.x, float(SQRT2))), 1.0)), 0.5)))
    b = Builder()                                             # erf of the tanh form's argument
    inner = b("Add", b.x, b("Mul", 0.044715, b("Pow", b.x, 3.0)))
    assert_unchanged(b.done(b("Mul", b("Mul", 0.5, b.x), b("Add", 1.0, b("Erf", b("Mul", 0.7978845608, inner))))))


def test_intermediate_with_an_extra_consumer_is_left_alone():
    b = Builder()
    e = b("Erf", b("Div", b.x, float(SQRT2)))
    y = b("Mul", b("Mul", b.x, b("Add", e, 1.0)), 0.5)
    z = b("Neg", e)                                          # erf(x/sqrt2) read outside the pattern
    assert_unchanged(b.done(y, z))


def test_intermediate_graph_output_is_left_alone():
    b = Builder()
    d = b("Div", b.x, float(SQRT2))
    y = b("Mul", b("Mul", b.x, b("Add", b("Erf", d), 1.0)), 0.5)
    assert_unchanged(b.done(y, d))


def test_different_x_values_are_left_alone():
    b = Builder()
    x2 = b.g.add_input("x2", TensorType(F32, (2, 3, 8)))
    y = b("Mul", b("Mul", b.x, b("Add", b("Erf", b("Div", x2, float(SQRT2))), 1.0)), 0.5)
    assert_unchanged(b.done(y))
    b = Builder()                                            # same computation, two values: not one x
    xa, xb = b("Relu", b.x), b("Relu", b.x)
    y = b("Mul", b("Mul", xa, b("Add", b("Erf", b("Div", xb, float(SQRT2))), 1.0)), 0.5)
    assert_unchanged(b.done(y))
    b = Builder()                                            # tanh form: the cube of another value
    x2 = b.g.add_input("x2", TensorType(F32, (2, 3, 8)))
    assert_unchanged(b.done(tanh_form(b, b("Mul", b("Mul", b.x, x2), b.x))))


def test_unsupported_dtype_broadcast_and_per_channel_constants_are_left_alone():
    b = Builder(dtype=DType.float64)
    assert_unchanged(b.done(erf_torch(b)))
    b = Builder(shape=(3, 8), const_shape=(1, 1, 1))        # the constants broadcast x to rank 3
    assert_unchanged(b.done(erf_torch(b)))
    b = Builder()
    half = b.g.add_constant(np.full((8,), 0.5, np.float32))  # per-channel constant, even if all 0.5
    assert_unchanged(b.done(erf_torch(b, half=half)))


def test_merged_terms_are_left_alone():
    # 0.25 * (x + x) * (1 + erf(x / sqrt2)) is GELU too, but the pass only rewrites what needs no term merging
    b = Builder()
    y = b("Mul", b("Mul", 0.25, b("Add", b.x, b.x)), b("Add", 1.0, b("Erf", b("Div", b.x, float(SQRT2)))))
    assert_unchanged(b.done(y))


# ---- pipelines ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt_level", [1, 2, 3])
def test_registered_after_canonicalization_and_before_fusion(opt_level):
    for dtype in ("fp32", "bf16"):
        names = pass_names(pipeline_for(opt_level, dtype))
        assert names.count("recognize_gelu") == 1
        pos = names.index("recognize_gelu")
        assert names.index("eliminate_common_subexpressions") < pos
        for later in ("fuse_epilogues", "fuse_elementwise", "canonicalize_linear_ops", "convert_to_bf16"):
            if later in names:
                assert names.index(later) > pos
    assert "recognize_gelu" not in pass_names(pipeline_for(0))


def _onnx_mlp_with_decomposed_gelu() -> onnx.ModelProto:
    """x @ W + b, then the exporter's erf GELU with Constant nodes (scalar and [1]), then a second linear."""
    rng = np.random.default_rng(3)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel())
             for n, a in (("w1", rng.standard_normal((16, 32)).astype(np.float32) * 0.3),
                          ("b1", rng.standard_normal(32).astype(np.float32) * 0.3),
                          ("w2", rng.standard_normal((32, 8)).astype(np.float32) * 0.3))]

    def const(name, value, shape):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(
            name + "_t", TensorProto.FLOAT, shape, [value]))

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["mm"]), helper.make_node("Add", ["mm", "b1"], ["h"]),
             const("c_sqrt2", float(SQRT2), []), const("c_one", 1.0, [1]), const("c_half", 0.5, []),
             helper.make_node("Div", ["h", "c_sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "c_one"], ["s"]), helper.make_node("Mul", ["h", "s"], ["m"]),
             helper.make_node("Mul", ["m", "c_half"], ["act"]), helper.make_node("MatMul", ["act", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_model_gelu_fuses_into_the_gemm_epilogue_at_o2():
    from accelc.frontend.onnx import load_onnx
    g = load_onnx(_onnx_mlp_with_decomposed_gelu())
    out, log = PassManager().run(g, PassContext(opt_level=2, debug=True))
    assert out.ops_histogram() == {"FusedGemm": 2}
    assert [n.attrs.activation for n in out.nodes] == [Activation("gelu"), Activation("none")]
    entry = next(e for e in log if e["pass"] == "recognize_gelu")
    assert entry["changed"] and entry["summary"] == "replaced 1 decomposed GELU with Gelu (1 erf)"
    feeds = feeds_for(g)
    np.testing.assert_allclose(evaluate(out, feeds)["y"], evaluate(g, feeds)["y"], rtol=1e-5, atol=1e-5)


def _export_encoder():
    spec = importlib.util.spec_from_file_location("export_encoder", ROOT / "examples" / "export_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.export_encoder


def test_pytorch_encoder_gelu_becomes_a_fused_gemm_activation(tmp_path):
    pytest.importorskip("torch")
    from accelc.frontend.onnx import load_onnx
    path = tmp_path / "encoder.onnx"
    _export_encoder()(path, layers=1, hidden=64, heads=4, ffn=128, seq=8)
    g = load_onnx(path)
    assert "Erf" in g.ops_histogram() and "Gelu" not in g.ops_histogram()     # opset 17: decomposed
    out, log = PassManager().run(g, PassContext(opt_level=2, debug=True))
    hist = out.ops_histogram()
    assert "FusedElementwise" not in hist and "Erf" not in hist and "Gelu" not in hist
    acts = [n.attrs.activation.kind for n in out.nodes if n.op == "FusedGemm"]
    assert acts.count("gelu") == 1
    ffn_in = next(n for n in out.nodes if n.op == "FusedGemm" and n.attrs.activation.kind == "gelu")
    assert len(ffn_in.inputs) == 3 and ffn_in.inputs[2] in out.constants            # bias fused too
    assert next(e for e in log if e["pass"] == "recognize_gelu")["summary"] == \
        "replaced 1 decomposed GELU with Gelu (1 erf)"
    feeds = feeds_for(g)
    a, b = evaluate(g, feeds), evaluate(out, feeds)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-4)
