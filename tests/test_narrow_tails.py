"""Partial vectors (a tile's last columns, fewer than the vector width) are computed with
narrow FMAs (xmm for <= 4 floats, ymm for <= 8 on AVX-512): the results must stay exact for
every tail width, in plain and batched matmuls, in conv2d, with the operand read from memory
(embedded broadcast) or from a register, and with the tile's register accumulators reused
across the reduction."""

from __future__ import annotations

import pytest

import looptune
from looptune.agent import tiler
from looptune.measure.reference import check_tree
from looptune.space.schedules import from_steps


def _lanes(isa: str) -> int:
    return 16 if isa == "avx512" else 8


def test_every_tail_width_of_a_register_tile_is_exact(cpu_isa):
    lanes = _lanes(cpu_isa)
    for tail in range(1, lanes + 1):
        n = lanes + tail  # one full vector and a tail of `tail` floats
        for mi in (1, 3, 6):
            comp = looptune.matmul(13, 37, n, layout="plain")
            tree = from_steps(comp, [("m", mi), ("n", n), ("k", 1), ("m", 1), ("n", 1)])
            check = check_tree(tree, seed=tail, isa=cpu_isa)
            assert check.ok, (cpu_isa, tail, mi, check)


@pytest.mark.parametrize(
    "shape", [(6, 100, 72, 130), (4, 33, 65, 17), (3, 127, 129, 100), (8, 50, 40, 12),
              (2, 61, 255, 47), (5, 7, 3, 2)]
)
def test_batched_matmul_macros_with_tails_are_exact(cpu_isa, shape):
    comp = looptune.batch_matmul(*shape)
    trees = tiler.candidates(comp, cpu_isa)
    assert len(trees) > 1
    for tree in trees:
        check = check_tree(tree, isa=cpu_isa)
        assert check.ok, (shape, tree.dump(), check)


def test_conv_and_einsum_tails_are_exact(cpu_isa):
    for comp in (
        looptune.conv2d(1, 5, 9, 11, 19, 3, 3, stride=1, pad=1),
        looptune.conv2d(2, 3, 7, 7, 6, 2, 2, stride=2, pad=0),
        looptune.contraction("bmk,bkn->bmn", b=3, m=9, k=21, n=lanes_plus(cpu_isa, 3)),
    ):
        for tree in [comp.default_schedule(), *tiler.candidates(comp, cpu_isa)[:12]]:
            check = check_tree(tree, isa=cpu_isa)
            assert check.ok, (comp.name, tree.dump(), check)


def lanes_plus(isa: str, extra: int) -> int:
    return _lanes(isa) + extra
