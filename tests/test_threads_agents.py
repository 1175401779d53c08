"""Agents, env, CLI and leaderboard for N threads: the tiling agent's parallel variants (exact
at every thread count, serial on small layers), the rule's load-balance arithmetic, the
LoopTune env's ``threads`` and parallel column, ``--threads`` on the CLI and the leaderboard."""

from __future__ import annotations

import argparse
import json
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import looptune
from looptune import _core
from looptune.agent import tiler
from looptune.cli import build_parser, main
from looptune.envs.looptune_env import LoopTuneEnv
from looptune.measure import FakeRunner, Measurer, harness
from looptune.search.agent import agent_search, threaded_order, tiler_search
from looptune.space import ScheduleSpace, at_cursor
from looptune.space import graph as lgraph


@pytest.fixture(autouse=True)
def one_thread():
    _core.set_num_threads(1)
    yield
    _core.set_num_threads(1)


def inputs(comp, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in comp.inputs]


# ---------------------------------------------------------------- the rule's arithmetic


def test_iteration_and_thread_work_follow_the_engine_partition() -> None:
    # m = 67 split by 8: the outer loop has 8 full iterations and a 3-row tail (9 in all);
    # the inner m' loop has 8 iterations, each row of the tail chunk adding to the first 3
    tree = looptune.matmul(67, 33, 45).default_schedule().split(8)
    assert np.allclose(tiler.iteration_work(tree, 0) * 67, [8] * 8 + [3])
    assert np.allclose(tiler.iteration_work(tree, 1) * 67, [9, 9, 9] + [8] * 5)
    # 9 iterations on 2 threads: [0, 4) and [4, 9) -> 32 and 35 rows
    assert np.allclose(tiler.thread_work(tree, 0, 2) * 67, [32, 35])
    assert tiler.imbalance(tree, 0, 2) == pytest.approx(35 / 33.5)
    # more threads than iterations: the idle ones count in the mean
    assert tiler.imbalance(tree, 0, 18) == pytest.approx(8 / (67 / 18))
    assert tiler.thread_work(tree, 1, 1).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside"):
        tiler.iteration_work(tree, 9)
    with pytest.raises(ValueError, match="threads"):
        tiler.thread_work(tree, 0, 0)
    with pytest.raises(TypeError, match="threads"):
        tiler.imbalance(tree, 0, 2.0)


def test_rule_marks_the_best_balanced_loop_above_the_register_tile() -> None:
    comp = looptune.matmul(192, 256, 320)
    for tree in tiler.candidates(comp, "avx2")[1:12]:
        loops = tiler.parallel_loops(tree)
        reds = [i for i, lp in enumerate(tree.loops) if lp.var == "k"]
        assert all(i < max(reds) for i in loops)
        loop = tiler.choose_parallel_loop(tree, 2)
        if loop is None:
            assert not loops
            continue
        best = min(tiler.imbalance(tree, i, 2) for i in loops)
        assert tiler.imbalance(tree, loop, 2) <= best * 1.02 + 1e-12
        par = tiler.parallel_variant(tree, 2)
        assert par.parallel_loop == loop and par.cursor == tree.cursor
        assert tiler.serial(par) == tree


def test_small_layers_stay_serial_deterministically() -> None:
    # under MIN_FLOPS_PER_THREAD per thread: no parallel variant anywhere, at any count
    for comp in (looptune.matmul(64, 64, 64), looptune.matmul(64, 128, 128),
                 looptune.batch_matmul(2, 32, 64, 32),
                 looptune.conv2d(1, 16, 14, 14, 16, 3, 3, stride=1, pad=1)):
        assert comp.flops / 2 < tiler.MIN_FLOPS_PER_THREAD
        serial = tiler.candidates(comp, "avx2")
        assert [t.hash() for t in tiler.candidates(comp, "avx2", threads=2)] == \
            [t.hash() for t in serial]
        assert all(tiler.parallel_variant(t, n) is None for t in serial for n in (2, 4, 8))
        order, _ = threaded_order(serial[:5], 2)
        assert all(t.parallel_loop is None for t in order)
    big = looptune.matmul(256, 256, 256)
    assert big.flops / 2 >= tiler.MIN_FLOPS_PER_THREAD
    assert any(t.parallel_loop is not None for t in tiler.candidates(big, "avx2", threads=2))
    assert all(t.parallel_loop is None for t in tiler.candidates(big, "avx2", threads=1))


