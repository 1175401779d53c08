"""The cost-model tuners through looptune.search (real compile and timing, tiny budgets)."""

import pytest

import looptune
from looptune import search
from looptune.measure import Measurer
from looptune.measure.reference import check_tree


@pytest.mark.parametrize("name", ["ml2", "xgb"])
def test_cost_model_search_runs_and_keeps_the_budget(name, cpu_isa):
    tree = looptune.matmul(48, 32, 40).default_schedule()
    measurer = Measurer(isa=cpu_isa, min_time=0.0, min_runs=1, max_runs=2, cache={})
    result = search.get(name)(tree, measurer, measure_budget=12, seed=1)
    assert result.search == name
    assert result.measurements <= 12
    assert result.best_gflops >= result.base_gflops > 0
    assert len(result.history) == result.measurements
    assert check_tree(result.best_tree, isa=cpu_isa).ok


def test_cost_model_search_bad_budget():
    tree = looptune.matmul(8, 8, 8).default_schedule()
    with pytest.raises(ValueError, match="measure_budget"):
        search.get("ml2")(tree, Measurer(isa="avx2"), measure_budget=-1)
    with pytest.raises(TypeError, match="LoopTree"):
        search.get("xgb")("not a tree")


def test_cli_offers_the_cost_model_searches():
    assert {"ml2", "xgb"} <= set(search.NAMES)
