"""Kernels on caller buffers with arbitrary element strides (``compile(strides=...)``): the
BERT attention views, invented layouts, int8, epilogues, threads, and every refusal."""

from __future__ import annotations

import random

import numpy as np
import pytest
from isas import ISA_PARAMS

import looptune
from looptune import _core
from looptune.errors import CompileError
from looptune.fuzz import GuardedArrays, mark_parallel, random_schedule, random_strides


def elem_strides(x: np.ndarray) -> tuple[int, ...]:
    return tuple(s // x.itemsize for s in x.strides)


def with_threads(n: int):
    class _Threads:
        def __enter__(self):
            self.old = _core.get_num_threads()
            _core.set_num_threads(n)

        def __exit__(self, *exc):
            _core.set_num_threads(self.old)

    return _Threads()


def parallel(tree: looptune.LoopTree) -> looptune.LoopTree:
    """``tree`` with a parallel loop (when one may be)."""
    return mark_parallel(tree, random.Random(0)) if tree.parallel_loop is None else tree


def attention_views(rng: np.random.Generator):
    """q [12,128,64] (strides (64, 768, 1)), k^T [12,64,128] (strides (64, 1, 768)) and v as
    torch's views of [128, 768] projections give them, and the context buffer."""
    q_buf, k_buf, v_buf = (rng.standard_normal((128, 768), dtype=np.float32) for _ in range(3))
    q = q_buf.reshape(128, 12, 64).transpose(1, 0, 2)
    kt = k_buf.reshape(128, 12, 64).transpose(1, 2, 0)
    v = v_buf.reshape(128, 12, 64).transpose(1, 0, 2)
    return q, kt, v


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("threads", [1, 2])
def test_attention_scores_read_q_in_place_and_pack_k_transposed(isa: str, threads: int) -> None:
    q, kt, _ = attention_views(np.random.default_rng(0))
    assert elem_strides(q) == (64, 768, 1) and elem_strides(kt) == (64, 1, 768)
    tree = parallel(looptune.batch_matmul(12, 128, 64, 128).default_schedule())
    kernel = tree.compile(isa, strides={"in0": elem_strides(q), "in1": elem_strides(kt)})
    assert kernel.facts["access"] == {"in0": "in_place", "in1": "packed", "out": "dense"}
    assert kernel.strides == {"in0": (64, 768, 1), "in1": (64, 1, 768), "out": None}
    with with_threads(threads):
        got = kernel(q, kt)
    want = np.matmul(q.astype(np.float64), kt.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("threads", [1, 2])
def test_attention_context_reads_v_and_writes_the_transposed_output_in_place(
        isa: str, threads: int) -> None:
    rng = np.random.default_rng(1)
    _, _, v = attention_views(rng)
    p = rng.random((12, 128, 128), dtype=np.float32)
    ctx = np.full((128, 770), 7.0, np.float32)  # rows padded by 2: a border that stays
    out = ctx[:, :768].reshape(128, 12, 64).transpose(1, 0, 2)
    assert elem_strides(out) == (64, 770, 1)
    tree = parallel(looptune.batch_matmul(12, 128, 128, 64).default_schedule())
    kernel = tree.compile(isa, strides={"in1": elem_strides(v), "out": elem_strides(out)})
    assert kernel.facts["access"] == {"in0": "dense", "in1": "in_place", "out": "in_place"}
    with with_threads(threads):
        assert kernel(p, v, out) is out
    want = np.matmul(p.astype(np.float64), v.astype(np.float64))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert np.all(ctx[:, 768:] == 7.0)


def test_q_and_k_views_of_one_fused_qkv_buffer() -> None:
    qkv = np.random.default_rng(2).standard_normal((128, 3 * 768), dtype=np.float32)
    q = qkv[:, :768].reshape(128, 12, 64).transpose(1, 0, 2)
    kt = qkv[:, 768:1536].reshape(128, 12, 64).transpose(1, 2, 0)
    kernel = looptune.batch_matmul(12, 128, 64, 128).default_schedule().compile(
        strides={"in0": elem_strides(q), "in1": elem_strides(kt)})
    np.testing.assert_allclose(kernel(q, kt), np.matmul(q, kt), rtol=1e-5, atol=1e-4)


SHAPES = [
    ("matmul", (7, 13, 29)),
    ("matmul", (33, 17, 40)),
    ("bmm", (3, 9, 19, 23)),
    ("bmm", (2, 17, 5, 33)),
    ("contraction", ("kab,bc->kac", {"k": 3, "a": 7, "b": 9, "c": 17})),
]


def make(kind: str, args, dtype: str = "float32", epilogue: str = "") -> looptune.Computation:
    if kind == "matmul":
        return looptune.matmul(*args, dtype=dtype, epilogue=epilogue)
    if kind == "bmm":
        return looptune.batch_matmul(*args, dtype=dtype, epilogue=epilogue)
    return looptune.contraction(*args, epilogue=epilogue)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("kind,args", SHAPES)
def test_random_layouts_equal_the_plain_kernel(isa: str, kind: str, args) -> None:
    from looptune.measure.reference import random_inputs

    comp = make(kind, args)
    a, b = random_inputs(comp, seed=3)
    rng = random.Random(str(args))
    mem = GuardedArrays()
    try:
        for trial in range(6):
            tree = random_schedule(comp, rng)
            plain = tree.compile(isa)(a, b)
            strides = {t: random_strides(x.shape, rng)
                       for t, x in (("in0", a), ("in1", b), ("out", plain))}
            views = {}
            for t, x in (("in0", a), ("in1", b), ("out", plain)):
                span = 1 + sum((n - 1) * s for n, s in zip(x.shape, strides[t]))
                base = mem.array((span,))
                base[...] = np.nan
                views[t] = np.lib.stride_tricks.as_strided(
                    base, x.shape, tuple(4 * s for s in strides[t]))
                views[t + "_base"] = base
            views["in0"][...] = a
            views["in1"][...] = b
            kernel = tree.compile(isa, strides=strides)
            for threads in (1, 2):
                with with_threads(threads):
                    kernel(views["in0"], views["in1"], views["out"])
                np.testing.assert_array_equal(views["out"], plain, err_msg=f"trial {trial}")
            # every element of the out buffer outside the view is untouched
            touched = np.zeros(views["out_base"].shape, bool)
            np.lib.stride_tricks.as_strided(touched, plain.shape, tuple(
                s for s in strides["out"]))[...] = True
            assert np.all(np.isnan(views["out_base"][~touched]))
    finally:
        mem.close()


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("epilogue", ["bias", "bias+add+relu", "add+gelu"])
@pytest.mark.parametrize("threads", [1, 2])
def test_epilogues_with_a_strided_output(isa: str, epilogue: str, threads: int) -> None:
    from looptune.measure.reference import epilogue_inputs, expected, random_inputs

    comp = looptune.batch_matmul(4, 19, 24, 32, epilogue=epilogue)
    a, b = random_inputs(comp, seed=4)
    extra = epilogue_inputs(comp, seed=4)
    want = expected(comp, a, b, **extra)
    buf = np.zeros((19, 4 * 32 + 5), np.float32)
    out = buf[:, :128].reshape(19, 4, 32).transpose(1, 0, 2)
    kw = dict(extra)
    if "residual" in kw:
        rbuf = np.zeros_like(buf)
        kw["residual"] = rbuf[:, :128].reshape(19, 4, 32).transpose(1, 0, 2)
        kw["residual"][...] = extra["residual"]
    for tree in (comp.default_schedule(), parallel(comp.default_schedule())):
        kernel = tree.compile(isa, strides={"out": elem_strides(out)})
        assert kernel.facts["access"]["out"] in ("in_place", "packed")
        with with_threads(threads):
            kernel(a, b, out, **kw)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
        assert np.all(buf[:, 128:] == 0)


def accumulating_schedule(comp: looptune.Computation, isa: str) -> looptune.LoopTree:
    """A schedule of ``comp`` whose kernel accumulates into its output (a reduction loop
    outside the register tile: the output is zeroed first, the epilogue not fused)."""
    rng = random.Random(11)
    for _ in range(500):
        tree = random_schedule(comp, rng)
        if not tree.compile(isa).facts["zero_init"]:
            return tree
    raise AssertionError("no accumulating schedule found")


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("epilogue", ["", "bias+add+relu"])
def test_accumulating_kernels_zero_only_their_strided_output(isa: str, epilogue: str) -> None:
    from looptune.measure.reference import epilogue_inputs, expected, random_inputs

    comp = looptune.batch_matmul(3, 17, 40, 24, epilogue=epilogue)
    tree = accumulating_schedule(comp, isa)
    a, b = random_inputs(comp, seed=9)
    extra = epilogue_inputs(comp, seed=9)
    want = expected(comp, a, b, **extra)
    buf = np.full((17, 3 * 24 + 3), 5.0, np.float32)
    out = buf[:, :72].reshape(17, 3, 24).transpose(1, 0, 2)
    kw = dict(extra)
    if "residual" in kw:
        kw["residual"] = np.zeros_like(buf)[:, :72].reshape(17, 3, 24).transpose(1, 0, 2)
        kw["residual"][...] = extra["residual"]
    kernel = tree.compile(isa, strides={"out": elem_strides(out)})
    # without an epilogue the zeroing is strided and in place; a pass epilogue needs the copy
    assert kernel.facts["access"]["out"] == ("packed" if epilogue else "in_place")
    for threads in (1, 2):
        with with_threads(threads):
            kernel(a, b, out, **kw)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
        assert np.all(buf[:, 72:] == 5.0)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("kind,args", [("matmul", (9, 70, 33)), ("bmm", (3, 17, 13, 21))])
@pytest.mark.parametrize("threads", [1, 2])
def test_int8_strided_operands_are_exact(isa: str, kind: str, args, threads: int) -> None:
    from looptune.fuzz import int8_expected, int8_inputs

    comp = make(kind, args, dtype="int8")
    if _core.isa_facts(isa)["int8_path"] == "none":
        pytest.skip("no int8 path")
    a, b = int8_inputs(comp, seed=5, extreme=True)
    want = int8_expected(comp, a, b)
    # a with padded rows, b transposed (its last dim strided), out transposed too
    abuf = np.zeros(a.shape[:-1] + (a.shape[-1] + 3,), np.uint8)
    av = abuf[..., : a.shape[-1]]
    av[...] = a
    bv = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    obuf = np.full(np.swapaxes(want, -1, -2).shape, 0x5A, np.int32)
    ov = np.swapaxes(obuf, -1, -2)
    tree = parallel(comp.default_schedule())
    kernel = tree.compile(isa, strides={"in0": elem_strides(av), "in1": elem_strides(bv),
                                        "out": elem_strides(ov)})
    assert kernel.facts["access"]["in1"] == "packed"
    with with_threads(threads):
        kernel(av, bv, ov)
    np.testing.assert_array_equal(ov, want)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_int8_dequantizing_epilogue_with_a_strided_output(isa: str) -> None:
    from looptune.fuzz import int8_expected, int8_inputs

    comp = looptune.matmul(16, 40, 24, dtype="int8", epilogue="scale+bias")
    a, b = int8_inputs(comp, seed=6)
    scale = np.random.default_rng(6).uniform(1e-4, 1e-3, 24).astype(np.float32)
    bias = np.random.default_rng(7).standard_normal(24).astype(np.float32)
    want = int8_expected(comp, a, b).astype(np.float64) * scale + bias
    obuf = np.zeros((24, 16), np.float32)
    kernel = comp.default_schedule().compile(isa, strides={"out": (1, 16)})
    kernel(a, b, obuf.T, scale=scale, bias=bias)
    np.testing.assert_allclose(obuf.T, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- refusals


def scores_kernel():
    return looptune.batch_matmul(12, 128, 64, 128).default_schedule().compile(
        strides={"in0": (64, 768, 1), "in1": (64, 1, 768)})


def test_other_strides_at_call_are_a_value_error() -> None:
    q, kt, _ = attention_views(np.random.default_rng(8))
    kernel = scores_kernel()
    with pytest.raises(ValueError, match="compiled for strides"):
        kernel(np.ascontiguousarray(q), kt)
    with pytest.raises(ValueError, match="compiled for strides"):
        kernel(q, np.ascontiguousarray(kt))
    with pytest.raises(ValueError, match="shape"):
        kernel(q[:, :5], kt)
    dense = looptune.batch_matmul(12, 128, 64, 128).default_schedule().compile()
    with pytest.raises(ValueError, match="C-contiguous"):
        dense(q, kt)


def test_a_strided_output_must_be_given_with_its_strides() -> None:
    kernel = looptune.matmul(8, 8, 8).default_schedule().compile(strides={"out": (1, 8)})
    a = np.ones((8, 8), np.float32)
    with pytest.raises(ValueError, match="out is required"):
        kernel(a, a)
    with pytest.raises(ValueError, match="compiled for strides"):
        kernel(a, a, np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        kernel(a, a, a.T)
    buf = np.zeros((8, 8), np.float32)
    kernel(a, a, buf.T)
    np.testing.assert_array_equal(buf, 8.0)


def test_a_residual_takes_the_strides_of_its_output() -> None:
    comp = looptune.matmul(8, 8, 8, epilogue="add")
    kernel = comp.default_schedule().compile(strides={"out": (1, 8)})
    a = np.ones((8, 8), np.float32)
    buf = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="residual"):
        kernel(a, a, buf.T, residual=np.ones((8, 8), np.float32))
    kernel(a, a, buf.T, residual=np.ones((8, 8), np.float32).T)
    np.testing.assert_array_equal(buf, 9.0)


@pytest.mark.parametrize("strides,error,match", [
    ({"in0": (64, 1)}, ValueError, "needs 3 strides"),
    ({"in0": (64, 0, 1)}, ValueError, "positive"),
    ({"in1": (64, -1, 768)}, ValueError, "positive"),
    ({"out": (2**62, 1, 1)}, ValueError, "positive"),
    ({"out": (2**70, 1, 1)}, ValueError, "out of range"),
    ({"out": (64, 1, 1)}, ValueError, "share memory"),
    ({"out": (128 * 128, 64, 1)}, ValueError, "share memory"),
    ({"in2": (1, 1, 1)}, ValueError, "unknown tensor"),
    ({"in0": ()}, ValueError, "empty"),
    ({"in0": (1.0, 2, 3)}, TypeError, "ints"),
    ({"in0": "abc"}, TypeError, "sequence"),
    ([("in0", (1, 2, 3))], TypeError, "dict"),
])
def test_bad_strides_are_refused_at_compile(strides, error, match) -> None:
    tree = looptune.batch_matmul(12, 128, 64, 128).default_schedule()
    with pytest.raises(error, match=match):
        tree.compile(strides=strides)


def test_strides_are_not_combined_with_a_view_or_a_constant_operand() -> None:
    comp = looptune.matmul(8, 8, 8)
    with pytest.raises(ValueError, match="buffer view"):
        comp.default_schedule().compile(in_view=((8, 8), (0, 0)), strides={"in0": (8, 1)})
    kernel = comp.default_schedule().compile(strides={"in1": (1, 8)})
    with pytest.raises(ValueError, match="constant"):
        kernel.set_constant(np.ones((8, 8), np.float32))
    with pytest.raises(CompileError, match="buffer views"):
        comp.default_schedule().compile(in_view=((8, 9), (0, 0))).benchmark(min_time=0.0)


@pytest.mark.parametrize("epilogue", ["", "bias+add+gelu"])
def test_strided_kernels_time_their_packing(epilogue: str) -> None:
    q_strides, kt_strides = (64, 768, 1), (64, 1, 768)
    comp = looptune.batch_matmul(12, 128, 64, 128, epilogue=epilogue)
    kernel = comp.default_schedule().compile(
        strides={"in0": q_strides, "in1": kt_strides, "out": (128, 12 * 128, 1)})
    r = kernel.benchmark(min_time=0.0, min_runs=2, threads=2)
    assert r.runs >= 2 and r.gflops > 0


def test_inputs_may_overlap_themselves() -> None:
    # a read-only view whose rows overlap (a sliding window) is a legal input
    base = np.arange(20, dtype=np.float32)
    a = np.lib.stride_tricks.as_strided(base, (8, 5), (4, 4))
    b = np.ones((5, 3), np.float32)
    kernel = looptune.matmul(8, 5, 3).default_schedule().compile(strides={"in0": (1, 1)})
    np.testing.assert_array_equal(kernel(a, b), a @ b)


def test_numpy_integer_strides_and_extent_one_dims() -> None:
    # numpy integers are ints; a dim of extent 1 may have any stride at the call
    comp = looptune.batch_matmul(1, 5, 3, 4)
    kernel = comp.default_schedule().compile(
        strides={"in1": tuple(np.int64(s) for s in (99, 1, 3))})
    b = np.arange(12, dtype=np.float32).reshape(4, 3).T[None]
    a = np.ones((1, 5, 3), np.float32)
    np.testing.assert_allclose(kernel(a, b), np.matmul(a, b))
    # stride 0 on a dim of extent 1 (np.broadcast_to, torch's expand)
    kernel = comp.default_schedule().compile(strides={"in0": (0, 3, 1)})
    a0 = np.broadcast_to(np.ones((5, 3), np.float32), (1, 5, 3))
    assert a0.strides[0] == 0
    np.testing.assert_allclose(kernel(a0, np.ascontiguousarray(b)), np.matmul(a0, b))


def test_the_fuzzer_checks_strided_layouts() -> None:
    from looptune import fuzz

    checked = 0
    for index in range(4):
        res = fuzz.run_case(2, index, 2)
        assert res["wrong"] == [] and res["exceptions"] == []
        checked += res.get("strided", 0)
    assert checked > 0


def test_torch_views_go_in_as_they_are() -> None:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    proj = [torch.randn(1, 128, 768, generator=g) for _ in range(2)]
    q, k = (x.view(1, 128, 12, 64).transpose(1, 2)[0] for x in proj)
    kt = k.transpose(-2, -1)
    kernel = looptune.batch_matmul(12, 128, 64, 128).default_schedule().compile(
        strides={"in0": q.stride(), "in1": kt.stride()})
    got = kernel(q, kt)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, torch.matmul(q, kt), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="compiled for strides"):
        kernel(q.contiguous(), kt)
    dense = looptune.batch_matmul(12, 128, 64, 128).default_schedule().compile()
    with pytest.raises(ValueError, match="contiguous"):
        dense(q, kt)


def test_a_pickled_strided_kernel_keeps_its_strides() -> None:
    import pickle

    kernel = looptune.matmul(8, 8, 8).default_schedule().compile(strides={"in1": (1, 8)})
    back = pickle.loads(pickle.dumps(kernel))
    assert back.strides == kernel.strides and back.facts["access"] == kernel.facts["access"]
    a = np.arange(64, dtype=np.float32).reshape(8, 8)
    np.testing.assert_array_equal(back(a, a.T), a @ a.T)
