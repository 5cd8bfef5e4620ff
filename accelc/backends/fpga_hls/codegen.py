"""Vitis HLS C++ for a design: the firmware (top function, parameters, weight headers) and C-simulation
mains around it.

The firmware is what synthesis sees; the C-simulation programs include the very same files and only
add a ``main`` (or C ABI functions) that converts numbers in and out. See ``layers/base.py`` for the
conventions on values, arrays and streams.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import BackendError
from . import toolchain
from .layers.base import MAX_PARTITION, Layer, Value

IO_STYLES = ("io_parallel", "io_stream")
WINDOWED = ("conv", "pool", "global_pool")


@dataclass
class Design:
    """Layers in execution order, the values they read and write, and the top function's ports."""
    name: str
    layers: list[Layer]
    inputs: list[Value]
    outputs: list[Value]
    io: str = "io_parallel"
    clock_mhz: float = 200.0
    part: str = ""

    def __post_init__(self):
        if self.io not in IO_STYLES:
            raise BackendError(f"unknown FPGA io style '{self.io}'; use io_parallel or io_stream")

    def values(self) -> list[Value]:
        seen: dict[str, Value] = {v.name: v for v in self.inputs}
        for layer in self.layers:
            for v in (*layer.inputs, layer.output):
                seen.setdefault(v.name, v)
        return list(seen.values())

    def headers(self) -> list[str]:
        out: list[str] = []
        for layer in self.layers:
            for h in layer.headers:
                if h not in out:
                    out.append(h)
        return out or ["accelc_hls_common.h"]


def _port_decl(v: Value, io: str, const: bool) -> str:
    if io == "io_parallel":
        return f"{'const ' if const else ''}{v.ctype} {v.name}[{v.size}]"
    return f"hls::stream<accelc_hls::packet<{v.ctype}, {v.packet}> >& {v.name}"


def _local_decl(v: Value, io: str) -> list[str]:
    if io == "io_parallel":
        lines = [f"    {v.ctype} {v.name}[{v.size}];"]
        if v.size <= MAX_PARTITION:
            lines.append(f"#pragma HLS ARRAY_PARTITION variable={v.name} complete dim=0")
        return lines
    return [f"    hls::stream<accelc_hls::packet<{v.ctype}, {v.packet}> > {v.name}(\"{v.name}\");",
            f"#pragma HLS STREAM variable={v.name} depth={max(2, v.size // v.packet)}"]


def _stream_readers(d: Design) -> dict[str, list[str]]:
    """io_stream: the stream each reader of a tensor read by several layers (or a layer and the output
    port) gets; tensors with one reader keep their own stream."""
    uses: dict[str, int] = {}
    for layer in d.layers:
        for v in layer.inputs:
            uses[v.name] = uses.get(v.name, 0) + 1
    for v in d.outputs:
        uses[v.name] = uses.get(v.name, 0) + 1
    readers = {}
    for name, n in uses.items():
        if n > 1:
            readers[name] = [f"{name}_r{i}" for i in range(n)]
    for v in d.outputs:
        if v.name in readers:      # the output port is the last reader: it is written by the clone
            readers[v.name][-1] = v.name
    # the fan-out copies are made right after the producer; readers pop them in order, the output
    # port's copy (last) is never popped by a layer
    return readers


