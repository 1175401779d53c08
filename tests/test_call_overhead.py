"""Every path of ``kernel(...)`` after the call-overhead work gives numpy's result: the fast path
(numpy float32 arrays read off numpy's structs, output allocated without zero-fill, no lock
without relayout buffers), the general path (typed errors), torch tensors through
``Kernel._call_fallback``, constant operands, relayout layouts (conv padding, blocked channels,
B in panels or transposed, longer rows), and two Python threads calling one kernel at once."""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch

import looptune
from looptune.measure.reference import expected, random_inputs, reduction_length
from looptune.space.schedules import from_steps

# One of each kind of call the engine makes: the relayout copies it needs (in0 / in1 / out)
LAYOUTS = {
    "matmul_plain": (lambda: looptune.matmul(17, 9, 33), ()),
    "conv_padded": (lambda: looptune.conv2d(1, 3, 7, 7, 5, 3, 3, stride=2, pad=1), ("in0",)),
    "conv_blocked_partial": (  # K=20 in blocks of 16: the output goes through the copy pass
        lambda: looptune.conv2d(1, 3, 7, 7, 20, 3, 3, stride=2, pad=1, layout="blocked16"),
        ("in0", "in1", "out"),
    ),
    "matmul_panels": (lambda: looptune.matmul(37, 29, 45, layout="blocked8"), ("in1", "out")),
    "matmul_transposed_b": (lambda: looptune.matmul(19, 37, 5, layout="blocked1"), ("in1",)),
    "matmul_longer_rows": (lambda: looptune.matmul(96, 384, 512), ("in1",)),
}


def _comp(name: str) -> looptune.Computation:
    comp = LAYOUTS[name][0]()
    tensors = dict(zip(("in0", "in1", "out"), (*comp.inputs, comp.output)))
    relaid = {k for k, t in tensors.items() if t.alloc_shape != t.shape}
    assert relaid == set(LAYOUTS[name][1])  # the case exercises the copies it is named for
    return comp


def _assert_close(got: np.ndarray, comp: looptune.Computation, a, b) -> None:
    got = np.asarray(got)
    assert got.shape == tuple(comp.output.shape) and got.dtype == np.float32
    err = float(np.max(np.abs(got - expected(comp, np.asarray(a), np.asarray(b)))))
    assert np.all(np.isfinite(got)) and err <= 1e-5 + 2e-6 * reduction_length(comp), err


def _recycled_nan_memory(shape: tuple[int, ...]) -> None:
    """Frees NaN-filled buffers of the output's size, so the next allocation of that size is
    likely to get memory full of NaN (an output the engine forgot to write shows up)."""
    for _ in range(4):
        junk = np.full(shape, np.nan, np.float32)
        del junk


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_call_path_matches_numpy(name: str, cpu_isa: str) -> None:
    comp = _comp(name)
    kernel = comp.default_schedule().compile(cpu_isa)
    a, b = random_inputs(comp, 1)
    a_before, b_before = a.copy(), b.copy()
    shape = tuple(comp.output.shape)

    _recycled_nan_memory(shape)
    _assert_close(kernel(a, b), comp, a, b)  # allocated output (no zero-fill)
    _assert_close(kernel(a=a, b=b), comp, a, b)  # keywords
    out = np.full(shape, np.nan, np.float32)
    assert kernel(a, b, out=out) is out  # in place, returned
    _assert_close(out, comp, a, b)
    out[...] = 7.0
    assert kernel(a, b, out) is out  # positional out
    _assert_close(out, comp, a, b)
    # twice on the same buffers: the relayout workspace is reused (its padding stays zero)
    for seed in (2, 3):
        a2, b2 = random_inputs(comp, seed)
        _assert_close(kernel(a2, b2, out=out), comp, a2, b2)

    # constant operand: b packed once, calls without b (and b given still wins)
    kernel.set_constant(b)
    assert kernel.has_constant
    _recycled_nan_memory(shape)
    _assert_close(kernel(a), comp, a, b)
    out[...] = np.nan
    assert kernel(a, out=out) is out
    _assert_close(out, comp, a, b)
    a3, b3 = random_inputs(comp, 4)
    _assert_close(kernel(a3, b3), comp, a3, b3)
    _assert_close(kernel(a3), comp, a3, b)

    # torch tensors in -> tensors out (through Kernel._call_fallback), mixed with numpy
    ta, tb = torch.from_numpy(a.copy()), torch.from_numpy(b.copy())
    res = kernel(ta, tb)
    assert isinstance(res, torch.Tensor)
    _assert_close(res.numpy(), comp, a, b)
    tout = torch.full(shape, float("nan"))
    assert kernel(ta, b, out=tout) is tout
    _assert_close(tout.numpy(), comp, a, b)
    res = kernel(ta)  # the constant operand, torch in
    assert isinstance(res, torch.Tensor)
    _assert_close(res.numpy(), comp, a, b)
    np.testing.assert_array_equal(a, a_before)  # inputs never written
    np.testing.assert_array_equal(b, b_before)


