"""Shared machinery of the search baselines: results, budgets and schedule neighbourhoods.

A search walks the space of loop trees reachable from a start tree with named actions
(``looptune.actions``). Cursor moves never change the schedule (``LoopTree.hash`` ignores the
cursor), so the searches treat "move the cursor anywhere, then apply one schedule-changing
action" as a single step: :func:`schedule_neighbors` lists every schedule one such step away.

Every measurement goes through a :class:`looptune.measure.Measurer`; only fresh measurements
(cache misses) count against a measurement budget, and states already timed by anyone sharing
the cache are free.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from looptune._core import LoopTree
from looptune.errors import CompileError
from looptune.measure import Measurer

CURSOR_ACTIONS = ("up", "down")
MAX_LOOPS = 10  # the environments' cap on loop-nest depth (as in the paper)


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
        }


class BudgetExhausted(Exception):
    """Raised inside a search when its time or measurement budget is spent."""


class Tracker:
    """Evaluates trees for one search run: enforces budgets, records history and the best."""

    def __init__(
        self, measurer: Measurer, time_budget: float | None, measure_budget: int | None
    ) -> None:
        if time_budget is not None and time_budget < 0:
            raise ValueError(f"time_budget must be >= 0 seconds, got {time_budget}")
        if measure_budget is not None and measure_budget < 0:
            raise ValueError(f"measure_budget must be >= 0, got {measure_budget}")
        self.measurer = measurer
        self.time_budget = time_budget
        self.measure_budget = measure_budget
        self.start = time.perf_counter()
        self.start_measured = measurer.stats.measured
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
        return self.measurer.stats.measured - self.start_measured

    def evaluate(self, tree: LoopTree, force: bool = False) -> float:
        """GFLOP/s of ``tree``; raises BudgetExhausted unless ``force`` or already known."""
        if not force and self.time_budget is not None and self.elapsed >= self.time_budget:
            raise BudgetExhausted
        h = tree.hash()
        if h in self.seen:
            return self.seen[h]
        cached = self.measurer.key(tree) in self.measurer.cache
        if (
            not force
            and not cached
            and self.measure_budget is not None
            and self.measurements >= self.measure_budget
        ):
            raise BudgetExhausted
        try:
            g = self.measurer.gflops(tree)
        except CompileError:
            g = 0.0  # the engine promises legal trees compile; never let one stop a search
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
    """Validate an action list (names are checked by the engine on a tiny tree)."""
    if isinstance(actions, str):
        raise TypeError("actions must be a sequence of action names, not a string")
    actions = tuple(actions)
    if not actions:
        raise ValueError("actions must not be empty")
    if all(a in CURSOR_ACTIONS for a in actions):
        raise ValueError("actions must include at least one schedule-changing action")
    return actions


def at_cursor(tree: LoopTree, position: int) -> LoopTree:
    """The same schedule with the cursor on loop ``position`` (0 = outermost)."""
    while tree.cursor < position:
        tree = tree.down()
    while tree.cursor > position:
        tree = tree.up()
    return tree


def successors(
    tree: LoopTree, actions: Sequence[str], max_loops: int = MAX_LOOPS
) -> list[tuple[str, LoopTree]]:
    """Legal ``(action, tree)`` pairs one action away, skipping splits beyond ``max_loops``."""
    out = []
    for a in actions:
        nxt = tree.try_apply(a)
        if nxt is not None and nxt.depth <= max_loops:
            out.append((a, nxt))
    return out


def schedule_neighbors(
    tree: LoopTree, actions: Sequence[str], max_loops: int = MAX_LOOPS
) -> list[LoopTree]:
    """Distinct schedules reachable by free cursor moves plus one schedule-changing action.

    Cursor moves are free only if the action set has both of them; otherwise the cursor
    stays where it is. The result excludes ``tree`` itself and is in a deterministic order.
    """
    mutations = [a for a in actions if a not in CURSOR_ACTIONS]
    free_cursor = all(a in actions for a in CURSOR_ACTIONS)
    positions = range(tree.depth) if free_cursor else [tree.cursor]
    seen = {tree.hash()}
    out = []
    for pos in positions:
        for _, nxt in successors(at_cursor(tree, pos), mutations, max_loops):
            h = nxt.hash()
            if h not in seen:
                seen.add(h)
                out.append(nxt)
    return out
