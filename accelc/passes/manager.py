"""The pass manager: named passes, fixed-point groups, pipelines per opt level and dtype, the pass log.

A pass is a Python object (``Pass``) wrapping ``run(graph, ctx) -> PassResult``. Pipelines are lists
of those objects, never of strings, so a typo in a pipeline is an ``ImportError`` at load time rather
than a silently skipped pass. Strings appear only at the user boundary (``dump_after``,
``stop_after``), where they are checked against the pipeline and rejected with the list of valid names.

Guarantees of ``PassManager.run``:

* the input graph is never modified (each pass returns a new graph; in debug mode the manager checks
  that the pass left its input alone);
* with ``ctx.debug`` the verifier runs after every pass and a failure names the pass that broke the IR;
* the pass log has exactly one entry per pass of the pipeline that ran (a pass inside a fixed-point
  group gets one entry that sums its iterations).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, TextIO, Union

from ..errors import AccelcError, VerificationError
from ..ir.graph import Graph
from ..ir.printer import print_graph
from ..ir.verify import verify
from ..targets import Target

DTYPES = ("fp32", "bf16", "fp16")
OPT_LEVELS = (0, 1, 2, 3)


@dataclass
class PassContext:
    """Options every pass can read. ``dump_stream`` receives the IR printed after passes in ``dump_after``."""
    target: Target | None = None
    dtype: str = "fp32"
    opt_level: int = 2
    debug: bool = False
    dump_after: set[str] = field(default_factory=set)
    stop_after: str | None = None
    dump_stream: TextIO | None = None
    progress: Callable[[str, int, int], None] | None = None   # (pass name, index, total)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise AccelcError(f"unknown dtype '{self.dtype}' for the pass pipeline; expected one of "
                              f"{', '.join(DTYPES)}")
        if self.opt_level not in OPT_LEVELS:
            raise AccelcError(f"opt_level must be one of {OPT_LEVELS}, got {self.opt_level!r}")
        self.dump_after = set(self.dump_after)


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    changed: bool
    summary: str = ""


RunFn = Callable[[Graph, PassContext], PassResult]


@dataclass(frozen=True)
class Pass:
    """A named graph rewrite. ``doc`` is the pass module's docstring (what it rewrites and guarantees)."""
    name: str
    run: RunFn = field(compare=False)
    doc: str = field(default="", compare=False)

    def __call__(self, graph: Graph, ctx: PassContext) -> PassResult:
        return self.run(graph, ctx)


@dataclass(frozen=True)
class FixedPoint:
    """Passes run in turn, again and again, until a whole round changes nothing (at most ``max_rounds``).

    Used where passes feed each other: folding a constant can make a shape static, which lets a
    Reshape's shape input fold, which makes more shapes static.
    """
    passes: tuple[Pass, ...]
    max_rounds: int = 8

    @property
    def name(self) -> str:
        return "fixed_point(" + ", ".join(p.name for p in self.passes) + ")"


Step = Union[Pass, FixedPoint]


def pass_names(pipeline: Sequence[Step]) -> list[str]:
    """The names of every pass in a pipeline, groups flattened, in order."""
    names: list[str] = []
    for step in pipeline:
        names.extend(p.name for p in (step.passes if isinstance(step, FixedPoint) else (step,)))
    return names


def pipeline_for(opt_level: int, dtype: str = "fp32", target: Target | None = None) -> list[Step]:
    """The pipeline for an opt level and dtype.

    * O0: only shape simplification (Shape/Size/shape-input folding to a fixed point). Backends need
      every dimension static and every Reshape/Expand/Slice shape known at compile time; a frontend
      graph computes many of those at run time (``Shape -> Gather -> Concat -> Reshape``). O0 resolves
      exactly that and nothing else, so what runs is otherwise the model as written.
    * O1: canonical cleanup: constant folding and shape simplification to a fixed point, identity
      removal, BatchNormalization folding, CSE, decomposed-GELU recognition and DCE.
    * O2: O1 + fusion: GEMM/Conv epilogues first (bias, activation, residual into FusedGemm/FusedConv),
      then chains of elementwise ops into FusedElementwise.
    * O3: O2 for now; target-specific passes (layouts, tiling hints, sparsity) are added here, keyed on
      ``target``.

    ``dtype="bf16"`` (``"fp16"``) adds ``convert_to_bf16`` (``convert_to_fp16``) after fusion (at O0/O1
    too: the GEMMs it converts are the FusedGemm/FusedConv nodes, so at O0/O1 it first needs
    ``fuse_epilogues``' canonicalisation of plain MatMul/Gemm/Conv; see ``convert_precision``).
    """
    from . import (convert_precision, eliminate_common_subexpressions, eliminate_dead_code, fold_batchnorm,
                   fold_constants, fuse_elementwise, fuse_epilogues, recognize_gelu, remove_identities,
                   simplify_shapes)

    if opt_level not in OPT_LEVELS:
        raise AccelcError(f"opt_level must be one of {OPT_LEVELS}, got {opt_level!r}")
    if dtype not in DTYPES:
        raise AccelcError(f"unknown dtype '{dtype}'; expected one of {', '.join(DTYPES)}")
    shapes = FixedPoint((simplify_shapes.PASS, fold_constants.SHAPE_ONLY_PASS))
    if opt_level == 0:
        pipeline: list[Step] = [shapes, eliminate_dead_code.PASS]
    else:
        canonical = FixedPoint((fold_constants.PASS, simplify_shapes.PASS, remove_identities.PASS,
                                fold_batchnorm.PASS))
        # recognize_gelu after the fixed point and CSE: its constants are folded, identities and
        # duplicate values are gone, so one x is one value; before fusion, so the Gelu reaches the epilogue
        pipeline = [canonical, eliminate_common_subexpressions.PASS, recognize_gelu.PASS, eliminate_dead_code.PASS]
        if opt_level >= 2 and target is not None and target.backend == "fpga_hls":
            # FPGA layers keep one fixed-point type per op: epilogues are fused (the backend splits
            # them into typed layers again) but elementwise chains are not
            pipeline += [fuse_epilogues.PASS, eliminate_dead_code.PASS]
        elif opt_level >= 2:
            pipeline += [fuse_epilogues.PASS, fuse_elementwise.PASS, eliminate_dead_code.PASS]
    if dtype in ("bf16", "fp16"):
        if opt_level < 2:
            pipeline.append(fuse_epilogues.CANONICALIZE_PASS)
        pipeline.append(convert_precision.BF16_PASS if dtype == "bf16" else convert_precision.FP16_PASS)
    return pipeline