def _odd_schedules(isa: str, walk: Callable[..., looptune.LoopTree]) -> list[looptune.LoopTree]:
    """Schedules of odd sizes that write each output element once (zero_init) and ones that
    accumulate into it (a reduction loop outside the tile), vectorized and not."""
    trees = []
    for m, k, n in [(17, 9, 33), (5, 131, 3), (1, 7, 1), (13, 64, 29), (41, 19, 67)]:
        comp = looptune.matmul(m, k, n, layout="plain")
        trees.append(comp.default_schedule())
        for order in ("mnk", "kmn", "mkn", "nkm"):
            trees.append(from_steps(comp, [(v, 1) for v in order]))
        if k > 4:  # a blocked reduction outermost: the tile is reloaded per k block
            trees.append(from_steps(comp, [("k", 4), ("m", 1), ("n", 1), ("k", 1)]))
            trees.append(from_steps(comp, [("m", 1), ("k", 4), ("n", 1), ("k", 1)]))
    trees.append(looptune.matmul(7, 45, 3, layout="blocked1").default_schedule())  # k vectorized
    rng = random.Random(isa)
    conv = looptune.conv2d(1, 3, 9, 7, 5, 3, 3, stride=2, pad=1)
    trees += [walk(conv.default_schedule(), rng, rng.randrange(20)) for _ in range(12)]
    return trees


def test_no_zero_fill_is_safe_whether_the_output_is_written_once_or_accumulated(
    cpu_isa: str, random_walk: Callable[..., looptune.LoopTree]
) -> None:
    written_once = accumulated = 0
    for tree in _odd_schedules(cpu_isa, random_walk):
        kernel = tree.compile(cpu_isa)
        comp = tree.computation
        written_once += kernel.facts["zero_init"]
        accumulated += not kernel.facts["zero_init"]
        a, b = random_inputs(comp, 5)
        for _ in range(2):  # the output memory holds NaN or the previous result
            _recycled_nan_memory(tuple(comp.output.shape))
            _assert_close(kernel(a, b), comp, a, b)
            out = np.full(tuple(comp.output.shape), np.nan, np.float32)
            _assert_close(kernel(a, b, out=out), comp, a, b)
            _assert_close(kernel(a, b, out=out), comp, a, b)  # out holds a result already
    assert written_once >= 5 and accumulated >= 5, (written_once, accumulated)


# Large enough that a call releases the GIL, so the two threads' calls do overlap
THREADED = {
    "matmul_plain": lambda: looptune.matmul(67, 131, 45, layout="plain"),
    "conv_padded": lambda: looptune.conv2d(1, 8, 30, 30, 12, 3, 3, pad=1, layout="plain"),
    "conv_blocked_partial": lambda: looptune.conv2d(
        1, 8, 30, 30, 20, 3, 3, pad=1, layout="blocked16"
    ),
    "matmul_panels": lambda: looptune.matmul(37, 129, 45, layout="blocked8"),
}


