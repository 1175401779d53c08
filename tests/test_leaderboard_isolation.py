"""Hard limits on in-process entrants and budgets inside slow measurements.

Deterministic fakes: plug-ins that hang, raise, die or return garbage, and a fake runner whose
measurement of one schedule never ends. No assertion here depends on how fast the machine is.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import time

import pytest

import looptune
from looptune.leaderboard import report, run, suite
from looptune.leaderboard.entrants import Budget, PluginEntrant, SearchEntrant, deadline
from looptune.leaderboard.isolation import EntrantCrash, EntrantTimeout, EntrantWorker
from looptune.measure import Measurer
from looptune.measure.deadline import DeadlineRunner
from looptune.measure.isolate import IsolatedRunner
from looptune.measure.result import MeasureResult, Outcome
from looptune.measure.run import FakeRunner
from looptune.search import greedy_search

MM = suite.Entry("mm_test", "matmul", (16, 24, 32), "tiny")
MM2 = suite.Entry("mm_test", "matmul", (8, 8, 40), "tiny")
CONV = suite.Entry("conv", "conv2d", (1, 3, 9, 9, 8, 3, 3, 2, 1), "tiny conv")

PLUGIN = """
import os, sys, time
import looptune

def ok(computation, budget):
    return computation.default_schedule()

def hangs(computation, budget):
    while True:
        time.sleep(0.05)

def hangs_on_conv(computation, budget):
    if computation.kind == "conv2d":
        hangs(computation, budget)
    return computation.default_schedule()

def hangs_with_child(computation, budget):
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(0.05)
    with open(os.environ["LB_CHILD_PID_FILE"], "w") as f:
        f.write(str(pid))
    hangs(computation, budget)

def raises(computation, budget):
    raise KeyError("no such knob")

def dies(computation, budget):
    os._exit(7)

def returns_none(computation, budget):
    return None

def returns_text(computation, budget):
    return computation.default_schedule().dump()

def returns_other(computation, budget):
    return looptune.matmul(4, 4, 4).default_schedule()

def interrupts(computation, budget):
    raise KeyboardInterrupt
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "lb_iso_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    yield "lb_iso_plugin"
    sys.modules.pop("lb_iso_plugin", None)


def _entrant(plugin: str, attr: str) -> PluginEntrant:
    return PluginEntrant(f"{plugin}:{attr}", grace=1.0)


def test_deadline_is_factor_times_budget_plus_grace():
    assert deadline(Budget(2.0)) == 9.0
    assert deadline(Budget(0.5), grace=1.0) == 2.0


def test_hanging_plugin_is_killed_and_shown_as_timeout(plugin):
    entrant = _entrant(plugin, "hangs")
    try:
        (row,) = entrant.run(MM, Budget(0.1))
    finally:
        entrant.close()
    assert row["status"] == "timeout" and row["entrant"] == f"{plugin}:hangs"
    assert row["error"].startswith("EntrantTimeout: no answer within 1.2 s")
    assert row["tuning_seconds"] == 1.2 and math.isnan(row["gflops"])


def test_after_a_timeout_the_next_benchmark_gets_a_fresh_worker(plugin):
    entrant = _entrant(plugin, "hangs_on_conv")
    try:
        rows = [r for e in (MM, CONV, MM2) for r in entrant.run(e, Budget(0.1))]
        assert entrant.worker.restarts == 1
    finally:
        entrant.close()
    assert [r["status"] for r in rows] == ["ok", "timeout", "ok"]
    assert rows[2]["schedule"] == MM2.computation().default_schedule().dump()


