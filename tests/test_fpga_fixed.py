"""The NumPy fixed-point model against the real ap_fixed headers: every rounding and overflow mode."""
from __future__ import annotations

import itertools
import subprocess

import numpy as np
import pytest

from accelc.backends.fpga_hls import toolchain
from accelc.backends.fpga_hls.fixed import OVERFLOW, ROUNDING, FixedType, exact_sum_type, integer_bits_for
from accelc.errors import BackendError

pytestmark = pytest.mark.skipif(toolchain.__dict__.get("ap_types_dir") is None, reason="no toolchain module")

DESTS = [FixedType(8, 3, True, r, o) for r, o in itertools.product(ROUNDING, OVERFLOW)] + \
        [FixedType(7, 2, False, r, o) for r, o in itertools.product(ROUNDING, OVERFLOW)] + \
        [FixedType(6, -1, True, "RND_CONV", "SAT"), FixedType(6, 9, True, "RND", "WRAP")]
SRC = FixedType(20, 8)          # codes with 12 fractional bits: 9 below every destination's LSB


def _headers_or_skip():
    try:
        return toolchain.ap_types_dir()
    except BackendError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def ap_results(tmp_path_factory):
    """Runs one C++ program: each source code and each double, assigned to every destination type."""
    _headers_or_skip()
    rng = np.random.default_rng(0)
    codes = np.concatenate([np.arange(-700, 700), np.arange(-16384 - 300, -16384 + 300),
                            np.arange(16384 - 300, 16384 + 300), np.arange(-1 << 16, (-1 << 16) + 2000, 7), rng.integers(SRC.min_code, SRC.max_code + 1, 3000),
                            [SRC.min_code, SRC.max_code]]).astype(np.int64)
    doubles = np.concatenate([rng.standard_normal(1500) * 4, rng.standard_normal(500) * 300,
                              np.arange(-64, 64) / 32.0 + 1 / 64.0, [0.0, -0.0, 1e30, -1e30, 3.999, -4.0]])
    body = []
    for i, t in enumerate(DESTS):
        body.append(f"  {{ {t.cpp()} y = x; out(y, {t.frac}); }}")
    per_value = "\n".join(body)
    src = f"""
#include <ap_fixed.h>
#include <cstdio>
#include <cmath>
template <class T> void out(const T& y, int frac) {{ printf("%lld ", (long long)std::ldexp(y.to_double(), frac)); }}
int main() {{
  long long c; double d;
  while (scanf("%lld", &c) == 1 && c != 0x7fffffff) {{
    {SRC.cpp()} x; x.range() = c;
{per_value}
    printf("\\n");
  }}
  while (scanf("%lf", &d) == 1) {{
    double x = d;
{per_value}
    printf("\\n");
  }}
  return 0;
}}
"""
    work = tmp_path_factory.mktemp("apfixed")
    exe = toolchain.build({"main.cpp": src}, "main", shared=False, workdir=work)
    assert exe
    stdin = " ".join(str(int(c)) for c in codes) + f" {0x7fffffff} " + " ".join(repr(float(d)) for d in doubles)
    run = subprocess.run([str(work / "main")], input=stdin, capture_output=True, text=True, check=True)
    rows = [list(map(int, line.split())) for line in run.stdout.strip().splitlines()]
    got = np.array(rows, dtype=np.int64)
    return codes, doubles, got[:len(codes)], got[len(codes):]


@pytest.mark.parametrize("k", range(len(DESTS)), ids=[t.short() for t in DESTS])
def test_cast_matches_ap_fixed(ap_results, k):
    codes, _, from_codes, _ = ap_results
    t = DESTS[k]
    np.testing.assert_array_equal(t.cast(codes, SRC.frac), from_codes[:, k])


@pytest.mark.parametrize("k", range(len(DESTS)), ids=[t.short() for t in DESTS])
def test_from_float_matches_ap_fixed(ap_results, k):
    _, doubles, _, from_doubles = ap_results
    t = DESTS[k]
    np.testing.assert_array_equal(t.from_float(doubles), from_doubles[:, k])


def test_type_facts():
    t = FixedType(16, 6)
    assert (t.frac, t.min_code, t.max_code) == (10, -32768, 32767)
    assert t.cpp() == "ap_fixed<16,6,AP_TRN,AP_WRAP>"
    assert FixedType(8, 8, False).max_value == 255.0
    assert integer_bits_for(3.9) == 3 and integer_bits_for(4.0) == 4 and integer_bits_for(0.3) == 0
    acc = exact_sum_type(FixedType(16, 6), 10, 12, terms=64)
    assert acc.frac == 10 and acc.integer == 18


def test_bad_types_are_refused_with_the_fix():
    with pytest.raises(BackendError, match="width"):
        FixedType(80, 4)
    with pytest.raises(BackendError, match="rounding"):
        FixedType(8, 3, rounding="NEAREST")
    with pytest.raises(BackendError, match="NaN"):
        FixedType(8, 3).from_float([np.nan])
