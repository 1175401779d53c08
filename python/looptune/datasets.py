"""Named benchmark datasets with fixed train/test splits.

    >>> import looptune.datasets as ds
    >>> ds.names()
    ['bmm_attention', 'conv2d_resnet', 'mm64_256_16']
    >>> len(ds.get("mm64_256_16", split="test"))
    220

Datasets:

* ``mm64_256_16``: every matmul with m, k, n in {64, 80, ..., 256} (13^3 = 2197), as in the
  LoopTune paper. Split 90/10 by a fixed permutation (``numpy.random.default_rng(0)``); the split
  never changes between runs or versions.
* ``conv2d_resnet``: 2-D convolutions (batch 1, NCHW) taken from ResNet-18/50 layers. Where a
  full layer would take too long to time inside an RL step, the benchmark is a tile of it (a
  spatial crop and/or a slice of output channels: the same loop structure and reduction length,
  fewer independent outputs). Each costs 6-15 MFLOP; see ``CONV_LAYERS`` for the source layer.
* ``bmm_attention``: batched matmuls shaped like attention scores (Q @ K^T per head):
  b in {4, 8, 12} heads, m, n in {64, 128} tokens, k in {32, 64} head dims (24 benchmarks).

A benchmark's name equals the name of its computation (``Computation.name``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np

from looptune import _core
from looptune.errors import UnknownBenchmarkError

SPLITS = ("train", "test", "all")
SPLIT_SEED = 0


@dataclass(frozen=True)
class Benchmark:
    """One tensor computation of a dataset.

    Attributes:
        name: the computation's short id (``Computation.name``), e.g. ``"mm128_256_64"``.
        kind: the factory in ``looptune._core``: "matmul", "batch_matmul" or "conv2d".
        args: the factory's positional arguments.
        source: where the shape comes from (free text).
    """

    name: str
    kind: str
    args: tuple[int, ...]
    source: str = ""
    header: str = ""  # kind "custom": the computation's header text (``Computation.header()``)

    @classmethod
    def from_computation(cls, comp: _core.Computation, source: str = "") -> Benchmark:
        """A benchmark of any computation (an einsum contraction included)."""
        if not isinstance(comp, _core.Computation):
            raise TypeError(f"expected a looptune Computation, got {type(comp).__name__}")
        return cls(comp.name, "custom", (), source, comp.header())

    def computation(self) -> _core.Computation:
        """The engine computation (built once per process and shared)."""
        if self.kind == "custom":
            return _parsed(self.header)
        return _computation(self.kind, self.args)

    def default_schedule(self) -> _core.LoopTree:
        return self.computation().default_schedule()


@cache
def _computation(kind: str, args: tuple[int, ...]) -> _core.Computation:
    return getattr(_core, kind)(*args)


@cache
def _parsed(header: str) -> _core.Computation:
    return _core.parse_computation(header)


def _benchmark(kind: str, args: tuple[int, ...], source: str = "") -> Benchmark:
    return Benchmark(_computation(kind, args).name, kind, args, source)


# (c, h, w, k, r, s, stride, pad) at batch 1, with the ResNet layer each one comes from.
CONV_LAYERS: tuple[tuple[tuple[int, ...], str], ...] = (
    ((64, 14, 14, 64, 3, 3, 1, 1), "ResNet-18 conv2_x 3x3 64->64 @56x56, 14x14 tile"),
    ((128, 7, 7, 128, 3, 3, 1, 1), "ResNet-18 conv3_x 3x3 128->128 @28x28, 7x7 tile"),
    ((256, 7, 7, 64, 3, 3, 1, 1), "ResNet-18 conv4_x 3x3 256->256 @14x14, 7x7 tile, 64 out-ch"),
    ((512, 7, 7, 32, 3, 3, 1, 1), "ResNet-18 conv5_x 3x3 512->512 @7x7, 32 out-ch"),
    (
        (64, 28, 28, 64, 3, 3, 2, 1),
        "ResNet-18 conv3_1 3x3 s2 64->128 @56x56, 14x14 out tile, 64 out-ch",
    ),
    ((64, 56, 56, 128, 1, 1, 2, 0), "ResNet-18 downsample 1x1 s2 64->128 @56x56 (full layer)"),
    ((64, 14, 14, 256, 1, 1, 1, 0), "ResNet-50 conv2_x 1x1 64->256 @56x56, 14x14 tile"),
    ((256, 14, 14, 64, 1, 1, 1, 0), "ResNet-50 conv2_x 1x1 256->64 @56x56, 14x14 tile"),
    ((512, 7, 7, 128, 1, 1, 1, 0), "ResNet-50 conv3_x 1x1 512->128 @28x28, 7x7 tile"),
    ((1024, 7, 7, 64, 1, 1, 1, 0), "ResNet-50 conv4_x 1x1 1024->256 @14x14, 7x7 tile, 64 out-ch"),
    ((2048, 7, 7, 64, 1, 1, 1, 0), "ResNet-50 conv5_x 1x1 2048->512 @7x7, 64 out-ch"),
    ((3, 56, 56, 64, 7, 7, 2, 3), "ResNet stem 7x7 s2 3->64 @224x224, 28x28 out tile"),
)


def _mm64_256_16() -> list[Benchmark]:
    sizes = range(64, 257, 16)
    return [_benchmark("matmul", (m, k, n)) for m, k, n in itertools.product(sizes, sizes, sizes)]


def _conv2d_resnet() -> list[Benchmark]:
    return [
        _benchmark("conv2d", (1, c, h, w, k, r, s, st, p), src)
        for (c, h, w, k, r, s, st, p), src in CONV_LAYERS
    ]


def _bmm_attention() -> list[Benchmark]:
    shapes = itertools.product((4, 8, 12), (64, 128), (32, 64), (64, 128))
    return [
        _benchmark("batch_matmul", (b, m, k, n), "attention scores Q @ K^T per head")
        for b, m, k, n in shapes
    ]


# name -> (builder, fraction of benchmarks in the test split)
_DATASETS = {
    "mm64_256_16": (_mm64_256_16, 0.1),
    "conv2d_resnet": (_conv2d_resnet, 0.25),
    "bmm_attention": (_bmm_attention, 0.25),
}


def register(
    name: str,
    benchmarks: list[_core.Computation | Benchmark],
    test_fraction: float = 0.1,
) -> None:
    """Register a dataset of computations (any kind, einsums included) for ``get`` and the envs,
    e.g. ``gym.make("LoopTune-v0", dataset=name)``. Re-registering a name replaces it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset name must be a non-empty string, got {name!r}")
    items = tuple(
        b if isinstance(b, Benchmark) else Benchmark.from_computation(b) for b in benchmarks
    )
    if not items:
        raise ValueError("a dataset needs at least one benchmark")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    _DATASETS[name] = (lambda: list(items), test_fraction)
    _splits.cache_clear()


