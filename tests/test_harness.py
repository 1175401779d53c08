"""The one timing harness (looptune.measure.harness): every entrant timed the same way.

No wall-clock thresholds: each timing assertion compares two figures taken by the harness in
the same process, one right after the other, with a generous relative tolerance (a loaded
machine slows both; best-of batches keeps the figures near their floor)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import looptune
from looptune.measure import harness
from looptune.measure.reference import expected, random_inputs

MIN_TIME = 0.03


def _kernel(n: int = 16) -> looptune.Kernel:
    # 16^3: ~0.3 µs a call, most of it the call itself, so timing the kernel alone (in C++, a
    # special path) reads ~4x faster, while one more Python frame (the plain callable's
    # lambda, ~0.03 µs) stays well inside the tolerance (measured: ratio ~0.91)
    return looptune.matmul(n, n, n).default_schedule().compile()


def test_looptune_kernel_and_same_work_as_plain_callable_report_equal_time():
    """A looptune kernel timed by the harness, and the same work handed to the harness as a
    plain Python callable entrant, report the same time: looptune gets no special path."""
    kernel = _kernel()
    comp = kernel.tree.computation
    plain = harness.callable_entrant(lambda a, b, out: kernel(a, b, out=out))
    ratios = []
    for _ in range(3):  # interleaved, best ratio to 1: a burst of load hits one figure only
        k = harness.time_kernel(kernel, min_time=MIN_TIME)
        p = harness.time_entrant(comp, plain, "plain", min_time=MIN_TIME)
        ratios.append(k.seconds / p.seconds)
    closest = min(ratios, key=lambda r: abs(math.log(r)))
    assert 0.75 < closest < 1.33, ratios


def test_noop_entrant_reports_less_time_than_real_work():
    """A no-op entrant costs the harness's per-call overhead only: far less than a kernel
    of 128^3 multiply-adds (the harness does not add a floor to every figure)."""
    kernel = _kernel(128)
    comp = kernel.tree.computation
    noop = harness.time_entrant(comp, harness.callable_entrant(lambda a, b, out: None), "noop",
                                min_time=MIN_TIME, check=False)
    k = harness.time_kernel(kernel, min_time=MIN_TIME)
    assert noop.seconds < k.seconds / 5, (noop.seconds, k.seconds)


def test_harness_never_times_a_kernel_faster_than_the_kernel_alone():
    """The Python call includes the kernel: the harness's figure is not below the in-C++
    timing of the same kernel (tolerance for noise between the two timings)."""
    kernel = _kernel(128)
    cpp = kernel.benchmark(min_time=MIN_TIME).min_seconds
    k = harness.time_kernel(kernel, min_time=MIN_TIME)
    assert k.seconds > 0.7 * cpp, (k.seconds, cpp)


def test_a_wrong_entrant_is_reported_not_timed_as_ok():
    comp = looptune.matmul(16, 16, 16)
    wrong = harness.callable_entrant(lambda a, b, out: out.fill(1.0))
    t = harness.time_entrant(comp, wrong, "wrong", min_time=0.0, min_runs=1)
    assert not t.ok and t.max_abs_error > t.tolerance


@pytest.mark.parametrize(
    "comp",
    [
        looptune.matmul(24, 40, 56),
        looptune.batch_matmul(2, 8, 16, 24),
        looptune.conv2d(1, 4, 9, 9, 8, 3, 3, stride=2, pad=1),
        looptune.conv2d(1, 4, 8, 8, 8, 1, 1),
        looptune.contraction("mk,kn->mn", {"m": 8, "k": 12, "n": 16}),
    ],
    ids=lambda c: c.name,
)
def test_numpy_and_looptune_entrants_compute_the_reference(comp):
    """Every entrant writes the right result into the preallocated output."""
    for t in (harness.time_numpy(comp, min_time=0.0, min_runs=1),
              harness.time_kernel(comp.default_schedule(), min_time=0.0, min_runs=1)):
        assert t.ok, t
        assert t.timing == harness.TIMING and t.threads == 1
    a, b = random_inputs(comp)
    out = np.full(comp.output.shape, np.nan, np.float32)
    factory, _ = harness.numpy_entrant(comp)
    factory(a, b, out)()
    np.testing.assert_allclose(out, expected(comp, a, b), atol=1e-4)


def test_bad_arguments_raise():
    comp = looptune.matmul(8, 8, 8)
    with pytest.raises(ValueError):
        harness.time_entrant(comp, harness.callable_entrant(lambda a, b, o: None), "x",
                             allocations=0)
    with pytest.raises(ValueError):
        harness.time_call(lambda: None, min_runs=0)


def test_every_entrant_gets_the_same_aligned_allocations():
    from looptune.measure.harness import ALIGN_OFFSETS, at_offset, time_entrant

    x = np.arange(37, dtype=np.float32).reshape(37)
    for off in (0, 4, 16, 32, 48):
        y = at_offset(x, off)
        assert y.ctypes.data % 64 == off and np.array_equal(x, y) and y.flags.c_contiguous
    seen = []

    def factory(a, b, out):
        seen.append((a.ctypes.data % 64, b.ctypes.data % 64, out.ctypes.data % 64))
        return lambda: np.matmul(a, b, out=out)

    comp = looptune.matmul(8, 8, 8)
    t = time_entrant(comp, factory, "np", min_time=0.0, min_runs=1)
    assert seen == [(o, o, o) for o in ALIGN_OFFSETS]
    assert t.allocations == len(ALIGN_OFFSETS) == len(t.allocation_gflops)
