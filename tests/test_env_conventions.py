"""Gymnasium / CompilerGym conventions: TimeLimit, nondeterministic spec, masks through
wrappers, failed measurements, env.state / replay / validate, custom benchmarks and datasets."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import looptune
from looptune import datasets
from looptune.envs import action_masks
from looptune.envs.looptune_env import FAILURE_REWARD, EnvState
from looptune.measure import FakeRunner, Measurer, Outcome

FAST = {"measure_min_time": 0.0, "measure_min_runs": 1, "peak_gflops": 100.0}


def _order(tree):
    return tuple(lp.var for lp in tree.loops)


def _fake_env(cost, **kw):
    measurer = Measurer(runner=FakeRunner(cost), cache={})
    return gym.make("LoopTune-v0", measurer=measurer, peak_gflops=10.0, **kw)


def _steps_until_truncated(env) -> int:
    env.reset(seed=0)
    for n in range(1, 100):
        *_, term, trunc, _ = env.step(1)  # "down" (or a no-op at the bottom)
        if term or trunc:
            return n
    return -1


def test_episode_length_is_the_registrations_time_limit():
    spec = gym.spec("LoopTune-v0")
    assert spec.max_episode_steps == 10 and spec.nondeterministic is True
    assert _steps_until_truncated(gym.make("LoopTune-v0", **FAST)) == 10
    assert _steps_until_truncated(gym.make("LoopTune-v0", max_episode_steps=20, **FAST)) == 20


def test_masks_reachable_through_wrappers():
    env = gym.make("LoopTune-v0", **FAST)
    env.reset(seed=1)
    want = env.unwrapped.action_masks()
    np.testing.assert_array_equal(env.get_wrapper_attr("action_masks")(), want)
    np.testing.assert_array_equal(action_masks(env), want)
    assert want.tolist() == [False, True, False, True, True, True, True]


def test_a_failed_measurement_leaves_the_state_and_pays_nothing():
    def cost(tree):
        if _order(tree) == ("k", "m", "n"):
            raise RuntimeError("kernel crashed")
        return 5.0 + 10.0 * (_order(tree)[-1] == "m") - 0.5 * (tree.depth - 3)

    env = _fake_env(cost)
    env.reset(options={"benchmark": "mm64_64_64"})
    before = env.unwrapped.tree
    _, r, _, _, info = env.step(3)  # swap_down: m,k,n -> k,m,n fails
    assert (r, info["outcome"], info["illegal"]) == (FAILURE_REWARD, "runtime_error", False)
    assert "kernel crashed" in info["reason"]
    assert env.unwrapped.tree == before and env.unwrapped.gflops == 5.0
    rewards = [r]
    for a in (1, 3):  # down (free), swap_down: m,n,k (same 5.0)
        rewards.append(env.step(a)[1])
    rewards.append(env.step(2)[1])  # swap_up back: m,k,n
    rewards.append(env.step(4)[1])  # split_4 at cursor 0 -> 4.5
    g = env.unwrapped.gflops
    assert g == 4.5
    assert sum(rewards) == pytest.approx((g - env.unwrapped.base_gflops) / 10.0)


def test_state_serializes_and_replays():
    def cost(tree):
        return 1.0 + tree.depth + 3.0 * (_order(tree)[0] == "k")

    env = _fake_env(cost)
    env.reset(seed=4)
    for a in (3, 1, 4, 0, 2):
        env.step(a)
    state = env.unwrapped.state
    assert state.actions == ("swap_down", "down", "split_4", "up", "swap_up")
    text = state.to_json()
    again = EnvState.from_json(text)
    assert again == state
    other = _fake_env(cost)
    _, total = other.unwrapped.replay(text)
    assert other.unwrapped.tree.dump() == env.unwrapped.tree.dump()
    assert total == pytest.approx(state.reward) and other.unwrapped.gflops == state.gflops
    with pytest.raises(ValueError):
        EnvState.from_json('{"actions": []}')


def test_validate_checks_semantics_and_reward():
    env = gym.make("LoopTune-v0", measure_min_time=0.002, peak_gflops=100.0)
    env.reset(options={"benchmark": "mm64_96_80"})
    for a in (1, 5, 2):  # down, split_8, swap_up
        env.step(a)
    honest = env.unwrapped.validate()
    assert not [e for e in honest.errors if "kernel" in e or "schedule" in e]
    assert honest.max_abs_error < 1e-3
    forged = EnvState(**{**env.unwrapped.state.__dict__, "gflops": 1e6})
    bad = env.unwrapped.validate(forged)
    assert not bad.ok and any("the state says 1000000.00" in e for e in bad.errors)


def test_custom_benchmark_from_any_computation_including_einsum():
    env = gym.make("LoopTune-v0", **FAST)
    comp = looptune.contraction("bmk,bkn->bmn", b=2, m=16, k=24, n=32)
    obs, info = env.reset(options={"benchmark": comp})
    assert info["benchmark"] == comp.name and env.unwrapped.tree.computation == comp
    assert env.observation_space.contains(obs)
    assert env.unwrapped.state.benchmark == comp.header()


def test_register_a_dataset():
    comps = [looptune.matmul(16, 16, 16), looptune.contraction("ij,jk->ik", i=8, j=8, k=8)]
    datasets.register("tiny_test", comps, test_fraction=0.5)
    assert [b.name for b in datasets.get("tiny_test", "all")] == [c.name for c in comps]
    env = gym.make("LoopTune-v0", dataset="tiny_test", split="all", **FAST)
    names = {env.reset(seed=s)[1]["benchmark"] for s in range(8)}
    assert names == {c.name for c in comps}
    with pytest.raises(ValueError):
        datasets.register("empty", [])


def test_failure_outcome_is_reported_for_injected_timeouts():
    from looptune.measure import failure

    env = _fake_env(
        lambda t: failure(Outcome.TIMEOUT, "slow") if t.depth > 3 else 2.0
    )
    env.reset(seed=0)
    _, r, *_, info = env.step(4)
    assert (r, info["outcome"], env.unwrapped.tree.depth) == (0.0, "timeout", 3)
