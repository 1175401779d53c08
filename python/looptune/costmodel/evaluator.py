"""The cost models' contact with the measurement pipeline (:mod:`looptune.measure`).

An :class:`Evaluator` turns points of one :class:`ConfigSpace` into loop trees, compiles them
with :func:`looptune.measure.build` (for the hidden features and the compile-time limits) and
times them with a :class:`looptune.measure.Measurer` (its runner, verification, timeout, cache
and record store). Outcomes are :class:`looptune.measure.Outcome` values; failures are
returned, never raised.
"""

from __future__ import annotations

import time

import numpy as np

from looptune._core import LoopTree, cpu_name, isa_supported
from looptune.costmodel.configspace import ConfigSpace
from looptune.costmodel.features import hidden, visible
from looptune.measure import Measurer, build
from looptune.measure.result import Outcome

Point = tuple[int, ...]


class Evaluator:
    """Builds and measures points of one space, caching builds and features.

    Args:
        space: the configuration space.
        measurer: what times a point's tree (default ``Measurer(isa=space.isa,
            verify=verify, timeout_factor=timeout_factor)``: every fresh kernel is checked
            against numpy, and a run slower than ``timeout_factor`` times the best run of its
            computation is cut off as ``TIMEOUT``). A test passes one with a
            :class:`looptune.measure.FakeRunner`.
        timeout_factor, verify: for the default measurer only.

    Building a point compiles it for the space's ISA, so that ISA must run on this CPU even
    with a fake runner (ValueError otherwise, rather than every point a COMPILE_ERROR).
    """

    def __init__(
        self,
        space: ConfigSpace,
        measurer: Measurer | None = None,
        *,
        timeout_factor: float | None = 10.0,
        verify: bool = True,
    ) -> None:
        if not isa_supported(space.isa):
            raise ValueError(
                f"ISA {space.isa!r} is not supported on this CPU ({cpu_name()}): its points "
                "cannot be compiled"
            )
        self.space = space
        if measurer is None:
            measurer = Measurer(isa=space.isa, verify=verify, timeout_factor=timeout_factor)
        self.measurer = measurer
        self._vis: dict[Point, np.ndarray] = {}
        self._hid: dict[Point, np.ndarray] = {}
        self._build: dict[Point, tuple[LoopTree | None, dict | None, Outcome, str]] = {}
        self.best_gflops = 0.0
        self.compile_seconds = 0.0
        self.compiles = 0

    def visible(self, point: Point) -> np.ndarray:
        f = self._vis.get(point)
        if f is None:
            f = self._vis[point] = visible(self.space, point)
        return f

    def build(self, point: Point) -> tuple[LoopTree | None, dict | None, Outcome, str]:
        """``(tree, facts, outcome, error)``: instantiate, compile, apply the compile limits."""
        hit = self._build.get(point)
        if hit is not None:
            return hit
        tree, err = self.space.try_instantiate(point)
        if tree is None:
            out = (None, None, Outcome.NOT_INSTANTIABLE, err)
        else:
            t0 = time.perf_counter()
            built = build(tree, self.space.isa)
            self.compile_seconds += time.perf_counter() - t0
            self.compiles += 1
            if built.ok:
                outcome, err = self.space.compile_check(point, built.facts)
                out = (tree, built.facts, outcome, err)
            else:
                out = (tree, None, built.outcome, built.error)
        self._build[point] = out
        return out

    def hidden(self, point: Point) -> np.ndarray | None:
        tree, facts, outcome, _ = self.build(point)
        if outcome is not Outcome.OK:
            return None
        h = self._hid.get(point)
        if h is None:
            h = self._hid[point] = hidden(facts, self.space.isa, tree)
        return h

    def measure(self, point: Point) -> tuple[float, Outcome, str]:
        """``(gflops, outcome, error)`` of ``point`` (0 GFLOP/s unless ``OK``)."""
        tree, _, outcome, err = self.build(point)
        if outcome is not Outcome.OK:
            return 0.0, outcome, err
        r = self.measurer.measure(tree)
        if not r.ok:
            return 0.0, r.outcome, r.error
        self.best_gflops = max(self.best_gflops, r.gflops)
        return float(r.gflops), Outcome.OK, ""


__all__ = ["Evaluator", "Point"]
