"""A new cost model is one class plus a registration line: a toy one, registered here, drives
the model-guided search (``looptune.search.model_guided``) on a deterministic fake runner."""

import math

import numpy as np
import pytest

import looptune
from looptune import search
from looptune.costmodel import COST_MODELS, ConfigSpace, CostModel, Evaluator, register_cost_model
from looptune.costmodel.configspace import accumulator_limit
from looptune.measure import FakeRunner, Measurer
from looptune.search.model_guided import Tuner, model_guided_search


def tile_gflops(tree, lanes):
    """The fake runner's figure: 100 per accumulator of the register tile, plus its rows."""
    loops = tree.loops
    last_red = max(i for i, lp in enumerate(loops) if lp.var == "k")
    tile = loops[last_red + 1 :]
    rows = tile[0].range if len(tile) == 2 else 1
    return 100.0 * rows * math.ceil(tile[-1].range / lanes) + rows


class Toy(CostModel):
    """Scores a point by the fake's own formula (0 when it gives no tree or needs more
    accumulators than the ISA has): a perfect model, with no training."""

    fits = 0

    @property
    def ready(self):
        return True

    def score(self, points):
        space = self.ev.space
        limit = accumulator_limit(space.isa)
        out = []
        for p in points:
            tree = space.try_instantiate(p)[0]
            fits = tree is not None and space.requested_accumulators(p) <= limit
            out.append(tile_gflops(tree, space.lanes) if fits else 0.0)
        return np.array(out)

    def fit(self, trials):
        Toy.fits += 1


register_cost_model("toy")(Toy)  # the registration line


def fake_measurer(isa):
    lanes = looptune._core.isa_facts(isa)["lanes"]
    return Measurer(isa, runner=FakeRunner(lambda t: tile_gflops(t, lanes)), cache={},
                    timeout_factor=None)


# Exact results of the fixed-seed run per ISA: (best GFLOP/s, the measurement that reached it,
# how many of the 16 measured points the runner ran: the others were caught at compile time).
EXPECTED = {"avx2": (1212.0, 1, 10), "avx512": (2412.0, 1, 5)}


def test_a_toy_cost_model_registered_here_drives_the_search(cpu_isa):
    assert COST_MODELS["toy"] is Toy and Toy.name == "toy"
    space = ConfigSpace(looptune.matmul(64, 64, 64), cpu_isa)
    measurer = fake_measurer(cpu_isa)
    Toy.fits = 0
    tuner = Tuner(Evaluator(space, measurer), "toy", seed=0, epsilon=0.0)
    res = tuner.run(16)
    assert isinstance(tuner.model, Toy) and Toy.fits == 2  # refit after each batch of 8
    assert res.measurements == 16
    curve = res.curve()
    best, when, ran = EXPECTED[cpu_isa]
    assert res.best_gflops == best and curve.index(best) + 1 == when
    assert measurer.runner.calls == ran
    # the same model by name through the search interface (the start tree is one measurement)
    tree = looptune.matmul(64, 64, 64).default_schedule()
    found = model_guided_search(tree, fake_measurer(cpu_isa), cost_model="toy", measure_budget=9)
    assert found.search == "toy" and found.measurements == 9
    assert found.best_gflops == best


def test_unknown_cost_model_and_bad_registration():
    space = ConfigSpace(looptune.matmul(16, 16, 16), looptune.host_isa())
    ev = Evaluator(space, fake_measurer(space.isa))
    with pytest.raises(ValueError, match="unknown tuner 'nope'"):
        Tuner(ev, "nope")
    with pytest.raises(TypeError, match="subclasses CostModel"):
        register_cost_model("bad")(object)
    assert {"ml2", "xgb"} <= set(search.NAMES)
