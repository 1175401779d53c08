"""Reduction vectorization: a reduction loop that is stride 1 in the inputs is the vector loop,
with partial sums per lane and a horizontal sum at the store (GEMV, skinny N)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
from isas import ISA_PARAMS

import looptune
from looptune.measure.reference import check_tree, random_inputs

LANES = {"avx512": 16, "avx2": 8}


def k_innermost(m: int, k: int) -> looptune.LoopTree:
    """matmul(m, k, 1) scheduled as m, n, k: the reduction is the innermost loop."""
    return looptune.matmul(m, k, 1).default_schedule().down().swap_down()


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("m,k", [(1, 1), (3, 5), (7, 16), (5, 17), (13, 131), (4, 300), (2, 1000)])
def test_gemv_reduction_is_vectorized_and_exact(m: int, k: int, isa: str) -> None:
    tree = k_innermost(m, k)
    assert [looptune_var(tree, i) for i in range(3)] == ["m", "n", "k"]
    kernel = tree.compile(isa)
    assert kernel.facts["reduction_vectorized"] and kernel.facts["lanes"] == LANES[isa]
    a, b = random_inputs(tree.computation, seed=k)
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(kernel(a, b), want, rtol=1e-5, atol=1e-5 + 2e-6 * k)


def looptune_var(tree: looptune.LoopTree, i: int) -> str:
    return tree.loops[i].var


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_split_reduction_accumulates_into_the_output(isa: str) -> None:
    # k split with a tail, its outer loop moved above m: the output is zeroed, then added to.
    tree = k_innermost(40, 1000).split(210).swap_up().swap_up()
    assert [looptune_var(tree, i) for i in range(4)] == ["k", "m", "n", "k"]
    kernel = tree.compile(isa)
    assert kernel.facts["reduction_vectorized"] and not kernel.facts["zero_init"]
    a, b = random_inputs(tree.computation, seed=3)
    out = np.full((40, 1), 5.0, np.float32)  # stale values must not leak in
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(kernel(a, b, out), want, rtol=1e-5, atol=3e-3)


def test_novec_annotation_keeps_the_reduction_scalar() -> None:
    tree = k_innermost(4, 64).toggle_vectorize()
    kernel = tree.compile()
    assert not kernel.facts["reduction_vectorized"] and kernel.facts["lanes"] == 1


def test_output_stride_one_loop_is_not_a_reduction_vector() -> None:
    # n innermost (stride 1 in B and C): the ordinary vector loop, not a reduction one.
    facts = looptune.matmul(4, 64, 32).default_schedule().compile().facts
    assert facts["vectorized"] and not facts["reduction_vectorized"]


REDUCTION_OPS = [
    looptune.matmul(33, 70, 1),
    looptune.matmul(1, 45, 1),
    looptune.contraction("mk,k->m", {"m": 19, "k": 53}),
    looptune.contraction("bmk,bk->bm", {"b": 3, "m": 7, "k": 37}),
    looptune.contraction("ik,jk->ij", {"i": 5, "j": 6, "k": 41}),
    looptune.conv2d(1, 3, 7, 7, 5, 3, 3, stride=1, pad=1),
]


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("comp", REDUCTION_OPS, ids=lambda c: c.name)
def test_random_schedules_with_reduction_vectors_match_numpy(
    comp: looptune.Computation, isa: str, random_walk: Callable[..., looptune.LoopTree]
) -> None:
    rng = random.Random(comp.name + isa)
    reduced = 0
    for trial in range(30):
        tree = random_walk(comp.default_schedule(), rng, rng.randint(0, 25))
        # move a reduction loop innermost half the time
        if trial % 2 and not is_reduction(comp, tree.loops[-1].var):
            tree = tree_with_reduction_innermost(tree)
        result = check_tree(tree, seed=trial, isa=isa)
        assert result.ok, f"{result}\n{tree.dump()}"
        reduced += tree.compile(isa).facts["reduction_vectorized"]
    assert reduced >= 3


def tree_with_reduction_innermost(tree: looptune.LoopTree) -> looptune.LoopTree:
    """Swap the innermost loop up past loops until a reduction loop is innermost (if legal)."""
    comp = tree.computation
    for i in range(len(tree.loops) - 2, -1, -1):
        if is_reduction(comp, tree.loops[i].var):
            t = tree
            while t.cursor < i:
                t = t.down()
            while t.cursor > i:
                t = t.up()
            for _ in range(len(tree.loops) - 1 - i):
                nxt = t.try_apply("swap_down")
                if nxt is None:
                    break
                t = nxt
            if is_reduction(comp, t.loops[-1].var):
                return t
    return tree


def is_reduction(comp: looptune.Computation, name: str) -> bool:
    return next(v.reduction for v in comp.vars if v.name == name)
