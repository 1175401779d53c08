"""The layout knob of the configuration space, and the roofline hidden features."""

import collections

import numpy as np
import pytest

import looptune
from looptune.costmodel import ConfigSpace, roofline
from looptune.costmodel.features import ROOF_EFFICIENCY, hidden, visible
from looptune.costmodel.layouts import to_physical, variants
from looptune.errors import IllegalActionError
from looptune.measure.reference import check_tree
from looptune.space.schedules import from_steps

COMPS = [
    lambda layout: looptune.matmul(37, 50, 70, layout),
    lambda layout: looptune.conv2d(1, 6, 9, 11, 20, 3, 3, 2, 1, layout),
]


@pytest.mark.parametrize("make", COMPS)
@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_every_layout_point_matches_numpy(make, isa):
    if isa == "avx512" and looptune.host_isa() != "avx512":
        pytest.skip("needs an AVX-512 host")
    space = ConfigSpace(make("plain"), isa)
    lanes = space.lanes
    assert list(space.layouts) == ["plain", f"blocked{lanes}"]
    rng = np.random.default_rng(7)
    checked = collections.Counter()
    for _ in range(3000):
        p = space.sample(rng)
        tree, _ = space.try_instantiate(p)
        name = space.values(p)["layout"]
        if tree is None or checked[name] >= 12:
            continue
        assert tree.computation == space.layouts[name].comp
        check = check_tree(tree, isa=isa)
        assert check.ok, (space.values(p), str(check))
        checked[name] += 1
    assert checked == {"plain": 12, f"blocked{lanes}": 12}


def test_layouts_of_each_op():
    lanes = 16  # AVX-512's width, named: "blocked" alone would block by the host's lanes
    names = [lay.name for lay in variants(looptune.matmul(8, 8, 40, "blocked16"), lanes)]
    assert names == ["blocked16", "plain"]
    bmm = looptune.batch_matmul(2, 8, 8, 8)
    assert [lay.name for lay in variants(bmm, lanes)] == ["plain"]
    conv = variants(looptune.conv2d(1, 4, 6, 6, 20, 3, 3, 1, 1, "plain"), lanes)
    assert [(lay.name, lay.var, lay.block) for lay in conv] == [
        ("plain", "", 0),
        ("blocked16", "k", 16),
    ]
    with pytest.raises(ValueError, match="offers"):
        variants(bmm, lanes, ("blocked16",))
    space = ConfigSpace(looptune.matmul(8, 8, 40), "avx512", layouts=["plain"])
    assert space.knobs[-1].values == ("plain",)


def test_blocked_translation():
    lay = variants(looptune.matmul(64, 32, 100, "blocked16"), 16)[0]  # no = 7 panels
    steps = [("n", 48), ("m", 8), ("n", 32), ("k", 1), ("m", 1), ("n", 1)]
    assert to_physical(steps, lay) == [
        ("no", 3), ("m", 8), ("no", 2), ("k", 1), ("m", 1), ("no", 1), ("ni", 1),
    ]
    # a cache tile of every panel is no loop; a register tile wider than its tile is illegal
    assert to_physical([("n", 100), ("k", 1), ("n", 1)], lay)[0] == ("k", 1)
    with pytest.raises(IllegalActionError, match="blocks"):
        to_physical([("n", 16), ("n", 64), ("n", 1)], lay)


def test_blocked_layout_vectorizes_its_block_only():
    space = ConfigSpace(looptune.matmul(32, 32, 64), "avx512")
    vals = {k.name: 0 for k in space.knobs}
    vals.update(layout=1, vec=space.vec_choices.index("m"))
    point = tuple(vals[k.name] for k in space.knobs)
    with pytest.raises(IllegalActionError, match="vectorizes n"):
        space.instantiate(point)
    # the features tell the layouts apart
    plain = point[:-1] + (0,)
    va, vb = visible(space, point), visible(space, plain)
    assert not np.array_equal(va, vb)


def test_roofline_orders_register_tiles():
    comp = looptune.matmul(64, 64, 64)
    # a 6 x 4-vector tile keeps the FMA pipes busy; a 1 x 1-vector tile is latency bound
    big = from_steps(comp, [("m", 4), ("k", 1), ("m", 1), ("n", 1)])
    big6 = from_steps(comp, [("m", 6), ("k", 1), ("m", 1), ("n", 1)])
    small = from_steps(comp, [("m", 1), ("n", 16), ("k", 1), ("n", 1)])
    eff = {}
    for name, tree in (("big", big), ("big6", big6), ("small", small)):
        facts = dict(tree.compile("avx2").facts)
        est = roofline.estimate(tree, facts, 8)
        assert hidden(facts, "avx2", tree)[ROOF_EFFICIENCY] == pytest.approx(est[0])
        eff[name] = est
    assert eff["small"][3] == 1.0 and eff["big6"][3] == 0.0  # latency bound or not
    assert eff["small"][0] < eff["big"][0]
    assert eff["big6"][6] == 6.0  # log2 of 64 reduction steps per tile visit
