"""Measured GFLOP/s of loop trees, cached by (schedule hash, CPU, ISA).

One process-wide cache is shared by every environment and search, so revisiting a schedule
never costs a second compile or timing run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cache

from looptune import _core


@dataclass(frozen=True)
class Measurement:
    gflops: float  # best run
    median_gflops: float
    runs: int
    compile_seconds: float
    timing_seconds: float  # wall time spent timing
    facts: dict


@dataclass
class MeasureStats:
    measured: int = 0
    cache_hits: int = 0
    compile_seconds: float = 0.0
    timing_seconds: float = 0.0


@dataclass
class Measurer:
    """Compiles and times loop trees with a fixed budget per state, caching the result.

    Args:
        isa: "avx512" or "avx2"; default the host's best.
        min_time: seconds of timed runs per state (after one warm-up run).
        min_runs: at least this many timed runs (the best one counts).
        max_runs: at most this many timed runs.
    """

    isa: str | None = None
    min_time: float = 0.002
    min_runs: int = 3
    max_runs: int = 200
    cache: dict = field(default_factory=lambda: _shared_cache())
    stats: MeasureStats = field(default_factory=MeasureStats)

    def __post_init__(self) -> None:
        if self.isa is None:
            self.isa = _core.host_isa()
        from looptune.validate import check_timing

        check_timing(self.min_time, self.min_runs, self.max_runs)

    def key(self, tree: _core.LoopTree) -> tuple:
        return (tree.hash(), _cpu(), self.isa, self.min_time, self.min_runs)

    def measure(self, tree: _core.LoopTree) -> Measurement:
        key = self.key(tree)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        t0 = time.perf_counter()
        kernel = tree.compile(self.isa)
        t1 = time.perf_counter()
        result = kernel.benchmark(self.min_time, self.min_runs, self.max_runs)
        t2 = time.perf_counter()
        m = Measurement(
            result.gflops, result.median_gflops, result.runs, t1 - t0, t2 - t1, kernel.facts
        )
        self.stats.measured += 1
        self.stats.compile_seconds += t1 - t0
        self.stats.timing_seconds += t2 - t1
        self.cache[key] = m
        return m

    def gflops(self, tree: _core.LoopTree) -> float:
        return self.measure(tree).gflops


@cache
def _shared_cache() -> dict:
    return {}


@cache
def _cpu() -> str:
    return _core.cpu_name()


@cache
def peak_gflops(isa: str | None = None) -> float:
    """This machine's measured single-core FMA peak (measured once per process)."""
    return _core.measure_peak_gflops(isa or _core.host_isa(), 0.05)
