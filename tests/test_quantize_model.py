"""looptune.compile(model, x, quantize=...): quantized outputs against a numpy reference of the
same arithmetic, and their error against float32 beside PyTorch's quantized models."""

import numpy as np
import pytest
import torch
from torch import nn

import looptune
from looptune import _core
from looptune.model import zoo
from looptune.model.qerror import quantization_report
from looptune.model.qruntime import QuantOp
from looptune.model.quantize import act_qparams, reference_conv, reference_linear

pytestmark = pytest.mark.skipif(_core.isa_facts().get("int8_path", "none") == "none",
                                reason="no int8 path on this CPU")
KW = {"records": False, "quiet": True, "threads": 1, "search": "base"}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 72), nn.ReLU(), nn.Linear(72, 24)).eval()


def test_dynamic_linear_matches_the_numpy_reference():
    model, x = _mlp(), torch.randn(6, 40)
    q = looptune.compile(model, x, quantize="dynamic", **KW)
    assert q.quantize == "dynamic"
    assert sum(isinstance(m, QuantOp) for m in q.graph_module.modules()) == 2
    assert "2 int8 (dynamic)" in q.summary
    with torch.no_grad():
        got = q(x).numpy()
    w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    h = reference_linear(x.numpy(), w1, b1, relu=True)
    want = reference_linear(h, w2, b2)
    # the same integers; the float32 dequantization may round differently (FMA)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_dynamic_quantizes_each_call_with_its_own_range():
    model = _mlp()
    x = torch.randn(6, 40)
    q = looptune.compile(model, x, quantize="dynamic", **KW)
    with torch.no_grad():
        for scale in (0.01, 100.0):
            y = x * scale
            want = model(y)
            err = (q(y) - want).abs().max() / want.abs().max()
            assert err < 0.03


def test_bert_layer_dynamic_error_within_pytorch():
    torch.manual_seed(0)
    model = zoo.bert_layer(hidden=64, heads=4, ffn=128).eval()
    x = torch.randn(2, 16, 64)
    q = looptune.compile(model, x, quantize="dynamic", **KW)
    assert "6 int8 (dynamic)" in q.summary
    rep = quantization_report(model, q, x)
    assert rep.torch is not None and rep.within_torch, str(rep)
    assert 0 < rep.looptune.max < 0.05
    assert rep.as_dict()["within_torch"]


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(x, 1))


