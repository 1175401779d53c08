"""LoopTune environments: API checkers, determinism, masking, bounds, SB3 smoke runs."""

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import looptune
from looptune import datasets
from looptune.envs import ENV_VARIANTS
from looptune.envs.looptune_env import LoopTuneEnv

# Smallest measurement budget: one warm-up and one timed run per new schedule.
FAST = {"measure_min_time": 0.0, "measure_min_runs": 1}
TIMING_KEYS = {"gflops", "best_gflops", "base_gflops"}


def make(env_id="LoopTune-v0", **kw):
    return gym.make(env_id, **{**FAST, **kw})


def test_every_variant_is_registered():
    for env_id in ENV_VARIANTS:
        assert env_id in gym.registry
    looptune.envs.register_envs()  # idempotent


@pytest.mark.parametrize("env_id", sorted(ENV_VARIANTS))
def test_check_env(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make(env_id)
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=True)
        env.reset(seed=3)  # and through gym.make's passive checker wrapper
        for a in range(env.action_space.n):
            env.step(a)
        env.close()


def _rollout(env_id, seed, n_episodes=3, **kw):
    env = make(env_id, **kw)
    rng = np.random.default_rng(seed)
    trace = []
    obs, info = env.reset(seed=seed)
    for _ in range(n_episodes):
        done = False
        while not done:
            a = int(rng.integers(env.action_space.n))
            obs, _, term, trunc, info = env.step(a)
            trace.append((obs, {k: v for k, v in info.items() if k not in TIMING_KEYS}))
            done = term or trunc
        obs, info = env.reset()
        trace.append((obs, {k: v for k, v in info.items() if k not in TIMING_KEYS}))
    return trace


@pytest.mark.parametrize("env_id", ["LoopTune-v0", "LoopTuneDict-v0"])
def test_same_seed_same_trajectory(env_id):
    a, b = _rollout(env_id, 7), _rollout(env_id, 7)
    assert len(a) == len(b)
    for (oa, ia), (ob, ib) in zip(a, b):
        assert ia == ib
        if isinstance(oa, dict):
            assert all(np.array_equal(oa[k], ob[k]) for k in oa)
        else:
            assert np.array_equal(oa, ob)
    names = [i["benchmark"] for _, i in a]
    assert len(set(names)) > 1  # resets draw different benchmarks
    c = _rollout(env_id, 8)
    assert [i["benchmark"] for _, i in c] != names


def test_reset_draws_from_the_split():
    env = make(split="test")
    test_names = {b.name for b in datasets.get("mm64_256_16", "test")}
    seen = {env.reset(seed=s)[1]["benchmark"] for s in range(20)}
    assert seen <= test_names and len(seen) > 10


def test_illegal_action_is_a_noop():
    env = make()
    obs, info = env.reset(seed=0)
    assert env.unwrapped.tree.cursor == 0
    up = env.unwrapped.actions.index("up")
    assert not env.unwrapped.action_masks()[up]
    measured = env.unwrapped.measurer.stats.measured
    obs2, r, term, trunc, info2 = env.step(up)
    assert np.array_equal(obs, obs2) and r == 0.0 and not term and not trunc
    assert info2["illegal"] and "up" in info2["reason"]
    assert info2["tree"] == info["tree"] and info2["step"] == 1
    assert env.unwrapped.measurer.stats.measured == measured


def test_masks_agree_with_step_and_obs_in_space():
    """Random masked rollouts over many benchmarks of every dataset, deep trees included."""
    rng = np.random.default_rng(0)
    benches = (
        datasets.get("mm64_256_16", "test")[::11]
        + datasets.get("bmm_attention", "all")[::6]
        + datasets.get("conv2d_resnet", "all")[::4]
    )
    for obs_kind in ("box", "dict"):
        env = make("LoopTuneRich-v0", max_steps=25, observation=obs_kind).unwrapped
        for bench in benches:
            obs, _ = env.reset(seed=1, options={"benchmark": bench.name})
            assert env.observation_space.contains(obs)
            for _ in range(25):
                mask = env.action_masks()
                assert mask.dtype == np.bool_ and mask.shape == (env.action_space.n,)
                for a in range(env.action_space.n):  # every action, on a throwaway copy
                    _, _, _, _, info = copy.copy(env).step(a)
                    assert info["illegal"] == (not mask[a]), (bench.name, env.actions[a])
                a = int(rng.choice(np.flatnonzero(mask)))
                obs, r, _, _, info = env.step(a)
                assert env.observation_space.contains(obs)
                assert not info["illegal"] and np.isfinite(r)
                if obs_kind == "dict":
                    assert np.array_equal(obs["action_mask"], env.action_masks())
            assert env.tree.depth <= env.max_loops


