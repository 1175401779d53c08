"""Narrow-n matmuls: the default layout transposes B (block 1) and the tile macros vectorize the
k reduction; every such kernel computes numpy's answer."""

from __future__ import annotations

import numpy as np
import pytest

import looptune
from looptune.agent import tiler
from looptune.agent.tile_features import vector_var
from looptune.measure.reference import random_inputs
from looptune.space import schedules

LANES = int(looptune._core.isa_facts()["lanes"])  # the host's: the "auto" layout follows it


@pytest.mark.parametrize("n", [n for n in range(2, 2 * LANES) if n % LANES])
def test_auto_layout_transposes_b_for_a_narrow_n(n: int) -> None:
    comp = looptune.matmul(37, LANES, n)
    assert comp.block == 1
    assert comp.name == f"mm37_{LANES}_{n}_b1"
    assert [v.name for v in comp.vars] == ["m", "no", "k", "ni"]
    assert comp.inputs[1].strides == {"m": 0, "no": LANES, "k": 1, "ni": 1}  # B as [N][K]


@pytest.mark.parametrize(
    "m,k,n",
    [(37, 64, 1), (37, 64, LANES), (37, 64, 2 * LANES), (37, LANES - 1, 3),
     (37, 64, 2 * LANES + 1)],
)
def test_auto_layout_keeps_b_otherwise(m: int, k: int, n: int) -> None:
    """GEMV (n = 1), whole vectors of n, a reduction shorter than a vector, a wide n."""
    assert looptune.matmul(m, k, n).block == 0
    assert looptune.matmul(m, 64, 3, layout="plain").block == 0


def test_narrow_macros_vectorize_the_reduction() -> None:
    comp = looptune.matmul(300, 200, 5)
    assert vector_var(comp) == "k"
    trees = tiler.candidates(comp, "avx2")
    assert len(trees) > 5
    for tree in trees[1:]:  # after the base schedule: ni, m, no, k, m', no', k'
        assert [lp.var for lp in tree.loops] == ["ni", "m", "no", "k", "m", "no", "k"]
    steps = {(t.loops[4].size, t.loops[5].size, t.loops[3].size * t.loops[6].size)
             for t in trees[1:]}
    assert (4, 3, 200) in steps  # a 4 x 3 tile of outputs, k in one vector per output


@pytest.mark.parametrize("m,k,n", [(1, 8, 3), (7, 13, 2), (29, 131, 5), (64, 40, 11), (5, 300, 15)])
def test_every_transposed_tiling_is_exact(m: int, k: int, n: int, cpu_isa: str) -> None:
    comp = looptune.matmul(m, k, n, layout="blocked1")
    a, b = random_inputs(comp, seed=m * n)
    want = a.astype(np.float64) @ b.astype(np.float64)
    trees = list(schedules.transposed_matmul_tilings(comp, cpu_isa))
    assert trees
    for tree in trees:
        kernel = tree.compile(cpu_isa)
        assert kernel.facts["reduction_vectorized"]
        np.testing.assert_allclose(kernel(a, b), want, rtol=1e-5, atol=1e-5 + 2e-6 * k)
