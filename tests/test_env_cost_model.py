"""The env's cost-model reward mode: a callable replaces timing, rewards are deterministic."""

from __future__ import annotations

import pytest

import looptune
from looptune.envs.looptune_env import LoopTuneEnv
from looptune.measure import Measurer


def fake_cost(tree: looptune.LoopTree) -> float:
    """A deterministic figure that depends on the schedule: deeper and later-n trees score more."""
    names = [lp.var for lp in tree.loops]
    return 10.0 * len(names) + names.index("n")


def test_rewards_are_the_models_differences_over_peak() -> None:
    env = LoopTuneEnv(cost_model=fake_cost, peak_gflops=100.0)
    env.reset(seed=3)
    start = fake_cost(env.tree)
    assert env.gflops == start
    split = env.actions.index("split_4")
    _, reward, *_ = env.step(split)
    assert reward == pytest.approx((fake_cost(env.tree) - start) / 100.0)
    assert reward == pytest.approx(0.11)  # one loop more (+10), n one place lower (+1)


def test_same_actions_give_the_same_rewards() -> None:
    def rollout() -> list[float]:
        env = LoopTuneEnv(cost_model=fake_cost, peak_gflops=50.0)
        env.reset(seed=7)
        return [env.step(a)[1] for a in (4, 1, 3, 5, 2, 6)]

    assert rollout() == rollout()


def test_bad_cost_model_arguments() -> None:
    with pytest.raises(TypeError, match="callable"):
        LoopTuneEnv(cost_model=3.0, peak_gflops=1.0)
    with pytest.raises(ValueError, match="not both"):
        LoopTuneEnv(cost_model=fake_cost, measurer=Measurer(), peak_gflops=1.0)
