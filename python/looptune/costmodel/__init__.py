"""Cost models for model-guided tuning (ML²Tuner): a template configuration space per
computation, visible and hidden (compile-time) features, gradient-boosted models P, V and A,
and the cost models built from them (``random``, the TVM-style ``xgb`` = P only, ``pv`` =
P+V, ``ml2`` = P+V+A), each one file registered with :func:`register_cost_model`. The search
that uses them is :mod:`looptune.search.model_guided` (searches depend on cost models, never
the reverse):

    >>> from looptune.search.model_guided import tune
    >>> space = ConfigSpace(looptune.matmul(256, 256, 256), "avx512")  # doctest: +SKIP
    >>> result = tune(space, "ml2", Measurer(min_time=0.001), measure_budget=64)  # doctest: +SKIP
"""

# The built-in cost models: one registration (import) line each.
from looptune.costmodel import (
    ml2,  # noqa: E402, F401
    pv,  # noqa: E402, F401
    xgb,  # noqa: E402, F401, I001
)
from looptune.costmodel.base import COST_MODELS, CostModel, get_cost_model, register_cost_model
from looptune.costmodel.configspace import ConfigSpace
from looptune.costmodel.evaluator import Evaluator
from looptune.costmodel.predictor import Predictor, predictor, spearman, tree_features
from looptune.costmodel.records import Record, load_records, pretrain_rows, save_records
from looptune.measure.result import Outcome

__all__ = [
    "COST_MODELS",
    "ConfigSpace",
    "CostModel",
    "Evaluator",
    "Outcome",
    "Predictor",
    "Record",
    "get_cost_model",
    "load_records",
    "predictor",
    "pretrain_rows",
    "register_cost_model",
    "save_records",
    "spearman",
    "tree_features",
]
