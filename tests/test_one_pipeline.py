"""One measurement pipeline: typed outcomes for the cost models, records keyed by the CPU's
signature, the runner's ``arm`` hook, the final-timing measurer, the one numpy check, and the
layering (cost models never import searches; no leaderboard import cycles)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import looptune
from looptune import _core
from looptune.measure import (
    FINAL_MIN_TIME,
    FakeRunner,
    FaultyRunner,
    KernelRunner,
    Measurer,
    MeasureResult,
    Outcome,
    RecordStore,
    RunnerBase,
    final_measurer,
)
from looptune.measure.reference import check_kernel, check_tree
from looptune.measure.store import migrate
from looptune.search.base import Tracker

PKG = Path(looptune.__file__).parent


def test_outcome_parses_names_and_values():
    assert Outcome.parse("OK") is Outcome.OK and Outcome.parse("ok") is Outcome.OK
    assert Outcome.parse("COMPILE_REJECTED") is Outcome.COMPILE_REJECTED
    assert Outcome.parse("not_instantiable") is Outcome.NOT_INSTANTIABLE
    assert Outcome.parse(Outcome.TIMEOUT) is Outcome.TIMEOUT
    assert Outcome.parse("from the future") is Outcome.UNKNOWN


def test_ml2_records_keep_their_format_and_old_lines_read(tmp_path):
    from looptune.costmodel.records import Record, load_records, save_records

    comp = looptune.matmul(16, 16, 16).header()
    rec = Record(comp, "avx2", {"unroll": True}, Outcome.COMPILE_REJECTED, 0.0)
    path = tmp_path / "ml2.jsonl"
    save_records(path, [rec])
    line = json.loads(path.read_text())
    assert line["outcome"] == "COMPILE_REJECTED"  # the name, as before the typed outcome
    # a line written by the old pipeline (outcome "OK") and one with the enum's value
    old = {"computation": comp, "isa": "avx2", "config": {}, "outcome": "OK", "gflops": 5.0}
    with open(path, "a") as f:
        f.write(json.dumps(old) + "\n")
        f.write(json.dumps({**old, "outcome": "wrong_answer"}) + "\n")
    got = load_records(path)
    assert [r.outcome for r in got] == [
        Outcome.COMPILE_REJECTED, Outcome.OK, Outcome.WRONG_ANSWER
    ]


def test_records_are_keyed_by_cpu_signature_and_old_ones_need_a_migration(tmp_path):
    tree = looptune.matmul(32, 32, 32).default_schedule()
    path = tmp_path / "r.jsonl"
    m = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache={}, records=path)
    g = m.gflops(tree)
    rec = json.loads(path.read_text())
    assert rec["cpu_signature"] == _core.cpu_signature() and rec["cpu"] == _core.cpu_name()
    # another microarchitecture's record does not warm; neither does an old one (brand string
    # only: "AMD EPYC" names Zen 1 and Zen 4 alike) until migrate() tags it with a signature
    old = {k: v for k, v in rec.items() if k != "cpu_signature"}
    other = {**rec, "cpu_signature": "OtherVendor family 1 model 2", "gflops": 1e6}
    for name, r in (("old", old), ("other", other)):
        p = tmp_path / f"{name}.jsonl"
        RecordStore(p).append(r)
        fresh = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache={}, records=p)
        assert not fresh.cached(tree)
        assert RecordStore(p).best(tree.computation) is None
    with open(tmp_path / "old.jsonl", "a") as f:
        f.write("not json\n")
    assert migrate(tmp_path / "old.jsonl", _core.cpu_signature()) == 1
    assert "not json" in (tmp_path / "old.jsonl").read_text()  # kept
    with pytest.warns(UserWarning, match="skipped line 2"):  # the kept malformed line
        old_path = tmp_path / "old.jsonl"
        fresh = Measurer(min_time=0.0, min_runs=1, max_runs=1, cache={}, records=old_path)
        assert fresh.cached(tree)
        assert RecordStore(tmp_path / "old.jsonl").best(tree.computation)["gflops"] == g
    with pytest.raises(ValueError, match="CPU signature"):
        migrate(tmp_path / "old.jsonl", "AMD EPYC")


class _Arming(FakeRunner):
    def __init__(self):
        super().__init__(lambda tree: 1.0)
        self.armed = []

    def arm(self, seconds):
        self.armed.append(seconds)


def test_every_runner_has_the_arm_hook_and_the_tracker_uses_it():
    for runner in (KernelRunner(), FakeRunner(lambda t: 1.0), FaultyRunner(KernelRunner())):
        assert isinstance(runner, RunnerBase)
        runner.arm(1.0)  # a no-op
    inner = _Arming()
    FaultyRunner(inner, rate=0.0).arm(2.5)  # passed on to the wrapped runner
    assert inner.armed == [2.5]
    m = Measurer(cache={}, runner=inner)
    Tracker(m, time_budget=3.0, measure_budget=None)
    Tracker(m, time_budget=None, measure_budget=4)  # no time budget: nothing to arm
    assert inner.armed == [2.5, 3.0]


def test_final_measurer_is_the_longer_private_timing():
    m = final_measurer()
    assert (m.min_time, m.min_runs, m.max_runs) == (FINAL_MIN_TIME, 10, 100_000)
    assert final_measurer(0.2, max_runs=10_000).budget.max_runs == 10_000
    assert m._cache is not final_measurer()._cache  # a private cache each


def test_one_numpy_check_for_runner_and_reference():
    tree = looptune.matmul(24, 16, 40).default_schedule()
    kernel = tree.compile()
    assert check_kernel(kernel) == check_tree(tree)
    assert check_kernel(kernel).ok

    class Wrong:  # a kernel whose output is off
        tree = kernel.tree

        def __call__(self, a, b):
            return np.asarray(kernel(a, b)) + 1.0

    bad = check_kernel(Wrong())
    assert not bad.ok and "DOES NOT match numpy" in str(bad)


def test_verifying_runner_reports_wrong_answer(monkeypatch):
    from looptune.measure import run

    tree = looptune.matmul(16, 16, 16).default_schedule()
    r = KernelRunner(verify=True).run(tree, _core.host_isa(), run.TimingBudget(0.0, 1, 1), None)
    assert r.ok
    monkeypatch.setattr(run, "check_kernel", lambda k: check_kernel(_off(k)))
    r = KernelRunner(verify=True).run(tree, _core.host_isa(), run.TimingBudget(0.0, 1, 1), None)
    assert r.outcome is Outcome.WRONG_ANSWER and "max abs error" in r.error


def _off(kernel):
    class Off:
        tree = kernel.tree

        def __call__(self, a, b):
            return np.asarray(kernel(a, b)) * 2.0

    return Off()


def test_engine_isa_facts_are_the_python_facts():
    from looptune.costmodel.configspace import ACCUMULATORS, LANES, REGISTERS
    from looptune.space import schedules

    known = _core.known_isas()
    assert known[0] == "avx512" and set(known) == {"avx512", "avx2"}
    assert _core.supported_isas() == [i for i in known if _core.isa_supported(i)]
    assert _core.host_isa() == _core.supported_isas()[0]
    for isa in known:
        f = _core.isa_facts(isa)
        assert f["supported"] == _core.isa_supported(isa)
        assert f["accumulator_registers"] == f["vector_registers"] - 4
        assert (LANES[isa], REGISTERS[isa], ACCUMULATORS[isa]) == (
            f["lanes"], f["vector_registers"], f["accumulator_registers"]
        )
        # the rule for an ISA without a hand-picked tile list fits the accumulators
        for rows, floats in schedules.register_tiles(isa):
            vecs = floats // f["lanes"]
            assert f["accumulator_registers"] / 2 <= rows * vecs <= f["accumulator_registers"]
    with pytest.raises(ValueError, match="choose 'avx512' or 'avx2'"):
        _core.isa_facts("sse")


def test_depth_constants_say_what_they_limit():
    from looptune import space

    assert _core.MAX_TREE_LOOPS == _core.MAX_LOOPS == 16  # loops a tree can hold
    assert space.DEFAULT_MAX_LOOPS == space.MAX_LOOPS == _core.DEFAULT_MAX_LOOPS == 10
    assert space.graph.observation(looptune.matmul(8, 8, 8).default_schedule()).shape == (
        10 * space.graph.FEATURES_PER_LOOP,
    )


def test_two_budgets_have_names_that_say_what_they_are():
    from looptune.leaderboard import Budget as EntrantBudget
    from looptune.measure import Budget, TimingBudget

    assert Budget is TimingBudget and EntrantBudget is not TimingBudget
    assert TimingBudget().min_runs == 3 and EntrantBudget(2.0).seconds == 2.0


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_cost_models_never_import_searches():
    for path in (PKG / "costmodel").glob("*.py"):
        bad = [m for m in _imports(path) if m == "looptune.search" or
               m.startswith("looptune.search.")]
        assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("a,b", [("entrants", "isolation"), ("report", "targets")])
def test_no_leaderboard_import_cycle(a, b):
    ia = _imports(PKG / "leaderboard" / f"{a}.py")
    ib = _imports(PKG / "leaderboard" / f"{b}.py")
    assert not (f"looptune.leaderboard.{b}" in ia and f"looptune.leaderboard.{a}" in ib)


def test_search_package_does_not_cycle_through_costmodel():
    assert "looptune.search" not in _imports(PKG / "costmodel" / "__init__.py")
    from looptune.search import model_guided

    assert model_guided.TUNERS == ("random", "xgb", "pv", "ml2")


def test_measure_result_failure_of_new_outcomes():
    r = MeasureResult(Outcome.NOT_INSTANTIABLE)
    assert not r.ok and r.gflops == 0.0


def test_tvm_records_keyed_by_signature_not_by_brand(tmp_path):
    import sys

    from looptune.leaderboard import suite, tvm_entrant

    entry = suite.Entry("mm_test", "matmul", (16, 24, 32), "tiny")
    ent = tvm_entrant.TVMEntrant(sys.executable, trials=8, records=tmp_path)
    key = ent._key(entry)
    assert key[1] == _core.cpu_signature() and key[2] == _core.host_isa()
    old = [key[0], _core.cpu_name(), 8]  # keyed by the brand string, before signatures
    (tmp_path / "records.jsonl").write_text(json.dumps({"key": old, "gflops": 3.0}) + "\n")
    assert ent._record(key) is None
    (tmp_path / "records.jsonl").write_text(json.dumps({"key": list(key), "gflops": 4.0}) + "\n")
    assert ent._record(key)["gflops"] == 4.0
