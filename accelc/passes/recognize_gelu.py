"""Recognizes GELU written out in elementary ops and replaces it with one ``Gelu`` node.

Why: exporters before ONNX opset 20 have no Gelu op, so PyTorch's ``F.gelu``, BERT's GELU and GPT-2's
``gelu_new`` arrive decomposed, e.g. ``x * (erf(x / 1.4142135) + 1) * 0.5`` or
``0.5 * x * (1 + tanh(0.7978845608 * (x + 0.044715 * Pow(x, 3))))``. Left so, the chain becomes a
``FusedElementwise`` loop after the GEMM that produced ``x``; as a ``Gelu`` it fuses into that GEMM's
epilogue (activation ``gelu`` / ``gelu_tanh``).

How: every Add/Mul/Div node is tried as the root of a pattern, latest first. The subexpression under it
is read as a polynomial in one value ``x`` and at most one atom ``T = Erf(u)`` or ``T = Tanh(u)``
(``u`` itself a polynomial in ``x``), through Add, Mul, Div by a constant and Pow by a small integer
constant; its leaves are ``x`` and one-element float constants. A node below the root is part of the
pattern only when its output has exactly one use and is not a graph output; anything else is a leaf. The
root is rewritten to ``Gelu(x)`` when

* the root is ``0.5*x + 0.5*x*T`` (any association, commutation, ``* 0.5`` or ``/ 2``),
* and ``T = Erf(u)`` with ``u = x / sqrt(2)`` (approximate "none"), or ``T = Tanh(u)`` with
  ``u = sqrt(2/pi) * (x + 0.044715 * x^3)`` (approximate "tanh"; ``x^3`` as ``Pow(x, 3)``, ``x*x*x``,
  ``(x*x)*x``; also ``x * sqrt(2/pi) * (1 + 0.044715*x*x)``),

each coefficient within a relative tolerance of the exact value that fits the dtype's constants
(1e-6 for float32, so ``1.4142135``, ``0.70710677``, ``0.7978845608`` and ``0.79788456`` all match).

Guarantees, so that semantics never change:

* exactly one non-constant leaf: ``x`` is the same value at every place of the pattern;
* every value inside the pattern (all but the root) has one use, inside the pattern, and is not a
  graph output, so removing the pattern's nodes removes nothing anything else reads;
* ``x`` and every pattern value are float32, float16 or bfloat16, constants are one-element float
  tensors, and the root has exactly ``x``'s dtype and shape (a constant that broadcasts ``x`` to a larger
  shape is not an identity of shape, so such a pattern stays);
* sums and products must not merge terms (no ``x + x``, no term that cancels another), so the original
  graph computed the GELU formula up to reassociation; results agree with the ``Gelu`` reference within
  the dtype's rounding;
* the root's output keeps its name (a graph output stays one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ir.dtypes import DType
from ..ir.graph import Graph, Node
from ..ir.ops.elementwise import GeluAttrs
from .manager import Pass, PassContext, PassResult
from .rewrite import use_counts

_FLOATS = (DType.float32, DType.float16, DType.bfloat16)
# relative tolerance on coefficients: about 2 ulps of the dtype's constants, 1e-6 for float32 (decimal
# constants written with 8 significant digits, products of two rounded constants)
_RTOL = {DType.float32: 1e-6, DType.float16: 2e-3, DType.bfloat16: 1.6e-2}
_ROOT_OPS = frozenset({"Add", "Mul", "Div"})
_MAX_NODES = 24            # a GELU takes at most ~10 nodes; bounds the work per candidate root
_MAX_POWER = 4

SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_CUBIC = 0.044715

# A polynomial maps a monomial key (power of x, power of the atom T: 0 or 1) to its coefficient.
Poly = dict[tuple[int, int], float]


class _NoMatch(Exception):
    pass


@dataclass
class _Match:
    """What one walk from a candidate root found."""
    graph: Graph
    uses: dict[str, int]
    outputs: set[str]
    taken: set[int]
    producers: dict[str, Node]
    x: str | None = None
    atom: Node | None = None            # the Erf or Tanh node
    atom_arg: Poly | None = None
    nodes: list[Node] = field(default_factory=list)    # absorbed nodes, the root included

    def fail(self, why: str = "") -> None:
        raise _NoMatch(why)

    def check_float(self, value: str) -> DType:
        dt = self.graph.types[value].dtype
        if dt not in _FLOATS:
            self.fail(f"{value} is {dt.short}")
        return dt

    def absorbable(self, value: str) -> Node | None:
        """The producer of ``value`` when it may become part of the pattern (one use, not an output)."""
        node = self.producers.get(value)
        if node is None or len(node.outputs) != 1 or id(node) in self.taken:
            return None
        if node.op not in ("Add", "Mul", "Div", "Pow", "Erf", "Tanh"):
            return None
        if self.uses.get(value, 0) != 1 or value in self.outputs:
            return None
        return node

    def leaf(self, value: str) -> Poly:
        c = self.graph.constants.get(value)
        if c is not None:
            if c.size != 1 or not DType.from_numpy(c.dtype).is_float:
                self.fail("constant is not a one-element float")
            v = float(np.asarray(c, dtype=np.float64).reshape(()))
            if not math.isfinite(v):
                self.fail("non-finite constant")
            return {(0, 0): v}
        self.check_float(value)
        if self.x is None:
            self.x = value
        elif self.x != value:
            self.fail("two different non-constant leaves")
        return {(1, 0): 1.0}

    def walk(self, value: str, node: Node | None) -> Poly:
        if node is None:
            return self.leaf(value)
        if len(self.nodes) >= _MAX_NODES:
            self.fail("too many nodes")
        self.check_float(value)
        self.nodes.append(node)
        op, ins = node.op, node.inputs

        def sub(v: str) -> Poly:
            return self.walk(v, self.absorbable(v))

        if op == "Add":
            return _add(sub(ins[0]), sub(ins[1]))
        if op == "Mul":
            return _mul(sub(ins[0]), sub(ins[1]))
        if op == "Div":
            num, den = sub(ins[0]), self.constant_of(ins[1])
            if den == 0.0:
                self.fail("division by zero")
            return {k: c / den for k, c in num.items()}
        if op == "Pow":
            base, e = sub(ins[0]), self.constant_of(ins[1], any_dtype=True)
            if e != int(e) or not 1 <= e <= _MAX_POWER:
                self.fail("exponent is not a small positive integer")
            result = base
            for _ in range(int(e) - 1):
                result = _mul(result, base)
            return result
        # Erf / Tanh: the one atom of the pattern
        if self.atom is not None:
            self.fail("more than one Erf/Tanh")
        self.atom = node
        self.atom_arg = sub(ins[0])
        if any(t for _, t in self.atom_arg):
            self.fail("atom of an atom")
        return {(0, 1): 1.0}

    def constant_of(self, value: str, any_dtype: bool = False) -> float:
        c = self.graph.constants.get(value)
        if c is None or c.size != 1:
            self.fail("not a one-element constant")
        dt = DType.from_numpy(c.dtype)
        if not (dt.is_float or (any_dtype and dt.is_int)):
            self.fail("constant of an unexpected dtype")
        v = float(np.asarray(c, dtype=np.float64).reshape(()))
        if not math.isfinite(v):
            self.fail("non-finite constant")
        return v


def _add(a: Poly, b: Poly) -> Poly:
    if a.keys() & b.keys():
        raise _NoMatch("a sum merges terms")
    return {**a, **b}


def _mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for (pa, ta), ca in a.items():
        for (pb, tb), cb in b.items():
            key = (pa + pb, ta + tb)
            if key[1] > 1 or key[0] > _MAX_POWER:
                raise _NoMatch("power too high")
            if key in out:
                raise _NoMatch("a product merges terms")
            out[key] = ca * cb
    return out


def _close(p: Poly, want: Poly, rtol: float) -> bool:
    return p.keys() == want.keys() and all(abs(p[k] - w) <= rtol * abs(w) for k, w in want.items())


def _classify(m: _Match, root_poly: Poly) -> str | None:
    """``"none"`` or ``"tanh"`` when the walk found a GELU, else None."""
    if m.x is None or m.atom is None or m.atom_arg is None:
        return None
    rtol = _RTOL[m.graph.types[m.x].dtype]
    if not _close(root_poly, {(1, 0): 0.5, (1, 1): 0.5}, rtol):
        return None
    if m.atom.op == "Erf" and _close(m.atom_arg, {(1, 0): 1.0 / SQRT_2}, rtol):
        return "none"
    if m.atom.op == "Tanh" and _close(m.atom_arg, {(1, 0): SQRT_2_OVER_PI, (3, 0): SQRT_2_OVER_PI * TANH_CUBIC},
                                      rtol):
        return "tanh"
    return None


def _try_root(graph: Graph, root: Node, uses, outputs, taken, producers) -> tuple[str, str, list[Node]] | None:
    """(x, approximate, absorbed nodes) when ``root`` is the last node of a decomposed GELU."""
    out = root.outputs[0]
    if len(root.outputs) != 1 or graph.types[out].dtype not in _FLOATS:
        return None
    m = _Match(graph, uses, outputs, taken, producers)
    try:
        poly = m.walk(out, root)
    except _NoMatch:
        return None
    approximate = _classify(m, poly)
    if approximate is None:
        return None
    tx, ty = graph.types[m.x], graph.types[out]
    if tx.dtype != ty.dtype or tuple(tx.shape) != tuple(ty.shape):
        return None
    return m.x, approximate, m.nodes


def run(graph: Graph, ctx: PassContext) -> PassResult:
    if not any(n.op in ("Erf", "Tanh") for n in graph.nodes):
        return PassResult(graph, False, "")
    uses = use_counts(graph)
    outputs = set(graph.outputs)
    producers = graph.producers()
    taken: set[int] = set()
    replaced: dict[int, Node | None] = {}
    g = graph.copy()
    counts = {"none": 0, "tanh": 0}
    for root in reversed(graph.nodes):
        if root.op not in _ROOT_OPS or id(root) in taken:
            continue
        found = _try_root(graph, root, uses, outputs, taken, producers)
        if found is None:
            continue
        x, approximate, nodes = found
        out = root.outputs[0]
        declared = g.types.pop(out)
        g.add_node("Gelu", [x], GeluAttrs(approximate), outputs=[out], name=g.fresh_name("gelu"))
        gelu = g.nodes.pop()
        g.types[out] = declared
        for n in nodes:
            taken.add(id(n))
            replaced[id(n)] = None
        replaced[id(root)] = gelu
        counts[approximate] += 1
    total = sum(counts.values())
    if not total:
        return PassResult(graph, False, "")
    g.nodes = [replaced.get(id(n), n) for n in g.nodes if replaced.get(id(n), n) is not None]
    g.remove_unused_values()        # forgets the absorbed values and constants nothing else reads
    kinds = ", ".join(f"{n} {'erf' if k == 'none' else 'tanh'}" for k, n in counts.items() if n)
    return PassResult(g, True, f"replaced {total} decomposed GELU{'s' if total != 1 else ''} with Gelu ({kinds})")


PASS = Pass("recognize_gelu", run, __doc__)
