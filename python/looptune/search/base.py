"""Shared machinery of the search baselines: results, budgets and schedule neighbourhoods.

A search walks the space of loop trees reachable from a start tree with named actions; a
:class:`looptune.space.ScheduleSpace` owns the action names, the depth cap and legality.
Cursor moves never change the schedule (``LoopTree.hash`` ignores the cursor), so the searches
treat "move the cursor anywhere, then apply one schedule-changing action" as a single step:
:func:`schedule_neighbors` lists every schedule one such step away.

Every measurement goes through a :class:`looptune.measure.Measurer`; only fresh measurements
(cache misses) count against a measurement budget, and states already timed by anyone sharing
the cache are free. With a :class:`looptune.measure.deadline.DeadlineRunner` the time budget
also holds inside a measurement (a slow one is cut off at the deadline). A failed measurement
(compile error, runtime error, timeout, ...) scores 0 GFLOP/s, is recorded by the measurer, and
never stops a search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from looptune._core import LoopTree
from looptune.measure import Measurer, MeasureResult
from looptune.space import CURSOR_ACTIONS, DEFAULT_MAX_LOOPS, MAX_LOOPS, ScheduleSpace, at_cursor


@dataclass
class SearchResult:
    """What a search found.

    ``history`` holds one ``(elapsed_seconds, schedule_hash_hex, gflops)`` entry per distinct
    schedule the search evaluated, in order. ``measurements`` counts fresh (uncached) timings.
    """

    best_tree: LoopTree
    best_gflops: float
    base_gflops: float
    history: list[tuple[float, str, float]] = field(default_factory=list)
    measurements: int = 0
    seconds: float = 0.0
    search: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)  # (hash, outcome) per failure

    @property
    def speedup(self) -> float:
        return self.best_gflops / self.base_gflops if self.base_gflops > 0 else math.nan

    def to_dict(self) -> dict:
        return {
            "search": self.search,
            "best_gflops": self.best_gflops,
            "base_gflops": self.base_gflops,
            "speedup": self.speedup,
            "measurements": self.measurements,
            "seconds": self.seconds,
            "best_schedule": self.best_tree.dump(),
            "history": [list(h) for h in self.history],
            "failures": [list(f) for f in self.failures],
        }


class BudgetExhausted(Exception):
    """Raised inside a search when its time or measurement budget is spent."""


class Tracker:
    """Evaluates trees for one search run: enforces budgets, records history and the best."""

    def __init__(
        self, measurer: Measurer, time_budget: float | None, measure_budget: int | None
    ) -> None:
        if time_budget is not None and not (time_budget >= 0 and math.isfinite(time_budget)):
            raise ValueError(f"time_budget must be a finite number >= 0 seconds, got {time_budget}")
        if measure_budget is not None and not (
            isinstance(measure_budget, int) and measure_budget >= 0
        ):
            raise ValueError(f"measure_budget must be an int >= 0, got {measure_budget!r}")
        self.measurer = measurer
        if time_budget is not None:
            measurer.arm(time_budget)  # the runner's hook: a DeadlineRunner starts its clock
        self.time_budget = time_budget
        self.measure_budget = measure_budget
        self.start = time.perf_counter()
        self.fresh = 0
        self.failures: list[tuple[str, MeasureResult]] = []
        self.seen: dict[int, float] = {}
        self.history: list[tuple[float, str, float]] = []
        self.best_tree: LoopTree | None = None
        self.best_gflops = -math.inf
        self.base_gflops = math.nan

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def measurements(self) -> int:
        return self.fresh

    def evaluate(self, tree: LoopTree, force: bool = False) -> float:
        """GFLOP/s of ``tree``; raises BudgetExhausted unless ``force`` or already known."""
        if not force and self.time_budget is not None and self.elapsed >= self.time_budget:
            raise BudgetExhausted
        h = tree.hash()
        if h in self.seen:
            return self.seen[h]
        cached = self.measurer.cached(tree)
        if (
            not force
            and not cached
            and self.measure_budget is not None
            and self.measurements >= self.measure_budget
        ):
            raise BudgetExhausted
        r = self.measurer.measure(tree)
        self.fresh += not cached
        g = r.gflops
        if not r.ok:
            self.failures.append((f"{h:016x}", r))
        self.seen[h] = g
        self.history.append((self.elapsed, f"{h:016x}", g))
        if g > self.best_gflops:
            self.best_tree, self.best_gflops = tree, g
        return g

    def result(self, name: str) -> SearchResult:
        assert self.best_tree is not None, "evaluate the start tree first"
        return SearchResult(
            self.best_tree,
            self.best_gflops,
            self.base_gflops,
            self.history,
            self.measurements,
            self.elapsed,
            name,
            [(h, r.outcome.value) for h, r in self.failures],
        )


def run_search(
    name: str,
    tree: LoopTree,
    measurer: Measurer | None,
    time_budget: float | None,
    measure_budget: int | None,
    body: Callable[[Tracker], None],
) -> SearchResult:
    """Measure ``tree`` (always, even with a zero budget), then run ``body`` until it returns
    or a budget runs out, and package what was found."""
    if not isinstance(tree, LoopTree):
        raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
    tracker = Tracker(measurer if measurer is not None else Measurer(), time_budget, measure_budget)
    tracker.base_gflops = tracker.evaluate(tree, force=True)
    try:
        body(tracker)
    except BudgetExhausted:
        pass
    return tracker.result(name)


def check_actions(actions: Sequence[str]) -> tuple[str, ...]:
    """Validate an action list (names are checked by the engine's parser)."""
    if isinstance(actions, str):
        raise TypeError("actions must be a sequence of action names, not a string")
    actions = ScheduleSpace(actions).actions
    if all(a in CURSOR_ACTIONS for a in actions):
        raise ValueError("actions must include at least one schedule-changing action")
    return actions


def successors(
    tree: LoopTree, actions: Sequence[str], max_loops: int = DEFAULT_MAX_LOOPS
) -> list[tuple[str, LoopTree]]:
    """Legal ``(action, tree)`` pairs one action away, skipping splits beyond ``max_loops``."""
    return ScheduleSpace(actions, max_loops).successors(tree)


def schedule_neighbors(
    tree: LoopTree, actions: Sequence[str], max_loops: int = DEFAULT_MAX_LOOPS
) -> list[LoopTree]:
    """Distinct schedules reachable by free cursor moves plus one schedule-changing action
    (see :meth:`looptune.space.ScheduleSpace.neighbors`)."""
    return ScheduleSpace(actions, max_loops).neighbors(tree)


__all__ = [
    "CURSOR_ACTIONS",
    "DEFAULT_MAX_LOOPS",
    "MAX_LOOPS",
    "BudgetExhausted",
    "SearchResult",
    "Tracker",
    "at_cursor",
    "check_actions",
    "run_search",
    "schedule_neighbors",
    "successors",
]
