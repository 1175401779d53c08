"""A runner that keeps a search inside its time budget even during a slow measurement.

A search checks its budget between measurements, but an in-process measurement cannot be
interrupted: one schedule whose kernel runs for seconds (a poor schedule of a 1024^3 matmul)
overruns a two-second budget many times over. :class:`DeadlineRunner` wraps a runner that
can be cut off (:class:`looptune.measure.isolate.IsolatedRunner`, which kills its worker) and
gives every measurement only the time left before the deadline, at least ``floor`` seconds::

    runner = DeadlineRunner()
    measurer = Measurer(cache={}, runner=runner)
    greedy_search(tree, measurer, time_budget=2.0)   # the Tracker arms the deadline

A measurement cut off at the deadline is a ``TIMEOUT`` (0 GFLOP/s), so the search stops at its
next budget check. Once armed with :meth:`arm` (the ``Runner`` protocol's hook, which the
search's ``Tracker`` calls through ``Measurer.arm``), the deadline holds until re-armed.
"""

from __future__ import annotations

import math
import time

from looptune._core import LoopTree
from looptune.measure.result import MeasureResult
from looptune.measure.run import Runner, RunnerBase, TimingBudget


class DeadlineRunner(RunnerBase):
    """Runs ``inner`` (default an ``IsolatedRunner``) with its hard timeout bounded by the
    time left before the deadline (never below ``floor`` seconds).

    Args:
        inner: a runner with a settable ``hard_timeout`` (seconds one measurement may take).
        floor: the least time a measurement gets, even past the deadline.
    """

    def __init__(self, inner: Runner | None = None, floor: float = 0.5) -> None:
        if inner is None:
            from looptune.measure.isolate import IsolatedRunner

            inner = IsolatedRunner()
        if not hasattr(inner, "hard_timeout"):
            raise TypeError(f"{type(inner).__name__} cannot be cut off (no hard_timeout)")
        if not floor > 0:
            raise ValueError(f"floor must be > 0 seconds, got {floor}")
        self.inner, self.floor = inner, floor
        self.limit = float(inner.hard_timeout)  # the inner runner's own cut-off
        self.deadline = math.inf

    def arm(self, seconds: float) -> None:
        """Set the deadline ``seconds`` from now."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.deadline = time.perf_counter() + seconds

    @property
    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def run(
        self, tree: LoopTree, isa: str, budget: TimingBudget, cap_seconds: float | None
    ) -> MeasureResult:
        self.inner.hard_timeout = min(self.limit, max(self.remaining, self.floor))
        return self.inner.run(tree, isa, budget, cap_seconds)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


__all__ = ["DeadlineRunner"]
