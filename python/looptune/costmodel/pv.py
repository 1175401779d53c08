"""P + V: the TVM-style P learns valid points only, and a classifier V (visible -> valid?)
drops the proposals it predicts invalid before they are measured."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from looptune.costmodel.base import Point, SearchContext, TrialLike, register_cost_model
from looptune.costmodel.models import Classifier
from looptune.costmodel.xgb import XGBModel


@register_cost_model("pv")
class PVModel(XGBModel):
    def __init__(self, ev, **kw) -> None:
        super().__init__(ev, **kw)
        self.V = Classifier()

    def width(self, n: int) -> int:
        return (self.alpha + 1) * n

    def fit(self, trials: Sequence[TrialLike]) -> None:
        x, y, valid = self.rows(trials)
        self.fit_p(x, y, valid)
        self.V.fit(x, valid)

    def fit_p(self, x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> None:
        if valid.sum() < self.P.min_rows:
            super().fit_p(x, y, valid)
        else:
            self.P.fit(x[valid], y[valid])  # with V beside it, P learns valid points only

    def select(self, ctx: SearchContext, cands: list[Point], n: int) -> list[Point]:
        if not self.V.trained:
            return cands
        pv = self.V.predict_valid(np.stack([self.ev.visible(p) for p in cands]))
        keep = [p for p, v in zip(cands, pv) if v >= 0.5]
        return keep if keep else [cands[int(np.argmax(pv))]]
