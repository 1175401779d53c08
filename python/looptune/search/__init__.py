"""Search baselines over loop-tree schedules: random, greedy (lookahead 1, 2) and beam search
(DFS and BFS, widths 2 and 4), plus the trained agent when its policy is available.

    >>> import looptune, looptune.search
    >>> tree = looptune.matmul(64, 64, 64).default_schedule()
    >>> result = looptune.search.get("greedy1")(tree, time_budget=5.0)  # doctest: +SKIP
    >>> result.best_gflops / result.base_gflops  # doctest: +SKIP

Every search is called as ``search(tree, measurer=None, *, time_budget=..., measure_budget=...,
actions=PAPER_ACTIONS, seed=0, max_loops=10)`` and returns a :class:`SearchResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from looptune._core import LoopTree
from looptune.errors import LoopTuneError
from looptune.measure import Measurer
from looptune.search.base import SearchResult, run_search, schedule_neighbors
from looptune.search.beam import beam_search
from looptune.search.greedy import greedy_search
from looptune.search.random import random_search

SearchFn = Callable[..., SearchResult]


class SearchUnavailableError(LoopTuneError, RuntimeError):
    """A registered search that cannot run here (e.g. the shipped policy failed to load)."""


def base_search(tree: LoopTree, measurer: Measurer | None = None, **_: object) -> SearchResult:
    """No search at all: measure the start tree (the table's "base" row)."""
    return run_search("base", tree, measurer, None, 0, lambda tracker: None)


SEARCHES: dict[str, SearchFn] = {
    "base": base_search,
    "random": random_search,
    "greedy1": partial(greedy_search, lookahead=1),
    "greedy2": partial(greedy_search, lookahead=2),
    "beam2dfs": partial(beam_search, width=2, mode="dfs"),
    "beam4dfs": partial(beam_search, width=4, mode="dfs"),
    "beam2bfs": partial(beam_search, width=2, mode="bfs"),
    "beam4bfs": partial(beam_search, width=4, mode="bfs"),
}

# Every search by name, in the order of the paper's table.
NAMES: tuple[str, ...] = (
    "base",
    "greedy1",
    "greedy2",
    "beam2dfs",
    "beam4dfs",
    "beam2bfs",
    "beam4bfs",
    "random",
    "agent",
)

# Model-guided searches over the template configuration space (looptune.costmodel's models).
from looptune.search.model_guided import ml2_search, xgb_search  # noqa: E402

SEARCHES.update({"ml2": ml2_search, "xgb": xgb_search})
NAMES = (*NAMES, "ml2", "xgb")
assert set(NAMES) == {*SEARCHES, "agent"}


def _agent() -> SearchFn:
    """The agent search (imported lazily; it runs the shipped policy in numpy, no torch)."""
    try:
        from looptune.agent.policy import resolve_policy
        from looptune.search.agent import agent_search

        resolve_policy()  # the shipped policy: load it now so a missing file is reported here
    except Exception as exc:  # ImportError, or a broken/missing policy file
        raise SearchUnavailableError(f"the trained agent is unavailable: {exc}") from exc
    return agent_search


def get(name: str) -> SearchFn:
    """The search called ``name`` (one of :data:`NAMES`)."""
    if name in SEARCHES:
        return SEARCHES[name]
    if name == "agent":
        return _agent()
    raise ValueError(f"unknown search {name!r}; choose from {', '.join(NAMES)}")


__all__ = [
    "NAMES",
    "SEARCHES",
    "SearchResult",
    "SearchUnavailableError",
    "base_search",
    "beam_search",
    "get",
    "greedy_search",
    "random_search",
    "schedule_neighbors",
]
