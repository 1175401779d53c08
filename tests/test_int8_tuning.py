"""Tuning int8 computations: the tiling agent's int8 macros, the searches, the env on an int8
dataset and ``looptune tune --dtype int8``; every schedule they pick computes exact sums."""

import json

import gymnasium as gym
import numpy as np
import pytest

import looptune
from looptune import _core, datasets
from looptune.agent import tiler, tiler_int8
from looptune.measure import Measurer, int8
from looptune.measure.reference import check_tree
from looptune.search import get as get_search

pytestmark = pytest.mark.skipif(_core.isa_facts().get("int8_path", "none") == "none",
                                reason="no int8 path on this CPU")


def _exact(tree: looptune.LoopTree, seed: int = 0) -> bool:
    comp = tree.computation
    a, b = int8.random_inputs(comp, seed)
    got = tree.compile()(a, b)
    return got.dtype == np.int32 and np.array_equal(got, int8.accumulate(comp, a, b))


def _measurer() -> Measurer:
    return Measurer(min_time=0.0005, min_runs=1, max_runs=3, cache={})


def test_int8_macros_are_register_tiles_in_accumulators_and_exact():
    comp = looptune.matmul(37, 1100, 45, dtype="int8")  # odd sizes: tails everywhere
    assert tiler_int8.is_int8(comp) and not tiler_int8.is_int8(looptune.matmul(4, 4, 4))
    trees = tiler.candidates(comp, looptune.host_isa())
    k_groups = {v.name: v.extent for v in comp.vars}["k"]
    assert k_groups == 275  # groups of 4 values
    assert len(trees) > 5
    lanes = _core.isa_facts()["lanes"]
    facts = trees[1].compile().facts  # a register-tiled macro: int32 accumulators in vectors
    assert facts.get("int8_path", "") != ""
    assert any(t.loops[-1].var == "n" and t.loops[-1].step == 1 for t in trees[1:])
    assert lanes in (8, 16)
    for tree in trees:
        assert _exact(tree), tree.dump()


def test_int8_conv_macros_are_exact():
    comp = looptune.conv2d(1, 9, 11, 11, 20, 3, 3, stride=2, pad=1, dtype="int8")
    trees = tiler.candidates(comp, looptune.host_isa())
    assert len(trees) > 2
    for tree in trees[:8]:
        assert _exact(tree), tree.dump()


def test_rule_scores_prefer_register_tiles_over_the_base_schedule():
    comp = looptune.matmul(256, 512, 256, dtype="int8")
    trees = tiler.candidates(comp, looptune.host_isa())
    scores = tiler_int8.rule_scores(trees)
    assert scores.shape == (len(trees),)
    assert scores[0] < scores.max()  # trees[0] is the base schedule


@pytest.mark.parametrize("name", ["random", "greedy1", "beam2dfs", "ml2", "agent"])
def test_searches_on_int8_pick_exact_schedules(name):
    comp = looptune.matmul(48, 200, 40, dtype="int8")
    result = get_search(name)(comp.default_schedule(), _measurer(), measure_budget=6,
                              time_budget=5.0)
    assert result.best_gflops > 0
    assert result.best_tree.computation == comp
    assert _exact(result.best_tree)


def test_agent_tunes_int8_with_the_tiling_agent_and_its_int8_policy():
    from looptune.search.agent import uses_paper_policy

    comp = looptune.matmul(128, 512, 128, dtype="int8")  # k: 128 groups, in the paper's range
    assert uses_paper_policy(looptune.matmul(128, 128, 128))
    assert not uses_paper_policy(comp)  # int8 never goes to the step-by-step paper policy
    result = get_search("agent")(comp.default_schedule(), _measurer())
    assert _exact(result.best_tree)
    assert check_tree(result.best_tree).ok


def test_scaled_and_transfer_keep_int8():
    comp = looptune.matmul(2048, 256, 256, dtype="int8")
    small = tiler.scaled(comp, 5e7)
    assert small.dtype == "int8" and small.header().endswith("dtype=int8")
    tree = tiler.candidates(comp, looptune.host_isa())[1]
    assert tiler.transfer(tree, small).computation == small


def test_check_tree_sees_a_wrong_int8_result():
    comp = looptune.matmul(8, 16, 8, dtype="int8", epilogue="scale+bias")
    assert check_tree(comp.default_schedule()).ok
    a, b = int8.random_inputs(comp)
    extra = int8.epilogue_inputs(comp)
    assert set(extra) == {"scale", "bias"}
    want = int8.expected(comp, a, b, **dict(extra))
    got = comp.default_schedule().compile()(a, b, **extra)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_int8_datasets_and_the_env():
    mm = datasets.get("mm_int8", "all")
    assert all(b.computation().dtype == "int8" for b in mm)
    assert {"mm128_768_3072_i8", "mm1024_1024_1024_i8"} <= {b.name for b in mm}
    conv = datasets.get("conv2d_int8", "all")
    assert len(conv) == 12 and all(b.computation().kind == "conv2d" for b in conv)
    datasets.register("tiny_int8_test", [looptune.matmul(32, 64, 48, dtype="int8"),
                                         looptune.matmul(48, 96, 32, dtype="int8")], 0.5)
    env = gym.make("LoopTune-v0", dataset="tiny_int8_test")
    env.reset(seed=0)
    for a in range(3):
        reward = env.step(a)[1]
        assert np.isfinite(reward)
    env.close()


def test_cli_tune_int8(capsys):
    from looptune.cli import main

    assert main(["tune", "matmul", "64", "96", "48", "--dtype", "int8", "--search", "greedy1",
                 "--time-budget", "1", "--json", "--compare", "numpy"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["computation"].endswith("dtype=int8")
    assert report["check"]["ok"] and report["check"]["max_abs_error"] == 0.0
    assert "numpy f32" in report["references"]
    assert main(["tune", "matmul", "64", "96", "48", "--dtype", "int8", "--search", "base",
                 "--compare", "numpy"]) == 0
    assert "GOP/s" in capsys.readouterr().out
