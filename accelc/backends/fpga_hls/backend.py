"""The FPGA backend: IR graph -> fixed-point design -> Vitis HLS project + C-simulation library.

``lower`` maps the graph to layers, calibrates and types every value, runs the static checks, writes
the project (firmware, testbench with test vectors from the bit-exact NumPy model, ``build_prj.tcl``,
README, ``report.json``) into the artifact under ``project/`` and builds ``model.so``: the same firmware
behind the runtime's C ABI, so ``accelc run`` on an FPGA artifact runs the C-simulation.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...ir import Graph, Node
from ...runtime.module import default_cache_dir
from ...targets import Target
from ..base import BackendOptions, CompiledParts
from . import toolchain
from .codegen import Design, fx_eval_design
from .config import FpgaOptions, assign_types, calibration_inputs
from .estimate import run_checks, totals
from .mapping import Port, map_graph, unsupported_nodes
from .project import csim_library, project_files

TB_SAMPLES = 16          # test vectors written into the project's tb_data/
TOP_NAME = "model"


def _cache_dir(options: BackendOptions) -> Path:
    return (Path(options.cache_dir) if options.cache_dir else default_cache_dir()) / "fpga"


@dataclass
class BuiltDesign:
    """A mapped, typed and checked design with what the report and the project need."""
    design: Design
    in_ports: list[Port]
    out_ports: list[Port]
    calib: list[np.ndarray]          # calibration samples, design layout
    calib_source: str
    float_outputs: list[np.ndarray]  # the design's float model on ``calib``
    estimates: list
    findings: list


def float_vs_fixed(d: Design, calib: list[np.ndarray], ref: list[np.ndarray],
                   names: list[str] | None = None) -> dict[str, Any]:
    """Error of the fixed-point model against ``ref``, the design's float model, on the calibration
    samples (per output, keyed by ``names``: the model's output names)."""
    codes = [v.type.from_float(a) for v, a in zip(d.inputs, calib)]
    fixed = [v.type.to_float(c) for v, c in zip(d.outputs, fx_eval_design(d, codes))]
    out: dict[str, Any] = {"samples": int(calib[0].shape[0]) if calib else 0, "outputs": {}}
    worst, mean = 0.0, 0.0
    for i, (v, f, r) in enumerate(zip(d.outputs, fixed, ref)):
        diff = np.abs(f - r)
        m: dict[str, Any] = {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()),
                             "output_lsb": v.type.lsb}
        flat_f, flat_r = f.reshape(f.shape[0], -1), r.reshape(r.shape[0], -1)
        if flat_r.shape[1] > 1:
            m["top1_agreement"] = float(np.mean(flat_f.argmax(1) == flat_r.argmax(1)))
        out["outputs"][names[i] if names else v.name] = m
        worst, mean = max(worst, m["max_abs_error"]), max(mean, m["mean_abs_error"])
    out["max_abs_error"], out["mean_abs_error"] = worst, mean
    return out


class FpgaHlsBackend:
    name = "fpga_hls"

    def unsupported(self, graph: Graph, target: Target) -> list[tuple[Node, str]]:
        return unsupported_nodes(graph)

    def build_design(self, graph: Graph, target: Target, opts: FpgaOptions) -> BuiltDesign:
        design, in_ports, out_ports = map_graph(graph, TOP_NAME)
        design.io = opts.io
        design.part = target.part
        design.clock_mhz = float(opts.clock_mhz or target.clock_mhz)
        calib, calib_source = calibration_inputs(in_ports, opts)
        float_outputs = assign_types(design, opts, calib)
        ests, findings = run_checks(design, target, check_capacity=True)
        return BuiltDesign(design, in_ports, out_ports, calib, calib_source, float_outputs, ests, findings)

    def lower(self, graph: Graph, target: Target, options: BackendOptions) -> CompiledParts:
        t0 = time.perf_counter()
        opts = FpgaOptions.parse(options.fpga)
        built = self.build_design(graph, target, opts)
        design, in_ports, out_ports, calib = built.design, built.in_ports, built.out_ports, built.calib
        ests = built.estimates
        clock = design.clock_mhz
        report = {
            "target": target.name, "part": target.part, "clock_mhz": clock, "io": design.io,
            "options": opts.describe(), "calibration": built.calib_source,
            "estimate_note": "accelc's model of the design, not a synthesis report; run build_prj.tcl with "
                             "Vitis HLS for csynth figures",
            "layers": [{**layer.describe(), **e.as_dict()} for layer, e in ests],
            "inputs": [{"name": p.ir_name, "value": p.value.name, "type": p.value.type.short(),
                        "layout": "channels-last" if p.perm else "as the model"} for p in in_ports],
            "outputs": [{"name": p.ir_name, "value": p.value.name, "type": p.value.type.short()} for p in out_ports],
            "total": totals(design, ests, clock),
            "capacity": {k: int(target.resources.get(k, 0)) for k in ("dsp", "bram_18k", "lut", "ff")},
            "findings": [{"severity": f.severity, "layer": f.layer, "message": f.message} for f in built.findings],
            "float_vs_fixed": float_vs_fixed(design, calib, built.float_outputs, [p.ir_name for p in out_ports]),
        }
        report["utilization"] = {k: round(report["total"][k] / v, 4) if v else None
                                 for k, v in report["capacity"].items()}
        tb_in = [a[:TB_SAMPLES].astype(np.float32).astype(np.float64) for a in calib]
        tb_codes = [v.type.from_float(a) for v, a in zip(design.inputs, tb_in)]
        tb_out = [v.type.to_float(c) for v, c in zip(design.outputs, fx_eval_design(design, tb_codes))]
        files = project_files(design, in_ports, out_ports, target.part, clock, report, tb_in, tb_out)

        lib = self._build_library(design, in_ports, out_ports, files, options)
        report["timings"] = {"lower_s": round(time.perf_counter() - t0, 3)}
        members = {f"project/{k}": v.encode() for k, v in files.items()}
        members["project/report.json"] = (json.dumps(report, indent=2) + "\n").encode()
        members["model.so"] = lib
        manifest = {"name": self.name, "library": "model.so", "abi_version": 1, "variants": ["csim"],
                    "project": "project/", "top": design.name, "report": report}
        return CompiledParts(members, manifest)

    def _build_library(self, d: Design, in_ports: list[Port], out_ports: list[Port], files: dict[str, str],
                       options: BackendOptions) -> bytes:
        sources = {k: v for k, v in files.items() if k.startswith("firmware/")}
        sources["csim/accelc_csim.cpp"] = csim_library(d, in_ports, out_ports)
        digest = toolchain.sources_digest(sources, toolchain.cxx(), " ".join(toolchain.CXXFLAGS),
                                          str(toolchain.ap_types_dir()))
        cache = _cache_dir(options) / digest[:2] / f"{digest}.so"
        if cache.is_file():
            return cache.read_bytes()
        work = tempfile.mkdtemp(prefix="accelc-fpga-") if options.debug else None
        lib = toolchain.build(sources, "model.so", shared=True, workdir=work, include=("firmware",),
                              compile_only=("csim/accelc_csim.cpp",))
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(lib)
            os.replace(tmp, cache)
        except OSError:
            pass      # a read-only cache only costs a rebuild next time
        return lib
