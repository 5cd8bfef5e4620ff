"""How much of ONNX's node test suite accelc passes, per op.

Runs every node test whose ops have a frontend handler (the same selection as
tests/test_onnx_conformance.py), in this process, and prints one line per op and the total:
"N passed of M node tests with supported ops". Builds are cached, so a rerun is fast.

    python bench/onnx_conformance_report.py [-k REGEX] [--failures] [--target T [--emulate]]

``--target h100 --emulate`` runs the CUDA backend's generated code under the host emulator (no GPU).
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelc.errors import UnsupportedFeatureError  # noqa: E402
from accelc.onnx_backend import AccelcBackend, node_tests_with_supported_ops  # noqa: E402


def run_case(case, **options) -> tuple[str, str]:
    """('pass' | 'fail' | 'unsupported', detail)."""
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.runner import Runner
    try:
        rep = AccelcBackend.prepare(case.model, "CPU", **options)
        for inputs, ref_outputs in case.data_sets:
            # some cases (casts to and from bf16/fp16) store their data as TensorProtos
            arrays = [[numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x for x in xs]
                      for xs in (inputs, ref_outputs)]
            outs = rep.run(arrays[0])
            Runner.assert_similar_outputs(arrays[1], list(outs), rtol=case.rtol, atol=case.atol)
        return "pass", ""
    except UnsupportedFeatureError as e:
        return "unsupported", str(e)
    except Exception as e:  # a failure of any kind is what this report counts
        text = str(e).strip().splitlines()
        return "fail", f"{type(e).__name__}: {text[0] if text else ''}"[:200]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", help="only tests whose name matches this regex")
    p.add_argument("--failures", action="store_true", help="print each failing test and why")
    p.add_argument("--target", default="host", help="compile for this target (default host)")
    p.add_argument("--emulate", action="store_true", help="CUDA targets: run the code under the host emulator")
    a = p.parse_args()
    warnings.simplefilter("ignore")
    from onnx.backend.test.loader import load_node_model_tests
    selected = node_tests_with_supported_ops()
    cases = [c for c in load_node_model_tests() if c.name in selected and (not a.k or re.search(a.k, c.name))]
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for i, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        status, detail = run_case(case, target=a.target, emulate=a.emulate)
        if a.failures and status == "fail":           # as they happen: a long run shows its findings early
            print(f"\r{status:<11} {case.name}: {detail} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr,
                  flush=True)
        for op in selected[case.name]:
            per_op[op][status] += 1
        if status != "pass":
            failures.append((case.name, status, detail))
        print(f"\r[{i}/{len(cases)}] {case.name[:60]:<60}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{'op':<28} pass  fail  unsupported")
    for op in sorted(per_op):
        c = per_op[op]
        print(f"{op:<28} {c['pass']:>4}  {c['fail']:>4}  {c['unsupported']:>4}")
    if a.failures:
        print()
        for name, status, detail in failures:
            print(f"{status:<11} {name}: {detail}")
    passed = sum(1 for c in cases) - len(failures)
    print(f"\n{passed} passed of {len(cases)} node tests with supported ops "
          f"({sum(1 for f in failures if f[1] == 'unsupported')} declined as unsupported, "
          f"{sum(1 for f in failures if f[1] == 'fail')} failed)")


if __name__ == "__main__":
    main()
