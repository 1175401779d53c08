"""Isolated measurement: a crashing or hanging kernel kills a worker, not the tuner."""

from __future__ import annotations

import os
import time

import looptune
from looptune.measure import FakeRunner, Measurer, Outcome
from looptune.measure.isolate import IsolatedRunner


def _cost(tree):
    if tree.depth == 4 and tree.loops[0].step == 4:
        os._exit(3)  # a kernel taking its process down
    if tree.depth == 4 and tree.loops[0].step == 8:
        time.sleep(60)  # a kernel that never returns
    return float(tree.depth)


def test_real_kernels_measure_in_a_worker():
    runner = IsolatedRunner()
    m = Measurer(min_time=0.0, min_runs=1, max_runs=1, runner=runner, cache={})
    r = m.measure(looptune.matmul(32, 32, 32).default_schedule())
    assert r.ok and r.gflops > 0 and r.facts["fma"] > 0
    runner.close()


def test_crash_and_hang_kill_the_worker_not_the_tuner():
    runner = IsolatedRunner(FakeRunner(_cost), hard_timeout=0.5)
    m = Measurer(runner=runner, cache={})
    base = looptune.matmul(64, 64, 64).default_schedule()
    crash, hang = base.split(4), base.split(8)
    r = m.measure(crash)
    assert r.outcome is Outcome.RUNTIME_ERROR and "exit code 3" in r.error
    assert m.gflops(base) == 3.0  # a new worker took over
    r = m.measure(hang)
    assert r.outcome is Outcome.TIMEOUT and "worker killed" in r.error
    assert m.gflops(base.split(2)) == 4.0
    assert runner.restarts == 2
    runner.close()
