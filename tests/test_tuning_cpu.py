"""Compile-time tuning of the CPU backend's work splits (accelc/backends/cpu_amx/tuning.py, --tune).

The search is tested on a fake timer whose speeds the test sets, so its decisions are checked exactly;
the real timing driver, the generated header and the whole compile run for real on small models, and the
tuned artifact must give the untuned artifact's results bit for bit. The kernels' side (every split, the
same bits) is in test_kernels_cpu.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import accelc
from accelc.backends.cpu_amx import isa, tuning
from accelc.backends.cpu_amx.build import Builder
from accelc.backends.cpu_amx.tuning import PLANNED, Site
from accelc.errors import AccelcError

ROOT = Path(__file__).resolve().parents[1]
HOST = (isa.runnable_variants(isa.cpu_flags()) or [None])[0]
needs_host = pytest.mark.skipif(HOST is None, reason="this CPU runs none of the backend's variants (AVX2 minimum)")

GEMM = Site("gemm", (1024, 768, 768))
CONV = Site("conv", (1, 64, 56, 56, 64, 3, 3, 56, 56, 1, 1, 1, 1, 1, 1, 1))
WINO = Site("winograd", (1, 64, 56, 56, 64, 3, 3, 56, 56, 1, 1, 1, 1, 1, 1, 1), 4)


@pytest.fixture
def cache(tmp_path, build_cache) -> Path:
    """A build cache whose tuning records are new (tmp) but whose compiled objects and libraries are the
    suite's shared ones (content-addressed), so the kernel library is not rebuilt for every test."""
    d = tmp_path / "cache"
    d.mkdir()
    for sub in ("objs", "libs"):
        (build_cache / sub).mkdir(parents=True, exist_ok=True)
        (d / sub).symlink_to(build_cache / sub, target_is_directory=True)
    return d


class FakeTimer:
    """Seconds per call from ``speed(blocking)``; ``confirm(blocking)`` instead in the head-to-head rounds."""

    def __init__(self, speed, confirm=None):
        self.speed, self.confirm, self.calls = speed, confirm or speed, []

    def time(self, site, cands, threads, rounds, reps):
        self.calls.append((list(cands), rounds))
        f = self.confirm if rounds == tuning.CONFIRM_ROUNDS else self.speed
        return [f(c) for c in cands]


def test_search_keeps_the_plan_when_nothing_is_faster():
    timer = FakeTimer(lambda b: 1.0)
    r = tuning.search(timer, GEMM, 2)
    assert r.blocking == PLANNED and r.planned_s == r.best_s == 1.0
    assert all(c[0] == PLANNED for c, _ in timer.calls)         # the plan is always timed beside the others


def test_search_takes_rows_then_panels_when_each_wins():
    speeds = {(96, 0, 0): 0.9, (96, 4, 0): 0.8}
    r = tuning.search(FakeTimer(lambda b: speeds.get(b, 1.0)), GEMM, 2)
    assert r.blocking == (96, 4, 0) and r.best_s == 0.8 and r.planned_s == 1.0


def test_search_ignores_gains_below_min_gain():
    r = tuning.search(FakeTimer(lambda b: 1.0 - 0.5 * tuning.MIN_GAIN if b != PLANNED else 1.0), GEMM, 2)
    assert r.blocking == PLANNED


def test_search_drops_a_winner_that_loses_the_head_to_head():
    """A candidate that looked faster among many but not over the longer confirmation is not taken."""
    r = tuning.search(FakeTimer(lambda b: 0.8 if b == (48, 0, 0) else 1.0, confirm=lambda b: 1.0), GEMM, 2)
    assert r.blocking == PLANNED
    r = tuning.search(FakeTimer(lambda b: 0.8 if b == (48, 0, 0) else 1.0, confirm=lambda b: 0.9 if b != PLANNED
                                else 1.0), GEMM, 2)
    assert r.blocking == (48, 0, 0) and r.best_s == 0.9


def test_search_of_a_winograd_site_tries_the_shared_block_and_block_sizes():
    timer = FakeTimer(lambda b: 0.7 if b == (0, 0, 1) else 1.0)
    r = tuning.search(timer, WINO, 2)
    assert r.blocking == (0, 0, 1)
    tried = {c for cands, _ in timer.calls for c in cands}
    assert {(0, 0, 1), (0, 0, 2), (16, 0, 2), (96, 0, 2)} <= tried


