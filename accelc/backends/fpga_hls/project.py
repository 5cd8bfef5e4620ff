"""The Vitis HLS project around the firmware: testbench, test vectors, ``build_prj.tcl``, README, and
the C-simulation library that ``accelc run`` loads through the runtime's C ABI.

Both the testbench and the library include the firmware unchanged (weights as initialised constants),
so what is C-simulated here is what synthesis compiles.
"""
from __future__ import annotations

import json

import numpy as np

from .codegen import Design, call_top, firmware
from .mapping import Port
from .toolchain import HLS_SRC


def _flat_floats(a: np.ndarray) -> str:
    return "\n".join(" ".join(repr(float(x)) for x in row.ravel()) for row in a)


def testbench(d: Design) -> str:
    """``tb/<name>_test.cpp``: reads ``tb_data/tb_input_features.dat`` (one sample per line, design
    layout), runs the top function, writes ``tb_data/csim_results.log`` and compares every output with
    ``tb_data/tb_output_predictions.dat`` (the NumPy fixed-point model's values): exit code = mismatches."""
    lines = [f'#include "../firmware/{d.name}.h"', "#include <cstdio>", "#include <fstream>", "#include <sstream>",
             "#include <string>", "", "int main(int argc, char** argv) {",
             '    std::string dir = argc > 1 ? argv[1] : "tb_data";',
             '    std::ifstream fin((dir + "/tb_input_features.dat").c_str());',
             '    std::ifstream fexp((dir + "/tb_output_predictions.dat").c_str());',
             '    std::ofstream fout((dir + "/csim_results.log").c_str());',
             '    if (!fin.is_open()) { fprintf(stderr, "cannot open %s/tb_input_features.dat\\n", dir.c_str()); return 2; }',
             "    std::string line, expected;", "    int sample = 0, mismatches = 0;",
             "    while (std::getline(fin, line)) {", "        if (line.empty()) continue;",
             "        std::istringstream in(line);", "        double v = 0;"]
    for v in (*d.inputs, *d.outputs):
        lines.append(f"        static {v.ctype} {v.name}_a[{v.size}];")
    for v in d.inputs:
        lines.append(f"        for (int i = 0; i < {v.size}; i++) {{ in >> v; {v.name}_a[i] = v; }}")
    lines += call_top(d, "        ")
    lines += ["        bool have_expected = fexp.is_open() && std::getline(fexp, expected);",
              "        std::istringstream ex(have_expected ? expected : std::string());"]
    for v in d.outputs:
        lines += [f"        for (int i = 0; i < {v.size}; i++) {{",
                  f"            double got = {v.name}_a[i].to_double();",
                  '            fout << got << " ";',
                  "            double want = 0;",
                  "            if (have_expected && (ex >> want) && want != got) mismatches++;",
                  "        }"]
    lines += ['        fout << "\\n";', "        sample++;", "    }",
              '    printf("%d samples, %d output values differ from the fixed-point model\\n", sample, mismatches);',
              "    return mismatches == 0 ? 0 : 1;", "}", ""]
    return "\n".join(lines)


def csim_library(d: Design, in_ports: list[Port], out_ports: list[Port]) -> str:
    """The accelc C ABI (runtime/module.py) over the firmware: float32 in the model's layout, converted to
    the input types as ``ap_fixed`` assignment does, one top-function call per sample, float32 out."""
    sig = {"inputs": [{"name": p.ir_name, "dtype": "f32", "shape": list(p.ir_shape)} for p in in_ports],
           "outputs": [{"name": p.ir_name, "dtype": "f32", "shape": list(p.ir_shape)} for p in out_ports]}
    sig_json = json.dumps(sig, separators=(",", ":")).replace("\\", "\\\\").replace('"', '\\"')

    def index_map(p: Port) -> str:
        """design position k -> offset in the model-layout sample (one table per reordered port)."""
        per = tuple(p.ir_shape[1:])
        idx = np.arange(int(np.prod(per))).reshape(per) if per else np.arange(1)
        if p.perm is not None:
            idx = np.transpose(idx, p.perm)
        flat = idx.ravel()
        return ", ".join(str(int(i)) for i in flat)

    # one translation unit: the firmware's weights and tables are compiled once
    lines = [f'#include "{d.name}.cpp"', "#include <cstring>", "#include <cstdlib>", "",
             '#define ACCELC_EXPORT extern "C" __attribute__((visibility("default")))', "",
             "namespace {", f'const char kSignature[] = "{sig_json}";', "thread_local const char* g_error = nullptr;"]
    for p in (*in_ports, *out_ports):
        if p.perm is not None:
            lines.append(f"const int {p.value.name}_map[{p.value.size}] = {{{index_map(p)}}};")
    batch = in_ports[0].ir_shape[0] if in_ports else 1
    lines += ["}  // namespace", "",
              "ACCELC_EXPORT int accelc_abi_version() { return 1; }",
              "ACCELC_EXPORT const char* accelc_signature_json() { return kSignature; }",
              'ACCELC_EXPORT const char* accelc_variants() { return "csim"; }',
              'ACCELC_EXPORT const char* accelc_select_variant() { return "csim"; }',
              "ACCELC_EXPORT const char* accelc_last_error() { return g_error; }",
              "ACCELC_EXPORT int accelc_create(const void*, size_t, int, void** handle) {",
              "    if (!handle) { g_error = \"null handle pointer\"; return 4; }",
              "    *handle = std::malloc(1);", "    return *handle ? 0 : 3;", "}",
              'ACCELC_EXPORT const char* accelc_model_variant(void*) { return "csim"; }',
              "ACCELC_EXPORT void accelc_destroy(void* handle) { std::free(handle); }",
              "ACCELC_EXPORT int accelc_run(void* handle, const void* const* inputs, void* const* outputs) {",
              '    if (!handle || !inputs || !outputs) { g_error = "null argument"; return 4; }']
    for v in (*d.inputs, *d.outputs):
        lines.append(f"    static {v.ctype} {v.name}_a[{v.size}];")
    lines.append(f"    for (long b = 0; b < {batch}; b++) {{")
    for i, p in enumerate(in_ports):
        v = p.value
        src = f"static_cast<const float*>(inputs[{i}]) + b * {v.size}"
        at = f"{v.name}_map[k]" if p.perm is not None else "k"
        lines += [f"        const float* in{i} = {src};",
                  f"        for (int k = 0; k < {v.size}; k++) {v.name}_a[k] = (double)in{i}[{at}];"]
    lines += call_top(d, "        ")
    for i, p in enumerate(out_ports):
        v = p.value
        at = f"{v.name}_map[k]" if p.perm is not None else "k"
        lines += [f"        float* out{i} = static_cast<float*>(outputs[{i}]) + b * {v.size};",
                  f"        for (int k = 0; k < {v.size}; k++) out{i}[{at}] = (float){v.name}_a[k].to_double();"]
    lines += ["    }", "    return 0;", "}", ""]
    return "\n".join(lines)