@pytest.mark.parametrize("name", list(THREADED))
@pytest.mark.parametrize("constant", [False, True])
def test_two_threads_calling_one_kernel_get_their_own_results(name: str, constant: bool) -> None:
    comp = THREADED[name]()
    assert comp.flops > 1 << 16
    kernel = comp.default_schedule().compile()
    inputs = [random_inputs(comp, seed) for seed in range(2)]
    if constant:
        b0 = inputs[0][1]
        kernel.set_constant(b0)
        inputs = [(a, b0) for a, _ in inputs]
    refs = [expected(comp, a, b) for a, b in inputs]
    tol = 1e-5 + 2e-6 * reduction_length(comp)
    barrier = threading.Barrier(2)
    errors: list[str] = []

    def work(i: int) -> None:
        a, b = inputs[i]
        out = np.empty(tuple(comp.output.shape), np.float32)
        barrier.wait()
        for it in range(300):
            got = kernel(a, out=out) if constant else kernel(a, b, out=out)
            err = float(np.max(np.abs(got - refs[i])))
            if not err <= tol:
                errors.append(f"thread {i} call {it}: error {err}")
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


@pytest.fixture(scope="module")
def kernel() -> looptune.Kernel:
    return looptune.matmul(5, 3, 4).default_schedule().compile()


def _f32(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_arguments_off_the_fast_path_are_accepted_or_typed_errors(kernel: looptune.Kernel) -> None:
    a, b = _f32((5, 3)), _f32((3, 4), 1)
    want = a @ b
    # float32 with metadata, a read-only a, a subclass of ndarray: still float32 arrays
    meta = np.dtype(np.float32, metadata={"unit": "m"})
    np.testing.assert_allclose(kernel(a.astype(meta), b), want, rtol=1e-5, atol=1e-5)
    ro = a.copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(kernel(ro, b), want, rtol=1e-5, atol=1e-5)

    class Sub(np.ndarray):
        pass

    np.testing.assert_allclose(kernel(a.view(Sub), b), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="float32 in native byte order"):
        kernel(a.astype(">f4"), b)
    with pytest.raises(TypeError, match="float32"):
        kernel(a.astype(np.float64), b)
    with pytest.raises(ValueError, match="shape"):
        kernel(a, b.T.copy())
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel(np.asfortranarray(a), b)
    with pytest.raises(ValueError, match="read-only"):
        out = np.empty((5, 4), np.float32)
        out.flags.writeable = False
        kernel(a, b, out=out)
    with pytest.raises(ValueError, match="overlap"):
        buf = np.zeros(15 + 20, np.float32)
        kernel(buf[:15].reshape(5, 3), b, out=buf[10:30].reshape(5, 4))
    with pytest.raises(ValueError, match="constant operand"):
        kernel(a)
    with pytest.raises(TypeError, match="numpy float32 array, got list"):
        kernel(a.tolist(), b)
    with pytest.raises(TypeError, match="CPU tensor, got one on meta"):
        kernel(torch.empty((5, 3), device="meta"), b)
    with pytest.raises(TypeError, match="dtype torch.float32, got torch.bfloat16"):
        kernel(a, torch.from_numpy(b).to(torch.bfloat16))
    # a tensor with something the engine cannot take: the typed error, not a recursion
    with pytest.raises(TypeError, match="numpy float32 array, got list"):
        kernel(torch.from_numpy(a), b.tolist())


def test_call_signature_and_argument_errors(kernel: looptune.Kernel) -> None:
    sig = inspect.signature(looptune.Kernel.__call__)
    assert list(sig.parameters) == ["self", "a", "b", "out", "bias", "residual", "scale",
                                    "out_scale", "out_zero_point"]
    assert sig.parameters["b"].default is None and sig.parameters["out"].default is None
    a, b = _f32((5, 3)), _f32((3, 4), 1)
    out = np.empty((5, 4), np.float32)
    with pytest.raises(TypeError, match="missing required argument 'a'"):
        kernel()
    with pytest.raises(TypeError, match="missing required argument 'a'"):
        kernel(b=b)
    with pytest.raises(TypeError, match="at most 3 arguments"):
        kernel(a, b, out, out)
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        kernel(a, b, c=out)
    with pytest.raises(TypeError, match="multiple values for argument 'b'"):
        kernel(a, b, b=b)
    with pytest.raises(TypeError):  # the descriptor checks self's type
        looptune.Kernel.__call__(object(), a, b)
    assert kernel(out=out, b=b, a=a) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
