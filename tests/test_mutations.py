"""Schedule mutations: results, legality rules, error types, and legal masks."""

import random

import numpy as np
import pytest

import looptune
from looptune.space.actions import PAPER_ACTIONS, RICH_ACTIONS

ALL_ACTIONS = RICH_ACTIONS + ("split_5", "split_17", "split_1000")


def base(m=64, k=32, n=16):
    return looptune.matmul(m, k, n).default_schedule()


def vars_of(t):
    return [lp.var for lp in t.loops]


def test_cursor_moves_and_ends():
    t = base()
    assert t.down().cursor == 1 and t.down().down().up().cursor == 1
    with pytest.raises(looptune.IllegalActionError, match="outermost"):
        t.up()
    with pytest.raises(looptune.IllegalActionError, match="innermost"):
        t.down().down().down()


def test_mutations_are_pure():
    t = base()
    t.down().split(4).up().swap_down().toggle_unroll()
    assert t == base() and t.cursor == 0


def test_swaps_follow_the_loop():
    t = base().swap_down()
    assert vars_of(t) == ["k", "m", "n"] and t.cursor == 1
    t = t.swap_down()
    assert vars_of(t) == ["k", "n", "m"] and t.cursor == 2
    t = t.swap_up()
    assert vars_of(t) == ["k", "m", "n"] and t.cursor == 1
    with pytest.raises(looptune.IllegalActionError):
        base().swap_up()
    with pytest.raises(looptune.IllegalActionError):
        base().down().down().swap_down()


def test_swap_of_same_var_is_illegal():
    t = base().split(4)
    with pytest.raises(looptune.IllegalActionError, match="both iterate 'm'"):
        t.swap_down()
    with pytest.raises(looptune.IllegalActionError, match="both iterate 'm'"):
        t.down().swap_up()


def test_split_shape_and_annotations():
    t = base().toggle_unroll().split(8)
    assert [(lp.var, lp.step, lp.size, lp.unroll) for lp in t.loops] == [
        ("m", 8, 8, True),
        ("m", 1, 8, False),
        ("k", 1, 32, False),
        ("n", 1, 16, False),
    ]
    assert t.cursor == 0
    inner = base().down().down().toggle_vectorize().split(4)
    assert [lp.vectorize for lp in inner.loops] == [True, True, False, False]


@pytest.mark.parametrize(
    "factor, error",
    [
        (0, ValueError),
        (-3, ValueError),
        (1, looptune.IllegalActionError),
        (65, looptune.IllegalActionError),
    ],
)
def test_bad_split_factors(factor, error):
    with pytest.raises(error):
        base().split(factor)


def test_split_message_and_max_depth():
    t = looptune.matmul(64, 8, 64).default_schedule().down()
    with pytest.raises(looptune.IllegalActionError) as e:
        t.apply("split_16")
    assert str(e.value) == "split_16: factor 16 exceeds loop size 8 of 'k' at cursor 1"
    t = looptune.matmul(1 << 20, 4, 4).default_schedule()
    while t.depth < 16:
        t = t.split(2)
    assert not t.is_legal("split_2")
    with pytest.raises(looptune.IllegalActionError, match="16 loops"):
        t.split(2)


def test_merge():
    t = base().split(4).down().split(2)  # m(4) m'(2) m''(1) k n, cursor on m'
    merged = t.merge()
    assert [(lp.var, lp.step) for lp in merged.loops] == [("m", 4), ("m", 1), ("k", 1), ("n", 1)]
    assert merged.cursor == 1
    assert base().split(4).merge() == base()
    with pytest.raises(looptune.IllegalActionError, match="no loop of 'm' below"):
        base().merge()


def test_merge_above_the_innermost_loop():
    t = base(8, 8, 8).down().down().split(2)  # m k n(2) n'(1), cursor on n at 2
    merged = t.merge()
    assert vars_of(merged) == ["m", "k", "n"] and merged.cursor == 2
    assert merged.loops[2].size == 8 and merged == base(8, 8, 8).down().down()


def test_unroll_limit():
    t = base(128, 8, 8)
    with pytest.raises(looptune.IllegalActionError, match="unroll limit 64"):
        t.toggle_unroll()
    t = t.split(2).down()  # inner m of size 2
    on = t.toggle_unroll()
    assert on.loops[1].unroll and on.toggle_unroll() == t
    big = t.up().toggle_unroll()  # size 64: allowed
    assert big.loops[0].unroll


def test_unroll_off_always_legal():
    t = looptune.LoopTree.parse(
        "# matmul m=64 k=2 n=2\nfor m in 64 [unroll]  <-\n for k in 2\n  for n in 2\n"
    )
    assert t.is_legal("unroll") and not t.toggle_unroll().loops[0].unroll


def test_merge_drops_unroll_of_a_loop_grown_past_the_limit():
    t = looptune.matmul(128, 2, 2).default_schedule().split(16).down().toggle_unroll()
    assert t.loops[1].unroll and t.loops[1].size == 16
    merged = t.up().merge()
    assert merged.loops[0].size == 128 and not merged.loops[0].unroll
    assert looptune.LoopTree.parse(merged.dump()) == merged


def test_vectorize_only_innermost():
    t = base()
    with pytest.raises(looptune.IllegalActionError, match="innermost"):
        t.toggle_vectorize()
    t = t.down().down().toggle_vectorize()
    assert not t.loops[2].vectorize and "[novec]" in t.dump()


@pytest.mark.parametrize("name", ["jump", "split_", "split_0", "split_x", "split_-4", "Up", ""])
def test_unknown_actions_are_value_errors(name):
    t = base()
    for call in (t.apply, t.try_apply, t.is_legal):
        with pytest.raises(ValueError) as e:
            call(name)
        assert not isinstance(e.value, looptune.IllegalActionError)
    with pytest.raises(ValueError):
        t.legal_mask(["up", name])


def test_legal_mask_agrees_with_try_apply(computations, random_walk):
    rng = random.Random(7)
    for _ in range(200):
        t = random_walk(rng.choice(computations).default_schedule(), rng, rng.randrange(30))
        mask = t.legal_mask(ALL_ACTIONS)
        assert mask.dtype == np.bool_ and mask.shape == (len(ALL_ACTIONS),)
        for legal, name in zip(mask, ALL_ACTIONS):
            nxt = t.try_apply(name)
            assert (nxt is not None) == legal == t.is_legal(name)
            if legal:
                assert t.apply(name) == nxt
            else:
                with pytest.raises(looptune.IllegalActionError):
                    t.apply(name)


def test_paper_actions_on_base():
    mask = base().legal_mask(PAPER_ACTIONS)
    assert mask.tolist() == [False, True, False, True, True, True, True]
