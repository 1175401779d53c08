"""Random search: seeded random walks of the environment's episode length from the start tree."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from looptune._core import LoopTree
from looptune.measure import Measurer
from looptune.search.base import (
    DEFAULT_MAX_LOOPS,
    SearchResult,
    Tracker,
    check_actions,
    run_search,
)
from looptune.space import ScheduleSpace
from looptune.space.actions import PAPER_ACTIONS

EPISODE_LENGTH = 10  # the environments' default (as in the paper)


def random_search(
    tree: LoopTree,
    measurer: Measurer | None = None,
    *,
    time_budget: float | None = 60.0,
    measure_budget: int | None = None,
    actions: Sequence[str] = PAPER_ACTIONS,
    seed: int = 0,
    max_loops: int = DEFAULT_MAX_LOOPS,
    episode_length: int = EPISODE_LENGTH,
) -> SearchResult:
    """Repeat random walks of ``episode_length`` legal actions from ``tree`` (uniform over the
    legal actions of each state, cursor moves included), measuring every new schedule, until a
    budget is spent. The walks depend only on ``seed``, never on the measurements.
    """
    actions = check_actions(actions)
    if time_budget is None and measure_budget is None:
        raise ValueError("random search needs a time_budget or a measure_budget")
    if episode_length < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    rng = np.random.default_rng(seed)
    space = ScheduleSpace(actions, max_loops)

    def body(tr: Tracker) -> None:
        idle_walks = 0
        while idle_walks < 10_000:  # stop if the reachable space is exhausted
            before = len(tr.seen)
            state = tree
            for _ in range(episode_length):
                options = space.successors(state)
                if not options:
                    break
                state = options[int(rng.integers(len(options)))][1]
                tr.evaluate(state)
            idle_walks = idle_walks + 1 if len(tr.seen) == before else 0

    return run_search("random", tree, measurer, time_budget, measure_budget, body)
