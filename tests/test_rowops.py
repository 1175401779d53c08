"""The engine's row-wise float32 ops (_core.gelu, softmax, layer_norm) and the parallel,
AVX-512 quantize_u8: values against PyTorch on invented shapes, both ISA paths, identical bits
at 1 and 2 threads, in place and out=, special values, and every bad-input error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from isas import ISA_PARAMS

import looptune
from looptune import _core

ROWS = [1, 3, 15, 17, 33, 767, 3071]  # row lengths: tails of every size for 8 and 16 lanes
LEADING = [(), (2,), (3, 5), (2, 1, 3)]


@pytest.fixture
def threads():
    before = looptune.get_num_threads()
    yield looptune.set_num_threads
    looptune.set_num_threads(before)


def _rand(shape, seed, scale=3.0, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32)


def _both_thread_counts(fn, threads):
    threads(1)
    a = fn()
    threads(2)
    b = fn()
    assert a.tobytes() == b.tobytes()  # the same bits whatever the thread count
    return a


def _gelu_exact(x):
    x = np.asarray(x, np.float64)
    return (
        0.5 * x * np.array([1.0 + math.erf(v / math.sqrt(2.0)) for v in x.ravel()]).reshape(x.shape)
    )


# ---- gelu ---------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_gelu_matches_torch(isa, threads):
    for i, d in enumerate(ROWS):
        for lead in LEADING[:2]:
            x = _rand(lead + (d,), seed=i, scale=4.0)
            y = _both_thread_counts(lambda x=x: _core.gelu(x, isa=isa), threads)
            t = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
            assert y.shape == x.shape and y.dtype == np.float32
            np.testing.assert_allclose(y, t, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_gelu_wide_range_and_accuracy(isa, threads):
    # large enough that the pool splits it (blocks of 1024), every |x| <= 12 on a fine grid
    x = np.linspace(-12, 12, 200_003, dtype=np.float32)
    y = _both_thread_counts(lambda: _core.gelu(x, isa=isa), threads)
    t = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, t, rtol=2e-6, atol=2e-6)
    sample = x[::97]
    ref = _gelu_exact(sample)
    assert np.max(np.abs(y[::97] - ref)) < 5e-7  # closer to the exact GELU than PyTorch's erf


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_gelu_special_values(isa):
    x = np.array(
        [-np.inf, np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30, -9.99, -10.5, -1e30, 1e30, 10.5, 3.0],
        np.float32,
    )
    y = _core.gelu(x, isa=isa)
    assert y[0] == 0.0 and y[1] == np.inf and np.isnan(y[2])
    assert y[3] == 0.0 and y[4] == 0.0
    np.testing.assert_allclose(y[5:7], [5e-31, -5e-31], rtol=1e-6)
    assert abs(y[7]) < 1e-15 and y[8] == 0.0 and y[9] == 0.0
    assert y[10] == np.float32(1e30) and y[11] == np.float32(10.5)
    np.testing.assert_allclose(y[12], _gelu_exact([3.0])[0], rtol=1e-6)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_gelu_in_place_and_out(isa):
    x = _rand((4, 33), seed=5)
    want = _core.gelu(x, isa=isa)
    out = np.full_like(x, 7.0)
    assert _core.gelu(x, out, isa=isa) is out
    assert np.array_equal(out, want)
    z = x.copy()
    assert _core.gelu(z, out=z, isa=isa) is z
    assert np.array_equal(z, want)
    assert _core.gelu(np.zeros((3, 0), np.float32)).shape == (3, 0)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_gelu_same_bits_as_the_fused_epilogue_gelu(isa):
    """The JIT's fused GELU, the epilogue pass and _core.gelu are one computation: a kernel
    whose epilogue is fused and one whose pass applies it must agree bit for bit."""
    x = np.concatenate([np.linspace(-12, 12, 4001), [np.inf, -np.inf, 0.0, -0.0, -30, 30]])
    x = x.astype(np.float32)
    kernel = looptune.matmul(1, 1, x.size, layout="plain", epilogue="gelu").default_schedule()
    kernel = kernel.compile(isa)
    assert kernel.facts["epilogue_fused"]
    got = kernel(np.ones((1, 1), np.float32), x[None, :])[0]
    for other in _core.supported_isas():
        assert got.tobytes() == _core.gelu(x, isa=other).tobytes()


# ---- softmax ------------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_softmax_matches_torch(isa, threads):
    for i, d in enumerate(ROWS):
        for lead in LEADING:
            for scale in (1.0, 0.125, -0.7):
                x = _rand(lead + (d,), seed=10 + i, scale=5.0)
                y = _both_thread_counts(lambda x=x, s=scale: _core.softmax(x, s, isa=isa), threads)
                t = torch.softmax(torch.from_numpy(x) * scale, -1).numpy()
                np.testing.assert_allclose(y, t, rtol=2e-6, atol=1e-12)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_softmax_bert_shape_split_over_threads(isa, threads):
    x = _rand((12, 128, 128), seed=3, scale=20.0)
    y = _both_thread_counts(lambda: _core.softmax(x, scale=0.125, isa=isa), threads)
    t = torch.softmax(torch.from_numpy(x) / 8, -1).numpy()
    np.testing.assert_allclose(y, t, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_softmax_special_values(isa):
    ninf = -np.inf
    x = np.array(
        [
            [ninf, ninf, ninf],  # all -inf: NaN, like torch
            [1.0, ninf, 2.0],  # -inf entries: 0
            [np.inf, 1.0, 2.0],  # +inf: NaN, like torch
            [np.nan, 1.0, 2.0],  # NaN: NaN
            [-1e4, 0.0, 1e4],  # large spread: exact 0 and 1
        ],
        np.float32,
    )
    y = _core.softmax(x, isa=isa)
    t = torch.softmax(torch.from_numpy(x), -1).numpy()
    np.testing.assert_allclose(y, t, rtol=1e-6, atol=0, equal_nan=True)
    assert y[1, 1] == 0.0 and y[4, 2] == 1.0 and y[4, 0] == 0.0
    assert np.isnan(y[0]).all() and np.isnan(y[2]).all() and np.isnan(y[3]).all()
    # scale 0: uniform (all -inf rows aside)
    np.testing.assert_allclose(_core.softmax(x[1:2].clip(-5, 5), 0.0, isa=isa), 1 / 3)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_softmax_in_place_and_out(isa):
    x = _rand((3, 17), seed=8)
    want = _core.softmax(x, 0.5, isa=isa)
    out = np.empty_like(x)
    assert _core.softmax(x, 0.5, out, isa=isa) is out and np.array_equal(out, want)
    z = x.copy()
    assert _core.softmax(z, scale=0.5, out=z, isa=isa) is z and np.array_equal(z, want)


# ---- layer_norm ---------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_matches_torch(isa, threads):
    for i, d in enumerate(ROWS):
        for lead in LEADING:
            # an offset much larger than the spread: the two-pass variance keeps it accurate
            x = _rand(lead + (d,), seed=20 + i, scale=2.0, shift=30.0)
            w, b = _rand((d,), seed=40 + i), _rand((d,), seed=60 + i)
            tx = torch.from_numpy(x)
            for wb in ((w, b), (w, None), (None, b), (None, None)):
                y = _both_thread_counts(
                    lambda x=x, wb=wb: _core.layer_norm(x, *wb, eps=1e-5, isa=isa), threads
                )
                t = torch.nn.functional.layer_norm(
                    tx,
                    (d,),
                    None if wb[0] is None else torch.from_numpy(wb[0]),
                    None if wb[1] is None else torch.from_numpy(wb[1]),
                    eps=1e-5,
                ).numpy()
                atol = 1e-5 if d > 1 else 1e-6
                np.testing.assert_allclose(y, t, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_bert_shape_and_trailing_dims(isa, threads):
    x = _rand((128, 768), seed=2)
    w, b = _rand((768,), seed=4), _rand((768,), seed=6)
    y = _both_thread_counts(lambda: _core.layer_norm(x, w, b, 1e-12, isa=isa), threads)
    t = torch.nn.functional.layer_norm(
        torch.from_numpy(x), (768,), torch.from_numpy(w), torch.from_numpy(b), 1e-12
    )
    np.testing.assert_allclose(y, t.numpy(), rtol=1e-5, atol=1e-5)
    # weight of shape (4, 6): normalize over x's last two dims
    x = _rand((3, 4, 6), seed=7)
    w2 = _rand((4, 6), seed=9)
    t = torch.nn.functional.layer_norm(torch.from_numpy(x), (4, 6), torch.from_numpy(w2))
    np.testing.assert_allclose(_core.layer_norm(x, w2, isa=isa), t.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_constant_rows_and_in_place(isa):
    x = np.full((2, 33), 5.0, np.float32)
    np.testing.assert_array_equal(_core.layer_norm(x, isa=isa), 0.0)  # var 0: (x - mean) = 0
    x = _rand((5, 15), seed=11)
    want = _core.layer_norm(x, eps=1e-3, isa=isa)
    z = x.copy()
    assert _core.layer_norm(z, eps=1e-3, out=z, isa=isa) is z and np.array_equal(z, want)
    out = np.empty_like(x)
    assert _core.layer_norm(x, None, None, 1e-3, out, isa=isa) is out
    assert np.array_equal(out, want)


# ---- quantize_u8: parallel and AVX-512, the same results -------------------------------------


def test_quantize_u8_same_for_every_isa_and_thread_count(threads):
    rng = np.random.default_rng(0)
    for n in (1, 31, 33, 4097, 32768, 98304 + 5, 393216):
        x = (rng.standard_normal(n) * 2 + 0.3).astype(np.float32)
        dynamic, static = [], []
        for isa in _core.supported_isas():
            for t in (1, 2):
                threads(t)
                q, s, zp = _core.quantize_u8(x, isa=isa)
                dynamic.append((q.tobytes(), s, zp))
                static.append(_core.quantize_u8(x, 0.02, 17, isa=isa)[0].tobytes())
        assert all(r == dynamic[0] for r in dynamic) and all(r == static[0] for r in static)
        q, s, zp = _core.quantize_u8(x)
        lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
        assert s == np.float32((hi - lo) / np.float32(255))
        ref = np.clip(np.round(x / np.float32(s)) + zp, 0, 255).astype(np.uint8)
        assert np.abs(q.astype(int) - ref).max() <= 1  # x * (1/s) vs x / s: ties may differ


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_quantize_u8_saturates_far_out_of_range(isa):
    # x / scale beyond 2^31 saturates to 255 (and -2^31 to 0) in the vector loops too
    x = np.array([1e10] * 40 + [-1e10] * 40 + [0.5] * 3, np.float32)
    q, _, _ = _core.quantize_u8(x, scale=1e-3, zero_point=3, isa=isa)
    assert (q[:40] == 255).all() and (q[40:80] == 0).all() and (q[80:] == 255).all()


# ---- bad input ----------------------------------------------------------------------------


def test_bad_inputs_raise_typed_errors():
    x = np.ones((2, 3), np.float32)
    for f in (_core.gelu, _core.softmax, _core.layer_norm):
        with pytest.raises(TypeError, match="float32"):
            f(x.astype(np.float64))
        with pytest.raises(TypeError, match="float32"):
            f([[1.0, 2.0]])
        with pytest.raises(TypeError, match="float32"):
            f(x.astype(">f4"))
        with pytest.raises(ValueError, match="0-d"):
            f(np.array(1.0, np.float32))
        with pytest.raises(ValueError, match="C-contiguous"):
            f(np.ones((3, 4), np.float32)[:, ::2])
        with pytest.raises(ValueError, match="shape"):
            f(x, out=np.ones((3, 2), np.float32))
        with pytest.raises(TypeError, match="float32"):
            f(x, out=np.ones((2, 3), np.float64))
        with pytest.raises(ValueError, match="C-contiguous"):
            f(x, out=np.ones((2, 6), np.float32)[:, ::2])
        ro = np.ones((2, 3), np.float32)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            f(x, out=ro)
        buf = np.ones(8, np.float32)
        with pytest.raises(ValueError, match="overlaps"):
            f(buf[:6].reshape(2, 3), out=buf[2:].reshape(2, 3))
        with pytest.raises(ValueError, match="ISA"):
            f(x, isa="sse9")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            _core.softmax(x, bad)
    w = np.ones(3, np.float32)
    for eps in (0.0, -1.0, float("nan"), float("inf"), 1e-60):
        with pytest.raises(ValueError, match="eps"):
            _core.layer_norm(x, w, eps=eps)
    with pytest.raises(ValueError, match="does not end with"):
        _core.layer_norm(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="does not end with"):
        _core.layer_norm(x, None, np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match="bias has"):
        _core.layer_norm(x, w, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="float32"):
        _core.layer_norm(x, w.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.layer_norm(x, None, np.ones(6, np.float32)[::2])
    with pytest.raises(ValueError, match="ISA"):
        _core.quantize_u8(x, isa="sse9")