def test_static_conv_and_linear_match_the_numpy_reference():
    torch.manual_seed(0)
    model = _ConvNet().eval()
    cal, x = torch.randn(4, 3, 9, 9), torch.randn(1, 3, 9, 9)
    q = looptune.compile(model, x, quantize="static", calibration=cal, **KW)
    assert q.quantize == "static" and q.calibration[0] is cal
    assert "3 int8 (static)" in q.summary
    with torch.no_grad():
        got = q(x).numpy()
        h1c = torch.relu(model.c1(cal))
        h2c = torch.relu(model.c2(h1c))
    # activation parameters from the calibration batch's ranges, as compile observed them
    a1 = act_qparams(cal.min(), cal.max())
    a2 = act_qparams(h1c.min(), h1c.max())
    a3 = act_qparams(h2c.min(), h2c.max())
    assert a1.zero_point > 0  # the input's padding is the zero point, not byte 0
    p = {n: t.detach().numpy() for n, t in model.named_parameters()}
    h1 = reference_conv(x.numpy(), p["c1.weight"], p["c1.bias"], 1, 1, a1, relu=True)
    h2 = reference_conv(h1, p["c2.weight"], p["c2.bias"], 2, 1, a2, relu=True)
    want = reference_linear(h2.reshape(1, -1), p["fc.weight"], p["fc.bias"], a3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_static_error_within_pytorch_fx():
    torch.manual_seed(1)
    model = zoo.resnet18(num_classes=10, width=8).eval()
    cal = torch.randn(4, 3, 32, 32)
    x = cal[:1].clone()
    q = looptune.compile(model, x, quantize="static", calibration=cal, **KW)
    rep = quantization_report(model, q, x)
    assert rep.mode == "static" and rep.torch is not None, str(rep)
    assert rep.within_torch, str(rep)


def test_report_under_deterministic_algorithms():
    """PyTorch's quantized reference has no deterministic kernels: the report still runs with
    torch.use_deterministic_algorithms(True) set (RLlib's seeding sets it) and restores it."""
    torch.manual_seed(1)
    model = zoo.resnet18(num_classes=10, width=8).eval()
    cal = torch.randn(2, 3, 32, 32)
    q = looptune.compile(model, cal[:1], quantize="static", calibration=cal, **KW)
    torch.use_deterministic_algorithms(True)
    try:
        rep = quantization_report(model, q, cal[:1])
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert rep.torch is not None, str(rep)


def test_grouped_convs_and_attention_stay_float32():
    torch.manual_seed(0)
    model = zoo.mobilenet_v2(num_classes=10, width_mult=0.25).eval()
    cal = torch.randn(2, 3, 32, 32)
    q = looptune.compile(model, cal[:1], quantize="static", calibration=cal, **KW)
    ops = [m for m in q.graph_module.modules() if isinstance(m, QuantOp)]
    assert ops and all(m.kind in ("conv2d", "linear") for m in ops)
    with torch.no_grad():
        err = (q(cal[:1]) - model(cal[:1])).abs().max() / model(cal[:1]).abs().max()
    assert err < 0.2


def test_reference_quantization_is_the_engines_bit_for_bit():
    from looptune.model.quantize import quantize_act, quantize_weight

    rng = np.random.default_rng(3)
    for shape, lo, hi in (((1000,), -3.0, 5.0), ((7, 33), 0.0, 2.0), ((5, 9), -4.0, -1.0)):
        x = rng.uniform(lo, hi, shape).astype(np.float32)
        q, scale, zp = _core.quantize_u8(x)
        ref = act_qparams(x.min(), x.max())
        assert (scale, zp) == (ref.scale, ref.zero_point)
        np.testing.assert_array_equal(q, quantize_act(x, ref))
        q2 = _core.quantize_u8(x, 0.05, 17)[0]
        np.testing.assert_array_equal(q2, quantize_act(x, type(ref)(0.05, 17)))
    w = rng.normal(size=(12, 5, 3, 3)).astype(np.float32)
    w[3] = 0.0
    qw, sw = _core.quantize_per_channel_s8(w, 0)
    rq, rs = quantize_weight(w)
    np.testing.assert_array_equal(qw, rq)
    np.testing.assert_array_equal(sw, rs)


def test_torch_compile_backend_takes_quantize(tmp_path, monkeypatch):
    from looptune.model.backend import looptune_backend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    torch._dynamo.reset()
    model, x = _mlp(), torch.randn(4, 40)
    fast = torch.compile(model, backend="looptune", options={"quantize": "dynamic",
                                                              "quiet": True})
    with torch.no_grad():
        got, want = fast(x), model(x)
    assert "2 int8 (dynamic)" in looptune_backend.last_plan.summary
    assert float((got - want).abs().max() / want.abs().max()) < 0.03
    torch._dynamo.reset()


class _Chain(nn.Module):
    """conv-bn-relu -> conv (the first hands u8 to the second), a residual block (its input is
    also the residual: float32), and a linear after a flatten (a view: float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.c2(y))
        y = torch.relu(self.c3(y) + y)
        return self.fc(torch.flatten(y, 1))


def test_static_u8_handoff_equals_quantizing_again(monkeypatch):
    from looptune.model import qruntime

    if not qruntime.requant_available():
        pytest.skip("engine without the requantizing epilogue")
    torch.manual_seed(3)
    model = _Chain().eval()
    with torch.no_grad():  # a BatchNorm that is not the identity
        model.b1.running_mean.uniform_(-0.5, 0.5)
        model.b1.running_var.uniform_(0.5, 2.0)
    x, cal = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 8, 8)
    q = looptune.compile(model, x, quantize="static", calibration=cal, **KW)
    ops = [m for m in q.graph_module.modules() if isinstance(m, QuantOp)]
    handing = [m for m in ops if m.requant is not None]
    # c1 (read only by c2's conv) hands over; c2 is also c3's residual, c3 feeds a view
    assert len(handing) == 1 and "requant" in handing[0].kernel.tree.computation.header()
    assert "1 int8 layers hand u8 to the next" in q.summary
    monkeypatch.setattr(qruntime, "U8_HANDOFF", False)
    apart = looptune.compile(model, x, quantize="static", calibration=cal, **KW)
    assert not any(m.requant is not None for m in apart.graph_module.modules()
                   if isinstance(m, QuantOp))
    with torch.no_grad():
        for _ in range(2):  # the u8 buffer is reused call to call
            x = torch.randn(2, 3, 8, 8)
            assert torch.equal(q(x), apart(x))