def test_candidates_stay_inside_the_site():
    small = Site("gemm", (40, 20, 64))
    assert {c[0] for c in tuning.row_candidates(small)} == {24, 40}
    assert all(c[1] <= small.panels() == 2 for c in tuning.panel_candidates(small, 24))
    assert CONV.rows() == 56 * 56 and WINO.rows() == 14 * 14 and CONV.panels() == 4
    assert CONV.macs == 56 * 56 * 64 * 64 * 9 and WINO.macs == 14 * 14 * 36 * 64 * 64


def test_header_applies_the_splits_to_the_measured_variant_only():
    report = tuning.TuningReport("avx2", 2, [tuning.SiteResult(GEMM, (96, 4, 0), 1.0, 0.8, measured=True),
                                             tuning.SiteResult(CONV)])
    h = tuning.header(report)
    assert "#if defined(ACCELC_VARIANT_AVX2)" in h and "{96, 4, 0}" in h and "{0, 0, 0}" in h
    assert h.count("#define ACCELC_BLOCKING") == 2 and "kTunedBlocking[i]" in h
    assert tuning.header(None).count("#define ACCELC_BLOCKING(i) (::ACCELC_NS::Blocking())") == 1
    assert "kTunedBlocking" not in tuning.header(tuning.TuningReport("avx2", 2, [tuning.SiteResult(GEMM)]))


@needs_host
def test_tuning_is_skipped_with_the_reason_when_the_artifact_lacks_this_machines_variant(tmp_path, cache):
    other = [v for v in isa.ORDER if v != HOST][:1]
    report = tuning.tune([GEMM], [1], other, 2, Builder(cache))
    assert report.variant is None and "tune on a machine of the target kind" in report.skipped
    assert report.blockings() == [PLANNED] and "kTunedBlocking" not in tuning.header(report)


@needs_host
def test_zero_budget_measures_nothing(tmp_path, cache):
    report = tuning.tune([GEMM, CONV], [1, 1], [HOST], 2, Builder(cache), budget_s=0.0)
    assert report.over_budget == 2 and report.manifest()["measured_sites"] == 0


@needs_host
def test_the_timing_driver_times_every_kind_of_site(tmp_path, cache):
    timer = tuning.Timer(Builder(cache), HOST)
    sites = [Site("gemm", (50, 40, 30)), Site("gemm", (50, 40, 30), act="gelu", residual=True),
             Site("conv", (1, 8, 9, 10, 20, 3, 3, 9, 10, 1, 1, 1, 1, 1, 1, 1), act="clip", residual=True),
             Site("winograd", (1, 16, 9, 10, 20, 3, 3, 9, 10, 1, 1, 1, 1, 1, 1, 1), 2)]
    for site in sites:
        cands = [PLANNED] + tuning.row_candidates(site)[:2]
        secs = timer.time(site, cands, 2, 2, 3)
        assert len(secs) == len(cands) and all(0 < s < 1 for s in secs), (site, secs)
    with pytest.raises(accelc.errors.BuildError, match="could not time"):
        timer.time(Site("winograd", (1, 16, 9, 10, 20, 5, 5, 9, 10, 1, 1, 2, 2, 1, 1, 1), 2), [PLANNED], 2, 1, 1)


