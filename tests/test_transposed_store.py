"""The transposed accumulator store: a blocked conv output lands in the user's NCHW layout
straight from registers (in-register transposes, masked partial runs), on both ISAs; the copy
pass remains for what it cannot store (a partial channel block, accumulators reloaded across an
outer reduction loop)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
from isas import ISA_PARAMS

import looptune
from looptune.fuzz import GuardedArrays
from looptune.measure.reference import check_tree, expected, random_inputs, reduction_length
from looptune.space.schedules import from_steps, tilings

# (n, c, h, w, k, r, s, stride, pad, block): odd sizes, every channel block full
FULL_BLOCKS = [
    (1, 3, 7, 7, 16, 3, 3, 1, 1, 16),
    (1, 3, 7, 7, 32, 3, 3, 2, 3, 16),
    (2, 5, 9, 11, 48, 2, 3, 3, 2, 16),
    (1, 3, 13, 9, 24, 1, 1, 1, 0, 8),
    (1, 1, 15, 15, 16, 4, 4, 2, 0, 8),
    (2, 4, 7, 7, 32, 3, 3, 1, 0, 8),
]


def conv(args: tuple[int, ...]) -> looptune.Computation:
    *shape, block = args
    return looptune.conv2d(*shape, layout=f"blocked{block}")


def run_guarded(kernel: looptune.Kernel, comp: looptune.Computation, seed: int) -> np.ndarray:
    """Runs the kernel on buffers followed by a PROT_NONE page (an overrun faults)."""
    a, b = random_inputs(comp, seed)
    mem = GuardedArrays()
    try:
        out = mem.array(tuple(comp.output.shape), np.full(comp.output.shape, np.nan))
        return np.array(kernel(mem.array(a.shape, a), mem.array(b.shape, b), out))
    finally:
        mem.close()


def assert_matches(kernel: looptune.Kernel, comp: looptune.Computation, seed: int = 0) -> None:
    a, b = random_inputs(comp, seed)
    got = run_guarded(kernel, comp, seed)
    err = float(np.max(np.abs(got - expected(comp, a, b))))
    assert np.all(np.isfinite(got)) and err <= 1e-5 + 2e-6 * reduction_length(comp), err


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("args", FULL_BLOCKS, ids=lambda a: "_".join(map(str, a)))
def test_hand_tilings_store_transposed_and_match_numpy(args: tuple[int, ...], isa: str) -> None:
    comp = conv(args)
    trees = tilings(comp, isa)
    assert trees
    for tree in trees[:10]:
        kernel = tree.compile(isa)
        # every hand tiling keeps its accumulators across c, r, s: the output is written once
        assert kernel.facts["zero_init"] and kernel.facts["out_transposed"]
        assert_matches(kernel, comp)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("args", FULL_BLOCKS[:4], ids=lambda a: "_".join(map(str, a)))
def test_random_schedules_of_blocked_outputs_match_numpy(
    args: tuple[int, ...], isa: str, random_walk: Callable[..., looptune.LoopTree]
) -> None:
    comp = conv(args)
    rng = random.Random(f"{comp.name}{isa}")
    transposed = 0
    for trial in range(25):
        tree = random_walk(comp.default_schedule(), rng, rng.randint(0, 25))
        kernel = tree.compile(isa)
        transposed += kernel.facts["out_transposed"]
        assert_matches(kernel, comp, seed=trial)
    # walks from a base schedule that writes each output once reach transposed stores
    assert transposed > 0 or not comp.default_schedule().compile(isa).facts["zero_init"]


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_partial_channel_block_keeps_the_copy_pass(isa: str) -> None:
    comp = looptune.conv2d(1, 3, 7, 7, 20, 3, 3, stride=2, pad=1, layout="blocked16")
    kernel = comp.default_schedule().compile(isa)
    assert kernel.facts["vectorized"] and not kernel.facts["out_transposed"]
    assert_matches(kernel, comp)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_reloaded_accumulators_keep_the_copy_pass(isa: str) -> None:
    # c outside the spatial loops: each output vector is loaded and stored once per channel
    comp = looptune.conv2d(1, 3, 7, 7, 32, 3, 3, stride=1, pad=1, layout="blocked16")
    loops = [("n", 1), ("c", 1), ("ko", 1), ("oh", 1), ("r", 1), ("s", 1), ("ow", 1), ("ki", 1)]
    kernel = from_steps(comp, loops).compile(isa)
    assert not kernel.facts["zero_init"] and not kernel.facts["out_transposed"]
    assert_matches(kernel, comp)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_scalar_code_writes_the_users_layout(isa: str) -> None:
    comp = looptune.conv2d(1, 3, 7, 7, 16, 3, 3, stride=3, pad=2, layout="blocked16")
    loops = [("n", 1), ("ko", 1), ("ki", 1), ("oh", 1), ("c", 1), ("r", 1), ("s", 1), ("ow", 1)]
    tree = from_steps(comp, loops)
    kernel = tree.compile(isa)
    assert kernel.facts["lanes"] == 1
    assert check_tree(tree, isa=isa).ok
    assert_matches(kernel, comp)
