"""Cost models and model-guided tuning (ML²Tuner): a template configuration space per
computation, visible and hidden (compile-time) features, gradient-boosted models P, V and A,
and tuners (random, TVM-style P-only XGBoost, P+V, ML² = P+V+A).

    >>> space = ConfigSpace(looptune.matmul(256, 256, 256), "avx512")  # doctest: +SKIP
    >>> result = tune(space, "ml2", Measurer(min_time=0.001), measure_budget=64)  # doctest: +SKIP
"""

from looptune.costmodel._measure import Outcome
from looptune.costmodel.configspace import ConfigSpace
from looptune.costmodel.predictor import Predictor, predictor, spearman, tree_features
from looptune.costmodel.records import Record, load_records, pretrain_rows, save_records
from looptune.costmodel.tuner import TUNERS, Evaluator, Trial, Tuner, TuneResult, tune

__all__ = [
    "TUNERS",
    "ConfigSpace",
    "Evaluator",
    "Outcome",
    "Predictor",
    "Record",
    "Trial",
    "TuneResult",
    "Tuner",
    "load_records",
    "predictor",
    "pretrain_rows",
    "save_records",
    "spearman",
    "tree_features",
    "tune",
]
