"""The cost-model tuners as ``looptune.search`` searches (``ml2`` and ``xgb``).

Same call signature as the other searches; the start tree is measured first (the "base"
figure), then the tuner works in the template space of its computation, in its layout.
With neither budget given, it stops after :data:`DEFAULT_MEASUREMENTS` measurements.
"""

from __future__ import annotations

from looptune._core import LoopTree
from looptune.costmodel import _measure
from looptune.costmodel.configspace import ConfigSpace
from looptune.costmodel.layouts import layout_name
from looptune.costmodel.tuner import Evaluator, Tuner
from looptune.search.base import SearchResult

DEFAULT_MEASUREMENTS = 64


def _search(
    kind: str,
    tree: LoopTree,
    measurer: object | None = None,
    *,
    time_budget: float | None = None,
    measure_budget: int | None = None,
    seed: int = 0,
    **_: object,
) -> SearchResult:
    if not isinstance(tree, LoopTree):
        raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
    if measurer is None:
        from looptune.measure import Measurer

        measurer = Measurer()
    base, _, _ = _measure.measure(tree, measurer)
    # the start tree's layout only: the caller chose the computation (e.g. `tune --layout`)
    comp = tree.computation
    space = ConfigSpace(comp, measurer.isa, layouts=[layout_name(comp)])
    if time_budget is None and measure_budget is None:
        measure_budget = DEFAULT_MEASUREMENTS
    if measure_budget is not None:
        if measure_budget < 0:
            raise ValueError(f"measure_budget must be >= 0, got {measure_budget}")
        measure_budget = max(measure_budget - 1, 0)  # the start tree took one
    if time_budget is not None and time_budget < 0:
        raise ValueError(f"time_budget must be >= 0 seconds, got {time_budget}")
    tuner = Tuner(Evaluator(space, measurer), kind, seed=seed)
    result = tuner.run(measure_budget, time_budget)
    history = [(0.0, f"{tree.hash():016x}", base)]
    for t in result.measured:
        built = space.try_instantiate(t.point)[0]
        name = f"{built.hash():016x}" if built is not None else "-"
        history.append((t.elapsed, name, t.gflops))
    best_tree, best = tree, base
    if result.best_point is not None and result.best_gflops > base:
        best_tree, best = space.instantiate(result.best_point), result.best_gflops
    return SearchResult(
        best_tree, best, base, history, result.measurements + 1, result.seconds, kind
    )


def ml2_search(tree: LoopTree, measurer: object | None = None, **kw: object) -> SearchResult:
    """ML²Tuner (P + V + A) over the template space of ``tree``'s computation."""
    return _search("ml2", tree, measurer, **kw)


def xgb_search(tree: LoopTree, measurer: object | None = None, **kw: object) -> SearchResult:
    """The TVM-style tuner: XGBoost P on visible features, simulated-annealing proposals."""
    return _search("xgb", tree, measurer, **kw)
