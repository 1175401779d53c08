"""looptune.measure.reference: the PyTorch reference used by the benchmarks."""

import pytest

import looptune
from looptune.measure.reference import torch_gflops


@pytest.mark.parametrize(
    "comp",
    [looptune.matmul(24, 40, 56), looptune.conv2d(1, 3, 11, 9, 20, 3, 3, stride=2, pad=1)],
)
def test_torch_reference_times_one_thread_and_restores_the_thread_count(comp):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    gflops = torch_gflops(comp, min_time=0.002, tries=2)
    assert gflops is not None and gflops > 0
    assert torch.get_num_threads() == 2


def test_torch_reference_is_none_without_torch(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("no torch here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    assert torch_gflops(looptune.matmul(8, 8, 8)) is None
