"""The leaderboard's fixed, versioned benchmark suite.

Four parts, each a list of :class:`Entry` (a computation with its name, FLOPs and source):

* ``mm_test``: a slice of the ``mm64_256_16`` test split (every 22nd test matmul).
* ``mm_offgrid``: matmuls off the 16-grid: odd and prime sizes, skinny and GEMV shapes,
  large squares.
* ``bmm``: batched matmuls of attention layers (scores Q @ K^T and weights @ V per head).
* ``conv``: full conv2d layers of real CNNs at batch 1 (ResNet-18, VGG-16, MobileNet), NCHW.

The suite never changes under a version: change an entry, bump :data:`VERSION`. Every result
file records the version it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from looptune import _core

VERSION = "lb-2026.11-1"
PARTS = ("mm_test", "mm_offgrid", "bmm", "conv")


@dataclass(frozen=True)
class Entry:
    """One benchmark of the suite: ``kind`` is the ``looptune._core`` factory, ``args`` its
    positional arguments (conv2d: n, c, h, w, k, r, s, stride, pad)."""

    part: str
    kind: str
    args: tuple[int, ...]
    source: str = ""
    quick: bool = False

    def computation(self) -> _core.Computation:
        return _build(self.kind, self.args)

    @property
    def name(self) -> str:
        return self.computation().name

    @property
    def flops(self) -> int:
        return self.computation().flops

    def to_dict(self) -> dict:
        comp = self.computation()
        return {
            "name": comp.name,
            "part": self.part,
            "kind": self.kind,
            "args": list(self.args),
            "header": comp.header(),
            "flops": comp.flops,
            "source": self.source,
        }


@cache
def _build(kind: str, args: tuple[int, ...]) -> _core.Computation:
    if kind == "conv2d":
        n, c, h, w, k, r, s, stride, pad = args
        return _core.conv2d(n, c, h, w, k, r, s, stride=stride, pad=pad)
    return getattr(_core, kind)(*args)


def _mm_test() -> list[Entry]:
    from looptune import datasets

    test = datasets.get("mm64_256_16", split="test")[::22]
    return [
        Entry("mm_test", "matmul", b.args, "mm64_256_16 test split", quick=i < 2)
        for i, b in enumerate(test)
    ]


_OFFGRID = (
    ((97, 97, 97), "odd square (prime 97)", True),
    ((61, 127, 251), "primes", False),
    ((129, 255, 65), "one off the grid", False),
    ((16, 512, 512), "skinny: 16 rows", False),
    ((1, 1024, 1024), "GEMV: row vector times matrix", True),
    ((1024, 1024, 1), "GEMV: matrix times column vector", False),
    ((512, 512, 512), "large square", False),
    ((1024, 1024, 1024), "large square", False),
)

_BMM = (
    ((12, 128, 64, 128), "BERT-base scores Q@K^T, 128 tokens, 12 heads", True),
    ((12, 128, 128, 64), "BERT-base weights@V, 128 tokens, 12 heads", False),
    ((8, 256, 64, 256), "scores Q@K^T, 256 tokens, 8 heads", False),
    ((16, 64, 80, 64), "scores Q@K^T, 64 tokens, head dim 80, 16 heads", False),
)

# (c, h, w, k, r, s, stride, pad) at batch 1
_CONV = (
    ((64, 56, 56, 64, 3, 3, 1, 1), "ResNet-18 conv2_x 3x3 64->64 @56x56", True),
    ((64, 56, 56, 128, 3, 3, 2, 1), "ResNet-18 conv3_1 3x3/2 64->128 @56x56", False),
    ((128, 28, 28, 128, 3, 3, 1, 1), "ResNet-18 conv3_x 3x3 128->128 @28x28", False),
    ((256, 14, 14, 256, 3, 3, 1, 1), "ResNet-18 conv4_x 3x3 256->256 @14x14", False),
    ((512, 7, 7, 512, 3, 3, 1, 1), "ResNet-18 conv5_x 3x3 512->512 @7x7", False),
    ((128, 56, 56, 128, 3, 3, 1, 1), "VGG-16 conv2_2 3x3 128->128 @56x56 (112 halved)", False),
    ((256, 14, 14, 512, 1, 1, 1, 0), "MobileNet-v1 pointwise 1x1 256->512 @14x14", False),
    ((64, 56, 56, 128, 1, 1, 2, 0), "ResNet-18 downsample 1x1/2 64->128 @56x56", False),
)


@cache
def entries() -> tuple[Entry, ...]:
    """Every entry of the suite, part by part, in a fixed order."""
    out = _mm_test()
    out += [Entry("mm_offgrid", "matmul", a, s, q) for a, s, q in _OFFGRID]
    out += [Entry("bmm", "batch_matmul", a, s, q) for a, s, q in _BMM]
    out += [Entry("conv", "conv2d", (1, *a), s, q) for a, s, q in _CONV]
    return tuple(out)


def select(parts: list[str] | None = None, quick: bool = False) -> list[Entry]:
    """The entries of ``parts`` (default all), only the quick subset if ``quick``.

    Raises:
        ValueError: an unknown part name.
    """
    for p in parts or ():
        if p not in PARTS:
            raise ValueError(f"unknown suite part {p!r}; choose from {', '.join(PARTS)}")
    return [e for e in entries() if (not parts or e.part in parts) and (e.quick or not quick)]
