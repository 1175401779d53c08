"""The measurement pipeline: typed outcomes, fake runners, records, the bounded cache."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

import looptune
from looptune import _core
from looptune.measure import (
    FakeRunner,
    FaultyRunner,
    LRUCache,
    Measurer,
    Outcome,
    RecordStore,
    best_kernel,
    best_tree,
    build,
    failure,
)


def order(tree) -> tuple[str, ...]:
    return tuple(lp.var for lp in tree.loops)


def test_build_returns_kernel_and_facts_without_running():
    tree = looptune.matmul(32, 32, 32).default_schedule()
    b = build(tree)
    assert b.ok and b.kernel is not None and b.facts == b.kernel.facts and b.seconds > 0


def test_real_measurement_is_ok_and_cached():
    m = Measurer(min_time=0.0, min_runs=2, max_runs=2, cache={})
    tree = looptune.matmul(32, 32, 32).default_schedule()
    r = m.measure(tree)
    assert r.outcome is Outcome.OK and r.runs >= 2 and r.gflops >= r.median_gflops > 0
    assert m.cached(tree) and m.measure(tree) is r
    assert (m.stats.measured, m.stats.cache_hits) == (1, 1)


def test_verification_passes_on_correct_kernels():
    m = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache={}, verify=True)
    r = m.measure(looptune.matmul(48, 40, 24).default_schedule().down().split(8))
    assert r.ok


def test_cache_key_includes_max_runs():
    shared = LRUCache(8)
    tree = looptune.matmul(16, 16, 16).default_schedule()
    a = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache=shared)
    b = Measurer(min_time=0.0, min_runs=1, max_runs=2, cache=shared)
    a.measure(tree)
    assert not b.cached(tree)
    b.measure(tree)
    assert (a.stats.measured, b.stats.measured, b.stats.cache_hits) == (1, 1, 0)


def test_lru_cache_is_bounded_and_evicts_the_least_recent():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1
    c.put("c", 3)
    assert "b" not in c and "a" in c and len(c) == 2 and c.stats.evictions == 1


def test_failures_are_returned_not_raised():
    def cost(tree):
        if tree.depth > 3:
            raise MemoryError("boom")
        return 10.0

    m = Measurer(runner=FakeRunner(cost), cache={})
    base = looptune.matmul(64, 64, 64).default_schedule()
    r = m.measure(base.split(4))
    assert (r.outcome, r.gflops, r.error) == (Outcome.RUNTIME_ERROR, 0.0, "MemoryError: boom")
    assert m.gflops(base) == 10.0
    assert m.stats.failures == {Outcome.RUNTIME_ERROR: 1}


def test_a_runner_breaking_its_protocol_is_unknown():
    class Broken:
        def run(self, tree, isa, budget, cap):
            raise ValueError("not my job")

    r = Measurer(runner=Broken(), cache={}).measure(looptune.matmul(8, 8, 8).default_schedule())
    assert r.outcome is Outcome.UNKNOWN and r.error == "ValueError: not my job"


def test_timeout_cap_is_k_times_the_best_so_far():
    m = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache={}, timeout_factor=2.0,
                 timeout_floor=0.0)  # fmt: skip
    comp = looptune.matmul(64, 64, 64)
    fast = comp.default_schedule().down().down().split(16).swap_up().swap_up()
    assert m.measure(fast).ok
    m._best_seconds[comp.header()] = 1e-9  # pretend a kernel ran in a nanosecond
    r = m.measure(comp.default_schedule())
    assert r.outcome is Outcome.TIMEOUT and "over the cap 2e-09 s" in r.error and r.facts


def test_faulty_runner_injects_each_kind():
    inner = FakeRunner(lambda t: 1.0)
    faulty = FaultyRunner(inner, rate=1.0, seed=0)
    m = Measurer(runner=faulty, cache={})
    tree = looptune.matmul(64, 64, 64).default_schedule()
    outcomes = [m.measure(t).outcome for t in (tree, tree.split(2), tree.split(4))]
    assert outcomes == [Outcome.COMPILE_ERROR, Outcome.RUNTIME_ERROR, Outcome.TIMEOUT]
    assert inner.calls == 0


def test_records_round_trip_and_best(tmp_path):
    path = tmp_path / "r.jsonl"
    comp = looptune.matmul(64, 64, 64)
    base = comp.default_schedule()
    tiled = base.split(4)
    gf = {base.hash(): 5.0, tiled.hash(): 9.0}
    m = Measurer(runner=FakeRunner(lambda t: gf[t.hash()]), cache={}, records=path)
    m.measure(base)
    m.measure(tiled)
    Measurer(runner=FakeRunner(lambda t: failure(Outcome.TIMEOUT, "slow")), records=path,
             cache={}).measure(base.down().split(2))  # fmt: skip
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["outcome"] for r in recs] == ["ok", "ok", "timeout"]
    assert recs[0]["computation"] == comp.header() and recs[0]["cpu"] == _core.cpu_name()
    assert recs[1]["schedule"] == tiled.dump() and recs[1]["hash"] == f"{tiled.hash():016x}"
    assert {"isa", "looptune", "time", "facts", "runs", "median_gflops"} <= set(recs[0])
    assert RecordStore(path).best(comp)["gflops"] == 9.0
    assert best_tree(comp, path) == tiled
    assert best_tree(looptune.matmul(8, 8, 8), path) == looptune.matmul(8, 8, 8).default_schedule()
    k = best_kernel(comp, path)
    assert k.tree == tiled


def test_torn_lines_are_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"schedule": "x", "computation": "y"}\n{"trunc')
    with pytest.warns(UserWarning, match="skipped line 2"):
        assert len(list(RecordStore(path))) == 1


def test_records_warm_a_new_measurer(tmp_path):
    path = tmp_path / "r.jsonl"
    tree = looptune.matmul(32, 32, 32).default_schedule()
    first = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache={}, records=path)
    g = first.gflops(tree)
    second = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache={}, records=path)
    assert second.cached(tree) and second.gflops(tree) == g and second.stats.measured == 0
    other_budget = Measurer(min_time=0.0, min_runs=1, max_runs=3, cache={}, records=path)
    assert not other_budget.cached(tree)


def _append_many(path: str, who: int) -> None:
    store = RecordStore(path)
    for i in range(200):
        store.append({"computation": "c", "schedule": "s" * 5000, "who": who, "i": i})


def test_two_processes_append_without_interleaving(tmp_path):
    path = str(tmp_path / "r.jsonl")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = open(path).read().splitlines()
    assert len(lines) == 400
    recs = [json.loads(line) for line in lines]  # every line is whole
    for w in (1, 2):
        assert [r["i"] for r in recs if r["who"] == w] == list(range(200))


def test_bad_budget_is_a_value_error():
    with pytest.raises(ValueError):
        Measurer(min_runs=5, max_runs=2)
    with pytest.raises(ValueError):
        Measurer(timeout_factor=0.5)
