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
from looptune.space.schedules import from_steps


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
        par = tiler.parallel_variant(tree, 2)
        assert par.parallel_loop == loop and par.cursor == tree.cursor
        # the marked loop is at least as balanced as the best loop as it is (re-blocking
        # only lowers its step)
        assert tiler.imbalance(par, loop, 2) <= best * 1.02 + 1e-12
        if par.loops[loop].step == tree.loops[loop].step:
            assert tiler.serial(par) == tree
        else:
            assert par.loops[loop].step in tiler.reblock_steps(tree, loop)


def test_small_layers_stay_serial_deterministically() -> None:
    # under MIN_SPEEDUP by the cost model: no parallel variant anywhere, at any count
    for comp in (looptune.matmul(16, 16, 16), looptune.matmul(24, 40, 32),
                 looptune.batch_matmul(2, 8, 16, 16),
                 looptune.conv2d(1, 4, 6, 6, 16, 3, 3, stride=1, pad=1)):
        assert all(tiler.predicted_speedup(t, i, 2) < tiler.MIN_SPEEDUP
                   for t in tiler.candidates(comp, "avx2") for i in tiler.parallel_loops(t))
        serial = tiler.candidates(comp, "avx2")
        assert [t.hash() for t in tiler.candidates(comp, "avx2", threads=2)] == \
            [t.hash() for t in serial]
        assert all(tiler.parallel_variant(t, n) is None for t in serial for n in (2, 4, 8))
        order, _ = threaded_order(serial[:5], 2)
        assert all(t.parallel_loop is None for t in order)
    big = looptune.matmul(256, 256, 256)
    assert any(t.parallel_loop is not None for t in tiler.candidates(big, "avx2", threads=2))
    assert all(t.parallel_loop is None for t in tiler.candidates(big, "avx2", threads=1))


def test_cost_model_weighs_work_against_the_dispatch_cost() -> None:
    assert tiler.dispatch_seconds(1) == 0.0
    assert tiler.dispatch_seconds(2) == tiler.DISPATCH_SECONDS
    assert tiler.dispatch_seconds(16) > tiler.dispatch_seconds(2)
    # the same balanced 2-way loop: the predicted speedup grows with the work towards T
    speedups = []
    for m in (4, 16, 64, 256, 1024):
        tree = from_steps(looptune.matmul(2 * m, 64, 64), [("m", m), ("m", 1), ("k", 1),
                                                            ("n", 16), ("n", 1)])
        speedups.append(tiler.predicted_speedup(tree, 0, 2))
    assert speedups == sorted(speedups) and speedups[0] < 1.0 < speedups[-1] < 2.0
    assert speedups[-1] > 1.9
    # the serial time at CORE_GFLOPS against half of it plus one dispatch, by hand
    tree = from_steps(looptune.matmul(64, 64, 64), [("m", 32), ("m", 1), ("k", 1), ("n", 1)])
    t1 = 2 * 64**3 / (tiler.CORE_GFLOPS * 1e9)
    assert tiler.predicted_speedup(tree, 0, 2) == pytest.approx(
        t1 / (t1 / 2 + tiler.DISPATCH_SECONDS))