def _fan_out(v: Value, src: str, copies: list[str]) -> list[str]:
    """Copies stream ``src`` (tensor ``v``) into the streams ``copies``: clone_stream writes 2 or 3;
    longer lists chain through temporaries. Copies other than output ports are declared here."""
    if not copies:
        return []
    decl = f"hls::stream<accelc_hls::packet<{v.ctype}, {v.packet}> >"
    count = max(1, v.size // v.packet)
    lines = []
    for c in copies:
        if c != v.name:
            lines += [f"    {decl} {c}(\"{c}\");", f"#pragma HLS STREAM variable={c} depth={max(2, count)}"]
    pending, k = list(copies), 0
    while len(pending) > 3:
        tmp = f"{v.name}_fan{k}"
        lines += [f"    {decl} {tmp}(\"{tmp}\");", f"#pragma HLS STREAM variable={tmp} depth={max(2, count)}",
                  f"    accelc_hls::clone_stream<{v.ctype}, {v.packet}, {count}>({src}, {pending[0]}, {pending[1]}, {tmp});"]
        pending, src, k = pending[2:], tmp, k + 1
    lines.append(f"    accelc_hls::clone_stream<{v.ctype}, {v.packet}, {count}>({src}, {', '.join(pending)});")
    return lines


def top_signature(d: Design) -> str:
    ports = [_port_decl(v, d.io, True) for v in d.inputs] + [_port_decl(v, d.io, False) for v in d.outputs]
    return f"void {d.name}({', '.join(ports)})"


def firmware(d: Design) -> dict[str, str]:
    """``firmware/`` sources: ``<name>.h``, ``<name>.cpp``, ``parameters.h`` and one weights header per
    layer under ``firmware/weights/``."""
    guard = d.name.upper() + "_H"
    header = "\n".join([
        f"#ifndef {guard}", f"#define {guard}", "", '#include "parameters.h"', "",
        f"{top_signature(d)};", "", "#endif", ""])

    params = [f"#ifndef {d.name.upper()}_PARAMETERS_H", f"#define {d.name.upper()}_PARAMETERS_H", ""]
    params += [f'#include "{h}"' for h in d.headers()]
    params += ["", "// value types: one per tensor of the design (chosen from calibration ranges)"]
    params += [f"typedef {v.type.cpp()} {v.ctype};" for v in d.values()]
    params += [""] + [f'#include "weights/{layer.name}.h"' for layer in d.layers] + ["", "#endif", ""]

    files = {f"firmware/{d.name}.h": header, "firmware/parameters.h": "\n".join(params)}
    for layer in d.layers:
        guard = f"ACCELC_W_{layer.name.upper()}_H"
        files[f"firmware/weights/{layer.name}.h"] = "\n".join(
            [f"#ifndef {guard}", f"#define {guard}", f"// {layer.kind}: {', '.join(layer.nodes) or layer.name}",
             layer.cpp_decls(), "#endif", ""])

    ports = {v.name for v in (*d.inputs, *d.outputs)}
    body = [f'#include "{d.name}.h"', "", f"{top_signature(d)} {{"]
    if d.io == "io_parallel":
        for v in (*d.inputs, *d.outputs):
            if v.size <= MAX_PARTITION:
                body.append(f"#pragma HLS ARRAY_PARTITION variable={v.name} complete dim=0")
        if any(layer.kind in WINDOWED for layer in d.layers):
            # window layers loop over pixels sharing multipliers (their reuse factor); a pipelined top
            # would unroll those loops, so such designs chain the layers as DATAFLOW processes
            body.append("#pragma HLS DATAFLOW")
        else:
            body.append("#pragma HLS PIPELINE")
    else:
        for v in (*d.inputs, *d.outputs):
            body.append(f"#pragma HLS INTERFACE axis port={v.name}")
        body.append("#pragma HLS DATAFLOW")
    declared = set(ports)
    readers = _stream_readers(d) if d.io == "io_stream" else {}
    for v in d.inputs:
        body += _fan_out(v, v.name, readers.get(v.name, []))
    for layer in d.layers:
        out = layer.output
        copies = list(readers.get(out.name, []))
        target = out.name
        if copies and out.name in ports:          # an output port also read inside: write a local first
            target = f"{out.name}_src"
            body += [f"    hls::stream<accelc_hls::packet<{out.ctype}, {out.packet}> > {target}(\"{target}\");",
                     f"#pragma HLS STREAM variable={target} depth={max(2, out.size // out.packet)}"]
        elif out.name not in declared:
            body += _local_decl(out, d.io)
            declared.add(out.name)
        body.append(f"    // {layer.kind} {layer.name}" + (f" <- {', '.join(layer.nodes)}" if layer.nodes else ""))
        ins = [readers[v.name].pop(0) if readers.get(v.name) else v.name for v in layer.inputs]
        call = layer.cpp_call(d.io, ins, target)
        body += ["    " + line if line else line for line in call.strip("\n").splitlines()]
        body += _fan_out(out, target, copies)
    body += ["}", ""]
    files[f"firmware/{d.name}.cpp"] = "\n".join(body)
    return files


def call_top(d: Design, indent: str) -> list[str]:
    """Statements that run the top function once on the arrays ``<value>_a`` of its ports (through
    streams in io_stream): the same call in the testbench, the C ABI library and the codes main."""
    if d.io == "io_parallel":
        return [f"{indent}{d.name}({', '.join(f'{v.name}_a' for v in (*d.inputs, *d.outputs))});"]
    lines = [f"{indent}hls::stream<accelc_hls::packet<{v.ctype}, {v.packet}> > {v.name}_s;"
             for v in (*d.inputs, *d.outputs)]
    lines += [f"{indent}accelc_hls::array_to_stream<{v.ctype}, {v.packet}, {v.size}>({v.name}_a, {v.name}_s);"
              for v in d.inputs]
    lines.append(f"{indent}{d.name}({', '.join(f'{v.name}_s' for v in (*d.inputs, *d.outputs))});")
    lines += [f"{indent}accelc_hls::stream_to_array<{v.ctype}, {v.packet}, {v.size}>({v.name}_s, {v.name}_a);"
              for v in d.outputs]
    return lines


def codes_main(d: Design) -> str:
    """A C-simulation ``main``: reads ``batch`` then every input's raw codes per sample from stdin, runs
    the top function once per sample and prints every output's codes (one sample per line)."""
    lines = [f'#include "{d.name}.cpp"', "#include <cstdio>", "#include <cmath>", "",
             "int main() {", "    long long batch = 0, c = 0;",
             '    if (scanf("%lld", &batch) != 1) return 2;',
             "    for (long long b = 0; b < batch; b++) {"]
    for v in (*d.inputs, *d.outputs):
        lines.append(f"        static {v.ctype} {v.name}_a[{v.size}];")
    for v in d.inputs:
        lines += [f"        for (int i = 0; i < {v.size}; i++) {{",
                  f'            if (scanf("%lld", &c) != 1) return 3;',
                  f"            {v.name}_a[i].range() = c;", "        }"]
    lines += call_top(d, "        ")
    for v in d.outputs:
        lines += [f"        for (int i = 0; i < {v.size}; i++)",
                  f'            printf("%lld ", (long long)std::ldexp({v.name}_a[i].to_double(), {v.type.frac}));']
    lines += ['        printf("\\n");', "    }", "    return 0;", "}", ""]
    return "\n".join(lines)


def run_codes(d: Design, inputs: Sequence[np.ndarray], workdir: str | Path, *, sanitize: bool = False,
              ) -> list[np.ndarray]:
    """Builds the firmware with ``codes_main`` and runs it: int64 codes in (batch-first, one array per
    design input), int64 codes out. The tool layer tests and the bit-exact checks use."""
    for v in d.values():
        if v.type is None:
            raise BackendError(f"value '{v.name}' has no fixed-point type; run type selection first")
        if v.type.width > 53:
            raise BackendError(f"value '{v.name}' is {v.type.width} bits wide; C-simulation I/O reads at "
                               f"most 53-bit codes")
    sources = firmware(d)
    sources["tb/codes_main.cpp"] = codes_main(d)
    work = Path(workdir)
    exe = "codes_main"
    # the main #includes firmware/<name>.cpp: one translation unit
    toolchain.build(sources, exe, shared=False, sanitize=sanitize, include=(work / "firmware",), workdir=work,
                    compile_only=("tb/codes_main.cpp",))
    batch = int(inputs[0].shape[0]) if inputs else 1
    parts = [str(batch)]
    for b in range(batch):
        for v, a in zip(d.inputs, inputs):
            parts.append(" ".join(map(str, np.asarray(a[b], dtype=np.int64).ravel().tolist())))
    proc = subprocess.run([str(work / exe)], input="\n".join(parts) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendError(f"the C-simulation exited with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    rows = [list(map(int, line.split())) for line in proc.stdout.strip().splitlines()]
    flat = np.array(rows, dtype=np.int64).reshape(batch, -1)
    outs, at = [], 0
    for v in d.outputs:
        outs.append(flat[:, at:at + v.size].reshape((batch, *v.shape)))
        at += v.size
    return outs


def fx_eval_design(d: Design, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The NumPy fixed-point model of the whole design (int64 codes, batch-first)."""
    env = {v.name: np.asarray(a, dtype=np.int64) for v, a in zip(d.inputs, inputs)}
    for layer in d.layers:
        env[layer.output.name] = layer.fx_eval(*(env[v.name] for v in layer.inputs))
    return [env[v.name] for v in d.outputs]


def float_eval_design(d: Design, inputs: Sequence[np.ndarray], keep: bool = False):
    """The design's layers in float64; ``keep=True`` returns every value (calibration ranges)."""
    env = {v.name: np.asarray(a, dtype=np.float64) for v, a in zip(d.inputs, inputs)}
    for layer in d.layers:
        env[layer.output.name] = layer.float_eval(*(env[v.name] for v in layer.inputs))
    return env if keep else [env[v.name] for v in d.outputs]
