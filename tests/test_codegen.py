"""Every generated kernel equals numpy, whatever the schedule (issue 2: the heart of the JIT).

Random legal schedules (splits with tails, swaps, merges, unroll/vectorize toggles) over every
op and odd sizes, on both ISAs the CPU supports. The tolerance grows with the reduction length.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from isas import ISA_PARAMS

import looptune
from looptune.measure.reference import check_tree, random_inputs
from looptune.space.actions import RICH_ACTIONS

OPS = [
    looptune.matmul(1, 1, 1),
    looptune.matmul(1, 3, 17),
    looptune.matmul(67, 131, 3),
    looptune.matmul(17, 67, 131),
    looptune.matmul(64, 64, 64),
    looptune.matmul(96, 80, 112),
    looptune.matmul(1, 300, 1000),
    looptune.batch_matmul(3, 17, 5, 33),
    looptune.conv2d(1, 3, 9, 7, 4, 3, 3, stride=1, pad=1),
    looptune.conv2d(2, 5, 8, 8, 3, 3, 3, stride=2, pad=0),
    looptune.conv2d(1, 8, 6, 6, 16, 1, 1, stride=1, pad=0),
    looptune.contraction("abc,cd->abd", a=2, b=5, c=7, d=9),
    looptune.contraction("ik,jk->ij", i=13, j=31, k=19),
    looptune.contraction("m,n->mn", m=5, n=37),
    looptune.contraction("bij,bjk->bik", b=2, i=9, j=18, k=40),
]


def random_schedule(
    comp: looptune.Computation, rng: random.Random, steps: int
) -> looptune.LoopTree:
    tree = comp.default_schedule()
    for _ in range(steps):
        nxt = tree.try_apply(rng.choice(RICH_ACTIONS))
        if nxt is not None:
            tree = nxt
    return tree


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("comp", OPS, ids=lambda c: c.name)
def test_random_schedules_match_numpy(comp: looptune.Computation, isa: str) -> None:
    rng = random.Random(comp.name + isa)
    for trial in range(30):
        tree = random_schedule(comp, rng, steps=rng.randint(0, 25))
        result = check_tree(tree, seed=trial, isa=isa)
        assert result.ok, f"{result}\n{tree.dump()}"


def tiled(m: int, k: int, n: int, mi: int, ni: int) -> looptune.LoopTree:
    """m_o, n_o, k, m_i, n_i: the register-tiled schedule."""
    tree = looptune.matmul(m, k, n).default_schedule()
    return tree.split(mi).down().down().down().split(ni).swap_up().swap_up().down().swap_down()


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize(
    "shape",
    [
        (128, 64, 256, 6, 64),
        (67, 45, 131, 6, 32),
        (50, 7, 70, 4, 16),
        (12, 256, 48, 12, 48),
        (65, 33, 100, 8, 24),
    ],
)
def test_register_tiled_matmul(shape: tuple[int, ...], isa: str) -> None:
    tree = tiled(*shape)
    kernel = tree.compile(isa)
    a, b = random_inputs(tree.computation, seed=1)
    np.testing.assert_allclose(kernel(a, b), a @ b, rtol=1e-4, atol=1e-4 * shape[1] ** 0.5)


# A 6-row register tile: 6 x 4 zmm accumulators (n_i=64) of 32, 6 x 2 ymm (n_i=16) of 16.
TILE_FACTS = {"avx512": (64, 16, 24), "avx2": (16, 8, 12)}


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_tile_facts_describe_the_code(isa: str) -> None:
    ni, lanes, accumulators = TILE_FACTS[isa]
    facts = tiled(128, 64, 256, 6, ni).compile(isa).facts
    assert facts["vectorized"] and facts["lanes"] == lanes
    assert facts["tile_accumulators"] == accumulators and facts["zero_init"]
    assert facts["accumulators_hoisted"] and facts["hoisted_loops"] == 1
    assert facts["fma"] >= 24 and facts["code_bytes"] > 0 and facts["spills"] == 0


def test_novec_annotation_forces_scalar_code() -> None:
    tree = looptune.matmul(8, 8, 32).default_schedule().down().down().toggle_vectorize()
    kernel = tree.compile()
    assert not kernel.facts["vectorized"] and kernel.facts["lanes"] == 1
    a, b = random_inputs(tree.computation)
    np.testing.assert_allclose(kernel(a, b), a @ b, rtol=1e-5, atol=1e-5)


def test_unroll_annotation_is_honoured_and_correct() -> None:
    tree = looptune.matmul(4, 64, 256).default_schedule().toggle_unroll()  # m outside the tile
    kernel = tree.compile()
    assert kernel.facts["unrolled_loops"] >= 1
    a, b = random_inputs(tree.computation)
    np.testing.assert_allclose(kernel(a, b), a @ b, rtol=1e-5, atol=1e-5)


def test_kernel_reuses_output_buffer_without_stale_values() -> None:
    # k outermost: the kernel must zero C itself before accumulating
    tree = looptune.matmul(16, 8, 16).default_schedule().swap_down()
    a, b = random_inputs(tree.computation)
    out = np.full((16, 16), 7.0, np.float32)
    np.testing.assert_allclose(tree.compile()(a, b, out), a @ b, rtol=1e-5, atol=1e-5)


def test_benchmark_reports_sane_timings() -> None:
    r = looptune.matmul(64, 64, 64).default_schedule().compile().benchmark(0.005, 3, 1000)
    assert r.runs >= 3 and 0 < r.min_seconds <= r.median_seconds
    assert r.gflops == pytest.approx(2 * 64**3 / r.min_seconds / 1e9)


def test_measured_peak_is_plausible() -> None:
    peak = looptune.measure_peak_gflops()
    assert 5 < peak < 2000


def test_assembly_lists_fma_instructions() -> None:
    asm = looptune.matmul(8, 8, 32).default_schedule().compile("avx2").assembly
    assert "vfmadd231ps" in asm


def test_debug_env_var_dumps_tree_and_assembly() -> None:
    import os
    import subprocess
    import sys

    code = "import looptune; looptune.matmul(4, 4, 32).default_schedule().compile('avx2')"
    env = {**os.environ, "LOOPTUNE_DEBUG": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "for n in 32" in out.stderr and "vfmadd231ps" in out.stderr
