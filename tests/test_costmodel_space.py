"""The template configuration space, its features and the measurement adapter."""

import numpy as np
import pytest
from isas import ALL

import looptune
from looptune.costmodel import ConfigSpace, Evaluator, Outcome
from looptune.costmodel.configspace import CODE_BYTES_CAP, accumulator_limit
from looptune.costmodel.features import N_HIDDEN, cache_sizes, hidden, visible
from looptune.errors import CompileError, IllegalActionError
from looptune.measure import FakeRunner, Measurer, build
from looptune.measure.reference import check_tree


def point(space, **values):
    """The point with the given knob values, every other knob at its first value."""
    p = []
    for k in space.knobs:
        p.append(k.values.index(values[k.name]) if k.name in values else 0)
    return tuple(p)


def register_tiled_point(space):
    return point(space, t1_m=96, t1_k=64, t1_n=128, r_m=4, r_n=2, vec="n", unroll=False)


@pytest.mark.parametrize("isa", ALL)  # no kernel runs: every ISA on any host
def test_matmul_point_gives_the_register_tiled_loop_nest(isa):
    space = ConfigSpace(looptune.matmul(96, 64, 128), isa)
    lanes = space.lanes
    p = register_tiled_point(space)
    assert space.steps(p) == [("m", 4), ("n", 2 * lanes), ("k", 1), ("m", 1), ("n", 1)]
    assert space.requested_accumulators(p) == 8
    tree = space.instantiate(p)
    assert [(lp.var, lp.step) for lp in tree.loops] == space.steps(p)


def test_register_tiled_point_computes_the_right_answer(cpu_isa):
    space = ConfigSpace(looptune.matmul(96, 64, 128), cpu_isa)
    assert check_tree(space.instantiate(register_tiled_point(space)), isa=cpu_isa).ok


def test_cache_tiles_follow_the_order_knob():
    space = ConfigSpace(looptune.matmul(96, 64, 128), "avx512")
    orders = space.orders
    assert orders[0] == ("m", "k", "n") and orders[1] == ("k", "m", "n")
    p = point(space, t1_m=32, t1_k=16, t1_n=64, r_m=2, r_n=1, vec="n", order=1)
    assert space.steps(p)[:3] == [("k", 16), ("m", 32), ("n", 64)]


def test_register_tile_larger_than_its_cache_tile_is_not_instantiable():
    space = ConfigSpace(looptune.matmul(96, 64, 128), "avx512")
    p = point(space, t1_m=8, r_m=12, vec="n")
    with pytest.raises(IllegalActionError, match="step 12"):
        space.instantiate(p)
    assert space.try_instantiate(p)[0] is None


def test_unroll_of_a_long_reduction_is_not_instantiable():
    space = ConfigSpace(looptune.matmul(32, 128, 32), "avx512")
    assert looptune._core.MAX_UNROLL < 128
    with pytest.raises(IllegalActionError):
        space.instantiate(point(space, t1_m=32, t1_n=32, t1_k=128, unroll=True))
    tree = space.instantiate(point(space, t1_m=32, t1_n=32, t1_k=32, unroll=True))
    assert [lp.unroll for lp in tree.loops if lp.var == "k"] == [False, True]


def test_register_tile_over_the_register_file_is_compile_rejected(cpu_isa):
    space = ConfigSpace(looptune.matmul(128, 64, 128), cpu_isa)
    big = point(space, t1_m=128, t1_n=128, r_m=16, r_n=8, vec="n")
    need = space.requested_accumulators(big)
    assert need > accumulator_limit(cpu_isa)
    built = build(space.instantiate(big), cpu_isa)
    assert built.outcome is Outcome.OK
    facts = built.facts
    assert space.compile_check(big, facts)[0] == Outcome.COMPILE_REJECTED
    assert space.compile_check(big, {**facts, "code_bytes": 0})[0] == Outcome.COMPILE_REJECTED
    ok = point(space, t1_m=128, t1_n=128, r_m=2, r_n=1, vec="n")
    facts = build(space.instantiate(ok), cpu_isa).facts
    assert space.compile_check(ok, facts) == (Outcome.OK, "")
    huge = {**facts, "code_bytes": CODE_BYTES_CAP + 1}
    assert space.compile_check(ok, huge)[0] == Outcome.COMPILE_REJECTED


