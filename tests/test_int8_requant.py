"""The int8 'requant' epilogue term (scale[+bias][+add][+act]+requant): a uint8 output equal,
bit for bit, to quantize_u8(the same kernel's float32 result without requant, out_scale,
out_zero_point), whether the JIT's store requantizes (facts['epilogue_fused']) or a pass does,
for matmul, batch matmul and conv2d (groups, depthwise, every layout), odd
sizes, random schedules, both ISAs, each int8 path, 1 and 2 threads, saturation at 0 and 255;
the per-call and constant parameters; header / name / dump round trips; typed errors."""

from __future__ import annotations

import random

import numpy as np
import pytest

import looptune
from looptune import _core
from looptune.fuzz import int8_inputs, random_schedule
from tests.isas import ISA_PARAMS, RUNNABLE

PATHS = ["auto", "exact"]


@pytest.fixture(params=PATHS)
def int8_path(request, monkeypatch):
    monkeypatch.setenv("LOOPTUNE_INT8_PATH", request.param)
    return request.param


def _without_requant(tree):
    """The same schedule of the computation without its last 'requant' term."""
    text = tree.dump()
    head, rest = text.split("\n", 1)
    assert head.endswith("+requant")
    return _core.LoopTree.parse(head[: -len("+requant")] + "\n" + rest)


def _operands(comp, seed):
    rng = np.random.default_rng(seed)
    a, b = int8_inputs(comp, seed=seed)
    ch = comp.bias_shape[0]
    terms = comp.epilogue.split("+")
    kw = {"scale": rng.uniform(2e-5, 2e-3, ch).astype(np.float32)}
    if "bias" in terms:
        kw["bias"] = rng.normal(size=ch).astype(np.float32)
    if "add" in terms:
        kw["residual"] = rng.normal(size=tuple(comp.output.shape)).astype(np.float32)
    return a, b, kw


def _check_tree(tree, isa, a, b, kw, params, threads=(1, 2)):
    """Every (out_scale, zero_point) of `params` at every thread count: the requant kernel's
    bytes equal quantize_u8 of the same schedule's float32 result."""
    kernel = tree.compile(isa)
    plain = _without_requant(tree).compile(isa)
    fused = kernel.facts["epilogue_fused"]
    assert not fused or plain.facts["epilogue_fused"]  # (requant fuses with its chain only)
    old = looptune.get_num_threads()
    try:
        for t in threads:
            looptune.set_num_threads(t)
            y = plain(a, b, **kw)
            spread = float(np.abs(y).max()) or 1.0  # scales that keep most values unsaturated
            scaled = [(spread / 100, 128), (spread / 300, 40)]
            for s, z in [*params, *scaled]:
                want, _, _ = looptune.quantize_u8(y, s, z)
                got = kernel(a, b, **kw, out_scale=s, out_zero_point=z)
                assert got.dtype == np.uint8 and got.shape == y.shape
                np.testing.assert_array_equal(got, want, err_msg=f"{tree.dump()}\n{s} {z} t={t}")
    finally:
        looptune.set_num_threads(old)
    return fused


SPECS = ["scale+requant", "scale+bias+requant", "scale+bias+relu+requant",
         "scale+bias+add+relu6+requant", "scale+add+requant", "scale+bias+gelu+requant"]
PARAMS = [(0.02, 128), (0.005, 0), (0.1, 255), (1e-6, 3), (1e6, 250), (0.0117, 17)]


def _comps():
    return [
        looptune.matmul(7, 13, 29, dtype="int8"),
        looptune.matmul(33, 70, 17, layout="blocked16", dtype="int8"),
        looptune.matmul(5, 3, 48, layout="blocked8", dtype="int8"),
        looptune.matmul(9, 37, 5, layout="blocked1", dtype="int8"),
        looptune.batch_matmul(3, 9, 21, 11, dtype="int8"),
        looptune.conv2d(1, 5, 7, 7, 16, 3, 3, 1, 1, dtype="int8"),
        looptune.conv2d(2, 6, 9, 9, 8, 3, 3, 2, 1, layout="plain", groups=2, dtype="int8"),
        looptune.conv2d(1, 16, 8, 8, 16, 3, 3, 1, 1, groups=16, dtype="int8"),
    ]


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_requant_equals_quantize_u8(isa, int8_path):
    rng_s = random.Random(3)
    fused = set()
    for i, base in enumerate(_comps()):
        for j, spec in enumerate(SPECS):
            if (i + j) % 2:  # every spec and kind, not every pair
                continue
            comp = base.with_epilogue(spec)
            a, b, kw = _operands(comp, seed=10 * i + j)
            trees = [comp.default_schedule(), random_schedule(comp, rng_s)]
            for tree in trees:
                fused.add(_check_tree(tree, isa, a, b, kw, PARAMS[(i + j) % 3 :: 2]))
    assert fused == {True, False}  # fused into the JIT's store, and the pass


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_random_odd_sizes_and_schedules(isa):
    rng = random.Random(17)
    for case in range(8):
        m, k, n = rng.randint(1, 40), rng.randint(1, 90), rng.randint(1, 70)
        spec = rng.choice(SPECS)
        comp = looptune.matmul(m, k, n, dtype="int8", epilogue=spec)
        a, b, kw = _operands(comp, seed=case)
        _check_tree(random_schedule(comp, rng), isa, a, b, kw,
                    [(rng.uniform(1e-3, 0.2), rng.randint(0, 255))])


