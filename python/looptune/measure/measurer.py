"""The Measurer: build + run + cache + records, composed. Never raises for a bad schedule."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache

from looptune import _core
from looptune.measure.result import MeasureResult, Outcome
from looptune.measure.run import KernelRunner, Runner, TimingBudget
from looptune.measure.store import (
    LRUCache,
    RecordStore,
    host_cpu,
    make_record,
    record_result,
    same_cpu,
)

DEFAULT_CACHE_SIZE = 16384  # measurements kept in memory (about 3 KB each)


@dataclass
class MeasureStats:
    measured: int = 0  # fresh measurements (cache misses), failures included
    cache_hits: int = 0
    failures: dict = field(default_factory=dict)  # Outcome -> count
    compile_seconds: float = 0.0
    timing_seconds: float = 0.0


@cache
def _cpu() -> tuple[str, str]:
    return host_cpu()  # (CPUID signature, brand string)


_SHARED = LRUCache(DEFAULT_CACHE_SIZE)


def shared_cache() -> LRUCache:
    """The bounded cache that measurers share by default (envs and searches of one process)."""
    return _SHARED


class Measurer:
    """Measures GFLOP/s of loop trees: ``measure(tree) -> MeasureResult`` (typed outcome, never
    raises for a failing schedule), ``gflops(tree) -> float`` (0.0 for a failure).

    Args:
        isa: "avx512" or "avx2"; default the host's best.
        min_time, min_runs, max_runs: the timing budget per schedule (see ``TimingBudget``).
        cache: an ``LRUCache``; None = the process-wide bounded one; ``{}`` = a private one.
            Keys are (schedule hash, CPU signature, ISA, min_time, min_runs, max_runs, runner
            id), so measurers with different budgets or runners never share a figure.
        records: a path or ``RecordStore``: every fresh measurement is appended, and the
            records of this CPU (its CPUID signature) / ISA / budget warm the cache at
            construction.
        runner: what measures (default ``KernelRunner(verify)``); see ``looptune.measure.run``.
        verify: check each fresh kernel against numpy (``WRONG_ANSWER`` on mismatch).
        threads: threads a kernel with a parallel loop runs on (None: ``looptune.get_num_threads()``
            now); part of the cache key and of every record.
        timeout_factor, timeout_floor: a schedule whose single run takes longer than
            ``max(timeout_factor * best run seen for its computation, timeout_floor)`` seconds
            is cut off as ``TIMEOUT`` (``timeout_factor=None``: never). The floor keeps
            microsecond kernels from timing out on a cold first run.
    """

    def __init__(
        self,
        isa: str | None = None,
        min_time: float = 0.002,
        min_runs: int = 3,
        max_runs: int = 200,
        cache: LRUCache | dict | None = None,
        records: str | os.PathLike | RecordStore | None = None,
        runner: Runner | None = None,
        verify: bool = False,
        timeout_factor: float | None = 20.0,
        timeout_floor: float = 0.05,
        threads: int | None = None,
    ) -> None:
        self.isa = _core.host_isa() if isa is None else isa
        if not _core.isa_supported(self.isa):
            raise ValueError(f"ISA {self.isa!r} is not supported on this CPU")
        threads = _core.get_num_threads() if threads is None else threads
        self.budget = TimingBudget(min_time, min_runs, max_runs, threads)
        if isinstance(cache, dict):
            cache = LRUCache(DEFAULT_CACHE_SIZE)
        self._cache = _SHARED if cache is None else cache
        self.runner: Runner = runner if runner is not None else KernelRunner(verify)
        if timeout_factor is not None and not timeout_factor > 1:
            raise ValueError(f"timeout_factor must be > 1 or None, got {timeout_factor}")
        self.timeout_factor = timeout_factor
        if not timeout_floor >= 0:
            raise ValueError(f"timeout_floor must be >= 0, got {timeout_floor}")
        self.timeout_floor = timeout_floor
        self.stats = MeasureStats()
        self.records = RecordStore(records) if isinstance(records, (str, os.PathLike)) else records
        self._best_seconds: dict[str, float] = {}
        self._runner_id = id(self.runner) if runner is not None else (KernelRunner, verify)
        if self.records is not None:
            self.warm(self.records)

    @property
    def min_time(self) -> float:
        return self.budget.min_time

    @property
    def min_runs(self) -> int:
        return self.budget.min_runs

    @property
    def max_runs(self) -> int:
        return self.budget.max_runs

    @property
    def threads(self) -> int:
        return self.budget.threads

    def _key(self, h: int) -> tuple:
        b = self.budget
        return (h, _cpu()[0], self.isa, b.min_time, b.min_runs, b.max_runs, b.threads,
                self._runner_id)

    def cached(self, tree: _core.LoopTree) -> bool:
        """True when measuring ``tree`` would cost nothing (its figure is in the cache)."""
        return self._key(tree.hash()) in self._cache

    def measure(self, tree: _core.LoopTree) -> MeasureResult:
        """Measure ``tree`` (or return its cached result)."""
        key = self._key(tree.hash())
        hit = self._cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        header = tree.computation.header()
        cap = None
        if self.timeout_factor is not None and header in self._best_seconds:
            cap = max(self.timeout_factor * self._best_seconds[header], self.timeout_floor)
        try:
            result = self.runner.run(tree, self.isa, self.budget, cap)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a runner broke its protocol: still never stop a tuner
            result = MeasureResult(Outcome.UNKNOWN, error=f"{type(exc).__name__}: {exc}")
        self._account(result)
        if result.ok and result.seconds > 0:
            old = self._best_seconds.get(header)
            self._best_seconds[header] = result.seconds if old is None else min(old, result.seconds)
        self._cache.put(key, result)
        if self.records is not None:
            sig, brand = _cpu()
            self.records.append(make_record(tree, result, brand, self.isa, self.budget, sig))
        return result

    def arm(self, seconds: float) -> None:
        """A search's time budget starts now (``seconds``): passed on to the runner's
        :meth:`~looptune.measure.run.Runner.arm` (a no-op for most runners)."""
        arm = getattr(self.runner, "arm", None)
        if arm is not None:  # a user's runner written before the hook existed
            arm(seconds)

    def gflops(self, tree: _core.LoopTree) -> float:
        """Best-run GFLOP/s of ``tree`` (0.0 when its measurement failed)."""
        return self.measure(tree).gflops

    def warm(self, records: RecordStore) -> int:
        """Load the records of this CPU, ISA and budget into the cache; returns how many."""
        if self._runner_id != (KernelRunner, False) and self._runner_id != (KernelRunner, True):
            return 0  # records are real timings; a fake runner's figures must not mix with them
        n, b, (sig, brand) = 0, self.budget, _cpu()
        for rec in records:
            if (
                same_cpu(rec, sig, brand)
                and rec.get("isa") == self.isa
                and rec.get("min_time") == b.min_time
                and rec.get("min_runs") == b.min_runs
                and rec.get("max_runs") == b.max_runs
                and rec.get("threads", 1) == b.threads  # records before threads: 1 thread
                and isinstance(rec.get("hash"), str)
            ):
                try:
                    h = int(rec["hash"], 16)
                except ValueError:
                    continue
                self._cache.put(self._key(h), record_result(rec))
                n += 1
        return n

    def _account(self, r: MeasureResult) -> None:
        s = self.stats
        s.measured += 1
        s.compile_seconds += r.compile_seconds
        s.timing_seconds += r.timing_seconds
        if not r.ok:
            s.failures[r.outcome] = s.failures.get(r.outcome, 0) + 1


FINAL_MIN_TIME = 0.05  # seconds of timing behind every reported ("final") figure
FINAL_MIN_RUNS = 10
FINAL_MAX_RUNS = 100_000


def final_measurer(
    min_time: float = FINAL_MIN_TIME, isa: str | None = None, max_runs: int = FINAL_MAX_RUNS
) -> Measurer:
    """The measurer of a reported figure: a longer timing than a search's (``min_time``
    seconds, at least ten runs) and a private cache. Searches find schedules with
    short timings; tables, the CLI's report and the leaderboard re-time the winner with this."""
    return Measurer(
        isa,
        min_time=min_time,
        min_runs=FINAL_MIN_RUNS,
        max_runs=max_runs,
        cache={},
    )


@cache
def peak_gflops(isa: str | None = None) -> float:
    """This machine's measured single-core FMA peak (measured once per process)."""
    return _core.measure_peak_gflops(isa or _core.host_isa(), 0.05)


__all__ = [
    "DEFAULT_CACHE_SIZE",
    "FINAL_MIN_TIME",
    "MeasureStats",
    "Measurer",
    "final_measurer",
    "peak_gflops",
    "shared_cache",
]
