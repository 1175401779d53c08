"""The three gradient-boosted models of ML²Tuner: P (visible -> performance), V (visible ->
valid?) and A (visible + hidden -> performance).

XGBoost, not LightGBM: AutoTVM's XGBTuner (the baseline we reproduce) uses it, and it behaves
well on the tiny training sets of online tuning (a few dozen rows), where LightGBM's default
leaf minimum (20 rows) leaves it with no splits and floods the log with warnings. ``n_jobs=1``
and a fixed ``random_state`` make every fit deterministic and keep to one core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xgboost as xgb


def _xgboost() -> Any:
    """xgboost, imported on first use so that `import looptune` never needs it."""
    try:
        import xgboost
    except ImportError as exc:
        raise ImportError(
            "the cost models need xgboost: pip install 'looptune[cost]' (or xgboost)"
        ) from exc
    return xgboost


_PARAMS = {
    "max_depth": 5,
    "eta": 0.2,
    "subsample": 1.0,
    "min_child_weight": 1.0,
    "tree_method": "hist",
    "nthread": 1,
    "seed": 0,
    "verbosity": 0,
}
ROUNDS = 60


def _train(x: np.ndarray, y: np.ndarray, objective: str) -> xgb.Booster:
    # The native API: the sklearn wrappers need scikit-learn, which is not a dependency.
    xgb = _xgboost()
    data = xgb.DMatrix(x, label=y, nthread=1)
    return xgb.train({**_PARAMS, "objective": objective}, data, num_boost_round=ROUNDS)


def _predict(model: xgb.Booster, x: np.ndarray) -> np.ndarray:
    return model.predict(_xgboost().DMatrix(x, nthread=1)).astype(np.float64)


class Regressor:
    """Predicts performance normalised by the best seen (AutoTVM's regression target); until
    trained on at least ``min_rows`` rows it predicts zeros (no preference)."""

    def __init__(self, min_rows: int = 4) -> None:
        self.min_rows = min_rows
        self.model: xgb.Booster | None = None
        self.scale = 1.0

    @property
    def trained(self) -> bool:
        return self.model is not None

    def fit(self, x: np.ndarray, y: np.ndarray) -> Regressor:
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float64)
        if len(y) < self.min_rows or float(np.max(y, initial=0.0)) <= 0:
            self.model = None
            return self
        self.scale = float(np.max(y))
        self.model = _train(x, y / self.scale, "reg:squarederror")
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.model is None:
            return np.zeros(len(x))
        return _predict(self.model, x) * self.scale


class Classifier:
    """Probability that a configuration is valid. With one class seen so far it predicts that
    class's frequency (1.0 when nothing is known: never filter blindly)."""

    def __init__(self) -> None:
        self.model: xgb.Booster | None = None
        self.prior = 1.0

    @property
    def trained(self) -> bool:
        return self.model is not None

    def fit(self, x: np.ndarray, valid: np.ndarray) -> Classifier:
        x, valid = np.asarray(x, np.float32), np.asarray(valid, bool)
        self.prior = float(valid.mean()) if len(valid) else 1.0
        if len(valid) < 4 or valid.all() or not valid.any():
            self.model = None
            return self
        self.model = _train(x, valid.astype(np.float32), "binary:logistic")
        return self

    def predict_valid(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.model is None:
            return np.full(len(x), self.prior)
        return _predict(self.model, x)
