"""Parallel loops and the thread pool: the IR mark, its legality, bit-identical results at any
thread count, the thread-count setting, timing keys, and living beside PyTorch."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import walk

import looptune
from looptune import _core
from looptune.fuzz import mark_parallel
from looptune.measure import Budget, FakeRunner, Measurer, RecordStore
from looptune.space import ScheduleSpace, at_cursor
from looptune.space.actions import PAPER_ACTIONS, RICH_ACTIONS

PYTHON = sys.executable
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts and ends at the default of one thread."""
    _core.set_num_threads(1)
    yield
    _core.set_num_threads(1)


def inputs(comp: looptune.Computation, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in comp.inputs)
    return a, b


def run_at(kernel: looptune.Kernel, a: np.ndarray, b: np.ndarray, threads: int) -> np.ndarray:
    _core.set_num_threads(threads)
    try:
        return kernel(a, b)
    finally:
        _core.set_num_threads(1)


# ---------------------------------------------------------------- the IR mark


def test_parallel_mark_dump_parse_hash_round_trip() -> None:
    base = looptune.matmul(67, 33, 45).default_schedule()
    tree = base.toggle_parallel()
    assert tree.parallel_loop == 0 and base.parallel_loop is None
    assert [lp.parallel for lp in tree.loops] == [True, False, False]
    assert "for m in 67 [parallel]  <-" in tree.dump()
    back = looptune.LoopTree.parse(tree.dump())
    assert back == tree and back.hash() == tree.hash() and back.parallel_loop == 0
    assert tree.hash() != base.hash() and tree != base
    assert pickle.loads(pickle.dumps(tree)) == tree
    assert tree.toggle_parallel() == base  # the toggle is its own inverse
    # trees without a mark hash as before parallel loops existed (records stay valid)
    assert looptune.matmul(64, 64, 64).default_schedule().hash() == 0x5D6B52E42B9D2A6E


def test_mark_moves_with_swaps_and_survives_split_on_the_outer_loop() -> None:
    tree = looptune.matmul(64, 32, 48).default_schedule().toggle_parallel()
    split = tree.split(4)
    assert [lp.parallel for lp in split.loops] == [True, False, False, False]
    swapped = tree.swap_down()  # m moves below k, the mark with it
    assert swapped.loops[1].var == "m" and swapped.parallel_loop == 1
    # merging the parallel loop into the loop below drops the mark
    assert split.merge().parallel_loop is None


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda t: t.down().toggle_parallel(), "reduction"),  # k
        (lambda t: t.down().down().toggle_parallel(), "innermost"),  # n
        (lambda t: t.toggle_parallel().down().swap_down().up().up().swap_down().swap_down(),
         "innermost"),
        (lambda t: t.split(4).toggle_parallel().down().toggle_parallel(), "already parallel"),
    ],
)
def test_illegal_parallel_marks_raise(make, why: str) -> None:
    tree = looptune.matmul(64, 32, 48).default_schedule()
    with pytest.raises(looptune.IllegalActionError, match=why):
        make(tree)


def test_swaps_that_would_make_the_parallel_loop_innermost_are_masked() -> None:
    # m k n -> parallel n? no: mark m, move it to the middle; swapping it down is illegal
    tree = looptune.matmul(64, 32, 48).default_schedule().toggle_parallel().swap_down()
    assert tree.cursor == 1 and tree.parallel_loop == 1
    mask, reasons = tree.legality(["swap_down", "parallel"], 10)
    assert not mask[0] and "innermost" in reasons[0]
    assert mask[1]  # turning the mark off
    inner = at_cursor(tree, 2)
    assert not inner.is_legal("swap_up")


