"""Every bad input of issue 13 gets a typed, clear error before any work starts.

Each row: what is tried, the exception type, and a phrase its message must contain.
"""

from __future__ import annotations

import math
import os
import threading

import gymnasium as gym
import numpy as np
import pytest

import looptune
from looptune import cli
from looptune.cli.commands import load_schedule, save_schedule
from looptune.envs.looptune_env import LoopTuneEnv
from looptune.measure import Measurer
from looptune.util.fileio import FileTooLargeError, NotRegularFileError

MM = "# matmul m=16 k=4 n=4\n"
STMT = "  C[m,n] += A[m,k] * B[k,n]\n"


def _kernel():
    return looptune.matmul(16, 16, 16).default_schedule().compile()


def _env(**kw):
    return LoopTuneEnv(dataset="mm64_256_16", peak_gflops=kw.pop("peak_gflops", 100.0), **kw)


def _stepped(action):
    env = _env()
    env.reset(seed=0)
    return env.step(action)


CASES = [
    # sizes beyond the memory cap: refused at compile time, with the figure
    (
        "matmul(32768, 32768, 32767) compile",
        lambda: looptune.matmul(32768, 32768, 32767).default_schedule().compile(),
        looptune.BufferTooLargeError,
        "GiB",
    ),
    # timing options
    ("benchmark(min_time=nan)", lambda: _kernel().benchmark(min_time=math.nan), ValueError, "[0"),
    ("benchmark(min_time=inf)", lambda: _kernel().benchmark(min_time=math.inf), ValueError, "[0"),
    ("benchmark(min_time=-1)", lambda: _kernel().benchmark(min_time=-1), ValueError, "[0, 60]"),
    ("benchmark(min_time=3600)", lambda: _kernel().benchmark(min_time=3600), ValueError, "[0, 60]"),
    ("benchmark(min_runs=0)", lambda: _kernel().benchmark(min_runs=0), ValueError, "min_runs"),
    (
        "benchmark(max_runs=10**9)",
        lambda: _kernel().benchmark(max_runs=10**9),
        ValueError,
        "max_runs at most",
    ),
    (
        "measure_peak_gflops(min_time=inf)",
        lambda: looptune.measure_peak_gflops(min_time=math.inf),
        ValueError,
        "min_time",
    ),
    (
        "measure_peak_gflops(min_time=3600)",
        lambda: looptune.measure_peak_gflops(min_time=3600),
        ValueError,
        "[0, 60]",
    ),
    ("Measurer(min_time=nan)", lambda: Measurer(min_time=math.nan), ValueError, "min_time"),
    ("Measurer(min_time=inf)", lambda: Measurer(min_time=math.inf), ValueError, "min_time"),
    ("Measurer(min_time=600)", lambda: Measurer(min_time=600), ValueError, "[0, 60]"),
    ("Measurer(min_time='1')", lambda: Measurer(min_time="1"), TypeError, "min_time"),
    ("Measurer(min_runs=0)", lambda: Measurer(min_runs=0), ValueError, "min_runs"),
    (
        "Measurer(min_runs=10**9)",
        lambda: Measurer(min_runs=10**9, max_runs=10**9),
        ValueError,
        "max_runs <= 100000000",
    ),
    ("Measurer(min_runs=2.5)", lambda: Measurer(min_runs=2.5), TypeError, "integer"),
    ("env peak_gflops=inf", lambda: _env(peak_gflops=math.inf), ValueError, "finite"),
    ("env peak_gflops=nan", lambda: _env(peak_gflops=math.nan), ValueError, "finite"),
    ("env peak_gflops=0", lambda: _env(peak_gflops=0.0), ValueError, "> 0"),
    # action names: the engine's grammar, when the action set is built
    ("actions split_0", lambda: _env(actions=["up", "split_0"]), ValueError, "split_<N>"),
    ("actions split_1", lambda: _env(actions=["split_1"]), ValueError, ">= 2"),
    ("actions split_abc", lambda: _env(actions=["split_abc"]), ValueError, "split_<N>"),
    ("actions unknown", lambda: _env(actions=["jump"]), ValueError, "unknown action 'jump'"),
    ("actions not str", lambda: _env(actions=["up", 3]), TypeError, "string"),
    ("actions empty", lambda: _env(actions=[]), ValueError, "empty"),
    ("actions duplicate", lambda: _env(actions=["up", "up"]), ValueError, "duplicate"),
    ("env.step(2.5)", lambda: _stepped(2.5), TypeError, "integer index"),
    ("env.step('3')", lambda: _stepped("3"), TypeError, "integer index"),
    ("env.step(True)", lambda: _stepped(True), TypeError, "integer index"),
    ("env.step(99)", lambda: _stepped(99), ValueError, "outside Discrete(7)"),
    # einsum specs and arrays
    (
        "einsum non-ASCII letter",
        lambda: looptune.contraction("m\u00e9,\u00e9k->mk", {"m": 2, "\u00e9": 3, "k": 4}),
        ValueError,
        "ASCII",
    ),
    (
        "computation header non-ASCII",
        lambda: looptune.parse_computation("contraction m\u00e9,\u00e9k->mk m=2 \u00e9=3 k=4"),
        ValueError,
        "ASCII",
    ),
    (
        "big-endian float32 array",
        lambda: _kernel()(np.ones((16, 16), ">f4"), np.ones((16, 16), np.float32)),
        TypeError,
        "native byte order",
    ),
    # schedule text
    (
        "statement line is junk",
        lambda: looptune.LoopTree.parse(MM + "for m in 16  <-\n for k in 4\n  for n in 4\n junk\n"),
        ValueError,
        "expected the statement",
    ),
    (
        "10 MB junk line",
        lambda: looptune.LoopTree.parse(MM + "for m in 16  <-\n" + "x" * 10_000_000 + "\n"),
        ValueError,
        "at most",
    ),
    (
        "a 5000-character line",
        lambda: looptune.LoopTree.parse(MM + "for m in 16  <-" + " " * 5000 + "\n"),
        ValueError,
        "line has at most 4096",
    ),
    (
        "two statements",
        lambda: looptune.LoopTree.parse(
            MM + "for m in 16  <-\n for k in 4\n  for n in 4\n" + STMT + STMT
        ),
        ValueError,
        "expected the statement",
    ),
    (
        "[unroll] on 2^24 iterations",
        lambda: looptune.LoopTree.parse(
            "# matmul m=16777216 k=1 n=1\nfor m in 16777216 [unroll]  <-\n for k in 1\n"
            "  for n in 1\n   C[m,n] += A[m,k] * B[k,n]\n"
        ),
        ValueError,
        "unroll limit is 64",
    ),
    (
        "non-ASCII in a schedule",
        lambda: looptune.LoopTree.parse(MM + "for m in 16  <- \u00e9\n"),
        ValueError,
        "non-ASCII",
    ),
    # bounded reads
    ("show /dev/zero", lambda: load_schedule("/dev/zero"), NotRegularFileError, "not a regular"),
]