def test_saturation_and_rounding():
    comp = looptune.matmul(4, 8, 16, dtype="int8", epilogue="scale+add+requant")
    kernel = comp.default_schedule().compile()
    a = np.zeros((4, 8), np.uint8)
    b = np.zeros((8, 16), np.int8)
    scale = np.ones(16, np.float32)
    # y = residual exactly: halves round to even, then the zero point, then [0, 255]
    res = np.array([-1e30, -300, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, 127.5, 300, 1e30,
                    3.49, 3.5, -0.0, 0.0] * 4, np.float32).reshape(4, 16)
    got = kernel(a, b, scale=scale, residual=res, out_scale=1.0, out_zero_point=128)
    want = np.clip(np.rint(res.astype(np.float64)) + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert got[0, 0] == 0 and got[0, 11] == 255 and got[0, 6] == 130 and got[0, 7] == 130
    np.testing.assert_array_equal(got, looptune.quantize_u8(res, 1.0, 128)[0])
    # non-finite y (a residual's): +inf saturates to 255, -inf and NaN give 0, in the store's
    # requantization and in the pass alike
    rng = random.Random(5)
    odd = np.array([np.inf, -np.inf, np.nan, 1.0] * 16, np.float32).reshape(4, 16)
    for isa in RUNNABLE:
        for tree in [comp.default_schedule(), *(random_schedule(comp, rng) for _ in range(6))]:
            got = tree.compile(isa)(a, b, scale=scale, residual=odd, out_scale=1.0,
                                    out_zero_point=7)
            np.testing.assert_array_equal(got, np.tile([255, 0, 0, 8], (4, 4)).astype(np.uint8))
    # zero points at the ends
    assert (kernel(a, b, scale=scale, residual=np.full((4, 16), -1, np.float32), out_scale=1.0,
                   out_zero_point=0) == 0).all()
    assert (kernel(a, b, scale=scale, residual=np.full((4, 16), 1, np.float32), out_scale=1.0,
                   out_zero_point=255) == 255).all()


def test_large_parallel_output_threads_agree():
    # an output above quantize's parallel threshold: the u8 pass is split over the threads
    comp = looptune.matmul(130, 40, 300, dtype="int8", epilogue="scale+bias+relu+requant")
    tree = comp.default_schedule()
    a, b, kw = _operands(comp, seed=4)
    for isa in RUNNABLE:
        _check_tree(tree, isa, a, b, kw, [(0.01, 5), (0.003, 0)], threads=(1, 2))


def test_constant_parameters_and_out_argument():
    comp = looptune.conv2d(1, 5, 6, 6, 16, 3, 3, 1, 1, dtype="int8",
                           epilogue="scale+bias+relu+requant")
    tree = comp.default_schedule()
    a, b, kw = _operands(comp, seed=8)
    kernel = tree.compile()
    y = _without_requant(tree).compile()(a, b, **kw)
    want = looptune.quantize_u8(y, 0.01, 9)[0]
    assert not kernel.has_constant_requant
    kernel.set_constant(b, bias=kw["bias"], scale=kw["scale"], out_scale=0.01, out_zero_point=9)
    assert kernel.has_constant_requant
    np.testing.assert_array_equal(kernel(a), want)
    out = np.full(want.shape, 7, np.uint8)
    assert kernel(a, out=out) is out
    np.testing.assert_array_equal(out, want)
    # per-call parameters override the constant ones
    np.testing.assert_array_equal(kernel(a, out_scale=0.02, out_zero_point=1),
                                  looptune.quantize_u8(y, 0.02, 1)[0])
    # numpy scalars are numbers too
    np.testing.assert_array_equal(
        kernel(a, out_scale=np.float32(0.01), out_zero_point=np.uint8(9)), want)
    # timing runs the requant pass too
    assert kernel.benchmark(min_time=0.0, min_runs=1, max_runs=2).runs >= 1


def test_header_name_dump_round_trip():
    comp = looptune.conv2d(1, 6, 9, 9, 8, 3, 3, 2, 1, groups=2, dtype="int8",
                           epilogue="scale+bias+add+relu+requant")
    assert comp.epilogue == "scale+bias+add+relu+requant"
    assert comp.name.endswith("_i8_scale_bias_add_relu_requant")
    assert "epilogue=scale+bias+add+relu+requant" in comp.header()
    assert _core.parse_computation(comp.header()) == comp
    plain = comp.with_epilogue("scale+bias+add+relu")
    assert plain != comp and plain.name != comp.name
    tree = comp.default_schedule()
    back = _core.LoopTree.parse(tree.dump())
    assert back == tree and back.hash() == tree.hash()
    assert tree.hash() != plain.default_schedule().hash()
    assert looptune.matmul(4, 4, 4, dtype="int8", epilogue="scale+requant").epilogue == \
        "scale+requant"


@pytest.mark.parametrize("spec", ["requant", "scale+requant+relu", "scale+requant+requant",
                                  "requant+scale", "scale+bias+requant+add", "bias+requant"])
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        looptune.matmul(4, 4, 4, dtype="int8", epilogue=spec)


def test_float32_refuses_requant():
    with pytest.raises(ValueError, match="int8"):
        looptune.matmul(4, 4, 4, epilogue="bias+requant")
    with pytest.raises(ValueError, match="int8"):
        looptune.matmul(4, 4, 4).with_epilogue("bias+relu+requant")
    with pytest.raises(ValueError):
        _core.parse_computation("matmul m=4 k=4 n=4 epilogue=bias+requant")


def test_bad_inputs_are_typed_errors():
    comp = looptune.matmul(6, 10, 12, dtype="int8", epilogue="scale+bias+requant")
    kernel = comp.default_schedule().compile()
    a, b, kw = _operands(comp, seed=2)
    ok = {"out_scale": 0.05, "out_zero_point": 3}
    # missing parameters: TypeError like other missing operands
    with pytest.raises(TypeError, match="out_scale"):
        kernel(a, b, **kw)
    with pytest.raises(TypeError, match="both"):
        kernel(a, b, **kw, out_scale=0.1)
    with pytest.raises(TypeError, match="both"):
        kernel(a, b, **kw, out_zero_point=1)
    # bad values: ValueError
    for s in (0.0, -1.0, float("inf"), float("nan"), 1e-50, 1e50):
        with pytest.raises(ValueError, match="out_scale"):
            kernel(a, b, **kw, out_scale=s, out_zero_point=0)
    for z in (-1, 256, 10**30, -(10**30)):
        with pytest.raises(ValueError, match="out_zero_point"):
            kernel(a, b, **kw, out_scale=0.1, out_zero_point=z)
    # bad types: TypeError
    for s in ("0.1", None and 1, True, [0.1]):
        if s is None:
            continue
        with pytest.raises(TypeError, match="out_scale"):
            kernel(a, b, **kw, out_scale=s, out_zero_point=0)
    for z in (1.5, "3", True, np.float32(2)):
        with pytest.raises(TypeError, match="out_zero_point"):
            kernel(a, b, **kw, out_scale=0.1, out_zero_point=z)
    # the output must be uint8 of the output shape
    for bad in (np.zeros((6, 12), np.float32), np.zeros((6, 12), np.int8),
                np.zeros((6, 12), np.int32)):
        with pytest.raises(TypeError, match="uint8"):
            kernel(a, b, bad, **kw, **ok)
    with pytest.raises(ValueError, match="shape"):
        kernel(a, b, np.zeros((6, 13), np.uint8), **kw, **ok)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel(a, b, np.zeros((12, 6), np.uint8).T, **kw, **ok)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros((6, 12), np.uint8)
        ro.flags.writeable = False
        kernel(a, b, ro, **kw, **ok)
    with pytest.raises(ValueError, match="overlap"):
        buf = np.zeros(6 * 12, np.uint8)
        kernel(buf[:60].reshape(6, 10), b, buf.reshape(6, 12), **kw, **ok)
    # requant parameters for a kernel without requant
    plain = looptune.matmul(6, 10, 12, dtype="int8", epilogue="scale+bias").default_schedule()
    pk = plain.compile()
    with pytest.raises(TypeError, match="requant"):
        pk(a, b, **kw, **ok)
    with pytest.raises(TypeError, match="requant"):
        pk.set_constant(b, out_scale=0.1, out_zero_point=1)
    with pytest.raises(TypeError, match="requant"):
        looptune.matmul(6, 10, 12).default_schedule().compile()(
            a.astype(np.float32), b.astype(np.float32), out_scale=0.1, out_zero_point=1)
    # set_constant validates the same way
    with pytest.raises(ValueError, match="out_scale"):
        kernel.set_constant(b, out_scale=-2.0, out_zero_point=1)
    with pytest.raises(ValueError, match="out_zero_point"):
        kernel.set_constant(b, out_scale=2.0, out_zero_point=300)
    with pytest.raises(TypeError, match="both"):
        kernel.set_constant(b, out_scale=2.0)
    assert not kernel.has_constant_requant
    # strided buffers are refused at compile time
    with pytest.raises(looptune.CompileError, match="requant"):
        comp.default_schedule().compile(strides={"out": (1, 6)})
    # the wrong input dtypes stay typed errors
    with pytest.raises(TypeError, match="uint8"):
        kernel(a.astype(np.int8), b, **kw, **ok)


def test_harness_checks_requant_kernels():
    from looptune.measure import harness, int8

    comp = looptune.matmul(24, 40, 36, dtype="int8", epilogue="scale+bias+add+relu6+requant")
    assert int8.out_dtype(comp) is np.uint8 and int8.tolerance(comp) == 1.0
    extra = int8.epilogue_inputs(comp)
    assert extra["out_zero_point"] == 128 and extra["out_scale"] > 0
    t = harness.time_kernel(comp.default_schedule(), min_time=0.0, min_runs=1)
    assert t.ok and t.max_abs_error <= 1.0
