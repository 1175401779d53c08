"""The model-guided search and its cost models on a deterministic fake runner (no timing):
exact choices, budgets, failures, records."""

import math

import numpy as np
import pytest

import looptune
from looptune.costmodel import ConfigSpace, Evaluator, Outcome
from looptune.costmodel import evaluator as evaluator_module
from looptune.costmodel.configspace import LANES
from looptune.costmodel.models import Classifier, Regressor
from looptune.costmodel.predictor import predictor, spearman
from looptune.costmodel.records import (
    load_records,
    point_of,
    pretrain_rows,
    records_from,
    save_records,
)
from looptune.measure import FakeRunner, Measurer, MeasureResult, failure
from looptune.search.model_guided import Tuner, tune


def tile_cost(lanes):
    """Fake GFLOP/s from the register tile of the tree: the loops inside the last reduction
    loop; 100 per accumulator plus the rows (a unique optimum value per ISA)."""

    def fake(tree):
        loops = tree.loops
        last_red = max(i for i, lp in enumerate(loops) if lp.var == "k")
        tile = loops[last_red + 1 :]
        rows = tile[0].range if len(tile) == 2 else 1
        acc = rows * math.ceil(tile[-1].range / lanes)
        return 100.0 * acc + rows

    return fake


def fake_evaluator(space, cost):
    """An evaluator whose measurer runs ``cost`` (a FakeRunner): the real pipeline otherwise."""
    measurer = Measurer(space.isa, runner=FakeRunner(cost), cache={}, timeout_factor=None)
    return Evaluator(space, measurer)


# Building a point compiles it, so a space's ISA must run here: tests of behaviour that does not
# depend on the ISA use the host's; those with exact per-ISA results use the cpu_isa fixture.
HOST = looptune.host_isa()
# Exact results of the fixed-seed runs below, per ISA: its lanes and registers shape the space
# (which points instantiate or fit the register file) and the fake cost.
EXPECTED = {
    "avx512": {"ml2_caught": 49, "xgb_invalid": 32, "flaky": 5, "pv_crashed": 7, "timeouts": 2},
    "avx2": {"ml2_caught": 75, "xgb_invalid": 23, "flaky": 6, "pv_crashed": 6, "timeouts": 2},
}


def crashes_when_unrolled(isa):
    base = tile_cost(LANES[isa])

    def fake(tree):
        if any(lp.unroll for lp in tree.loops):
            return failure(Outcome.RUNTIME_ERROR, "crashed")
        return base(tree)

    return fake


def run(kind, isa, seed=0, budget=64, fake=None, **kw):
    space = ConfigSpace(looptune.matmul(64, 64, 64), isa)
    ev = fake_evaluator(space, fake or tile_cost(space.lanes))
    tuner = Tuner(ev, kind, seed=seed, **kw)
    return tuner, tuner.run(budget)


def first_reaching(result, value):
    return next(i + 1 for i, g in enumerate(result.curve()) if g >= value)


def test_ml2_finds_the_fake_optimum_fast():
    # avx2: at most 12 accumulators; the optimum value is 1212 (a 12 x 1 register tile)
    for seed, when in ((0, 5), (1, 31)):
        _, ml2 = run("ml2", isa="avx2", seed=seed)
        assert ml2.best_gflops == 1212.0
        assert first_reaching(ml2, 1212.0) == when
    _, rnd = run("random", isa="avx2", seed=2)
    assert rnd.best_gflops == 808.0  # random search never gets there in 64 measurements


def test_ml2_measures_no_point_the_compiler_rejects(cpu_isa):
    _, ml2 = run("ml2", cpu_isa)
    assert ml2.measurements == 64
    assert ml2.invalid_measurements == 0
    assert ml2.caught == EXPECTED[cpu_isa]["ml2_caught"]
    caught = {t.outcome for t in ml2.trials if not t.measured}
    assert caught == {Outcome.NOT_INSTANTIABLE, Outcome.COMPILE_REJECTED}
    _, xgb = run("xgb", cpu_isa)
    assert xgb.invalid_measurements == EXPECTED[cpu_isa]["xgb_invalid"] and xgb.caught == 0


