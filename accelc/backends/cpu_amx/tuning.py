"""Measured tuning of the work split of each GEMM and convolution call site, at compile time, cached.

The kernels plan how a call splits into tasks (rows per task, weight panels per task, Winograd tiles per
block; kernels/tiling.h) from rules of thumb. ``accelc compile --tune`` measures instead: codegen
registers every f32 GEMM and NHWC convolution call as a :class:`Site`, and for each distinct site the
tuner times a handful of candidate splits (``Blocking``, kernels/accelc_gemm.h) on this machine, with
the model's thread count, and keeps the fastest. The choice goes into ``accelc_tuning.h``, which
model.cpp includes; it applies only to the ISA variant it was measured with (the one this machine runs).

Every split computes the same bits (a task owns whole output elements and K is never split), so tuning
changes the speed and never the results. The search is short by design:

* rows per task first (with the planned panel group), then panel groups with the best rows; a Winograd
  site tries the shared block and blocks of several sizes;
* candidates are timed interleaved, in rounds (tuning_src/accelc_tune.cpp), with the packed weights
  rotated through copies larger than the cache, as in a model run, and compared by their medians;
* a candidate replaces the plan only when its median is at least ``MIN_GAIN`` faster, and again in a
  longer head-to-head run against the plan, so noise on a shared machine does not swap one split for
  an equal one.

Results are cached per site under ``<cache>/tuning/`` keyed by the kernel sources, the compiler, the
variant, the CPU model and the thread count, so a second compile measures nothing. A time budget bounds
the search; sites are taken by their share of the model's multiply-adds, largest first.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BuildError
from . import isa
from .build import COMMON_FLAGS, KERNELS, Builder, CompileJob, _headers_digest, compiler_version, kernel_library_sources

TUNING_SRC = Path(__file__).resolve().parent / "tuning_src" / "accelc_tune.cpp"
MIN_GAIN = 0.03          # a candidate must beat the planned split's median by 3%
ROUNDS = 5
CONFIRM_ROUNDS = 9
TARGET_ROUND_S = 0.004   # each candidate runs about this long per round
GUESS_FLOPS = 5e10       # flop/s assumed before a site is measured, to size its calls per round
DEFAULT_BUDGET_S = 60.0


@dataclass(frozen=True)
class Site:
    """One distinct call of a tunable kernel. ``dims``: gemm (M, N, K); conv and winograd the 16
    Conv2dShape fields (N, C, H, W, K, R, S, OH, OW, strides, pads, dilations, groups); ``m``: the
    Winograd tile (2 or 4), 0 for the others. The epilogue is part of the site: it is timed too."""
    kind: str
    dims: tuple[int, ...]
    m: int = 0
    act: str = "none"          # the epilogue's activation (an Activation kind): it costs time per element
    residual: bool = False     # the epilogue adds a residual

    @property
    def macs(self) -> float:
        if self.kind == "gemm":
            M, N, K = self.dims
            return float(M) * N * K
        N, C, _, _, K, R, S, OH, OW = self.dims[:9]
        groups = self.dims[15]
        if self.kind == "winograd":
            a = self.m + 2
            tiles = N * -(-OH // self.m) * -(-OW // self.m)
            return float(tiles) * a * a * C * K
        return float(N) * OH * OW * K * (C // groups) * R * S

    def rows(self) -> int:
        """The M of the site's product: GEMM rows, output pixels, or Winograd tiles."""
        if self.kind == "gemm":
            return self.dims[0]
        N, OH, OW = self.dims[0], self.dims[7], self.dims[8]
        if self.kind == "winograd":
            return N * -(-OH // self.m) * -(-OW // self.m)
        return N * OH * OW

    def panels(self) -> int:
        n = self.dims[1] if self.kind == "gemm" else self.dims[4] // self.dims[15]
        return -(-n // 16)

    def describe(self) -> str:
        epi = (f" +{self.act}" if self.act != "none" else "") + (" +residual" if self.residual else "")
        if self.kind == "gemm":
            return "GEMM M={} N={} K={}".format(*self.dims) + epi
        N, C, H, W, K, R, S = self.dims[:7]
        what = f"Winograd F({self.m}x{self.m})" if self.kind == "winograd" else f"{R}x{S} conv"
        return f"{what} {C}->{K} ch {H}x{W} (batch {N})" + epi


Blocking = tuple[int, int, int]       # rows, panels, shared; zeros = planned by the kernel
ACT_CODES = {"none": 0, "relu": 1, "leaky_relu": 2, "gelu": 3, "gelu_tanh": 4, "sigmoid": 5, "tanh": 6, "silu": 7,
             "clip": 8}                # kernels/accelc_gemm.h, enum class Act
PLANNED: Blocking = (0, 0, 0)


@dataclass
class SiteResult:
    site: Site
    blocking: Blocking = PLANNED
    planned_s: float | None = None     # median seconds per call of the planned split
    best_s: float | None = None        # median of the chosen split
    cached: bool = False
    measured: bool = False


@dataclass
class TuningReport:
    variant: str | None
    threads: int
    results: list[SiteResult] = field(default_factory=list)
    skipped: str | None = None         # why nothing was tuned
    seconds: float = 0.0
    over_budget: int = 0               # sites left planned because the budget ran out

    def blockings(self) -> list[Blocking]:
        return [r.blocking for r in self.results]

    def manifest(self) -> dict:
        changed = [r for r in self.results if r.blocking != PLANNED]
        out = {"variant": self.variant, "threads": self.threads, "sites": len(self.results),
               "retuned_sites": len(changed), "measured_sites": sum(r.measured for r in self.results),
               "cached_sites": sum(r.cached for r in self.results), "over_budget": self.over_budget,
               "seconds": round(self.seconds, 2)}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


# ---- candidates ------------------------------------------------------------------------------------
def row_candidates(site: Site) -> list[Blocking]:
    M = site.rows()
    if site.kind == "winograd":
        sizes = [s for s in (16, 24, 32, 64, 96) if s < M]
        return [(0, 0, 1)] + [(0, 0, 2)] + [(s, 0, 2) for s in sizes]
    sizes = [s for s in (24, 48, 96, 192, 384) if s < M]
    if M <= 4096:
        sizes.append(M)
    return [(s, 0, 0) for s in sizes]


def panel_candidates(site: Site, rows: int) -> list[Blocking]:
    if site.kind == "winograd":
        return []
    return [(rows, p, 0) for p in (1, 2, 4, 8, 16) if p <= site.panels()]


# ---- the timing library --------------------------------------------------------------------------
def _host_variant() -> str | None:
    runnable = isa.runnable_variants(isa.cpu_flags())
    return runnable[0] if runnable else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


@functools.lru_cache(maxsize=None)
def _sources_digest() -> str:
    h = hashlib.sha256(_headers_digest().encode())
    for p in kernel_library_sources() + [TUNING_SRC]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


class Timer:
    """The kernel library of one variant plus the timing driver, loaded through ctypes."""

    def __init__(self, builder: Builder, variant: str):
        flags = builder.variant_flags(variant)
        jobs = [CompileJob(s, flags) for s in kernel_library_sources() if s.parent == KERNELS]
        jobs.append(CompileJob(TUNING_SRC, flags))
        objects = [builder.compile(j, [KERNELS, TUNING_SRC.parent]) for j in jobs]
        self.lib = ctypes.CDLL(str(builder.link(objects)))
        ip, dp = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double)
        self.lib.accelc_tune_gemm_f32.argtypes = [ctypes.c_int] * 7 + [ip, ctypes.c_int, ctypes.c_int, dp]
        self.lib.accelc_tune_conv_nhwc_f32.argtypes = [ip] + [ctypes.c_int] * 5 + [ip, ctypes.c_int, ctypes.c_int, dp]

    def time(self, site: Site, cands: list[Blocking], threads: int, rounds: int, reps: int) -> list[float]:
        """Median seconds per call of each candidate."""
        flat = (ctypes.c_int * (3 * len(cands)))(*[v for c in cands for v in c])
        out = (ctypes.c_double * (len(cands) * rounds))()
        epi = (ACT_CODES[site.act], int(site.residual))
        if site.kind == "gemm":
            rc = self.lib.accelc_tune_gemm_f32(*site.dims, *epi, threads, len(cands), flat, rounds, reps, out)
        else:
            shape = (ctypes.c_int * 16)(*site.dims)
            rc = self.lib.accelc_tune_conv_nhwc_f32(shape, site.m, *epi, threads, len(cands), flat, rounds, reps, out)
        if rc != 0:
            raise BuildError(f"internal: the tuner could not time {site.describe()}")
        return [statistics.median(out[c * rounds:(c + 1) * rounds]) for c in range(len(cands))]


# ---- the search ----------------------------------------------------------------------------------
def _reps(site: Site, seconds_per_call: float | None = None) -> int:
    est = seconds_per_call if seconds_per_call else 2.0 * site.macs / GUESS_FLOPS
    return max(1, min(2000, int(TARGET_ROUND_S / max(est, 1e-7))))


def search(timer: Timer, site: Site, threads: int, rounds: int = ROUNDS) -> SiteResult:
    """Rows first, then panel groups; the planned split stays unless a candidate beats it by MIN_GAIN."""
    res = SiteResult(site, measured=True)
    first = [PLANNED] + [c for c in row_candidates(site) if c != PLANNED]
    probe = timer.time(site, [PLANNED], threads, 1, _reps(site))[0]
    reps = _reps(site, probe)
    medians = timer.time(site, first, threads, rounds, reps)
    planned = medians[0]
    best, best_s = min(zip(first, medians), key=lambda cm: cm[1])
    second = panel_candidates(site, best[0])
    if second:
        cands = [PLANNED, best] + [c for c in second if c not in (PLANNED, best)]
        medians = timer.time(site, cands, threads, rounds, reps)
        planned = statistics.median([planned, medians[0]])
        best, best_s = min(zip(cands, medians), key=lambda cm: cm[1])
    res.planned_s, res.best_s = planned, planned
    if best != PLANNED and best_s <= planned * (1.0 - MIN_GAIN):
        # The winner of many candidates is biased low (the luckiest of them); it must win again, head to
        # head with the planned split over more rounds, before it replaces the plan.
        planned_s, best_s = timer.time(site, [PLANNED, best], threads, CONFIRM_ROUNDS, reps)
        res.planned_s = planned_s
        if best_s <= planned_s * (1.0 - MIN_GAIN):
            res.blocking, res.best_s = best, best_s
        else:
            res.best_s = planned_s
    return res


def _cache_path(cache: Path, variant: str, threads: int, site: Site) -> Path:
    key = hashlib.sha256(json.dumps([_sources_digest(), compiler_version(), " ".join(COMMON_FLAGS), variant,
                                     _cpu_model(), threads, site.kind, list(site.dims), site.m, site.act,
                                     site.residual]).encode())
    return cache / "tuning" / f"{key.hexdigest()}.json"


def _read_cached(path: Path, site: Site) -> SiteResult | None:
    try:
        d = json.loads(path.read_text())
        b = tuple(int(v) for v in d["blocking"])
        if len(b) != 3:
            return None
        return SiteResult(site, b, d.get("planned_s"), d.get("best_s"), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cached(path: Path, r: SiteResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"site": r.site.describe(), "blocking": list(r.blocking), "planned_s": r.planned_s,
                   "best_s": r.best_s}, f)
    os.replace(tmp, path)


def tune(sites: list[Site], counts: list[int], variants: list[str], threads: int, builder: Builder,
         budget_s: float = DEFAULT_BUDGET_S, log=None) -> TuningReport:
    """Chooses a Blocking for each site (same order). ``counts[i]``: how often site i is called per run,
    to rank the sites; ``threads``: the artifact's thread count (0: this machine's cores)."""
    start = time.perf_counter()
    nthreads = threads or len(os.sched_getaffinity(0))
    variant = _host_variant()
    report = TuningReport(variant, nthreads, [SiteResult(s) for s in sites])
    if not sites:
        return report
    if variant is None or variant not in variants:
        report.variant = None
        report.skipped = (f"this machine runs the {variant or 'baseline'} code, which the artifact does not carry "
                          f"({', '.join(variants)}): tune on a machine of the target kind")
        return report
    order = sorted(range(len(sites)), key=lambda i: -sites[i].macs * counts[i])
    timer: Timer | None = None
    for i in order:
        path = _cache_path(builder.cache, variant, nthreads, sites[i])
        cached = _read_cached(path, sites[i])
        if cached is not None:
            report.results[i] = cached
            continue
        if time.perf_counter() - start > budget_s:
            report.over_budget += 1
            continue
        if timer is None:
            timer = Timer(builder, variant)
        r = search(timer, sites[i], nthreads)
        report.results[i] = r
        _write_cached(path, r)
        if log:
            change = "planned split kept" if r.blocking == PLANNED else f"rows {r.blocking[0] or 'planned'}, " \
                f"panels {r.blocking[1] or 'planned'}" + (f", shared {r.blocking[2]}" if r.blocking[2] else "")
            log(f"tuned {sites[i].describe()}: {change} ({r.planned_s * 1e3:.3f} -> {r.best_s * 1e3:.3f} ms)")
    report.seconds = time.perf_counter() - start
    return report


def header(report: TuningReport | None) -> str:
    """accelc_tuning.h: ACCELC_BLOCKING(i) for site i of model.cpp."""
    lines = ["// Generated by accelc: the work split of each GEMM / convolution call site of model.cpp",
             "// (ACCELC_BLOCKING(site)); see tuning.py. A split changes the speed, never the results.",
             "#pragma once", ""]
    planned = "#define ACCELC_BLOCKING(i) (::ACCELC_NS::Blocking())"
    if report is None or report.variant is None or all(b == PLANNED for b in report.blockings()):
        why = report.skipped if report is not None and report.skipped else (
            "the kernels' planned splits" if report is None else "measured: the planned splits were fastest")
        lines += [f"// {why}", planned]
        return "\n".join(lines) + "\n"
    macro = f"ACCELC_VARIANT_{report.variant.upper()}"
    lines += [f"// Measured for the {report.variant} variant on '{_cpu_model()}' with {report.threads} threads;",
              "// the other variants run the planned splits.",
              f"#if defined({macro})",
              "namespace ACCELC_NS {",
              "static const Blocking kTunedBlocking[] = {"]
    for i, r in enumerate(report.results):
        note = r.site.describe() + ("" if r.blocking == PLANNED else
                                    f": {r.planned_s * 1e3:.3f} -> {r.best_s * 1e3:.3f} ms")
        lines.append(f"    {{{r.blocking[0]}, {r.blocking[1]}, {r.blocking[2]}}},  // site {i}: {note}")
    lines += ["};", "}  // namespace ACCELC_NS",
              "#define ACCELC_BLOCKING(i) (::ACCELC_NS::kTunedBlocking[i])",
              "#else", planned, "#endif"]
    return "\n".join(lines) + "\n"


__all__ = ["Site", "SiteResult", "TuningReport", "tune", "header", "search", "Timer", "PLANNED"]
