"""Totals of the per-layer estimates, the part's capacity check and the static checks of a design.

Totals: resources add up; in ``io_parallel`` the whole design is one pipeline, so latency is the sum
of the layers' latencies and the initiation interval the largest layer II; in ``io_stream`` layers are
DATAFLOW processes, whose latency we also bound by the sum (overlap makes the real figure lower) and
whose II is again the slowest process. These are a model's figures, not a synthesis report: the report
says so, and ``build_prj.tcl`` gives the real ones on a machine with Vitis.
"""
from __future__ import annotations

import math
from typing import Any

from ...errors import BackendError
from ...targets import Target
from .codegen import Design
from .layers.base import MAX_PARTITION, Estimate, Finding

RESOURCES = (("dsp", "DSP"), ("bram_18k", "BRAM18K"), ("lut", "LUT"), ("ff", "FF"))


def layer_estimates(d: Design) -> list[tuple[Any, Estimate]]:
    return [(layer, layer.estimate(io=d.io)) for layer in d.layers]


def totals(d: Design, ests: list[tuple[Any, Estimate]], clock_mhz: float) -> dict[str, Any]:
    t = {key: int(sum(getattr(e, key) for _, e in ests)) for key, _ in RESOURCES}
    cycles = int(sum(e.latency for _, e in ests))
    t["latency_cycles"] = cycles
    t["latency_ns"] = round(cycles * 1000.0 / clock_mhz, 3)
    t["ii"] = int(max((e.ii for _, e in ests), default=1))
    t["throughput_per_s"] = round(clock_mhz * 1e6 / max(t["ii"], 1), 1)
    return t


def capacity_findings(d: Design, ests, target: Target) -> list[Finding]:
    """Errors for resources over the part's capacity, naming the biggest layer and a reuse factor that fits."""
    out: list[Finding] = []
    for key, label in RESOURCES:
        avail = int(target.resources.get(key, 0))
        used = sum(getattr(e, key) for _, e in ests)
        if not avail or used <= avail:
            continue
        layer, e = max(ests, key=lambda le: getattr(le[1], key))
        if key == "dsp":
            need = used - avail                          # DSPs the design must give up
            mine = getattr(e, key)
            if mine > need:                              # the biggest layer alone can absorb it
                factor = math.ceil(layer.reuse_factor * mine / (mine - need))
                fix = (f"raise layer '{layer.name}''s reuse factor to {factor} or more (fpga layers: "
                       f"{{'{layer.name}': {{'reuse_factor': {factor}}}}}), or use fewer bits")
            else:
                factor = math.ceil(max(lay.reuse_factor for lay, _ in ests) * used / avail)
                fix = (f"layer '{layer.name}' is the largest ({mine} DSP); raise the global reuse factor to about "
                       f"{factor} (--reuse-factor {factor}){', use io_stream' if d.io == 'io_parallel' else ''}, "
                       f"or use fewer bits")
        elif key == "bram_18k":
            fix = (f"layer '{layer.name}' stores the most ({getattr(e, key)} BRAM18K); use fewer bits, or a part "
                   f"with more on-chip memory (weights streamed from off-chip memory are not generated yet)")
        else:
            fix = (f"layer '{layer.name}' is the largest ({getattr(e, key)} {label}); raise its reuse factor"
                   f"{', use io_stream' if d.io == 'io_parallel' else ''} or use fewer bits")
        out.append(Finding("error", layer.name, f"the design needs {used} {label}, the {target.name} part "
                                                f"({target.part}) has {avail}: {fix}"))
    return out


def partition_findings(d: Design) -> list[Finding]:
    """io_parallel partitions every tensor into registers; past Vitis' limit that is refused."""
    out: list[Finding] = []
    if d.io != "io_parallel":
        return out
    for layer in d.layers:
        v = layer.output
        if v.size > MAX_PARTITION:
            out.append(Finding("error", layer.name,
                               f"tensor '{v.name}' has {v.size} elements; io_parallel partitions it completely and "
                               f"Vitis HLS refuses more than {MAX_PARTITION}: compile with io_stream (--fpga-io io_stream)"))
    return out


def run_checks(d: Design, target: Target, check_capacity: bool = True):
    """Layer checks, the partition limit and the part's capacity; returns (estimates, findings) and
    raises one BackendError listing every error."""
    findings: list[Finding] = []
    for layer in d.layers:
        findings += layer.checks(d.io)
    findings += partition_findings(d)
    ests = layer_estimates(d)
    if check_capacity:
        findings += capacity_findings(d, ests, target)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        lines = "\n".join(f"  - layer '{f.layer}': {f.message}" for f in errors)
        raise BackendError(f"the FPGA design does not pass its static checks ({len(errors)} problem(s)):\n{lines}")
    return ests, findings
