"""The TVM-style cost model (AutoTVM's XGBTuner): XGBoost P on visible features; every
configuration measured so far trains it, an invalid one with performance 0."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from looptune.costmodel.base import CostModel, Point, TrialLike, register_cost_model
from looptune.costmodel.models import Regressor


@register_cost_model("xgb")
class XGBModel(CostModel):
    def __init__(self, ev, **kw) -> None:
        super().__init__(ev, **kw)
        self.P = Regressor()

    @property
    def ready(self) -> bool:
        return self.P.trained

    def score(self, points: list[Point]) -> np.ndarray:
        x = np.stack([self.ev.visible(p) for p in points])
        return self.P.predict(x) / max(self.P.scale, 1e-9)

    def fit(self, trials: Sequence[TrialLike]) -> None:
        x, y, valid = self.rows(trials)
        self.fit_p(x, y, valid)

    def fit_p(self, x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> None:
        self.P.fit(x, np.where(valid, y, 0.0))  # AutoTVM: invalid configurations score 0
