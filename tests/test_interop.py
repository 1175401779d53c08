"""Kernels from real code: torch CPU tensors in and out, and pickling by schedule."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from isas import ISA_PARAMS, RUNNABLE

import looptune

torch = pytest.importorskip("torch")


def _kernel(isa: str) -> looptune.Kernel:
    tree = looptune.matmul(37, 29, 50).default_schedule().split(4).down().down().down().split(16)
    return tree.compile(isa)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_torch_in_torch_out_equals_matmul(isa: str) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 29, generator=gen), torch.randn(29, 50, generator=gen)
    c = _kernel(isa)(a, b)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32 and c.shape == (37, 50)
    torch.testing.assert_close(c, torch.matmul(a, b), rtol=1e-5, atol=1e-4)


def test_torch_out_is_written_in_place_and_inputs_are_not_copied() -> None:
    a, b = torch.randn(37, 29), torch.randn(29, 50)
    out = torch.full((37, 50), 7.0)
    k = _kernel(RUNNABLE[0])
    assert k(a, b, out=out) is out
    torch.testing.assert_close(out, a @ b, rtol=1e-5, atol=1e-4)
    assert a.numpy().__array_interface__["data"][0] == a.data_ptr()  # the view the kernel gets


def test_mixed_numpy_and_torch_gives_torch() -> None:
    a, b = torch.randn(37, 29), np.random.default_rng(0).standard_normal((29, 50), np.float32)
    c = _kernel(RUNNABLE[0])(a, b)
    assert isinstance(c, torch.Tensor)
    np.testing.assert_allclose(c.numpy(), a.numpy() @ b, rtol=1e-5, atol=1e-4)


def test_numpy_in_numpy_out_unchanged() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((37, 29), np.float32), rng.standard_normal((29, 50), np.float32)
    c = _kernel(RUNNABLE[0])(a, b)
    assert type(c) is np.ndarray
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: torch.randn(37, 29, dtype=torch.float64), TypeError, "torch.float32"),
        (lambda: torch.randn(37, 29, requires_grad=True), TypeError, "requires grad"),
        (lambda: torch.randn(29, 37).t(), ValueError, "contiguous"),
        (lambda: torch.randn(36, 29), ValueError, "shape"),
    ],
)
def test_bad_tensors_raise_typed_errors(make, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _kernel(RUNNABLE[0])(make(), torch.randn(29, 50))


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_pickle_round_trip_recompiles_the_same_kernel(isa: str) -> None:
    k = _kernel(isa)
    k2 = pickle.loads(pickle.dumps(k))
    assert isinstance(k2, looptune.Kernel) and k2 is not k
    assert k2.isa == isa and k2.tree.dump() == k.tree.dump()
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((37, 29), np.float32), rng.standard_normal((29, 50), np.float32)
    np.testing.assert_array_equal(k2(a, b), k(a, b))
    assert copy.deepcopy(k).tree.hash() == k.tree.hash()


def test_pickle_of_conv_kernel() -> None:
    comp = looptune.conv2d(1, 3, 9, 9, 4, 3, 3, stride=2, pad=1)
    k = comp.default_schedule().compile()
    k2 = pickle.loads(pickle.dumps(k))
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal(t.shape).astype(np.float32) for t in comp.inputs)
    np.testing.assert_array_equal(k2(a, b), k(a, b))
