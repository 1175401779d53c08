"""Datasets: contents, fixed splits, lookups, errors."""

import math

import pytest

import looptune
from looptune import datasets


def test_names():
    assert datasets.names() == [
        "bmm_attention", "bmm_real", "conv2d_cnn", "conv2d_int8", "conv2d_resnet",
        "mm64_256_16", "mm_int8", "mm_real"
    ]


def test_mm64_256_16_contents_and_fixed_split():
    every = datasets.get("mm64_256_16", split="all")
    train = datasets.get("mm64_256_16")  # default split is train
    test = datasets.get("mm64_256_16", split="test")
    assert len(every) == 13**3 == 2197
    assert (len(train), len(test)) == (1977, 220)
    assert {b.name for b in train}.isdisjoint(b.name for b in test)
    assert {b.name for b in train} | {b.name for b in test} == {b.name for b in every}
    sizes = {b.args for b in every}
    assert sizes == {
        (m, k, n)
        for m in range(64, 257, 16)
        for k in range(64, 257, 16)
        for n in range(64, 257, 16)
    }
    # Computed once from numpy.random.default_rng(0).permutation(2197): must never change.
    assert test[0].name == "mm64_64_96"
    assert test[1].name == "mm64_64_128"
    assert test[-1].name == "mm256_256_256"
    assert every[0].name == "mm64_64_64"


def test_benchmark_names_equal_computation_names():
    for dataset in datasets.names():
        for bench in datasets.get(dataset, split="all")[:50]:
            comp = bench.computation()
            assert comp.name == bench.name
            assert comp is bench.computation()  # built once
            assert bench.default_schedule().depth == len(comp.vars)


def test_matmul_benchmark_is_the_matmul():
    bench = datasets.find("mm128_256_64")
    assert bench.kind == "matmul" and bench.args == (128, 256, 64)
    assert bench.computation() == looptune.matmul(128, 256, 64)
    assert bench.computation().flops == 2 * 128 * 256 * 64


def test_conv_and_bmm_sets():
    conv = datasets.get("conv2d_resnet", split="all")
    assert len(conv) == 12 and all(b.kind == "conv2d" and b.source for b in conv)
    assert any(b.args[7] == 2 for b in conv)  # a stride-2 layer
    assert any(b.args[5] == 1 for b in conv)  # 1x1 channel mixers
    for b in conv:  # small enough to time in milliseconds
        assert 5e6 < b.computation().flops < 16e6, b
    assert [b.name for b in datasets.get("conv2d_resnet", "test")] == [
        conv[i].name for i in (2, 7, 9)
    ]
    bmm = datasets.get("bmm_attention", split="all")
    assert len(bmm) == 24 and len(datasets.get("bmm_attention", "test")) == 6
    assert {b.args[0] for b in bmm} == {4, 8, 12}
    b = datasets.find(bmm[0].name)
    assert b.computation().flops == 2 * math.prod(b.args)


def test_errors():
    with pytest.raises(looptune.UnknownBenchmarkError, match="unknown dataset"):
        datasets.get("nope")
    with pytest.raises(ValueError, match="unknown split"):
        datasets.get("mm64_256_16", split="validation")
    with pytest.raises(looptune.UnknownBenchmarkError):
        datasets.find("mm1_2_3")
    with pytest.raises(KeyError):  # UnknownBenchmarkError is also a KeyError
        datasets.find("")