@pytest.mark.parametrize(
    "comp",
    [
        looptune.matmul(37, 50, 70),
        looptune.batch_matmul(2, 20, 24, 40),
        looptune.conv2d(1, 8, 10, 10, 16, 3, 3, 1, 1),
    ],
    ids=lambda c: c.name,
)
def test_every_instantiable_random_point_computes_the_right_answer(comp, cpu_isa):
    space = ConfigSpace(comp, cpu_isa)
    rng = np.random.default_rng(1)
    checked = 0
    while checked < 6:
        tree, _ = space.try_instantiate(space.sample(rng))
        if tree is None:
            continue
        result = check_tree(tree, isa=cpu_isa)
        assert result.ok, (tree.dump(), str(result))
        checked += 1


def test_space_rejects_bad_isa_and_points():
    with pytest.raises(ValueError, match="unknown isa"):
        ConfigSpace(looptune.matmul(8, 8, 8), "sse")
    space = ConfigSpace(looptune.matmul(8, 8, 8), "avx2")
    with pytest.raises(ValueError, match="outside the space"):
        space.values((0,))


def test_neighbor_changes_exactly_one_knob():
    space = ConfigSpace(looptune.matmul(96, 64, 128), "avx512")
    rng = np.random.default_rng(0)
    p = space.sample(rng)
    for _ in range(20):
        q = space.neighbor(p, rng)
        assert sum(a != b for a, b in zip(p, q)) == 1
        p = q


def test_visible_features_have_one_length_for_every_op():
    rng = np.random.default_rng(0)
    lengths = set()
    for comp in (looptune.matmul(64, 64, 64), looptune.conv2d(1, 8, 10, 10, 16, 3, 3, 1, 1)):
        space = ConfigSpace(comp, "avx512")
        for _ in range(5):
            f = visible(space, space.sample(rng))
            assert np.all(np.isfinite(f))
            lengths.add(f.shape)
    assert len(lengths) == 1


def test_visible_features_read_the_tiles():
    space = ConfigSpace(looptune.matmul(96, 64, 128), "avx512")
    f = visible(space, point(space, t1_m=32, t1_n=128, r_m=4, r_n=2, vec="n"))
    # per variable: log2 extent, log2 cache tile, log2 register tile, vec, reduction, order
    assert list(f[:6]) == [np.log2(96).astype(np.float32), 5.0, 2.0, 0.0, 0.0, 0.0]
    assert list(f[12:18]) == [7.0, 7.0, 5.0, 1.0, 0.0, 2.0]


def test_hidden_features_from_facts():
    tree = looptune.matmul(64, 64, 64).default_schedule()
    facts = tree.compile("avx2").facts
    h = hidden(facts, "avx2")
    assert h.shape == (N_HIDDEN,)
    assert h[12] == facts["fma"] and h[13] == facts["loads"]
    assert h[21] == pytest.approx(facts["loads"] / facts["fma"])


def test_cache_sizes_are_increasing():
    l1, l2, l3 = cache_sizes()
    assert 0 < l1 < l2 < l3


def test_evaluator_turns_runner_failures_into_outcomes():
    # the cost models measure through looptune.measure: a runner that raises is still an outcome
    space = ConfigSpace(looptune.matmul(16, 16, 16), looptune.host_isa())
    p = next(p for p in space.all_points() if space.try_instantiate(p)[0] is not None)
    for exc, outcome in ((CompileError("no code"), Outcome.RUNTIME_ERROR),
                         (RuntimeError("boom"), Outcome.RUNTIME_ERROR)):
        def cost(tree, exc=exc):
            raise exc
        ev = Evaluator(space, Measurer(space.isa, runner=FakeRunner(cost), cache={}))
        g, got, err = ev.measure(p)
        assert (g, got) == (0.0, outcome) and str(exc) in err


def test_evaluator_default_measurer_verifies_and_times_out():
    space = ConfigSpace(looptune.matmul(16, 16, 16), looptune.host_isa())
    ev = Evaluator(space)
    assert ev.measurer.runner.verify and ev.measurer.timeout_factor == 10.0
    assert Evaluator(space, verify=False, timeout_factor=None).measurer.timeout_factor is None
