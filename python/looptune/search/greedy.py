"""Greedy search with lookahead: look at every sequence of ``lookahead`` steps from the
current schedule, move one step towards the best schedule found, repeat while it improves.

A step is "move the cursor anywhere (free), then apply one schedule-changing action"
(see :func:`looptune.search.base.schedule_neighbors`).
"""

from __future__ import annotations

from collections.abc import Sequence

from looptune._core import LoopTree
from looptune.measure import Measurer
from looptune.search.base import (
    DEFAULT_MAX_LOOPS,
    SearchResult,
    Tracker,
    check_actions,
    run_search,
    schedule_neighbors,
)
from looptune.space.actions import PAPER_ACTIONS


def _best_first_step(
    tr: Tracker, state: LoopTree, lookahead: int, actions: Sequence[str], max_loops: int
) -> tuple[float, LoopTree | None]:
    """Best GFLOP/s within ``lookahead`` steps of ``state`` and the first step towards it."""
    best_g, best_step = -1.0, None
    for nxt in schedule_neighbors(state, actions, max_loops):
        g = tr.evaluate(nxt)
        if lookahead > 1:
            g = max(g, _best_first_step(tr, nxt, lookahead - 1, actions, max_loops)[0])
        if g > best_g:
            best_g, best_step = g, nxt
    return best_g, best_step


def greedy_search(
    tree: LoopTree,
    measurer: Measurer | None = None,
    *,
    lookahead: int = 1,
    time_budget: float | None = 60.0,
    measure_budget: int | None = None,
    actions: Sequence[str] = PAPER_ACTIONS,
    seed: int = 0,
    max_loops: int = DEFAULT_MAX_LOOPS,
    max_steps: int = 20,
) -> SearchResult:
    """Greedy hill climbing with ``lookahead`` steps of lookahead (1 or 2 in the paper).

    Stops when no schedule within ``lookahead`` steps beats the current one, after
    ``max_steps`` moves, or when a budget runs out. ``seed`` is unused (greedy is
    deterministic up to measurement noise) and accepted for a uniform signature.
    """
    del seed
    actions = check_actions(actions)
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")

    def body(tr: Tracker) -> None:
        state, g = tree, tr.evaluate(tree)
        for _ in range(max_steps):
            best_g, step = _best_first_step(tr, state, lookahead, actions, max_loops)
            if step is None or best_g <= g:
                return
            state, g = step, tr.evaluate(step)

    return run_search(f"greedy{lookahead}", tree, measurer, time_budget, measure_budget, body)