def test_same_seed_same_choices():
    _, a = run("ml2", HOST, seed=3, budget=24)
    _, b = run("ml2", HOST, seed=3, budget=24)
    assert a.measurements == 24
    assert [t.point for t in a.trials] == [t.point for t in b.trials]


def test_evaluator_refuses_an_isa_the_cpu_cannot_compile_for(monkeypatch):
    # not a COMPILE_ERROR per point (ML² then drew pools for tens of seconds, measuring none)
    monkeypatch.setattr(evaluator_module, "isa_supported", lambda isa: False)
    space = ConfigSpace(looptune.matmul(64, 64, 64), "avx2")
    with pytest.raises(ValueError, match="'avx2' is not supported on this CPU"):
        Evaluator(space)


def test_failed_measurements_are_counted_not_raised(cpu_isa):
    _, res = run("xgb", cpu_isa, fake=crashes_when_unrolled(cpu_isa))
    assert res.measurements == 64
    errors = [t for t in res.measured if t.outcome == Outcome.RUNTIME_ERROR]
    assert len(errors) == EXPECTED[cpu_isa]["flaky"] and all(t.error == "crashed" for t in errors)
    assert res.best_gflops > 0


def test_v_learns_to_filter_a_class_of_invalid_points(cpu_isa):
    tuner, res = run("pv", cpu_isa, fake=crashes_when_unrolled(cpu_isa), budget=96)
    space = tuner.space
    crashed = [t for t in res.measured if t.outcome == Outcome.RUNTIME_ERROR]
    assert len(crashed) == EXPECTED[cpu_isa]["pv_crashed"]
    assert all(space.values(t.point)["unroll"] for t in crashed)
    # V's verdict on the best point with and without unroll
    best = res.best_point
    u = [k.name for k in space.knobs].index("unroll")
    flipped = best[:u] + (1 - best[u],) + best[u + 1 :]
    assert space.try_instantiate(flipped)[0] is not None
    pv = tuner.V.predict_valid(np.stack([tuner.ev.visible(p) for p in (best, flipped)]))
    assert pv[0] > 0.5 > pv[1]
    # so the filter step drops the unrolled twin of the best point
    keep = [p for p, v in zip((best, flipped), pv) if v >= 0.5]
    assert keep == [best]


def test_timeout_cuts_off_slow_points(cpu_isa):
    # the measurer's cut-off: 10x the best run of the computation so far
    calls = []
    comp = looptune.matmul(64, 64, 64)
    space = ConfigSpace(comp, cpu_isa, layouts=["plain"])
    cost = tile_cost(space.lanes)

    class SlowRunner(FakeRunner):
        def run(self, tree, isa, budget, cap_seconds):
            g = cost(tree)
            seconds = comp.flops / (g * 1e9)
            known = ev.best_gflops
            calls.append((cap_seconds, 10 * comp.flops / (known * 1e9) if known else None))
            if cap_seconds is not None and seconds > cap_seconds:
                return failure(Outcome.TIMEOUT, "slow")
            return MeasureResult(Outcome.OK, g, g, 1, seconds=seconds)

    measurer = Measurer(cpu_isa, runner=SlowRunner(cost), cache={}, timeout_factor=10.0,
                        timeout_floor=0.0)
    ev = Evaluator(space, measurer)
    res = Tuner(ev, "random", seed=0).run(32)
    # no cut-off before the first valid measurement, then 10x the best run so far
    assert calls[0] == (None, None) and calls[-1][0] is not None
    assert all(t == pytest.approx(cap) if cap else t is None for t, cap in calls)
    timeouts = [t for t in res.measured if t.outcome == Outcome.TIMEOUT]
    assert len(timeouts) == EXPECTED[cpu_isa]["timeouts"]
    assert all(cost(space.instantiate(t.point)) * 10 < ev.best_gflops for t in timeouts)


