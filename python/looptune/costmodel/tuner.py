"""Model-guided tuning over a :class:`ConfigSpace`: random search, the TVM-style P-only XGBoost
tuner (simulated annealing on P's predictions, as AutoTVM's XGBTuner), P+V, and ML²Tuner
(P+V+A).

One round of ML²Tuner with batch size N: simulated annealing on P proposes (alpha+1)N unvisited
points; V drops those it predicts invalid; the survivors are compiled (tens of microseconds
each) for their hidden features, and compile-time failures among them are recorded without
being measured; A ranks the rest on visible + hidden features and the top N are measured; the
models are refit on everything seen; repeat until a budget (measurements or seconds) is spent.
Until A has data (the first round, from a random pool) it ranks by the roofline estimate among
its hidden features (:mod:`looptune.costmodel.roofline`).

Every point sent to the measurement step counts as one measurement, valid or not (as in
AutoTVM, where build errors count as trials). Failures are recorded, never raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from looptune._core import LoopTree, cpu_name, isa_supported
from looptune.costmodel import _measure
from looptune.costmodel._measure import Outcome
from looptune.costmodel.configspace import ConfigSpace
from looptune.costmodel.features import ROOF_EFFICIENCY, hidden, visible
from looptune.costmodel.models import Classifier, Regressor

Point = tuple[int, ...]
# measure_fn(tree, timeout_seconds_or_None) -> (gflops, outcome, error)
MeasureFn = Callable[[LoopTree, "float | None"], tuple[float, str, str]]
CheckFn = Callable[[LoopTree], tuple[bool, str]]

TUNERS = ("random", "xgb", "pv", "ml2")
POOLS = 20  # random pools ML² compiles, at most, for its first measurement


@dataclass
class Trial:
    point: Point
    outcome: str
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
        return sum(t.outcome != Outcome.OK for t in self.measured)

    @property
    def caught(self) -> int:
        return sum(not t.measured for t in self.trials)

    def curve(self) -> list[float]:
        """Best GFLOP/s after each measurement."""
        best, out = 0.0, []
        for t in self.measured:
            best = max(best, t.gflops if t.outcome == Outcome.OK else 0.0)
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


class Evaluator:
    """Builds and measures points of one space, caching builds and features.

    ``measure_fn`` and ``check_fn`` default to the real pipeline (``costmodel._measure``); tests
    inject fakes. A run slower than ``timeout_factor`` times the best run so far is cut off as
    TIMEOUT; every new best is checked against numpy (``verify``) and is WRONG_ANSWER if off.
    Building a point compiles it for the space's ISA, so that ISA must run on this CPU even
    with a fake ``measure_fn`` (ValueError otherwise, rather than every point a COMPILE_ERROR).
    """

    def __init__(
        self,
        space: ConfigSpace,
        measurer: object | None = None,
        *,
        measure_fn: MeasureFn | None = None,
        check_fn: CheckFn | None = None,
        timeout_factor: float | None = 10.0,
        verify: bool = True,
    ) -> None:
        if not isa_supported(space.isa):
            raise ValueError(
                f"ISA {space.isa!r} is not supported on this CPU ({cpu_name()}): its points "
                "cannot be compiled"
            )
        self.space = space
        if measure_fn is None:
            if measurer is None:
                from looptune.measure import Measurer

                measurer = Measurer(isa=space.isa)
            def measure_fn(tree: LoopTree, timeout: float | None) -> tuple[float, str, str]:
                return _measure.measure(tree, measurer, timeout)

        self.measure_fn = measure_fn
        self.check_fn = check_fn or (lambda tree: _measure.check(tree, space.isa))
        self.timeout_factor = timeout_factor
        self.verify = verify
        self._vis: dict[Point, np.ndarray] = {}
        self._hid: dict[Point, np.ndarray] = {}
        self._build: dict[Point, tuple[LoopTree | None, dict | None, str, str]] = {}
        self.best_seconds = math.inf
        self.best_gflops = 0.0
        self.compile_seconds = 0.0
        self.compiles = 0

    def visible(self, point: Point) -> np.ndarray:
        f = self._vis.get(point)
        if f is None:
            f = self._vis[point] = visible(self.space, point)
        return f

    def build(self, point: Point) -> tuple[LoopTree | None, dict | None, str, str]:
        """``(tree, facts, outcome, error)``: instantiate, compile, apply the compile limits."""
        hit = self._build.get(point)
        if hit is not None:
            return hit
        tree, err = self.space.try_instantiate(point)
        if tree is None:
            out = (None, None, Outcome.NOT_INSTANTIABLE, err)
        else:
            t0 = time.perf_counter()
            facts, outcome, err = _measure.build_facts(tree, self.space.isa)
            self.compile_seconds += time.perf_counter() - t0
            self.compiles += 1
            if facts is not None:
                outcome, err = self.space.compile_check(point, facts)
            out = (tree, facts, outcome, err)
        self._build[point] = out
        return out

    def hidden(self, point: Point) -> np.ndarray | None:
        tree, facts, outcome, _ = self.build(point)
        if outcome != Outcome.OK:
            return None
        h = self._hid.get(point)
        if h is None:
            h = self._hid[point] = hidden(facts, self.space.isa, tree)
        return h

    def measure(self, point: Point) -> tuple[float, str, str]:
        tree, _, outcome, err = self.build(point)
        if outcome != Outcome.OK:
            return 0.0, outcome, err
        timeout = None
        if self.timeout_factor is not None and math.isfinite(self.best_seconds):
            timeout = self.timeout_factor * self.best_seconds
        gflops, outcome, err = self.measure_fn(tree, timeout)
        if outcome == Outcome.OK and gflops > self.best_gflops:
            if self.verify:
                ok, msg = self.check_fn(tree)
                if not ok:
                    return 0.0, Outcome.WRONG_ANSWER, msg
            self.best_gflops = gflops
            self.best_seconds = self.space.flops / (gflops * 1e9)
        return gflops, outcome, err


class Tuner:
    """One tuning run. ``kind`` is "random", "xgb" (P only), "pv" (P+V) or "ml2" (P+V+A)."""

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
        pretrain: list[tuple[np.ndarray, np.ndarray | None, str, float]] | None = None,
    ) -> None:
        if kind not in TUNERS:
            raise ValueError(f"unknown tuner {kind!r}; choose from {', '.join(TUNERS)}")
        if batch < 1 or alpha < 0:
            raise ValueError("need batch >= 1 and alpha >= 0")
        self.ev, self.space, self.kind = evaluator, evaluator.space, kind
        self.rng = np.random.default_rng(seed)
        self.batch, self.alpha, self.epsilon = batch, alpha, epsilon
        self.sa_points, self.sa_iters = sa_points, sa_iters
        self.pretrain = pretrain or []  # (visible, hidden|None, outcome, gflops) rows
        self.P, self.V, self.A = Regressor(), Classifier(), Regressor()
        self.result = TuneResult(kind)
        self.known: dict[Point, Trial] = {}

    # -- the loop -----------------------------------------------------------------------------
    def run(self, measure_budget: int | None = 64, time_budget: float | None = None) -> TuneResult:
        if measure_budget is None and time_budget is None:
            raise ValueError("give a measure_budget or a time_budget")
        start = time.perf_counter()
        self._start = start

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
                if self.kind == "ml2" and p not in self.known:
                    _, _, outcome, err = self.ev.build(p)  # compiled for A anyway
                    if outcome != Outcome.OK:
                        self._record(p, 0.0, outcome, err, measured=False)
                        continue
                self._record(p, *self.ev.measure(p), measured=True)
            idle = idle + 1 if self.result.measurements == before else 0
            self._fit()
        self.result.seconds = time.perf_counter() - start
        return self.result

    def _record(self, p: Point, gflops: float, outcome: str, err: str, measured: bool) -> None:
        trial = Trial(p, outcome, gflops, measured, time.perf_counter() - self._start, err)
        self.known[p] = trial
        self.result.trials.append(trial)
        if outcome == Outcome.OK and gflops > self.result.best_gflops:
            self.result.best_gflops, self.result.best_point = gflops, p

    def _random_unvisited(self, n: int, exclude: set) -> list[Point]:
        out: list[Point] = []
        for _ in range(50 * n + 100):
            if len(out) >= n:
                break
            p = self.space.sample(self.rng)
            if p not in self.known and p not in exclude and p not in out:
                out.append(p)
        return out

    def _plan(self, n: int) -> list[Point]:
        if self.kind == "ml2" and not self.P.trained:
            # no model yet: random pools, compiled (failures caught, not measured) and ranked by
            # A's roofline prior, until one has a survivor
            for _ in range(POOLS):
                pool = self._random_unvisited((self.alpha + 1) * n, set())
                ranked = self._rank_with_a(pool, n)[:n]
                if ranked or not pool:
                    return ranked
            return self._random_unvisited(n, set())
        if self.kind == "random" or not self.P.trained:
            return self._random_unvisited(n, set())
        width = n if self.kind == "xgb" else (self.alpha + 1) * n
        cands = self._anneal(width)
        if self.kind in ("pv", "ml2") and self.V.trained:
            pv = self.V.predict_valid(np.stack([self.ev.visible(p) for p in cands]))
            keep = [p for p, v in zip(cands, pv) if v >= 0.5]
            cands = keep if keep else [cands[int(np.argmax(pv))]]
        if self.kind == "ml2":
            cands = self._rank_with_a(cands, n)
        plan = cands[:n]
        # epsilon-greedy: a few random points keep exploring (AutoTVM does the same)
        for i in range(len(plan)):
            if self.rng.random() < self.epsilon:
                extra = self._random_unvisited(1, set(plan))
                if extra:
                    plan[i] = extra[0]
        if len(plan) < n:
            plan += self._random_unvisited(n - len(plan), set(plan))
        return plan

    def _rank_with_a(self, cands: list[Point], n: int) -> list[Point]:
        """Compile every candidate; record compile-time failures; rank the rest with A."""
        ok, hid = [], []
        for p in cands:
            h = self.ev.hidden(p)
            if h is None:
                _, _, outcome, err = self.ev.build(p)
                self._record(p, 0.0, outcome, err, measured=False)
            else:
                ok.append(p)
                hid.append(h)
        if not ok:
            return ok
        if self.A.trained:
            x = np.stack([np.concatenate([self.ev.visible(p), h]) for p, h in zip(ok, hid)])
            score = self.A.predict(x)
        else:  # A's prior until it has data: the roofline estimate among its features
            score = np.array([h[ROOF_EFFICIENCY] for h in hid])
        order = np.argsort(-score, kind="stable")
        return [ok[i] for i in order]

    # -- models -------------------------------------------------------------------------------
    def _fit(self) -> None:
        if self.kind == "random":
            return
        trials = list(self.known.values())
        vis = [self.ev.visible(t.point) for t in trials] + [r[0] for r in self.pretrain]
        outcomes = [t.outcome for t in trials] + [r[2] for r in self.pretrain]
        gflops = [t.gflops for t in trials] + [r[3] for r in self.pretrain]
        valid = np.array([o == Outcome.OK for o in outcomes])
        x, y = np.stack(vis), np.array(gflops)
        if self.kind == "xgb" or valid.sum() < self.P.min_rows:
            self.P.fit(x, np.where(valid, y, 0.0))  # AutoTVM: invalid configurations score 0
        else:
            self.P.fit(x[valid], y[valid])  # with V beside it, P learns valid points only
        if self.kind == "xgb":
            return
        self.V.fit(x, valid)
        if self.kind == "ml2":
            rows, ys = [], []
            for t in trials:
                if t.outcome == Outcome.OK:
                    rows.append(np.concatenate([self.ev.visible(t.point), self.ev.hidden(t.point)]))
                    ys.append(t.gflops)
            for v, h, o, g in self.pretrain:
                if o == Outcome.OK and h is not None:
                    rows.append(np.concatenate([v, h]))
                    ys.append(g)
            if rows:
                self.A.fit(np.stack(rows), np.array(ys))

    def _anneal(self, width: int) -> list[Point]:
        """The ``width`` unvisited points with the highest P found by simulated annealing from
        random points and the best measured ones (AutoTVM's SimulatedAnnealingOptimizer)."""
        best_known = sorted(
            (t for t in self.known.values() if t.outcome == Outcome.OK),
            key=lambda t: -t.gflops,
        )[: self.sa_points // 2]
        pts = [t.point for t in best_known]
        pts += [self.space.sample(self.rng) for _ in range(self.sa_points - len(pts))]
        score = self._p_score(pts)
        top: dict[Point, float] = {}

        def offer(ps: list[Point], ss: np.ndarray) -> None:
            for p, s in zip(ps, ss):
                if p not in self.known:
                    top[p] = float(s)

        offer(pts, score)
        temp, stale, best = 1.0, 0, -math.inf
        for it in range(self.sa_iters):
            new = [self.space.neighbor(p, self.rng) for p in pts]
            new_score = self._p_score(new)
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

    def _p_score(self, pts: list[Point]) -> np.ndarray:
        x = np.stack([self.ev.visible(p) for p in pts])
        s = self.P.predict(x) / max(self.P.scale, 1e-9)
        return s


def tune(
    space: ConfigSpace,
    kind: str = "ml2",
    measurer: object | None = None,
    *,
    measure_budget: int | None = 64,
    time_budget: float | None = None,
    seed: int = 0,
    evaluator: Evaluator | None = None,
    **kw: object,
) -> TuneResult:
    """Tune ``space`` with tuner ``kind`` (one of :data:`TUNERS`)."""
    ev = evaluator or Evaluator(space, measurer)
    return Tuner(ev, kind, seed=seed, **kw).run(measure_budget, time_budget)
