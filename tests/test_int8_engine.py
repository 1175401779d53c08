"""int8 computations (u8 activations x s8 weights summed in int32): results equal to a numpy
int64 reference for matmul, batch matmul and conv2d (groups, depthwise, every layout), odd
sizes (k not a multiple of 4, tails, masks), the extreme values, random legal schedules with
parallel loops at 1-8 threads, on each ISA and each int8 path this CPU runs (VNNI zmm, VNNI
ymm, the exact AVX2 path forced by LOOPTUNE_INT8_PATH=exact); the dequantizing epilogue; the
quantization helpers; the header / dump round trip; typed errors for wrong dtypes."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

import looptune
from looptune import _core
from looptune.fuzz import int8_expected, int8_inputs, parallel_mismatch, random_schedule
from looptune.space import schedules as S
from tests.isas import ISA_PARAMS, RUNNABLE

# the int8 paths to test: each ISA's best here, and the exact path forced on every ISA
PATHS = ["auto", "exact"]


@pytest.fixture(params=PATHS)
def int8_path(request, monkeypatch):
    monkeypatch.setenv("LOOPTUNE_INT8_PATH", request.param)
    return request.param


def _check(comp, isa, a=None, b=None, schedules=(), threads=(1,), seen=None):
    if a is None:
        a, b = int8_inputs(comp, seed=1)
    want = int8_expected(comp, a, b)
    trees = [comp.default_schedule(), *schedules]
    for tree in trees:
        kernel = tree.compile(isa)
        if seen is not None:
            f = kernel.facts
            seen.update(k for k in ("zero_init", "reduction_vectorized", "out_transposed")
                        if f[k])
            seen.add("accumulated" if not f["zero_init"] else "written once")
            seen.add("parallel" if f["parallel_loop"] >= 0 else "serial")
        got = kernel(a, b)
        assert got.dtype == np.int32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=tree.dump())
        for t in threads:
            assert parallel_mismatch(kernel, a, b, got, t) == "", tree.dump()


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize(
    "m,k,n", [(1, 1, 1), (7, 13, 29), (16, 64, 16), (33, 70, 17), (5, 3, 48), (64, 130, 40)]
)
def test_matmul_exact(isa, int8_path, m, k, n):
    for layout in ("plain", "blocked16", "blocked8", "blocked1"):
        _check(looptune.matmul(m, k, n, layout=layout, dtype="int8"), isa)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_extreme_values(isa, int8_path):
    # 255 * (-128) and 255 * 127 everywhere: the largest sums (no 16-bit saturation anywhere)
    for m, k, n in [(9, 67, 33), (3, 256, 17)]:
        comp = looptune.matmul(m, k, n, dtype="int8")
        a = np.full((m, k), 255, np.uint8)
        for fill in (-128, 127):
            b = np.full((k, n), fill, np.int8)
            _check(comp, isa, a, b)
            assert comp.default_schedule().compile(isa)(a, b)[0, 0] == 255 * fill * k
        b = np.where(np.arange(k * n).reshape(k, n) % 3 == 0, -128, 127).astype(np.int8)
        _check(comp, isa, a, b)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_batch_matmul_and_conv2d(isa, int8_path):
    _check(looptune.batch_matmul(3, 7, 21, 19, dtype="int8"), isa)
    for layout in ("plain", "blocked16", "blocked8"):
        _check(looptune.conv2d(2, 5, 7, 6, 16, 3, 3, 1, 1, layout=layout, dtype="int8"), isa)
        _check(looptune.conv2d(1, 6, 9, 9, 32, 3, 2, 2, 1, layout=layout, groups=2,
                               dtype="int8"), isa)
        # depthwise (one channel per group: each word holds one value and three zeros)
        _check(looptune.conv2d(1, 19, 8, 7, 19, 3, 3, 1, 1, layout=layout, groups=19,
                               dtype="int8"), isa)
    _check(looptune.conv2d(1, 3, 5, 5, 7, 1, 1, 3, 0, groups=1, dtype="int8"), isa)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_random_schedules_and_threads(isa, int8_path):
    rng = random.Random(7)
    comps = [
        looptune.matmul(37, 45, 53, dtype="int8"),
        looptune.matmul(40, 64, 48, layout="blocked16", dtype="int8"),
        looptune.matmul(19, 130, 3, layout="blocked1", dtype="int8"),  # B transposed
        looptune.batch_matmul(2, 9, 14, 23, dtype="int8"),
        looptune.conv2d(1, 7, 9, 8, 16, 3, 3, 1, 1, dtype="int8"),
        looptune.conv2d(2, 4, 6, 7, 12, 2, 3, 2, 1, layout="plain", groups=2, dtype="int8"),
    ]
    seen: set[str] = set()
    for comp in comps:
        trees = [random_schedule(comp, rng) for _ in range(6)]
        if comp.block == 1:  # k the vector loop: partial sums per lane, summed at the store
            trees += list(S.transposed_matmul_tilings(comp, isa))[:6]
        _check(comp, isa, schedules=trees, threads=(1, 2, 3, 8), seen=seen)
    # the ways a kernel writes its output were all exercised
    assert {"accumulated", "written once", "reduction_vectorized", "parallel"} <= seen, seen


def test_paths_reported():
    facts = _core.isa_facts()
    assert {"vnni", "avx_vnni", "int8_path"} <= set(facts)
    for isa in RUNNABLE:
        f = _core.isa_facts(isa)
        if f["vnni"] and isa == "avx512":
            assert f["int8_path"] == "vnni_evex"
        if isa == "avx2":
            want = "vnni_vex" if f["avx_vnni"] else "vnni_evex" if f["vnni"] else "exact"
            assert f["int8_path"] == want
        comp = looptune.matmul(16, 32, 16, dtype="int8")
        kernel = comp.default_schedule().compile(isa)
        assert kernel.facts["int8_path"] == f["int8_path"]
        asm = kernel.assembly
        if f["int8_path"].startswith("vnni"):
            assert "vpdpbusd" in asm and "vpmaddwd" not in asm
    assert looptune.matmul(4, 4, 4).default_schedule().compile().facts["int8_path"] == ""


def test_exact_path_forced(monkeypatch):
    monkeypatch.setenv("LOOPTUNE_INT8_PATH", "exact")
    for isa in RUNNABLE:
        assert _core.isa_facts(isa)["int8_path"] == "exact"
        kernel = looptune.matmul(16, 32, 16, dtype="int8").default_schedule().compile(isa)
        assert kernel.facts["int8_path"] == "exact"
        asm = kernel.assembly
        assert "vpmaddwd" in asm and "vpdpbusd" not in asm and "vpmaddubsw" not in asm
    monkeypatch.setenv("LOOPTUNE_INT8_PATH", "fast")
    with pytest.raises(looptune.CompileError, match="LOOPTUNE_INT8_PATH"):
        looptune.matmul(4, 4, 4, dtype="int8").default_schedule().compile()


def test_header_round_trip_and_identity():
    comps = [
        looptune.matmul(7, 13, 29, dtype="int8"),
        looptune.matmul(300, 1024, 1024, layout="blocked16", dtype="int8"),
        looptune.batch_matmul(2, 3, 5, 7, dtype="int8"),
        looptune.conv2d(1, 6, 9, 9, 8, 3, 3, 2, 1, groups=2, dtype="int8", epilogue="scale+relu"),
    ]
    for c in comps:
        assert c.dtype == "int8"
        back = looptune.parse_computation(c.header())
        assert back == c and hash(back) == hash(c) and back.name == c.name
        assert pickle.loads(pickle.dumps(c)) == c
        assert "dtype=int8" in c.header() and c.name.count("_i8") == 1
        tree = c.default_schedule().down()
        assert looptune.LoopTree.parse(tree.dump()) == tree
    f = looptune.matmul(7, 13, 29)
    i = looptune.matmul(7, 13, 29, dtype="int8")
    assert f != i and f.header() != i.header() and f.name != i.name
    assert f.dtype == "float32"
    # the loop nest has ceil(k / 4) groups in place of k; flops count the real k
    assert [v.extent for v in i.vars] == [7, 4, 29]
    assert i.flops == 2 * 7 * 13 * 29
    assert tuple(i.inputs[0].shape) == (7, 13) and tuple(i.inputs[1].shape) == (13, 29)
    assert looptune.conv2d(1, 5, 4, 4, 8, 3, 3, dtype="int8").flops == 2 * 8 * 2 * 2 * 5 * 9


def test_wrong_dtypes_are_typed_errors():
    comp = looptune.matmul(8, 12, 16, dtype="int8")
    kernel = comp.default_schedule().compile()
    a = np.zeros((8, 12), np.uint8)
    b = np.zeros((12, 16), np.int8)
    with pytest.raises(TypeError, match="uint8"):
        kernel(a.astype(np.float32), b)
    with pytest.raises(TypeError, match="uint8"):
        kernel(a.astype(np.int8), b)
    with pytest.raises(TypeError, match="int8"):
        kernel(a, b.astype(np.uint8))
    with pytest.raises(TypeError, match="int32"):
        kernel(a, b, np.zeros((8, 16), np.float32))
    with pytest.raises(TypeError, match="scale"):
        kernel(a, b, scale=np.ones(16, np.float32))
    with pytest.raises(ValueError, match="shape"):
        kernel(np.zeros((8, 13), np.uint8), b)
    fk = looptune.matmul(8, 12, 16).default_schedule().compile()
    with pytest.raises(TypeError, match="float32"):
        fk(a, b)
    with pytest.raises(ValueError, match="dtype"):
        looptune.matmul(4, 4, 4, dtype="int4")
    with pytest.raises(ValueError, match="scale"):
        looptune.matmul(4, 4, 4, dtype="int8", epilogue="bias")  # int8 epilogues need scale
    with pytest.raises(ValueError, match="int8"):
        looptune.matmul(4, 4, 4, epilogue="scale")
    with pytest.raises(ValueError, match="overflow|65793"):
        looptune.matmul(2, 70000, 2, dtype="int8")
    with pytest.raises(TypeError):
        kernel.weight_sums(np.zeros((12, 16), np.float32))
    with pytest.raises(TypeError):
        fk.weight_sums(b)


def test_out_argument_and_constant_weights():
    comp = looptune.matmul(10, 22, 35, dtype="int8")
    a, b = int8_inputs(comp, seed=3)
    want = int8_expected(comp, a, b)
    kernel = comp.default_schedule().compile()
    out = np.full(want.shape, 7, np.int32)
    assert kernel(a, b, out) is out
    np.testing.assert_array_equal(out, want)
    kernel.set_constant(b)
    assert kernel.has_constant
    np.testing.assert_array_equal(kernel(a), want)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_dequantizing_epilogue(isa, int8_path):
    rng = np.random.default_rng(5)
    rng_s = random.Random(11)
    fused: set[bool] = set()
    for comp in [
        looptune.matmul(9, 30, 21, dtype="int8"),
        looptune.conv2d(1, 5, 6, 6, 16, 3, 3, 1, 1, dtype="int8"),
        looptune.conv2d(1, 5, 6, 6, 8, 3, 3, 1, 1, layout="plain", dtype="int8"),
    ]:
        a, b = int8_inputs(comp, seed=2)
        acc = int8_expected(comp, a, b).astype(np.float64)
        ch = comp.bias_shape[0]
        scale = rng.uniform(1e-4, 1e-2, ch).astype(np.float32)
        bias = rng.normal(size=ch).astype(np.float32)
        res = rng.normal(size=acc.shape).astype(np.float32)
        shape = [1] * acc.ndim
        shape[1 if comp.kind == "conv2d" else -1] = ch
        s, bb = scale.reshape(shape).astype(np.float64), bias.reshape(shape).astype(np.float64)
        cases = {
            "scale": acc * s,
            "scale+bias": acc * s + bb,
            "scale+bias+relu": np.maximum(acc * s + bb, 0),
            "scale+bias+add+relu6": np.clip(acc * s + bb + res, 0, 6),
        }
        for spec, want in cases.items():
            c = comp.with_epilogue(spec)
            kw = {"scale": scale}
            if "bias" in spec:
                kw["bias"] = bias
            if "add" in spec:
                kw["residual"] = res
            # fused into the store (written once from registers) or a pass (accumulated)
            trees = [c.default_schedule(), *(random_schedule(c, rng_s) for _ in range(4))]
            for tree in trees:
                kernel = tree.compile(isa)
                fused.add(kernel.facts["epilogue_fused"])
                got = kernel(a, b, **kw)
                assert got.dtype == np.float32
                np.testing.assert_allclose(got, want, rtol=1e-5,
                                           atol=1e-5 * np.abs(want).max(), err_msg=tree.dump())
        # constant weights, scale and bias
        c = comp.with_epilogue("scale+bias")
        kernel = c.default_schedule().compile(isa)
        kernel.set_constant(b, bias=bias, scale=scale)
        np.testing.assert_allclose(kernel(a), acc * s + bb, rtol=1e-5, atol=1e-4)
        with pytest.raises(TypeError, match="scale"):
            c.default_schedule().compile(isa)(a, b, bias=bias)
    assert fused == {True, False}


def test_zero_point_folding_with_weight_sums():
    # asymmetric u8 activations: x ~ sa * (q - zp); the exact product sum is acc - zp * sums
    rng = np.random.default_rng(9)
    m, k, n = 12, 40, 24
    x = rng.normal(size=(m, k)).astype(np.float32) + 0.7
    w = rng.normal(size=(k, n)).astype(np.float32)
    q, sa, zp = looptune.quantize_u8(x)
    assert 0 < zp < 255
    wq, sw = looptune.quantize_per_channel_s8(w, axis=1)
    comp = looptune.matmul(m, k, n, dtype="int8", epilogue="scale+bias")
    kernel = comp.default_schedule().compile()
    sums = kernel.weight_sums(wq)
    np.testing.assert_array_equal(sums, wq.astype(np.int64).sum(axis=0))
    scale = (sa * sw).astype(np.float32)
    bias = np.zeros(n, np.float32)
    got = kernel(q, wq, scale=scale, bias=(bias - zp * scale * sums).astype(np.float32))
    exact = ((q.astype(np.int64) - zp) @ wq.astype(np.int64)) * scale.astype(np.float64)
    np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-4 * np.abs(exact).max())
    # and close to the float product (quantization error only)
    np.testing.assert_allclose(got, x @ w, atol=0.05 * np.abs(x @ w).max())
    conv = looptune.conv2d(1, 4, 5, 5, 6, 3, 3, dtype="int8").default_schedule().compile()
    wc = rng.integers(-128, 128, (6, 4, 3, 3), dtype=np.int8)
    np.testing.assert_array_equal(conv.weight_sums(wc), wc.astype(np.int64).sum(axis=(1, 2, 3)))


def test_quantize_u8():
    rng = np.random.default_rng(1)
    for shape in [(1,), (7,), (33, 65), (4, 3, 31)]:
        x = (rng.normal(size=shape) * 3 + 0.5).astype(np.float32)
        q, scale, zp = looptune.quantize_u8(x)
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        want_scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
        assert scale == pytest.approx(float(want_scale), rel=1e-6)
        assert zp == int(np.clip(np.rint(-lo / scale), 0, 255))
        want = np.clip(np.rint(x * np.float32(1 / np.float32(scale))) + zp, 0, 255)
        assert q.dtype == np.uint8 and q.shape == x.shape
        np.testing.assert_array_equal(q, want.astype(np.uint8))
        # dequantized values are within half a step of x
        assert np.abs((q.astype(np.float32) - zp) * scale - x).max() <= scale * 0.5 + 1e-6
    # given parameters (static quantization / requantizing an output), and out=
    x = np.linspace(-2, 5, 100, dtype=np.float32)
    out = np.empty(100, np.uint8)
    q, s, z = looptune.quantize_u8(x, scale=0.01, zero_point=100, out=out)
    assert q is out and s == pytest.approx(0.01) and z == 100
    np.testing.assert_array_equal(
        q, np.clip(np.rint(x * np.float32(1 / np.float32(0.01))) + 100, 0, 255).astype(np.uint8))
    assert looptune.quantize_u8(np.zeros(5, np.float32))[1] == 1.0
    with pytest.raises(ValueError, match="finite"):
        looptune.quantize_u8(np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="finite"):
        looptune.quantize_u8(np.array([np.inf] * 9, np.float32))
    with pytest.raises(TypeError, match="float32"):
        looptune.quantize_u8(x.astype(np.float64))
    with pytest.raises(ValueError, match="zero_point"):
        looptune.quantize_u8(x, scale=0.1, zero_point=300)
    with pytest.raises(ValueError, match="scale"):
        looptune.quantize_u8(x, scale=-1.0, zero_point=3)
    with pytest.raises(TypeError, match="both"):
        looptune.quantize_u8(x, scale=0.1)


def test_quantize_per_channel_s8():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)
    w[2] = 0
    q, s = looptune.quantize_per_channel_s8(w, axis=0)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (6,)
    amax = np.abs(w).reshape(6, -1).max(axis=1)
    np.testing.assert_allclose(s, np.where(amax > 0, amax / 127, 1), rtol=1e-6)
    want = np.clip(np.rint(w * (1 / s).reshape(6, 1, 1, 1).astype(np.float32)), -127, 127)
    np.testing.assert_array_equal(q, want.astype(np.int8))
    assert np.abs(q).max() == 127 and not q[2].any()
    b = rng.normal(size=(20, 9)).astype(np.float32)
    q2, s2 = looptune.quantize_per_channel_s8(b, axis=-1)
    assert s2.shape == (9,)
    np.testing.assert_allclose(q2 * s2, b, atol=float(s2.max()) / 2 + 1e-7)
    with pytest.raises(ValueError, match="axis"):
        looptune.quantize_per_channel_s8(b, axis=2)
    with pytest.raises(ValueError, match="finite"):
        looptune.quantize_per_channel_s8(np.array([[np.nan]], np.float32))
