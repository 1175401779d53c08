"""Model-guided search over a :class:`looptune.costmodel.ConfigSpace` (AutoTVM's tuner loop),
with any registered cost model (:mod:`looptune.costmodel.base`): ``random`` (none), ``xgb``
(the TVM-style P only), ``pv`` (P+V) and ``ml2`` (ML²Tuner, P+V+A).

One round with batch size N: simulated annealing on the model's score proposes ``width(N)``
unvisited points; the model cuts them down (``select``: V drops predicted-invalid points, A
compiles and ranks the rest, recording compile-time failures unmeasured); a few are swapped
for random points (epsilon-greedy); the first N are measured; the model is refit on every
trial; repeat until a budget (measurements or seconds) is spent.

Every point sent to the measurement step counts as one measurement, valid or not (as in
AutoTVM, where build errors count as trials). Failures are recorded, never raised.
:func:`ml2_search` and :func:`xgb_search` are the same loop as ``looptune.search`` searches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from looptune._core import LoopTree
from looptune.costmodel import COST_MODELS, ConfigSpace, Evaluator, get_cost_model
from looptune.costmodel.base import PretrainRow
from looptune.costmodel.layouts import layout_name
from looptune.measure import Measurer
from looptune.measure.result import Outcome
from looptune.search.base import SearchResult

Point = tuple[int, ...]
DEFAULT_MEASUREMENTS = 64


@dataclass
class Trial:
    point: Point
    outcome: Outcome
    gflops: float
    measured: bool  # False: caught at compile time, never sent to the measurement step
    elapsed: float
    error: str = ""


@dataclass
class TuneResult:
    tuner: str
    trials: list[Trial] = field(default_factory=list)
    best_point: Point | None = None
    best_gflops: float = 0.0
    seconds: float = 0.0

    @property
    def measured(self) -> list[Trial]:
        return [t for t in self.trials if t.measured]

    @property
    def measurements(self) -> int:
        return len(self.measured)

    @property
    def invalid_measurements(self) -> int:
        return sum(t.outcome is not Outcome.OK for t in self.measured)

    @property
    def caught(self) -> int:
        return sum(not t.measured for t in self.trials)

    def curve(self) -> list[float]:
        """Best GFLOP/s after each measurement."""
        best, out = 0.0, []
        for t in self.measured:
            best = max(best, t.gflops if t.outcome is Outcome.OK else 0.0)
            out.append(best)
        return out

    def to_dict(self) -> dict:
        return {
            "tuner": self.tuner,
            "best_gflops": self.best_gflops,
            "best_point": list(self.best_point) if self.best_point else None,
            "measurements": self.measurements,
            "invalid_measurements": self.invalid_measurements,
            "caught_at_compile": self.caught,
            "seconds": self.seconds,
            "curve": self.curve(),
        }


class Tuner:
    """One tuning run with the cost model registered as ``kind`` (see :data:`TUNERS`)."""

    def __init__(
        self,
        evaluator: Evaluator,
        kind: str = "ml2",
        *,
        seed: int = 0,
        batch: int = 8,
        alpha: int = 3,
        epsilon: float = 0.05,
        sa_points: int = 48,
        sa_iters: int = 40,
        pretrain: list[PretrainRow] | None = None,
    ) -> None:
        model_cls = get_cost_model(kind)
        if batch < 1 or alpha < 0:
            raise ValueError("need batch >= 1 and alpha >= 0")
        self.ev, self.space, self.kind = evaluator, evaluator.space, kind
        self.rng = np.random.default_rng(seed)
        self.batch, self.alpha, self.epsilon = batch, alpha, epsilon
        self.sa_points, self.sa_iters = sa_points, sa_iters
        self.model = model_cls(evaluator, alpha=alpha, pretrain=pretrain or [])
        self.result = TuneResult(kind)
        self.known: dict[Point, Trial] = {}
        self._start = time.perf_counter()

    # the models of the built-in cost models, as before the split (tuner.P, .V, .A)
    P = property(lambda self: self.model.P)
    V = property(lambda self: self.model.V)
    A = property(lambda self: self.model.A)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, measure_budget: int | None = 64, time_budget: float | None = None) -> TuneResult:
        if measure_budget is None and time_budget is None:
            raise ValueError("give a measure_budget or a time_budget")
        start = self._start = time.perf_counter()

        def spent() -> bool:
            if measure_budget is not None and self.result.measurements >= measure_budget:
                return True
            return time_budget is not None and time.perf_counter() - start >= time_budget

        idle = 0  # rounds in a row without a measurement (ML² can catch a whole batch)
        while not spent() and idle < 100:
            left = self.batch
            if measure_budget is not None:
                left = min(left, measure_budget - self.result.measurements)
            plan = self._plan(left)
            if not plan:
                break  # the space is exhausted
            before = self.result.measurements
            for p in plan:
                if spent():
                    break
                if self.model.compiles_first and p not in self.known:
                    _, _, outcome, err = self.ev.build(p)  # compiled for the model anyway
                    if outcome is not Outcome.OK:
                        self.caught(p, outcome, err)
                        continue
                self._record(p, *self.ev.measure(p), measured=True)
            idle = idle + 1 if self.result.measurements == before else 0
            self.model.fit(list(self.known.values()))
        self.result.seconds = time.perf_counter() - start
        return self.result

    def caught(self, p: Point, outcome: Outcome, err: str) -> None:
        """Record a compile-time failure (not a measurement)."""
        self._record(p, 0.0, outcome, err, measured=False)

    def _record(self, p: Point, gflops: float, outcome: Outcome, err: str, measured: bool) -> None:
        trial = Trial(p, outcome, gflops, measured, time.perf_counter() - self._start, err)
        self.known[p] = trial
        self.result.trials.append(trial)
        if outcome is Outcome.OK and gflops > self.result.best_gflops:
            self.result.best_gflops, self.result.best_point = gflops, p

    def random_unvisited(self, n: int, exclude: set) -> list[Point]:
        out: list[Point] = []
        for _ in range(50 * n + 100):
            if len(out) >= n:
                break
            p = self.space.sample(self.rng)
            if p not in self.known and p not in exclude and p not in out:
                out.append(p)
        return out

    def _plan(self, n: int) -> list[Point]:
        if not self.model.ready:
            cold = self.model.cold_start(self, n)
            return cold if cold is not None else self.random_unvisited(n, set())
        cands = self.model.select(self, self._anneal(self.model.width(n)), n)
        plan = cands[:n]
        # epsilon-greedy: a few random points keep exploring (AutoTVM does the same)
        for i in range(len(plan)):
            if self.rng.random() < self.epsilon:
                extra = self.random_unvisited(1, set(plan))
                if extra:
                    plan[i] = extra[0]
        if len(plan) < n:
            plan += self.random_unvisited(n - len(plan), set(plan))
        return plan

    def _anneal(self, width: int) -> list[Point]:
        """The ``width`` unvisited points with the highest score found by simulated annealing
        from random points and the best measured ones (AutoTVM's SimulatedAnnealingOptimizer)."""
        best_known = sorted(
            (t for t in self.known.values() if t.outcome is Outcome.OK),
            key=lambda t: -t.gflops,
        )[: self.sa_points // 2]
        pts = [t.point for t in best_known]
        pts += [self.space.sample(self.rng) for _ in range(self.sa_points - len(pts))]
        score = self.model.score(pts)
        top: dict[Point, float] = {}

        def offer(ps: list[Point], ss: np.ndarray) -> None:
            for p, s in zip(ps, ss):
                if p not in self.known:
                    top[p] = float(s)

        offer(pts, score)
        temp, stale, best = 1.0, 0, -math.inf
        for it in range(self.sa_iters):
            new = [self.space.neighbor(p, self.rng) for p in pts]
            new_score = self.model.score(new)
            offer(new, new_score)
            t = temp * (1 - it / self.sa_iters) + 1e-6
            accept = np.exp(np.minimum((new_score - score) / t, 0.0)) > self.rng.random(len(pts))
            pts = [n if a else p for p, n, a in zip(pts, new, accept)]
            score = np.where(accept, new_score, score)
            cur = sum(sorted(top.values(), reverse=True)[:width])
            stale = stale + 1 if cur <= best else 0
            best = max(best, cur)
            if stale >= 10:
                break
        ranked = sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))
        return [p for p, _ in ranked[:width]]