def test_reblocking_balances_loops_that_do_not_divide() -> None:
    # 24 column blocks of 128 over 16 threads: 1.33 as they are; the model lowers the block to
    # a multiple of the next n loop's step (32, above the register tile) that divides better
    comp = looptune.matmul(128, 768, 3072)
    tree = from_steps(comp, [("n", 128), ("m", 64), ("n", 32), ("k", 768), ("m", 1),
                             ("n", 16), ("k", 1), ("n", 1)])
    assert tiler.imbalance(tree, 0, 16) == pytest.approx(2 * 16 / 24)
    assert tiler.reblock_steps(tree, 0) == [96, 64, 32]
    par = tiler.parallel_variant(tree, 16)
    loop = par.parallel_loop
    assert loop == 0 and par.loops[0].step in (96, 64, 32)
    assert tiler.imbalance(par, loop, 16) == pytest.approx(1.0)
    # the loops below are kept: the same variables, the register tile's steps unchanged
    assert [lp.var for lp in par.loops] == [lp.var for lp in tree.loops]
    assert [lp.step for lp in par.loops[1:]] == [lp.step for lp in tree.loops[1:]]
    # at 2 threads 24 blocks divide evenly: the macro's own step is kept
    assert tiler.parallel_variant(tree, 2).loops[0].step == 128
    # an invented shape: 7 row blocks of 32 (224 rows) on 4 threads -> 1.14; blocks of 8 rows
    # (28) divide evenly
    tree = from_steps(looptune.matmul(224, 512, 512), [("m", 32), ("m", 8), ("n", 64),
                                                        ("k", 512), ("m", 1), ("n", 16),
                                                        ("k", 1), ("n", 1)])
    par = tiler.parallel_variant(tree, 4)
    assert tiler.imbalance(tree, 0, 4) == pytest.approx(2 * 32 * 4 / 224)
    assert tiler.imbalance(par, par.parallel_loop, 4) == pytest.approx(1.0)
    # a loop whose next loop of the variable is the register tile is never re-blocked
    tile = from_steps(looptune.matmul(224, 512, 512), [("n", 64), ("m", 28), ("k", 1),
                                                       ("m", 1), ("n", 1)])
    assert tiler.reblock_steps(tile, 1) == []
    assert tiler.reblock_steps(tile, 0) == []  # no inner n loop above the tile either


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
    tiny = looptune.matmul(16, 40, 24).default_schedule()  # 31 kFLOP, tiler domain
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert tiler_search(tiny, fast).best_tree.parallel_loop is None


def test_paper_policy_domain_gets_the_parallel_variant_of_its_best() -> None:
    tree = looptune.matmul(256, 256, 128).default_schedule()  # paper domain, 16.8 MFLOP
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert agent_search(tree, fast).best_tree.parallel_loop is not None
    # the smallest layer of the domain (0.5 MFLOP, ~4 us) gets its variant timed too (the
    # model predicts it pays), and the measurement decides
    small = looptune.matmul(64, 64, 64).default_schedule()
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert agent_search(small, fast).best_tree.parallel_loop is not None
    slow = Measurer(runner=FakeRunner(_slower_parallel), cache={}, threads=2)
    assert agent_search(small, slow).best_tree.parallel_loop is None


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


# ---------------------------------------------------------------- the scorer knows T


def test_thread_features_describe_the_partition() -> None:
    from looptune.agent.tile_features import N_FEATURES, THREAD_FEATURES, V1_FEATURES, tile_features

    assert N_FEATURES == V1_FEATURES + THREAD_FEATURES
    comp = looptune.matmul(224, 512, 512)
    tree = from_steps(comp, [("m", 32), ("m", 8), ("n", 64), ("k", 512), ("m", 1), ("n", 16),
                             ("k", 1), ("n", 1)])
    serial1, serial4 = tile_features(tree, "avx512"), tile_features(tree, "avx512", 4)
    # the T-free columns do not depend on T or the mark
    np.testing.assert_array_equal(serial1[:V1_FEATURES], serial4[:V1_FEATURES])
    t1, t4 = serial1[V1_FEATURES:], serial4[V1_FEATURES:]
    assert t1[0] == 0 and t4[0] == pytest.approx(2 / 8)  # log2(T) / 8
    assert t4[1] == 0 and t4[3] == pytest.approx(1 / 4)  # serial: one thread of four works
    marked = at_cursor(tree, 0).toggle_parallel()  # 7 blocks of 32 rows on 4 threads
    p4 = tile_features(marked, "avx512", 4)[V1_FEATURES:]
    assert p4[1] == 1.0
    assert p4[3] == pytest.approx(1 / tiler.imbalance(marked, 0, 4))
    assert p4[5] == pytest.approx(tiler.predicted_speedup(marked, 0, 4) / 4)
    balanced = tiler.parallel_variant(tree, 4)  # re-blocked: 28 blocks of 8
    assert tile_features(balanced, "avx512", 4)[V1_FEATURES + 3] == pytest.approx(1.0)
    # the partition features come from the tree passed as the partition (training: the timed
    # scaled-down tree)
    small = looptune.matmul(64, 512, 512)
    timed = at_cursor(tiler.transfer(marked, small), 0).toggle_parallel()
    x = tile_features(marked, "avx512", 4, partition=timed)
    np.testing.assert_array_equal(x[:V1_FEATURES], tile_features(marked, "avx512", 4)[
        :V1_FEATURES])
    assert x[V1_FEATURES + 3] == pytest.approx(1 / tiler.imbalance(timed, 0, 4))


