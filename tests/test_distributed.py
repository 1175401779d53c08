"""looptune.distributed on a local Ray (2 CPUs): pool, RayRunner, faults, evaluation.

Skipped without ray (the ``ray`` extra); scripts/ray_tests.sh runs them in CI."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time

import pytest
import ray  # collected only where ray is installed (conftest.py)

import looptune
from looptune.distributed.pool import Failed, WorkerPool
from looptune.distributed.runner import LOST, RayRunner
from looptune.measure import Budget, FakeRunner, Measurer, MeasureResult, Outcome

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake costs travel by value


def fake_cost(tree) -> float:
    """A deterministic GFLOP/s of a schedule (the same in every process)."""
    return 1.0 + int(hashlib.md5(tree.dump().encode()).hexdigest()[:6], 16) % 997 / 10


class SlowCost:
    """``fake_cost`` that takes ``seconds`` per call (so work is in flight when a worker dies)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, tree) -> float:
        time.sleep(self.seconds)
        return fake_cost(tree)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _trees(n: int) -> list:
    comp = looptune.matmul(64, 64, 64)
    rng = __import__("random").Random(0)
    from conftest import walk

    out, seen = [], set()
    while len(out) < n:
        t = walk(comp.default_schedule(), rng, 4)
        if t.hash() not in seen:
            seen.add(t.hash())
            out.append(t)
    return out


def test_workers_each_hold_their_own_core(ray_local):
    with WorkerPool(payload=FakeRunner(fake_cost)) as pool:
        infos = pool.workers()
        assert len(infos) == 2
        assert sorted(i.core for i in infos) == [0, 1]  # no two workers time on one core
        assert {i.signature for i in infos} == {looptune.cpu_signature()}
        assert pool.default_kind().isa == looptune.host_isa()


def test_ray_runner_matches_the_serial_runner_and_records_once(ray_local, tmp_path):
    trees = _trees(12)
    isa = looptune.host_isa()
    serial = [FakeRunner(fake_cost).run(t, isa, Budget(), None).gflops for t in trees]
    rec = tmp_path / "records.jsonl"
    with WorkerPool(payload=FakeRunner(fake_cost)) as pool:
        runner = RayRunner(pool, records=rec)
        got = runner.run_batch(trees, isa, Budget(), None)
        assert [r.gflops for r in got] == serial
        m = Measurer(runner=runner, cache={})  # the Runner protocol, one at a time
        assert m.gflops(trees[0]) == serial[0]
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert len(lines) == 13  # 12 + 1, each written once, by the driver
    assert {r["cpu_signature"] for r in lines} == {looptune.cpu_signature()}
    assert {r["cpu"] for r in lines} == {looptune.cpu_name()}
    assert {r["core"] for r in lines} <= {0, 1}
    assert sorted(r["gflops"] for r in lines[:12]) == sorted(serial)


def test_a_killed_worker_loses_no_finished_record(ray_local, tmp_path):
    trees = _trees(24)
    isa = looptune.host_isa()
    rec = tmp_path / "records.jsonl"
    with WorkerPool(payload=FakeRunner(SlowCost(0.02))) as pool:
        runner = RayRunner(pool, records=rec)
        finished: list[int] = []

        def kill_after_three(i: int, result: MeasureResult, info) -> None:
            finished.append(i)
            if len(finished) == 3:
                pool.kill(0)

        got = runner.run_batch(trees, isa, Budget(), None, on_result=kill_after_three)
        assert len(pool.live()) == 1 and len(pool.stats.dead_workers) == 1
        assert pool.stats.retried >= 1  # the dead worker's work ran on the other one
    assert [r.outcome for r in got] == [Outcome.OK] * 24
    assert [r.gflops for r in got] == [fake_cost(t) for t in trees]
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert sorted(r["hash"] for r in lines) == sorted(f"{t.hash():016x}" for t in trees)
    assert sorted(finished) == list(range(24))


def test_work_with_no_live_worker_left_is_a_typed_failure(ray_local):
    with WorkerPool(workers=1, payload=FakeRunner(SlowCost(0.02)), attempts=1) as pool:
        runner = RayRunner(pool)
        done = []

        def kill(i, result, info):
            done.append(i)
            if len(done) == 2:
                pool.kill(0)

        got = runner.run_batch(_trees(10), looptune.host_isa(), Budget(), None, on_result=kill)
    ok = [r for r in got if r.ok]
    lost = [r for r in got if not r.ok]
    assert len(ok) == len(done) >= 2 and lost  # the run finished; nothing was raised
    assert all(r.outcome is Outcome.UNKNOWN and r.error.startswith(LOST) for r in lost)


def test_a_job_that_raises_is_reported_not_retried(ray_local):
    def boom(worker, x):
        if x == 2:
            raise ValueError("bad item")
        return x * 10

    with WorkerPool(payload=None) as pool:
        out = pool.map(boom, [(i,) for i in range(5)])
    assert [v for v, _ in out if not isinstance(v, Failed)] == [0, 10, 30, 40]
    bad = out[2][0]
    assert isinstance(bad, Failed) and not bad.lost and "bad item" in bad.error


