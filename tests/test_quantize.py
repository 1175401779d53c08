"""Quantization arithmetic (looptune.model.quantize), the accuracy report (qerror) and the
argument checks of looptune.compile(quantize=...)."""

import numpy as np
import pytest
import torch
from torch import nn

import looptune
from looptune.model import qruntime
from looptune.model.qerror import quantization_report, relative_error, torch_dynamic
from looptune.model.quantize import (
    ActQuant,
    CalibrationError,
    QuantizationUnavailableError,
    act_qparams,
    check_mode,
    dequant_params,
    quantize_act,
    quantize_weight,
    reference_conv,
    reference_linear,
)


def test_act_qparams_hold_zero_and_the_range():
    q = act_qparams(-1.0, 3.0)
    assert q.scale == pytest.approx(4.0 / 255, rel=1e-6)
    assert q.zero_point == 64  # round(1 / (4/255)) = round(63.75)
    assert act_qparams(0.5, 2.0).zero_point == 0  # widened to hold 0: [0, 2]
    assert act_qparams(-2.0, -0.5).zero_point == 255  # [-2, 0]
    assert act_qparams(0.0, 0.0) == ActQuant(1.0, 0)  # an all-zero tensor
    with pytest.raises(ValueError):
        act_qparams(float("nan"), 1.0)


def test_quantize_act_rounds_half_even_and_clamps():
    q = ActQuant(0.5, 10)
    x = np.array([0.25, 0.75, -5.0, -6.0, 200.0, 1.0], np.float32)
    # x / 0.5 = 0.5, 1.5, -10, -12, 400, 2 -> rint 0, 2, -10, -12, 400, 2 (+10, clamped)
    assert quantize_act(x, q).tolist() == [10, 12, 0, 0, 255, 12]
    assert quantize_act(x, q).dtype == np.uint8


def test_quantize_weight_per_channel_symmetric():
    w = np.array([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.0]], np.float32)
    q, s = quantize_weight(w)
    assert q.dtype == np.int8 and s.dtype == np.float32
    assert s.tolist() == pytest.approx([1 / 127, 1.0, 2 / 127])
    assert q[0].tolist() == [127, -64, 32] and q[1].tolist() == [0, 0, 0]
    assert q[2].tolist() == [-127, 64, 0]
    assert np.abs(q).max() <= 127
    with pytest.raises(ValueError):
        quantize_weight(np.ones(3, np.float32))


def test_zero_point_folded_into_the_bias_is_the_affine_product():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 2, (5, 12)).astype(np.float32)
    w = rng.normal(size=(7, 12)).astype(np.float32)
    b = rng.normal(size=7).astype(np.float32)
    act = act_qparams(x.min(), x.max())
    xq, (wq, ws) = quantize_act(x, act).astype(np.int64), quantize_weight(w)
    # the real-valued product of the dequantized operands, in float64
    want = ((xq - act.zero_point) * act.scale) @ (wq.astype(np.int64) * ws[:, None]).T.astype(
        np.float64) + b
    got = reference_linear(x, w, b, act)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    scale, bias = dequant_params(act, ws, wq.astype(np.int64).sum(1), b)
    assert scale.dtype == bias.dtype == np.float32


def test_reference_error_within_pytorch_dynamic_quantization():
    torch.manual_seed(0)
    lin = nn.Linear(256, 384).eval()
    x = torch.randn(64, 256)
    with torch.no_grad():
        f = lin(x)
        theirs = relative_error(torch_dynamic(nn.Sequential(lin))(x), f)
    mine = relative_error(torch.from_numpy(reference_linear(
        x.numpy(), lin.weight.detach().numpy(), lin.bias.detach().numpy())), f)
    assert 0 < mine.max <= theirs.max and 0 < mine.mean <= theirs.mean


def test_reference_conv_matches_float_conv_of_dequantized_operands():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (1, 3, 9, 9)).astype(np.float32)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    act = act_qparams(x.min(), x.max())
    xd = (quantize_act(x, act).astype(np.float64) - act.zero_point) * act.scale
    wq, ws = quantize_weight(w)
    wd = wq.astype(np.float64) * ws[:, None, None, None]
    want = torch.nn.functional.conv2d(torch.from_numpy(xd), torch.from_numpy(wd), stride=2,
                                      padding=1).numpy()
    got = reference_conv(x, w, None, 2, 1, act)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (reference_conv(x, w, None, 2, 1, act, relu=True) >= 0).all()


def test_relative_error_is_normwise():
    want = torch.tensor([1.0, -2.0, 4.0])
    e = relative_error(torch.tensor([1.0, -2.0, 3.0]), want)
    assert e.max == pytest.approx(0.25) and e.mean == pytest.approx((1 / 3) / (7 / 3))
    with pytest.raises(ValueError):
        relative_error(torch.zeros(2), torch.zeros(3))


def test_check_mode():
    assert check_mode(None) is None and check_mode("static") == "static"
    with pytest.raises(ValueError, match="unknown quantize mode"):
        check_mode("int4")
    with pytest.raises(TypeError):
        check_mode(8)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()


def test_compile_rejects_bad_quantize_arguments():
    model, x = _mlp(), torch.randn(4, 32)
    with pytest.raises(ValueError, match="unknown quantize mode"):
        looptune.compile(model, x, quantize="int4", records=False)
    with pytest.raises(ValueError, match="calibration"):
        looptune.compile(model, x, quantize="dynamic", calibration=x, records=False)
    with pytest.raises(CalibrationError, match="needs calibration"):
        looptune.compile(model, x, quantize="static", records=False)
    with pytest.raises(CalibrationError, match="calibration"):
        looptune.compile(model, x, quantize="static", calibration=x.double(), records=False)


def test_no_int8_path_is_a_typed_error(monkeypatch):
    def no_int8(*args, **kw):
        if "dtype" in kw:
            raise TypeError("matmul() got an unexpected keyword argument 'dtype'")
        return real(*args, **kw)

    real = looptune.matmul
    monkeypatch.setattr(looptune, "matmul", no_int8)
    with pytest.raises(QuantizationUnavailableError, match="no int8"):
        qruntime.int8_support()
    with pytest.raises(QuantizationUnavailableError):
        looptune.compile(_mlp(), torch.randn(4, 32), quantize="dynamic", records=False)


def test_report_needs_a_mode():
    model = _mlp()
    with pytest.raises(ValueError, match="mode"):
        quantization_report(model, model, torch.randn(2, 32))
