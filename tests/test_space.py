"""ScheduleSpace: engine-validated names, one depth cap, masks with reasons, observations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import looptune
from looptune import _core
from looptune.errors import IllegalActionError
from looptune.space import MAX_LOOPS, ScheduleSpace


def test_depth_cap_comes_from_the_engine():
    assert MAX_LOOPS == _core.DEFAULT_MAX_LOOPS == 10
    assert ScheduleSpace().max_loops == MAX_LOOPS
    with pytest.raises(ValueError, match="max_loops must be <="):
        ScheduleSpace(max_loops=_core.MAX_LOOPS + 1)


@pytest.mark.parametrize("bad", ["split_", "split_x", "split_-3", "jump", "UP", "split_4 "])
def test_action_names_are_checked_by_the_engine(bad):
    with pytest.raises(ValueError):
        ScheduleSpace(["up", bad])


def test_duplicate_and_empty_action_sets():
    with pytest.raises(ValueError, match="duplicate"):
        ScheduleSpace(["up", "up"])
    with pytest.raises(ValueError, match="empty"):
        ScheduleSpace([])


def test_legality_gives_mask_and_reasons_in_one_call():
    space = ScheduleSpace(["up", "down", "split_4", "split_128", "merge"], max_loops=3)
    tree = looptune.matmul(64, 64, 64).default_schedule()
    mask, reasons = space.legality(tree)
    assert mask.tolist() == [False, True, False, False, False]
    assert reasons[0] == "up: cursor is on the outermost loop"
    assert reasons[1] == ""
    assert reasons[2] == "split_4: the tree already has 3 loops (the depth cap is 3)"
    assert reasons[4].startswith("merge: no loop of 'm'")
    with pytest.raises(IllegalActionError, match="depth cap is 3"):
        space.apply(tree, "split_4")
    assert space.try_apply(tree, "split_4") is None


def test_cap_allows_splits_below_it():
    space = ScheduleSpace("paper", max_loops=4)
    tree = looptune.matmul(64, 64, 64).default_schedule()
    deeper = space.apply(tree, "split_4")
    assert deeper.depth == 4
    # cursor on the outer m loop: no up, no swap with the m loop below it, no deeper split
    assert space.mask(deeper).tolist() == [False, True, False, False, False, False, False]
    assert space.reason(deeper, "split_8").endswith("(the depth cap is 4)")


def test_index_rejects_out_of_range_and_unknown():
    space = ScheduleSpace("paper")
    with pytest.raises(ValueError, match="outside Discrete"):
        space.index(7)
    with pytest.raises(ValueError, match="not in"):
        space.index("merge")


def test_observation_matches_graph_features_and_cursor():
    space = ScheduleSpace("paper")
    tree = looptune.matmul(64, 80, 96).default_schedule().down().split(16)
    obs = space.observe(tree)
    assert obs.shape == (MAX_LOOPS * looptune.space.graph.FEATURES_PER_LOOP,)
    np.testing.assert_array_equal(obs, looptune.space.graph.observation(tree, MAX_LOOPS))
    rows = obs.reshape(MAX_LOOPS, -1)
    assert rows[:, looptune.space.graph.CURSOR_COLUMN].tolist() == [0, 1] + [0] * 8
    assert space.observation_space().contains(obs)


def test_shipped_policy_and_env_see_identical_observations():
    from looptune.agent.policy import load_policy
    from looptune.search.agent import legal_actions, observe

    policy = load_policy()
    env = gym.make(policy.env_id, **policy.env_kwargs, peak_gflops=100.0)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        tree = env.unwrapped.tree
        np.testing.assert_array_equal(observe(policy, tree), obs)
        masks = env.get_wrapper_attr("action_masks")()
        np.testing.assert_array_equal(legal_actions(policy, tree), masks)
        obs, _, _, truncated, _ = env.step(int(rng.choice(np.flatnonzero(masks))))
        if truncated:
            obs, _ = env.reset()
    assert env.spec.max_episode_steps == policy.episode_steps == 10


def test_isa_facts_are_one_home():
    avx512, avx2 = _core.isa_facts("avx512"), _core.isa_facts("avx2")
    assert (avx512["lanes"], avx512["vector_registers"], avx512["peak_fma_chains"]) == (16, 32, 24)
    assert (avx2["lanes"], avx2["vector_registers"], avx2["peak_fma_chains"]) == (8, 16, 12)
    assert avx512["l1d_bytes"] == avx2["l1d_bytes"]  # cache sizes are the host's
    assert avx512["l1d_bytes"] == 0 or 4096 <= avx512["l1d_bytes"] <= avx512["l2_bytes"]
    with pytest.raises(ValueError):
        _core.isa_facts("sse2")