def names() -> list[str]:
    """Names of every dataset, sorted."""
    return sorted(_DATASETS)


@cache
def _splits(name: str) -> dict[str, tuple[Benchmark, ...]]:
    builder, test_fraction = _DATASETS[name]
    everything = tuple(builder())
    n_test = max(1, round(test_fraction * len(everything)))
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(everything))
    test = set(perm[:n_test].tolist())
    return {
        "all": everything,
        "train": tuple(b for i, b in enumerate(everything) if i not in test),
        "test": tuple(b for i, b in enumerate(everything) if i in test),
    }


def get(name: str, split: str = "train") -> list[Benchmark]:
    """The benchmarks of dataset ``name`` in ``split`` ("train", "test" or "all"), in a fixed order.

    Raises:
        UnknownBenchmarkError: no dataset of that name.
        ValueError: unknown split.
    """
    if not isinstance(name, str) or name not in _DATASETS:
        raise UnknownBenchmarkError(f"unknown dataset {name!r}; choose from {names()}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    return list(_splits(name)[split])


def find(name: str) -> Benchmark:
    """Look a benchmark up by name across every dataset.

    Raises:
        UnknownBenchmarkError: no dataset holds a benchmark of that name.
    """
    for dataset in _DATASETS:
        for bench in _splits(dataset)["all"]:
            if bench.name == name:
                return bench
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}")
