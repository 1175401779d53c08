"""Inputs the executor re-lays out: rows one cache line longer for large, heavily reused inputs
whose rows alias in the cache (conv padding is covered in test_computation/test_kernel_api)."""

from __future__ import annotations

import random

import numpy as np
import pytest

import looptune


def test_matmul_b_of_512_floats_rows_gets_longer_rows():
    a, b = looptune.matmul(512, 512, 512).inputs
    assert a.alloc_shape == a.shape == (512, 512)  # k walks along A's rows: no aliasing
    assert b.shape == (512, 512) and b.alloc_shape == (512, 528)
    assert b.strides == {"m": 0, "k": 528, "n": 1} and b.pad == (0, 0)


@pytest.mark.parametrize(
    "comp",
    [
        looptune.matmul(256, 256, 256),  # B is 256 KiB: fits the budget, left alone
        looptune.matmul(32, 512, 512),  # B reused only 32 times: the copy would not pay
        looptune.matmul(128, 512, 500),  # rows of 2000 bytes spread over the cache sets
        looptune.contraction("mk,nk->mn", {"m": 128, "k": 512, "n": 512}),  # k runs along rows
    ],
    ids=lambda c: c.name,
)
def test_no_relayout_where_it_would_not_help(comp):
    for t in comp.inputs:
        assert t.alloc_shape == t.shape


def test_repeated_letter_strides_stay_consistent():
    # B[j, k, j] (a diagonal in j): k walks down rows of 128 floats, so rows become 144 long
    comp = looptune.contraction("ik,jkj->ij", {"i": 64, "k": 8, "j": 128})
    b = comp.inputs[1]
    assert b.alloc_shape == (128, 8, 144)
    assert b.strides == {"i": 0, "k": 144, "j": 8 * 144 + 1}


RELAID = [
    looptune.matmul(96, 384, 512),
    looptune.batch_matmul(2, 64, 256, 512),
    looptune.contraction("ik,jkj->ij", {"i": 64, "k": 8, "j": 128}),
]


@pytest.mark.parametrize("comp", RELAID, ids=lambda c: c.name)
def test_relaid_out_inputs_compute_numpy_results(comp, random_walk):
    assert comp.inputs[1].alloc_shape != comp.inputs[1].shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal(comp.inputs[0].shape, dtype=np.float32)
    b = rng.standard_normal(comp.inputs[1].shape, dtype=np.float32)
    b_before = b.copy()
    ref = np.einsum(comp.spec, a, b)
    red = int(np.prod([v.extent for v in comp.vars if v.reduction]))
    walker = random.Random(comp.name)
    for steps in (0, 8, 16, 24):
        tree = random_walk(comp.default_schedule(), walker, steps)
        kernel = tree.compile()
        np.testing.assert_allclose(
            kernel(a, b), ref, rtol=1e-4, atol=1e-4 * red**0.5, err_msg=tree.dump()
        )
        assert kernel.benchmark(0.001).gflops > 0
    np.testing.assert_array_equal(b, b_before)  # the copy is the executor's, never the user's
