"""Row operations of a compiled model (looptune.model.rowops): LayerNorm, softmax (with a
constant scale before it folded in) and unfused GELU run as the engine's row functions."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import looptune  # noqa: E402
import looptune.model  # noqa: E402
from looptune.model import zoo  # noqa: E402
from looptune.model.rowops import RowOp, available  # noqa: E402

pytestmark = pytest.mark.skipif(not available(), reason="engine without row functions")


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("records") / "records.jsonl")


def _compile(model, x, records, **kw):
    kw.setdefault("search", "base")
    return looptune.compile(model, x, records=records, quiet=True, **kw)


def _rows(compiled) -> list[RowOp]:
    return [m for m in compiled.graph_module.modules() if isinstance(m, RowOp)]


class Attention(nn.Module):
    """Softmax attention written several ways, each with a row op the matcher knows."""

    def __init__(self, d: int = 24, heads: int = 3, how: str = "div") -> None:
        super().__init__()
        self.h, self.hd, self.how = heads, d // heads, how
        self.qkv = nn.Linear(d, 3 * d)
        self.norm = nn.LayerNorm(d)
        self.sm = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.h, self.hd).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1)
        if self.how == "div":
            p = torch.softmax(scores / math.sqrt(self.hd), dim=-1)
        elif self.how == "mul":
            p = F.softmax(0.37 * scores, dim=-1)
        elif self.how == "method":
            p = (scores * 0.5).softmax(-1)
        else:
            p = self.sm(scores)
        ctx = (p @ v).transpose(1, 2).reshape(b, s, d)
        return self.norm(x + ctx)


@pytest.mark.parametrize("how,scale", [("div", 1 / math.sqrt(8)), ("mul", 0.37),
                                       ("method", 0.5), ("module", 1.0)])
def test_attention_softmax_and_norm(how: str, scale: float, records: str) -> None:
    torch.manual_seed(1)
    model = Attention(how=how).eval()
    x = torch.randn(2, 7, 24)
    compiled = _compile(model, x, records)
    rows = _rows(compiled)
    assert sorted(r.kind for r in rows) == ["layer_norm", "softmax"]
    sm = next(r for r in rows if r.kind == "softmax")
    assert sm.scale == pytest.approx(scale, rel=1e-12)
    code = compiled.graph_module.code
    assert "softmax" not in code.replace("looptune_row", "") and "truediv" not in code
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    assert "layer_norm" in compiled.summary and "softmax" in compiled.summary


def test_bert_layer_rows_on_and_off(records: str) -> None:
    torch.manual_seed(0)
    model = zoo.bert_layer(hidden=64, heads=4, ffn=128).eval()
    x = torch.randn(1, 16, 64)
    on = _compile(model, x, records)
    off = _compile(model, x, records, rowops=False)
    assert sorted(r.kind for r in _rows(on)) == ["layer_norm", "layer_norm", "softmax"]
    assert _rows(off) == []
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(on(x), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(off(x), ref, rtol=1e-4, atol=1e-4)


def test_bert_layer_threads_give_the_same_bits(records: str) -> None:
    torch.manual_seed(0)
    model = zoo.bert_layer(hidden=64, heads=4, ffn=128).eval()
    x = torch.randn(1, 33, 64)
    one = _compile(model, x, records, threads=1)
    two = _compile(model, x, records, threads=2)
    with torch.no_grad():
        assert torch.equal(one(x), two(x))


class Mixed(nn.Module):
    """Row ops the matcher must leave to torch, next to ones it takes."""

    def __init__(self) -> None:
        super().__init__()
        self.ln2d = nn.LayerNorm((4, 6))  # over two dims: torch
        self.ln_plain = nn.LayerNorm(6, elementwise_affine=False)
        self.g = nn.GELU()
        self.g_tanh = nn.GELU(approximate="tanh")  # torch
        self.w = nn.Parameter(torch.randn(6))
        self.b = nn.Parameter(torch.randn(6))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple:
        a = torch.softmax(x, dim=1)  # not the last dim: torch
        s = x * 2.0
        b = torch.softmax(s, dim=-1) + s  # the scaled value has two users: not folded
        c = torch.softmax(x / t, dim=-1)  # a tensor divisor: not folded
        d = torch.softmax(x.double(), dim=-1).float()  # float64: the torch fallback
        e = F.softmax(x, dim=-1, dtype=torch.float64).float()  # dtype=: torch
        f = self.g(x + 1.0) + self.g_tanh(x)
        g = F.layer_norm(x, (6,), self.w, self.b, 1e-3) + self.ln_plain(x) + self.ln2d(x)
        return a, b, c, d, e, f, g


def test_what_stays_in_torch_and_fallbacks(records: str) -> None:
    torch.manual_seed(3)
    model = Mixed().eval()
    x, t = torch.randn(2, 4, 6), torch.rand(2, 4, 6) + 0.5
    compiled = _compile(model, (x, t), records)
    kinds = sorted((r.kind, r.scale) for r in _rows(compiled))
    # b, c, d softmaxes (c unscaled over x / t, d over a float64 value), one GELU, 2 norms
    assert kinds == [("gelu", 1.0), ("layer_norm", 1.0), ("layer_norm", 1.0),
                     ("softmax", 1.0), ("softmax", 1.0), ("softmax", 1.0)]
    eps = sorted(r.eps for r in _rows(compiled) if r.kind == "layer_norm")
    assert eps == [1e-5, 1e-3]
    with torch.no_grad():
        got, want = compiled(x, t), model(x, t)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_outputs_are_fresh_tensors(records: str) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)).eval()
    x = torch.randn(3, 8)
    compiled = _compile(model, x, records)
    assert [r.kind for r in _rows(compiled)] == ["layer_norm"]
    with torch.no_grad():
        first = compiled(x)
        keep = first.clone()
        second = compiled(x * 2)
    assert first.data_ptr() != second.data_ptr() and torch.equal(first, keep)


def test_dynamo_backend_rows(records: str) -> None:
    torch.manual_seed(2)
    model = Attention(how="div").eval()
    x = torch.randn(1, 5, 24)
    fn = torch.compile(model, backend="looptune", options={"records": records, "quiet": True,
                                                           "search": "base"})
    with torch.no_grad():
        torch.testing.assert_close(fn(x), model(x), rtol=1e-4, atol=1e-5)


def test_row_op_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown row op"):
        RowOp("relu", (2, 3), torch.relu)