def test_distributed_eval_finds_the_serial_best_schedules(ray_local, tmp_path):
    from looptune.distributed import jobs
    from looptune.search.evaluate import load_benchmarks, run_eval

    benches = load_benchmarks("mm64_256_16", "test", 3)
    names = ["greedy1", "greedy2", "random"]
    kw = {"time_budget": None, "measure_budget": 25, "seed": 3, "final_min_time": 0.0005,
          "numpy_min_time": 0.001, "progress": False}
    serial = run_eval(benches, names, make_measurer=lambda: Measurer(
        cache={}, runner=FakeRunner(fake_cost)), **kw)
    rec = tmp_path / "eval.jsonl"
    with WorkerPool(payload=FakeRunner(fake_cost)) as pool:
        rows = jobs.run_eval(pool, benches, names, records=rec, **kw)
    assert [(r["benchmark"], r["search"]) for r in rows] == [
        (r["benchmark"], r["search"]) for r in serial
    ]
    for mine, theirs in zip(rows, serial):
        assert mine["schedule"] == theirs["schedule"]
        assert mine["measurements"] == theirs["measurements"]
        assert mine["status"] == "ok" and mine["core"] in (0, 1)
        assert mine["cpu_signature"] == looptune.cpu_signature()
        if mine["search"] != "numpy":
            assert mine["gflops"] == fake_cost(looptune.LoopTree.parse(mine["schedule"]))
            assert math.isclose(mine["speedup"], mine["gflops"] / mine["base_gflops"])
    n_measured = sum(r["measurements"] for r in rows)
    lines = rec.read_text().splitlines()
    assert len(lines) >= n_measured  # the searches' measurements, plus the final timings


def test_two_kinds_of_node_give_two_kinds_of_records(ray_local, tmp_path):
    """Two CPU signatures in one pool (the second relabelled on the driver, which is where
    routing and record keys are decided): every benchmark is measured by one kind only."""
    import dataclasses

    from looptune.distributed import jobs
    from looptune.search.evaluate import load_benchmarks

    benches = load_benchmarks("mm64_256_16", "test", 4)
    rec = tmp_path / "eval.jsonl"
    with WorkerPool(payload=FakeRunner(fake_cost)) as pool:
        other = dataclasses.replace(pool.slots[1].info, signature="OtherVendor family 1 model 2")
        pool.slots[1].info = other
        assert len(pool.kinds()) == 2
        rows = jobs.run_eval(pool, benches, ["greedy1"], time_budget=None, measure_budget=10,
                             final_min_time=0.0005, numpy_min_time=0.001, records=rec,
                             progress=False)
    by_bench: dict = {}
    for r in rows:
        by_bench.setdefault(r["benchmark"], set()).add(r["cpu_signature"])
    assert all(len(s) == 1 for s in by_bench.values())  # never a mix within a benchmark
    assert len(set().union(*by_bench.values())) == 2  # both kinds did work
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    kinds_per_comp: dict = {}
    for r in lines:
        kinds_per_comp.setdefault(r["computation"], set()).add(r["cpu_signature"])
    assert all(len(s) == 1 for s in kinds_per_comp.values())


def test_tiler_data_measures_its_macros_on_the_pool(ray_local):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "agents"))
    import tiler_data

    comp = looptune.matmul(64, 256, 16)
    isa = looptune.host_isa()
    serial = tiler_data.measure_macros(comp, Measurer(runner=FakeRunner(fake_cost), cache={}),
                                       isa)
    with WorkerPool(payload=FakeRunner(fake_cost)) as pool:
        rows = tiler_data.measure_macros(comp, Measurer(cache={}), isa, RayRunner(pool))
    assert len(rows) == len(serial) >= 2
    assert rows == serial


def test_ml2_measures_through_the_ray_runner(ray_local, tmp_path):
    from looptune import search

    comp = looptune.matmul(64, 64, 64)
    rec = tmp_path / "ml2.jsonl"
    with WorkerPool() as pool:  # real KernelRunners on the workers
        runner = RayRunner(pool, records=rec)
        result = search.get("ml2")(comp.default_schedule(), Measurer(runner=runner, cache={}),
                                   measure_budget=6, seed=0)
        assert result.best_gflops > 0
    lines = [json.loads(x) for x in rec.read_text().splitlines()]
    assert len(lines) >= 6 and {r["core"] for r in lines} <= {0, 1}
    assert all(r["cpu_signature"] == looptune.cpu_signature() for r in lines)


def test_rllib_trains_exports_and_the_policy_tunes(ray_local, tmp_path):
    from looptune import search
    from looptune.agent.policy import load_policy
    from looptune.distributed.rllib import train

    meta = train("ppo", timesteps=200, num_env_runners=1, net_arch=(32, 32), batch=100,
                 env_kwargs={"dataset": "mm64_256_16", "measure_min_time": 0.0005,
                             "measure_min_runs": 1},
                 save=tmp_path / "policy")
    assert meta["timesteps"] >= 200 and meta["trainer"] == "rllib"
    assert meta["export_check"]["same_greedy_actions"]
    assert meta["export_check"]["max_abs_logit_diff"] < 1e-5
    policy = load_policy(tmp_path / "policy.safetensors")
    assert policy.algo == "ppo" and policy.meta["rllib_algo"] == "ppo"
    comp = looptune.matmul(64, 256, 16)
    result = search.get("agent")(comp.default_schedule(), Measurer(cache={}), time_budget=None,
                                 measure_budget=20, policy=policy)
    assert result.best_gflops > 0 and result.best_tree.computation == comp