def test_reward_formula_and_truncation():
    env = make("LoopTuneRich-v0", max_steps=6)
    _, info = env.reset(seed=5, options={"benchmark": "mm128_256_64"})
    assert info["benchmark"] == "mm128_256_64" and info["step"] == 0
    peak, prev, total = env.unwrapped.peak, info["gflops"], 0.0
    for t, name in enumerate(["down", "down", "split_16", "swap_up", "up", "split_4"], 1):
        _, r, term, trunc, info = env.step(env.unwrapped.actions.index(name))
        assert not info["illegal"], info["reason"]
        assert r == pytest.approx((info["gflops"] - prev) / peak)
        assert not term and trunc == (t == 6)
        prev, total = info["gflops"], total + r
    assert total == pytest.approx((info["gflops"] - info["base_gflops"]) / peak)
    assert info["best_gflops"] >= max(info["gflops"], info["base_gflops"])
    assert info["gflops"] > 0


def test_cursor_moves_cost_nothing():
    env = make()
    env.reset(seed=0)
    stats = env.unwrapped.measurer.stats
    before = stats.measured
    _, r, *_ = env.step(env.unwrapped.actions.index("down"))
    assert r == 0.0 and stats.measured == before


def test_reset_options_and_errors():
    env = make()
    # a benchmark from another dataset is accepted by name
    bmm = datasets.get("bmm_attention", "all")[0].name
    assert env.reset(options={"benchmark": bmm})[1]["benchmark"] == bmm
    with pytest.raises(looptune.UnknownBenchmarkError):
        env.reset(options={"benchmark": "mm1_1_1"})
    with pytest.raises(looptune.UnknownBenchmarkError):
        make(dataset="imagenet")
    with pytest.raises(ValueError):
        make(split="dev")
    for bad in (
        {"actions": "fancy"},
        {"actions": ["up", "fly"]},
        {"actions": []},
        {"max_steps": 0},
        {"max_loops": -1},
        {"observation": "graph"},
        {"render_mode": "rgb_array"},
        {"peak_gflops": -1.0},
    ):
        with pytest.raises(ValueError):
            LoopTuneEnv(**{**FAST, **bad})
    with pytest.raises(ValueError):
        env.step(99)
    fresh = make().unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        fresh.step(0)


def test_render_graph_and_masks_through_wrappers(capsys):
    env = make(render_mode="ansi")
    env.reset(seed=0, options={"benchmark": "mm64_64_64"})
    text = env.render()
    assert "mm64_64_64" in text and env.unwrapped.tree.dump() in text
    g = env.unwrapped.graph()
    assert g.number_of_nodes() == env.unwrapped.tree.depth + 3
    human = make(render_mode="human")
    human.reset(seed=0, options={"benchmark": "mm64_64_64"})
    assert human.render() is None and "mm64_64_64" in capsys.readouterr().out
    # MaskablePPO finds action_masks() through gym.make's wrappers and VecEnvs.
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.vec_env import DummyVecEnv

    assert np.array_equal(env.get_wrapper_attr("action_masks")(), env.unwrapped.action_masks())
    vec = DummyVecEnv([lambda: make()])
    vec.reset()
    masks = get_action_masks(vec)
    assert masks.shape == (1, 7) and masks.dtype == np.bool_
    info_env = make(info_graph=True)
    assert info_env.reset(seed=0)[1]["graph"].number_of_nodes() == 6


def test_ppo_smoke():
    from stable_baselines3 import PPO

    env = make(max_steps=8)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    dict_env = make("LoopTuneDict-v0", max_steps=8)
    PPO(
        "MultiInputPolicy", dict_env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu"
    ).learn(128)


def test_maskable_ppo_smoke():
    from sb3_contrib import MaskablePPO

    env = make("LoopTuneRich-v0", max_steps=8)
    model = MaskablePPO(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu"
    )
    model.learn(256)
    obs, _ = env.reset(seed=0)
    mask = env.unwrapped.action_masks()
    action, _ = model.predict(obs, action_masks=mask, deterministic=True)
    assert mask[int(action)]
