"""Blocked layouts as part of a computation (conv2d output channels blocked by the vector width,
matmul B packed in column panels) and constant operands packed once."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
from isas import ISA_PARAMS

import looptune
from looptune.measure.reference import check_tree, expected, random_inputs

HOST_LANES = 16 if looptune.host_isa() == "avx512" else 8


def test_blocked_conv_has_block_variables_and_round_trips() -> None:
    c = looptune.conv2d(1, 3, 7, 7, 20, 3, 3, stride=2, pad=1, layout="blocked16")
    assert [(v.name, v.extent) for v in c.vars] == [
        ("n", 1), ("ko", 2), ("oh", 4), ("c", 3), ("r", 3), ("s", 3), ("ow", 4), ("ki", 16)
    ]
    assert c.header() == "conv2d n=1 c=3 h=7 w=7 k=20 r=3 s=3 stride=2 pad=1 block=16"
    assert c.name == "conv1_3_7_7_20_3_3_s2_p1_b16" and c.block == 16
    assert looptune.parse_computation(c.header()) == c
    weights, out = c.inputs[1], c.output
    assert weights.shape == (20, 3, 3, 3) and weights.alloc_shape == (2, 3, 3, 3, 16)
    assert out.shape == (1, 20, 4, 4) and out.alloc_shape == (1, 2, 4, 4, 16)
    assert weights.strides["ko"] == 3 * 3 * 3 * 16 and weights.strides["ki"] == 1
    assert c.flops == 2 * 20 * 4 * 4 * 3 * 3 * 3  # the zero padding of k is not counted
    tree = c.default_schedule()
    assert looptune.LoopTree.parse(tree.dump()) == tree


def test_packed_matmul_has_panel_variables_and_round_trips() -> None:
    c = looptune.matmul(37, 29, 45, layout="blocked8")
    assert [(v.name, v.extent) for v in c.vars] == [("m", 37), ("no", 6), ("k", 29), ("ni", 8)]
    assert c.header() == "matmul m=37 k=29 n=45 block=8" and c.name == "mm37_29_45_b8"
    assert c.inputs[1].alloc_shape == (6, 29, 8) and c.output.alloc_shape == (37, 48)
    assert looptune.parse_computation(c.header()) == c and c.flops == 2 * 37 * 29 * 45
    assert c != looptune.matmul(37, 29, 45, layout="plain")


def test_default_layout_follows_the_rules() -> None:
    L = HOST_LANES
    assert looptune.conv2d(1, 64, 56, 56, 64, 3, 3, 1, 1).block == L
    assert looptune.conv2d(1, 3, 9, 7, L - 1, 3, 3).block == 0  # fewer channels than lanes
    assert looptune.matmul(2048, 2048, 2048).block == L  # B of 16 MiB, 2048 rows reuse it
    l2 = looptune._core.isa_facts()["l2_bytes"] or 2 << 20  # B is packed above twice the L2
    side = int((2 * l2 / 4) ** 0.5)  # a square B of exactly 2 x L2 bytes is not
    assert looptune.matmul(side, side, side).block == 0
    assert looptune.matmul(side, side + 8, side).block == L
    assert looptune.matmul(255, 2048, 2048).block == 0  # too little reuse
    assert looptune.matmul(4096, 4096, 1).block == 0
    assert looptune.conv2d(1, 64, 56, 56, 64, 3, 3, 1, 1, layout="plain").block == 0


@pytest.mark.parametrize(
    "bad",
    [
        lambda: looptune.matmul(4, 4, 4, layout="packed"),
        lambda: looptune.conv2d(1, 3, 7, 7, 8, 3, 3, layout="blocked0"),
        lambda: looptune.conv2d(1, 3, 7, 7, 8, 3, 3, layout="blocked65"),
        lambda: looptune.parse_computation("matmul m=4 k=4 n=4 block=0"),
        lambda: looptune.parse_computation("matmul m=4 k=4 n=4 block=4 x=1"),
        lambda: looptune.parse_computation(
            "conv2d n=1 c=1 h=4 w=4 k=1 r=3 s=3 stride=1 pad=0 block=x"
        ),
    ],
)
def test_bad_layouts_raise_value_error(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        bad()


# Odd sizes: C=3, K not a multiple of the block, H=W=7, strides 1-3, pads 0-3.
LAYOUT_OPS = [
    ("conv", (1, 3, 7, 7, 20, 3, 3, 1, 1)),
    ("conv", (1, 3, 7, 7, 5, 7, 7, 2, 3)),
    ("conv", (2, 4, 9, 8, 33, 3, 3, 3, 2)),
    ("conv", (1, 8, 7, 7, 16, 1, 1, 2, 0)),
    ("conv", (1, 5, 6, 6, 24, 3, 2, 1, 0)),
    ("matmul", (37, 29, 45)),
    ("matmul", (1, 40, 33)),
    ("matmul", (64, 16, 64)),
]


def make(kind: str, args: tuple[int, ...], block: int) -> looptune.Computation:
    if kind == "conv":
        return looptune.conv2d(*args, layout=f"blocked{block}")
    return looptune.matmul(*args, layout=f"blocked{block}")


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("block", [16, 8])
@pytest.mark.parametrize("op", LAYOUT_OPS, ids=lambda o: f"{o[0]}{'_'.join(map(str, o[1]))}")
def test_random_schedules_of_blocked_layouts_match_numpy(
    op: tuple[str, tuple[int, ...]],
    block: int,
    isa: str,
    random_walk: Callable[..., looptune.LoopTree],
) -> None:
    comp = make(*op, block)
    rng = random.Random(f"{comp.name}{isa}")
    for trial in range(15):
        tree = random_walk(comp.default_schedule(), rng, rng.randint(0, 25))
        result = check_tree(tree, seed=trial, isa=isa)
        assert result.ok, f"{result}\n{tree.dump()}"


def test_blocked_conv_base_schedule_vectorizes_the_channel_block() -> None:
    facts = looptune.conv2d(1, 3, 7, 7, 20, 3, 3, 2, 1, layout="blocked16").default_schedule()
    facts = facts.compile().facts
    assert facts["vectorized"] and not facts["reduction_vectorized"]


@pytest.mark.parametrize("layout", ["blocked16", "plain"])
def test_constant_operand_is_packed_once(layout: str) -> None:
    comp = looptune.conv2d(1, 3, 7, 7, 20, 3, 3, stride=1, pad=2, layout=layout)
    kernel = comp.default_schedule().compile()
    x, w = random_inputs(comp, seed=5)
    with pytest.raises(ValueError, match="constant"):
        kernel(x, None)
    kernel.set_constant(w)
    w_copy = w.copy()
    w[...] = 0  # the kernel keeps its own packed copy
    assert kernel.has_constant
    np.testing.assert_allclose(kernel(x, None), expected(comp, x, w_copy), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kernel(x), expected(comp, x, w_copy), rtol=1e-5, atol=1e-4)
    # an explicit b still wins over the constant
    np.testing.assert_allclose(kernel(x, w), np.zeros(comp.output.shape), atol=0)
    assert kernel.benchmark(0.0, 2, 2, prepacked=True).runs >= 2


def test_set_constant_checks_its_argument() -> None:
    kernel = looptune.matmul(4, 5, 6, layout="blocked8").default_schedule().compile()
    with pytest.raises(ValueError, match="shape"):
        kernel.set_constant(np.zeros((6, 5), np.float32))
    with pytest.raises(TypeError):
        kernel.set_constant(np.zeros((5, 6), np.float64))


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize(
    "comp",
    [
        looptune.conv2d(1, 3, 7, 7, 20, 3, 3, stride=2, pad=1, layout="blocked16"),
        looptune.conv2d(1, 4, 9, 9, 16, 1, 1, stride=1, pad=0, layout="blocked8"),
        looptune.matmul(29, 37, 45, layout="blocked16"),
        looptune.matmul(29, 300, 1, layout="plain"),
        looptune.matmul(1, 70, 45, layout="plain"),
        looptune.matmul(40, 33, 8, layout="plain"),
    ],
    ids=lambda c: c.name,
)
def test_hand_tilings_of_new_layouts_match_numpy(comp: looptune.Computation, isa: str) -> None:
    from looptune.space.schedules import skinny_tilings, tilings

    trees = tilings(comp, isa)
    assert trees
    if comp.output.shape[-1] == 1:  # matrix-vector: the k reduction is the vector loop
        skinny = list(skinny_tilings(comp, isa))
        assert skinny and all(t.compile(isa).facts["reduction_vectorized"] for t in skinny)
    for tree in trees[:12]:
        result = check_tree(tree, isa=isa)
        assert result.ok, f"{result}\n{tree.dump()}"
