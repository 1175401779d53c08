"""ML²Tuner: P + V + A. The survivors of V are compiled (tens of microseconds each) for their
hidden features; compile-time failures among them are recorded without being measured; A
(visible + hidden -> performance) ranks the rest. Until A has data it ranks by the roofline
estimate among its hidden features (:mod:`looptune.costmodel.roofline`), and before P is
trained the first plan comes from random pools compiled and ranked the same way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from looptune.costmodel.base import Point, SearchContext, TrialLike, register_cost_model
from looptune.costmodel.features import ROOF_EFFICIENCY
from looptune.costmodel.models import Regressor
from looptune.costmodel.pv import PVModel
from looptune.measure.result import Outcome

POOLS = 20  # random pools ML² compiles, at most, for its first measurement


@register_cost_model("ml2")
class ML2Model(PVModel):
    compiles_first = True

    def __init__(self, ev, **kw) -> None:
        super().__init__(ev, **kw)
        self.A = Regressor()

    def cold_start(self, ctx: SearchContext, n: int) -> list[Point] | None:
        # no model yet: random pools, compiled (failures caught, not measured) and ranked by
        # A's roofline prior, until one has a survivor
        for _ in range(POOLS):
            pool = ctx.random_unvisited((self.alpha + 1) * n, set())
            ranked = self.rank(ctx, pool)[:n]
            if ranked or not pool:
                return ranked
        return None

    def select(self, ctx: SearchContext, cands: list[Point], n: int) -> list[Point]:
        return self.rank(ctx, super().select(ctx, cands, n))

    def rank(self, ctx: SearchContext, cands: list[Point]) -> list[Point]:
        """Compile every candidate; record compile-time failures; rank the rest with A."""
        ok, hid = [], []
        for p in cands:
            h = self.ev.hidden(p)
            if h is None:
                _, _, outcome, err = self.ev.build(p)
                ctx.caught(p, outcome, err)
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

    def fit(self, trials: Sequence[TrialLike]) -> None:
        super().fit(trials)
        rows, ys = [], []
        for t in trials:
            if t.outcome is Outcome.OK:
                rows.append(np.concatenate([self.ev.visible(t.point), self.ev.hidden(t.point)]))
                ys.append(t.gflops)
        for v, h, o, g in self.pretrain:
            if o is Outcome.OK and h is not None:
                rows.append(np.concatenate([v, h]))
                ys.append(g)
        if rows:
            self.A.fit(np.stack(rows), np.array(ys))