def test_a_version_1_policy_still_loads_and_ranks_serial_macros(tmp_path) -> None:
    import json

    import torch

    from looptune.agent.tile_features import V1_FEATURES
    from looptune.agent.tiler_policy import TilerPolicy, build_network, load_tiler, save_tiler

    torch.manual_seed(0)
    pol = TilerPolicy(build_network([8], V1_FEATURES), "avx2", {"hidden": [8]})
    path = save_tiler(pol, tmp_path / "v1.safetensors", {"command": "test"})
    meta = json.loads(path.with_suffix(".json").read_text())
    meta.update(feature_version=1, n_features=V1_FEATURES)
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded = load_tiler(path)
    assert not loaded.knows_threads
    comp = looptune.matmul(192, 256, 320)
    trees, scores = loaded.rank(comp, threads=2)
    assert all(t.parallel_loop is None for t in trees)  # the search adds the variants
    x = np.stack([tiler_features_v1(t) for t in trees])
    want = torch.from_numpy(x)
    with torch.no_grad():
        np.testing.assert_allclose(scores, pol.net(want).squeeze(-1).numpy(), rtol=1e-5,
                                   atol=1e-6)
    meta.update(n_features=V1_FEATURES + 1)
    path.with_suffix(".json").write_text(json.dumps(meta))
    from looptune.agent.policy_io import PolicyFormatError

    with pytest.raises(PolicyFormatError, match="features"):
        load_tiler(path)


def tiler_features_v1(tree):
    from looptune.agent.tile_features import V1_FEATURES, tile_features

    return tile_features(tree, "avx2")[:V1_FEATURES]


def test_a_threads_aware_policy_ranks_variants_and_the_search_times_both_kinds() -> None:
    import torch

    from looptune.agent.tiler_policy import TilerPolicy, build_network
    from looptune.search.agent import ranked_threaded_order

    torch.manual_seed(3)
    pol = TilerPolicy(build_network([8]), "avx2", {"hidden": [8]})
    assert pol.knows_threads
    comp = looptune.matmul(192, 256, 320)
    trees, scores = pol.rank(comp, threads=2)
    assert np.all(np.diff(scores) <= 0)
    assert {t.hash() for t in trees} == {t.hash() for t in tiler.candidates(comp, "avx2", 2)}
    assert any(t.parallel_loop is not None for t in trees)
    order, least = ranked_threaded_order(trees)
    head = order[:least]
    assert any(t.parallel_loop is None for t in head)
    assert any(t.parallel_loop is not None for t in head)
    assert head[:2] == trees[:2] and len({t.hash() for t in order}) == len(trees)
    # the search times the head at least, keeps the fastest
    fast = Measurer(runner=FakeRunner(_twice_as_fast_parallel), cache={}, threads=2)
    assert tiler_search(comp.default_schedule(), fast, tiler=pol).best_tree.parallel_loop \
        is not None
    slow = Measurer(runner=FakeRunner(_slower_parallel), cache={}, threads=2)
    assert tiler_search(comp.default_schedule(), slow, tiler=pol).best_tree.parallel_loop \
        is None


def test_shipped_tiling_policies_load_and_the_host_isas_know_threads() -> None:
    from looptune.agent.tiler_policy import DATA_DIR, load_tiler

    for path in sorted(DATA_DIR.glob("policy_tiler_*.safetensors")):
        pol = load_tiler(path)
        trees, scores = pol.rank(looptune.matmul(128, 256, 192), threads=2)
        assert len(trees) == len(scores) > 1
        if pol.knows_threads:
            assert "threads" in pol.meta["data"] and 2 in pol.meta["data"]["threads"]
            assert any(t.parallel_loop is not None for t in trees)
    assert load_tiler(DATA_DIR / "policy_tiler_avx512.safetensors").knows_threads
