"""Epilogues (bias, residual add, relu / relu6 / gelu) on every kind of computation: values
against numpy in float64 for every term combination, layout, ISA and both ways a kernel writes
its output (once, from registers; or accumulated across reduction loops); GELU against torch's
exact GELU; the header / dump / hash round trip; typed errors."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

import looptune
from looptune.agent import tiler
from looptune.measure.reference import (
    apply_epilogue,
    epilogue_inputs,
    expected,
    random_inputs,
    reduction_length,
)
from looptune.space import schedules as S

SPECS = [
    "+".join(t for t in (b, a, act) if t)
    for b, a, act in itertools.product(("", "bias"), ("", "add"), ("", "relu", "relu6", "gelu"))
    if b or a or act
]

# (id, factory(epilogue) -> Computation): plain, blocked / packed and transposed layouts, odd
# sizes (tails), padded and strided conv2d
COMPS = {
    "matmul": lambda e: looptune.matmul(13, 7, 37, layout="plain", epilogue=e),
    "matmul_packed": lambda e: looptune.matmul(33, 17, 40, layout="blocked8", epilogue=e),
    "matmul_transposed_b": lambda e: looptune.matmul(11, 19, 3, layout="blocked1", epilogue=e),
    "bmm": lambda e: looptune.batch_matmul(3, 7, 19, 17, epilogue=e),
    "conv_padded": lambda e: looptune.conv2d(
        1, 3, 7, 9, 5, 3, 3, stride=1, pad=1, layout="plain", epilogue=e),
    "conv_blocked": lambda e: looptune.conv2d(
        2, 3, 6, 7, 16, 3, 2, stride=2, pad=2, layout="blocked8", epilogue=e),
    "conv_blocked_tail": lambda e: looptune.conv2d(
        1, 2, 5, 5, 19, 2, 2, stride=1, pad=0, layout="blocked16", epilogue=e),
    "contraction_scalar": lambda e: looptune.contraction("ab,bc->ca", a=6, b=5, c=9,
                                                          epilogue=e),
    "contraction": lambda e: looptune.contraction("ab,bc->ac", a=29, b=5, c=19, epilogue=e),
}


def _trees(comp: looptune.Computation, isa: str) -> list[looptune.LoopTree]:
    """The base schedule, every reduction loop outermost (the output is accumulated in memory
    across reduction iterations) and the rule tilings (mostly written once from registers)."""
    red = [(v.name, 1) for v in comp.vars if v.reduction]
    accumulated = S.from_steps(comp, red + [(v.name, 1) for v in comp.vars if not v.reduction])
    return [comp.default_schedule(), accumulated, *tiler.candidates(comp, isa)[1:7]]


def _check(kernel: looptune.Kernel, seed: int = 0) -> tuple[float, float]:
    comp = kernel.tree.computation
    a, b = random_inputs(comp, seed)
    extra = epilogue_inputs(comp, seed)
    got = kernel(a, b, **extra)
    want = expected(comp, a, b, **extra)
    tol = 1e-5 + 2e-6 * reduction_length(comp)
    return float(np.max(np.abs(got - want))), tol


@pytest.mark.parametrize("kind", list(COMPS))
def test_every_epilogue_matches_numpy(kind: str, cpu_isa: str) -> None:
    written_once = accumulated = 0
    fused = {True: 0, False: 0}
    for spec in SPECS:
        comp = COMPS[kind](spec)
        assert comp.epilogue == spec
        for tree in _trees(comp, cpu_isa):
            kernel = tree.compile(cpu_isa)
            if kernel.facts["zero_init"]:
                written_once += 1
            else:
                accumulated += 1
                assert not kernel.facts["epilogue_fused"]  # then a pass applies it
            if "gelu" in spec and kernel.facts["out_transposed"]:
                assert not kernel.facts["epilogue_fused"]
            fused[kernel.facts["epilogue_fused"]] += 1
            err, tol = _check(kernel)
            assert err <= tol, (kind, spec, tree.dump(), err)
    assert written_once and accumulated, (written_once, accumulated)
    assert fused[False]  # the accumulated schedule at least
    # not fused: an output copied from a blocked layout, a vectorized reduction, scalar code
    if kind not in ("conv_blocked_tail", "matmul_transposed_b", "contraction_scalar"):
        assert fused[True], kind


def test_epilogue_after_the_relayout_copy_and_transposed_store(cpu_isa: str) -> None:
    """A blocked conv output reaches the user's layout through the copy pass (tail block) or
    the in-register transposed store; the epilogue sees the final user-layout values."""
    seen, fused_transposed = set(), 0
    for comp in (
        looptune.conv2d(1, 3, 8, 8, 16, 3, 3, pad=1, layout="blocked8", epilogue="bias+add+gelu"),
        looptune.conv2d(1, 3, 8, 8, 16, 3, 3, pad=1, layout="blocked8",
                        epilogue="bias+add+relu6"),
        looptune.conv2d(1, 3, 8, 8, 13, 3, 3, pad=1, layout="blocked8", epilogue="bias+relu"),
    ):
        for tree in _trees(comp, cpu_isa):
            kernel = tree.compile(cpu_isa)
            seen.add(kernel.facts["out_transposed"])
            fused_transposed += kernel.facts["out_transposed"] and kernel.facts["epilogue_fused"]
            err, tol = _check(kernel)
            assert err <= tol
    assert seen == {True, False} and fused_transposed


def test_gelu_matches_torch_exact_gelu_over_a_wide_range(cpu_isa: str) -> None:
    x = np.concatenate([
        np.linspace(-30, 30, 6001),
        np.linspace(-1e-3, 1e-3, 101),
        np.random.default_rng(0).standard_normal(4000) * 4,
        [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, 1e4, -1e4],
    ]).astype(np.float32)
    comp = looptune.matmul(1, 1, x.size, layout="plain", epilogue="gelu")
    kernel = comp.default_schedule().compile(cpu_isa)
    got = kernel(np.ones((1, 1), np.float32), x[None, :])[0].astype(np.float64)
    ref = torch.nn.functional.gelu(torch.from_numpy(x.astype(np.float64))).numpy()
    err = np.abs(got - ref)
    # erfc's approximation has an absolute error under 1.5e-7, so GELU's is under ~1e-7 |x|
    # plus float32 rounding; relative error under 2e-6 wherever x > -1 (in the negative tail,
    # where GELU falls to 0, the error stays absolute, as it is for torch's float32 GELU)
    assert np.all(err <= 2e-7 * np.maximum(1.0, np.abs(x)) + 2e-7 * np.abs(ref)), (
        float(np.max(err)), float(x[np.argmax(err)]))
    near = (x > -1) & (np.abs(ref) > 1e-30)
    assert np.max(err[near] / np.abs(ref[near])) < 2e-6
    assert np.all(np.isfinite(got))
    # the float32 torch GELU the user compares with
    ref32 = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert np.allclose(got, ref32, rtol=2e-6, atol=2e-6)


def test_relu6_and_relu_clamp_exactly(cpu_isa: str) -> None:
    x = np.array([[-7.0, -0.5, 0.0, 0.25, 5.99, 6.0, 6.5, 100.0, -0.0]], np.float32)
    for spec, want in (("relu", np.maximum(x, 0)), ("relu6", np.clip(x, 0, 6))):
        k = looptune.matmul(1, 1, x.shape[1], layout="plain", epilogue=spec).default_schedule()
        got = k.compile(cpu_isa)(np.ones((1, 1), np.float32), x)
        np.testing.assert_array_equal(got, want)


def test_bias_and_residual_land_on_the_right_elements() -> None:
    """Output channel of conv2d is dim 1 (K); of matmul/bmm the last dim (N)."""
    conv = looptune.conv2d(2, 1, 3, 4, 5, 1, 1, layout="plain", epilogue="bias+add")
    x = np.zeros((2, 1, 3, 4), np.float32)
    w = np.zeros((5, 1, 1, 1), np.float32)
    bias = np.arange(5, dtype=np.float32)
    res = np.random.default_rng(1).standard_normal((2, 5, 3, 4)).astype(np.float32)
    got = conv.default_schedule().compile()(x, w, bias=bias, residual=res)
    np.testing.assert_allclose(got, res + bias[None, :, None, None], rtol=1e-6)
    mm = looptune.batch_matmul(2, 3, 1, 4, epilogue="bias")
    got = mm.default_schedule().compile()(
        np.zeros((2, 3, 1), np.float32), np.zeros((2, 1, 4), np.float32),
        bias=np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(got, np.broadcast_to(np.arange(4, dtype=np.float32), (2, 3, 4)))
    assert conv.bias_shape == (5,) and mm.bias_shape == (4,)


def test_header_dump_parse_hash_and_pickle_keep_the_epilogue() -> None:
    plain = looptune.conv2d(1, 4, 8, 8, 16, 3, 3, pad=1, groups=2, layout="blocked8")
    comp = plain.with_epilogue("bias+add+relu")
    assert comp.header().endswith("groups=2 block=8 epilogue=bias+add+relu")
    assert comp.name.endswith("_g2_b8_bias_add_relu")
    assert looptune.parse_computation(comp.header()) == comp
    assert comp != plain and hash(comp) != hash(plain)
    tree = S.tilings(comp, looptune.host_isa())[0]
    back = looptune.LoopTree.parse(tree.dump())
    assert back == tree and back.computation.epilogue == "bias+add+relu"
    assert back.hash() == tree.hash()
    assert tree.hash() != looptune.LoopTree.parse(tree.dump().replace(
        " epilogue=bias+add+relu", "")).hash()
    assert pickle.loads(pickle.dumps(comp)) == comp
    kernel = tree.compile()
    again = pickle.loads(pickle.dumps(kernel))
    assert again.tree.computation.epilogue == "bias+add+relu"
    # the epilogue key may come anywhere in a header
    assert looptune.parse_computation(
        "matmul epilogue=gelu m=2 k=3 n=4") == looptune.matmul(2, 3, 4, layout="plain",
                                                               epilogue="gelu")


@pytest.mark.parametrize("spec", ["relu+bias", "bias+bias", "sigmoid", "bias+", "+relu",
                                  "add+bias", "relu+gelu", "Bias", "bias relu"])
def test_bad_specs_name_the_allowed_terms(spec: str) -> None:
    with pytest.raises(ValueError, match="'bias'.*'add'.*'relu' \\| 'relu6' \\| 'gelu'"):
        looptune.matmul(2, 2, 2, epilogue=spec)
    with pytest.raises(ValueError):
        looptune.parse_computation(f"matmul m=2 k=2 n=2 epilogue={spec.replace(' ', '')}")


def test_missing_extra_and_malformed_operands_raise_typed_errors() -> None:
    comp = looptune.matmul(4, 3, 5, layout="plain", epilogue="bias+add+relu")
    k = comp.default_schedule().compile()
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    bias, res = np.ones(5, np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(TypeError, match="bias is required"):
        k(a, b, residual=res)
    with pytest.raises(TypeError, match="residual is required"):
        k(a, b, bias=bias)
    with pytest.raises(ValueError, match="shape"):
        k(a, b, bias=np.ones(4, np.float32), residual=res)
    with pytest.raises(ValueError, match="shape"):
        k(a, b, bias=bias, residual=np.ones((5, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        k(a, b, bias=bias.astype(np.float64), residual=res)
    with pytest.raises(TypeError, match="float32"):
        k(a, b, bias=bias, residual=[[1.0] * 5] * 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        k(a, b, bias=bias, residual=np.ones((5, 4), np.float32).T)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bais'"):
        k(a, b, bais=bias, residual=res)
    out = np.empty((4, 5), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        k(a, b, out, bias=bias, residual=out)
    plain = looptune.matmul(4, 3, 5, layout="plain").default_schedule().compile()
    with pytest.raises(TypeError, match="has no bias"):
        plain(a, b, bias=bias)
    with pytest.raises(TypeError, match="has no 'add'"):
        plain(a, b, residual=res)
    with pytest.raises(TypeError, match="has no bias"):
        plain.set_constant(b, bias=bias)
    with pytest.raises(TypeError, match="has no 'add'"):
        looptune.matmul(4, 3, 5, epilogue="relu").default_schedule().compile()(
            a, b, residual=res)
    # torch tensors go through the interop fallback with the same checks
    with pytest.raises(TypeError, match="bias is required"):
        k(torch.ones(4, 3), torch.ones(3, 5), residual=torch.ones(4, 5))
    with pytest.raises(TypeError, match="torch.float32"):
        k(a, b, bias=torch.ones(5, dtype=torch.float64), residual=res)
    with pytest.raises(TypeError, match="requires grad"):
        k(a, b, bias=torch.ones(5, requires_grad=True), residual=res)


def test_set_constant_fixes_the_bias_and_torch_tensors_work() -> None:
    comp = looptune.conv2d(1, 4, 9, 9, 8, 3, 3, stride=2, pad=1, epilogue="bias+add+relu6")
    kernel = S.tilings(comp, looptune.host_isa())[0].compile()
    a, b = random_inputs(comp, 3)
    extra = epilogue_inputs(comp, 3)
    want = expected(comp, a, b, **extra)
    kernel.set_constant(b, bias=extra["bias"])
    assert kernel.has_constant and kernel.has_constant_bias
    np.testing.assert_allclose(kernel(a, residual=extra["residual"]), want, atol=1e-5)
    # an explicit bias overrides the constant one
    np.testing.assert_allclose(kernel(a, b, bias=extra["bias"] * 0,
                                      residual=extra["residual"]),
                               apply_epilogue(comp, expected(comp.with_epilogue(""), a, b),
                                              extra["bias"] * 0, extra["residual"]), atol=1e-5)
    got = kernel(torch.from_numpy(a), residual=torch.from_numpy(extra["residual"]))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    out = torch.empty(tuple(comp.output.shape))
    assert kernel(torch.from_numpy(a), b, out, bias=torch.from_numpy(extra["bias"]),
                  residual=extra["residual"]) is out
    np.testing.assert_allclose(out.numpy(), want, atol=1e-5)


def test_benchmark_and_harness_time_the_epilogue() -> None:
    from looptune.measure.harness import kernel_entrant, time_entrant

    comp = looptune.matmul(32, 16, 24, epilogue="bias+add+gelu")
    kernel = comp.default_schedule().compile()
    assert kernel.benchmark(min_time=0.0, min_runs=2).runs >= 2
    t = time_entrant(comp, kernel_entrant(kernel), "looptune", min_time=0.001, min_runs=2)
    assert t.ok, t


def test_search_and_cli_accept_epilogues(capsys: pytest.CaptureFixture[str]) -> None:
    from looptune.cli import main
    from looptune.search import get

    comp = looptune.matmul(48, 32, 40, epilogue="bias+relu")
    res = get("agent")(comp.default_schedule(), measure_budget=4)
    assert res.best_tree.computation == comp
    assert main(["tune", "matmul", "16", "8", "24", "--epilogue", "bias+gelu",
                 "--search", "base"]) == 0
    assert "epilogue=bias+gelu" in capsys.readouterr().out
    assert main(["tune", "matmul", "16", "8", "24", "--epilogue", "tanh"]) == 2
    assert "'relu' | 'relu6' | 'gelu'" in capsys.readouterr().err


@pytest.mark.skipif(not looptune.isa_supported("avx2"), reason="needs AVX2")
def test_fused_gelu_needs_four_scratch_registers_else_the_pass_applies_it() -> None:
    """AVX2: a 4 x (8+8+4) tile holds 12 accumulators and the tail mask, leaving 3 registers:
    GELU is applied by the pass; a 3-row tile fuses it. Both compute the same values."""
    comp = looptune.matmul(24, 16, 20, layout="plain", epilogue="bias+add+gelu")
    fused = []
    for rows in (4, 3):
        tree = S.from_steps(comp, [("m", rows), ("k", 1), ("m", 1), ("n", 1)])
        kernel = tree.compile("avx2")
        assert kernel.facts["zero_init"]
        fused.append(kernel.facts["epilogue_fused"])
        err, tol = _check(kernel)
        assert err <= tol
    assert fused == [False, True]


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_epilogue_with_a_parallel_loop_is_exact_at_every_thread_count(threads: int,
                                                                       cpu_isa: str) -> None:
    """A parallel outer loop (fused epilogue: each thread's range carries the bias and residual
    pointers; the pass: rows shared among threads) gives the 1-thread result bit for bit."""
    ran = fused = 0
    for comp in (
        looptune.matmul(67, 32, 48, layout="plain", epilogue="bias+add+relu6"),
        looptune.matmul(67, 32, 48, layout="plain", epilogue="bias+gelu"),
        looptune.conv2d(2, 4, 11, 9, 16, 3, 3, pad=1, layout="blocked8",
                        epilogue="bias+add+relu"),
        looptune.conv2d(1, 24, 13, 11, 24, 3, 3, stride=2, pad=1, groups=24,
                        epilogue="bias+relu6"),
    ):
        for tree in _trees(comp, cpu_isa)[2:6]:
            try:
                par = tree.toggle_parallel()  # the cursor's loop: the outermost
            except looptune.IllegalActionError:  # a reduction loop
                continue
            kernel = par.compile(cpu_isa)
            ran += kernel.threads_used(threads) > 1
            fused += kernel.facts["epilogue_fused"]
            a, b = random_inputs(comp, 5)
            extra = epilogue_inputs(comp, 5)
            one = kernel(a, b, **extra)
            old = looptune._core.get_num_threads()
            looptune._core.set_num_threads(threads)
            try:
                many = kernel(a, b, **extra)
            finally:
                looptune._core.set_num_threads(old)
            np.testing.assert_array_equal(one, many)
            want = expected(comp, a, b, **extra)
            assert np.max(np.abs(one - want)) <= 1e-5 + 2e-6 * reduction_length(comp)
    assert ran >= 4 and fused >= 2, (ran, fused)
