"""A learned stand-in for measurement: ``tree -> predicted GFLOP/s``, deterministic.

For the environment's cost-model reward mode (owned by the env): the env's loop trees are not
points of a template space, so this model reads only the tree and what the JIT reports when
compiling it (``kernel.facts``, tens of microseconds), never a timing:

    >>> pred = looptune.costmodel.predictor(trees, measured_gflops, isa="avx512")  # doctest: +SKIP
    >>> pred(tree)  # a float, the same on every call  # doctest: +SKIP

Its accuracy is what :func:`spearman` reports on held-out trees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from looptune._core import MAX_TREE_LOOPS, LoopTree
from looptune.costmodel.features import N_HIDDEN, _tree_features, hidden
from looptune.costmodel.models import Regressor
from looptune.measure.build import build


def tree_features(tree: LoopTree, isa: str) -> np.ndarray:
    """Features of a loop tree alone: per loop (log2 step, log2 range, reduction, unroll),
    cache footprints and strides, and the hidden compile-time features."""
    red = {v.name: v.reduction for v in tree.computation.vars}
    loops = []
    for i in range(MAX_TREE_LOOPS):
        if i < len(tree.loops):
            lp = tree.loops[i]
            loops += [math.log2(lp.step), math.log2(max(lp.range, 1)), red[lp.var], lp.unroll]
        else:
            loops += [0.0] * 4
    built = build(tree, isa)
    hid = hidden(built.facts, isa, tree) if built.ok else np.zeros(N_HIDDEN, np.float32)
    return np.concatenate([np.asarray(loops + _tree_features(tree), np.float32), hid])


class Predictor:
    """A gradient-boosted regressor on :func:`tree_features`; callable on a tree."""

    def __init__(self, isa: str) -> None:
        self.isa = isa
        self.model = Regressor(min_rows=2)

    def fit(self, trees: Sequence[LoopTree], gflops: Sequence[float]) -> Predictor:
        if len(trees) != len(gflops):
            raise ValueError(f"{len(trees)} trees but {len(gflops)} measurements")
        if not trees:
            raise ValueError("need at least one measured tree")
        self.model.fit(np.stack([tree_features(t, self.isa) for t in trees]), np.array(gflops))
        return self

    def __call__(self, tree: LoopTree) -> float:
        return float(self.model.predict(tree_features(tree, self.isa)[None])[0])


def predictor(trees: Sequence[LoopTree], gflops: Sequence[float], isa: str) -> Predictor:
    """Train a :class:`Predictor` on measured trees."""
    return Predictor(isa).fit(trees, gflops)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan with fewer than 2 points."""
    if len(a) < 2:
        return math.nan
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):
        same = x == v
        ranks[same] = ranks[same].mean()
    return ranks