def _model() -> onnx.ModelProto:
    """A 3x3 conv (Winograd), a strided 3x3 conv (direct), a 1x1 conv (a GEMM) and a classifier GEMM."""
    rng = np.random.default_rng(4)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n) for n, s in
            (("w1", (32, 16, 3, 3)), ("w2", (48, 32, 3, 3)), ("w3", (64, 48, 1, 1)), ("fc", (64 * 6 * 6, 10)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["c", "w3"], ["d"]),
             helper.make_node("Flatten", ["d"], ["e"]),
             helper.make_node("MatMul", ["e", "fc"], ["y"])]
    g = helper.make_graph(nodes, "tune_me", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@needs_host
def test_tuned_artifact_gives_the_same_bits_and_caches_its_measurements(cache, monkeypatch):
    model, x = _model(), np.random.default_rng(1).standard_normal((1, 16, 12, 12)).astype(np.float32)
    plain = accelc.compile(model, "host", cache_dir=cache, threads=2)
    assert plain.manifest["backend"]["tuning"] is None and plain.manifest["options"]["tune"] is False
    assert "kTunedBlocking" not in plain.artifact.member("src/accelc_tuning.h").decode()

    # every site gets a split far from the plan (tiny row blocks, single panels), so the tuned library
    # really differs from the plain one; the results may not
    searched = []

    def search(timer, site, threads):
        searched.append(site)
        blk = (0, 0, 2) if site.kind == "winograd" else (3, 1, 0)
        return tuning.SiteResult(site, blk, 2.0, 1.0, measured=True)

    monkeypatch.setattr(tuning, "search", search)
    tuned = accelc.compile(model, "host", cache_dir=cache, threads=2, tune=True)
    man = tuned.manifest["backend"]["tuning"]
    kinds = sorted(s.kind for s in searched)
    assert kinds == ["conv", "conv", "gemm", "winograd"], kinds
    assert [s.act for s in searched if s.kind == "winograd"] == ["relu"]      # the fused Relu is timed too
    assert man["variant"] == HOST and man["sites"] == 4 and man["retuned_sites"] == 4 and man["measured_sites"] == 4
    header = tuned.artifact.member("src/accelc_tuning.h").decode()
    assert f"ACCELC_VARIANT_{HOST.upper()}" in header and header.count("{3, 1, 0}") == 3
    assert "ACCELC_BLOCKING(3)" in tuned.artifact.member("src/model.cpp").decode()
    assert tuned.artifact.member("model.so") != plain.artifact.member("model.so")
    np.testing.assert_array_equal(plain(x), tuned(x))

    searched.clear()
    again = accelc.compile(model, "host", cache_dir=cache, threads=2, tune=True)
    assert searched == [] and again.manifest["backend"]["tuning"]["cached_sites"] == 4
    assert again.artifact.member("src/accelc_tuning.h") == tuned.artifact.member("src/accelc_tuning.h")


@needs_host
def test_real_tuning_compile_end_to_end(tmp_path, cache):
    """Measured for real (small sites, a few seconds): whatever it picks, the results stay the same bits."""
    model, x = _model(), np.random.default_rng(2).standard_normal((1, 16, 12, 12)).astype(np.float32)
    lines: list[str] = []
    tuned = accelc.compile(model, "host", cache_dir=cache, threads=2, tune=True, tune_budget=60,
                           progress=lines.append)
    man = tuned.manifest["backend"]["tuning"]
    assert man["measured_sites"] == 4 and man["over_budget"] == 0 and man["threads"] == 2
    assert sum("tuning: tuned" in ln for ln in lines) == 4, lines
    plain = accelc.compile(model, "host", cache_dir=cache, threads=2)
    np.testing.assert_array_equal(plain(x), tuned(x))


def test_tune_is_refused_for_other_backends_and_bad_budgets():
    with pytest.raises(AccelcError, match="tuning applies to CPU targets"):
        accelc.compile(_model(), "a100", tune=True)
    for bad in (-1, float("nan"), "10", True):
        with pytest.raises(AccelcError, match="tune_budget"):
            accelc.compile(_model(), "host", tune=True, tune_budget=bad)


def test_cli_tune_flags(tmp_path, cache):
    model = tmp_path / "m.onnx"
    onnx.save(_model(), model)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "accelc", *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, timeout=600)

    r = run("compile", model, "--tune-budget", "soon", "-o", tmp_path / "x.accelc")
    assert r.returncode == 2 and "expected a number of seconds" in r.stderr and "Traceback" not in r.stderr
    if HOST is None:
        return
    out = tmp_path / "m.accelc"
    r = run("compile", model, "-o", out, "--tune", "--tune-budget", "0", "--cache-dir", cache,
            "--quiet", "--threads", "2")
    assert r.returncode == 0, r.stderr
    r = run("inspect", out)
    assert r.returncode == 0, r.stderr
    assert "tuning: 0 of 4 call sites run a measured work split" in r.stdout, r.stdout
    r = run("inspect", out, "--json")
    assert json.loads(r.stdout)["backend"]["tuning"]["over_budget"] == 4