def test_wrong_answer_is_an_outcome():
    space = ConfigSpace(looptune.matmul(64, 64, 64), HOST)
    ev = fake_evaluator(space, lambda tree: failure(Outcome.WRONG_ANSWER, "off"))
    res = Tuner(ev, "random", seed=0).run(16)
    ok_or_wrong = {t.outcome for t in res.measured} - {
        Outcome.NOT_INSTANTIABLE,
        Outcome.COMPILE_REJECTED,
    }
    assert ok_or_wrong == {Outcome.WRONG_ANSWER} and res.best_gflops == 0.0


def test_bad_arguments():
    space = ConfigSpace(looptune.matmul(16, 16, 16), "avx2")
    ev = fake_evaluator(space, tile_cost(8))
    with pytest.raises(ValueError, match="unknown tuner"):
        Tuner(ev, "annealing")
    with pytest.raises(ValueError, match="budget"):
        Tuner(ev, "ml2").run(None, None)
    with pytest.raises(ValueError, match="batch"):
        Tuner(ev, "ml2", batch=0)


def test_time_budget_stops_the_tuner():
    space = ConfigSpace(looptune.matmul(64, 64, 64), HOST)
    ev = fake_evaluator(space, tile_cost(space.lanes))
    res = tune(space, "xgb", measure_budget=None, time_budget=0.0, evaluator=ev)
    assert res.measurements == 0


def test_models_before_and_after_training():
    r = Regressor()
    assert list(r.predict(np.zeros((2, 3)))) == [0.0, 0.0]
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = x[:, 0] * 2.0
    r.fit(x, y)
    pred = r.predict(x)
    assert spearman(pred, y) > 0.99
    c = Classifier().fit(x[:3], np.array([True, True, True]))
    assert not c.trained and list(c.predict_valid(x[:2])) == [1.0, 1.0]
    c.fit(x, x[:, 0] >= 20)
    assert (c.predict_valid(x) > 0.5).tolist() == (x[:, 0] >= 20).tolist()


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)
    assert math.isnan(spearman([1], [1]))


def test_records_round_trip_and_pretrain(tmp_path):
    tuner, res = run("xgb", HOST, budget=16)
    recs = records_from(tuner.space, res)
    path = tmp_path / "r.jsonl"
    save_records(path, recs)
    loaded = load_records(path)
    assert loaded == recs
    assert [point_of(tuner.space, r.config) for r in loaded] == [t.point for t in res.trials]
    rows = pretrain_rows(loaded, kind="matmul")
    assert len(rows) == 16 and pretrain_rows(loaded, kind="conv2d") == []
    assert [r[2] == Outcome.OK for r in rows] == [r[1] is not None for r in rows]
    # pre-trained P ranks from the first round: no random first batch
    pre, res2 = run("ml2", HOST, budget=8, pretrain=rows)
    assert pre.P.trained
    (tmp_path / "bad.jsonl").write_text('{"computation": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_records(tmp_path / "bad.jsonl")


def test_predictor_is_deterministic_and_learns_the_fake():
    space = ConfigSpace(looptune.matmul(64, 64, 64), "avx2")
    rng = np.random.default_rng(0)
    trees = []
    while len(trees) < 60:
        t, _ = space.try_instantiate(space.sample(rng))
        if t is not None:
            trees.append(t)
    fake = tile_cost(8)
    y = [fake(t) for t in trees]
    pred = predictor(trees[:40], y[:40], "avx2")
    got = [pred(t) for t in trees[40:]]
    assert got == [pred(t) for t in trees[40:]]
    assert spearman(got, y[40:]) > 0.7
    with pytest.raises(ValueError, match="2 trees but 1"):
        predictor(trees[:2], y[:1], "avx2")


def test_ml2_draws_pools_until_one_compiles():
    # conv2d spaces are ~95% invalid: a first pool of 32 can hold no valid point; ML² keeps
    # drawing (failures caught, unmeasured) instead of stopping with nothing measured
    space = ConfigSpace(looptune.conv2d(1, 32, 28, 28, 64, 3, 3, 1, 1), HOST)
    ev = fake_evaluator(space, lambda tree: 1.0)
    res = Tuner(ev, "ml2", seed=1).run(8)
    assert res.measurements == 8 and res.invalid_measurements == 0
    assert res.caught > 32
