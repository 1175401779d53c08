"""Loop-nest graph and features: structure, real values, bounds, consistency."""

import math

import networkx as nx
import numpy as np
import pytest

import looptune
from looptune.space import graph as lg


def _split_inner(tree):
    """Cursor to the innermost loop, then split it by 4."""
    while tree.cursor < tree.depth - 1:
        tree = tree.down()
    return tree.split(4)


def test_matmul_base_graph_values():
    tree = looptune.matmul(64, 32, 16).default_schedule()
    g = lg.loop_graph(tree)
    assert isinstance(g, nx.DiGraph)
    loops = [n for n, d in g.nodes(data=True) if d["kind"] == "loop"]
    tensors = [n for n, d in g.nodes(data=True) if d["kind"] == "tensor"]
    assert len(loops) == 3 and len(tensors) == 3
    nest = [e for e in g.edges(data=True) if e[2]["kind"] == "nest"]
    access = [e for e in g.edges(data=True) if e[2]["kind"] == "access"]
    assert len(nest) == 2 and len(access) == 9
    comp = tree.computation
    for i, lp in enumerate(tree.loops):
        d = g.nodes["loop", i]
        assert (d["var"], d["size"], d["tail"], d["depth"]) == (lp.var, lp.size, lp.tail, i)
        assert d["cursor"] == (i == tree.cursor)
        for t in (*comp.inputs, comp.output):
            e = g.edges[("loop", i), ("tensor", t.name)]
            assert e["stride"] == t.strides.get(lp.var, 0) * lp.step
            assert e["reuse"] == (e["stride"] == 0)
    # At the outermost loop every tensor is touched whole (exact for matmul).
    for t in (*comp.inputs, comp.output):
        assert g.edges[("loop", 0), ("tensor", t.name)]["footprint"] == math.prod(t.shape) * 4
    # The innermost loop walks one row of its variable: extent * 4 bytes for tensors it
    # indexes, one element for the others.
    inner = tree.loops[-1]
    extent = {v.name: v.extent for v in comp.vars}[inner.var]
    for t in (*comp.inputs, comp.output):
        expect = extent * 4 if t.strides.get(inner.var, 0) else 4
        assert g.edges[("loop", 2), ("tensor", t.name)]["footprint"] == expect


def test_split_graph_and_footprints_shrink():
    tree = _split_inner(looptune.matmul(64, 64, 64).default_schedule())
    g = lg.loop_graph(tree)
    assert g.graph["cursor"] == tree.cursor
    sizes = [g.nodes["loop", i]["size"] for i in range(tree.depth)]
    assert sizes[-2:] == [16, 4] and tree.depth == 4
    for i in range(tree.depth - 1):  # working sets never grow going inward
        assert g.nodes["loop", i]["working_set"] >= g.nodes["loop", i + 1]["working_set"]


def test_conv_footprint_bounded_by_buffers():
    tree = looptune.conv2d(1, 8, 10, 10, 16, 3, 3, 1, 1).default_schedule()
    g = lg.loop_graph(tree)
    for name in (t.name for t in (*tree.computation.inputs, tree.computation.output)):
        nbytes = g.nodes["tensor", name]["bytes"]
        assert 0 < g.edges[("loop", 0), ("tensor", name)]["footprint"] <= nbytes


def test_observation_shape_bounds_and_cursor():
    tree = _split_inner(looptune.matmul(80, 96, 112).default_schedule())
    x = lg.observation(tree, max_loops=10)
    assert x.shape == (10 * lg.FEATURES_PER_LOOP,) and x.dtype == np.float32
    assert np.all(np.isfinite(x)) and x.min() >= -1 and x.max() <= 1
    rows = x.reshape(10, lg.FEATURES_PER_LOOP)
    assert rows[:, 0].tolist() == [1.0] * tree.depth + [0.0] * (10 - tree.depth)
    assert np.flatnonzero(rows[:, lg.CURSOR_COLUMN]).tolist() == [tree.cursor]
    assert not rows[tree.depth :].any()


def test_features_match_graph_attributes():
    tree = _split_inner(looptune.matmul(64, 128, 96).default_schedule()).up()
    g = lg.loop_graph(tree)
    rows = lg.observation(tree, max_loops=8).reshape(8, lg.FEATURES_PER_LOOP)
    tensors = [t.name for t in (*tree.computation.inputs, tree.computation.output)]
    for i in range(tree.depth):
        d = g.nodes["loop", i]
        assert rows[i, 2] == pytest.approx(math.log2(d["size"]) / 24)
        assert rows[i, 3] == pytest.approx(math.log2(d["tail"] + 1) / 24)
        assert rows[i, 7] == float(d["reduction"])
        assert rows[i, 8] == float(d["innermost"])
        for j, name in enumerate(tensors):
            e = g.edges[("loop", i), ("tensor", name)]
            base = lg.LOOP_FEATURES + j * lg.TENSOR_FEATURES
            hist = rows[i, base : base + 16]
            assert hist.sum() == 1 and hist[min(abs(e["stride"]).bit_length(), 15)] == 1
            assert rows[i, base + 16] == float(e["reuse"])
            assert rows[i, base + 17] == pytest.approx(math.log2(e["footprint"]) / 40)


def test_reduction_flag_and_reuse():
    tree = looptune.matmul(64, 64, 64).default_schedule()
    facts = lg.nest_facts(tree)
    red = {lp.var: lp.reduction for lp in facts.loops}
    assert red == {"m": False, "k": True, "n": False}
    for lp in facts.loops:  # C is reused across k, A across n, B across m
        reused = {t for t, s in zip(facts.tensors, lp.strides) if s == 0}
        assert len(reused) == 1


def test_errors():
    tree = looptune.matmul(64, 64, 64).default_schedule()
    with pytest.raises(ValueError, match="max_loops"):
        lg.observation(tree, max_loops=2)
    with pytest.raises(ValueError):
        lg.observation(tree, max_loops=0)