def tune(
    space: ConfigSpace,
    kind: str = "ml2",
    measurer: Measurer | None = None,
    *,
    measure_budget: int | None = 64,
    time_budget: float | None = None,
    seed: int = 0,
    evaluator: Evaluator | None = None,
    **kw: object,
) -> TuneResult:
    """Tune ``space`` with the cost model ``kind`` (one of :data:`TUNERS`)."""
    ev = evaluator or Evaluator(space, measurer)
    return Tuner(ev, kind, seed=seed, **kw).run(measure_budget, time_budget)


def model_guided_search(
    tree: LoopTree,
    measurer: Measurer | None = None,
    *,
    cost_model: str = "ml2",
    time_budget: float | None = None,
    measure_budget: int | None = None,
    seed: int = 0,
    **_: object,
) -> SearchResult:
    """A ``looptune.search`` search: measure the start tree (the "base" figure), then tune the
    template space of its computation, in its layout, with ``cost_model``. With neither budget
    given, it stops after :data:`DEFAULT_MEASUREMENTS` measurements."""
    if not isinstance(tree, LoopTree):
        raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
    get_cost_model(cost_model)
    if measurer is None:
        measurer = Measurer()
    if time_budget is None and measure_budget is None:
        measure_budget = DEFAULT_MEASUREMENTS
    if measure_budget is not None and measure_budget < 0:
        raise ValueError(f"measure_budget must be >= 0, got {measure_budget}")
    if time_budget is not None and time_budget < 0:
        raise ValueError(f"time_budget must be >= 0 seconds, got {time_budget}")
    base = measurer.gflops(tree)
    # the start tree's layout only: the caller chose the computation (e.g. `tune --layout`)
    comp = tree.computation
    space = ConfigSpace(comp, measurer.isa, layouts=[layout_name(comp)])
    if measure_budget is not None:
        measure_budget = max(measure_budget - 1, 0)  # the start tree took one
    result = Tuner(Evaluator(space, measurer), cost_model, seed=seed).run(
        measure_budget, time_budget
    )
    history = [(0.0, f"{tree.hash():016x}", base)]
    for t in result.measured:
        built = space.try_instantiate(t.point)[0]
        name = f"{built.hash():016x}" if built is not None else "-"
        history.append((t.elapsed, name, t.gflops))
    best_tree, best = tree, base
    if result.best_point is not None and result.best_gflops > base:
        best_tree, best = space.instantiate(result.best_point), result.best_gflops
    return SearchResult(
        best_tree, best, base, history, result.measurements + 1, result.seconds, cost_model
    )


def ml2_search(tree: LoopTree, measurer: Measurer | None = None, **kw: object) -> SearchResult:
    """ML²Tuner (P + V + A) over the template space of ``tree``'s computation."""
    return model_guided_search(tree, measurer, cost_model="ml2", **kw)


def xgb_search(tree: LoopTree, measurer: Measurer | None = None, **kw: object) -> SearchResult:
    """The TVM-style tuner: XGBoost P on visible features, simulated-annealing proposals."""
    return model_guided_search(tree, measurer, cost_model="xgb", **kw)


# The cost models registered when this module was imported (``COST_MODELS`` is the live list).
TUNERS: tuple[str, ...] = tuple(COST_MODELS)

__all__ = [
    "DEFAULT_MEASUREMENTS",
    "TUNERS",
    "Trial",
    "TuneResult",
    "Tuner",
    "ml2_search",
    "model_guided_search",
    "tune",
    "xgb_search",
]
