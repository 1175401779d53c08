"""Run: time a built kernel under a budget, with typed outcomes, and the Runner protocol.

A :class:`Runner` turns a schedule into a :class:`MeasureResult`. :class:`KernelRunner` is the
real one (build, optional check against numpy, then time). Anything with the same ``run``
method can stand in: a cost model, or :class:`FakeRunner`, a deterministic cost function over
the schedule for tests. :class:`FaultyRunner` injects failures for fault-tolerance runs.

Timeouts: a schedule whose best run is slower than ``cap_seconds`` (the measurer passes
``timeout_factor`` times the best time seen so far for the same computation, with a floor) is
``TIMEOUT``, as TVM's runners cut off runs far slower than the best. In process a run cannot be
interrupted, so the budget is still spent (at most ``min_runs`` + 1 runs for a slow kernel);
``looptune.measure.isolate.IsolatedRunner`` really cuts a run off (it kills the worker).
``KeyboardInterrupt`` is never swallowed. (An extra single timed run before the budget to cut
off early was tried: it cost 0.7 ms of a 3.7 ms measurement, 20% of fresh env steps.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from looptune import _core
from looptune.measure.build import _why, build
from looptune.measure.reference import check_kernel
from looptune.measure.result import MeasureResult, Outcome, failure


@dataclass(frozen=True)
class TimingBudget:
    """How long to time one schedule: at least ``min_time`` seconds and ``min_runs`` runs, at
    most ``max_runs`` runs (after one warm-up run), on ``threads`` threads (a kernel without a
    parallel loop runs on one)."""

    min_time: float = 0.002
    min_runs: int = 3
    max_runs: int = 200
    threads: int = 1

    def __post_init__(self) -> None:
        from looptune.threads import resolve_threads
        from looptune.util.validate import check_timing

        check_timing(self.min_time, self.min_runs, self.max_runs)
        resolve_threads(self.threads, warn=False)
        if not isinstance(self.threads, int):
            raise TypeError(f"threads must be an int, got {type(self.threads).__name__}")


Budget = TimingBudget  # the old name (not looptune.leaderboard.Budget, an entrant's seconds)


@runtime_checkable
class Runner(Protocol):
    """Measures one schedule. Must not raise for a bad schedule: return a failed result.

    ``arm(seconds)`` is told when a search's time budget starts (``Measurer.arm``): a runner
    that can cut a measurement off (``looptune.measure.deadline.DeadlineRunner``) keeps every
    measurement inside it; for the others it is a no-op (:class:`RunnerBase`)."""

    def run(
        self, tree: _core.LoopTree, isa: str, budget: TimingBudget, cap_seconds: float | None
    ) -> MeasureResult: ...

    def arm(self, seconds: float) -> None: ...


class RunnerBase:
    """The hooks every runner has, as no-ops: subclass it and write ``run``."""

    def arm(self, seconds: float) -> None:
        """A time budget of ``seconds`` starts now (ignored: this runner cannot cut off)."""
        del seconds


class KernelRunner(RunnerBase):
    """Compile with :func:`build`, optionally verify against numpy, then time the kernel.

    Args:
        verify: compare the kernel's output with ``looptune.measure.reference`` first; a mismatch is
            ``WRONG_ANSWER`` (costs one numpy evaluation per fresh schedule).
    """

    def __init__(self, verify: bool = False) -> None:
        self.verify = verify

    def run(
        self, tree: _core.LoopTree, isa: str, budget: TimingBudget, cap_seconds: float | None
    ) -> MeasureResult:
        built = build(tree, isa)
        if not built.ok:
            return failure(built.outcome, built.error, compile_seconds=built.seconds)
        kernel, cs = built.kernel, built.seconds
        t0 = time.perf_counter()
        try:
            if self.verify:
                check = check_kernel(kernel)
                if not check.ok:
                    why = str(check)
                    return failure(Outcome.WRONG_ANSWER, why, compile_seconds=cs, facts=built.facts)
            threads = getattr(budget, "threads", 1)
            r = kernel.benchmark(budget.min_time, budget.min_runs, budget.max_runs, threads=threads)
            if cap_seconds is not None and r.min_seconds > cap_seconds:
                return failure(
                    Outcome.TIMEOUT,
                    f"best run took {r.min_seconds:.3g} s, over the cap {cap_seconds:.3g} s",
                    compile_seconds=cs,
                    timing_seconds=time.perf_counter() - t0,
                    facts=built.facts,
                )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            return failure(Outcome.RUNTIME_ERROR, _why(exc), compile_seconds=cs, facts=built.facts)
        return MeasureResult(
            Outcome.OK,
            r.gflops,
            r.median_gflops,
            r.runs,
            cs,
            time.perf_counter() - t0,
            built.facts,
            seconds=r.min_seconds,
        )


class FakeRunner(RunnerBase):
    """A deterministic stand-in: ``cost(tree) -> GFLOP/s`` (no compile, no run).

    ``cost`` may also return a :class:`MeasureResult` (e.g. a failure) or raise: an exception
    becomes ``RUNTIME_ERROR``, as with a real kernel. ``calls`` counts the schedules run.
    """

    def __init__(self, cost: Callable[[_core.LoopTree], float | MeasureResult]) -> None:
        self.cost = cost
        self.calls = 0

    def run(
        self, tree: _core.LoopTree, isa: str, budget: TimingBudget, cap_seconds: float | None
    ) -> MeasureResult:
        del isa, budget, cap_seconds
        self.calls += 1
        try:
            value = self.cost(tree)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            return failure(Outcome.RUNTIME_ERROR, _why(exc))
        if isinstance(value, MeasureResult):
            return value
        g = float(value)
        return MeasureResult(Outcome.OK, g, g, 1, seconds=0.0)


FAULTS = (Outcome.COMPILE_ERROR, Outcome.RUNTIME_ERROR, Outcome.TIMEOUT)


class FaultyRunner(RunnerBase):
    """Wraps a runner and fails a seeded ``rate`` of the schedules it runs, cycling through
    compile error, runtime error and timeout (the benchmark's fault run)."""

    def __init__(self, inner: Runner, rate: float = 0.1, seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.inner, self.rate = inner, rate
        self.rng = np.random.default_rng(seed)
        self.injected: dict[Outcome, int] = dict.fromkeys(FAULTS, 0)
        self._next = 0

    def run(
        self, tree: _core.LoopTree, isa: str, budget: TimingBudget, cap_seconds: float | None
    ) -> MeasureResult:
        if self.rng.random() < self.rate:
            outcome = FAULTS[self._next % len(FAULTS)]
            self._next += 1
            self.injected[outcome] += 1
            return failure(outcome, f"injected {outcome.value}")
        return self.inner.run(tree, isa, budget, cap_seconds)

    def arm(self, seconds: float) -> None:
        arm = getattr(self.inner, "arm", None)
        if arm is not None:
            arm(seconds)


__all__ = [
    "FAULTS",
    "Budget",
    "TimingBudget",
    "FakeRunner",
    "FaultyRunner",
    "KernelRunner",
    "Runner",
    "RunnerBase",
]