@pytest.mark.parametrize(("what", "fn", "exc", "phrase"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_table(what, fn, exc, phrase):
    with pytest.raises(exc) as info:
        fn()
    assert phrase in str(info.value), f"{what}: {info.value}"


def test_float32_dtype_with_metadata_is_accepted():
    dt = np.dtype(np.float32, metadata={"unit": "m"})
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 16)).astype(dt)
    b = rng.standard_normal((16, 16)).astype(dt)
    np.testing.assert_allclose(_kernel()(a, b), a @ b, rtol=1e-5, atol=1e-5)


def test_env_step_takes_numpy_integers():
    env = _env()
    env.reset(seed=0)
    env.step(np.int64(1))
    env.step(np.array(0))
    assert env.steps == 2


def test_large_schedule_file_and_fifo_are_refused_without_reading(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(2 << 20)  # sparse 2 MiB
    with pytest.raises(FileTooLargeError, match="more than the limit"):
        load_schedule(big)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError):  # would block forever if it were opened
        load_schedule(fifo)


def test_cli_show_dev_zero(capsys):
    assert cli.main(["show", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_missing_env_id_fails_before_loading(tmp_path):
    import json
    import shutil

    from looptune.agent.policy import PolicyFormatError, default_policy_path, load_policy

    src = default_policy_path("avx512")
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    meta = json.loads(src.with_suffix(".json").read_text())
    del meta["env_id"]
    dst.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(PolicyFormatError, match="has no 'env_id'"):
        load_policy(dst)


def test_interrupt_stops_benchmark_and_peak_loops():
    """A SIGALRM handler raising KeyboardInterrupt 0.2 s in stops a 60 s timing loop (the C++
    loops poll Python's signal handlers); without polling the call would return normally."""
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        for call in (
            lambda: _kernel().benchmark(min_time=60, max_runs=10**8),
            lambda: looptune.measure_peak_gflops(min_time=60),
        ):
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(KeyboardInterrupt):
                call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_concurrent_reader_never_sees_a_partial_schedule(tmp_path):
    path = tmp_path / "s.txt"
    trees = [
        looptune.matmul(64, 64, 64).default_schedule(),
        looptune.matmul(64, 64, 64).default_schedule().split(16).down().split(4),
    ]
    texts = {t.dump().rstrip("\n") + "\n" for t in trees}
    save_schedule(trees[0], path)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            save_schedule(trees[i % 2], path)
            i += 1

    seen: set[str] = set()
    th = threading.Thread(target=writer)
    th.start()
    try:
        for _ in range(3000):
            seen.add(path.read_text())
    finally:
        stop.set()
        th.join()
    assert seen <= texts  # never empty, never partial
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_gym_make_with_bad_actions_fails_at_construction():
    with pytest.raises(ValueError, match="split_<N>"):
        gym.make("LoopTune-v0", actions=["split_0"], peak_gflops=100.0)


def test_cli_refuses_an_oversized_matmul_before_tuning(capsys):
    assert cli.main(["tune", "matmul", "32768", "32768", "32767", "--search", "random"]) == 2
    err = capsys.readouterr().err
    assert "GiB of buffers" in err and "tuning" not in err
