"""Attention in a compiled model: matmul / bmm kernels read torch views of their inputs in
place (or packed by the kernel), and write their output in the order its transpose wants
(looptune.model.runtime: LoopOp's strided path, choose_output_orders)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import looptune  # noqa: E402
import looptune.model  # noqa: E402
from looptune.model import zoo  # noqa: E402
from looptune.model.runtime import LoopOp  # noqa: E402


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("records") / "records.jsonl")


def _mm_ops(compiled) -> list[LoopOp]:
    return [m for m in compiled.graph_module.modules()
            if isinstance(m, LoopOp) and m.kind in ("matmul", "bmm")]


@pytest.mark.parametrize("quantize", [None, "dynamic"])
def test_bert_attention_reads_views_in_place(quantize, records: str) -> None:
    torch.manual_seed(0)
    model = zoo.bert_layer(hidden=96, heads=3, ffn=64).eval()
    x = torch.randn(1, 20, 96)
    compiled = looptune.compile(model, x, records=records, quiet=True, search="base",
                                quantize=quantize)
    with torch.no_grad():
        got = compiled(x)
        ref = model(x) if quantize is None else None
    if ref is not None:
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    scores, context = _mm_ops(compiled)
    # q @ k^T: q read in place, k^T (strided along the vector dim) packed by the kernel
    (access,) = [k.facts["access"] for k in scores._by_strides.values()]
    assert access == {"in0": "in_place", "in1": "packed", "out": "dense"}
    assert scores.out_perm is None
    # p @ v: v read in place, the context written as [seq][heads][dim] for the transpose after
    (access,) = [k.facts["access"] for k in context._by_strides.values()]
    assert access == {"in0": "dense", "in1": "in_place", "out": "in_place"}
    assert context.out_perm == (0, 2, 1, 3)
    assert "reshape" in compiled.summary  # still a torch op, but now a view


def test_strided_and_copied_paths_agree(records: str) -> None:
    torch.manual_seed(0)
    model = zoo.bert_layer(hidden=64, heads=4, ffn=32).eval()
    x = torch.randn(1, 9, 64)
    compiled = looptune.compile(model, x, records=records, quiet=True, search="base")
    scores, _ = _mm_ops(compiled)
    q = torch.randn(1, 9, 64).view(1, 9, 4, 16).transpose(1, 2)
    kt = torch.randn(1, 9, 64).view(1, 9, 4, 16).transpose(1, 2).transpose(-2, -1)
    with torch.no_grad():
        strided = scores(q, kt).clone()
        dense = scores(q.contiguous(), kt.contiguous()).clone()
        # a view that cannot be seen at the kernel's [b, m, k] shape: the copying path
        odd = torch.randn(9, 4, 16).permute(1, 0, 2).unsqueeze(0)
        copied = scores(odd, kt).clone()
    assert len(scores._by_strides) == 2  # one kernel per stride pattern met
    torch.testing.assert_close(strided, q @ kt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense, strided, rtol=0, atol=0)
    torch.testing.assert_close(copied, odd @ kt, rtol=1e-5, atol=1e-5)


class PermutedOut(nn.Module):
    """bmm outputs used by a transpose of two batch dims (one of them batch > 1, so the
    kernel is a contraction over both), of the heads, and of the output's last two dims."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, a2: torch.Tensor,
                b2: torch.Tensor) -> tuple:
        c = torch.matmul(a2, b2).transpose(1, 2)  # [2, 5, 3, 7]
        e = torch.matmul(a, b).transpose(1, 2).reshape(1, 5, 21)
        f = torch.matmul(a2, b2).transpose(-2, -1)  # n strided: computed, then copied out
        return c.reshape(2, 5, 21), e, f.contiguous()


def test_output_orders(records: str) -> None:
    torch.manual_seed(4)
    args = (torch.randn(1, 3, 5, 4), torch.randn(1, 3, 4, 7), torch.randn(2, 3, 5, 4),
            torch.randn(2, 3, 4, 7))
    model = PermutedOut().eval()
    compiled = looptune.compile(model, args, records=records, quiet=True, search="base")
    ops = _mm_ops(compiled)
    assert [op.out_perm for op in ops] == [(0, 2, 1, 3), (0, 2, 1, 3), (0, 1, 3, 2)]
    assert ops[0].a_shape == (2, 3, 5, 4) and ops[1].a_shape == (3, 5, 4)
    assert "ein_" in ops[0].kernel.tree.computation.name
    with torch.no_grad():
        for got, want in zip(compiled(*args), model(*args)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_batched_bert_attention_reads_views_in_place(records: str) -> None:
    torch.manual_seed(6)
    model = zoo.bert_layer(hidden=64, heads=4, ffn=32).eval()
    x = torch.randn(3, 10, 64)
    compiled = looptune.compile(model, x, records=records, quiet=True, search="base")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    scores, context = _mm_ops(compiled)
    assert scores.a_shape == (3, 4, 10, 16)  # [batch][heads] kept: a contraction over both
    (access,) = [k.facts["access"] for k in scores._by_strides.values()]
    assert access == {"in0": "in_place", "in1": "packed", "out": "dense"}
    (access,) = [k.facts["access"] for k in context._by_strides.values()]
    assert access == {"in0": "dense", "in1": "in_place", "out": "in_place"}


class Siblings(nn.Module):
    """Linears on one input (odd widths, one without bias), one on another input, and one on
    the same input whose ReLU keeps it apart."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 7), nn.Linear(12, 5, bias=False)
        self.c = nn.Linear(12, 9)
        self.other = nn.Linear(12, 7)
        self.r = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        a, b, c = self.a(x), self.b(x), self.c(x)
        return a * 2, b, c.sum(-1), self.other(y), torch.relu(self.r(x))


@pytest.mark.parametrize("quantize", [None, "dynamic"])
def test_sibling_linears_merge_into_one_gemm(quantize, records: str) -> None:
    torch.manual_seed(5)
    model = Siblings().eval()
    args = (torch.randn(2, 6, 12), torch.randn(2, 6, 12))
    merged = looptune.compile(model, args, records=records, quiet=True, search="base",
                              quantize=quantize)
    layers = merged.plan.layers
    (big,) = [la for la in layers if la.parts]
    assert [(a, b) for _, a, b in big.parts] == [(0, 7), (7, 12), (12, 21)]
    assert big.dims["n"] == 21 and len(layers) == 3  # the merged one, other, r
    assert "3 linears as 1 merged GEMMs" in merged.summary
    assert "5 linear" in merged.summary
    with torch.no_grad():
        got = merged(*args)
        if quantize is None:
            for g, w in zip(got, model(*args)):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        else:  # the int8 kernels' columns are the same computations merged or not
            apart = looptune.compile(model, args, records=records, quiet=True, search="base",
                                     quantize=quantize, fuse=False)
            assert not any(la.parts for la in apart.plan.layers)
            for g, w in zip(got, apart(*args)):
                assert torch.equal(g, w)
