"""Shape helpers shared by op type-inference functions."""
from __future__ import annotations

from typing import Sequence

from ...errors import ShapeError
from ..types import Dim


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """NumPy/ONNX multidirectional broadcasting, lenient about symbolic dims.

    Two known dims must agree (or one be 1). A symbolic dim next to a known dim N > 1 resolves to N, and
    two different symbols keep the first: a symbol may stand for a value computed in the graph (the
    output of a Reshape whose shape is not constant yet), so rejecting it here would refuse valid
    models. Shape simplification later makes such dims static and re-inference checks them for real.
    """
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for axis in range(rank):
        dim: Dim = 1
        for s in shapes:
            k = axis - (rank - len(s))
            if k < 0:
                continue
            d = s[k]
            if d == 1 or d == dim:
                continue
            if dim == 1:
                dim = d
            elif isinstance(dim, int) and isinstance(d, int):
                raise ShapeError(f"shapes {[list(s) for s in shapes]} do not broadcast (axis {axis}: {dim} vs {d})")
            elif isinstance(d, int):
                dim = d
        out.append(dim)
    return tuple(out)


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


# ---- helpers added for the non-elementwise op families -----------------------------------------
import itertools as _itertools

_fresh_dims = _itertools.count()


def fresh_dim(what: str) -> str:
    """A new symbolic dim for a size that inference cannot know (e.g. Reshape with a computed shape).

    Names are unique per process, so two unknown sizes never compare equal by accident; the prefix says
    which op produced it so that a printed graph explains itself.
    """
    return f"{what}_{next(_fresh_dims)}"


def normalize_axes(axes: Sequence[int], rank: int, what: str = "axes") -> tuple[int, ...]:
    """Maps possibly negative ``axes`` into ``0..rank-1`` and rejects out-of-range or repeated ones."""
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeError(f"{what} {tuple(axes)}: axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what} {tuple(axes)} repeat an axis")
    return tuple(out)


def dim_product(dims: Sequence[Dim]) -> Dim:
    """Product of dims; symbolic when any factor is symbolic (and no factor is 0)."""
    total = 1
    symbolic = []
    for d in dims:
        if isinstance(d, int):
            total *= d
        else:
            symbolic.append(d)
    if total == 0 or not symbolic:
        return total
    return "*".join(([str(total)] if total != 1 else []) + [str(s) for s in symbolic])
