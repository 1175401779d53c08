"""Grouped and depthwise conv2d against torch.nn.functional.conv2d: odd sizes, strides 1-2,
pads 0-2, groups in {1, 2, 4, C}, every layout, the rule tilings (the tiling agent's macros)
and both ISAs; the depthwise channel-blocked layout; headers and typed errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import looptune
from looptune.agent import tiler
from looptune.measure.reference import check_kernel, expected, random_inputs
from looptune.space import schedules as S

F = torch.nn.functional


def _torch(comp: looptune.Computation, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                    stride=comp.conv_stride, padding=comp.conv_pad, groups=comp.groups).numpy()


def _check_all(comp: looptune.Computation, isa: str, trees: int = 8) -> int:
    x, w = random_inputs(comp, 1)
    want = _torch(comp, x, w)
    np.testing.assert_allclose(expected(comp, x, w), want, atol=1e-9)  # the numpy reference
    tol = 1e-5 + 2e-6 * (w.shape[1] * w.shape[2] * w.shape[3])
    cands = tiler.candidates(comp, isa)[:trees]
    for tree in cands:
        got = tree.compile(isa)(x, w)
        assert got.shape == want.shape
        err = float(np.max(np.abs(got - want)))
        assert err <= tol, (comp.header(), tree.dump(), err)
    return len(cands)


CASES = list(itertools.product(
    [(1, 4, 7, 9, 8), (2, 8, 5, 6, 4), (1, 12, 9, 5, 12), (1, 8, 6, 11, 16)],  # n c h w k
    [1, 2],  # stride
    [0, 1, 2],  # pad
))


@pytest.mark.parametrize("shape,stride,pad", CASES)
@pytest.mark.parametrize("groups", [1, 2, 4, "c"])
def test_grouped_conv_matches_torch(shape, stride, pad, groups, cpu_isa: str) -> None:
    n, c, h, w, k = shape
    g = c if groups == "c" else groups
    if k % g:
        k = g * max(1, k // g)
    for layout in ("auto", "plain", "blocked8"):
        try:
            comp = looptune.conv2d(n, c, h, w, k, 3, 3, stride=stride, pad=pad, groups=g,
                                   layout=layout)
        except ValueError as exc:  # a blocked grouped conv needs 8 | k/g (unless depthwise)
            assert layout == "blocked8" and "divide" in str(exc)
            continue
        assert comp.groups == g and comp.inputs[1].shape == (k, c // g, 3, 3)
        assert _check_all(comp, cpu_isa) >= 2


@pytest.mark.parametrize("c,h,w,stride,pad,mult", [
    (19, 9, 10, 2, 1, 1), (33, 7, 13, 1, 1, 1), (16, 12, 12, 2, 0, 1), (24, 5, 5, 1, 2, 1),
    (5, 9, 7, 1, 1, 2), (8, 6, 9, 2, 1, 3), (1, 4, 4, 1, 1, 1),
])
def test_depthwise_matches_torch_in_every_layout(c, h, w, stride, pad, mult,
                                                 cpu_isa: str) -> None:
    k = c * mult  # a channel multiplier: groups == c, k a multiple of c
    for layout in ("auto", "plain", "blocked8", "blocked16"):
        if mult > 1 and layout.startswith("blocked"):  # k/groups channels a group: plain only
            with pytest.raises(ValueError, match="divide the output channels per group"):
                looptune.conv2d(1, c, h, w, k, 3, 3, stride=stride, pad=pad, groups=c,
                                layout=layout)
            continue
        comp = looptune.conv2d(1, c, h, w, k, 3, 3, stride=stride, pad=pad, groups=c,
                               layout=layout)
        _check_all(comp, cpu_isa, trees=12)


def test_depthwise_blocked_layout_vectorizes_every_stride(cpu_isa: str) -> None:
    lanes = 16 if cpu_isa == "avx512" else 8
    for stride in (1, 2):
        comp = looptune.conv2d(1, 3 * lanes, 14, 14, 3 * lanes, 3, 3, stride=stride, pad=1,
                               groups=3 * lanes, layout=f"blocked{lanes}")
        names = [v.name for v in comp.vars]
        assert names == ["n", "ko", "oh", "c", "r", "s", "ow", "ki"]
        x = comp.inputs[0]
        assert x.alloc_shape == (1, 3, 16, 16, lanes) and x.strides["ki"] == 1
        trees = S.tilings(comp, cpu_isa)
        assert trees
        kernel = trees[0].compile(cpu_isa)
        assert kernel.facts["vectorized"] and kernel.facts["lanes"] == lanes
        assert check_kernel(kernel).ok


def test_auto_layout_rules() -> None:
    lanes = 16 if looptune.host_isa() == "avx512" else 8
    dw = looptune.conv2d(1, 32, 8, 8, 32, 3, 3, pad=1, groups=32)
    assert dw.block == lanes  # depthwise: channels blocked
    g = looptune.conv2d(1, 8, 8, 8, 2 * lanes, 3, 3, pad=1, groups=2)
    assert g.block == lanes and "g" in [v.name for v in g.vars]
    odd = looptune.conv2d(1, 8, 8, 8, 12, 3, 3, pad=1, groups=4)  # 3 channels a group
    assert odd.block == 0 and "g" in [v.name for v in odd.vars]
    plain = looptune.conv2d(1, 8, 8, 8, 16, 3, 3, groups=1)
    assert "g" not in [v.name for v in plain.vars]
    assert plain.header() == looptune.conv2d(1, 8, 8, 8, 16, 3, 3).header()


def test_headers_round_trip_and_differ_by_groups() -> None:
    a = looptune.conv2d(1, 8, 8, 8, 8, 3, 3, pad=1, groups=8, epilogue="bias+relu6")
    b = looptune.conv2d(1, 8, 8, 8, 8, 3, 3, pad=1, groups=4, epilogue="bias+relu6")
    assert "groups=8" in a.header() and a != b and hash(a) != hash(b)
    for comp in (a, b):
        assert looptune.parse_computation(comp.header()) == comp
        tree = tiler.candidates(comp, looptune.host_isa())[-1]
        assert looptune.LoopTree.parse(tree.dump()) == tree
    assert "_g8_" in a.name


@pytest.mark.parametrize("kwargs,match", [
    ({"c": 6, "k": 8, "groups": 4}, "must divide"),
    ({"c": 8, "k": 6, "groups": 4}, "must divide"),
    ({"c": 8, "k": 8, "groups": 0}, "groups must be"),
    ({"c": 8, "k": 8, "groups": 16}, "must divide"),
    ({"c": 8, "k": 24, "groups": 2, "layout": "blocked8"}, "block"),
])
def test_bad_groups_raise_value_error(kwargs, match) -> None:
    args = {"n": 1, "h": 6, "w": 6, "r": 3, "s": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        looptune.conv2d(**args)
    with pytest.raises(ValueError):
        looptune.parse_computation(
            "conv2d n=1 c=6 h=6 w=6 k=8 r=3 s=3 stride=1 pad=0 groups=4")


def test_depthwise_with_epilogue_and_constant_weights_through_torch_tensors() -> None:
    comp = looptune.conv2d(2, 24, 11, 9, 24, 3, 3, stride=2, pad=1, groups=24,
                           epilogue="bias+add+relu6")
    kernel = tiler.candidates(comp, looptune.host_isa())[1].compile()
    x = torch.randn(2, 24, 11, 9)
    w = torch.randn(24, 1, 3, 3)
    bias = torch.randn(24)
    ref0 = F.conv2d(x, w, bias, stride=2, padding=1, groups=24)
    res = torch.randn_like(ref0)
    kernel.set_constant(w.numpy(), bias=bias.numpy())
    got = kernel(x, residual=res)
    torch.testing.assert_close(got, F.relu6(ref0 + res), atol=1e-5, rtol=1e-5)


def test_tiling_agent_and_cli_handle_depthwise(capsys: pytest.CaptureFixture[str]) -> None:
    from looptune.cli import main
    from looptune.search import get

    comp = looptune.conv2d(1, 32, 14, 14, 32, 3, 3, stride=2, pad=1, groups=32)
    assert len(tiler.candidates(comp, looptune.host_isa())) >= 3
    small = tiler.scaled(comp, 1e4)
    assert small.groups == 32 and small.flops < comp.flops
    res = get("agent")(comp.default_schedule(), measure_budget=4)
    assert res.best_tree.computation == comp and res.best_gflops > 0
    assert main(["tune", "conv2d", "1", "16", "9", "9", "16", "3", "3", "--pad", "1",
                 "--groups", "16", "--epilogue", "bias+relu", "--search", "base"]) == 0
    out = capsys.readouterr().out
    assert "groups=16" in out and "matches numpy" in out


def test_every_search_takes_a_grouped_conv() -> None:
    """The model-guided searches build layout variants: a grouped conv whose groups' channels
    the vector block does not divide has no blocked variant (and no error)."""
    from looptune.search import get

    comp = looptune.conv2d(1, 16, 9, 9, 12, 3, 3, pad=1, groups=4, epilogue="bias+relu")
    for name in ("ml2", "greedy1"):
        res = get(name)(comp.default_schedule(), measure_budget=3, time_budget=5)
        assert res.best_tree.computation == comp and res.best_gflops > 0
