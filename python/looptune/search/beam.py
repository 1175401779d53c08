"""Beam search over schedules, breadth-first (best ``width`` states per depth level) or
depth-first (expand the ``width`` best children of a state, best first, recursively).

A step is "move the cursor anywhere (free), then apply one schedule-changing action"
(see :func:`looptune.search.base.schedule_neighbors`). Schedules already evaluated in the
run are not expanded again, so transpositions cost nothing.
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

MAX_DEPTH = 10


def _ranked_children(
    tr: Tracker, state: LoopTree, actions: Sequence[str], max_loops: int
) -> list[tuple[float, LoopTree]]:
    """Measure the unseen neighbours of ``state``; best first (stable on ties)."""
    fresh = [t for t in schedule_neighbors(state, actions, max_loops) if t.hash() not in tr.seen]
    scored = [(tr.evaluate(t), t) for t in fresh]
    scored.sort(key=lambda s: -s[0])
    return scored


def _bfs(
    tr: Tracker, root: LoopTree, width: int, depth: int, actions: Sequence[str], max_loops: int
) -> None:
    beam = [root]
    for _ in range(depth):
        candidates: dict[int, LoopTree] = {}
        for state in beam:
            for t in schedule_neighbors(state, actions, max_loops):
                if t.hash() not in tr.seen:
                    candidates.setdefault(t.hash(), t)
        scored = [(tr.evaluate(t), t) for t in candidates.values()]
        if not scored:
            return
        scored.sort(key=lambda s: -s[0])
        beam = [t for _, t in scored[:width]]


def _dfs(
    tr: Tracker, state: LoopTree, width: int, depth: int, actions: Sequence[str], max_loops: int
) -> None:
    if depth == 0:
        return
    for _, child in _ranked_children(tr, state, actions, max_loops)[:width]:
        _dfs(tr, child, width, depth - 1, actions, max_loops)


def beam_search(
    tree: LoopTree,
    measurer: Measurer | None = None,
    *,
    width: int = 2,
    mode: str = "dfs",
    time_budget: float | None = 60.0,
    measure_budget: int | None = None,
    actions: Sequence[str] = PAPER_ACTIONS,
    seed: int = 0,
    max_loops: int = DEFAULT_MAX_LOOPS,
    max_depth: int = MAX_DEPTH,
) -> SearchResult:
    """Beam search of ``width`` to ``max_depth`` steps; ``mode`` is "dfs" or "bfs".

    ``seed`` is unused (the search is deterministic up to measurement noise).
    """
    del seed
    actions = check_actions(actions)
    if width < 1 or max_depth < 1:
        raise ValueError(f"need width >= 1 and max_depth >= 1, got {width} and {max_depth}")
    if mode not in ("dfs", "bfs"):
        raise ValueError(f"mode must be 'dfs' or 'bfs', got {mode!r}")
    expand = _dfs if mode == "dfs" else _bfs

    def body(tr: Tracker) -> None:
        expand(tr, tree, width, max_depth, actions, max_loops)

    return run_search(f"beam{width}{mode}", tree, measurer, time_budget, measure_budget, body)