def _fingerprint(graph: Graph) -> tuple:
    return (tuple(graph.nodes), tuple(graph.inputs), tuple(graph.outputs), tuple(graph.types.items()),
            tuple((k, id(v)) for k, v in graph.constants.items()))


@dataclass
class _Entry:
    name: str
    changed: bool = False
    summaries: list[str] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0
    runs: int = 0

    def as_dict(self) -> dict:
        summary = "; ".join(s for s in self.summaries if s) or "no change"
        entry = {"pass": self.name, "changed": self.changed, "summary": summary,
                 "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                 "seconds": round(self.seconds, 6)}
        if self.runs > 1:
            entry["runs"] = self.runs
        return entry


class _StopPipeline(Exception):
    def __init__(self, graph: Graph):
        super().__init__("stop_after reached")
        self.graph = graph


class PassManager:
    """Runs a pipeline (a list of ``Pass`` and ``FixedPoint`` steps) under a ``PassContext``."""

    def __init__(self, pipeline: Iterable[Step] | None = None):
        self.pipeline = list(pipeline) if pipeline is not None else None

    def run(self, graph: Graph, ctx: PassContext) -> tuple[Graph, list[dict]]:
        pipeline = self.pipeline if self.pipeline is not None else pipeline_for(ctx.opt_level, ctx.dtype,
                                                                               ctx.target)
        names = pass_names(pipeline)
        self._check_names(names, ctx)
        log: list[_Entry] = []
        started = 0
        current = graph
        try:
            for step in pipeline:
                group = step.passes if isinstance(step, FixedPoint) else (step,)
                entries = [_Entry(p.name) for p in group]
                log.extend(entries)
                rounds = step.max_rounds if isinstance(step, FixedPoint) else 1
                for _ in range(rounds):
                    round_changed = False
                    for p, entry in zip(group, entries):
                        if entry.runs == 0:
                            started += 1
                            if ctx.progress is not None:
                                ctx.progress(p.name, started, len(names))
                        current, changed = self._execute(p, entry, current, ctx)
                        round_changed |= changed
                    if not round_changed:
                        break
        except _StopPipeline as stop:
            current = stop.graph
        return current, [e.as_dict() for e in log]

    @staticmethod
    def _execute(p: Pass, entry: _Entry, graph: Graph, ctx: PassContext) -> tuple[Graph, bool]:
        if entry.runs == 0:
            entry.nodes_before = len(graph.nodes)
        before = _fingerprint(graph) if ctx.debug else None
        start = time.perf_counter()
        result = p.run(graph, ctx)
        entry.seconds += time.perf_counter() - start
        entry.runs += 1
        if not isinstance(result, PassResult):
            raise VerificationError(f"pass {p.name} returned {type(result).__name__}, not a PassResult")
        if ctx.debug:
            if _fingerprint(graph) != before:
                raise VerificationError(f"pass {p.name} modified its input graph (passes must copy first)")
            try:
                verify(result.graph)
            except VerificationError as e:
                raise VerificationError(f"IR is invalid after pass {p.name}: {e}") from e
        if result.changed:
            entry.changed = True
            entry.summaries.append(result.summary)
        entry.nodes_after = len(result.graph.nodes)
        if p.name in ctx.dump_after:
            stream = ctx.dump_stream if ctx.dump_stream is not None else sys.stderr
            run_note = f" (run {entry.runs})" if entry.runs > 1 else ""
            stream.write(f"// ----- IR after {p.name}{run_note} -----\n{print_graph(result.graph)}\n")
        if ctx.stop_after == p.name:
            raise _StopPipeline(result.graph)
        return result.graph, result.changed

    @staticmethod
    def _check_names(names: list[str], ctx: PassContext) -> None:
        valid = sorted(set(names))
        unknown = sorted(n for n in ctx.dump_after if n not in valid)
        if ctx.stop_after is not None and ctx.stop_after not in valid:
            unknown.append(ctx.stop_after)
        if unknown:
            raise AccelcError(f"unknown pass name(s) {', '.join(repr(n) for n in unknown)} in dump_after/"
                              f"stop_after; passes of this pipeline: {', '.join(valid)}")


def run_passes(graph: Graph, ctx: PassContext, pipeline: Sequence[Step] | None = None) -> tuple[Graph, list[dict]]:
    """Convenience: ``PassManager(pipeline).run(graph, ctx)``."""
    return PassManager(pipeline).run(graph, ctx)