def build_tcl(d: Design, part: str, clock_mhz: float) -> str:
    period = 1000.0 / clock_mhz
    return f"""# Vitis HLS build script generated by accelc.
# Usage: vitis_hls -f build_prj.tcl [-tclargs csim=1 synth=1 cosim=0 export=0]
array set opt {{csim 1 synth 1 cosim 0 export 0}}
foreach arg $::argv {{
    foreach {{key value}} [split $arg =] {{ if {{[info exists opt($key)]}} {{ set opt($key) $value }} }}
}}
open_project -reset {d.name}_prj
set_top {d.name}
add_files firmware/{d.name}.cpp -cflags "-std=c++14 -Ifirmware"
add_files -tb tb/{d.name}_test.cpp -cflags "-std=c++14 -Ifirmware"
add_files -tb tb_data
open_solution -reset solution1 -flow_target vivado
set_part {{{part}}}
create_clock -period {period:.3f} -name default
config_compile -name_max_length 80
if {{$opt(csim)}} {{ csim_design -argv tb_data }}
if {{$opt(synth)}} {{ csynth_design }}
if {{$opt(cosim)}} {{ cosim_design -argv tb_data -trace_level none }}
if {{$opt(export)}} {{ export_design -format ip_catalog }}
exit
"""


def readme(d: Design, part: str, clock_mhz: float, report: dict) -> str:
    t = report["total"]
    return f"""# {d.name}: Vitis HLS project generated by accelc

Target part `{part}` at {clock_mhz:g} MHz, `{d.io}`.

- `firmware/` — the design: `{d.name}.cpp` (top function `{d.name}`), `parameters.h` (one fixed-point type
  per tensor), `weights/*.h` (weights and lookup tables as initialised constants), `accelc_hls_*.h`
  (accelc's layer library).
- `tb/{d.name}_test.cpp` — testbench: reads `tb_data/tb_input_features.dat`, writes
  `tb_data/csim_results.log`, and fails if any output differs from `tb_data/tb_output_predictions.dat`
  (accelc's bit-exact NumPy model of the same types).
- `build_prj.tcl` — C-simulation, synthesis, co-simulation and IP export.
- `report.json` — accelc's per-layer types, estimates and float-vs-fixed error.

## Synthesize (on a machine with Vitis HLS 2023.1 or newer)

    vitis_hls -f build_prj.tcl                       # C-simulation + synthesis
    vitis_hls -f build_prj.tcl -tclargs cosim=1 export=1

Synthesis writes `{d.name}_prj/solution1/syn/report/csynth.xml`, the real latency and resources.

## C-simulation without Vitis

    g++ -std=c++14 -O2 -Ifirmware -I<ap_types headers> tb/{d.name}_test.cpp firmware/{d.name}.cpp -o tb_{d.name}
    ./tb_{d.name} tb_data

The ap_types headers ship with Vitis (`include/`) and with the `hls4ml` Python package
(`hls4ml/templates/vivado/ap_types`).

## accelc's estimate (a model, not a synthesis report)

DSP {t['dsp']}, BRAM18K {t['bram_18k']}, LUT {t['lut']}, FF {t['ff']}; latency {t['latency_cycles']} cycles
({t['latency_ns']:.1f} ns), initiation interval {t['ii']} cycles.
"""


def project_files(d: Design, in_ports: list[Port], out_ports: list[Port], part: str, clock_mhz: float,
                  report: dict, tb_inputs: list[np.ndarray], tb_outputs: list[np.ndarray]) -> dict[str, str]:
    """Every file of the HLS project, by path relative to the project root, but ``report.json``: the
    backend writes it last, once the build's timings are in."""
    files = dict(firmware(d))
    for h in d.headers():
        files[f"firmware/{h}"] = (HLS_SRC / h).read_text()
    files[f"tb/{d.name}_test.cpp"] = testbench(d)
    rows_in = np.concatenate([a.reshape(a.shape[0], -1) for a in tb_inputs], axis=1)
    rows_out = np.concatenate([a.reshape(a.shape[0], -1) for a in tb_outputs], axis=1)
    files["tb_data/tb_input_features.dat"] = _flat_floats(rows_in) + "\n"
    files["tb_data/tb_output_predictions.dat"] = _flat_floats(rows_out) + "\n"
    files["build_prj.tcl"] = build_tcl(d, part, clock_mhz)
    files["README.md"] = readme(d, part, clock_mhz, report)
    return files