def test_threaded_order_times_the_best_serial_macro_too() -> None:
    ranked = tiler.candidates(looptune.matmul(256, 256, 256), "avx2")[1:8]
    order, least = threaded_order(ranked, 2)
    assert least == 3
    assert order[2] == ranked[0] and order[0] == tiler.parallel_variant(ranked[0], 2)
    assert len({t.hash() for t in order}) == len(order)
    assert threaded_order(ranked, 1) == (ranked, 2)


# ---------------------------------------------------------------- exact at every thread count

LAYERS = [
    lambda: looptune.matmul(160, 200, 144),
    lambda: looptune.matmul(97, 300, 130),
    lambda: looptune.batch_matmul(4, 96, 64, 96),
    lambda: looptune.conv2d(1, 32, 14, 14, 64, 3, 3, stride=1, pad=1),
]


@pytest.mark.parametrize("make", LAYERS)
def test_parallel_macros_are_bit_identical_to_serial(make, cpu_isa: str) -> None:
    comp = make()
    a, b = inputs(comp)
    pars = [t for t in tiler.candidates(comp, cpu_isa, threads=2) if t.parallel_loop is not None]
    assert pars, comp.name
    want64 = None
    for par in pars[:: max(1, len(pars) // 4)][:4]:
        serial = tiler.serial(par).compile(cpu_isa)(a, b)
        kernel = par.compile(cpu_isa)
        for t in (1, 2, 3, 4):
            _core.set_num_threads(t)
            try:
                got = kernel(a, b)
            finally:
                _core.set_num_threads(1)
            assert np.array_equal(got, serial), (t, par.dump())
        if want64 is None:
            from looptune.measure.reference import expected

            want64 = expected(comp, a, b)
        np.testing.assert_allclose(serial, want64, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- searches at T threads


def _twice_as_fast_parallel(tree) -> float:
    return 100.0 * (1.9 if tree.parallel_loop is not None else 1.0)


def _slower_parallel(tree) -> float:
    return 100.0 * (0.6 if tree.parallel_loop is not None else 1.0)


def test_tiler_search_picks_parallel_only_where_it_pays() -> None:
    big = looptune.matmul(256, 384, 512).default_schedule()
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert tiler_search(big, fast, tiler=None).best_tree.parallel_loop is not None
    slow = Measurer(runner=FakeRunner(_slower_parallel), cache={}, threads=2)
    assert tiler_search(big, slow).best_tree.parallel_loop is None
    one = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=1)
    assert tiler_search(big, one).best_tree.parallel_loop is None
    tiny = looptune.matmul(32, 300, 40).default_schedule()  # 0.77 MFLOP, tiler domain
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert tiler_search(tiny, fast).best_tree.parallel_loop is None


def test_paper_policy_domain_gets_the_parallel_variant_of_its_best() -> None:
    tree = looptune.matmul(256, 256, 128).default_schedule()  # paper domain, 16.8 MFLOP
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert agent_search(tree, fast).best_tree.parallel_loop is not None
    small = looptune.matmul(64, 64, 64).default_schedule()
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert agent_search(small, fast).best_tree.parallel_loop is None


# ---------------------------------------------------------------- the env


def _cost(tree) -> float:
    return 10.0 + tree.depth + (5.0 if tree.parallel_loop is not None else 0.0)


def test_env_threads_kwarg_and_peak() -> None:
    env = LoopTuneEnv(actions="rich", cost_model=_cost, threads=2, peak_gflops=50.0)
    assert env.threads == 2 and env.measurer.threads == 2 and env.peak == 50.0
    env = LoopTuneEnv(cost_model=_cost)
    assert env.threads == 1
    m = Measurer(runner=FakeRunner(_cost), cache={}, threads=3)
    assert LoopTuneEnv(measurer=m, peak_gflops=1.0).threads == 3
    with pytest.raises(ValueError, match="measurer"):
        LoopTuneEnv(measurer=m, threads=2, peak_gflops=1.0)
    with pytest.raises(ValueError, match="thread count"):
        LoopTuneEnv(cost_model=_cost, threads=0, peak_gflops=1.0)
    with pytest.raises(TypeError):
        LoopTuneEnv(cost_model=_cost, threads=1.5, peak_gflops=1.0)


def test_env_peak_is_t_times_the_core_peak(monkeypatch) -> None:
    import looptune.envs.looptune_env as mod

    monkeypatch.setattr(mod, "measured_peak", lambda isa: 40.0)
    assert LoopTuneEnv(cost_model=_cost, threads=2).peak == 80.0
    assert LoopTuneEnv(cost_model=_cost).peak == 40.0


def test_env_observation_shows_the_parallel_loop() -> None:
    rows = looptune.space.DEFAULT_MAX_LOOPS
    paper = LoopTuneEnv(cost_model=_cost, peak_gflops=10.0)
    assert paper.observation_space.shape == (rows * lgraph.FEATURES_PER_LOOP,)
    env = LoopTuneEnv(actions="rich", cost_model=_cost, peak_gflops=10.0, threads=2)
    assert env.observation_space.shape == (rows * lgraph.FEATURES_PER_LOOP + rows,)
    obs, _ = env.reset(options={"benchmark": looptune.matmul(64, 64, 64)})
    assert not obs[-rows:].any()
    obs, reward, *_ , info = env.step(env.space.index("parallel"))
    assert env.tree.parallel_loop == 0 and not info["illegal"]
    assert obs[-rows] == 1.0 and obs[-rows + 1:].sum() == 0.0
    assert reward == pytest.approx(5.0 / 10.0)
    obs, *_ = env.step(env.space.index("down"))  # the cursor moves, the mark stays
    assert obs[-rows] == 1.0
    assert env.observation_space.contains(obs)
    space = ScheduleSpace("rich", observation="dict")
    tree = at_cursor(looptune.matmul(64, 32, 48).default_schedule().toggle_parallel(), 1)
    d = space.observe(tree)
    assert d["parallel"].tolist() == [1.0] + [0.0] * (rows - 1)
    assert space.observation_space().contains(d)


@pytest.mark.parametrize("observation", ["box", "dict"])
def test_rich_threaded_env_passes_gymnasium_check(observation: str) -> None:
    env = LoopTuneEnv(actions="rich", observation=observation, cost_model=_cost,
                      peak_gflops=10.0, threads=2)
    check_env(env, skip_render_check=True)
    env = gym.make("LoopTune-v0", actions="rich", cost_model=_cost, peak_gflops=10.0,
                   threads=2)
    env.reset(seed=0)
    env.step(0)


def test_sb3_check_env_on_the_rich_threaded_env() -> None:
    sb3 = pytest.importorskip("stable_baselines3.common.env_checker")
    env = LoopTuneEnv(actions="rich", cost_model=_cost, peak_gflops=10.0, threads=2)
    sb3.check_env(env, warn=False)


# ---------------------------------------------------------------- CLI and leaderboard


@pytest.mark.parametrize("bad", ["0", "-1", "x2", "1.5", "300", ""])
def test_cli_threads_validation(capsys, bad: str) -> None:
    code = main(["tune", "matmul", "64", "64", "64", "--threads", bad])
    err = capsys.readouterr().err
    assert code == 2 and "--threads" in err


def test_cli_threads_parse_everywhere() -> None:
    p = build_parser()
    args = p.parse_args(["tune", "matmul", "8", "8", "8", "--threads", "all"])
    assert args.threads == len(__import__("os").sched_getaffinity(0))
    assert p.parse_args(["eval", "--threads", "2"]).threads == 2
    assert p.parse_args(["leaderboard", "--threads", "2"]).threads == 2
    assert p.parse_args(["tune", "matmul", "8", "8", "8"]).threads == 1


def test_tune_threads_reaches_the_search_and_the_report(capsys) -> None:
    code = main(["tune", "matmul", "64", "80", "48", "--search", "greedy1", "--measure-budget",
                 "4", "--threads", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["threads"] == 2
    assert _core.get_num_threads() == 1  # the harness restored the count


def test_harness_times_every_entrant_at_the_thread_count() -> None:
    comp = looptune.matmul(48, 40, 56)
    kernel = comp.default_schedule().toggle_parallel().compile()
    seen = []

    def probe(a, b, out):
        from threadpoolctl import threadpool_info

        seen.append((_core.get_num_threads(),
                     {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
        np.matmul(a, b, out=out)

    t = harness.time_entrant(comp, harness.callable_entrant(probe), "probe", min_time=0.0,
                             min_runs=1, threads=2)
    assert t.threads == 2 and t.ok
    assert seen[0][0] == 2 and seen[0][1] <= {2}
    assert _core.get_num_threads() == 1
    assert harness.time_kernel(kernel, min_time=0.0, min_runs=1, threads=3).threads == 3
    assert harness.time_numpy(comp, 0.0, 1, threads=2).threads == 2


def test_leaderboard_threads_wiring(tmp_path) -> None:
    from looptune.leaderboard import cli as lb_cli
    from looptune.leaderboard import suite
    from looptune.leaderboard.entrants import Budget, NumpyEntrant, final_measure
    from looptune.leaderboard.run import run_leaderboard

    args = build_parser().parse_args(
        ["leaderboard", "--threads", "2", "--no-tvm", "--searches", "base", "--no-torch"])
    lb_cli.apply_defaults(args)
    entrants = lb_cli.build_entrants(args)
    try:
        assert [e.name for e in entrants] == ["numpy", "base"]
        assert entrants[0].threads == 2
        assert entrants[1].threads == 2 and entrants[1].worker.threads == 2
    finally:
        for e in entrants:
            e.close()
    entry = suite.select([], True)[0]
    doc = run_leaderboard([entry], [NumpyEntrant(min_time=0.0, threads=2)], Budget(0.1, 2),
                          progress=False, config={"threads": 2})
    row = doc["rows"][0]
    assert row["threads"] == 2 and row["status"] == "ok" and doc["config"]["threads"] == 2
    tree = entry.computation().default_schedule()
    row = final_measure(entry, "x", "looptune", tree, 0.01, 1.0, threads=2)
    assert row["threads"] == 2 and math.isfinite(row["gflops"])
    assert isinstance(args, argparse.Namespace)


def test_leaderboard_report_says_the_thread_count() -> None:
    from looptune.leaderboard import report

    doc = {"suite_version": "v", "machine": {"cpu": "c", "isa": "avx2", "peak_gflops": 100.0},
           "libraries": {}, "config": {"threads": 2},
           "rows": [{"benchmark": "b", "part": "p", "entrant": "agent", "kind": "looptune",
                     "status": "ok", "gflops": 150.0, "tuning_seconds": 0.1}]}
    text = report.report_markdown(doc)
    assert "2 threads (every entrant" in text and "one core" not in text
    assert "0.75" in text  # 150 GFLOP/s over 2 x 100 of peak
    doc["config"] = {}
    assert "one core" in report.report_markdown(doc)