@pytest.mark.parametrize(
    "dump, match",
    [
        ("# matmul m=8 k=4 n=8\nfor m in 8\n for k in 4 [parallel]  <-\n  for n in 8\n"
         "   C[m,n] += A[m,k] * B[k,n]\n", "reduction"),
        ("# matmul m=8 k=4 n=8\nfor m in 8  <-\n for k in 4\n  for n in 8 [parallel]\n"
         "   C[m,n] += A[m,k] * B[k,n]\n", "innermost"),
        ("# matmul m=8 k=4 n=8\nfor m in 2 [parallel]  <-\n for m' in 4 [parallel]\n"
         "  for k in 4\n   for n in 8\n    C[m,n] += A[m,k] * B[k,n]\n", "at most one"),
        ("# matmul m=8 k=4 n=8\nfor m in 8 [parallel] [parallel]  <-\n for k in 4\n"
         "  for n in 8\n   C[m,n] += A[m,k] * B[k,n]\n", "unexpected"),
    ],
)
def test_parse_rejects_illegal_marks(dump: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        looptune.LoopTree.parse(dump)


def test_action_sets_and_space_masks() -> None:
    assert "parallel" in RICH_ACTIONS and "parallel" not in PAPER_ACTIONS
    space = ScheduleSpace("rich")
    tree = looptune.matmul(64, 32, 48).default_schedule()
    i = space.index("parallel")
    assert space.mask(tree)[i]
    assert not space.mask(tree.down())[i]  # k: a reduction
    assert "reduction" in space.reason(tree.down(), "parallel")
    assert space.apply(tree, "parallel").parallel_loop == 0


# ---------------------------------------------------------------- bit-identical results

LAYOUTS = [
    lambda: looptune.matmul(67, 45, 83),
    lambda: looptune.matmul(96, 70, 100, layout="blocked"),
    lambda: looptune.batch_matmul(3, 17, 9, 33),
    lambda: looptune.conv2d(1, 5, 11, 9, 19, 3, 3, stride=1, pad=1, layout="plain"),
    lambda: looptune.conv2d(2, 6, 10, 10, 24, 3, 3, stride=2, pad=1, layout="blocked"),
    lambda: looptune.contraction("abc,cd->abd", a=3, b=7, c=9, d=21),
]


@pytest.mark.parametrize("make", LAYOUTS)
def test_every_thread_count_gives_the_one_thread_result(make, cpu_isa: str) -> None:
    comp = make()
    a, b = inputs(comp)
    rng = random.Random(comp.name)
    checked = 0
    for _ in range(12):
        tree = mark_parallel(walk(comp.default_schedule(), rng, rng.randint(0, 25)), rng)
        if tree.parallel_loop is None:
            continue
        kernel = tree.compile(cpu_isa)
        want = run_at(kernel, a, b, 1)
        for t in range(2, 9):  # 8 threads on a 2-core machine included
            got = run_at(kernel, a, b, t)
            assert np.array_equal(got, want), (t, tree.dump())
        checked += 1
    assert checked >= 4


def test_parallel_inner_loop_of_a_split_variable_with_tails(cpu_isa: str) -> None:
    # m split 67 = 8*8 + 3: the parallel inner loop has 8 iterations, 3 in the outer tail
    comp = looptune.matmul(67, 33, 45)
    tree = comp.default_schedule().split(8).down().toggle_parallel()
    assert "for m' in 8 [parallel]" in tree.dump()
    a, b = inputs(comp)
    want = a.astype(np.float64) @ b.astype(np.float64)
    kernel = tree.compile(cpu_isa)
    assert kernel.facts["parallel_loop"] == 1 and kernel.facts["parallel_iterations"] == 8
    one = run_at(kernel, a, b, 1)
    np.testing.assert_allclose(one, want, rtol=1e-4, atol=1e-4)
    for t in (2, 3, 5, 8):
        assert np.array_equal(run_at(kernel, a, b, t), one)


def test_relayout_and_accumulating_kernels(cpu_isa: str) -> None:
    # blocked conv (input padding copy, blocked weights and output) with a reduction loop
    # above the tile (the output is zeroed first), parallel over the output-channel blocks
    comp = looptune.conv2d(1, 8, 12, 12, 32, 3, 3, stride=1, pad=1, layout="blocked")
    tree = comp.default_schedule()
    names = [lp.var for lp in tree.loops]
    tree = at_cursor(tree, names.index("ko")).toggle_parallel()
    tree = at_cursor(tree, names.index("c")).swap_up()  # c above oh: accumulate into C
    a, b = inputs(comp, 1)
    kernel = tree.compile(cpu_isa)
    one = run_at(kernel, a, b, 1)
    for t in (2, 4, 7):
        assert np.array_equal(run_at(kernel, a, b, t), one)
    kernel.set_constant(b)
    _core.set_num_threads(3)
    assert np.array_equal(kernel(a), one)


def test_threads_used() -> None:
    comp = looptune.matmul(10, 8, 32)
    serial = comp.default_schedule().compile()
    assert serial.threads_used(8) == 1 and serial.facts["parallel_loop"] == -1
    par = comp.default_schedule().toggle_parallel().compile()
    assert par.threads_used(4) == 4 and par.threads_used(64) == 10
    _core.set_num_threads(3)
    assert par.threads_used() == 3


# ---------------------------------------------------------------- the thread count


def test_set_get_num_threads_and_validation() -> None:
    assert looptune.get_num_threads() == 1
    assert looptune.set_num_threads(2) == 2 and looptune.get_num_threads() == 2
    assert looptune.set_num_threads("all") == len(os.sched_getaffinity(0))
    for bad in (0, -1, 257, "zero", "", "-2"):
        with pytest.raises(ValueError):
            looptune.set_num_threads(bad)
    for bad in (1.5, True, None, [2]):
        with pytest.raises(TypeError):
            looptune.set_num_threads(bad)
    assert looptune.get_num_threads() == len(os.sched_getaffinity(0))  # unchanged by errors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with looptune.num_threads(5) as t:
            assert t == 5 and looptune.get_num_threads() == 5
    assert looptune.get_num_threads() == len(os.sched_getaffinity(0))


def test_more_threads_than_cores_warns() -> None:
    cores = len(os.sched_getaffinity(0))
    with pytest.warns(looptune.ThreadsWarning, match="available core"):
        looptune.set_num_threads(cores + 1)
    assert looptune.get_num_threads() == cores + 1


def test_benchmark_threads_argument() -> None:
    kernel = looptune.matmul(32, 16, 32).default_schedule().toggle_parallel().compile()
    r = kernel.benchmark(min_time=0.0, min_runs=2, max_runs=5, threads=2)
    assert r.runs >= 2 and r.gflops > 0
    for bad in (0, -3, 257):
        with pytest.raises(ValueError, match="threads"):
            kernel.benchmark(threads=bad)
    for bad in ("2", 2.0, True):
        with pytest.raises(TypeError, match="threads"):
            kernel.benchmark(threads=bad)


@pytest.mark.parametrize(
    "value, expected", [("3", "3"), ("all", str(len(os.sched_getaffinity(0)))), ("", "1")]
)
def test_env_var_sets_the_count(value: str, expected: str) -> None:
    out = subprocess.run(
        [PYTHON, "-W", "ignore", "-c", "import looptune; print(looptune.get_num_threads())"],
        env={**ENV, "LOOPTUNE_NUM_THREADS": value}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_bad_env_var_is_a_value_error() -> None:
    out = subprocess.run(
        [PYTHON, "-c", "import looptune"],
        env={**ENV, "LOOPTUNE_NUM_THREADS": "0"}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "ValueError: LOOPTUNE_NUM_THREADS='0'" in out.stderr


# ---------------------------------------------------------------- measurement keys


def test_measurer_keys_and_records_on_threads(tmp_path: Path) -> None:
    tree = looptune.matmul(32, 16, 32).default_schedule().toggle_parallel()
    shared: dict = {}
    runs = FakeRunner(lambda t: 10.0)
    one = Measurer(cache=shared, runner=runs, threads=1)
    two = Measurer(cache=shared, runner=runs, threads=2)
    assert one._key(tree.hash()) != two._key(tree.hash())
    with pytest.raises(ValueError):
        Budget(threads=0)
    with pytest.raises(TypeError):
        Budget(threads="2")
    # real measurements: each record carries its thread count; warm() reads only its own
    path = tmp_path / "records.jsonl"
    m1 = Measurer(cache={}, records=path, min_time=0.0, threads=1)
    m2 = Measurer(cache={}, records=path, min_time=0.0, threads=2)
    assert m1.measure(tree).ok and m2.measure(tree).ok
    assert sorted(r["threads"] for r in RecordStore(path)) == [1, 2]
    warm1, warm3 = Measurer(cache={}, min_time=0.0, threads=1), Measurer(cache={}, min_time=0.0,
                                                                        threads=3)
    assert warm1.warm(RecordStore(path)) == 1 and warm3.warm(RecordStore(path)) == 0
    _core.set_num_threads(2)
    assert Measurer(cache={}).threads == 2  # the default: the process-wide count


# ---------------------------------------------------------------- living beside PyTorch


def test_torch_and_looptune_alternately_and_from_two_python_threads() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96, bias=False)
    x = torch.randn(128, 64)
    comp = looptune.matmul(128, 64, 96)
    kernel = comp.default_schedule().split(4).toggle_parallel().compile()
    a = x.numpy()
    b = np.ascontiguousarray(layer.weight.detach().numpy().T)
    want_lt = kernel(a, b)
    with torch.no_grad():
        want_torch = layer(x).numpy()
    np.testing.assert_allclose(want_lt, want_torch, rtol=1e-4, atol=1e-4)
    _core.set_num_threads(2)
    for _ in range(20):  # alternately, in one thread
        assert np.array_equal(kernel(a, b), want_lt)
        with torch.no_grad():
            assert np.array_equal(layer(x).numpy(), want_torch)
    errors: list[str] = []

    def looptune_calls() -> None:
        for _ in range(200):
            if not np.array_equal(kernel(a, b), want_lt):
                errors.append("looptune")

    def torch_calls() -> None:
        with torch.no_grad():
            for _ in range(200):
                if not np.array_equal(layer(x).numpy(), want_torch):
                    errors.append("torch")

    workers = [threading.Thread(target=f) for f in (looptune_calls, torch_calls, looptune_calls)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers), "deadlock"
    assert errors == []


@pytest.mark.skipif(
    "libtsan" in os.environ.get("LD_PRELOAD", ""),
    reason="ThreadSanitizer does not support starting threads after a multi-threaded fork",
)
def test_fork_child_gets_a_working_pool() -> None:
    kernel = looptune.matmul(64, 32, 48).default_schedule().toggle_parallel().compile()
    a, b = inputs(kernel.tree.computation)
    want = run_at(kernel, a, b, 1)
    _core.set_num_threads(2)
    assert np.array_equal(kernel(a, b), want)  # the parent's pool has a worker now
    pid = os.fork()
    if pid == 0:  # child: the parent's worker does not exist here
        code = 0 if np.array_equal(kernel(a, b), want) else 3
        os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the fork child hung in the thread pool")


CTRL_C = """
import sys, looptune
k = looptune.matmul(256, 256, 256).default_schedule().toggle_parallel().compile()
print("ready", flush=True)
try:
    k.benchmark(min_time=30.0, max_runs=10**8, threads=2)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(7)
"""


def test_ctrl_c_stops_a_threaded_benchmark() -> None:
    proc = subprocess.Popen([PYTHON, "-c", CTRL_C], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=20)  # the benchmark alone would run for 30 s
    finally:
        proc.kill()
    elapsed = time.monotonic() - sent
    assert rc == 7 and proc.stdout.read().strip() == "interrupted"
    assert elapsed < 20
