"""The IR verifier: structural invariants every graph must keep after every pass."""
from __future__ import annotations

from ..errors import VerificationError
from .graph import Graph
from .registry import check_arity, get_op, infer_types


def verify(graph: Graph, *, check_types: bool = True) -> None:
    """Raises ``VerificationError`` naming the first broken invariant.

    Checks: SSA (one definition per value), topological order, known ops with attrs of the right type and
    arity, a recorded type for every value, outputs defined, and (``check_types``) that re-running type
    inference gives the recorded types.
    """
    defined: set[str] = set()

    def define(v: str, what: str) -> None:
        if v in defined:
            raise VerificationError(f"value '{v}' is defined twice (second time by {what})")
        if v not in graph.types:
            raise VerificationError(f"value '{v}' (defined by {what}) has no recorded type")
        defined.add(v)

    for v in graph.inputs:
        define(v, "graph input")
    for v in graph.constants:
        define(v, "constant")
        t, a = graph.types[v], graph.constants[v]
        if tuple(a.shape) != tuple(t.shape) or a.dtype != t.dtype.np:
            raise VerificationError(f"constant '{v}' is {a.dtype}{list(a.shape)} but its type says {t}")
    for node in graph.nodes:
        opdef = get_op(node.op)
        check_arity(opdef, len(node.inputs))
        for i in node.inputs:
            if i and i not in defined:
                raise VerificationError(f"node '{node.name}' ({node.op}) uses '{i}' before it is defined")
        if check_types:
            in_types = [graph.types[i] if i else None for i in node.inputs]
            consts = [graph.constants.get(i) if i else None for i in node.inputs]
            inferred = infer_types(opdef, in_types, node.attrs, consts)
            if len(inferred) != len(node.outputs):
                raise VerificationError(f"node '{node.name}' ({node.op}) has {len(node.outputs)} outputs, "
                                        f"its op infers {len(inferred)}")
            for o, t in zip(node.outputs, inferred):
                rec = graph.types.get(o)
                if rec is not None and (rec.dtype != t.dtype or _static_mismatch(rec.shape, t.shape)):
                    raise VerificationError(f"value '{o}' of node '{node.name}' ({node.op}) is recorded as {rec} "
                                            f"but infers as {t}")
        for o in node.outputs:
            define(o, f"node '{node.name}' ({node.op})")
    for o in graph.outputs:
        if o not in defined:
            raise VerificationError(f"graph output '{o}' is never defined")


def _static_mismatch(a, b) -> bool:
    if len(a) != len(b):
        return True
    return any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a, b))