def test_a_timed_out_worker_takes_its_children_with_it(plugin, tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("LB_CHILD_PID_FILE", str(pid_file))
    entrant = _entrant(plugin, "hangs_with_child")
    try:
        (row,) = entrant.run(MM, Budget(0.1))
    finally:
        entrant.close()
    assert row["status"] == "timeout"
    child = int(pid_file.read_text())
    for _ in range(100):  # reaped by init shortly after the kill
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.mark.parametrize(
    "attr, error",
    [
        ("raises", "KeyError: 'no such knob'"),
        ("dies", "the entrant's worker died while tuning (exit 7)"),
        ("returns_none", "TypeError: entrant returned NoneType, expected a LoopTree"),
        ("returns_text", "TypeError: entrant returned str, expected a LoopTree"),
        ("returns_other", "ValueError: entrant returned a schedule of a different computation"),
        ("interrupts", "KeyboardInterrupt: "),
    ],
)
def test_failing_plugins_are_failed_rows_and_the_worker_recovers(plugin, attr, error):
    entrant = _entrant(plugin, attr)
    try:
        (row,) = entrant.run(MM, Budget(0.1))
        (again,) = entrant.run(MM2, Budget(0.1))
    finally:
        entrant.close()
    assert row["status"] == again["status"] == "failed"
    assert row["error"].startswith(error)
    assert row["schedule"] is None and math.isnan(row["gflops"])


def test_run_keeps_every_failure_and_timeout_in_the_table(plugin):
    entrants = [_entrant(plugin, a) for a in ("ok", "hangs_on_conv", "raises", "returns_none")]
    machine = {"cpu": "fake", "isa": "avx2", "peak_gflops": 100.0}
    doc = run.run_leaderboard([MM, CONV], entrants, Budget(0.1), progress=False, machine=machine)
    assert all(e.worker._proc is None for e in entrants)  # the run closed its workers
    status = {(r["entrant"].split(":")[1], r["benchmark"]): r["status"] for r in doc["rows"]}
    assert len(status) == 8
    assert status[("hangs_on_conv", CONV.name)] == "timeout"
    assert status[("hangs_on_conv", MM.name)] == "ok"
    assert {status[("raises", b.name)] for b in (MM, CONV)} == {"failed"}
    conv_table = report.report_markdown(doc).split("### conv")[1].split("###")[0]
    line = next(ln for ln in conv_table.splitlines() if ln.startswith(f"| {plugin}:hangs_on"))
    assert line.endswith("| 0/1 | - | - | - | - | 1.20 | 1 timeout |")
    line = next(ln for ln in conv_table.splitlines() if ln.startswith(f"| {plugin}:returns"))
    assert line.endswith("| 1 failed |")


def test_worker_that_cannot_start_is_a_typed_error():
    worker = EntrantWorker("plugin", "lb_iso_no_such_module:tune", startup=60.0)
    with pytest.raises(EntrantCrash, match="entrant could not start: PluginError"):
        worker.tune(MM, 0.1, 5.0)
    with pytest.raises(ValueError, match="unknown entrant kind"):
        EntrantWorker("shell", "rm")
    assert issubclass(EntrantTimeout, Exception)


def test_search_entrant_tunes_in_its_worker():
    entrant = SearchEntrant("base")
    try:
        (row,) = entrant.run(MM, Budget(0.5))
    finally:
        entrant.close()
    assert row["status"] == "ok", row["error"]
    assert row["schedule"] == MM.computation().default_schedule().dump()
    assert row["measurements"] == 1 and row["search_gflops"] > 0


# --- budgets inside a slow measurement ---------------------------------------------------------


class _Recorder:
    hard_timeout = 30.0

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def run(self, tree, isa, budget, cap_seconds) -> MeasureResult:
        self.timeouts.append(self.hard_timeout)
        return MeasureResult(Outcome.OK, 1.0, 1.0, 1, seconds=0.0)


def test_deadline_runner_bounds_each_measurement_by_the_time_left():
    inner = _Recorder()
    runner = DeadlineRunner(inner, floor=0.25)
    tree = looptune.matmul(8, 8, 8).default_schedule()
    runner.run(tree, "avx2", None, None)  # not armed: the inner runner's own limit
    runner.arm(1000.0)
    runner.run(tree, "avx2", None, None)  # far deadline: still the inner limit
    runner.arm(0.0)
    runner.run(tree, "avx2", None, None)  # past the deadline: only the floor
    assert inner.timeouts == [30.0, 30.0, 0.25]
    runner.arm(5.0)
    runner.run(tree, "avx2", None, None)
    assert 0.25 <= inner.timeouts[-1] <= 5.0
    with pytest.raises(TypeError, match="cannot be cut off"):
        DeadlineRunner(FakeRunner(lambda t: 1.0))
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        runner.arm(-1.0)


def test_greedy_stops_inside_a_measurement_that_never_ends():
    start = looptune.matmul(16, 16, 16).default_schedule()

    def cost(tree):
        if tree.hash() == start.hash():
            return 10.0
        time.sleep(3600)  # a schedule whose measurement would outlast any budget
        return 20.0

    runner = DeadlineRunner(IsolatedRunner(FakeRunner(cost), hard_timeout=3600.0), floor=0.2)
    try:
        result = greedy_search(start, Measurer(cache={}, runner=runner), time_budget=0.5)
    finally:
        runner.close()
    assert result.best_gflops == 10.0 and result.best_tree.hash() == start.hash()
    assert result.failures and {o for _, o in result.failures} == {"timeout"}
    assert runner.inner.restarts >= 1  # the slow measurement's worker was killed
