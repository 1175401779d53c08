"""int8 datasets: the quantized layers of BERT-base and ResNet-18, and large matmuls.

* ``mm_int8``: int8 matmuls (u8 x s8 -> int32): BERT-base's GEMMs (QKV / output projection
  768 -> 768, FFN 768 -> 3072 -> 768) at 128 and 1024 tokens (batch 1 and 8 at sequence 128),
  the large square matmuls (512, 1024, 2048) and the ``mm_real`` family shapes whose reduction
  is a multiple of 4 and that run in under ~50 ms at int8 speed;
* ``conv2d_int8``: the ``conv2d_resnet`` layers (``CONV_LAYERS``) as int8 convolutions.

Split 80/20 / 75/25 by the same fixed permutation rule as the float32 datasets.

    >>> import gymnasium as gym, looptune
    >>> env = gym.make("LoopTune-v0", dataset="mm_int8")  # doctest: +SKIP
"""

from __future__ import annotations

from looptune import _core

BERT_HIDDEN, BERT_FFN = 768, 3072
BERT_TOKENS = (128, 1024)  # sequence 128 at batch 1 and 8
LARGE = (512, 1024, 2048)
MAX_REAL_FLOPS = 2 * 1024**3  # mm_real shapes kept (about 5 ms at 400 GOP/s)


def bert_gemms(tokens: tuple[int, ...] = BERT_TOKENS) -> list[tuple[tuple[int, int, int], str]]:
    """(m, k, n) of BERT-base's linear layers at each token count, with their role."""
    out = []
    for m in tokens:
        out += [((m, BERT_HIDDEN, BERT_HIDDEN), f"BERT-base QKV / output projection, {m} tokens"),
                ((m, BERT_HIDDEN, BERT_FFN), f"BERT-base FFN up, {m} tokens"),
                ((m, BERT_FFN, BERT_HIDDEN), f"BERT-base FFN down, {m} tokens")]
    return out


def large_matmuls() -> list[tuple[tuple[int, int, int], str]]:
    return [((s, s, s), f"square {s}") for s in LARGE]


def _mm_int8() -> list:
    from looptune.datasets import Benchmark, families

    shapes = bert_gemms() + large_matmuls()
    shapes += [(s, "matmul families") for s in families.matmul_shapes()
               if s[1] % 4 == 0 and 2 * s[0] * s[1] * s[2] <= MAX_REAL_FLOPS]
    seen, out = set(), []
    for (m, k, n), src in shapes:
        if (m, k, n) not in seen:
            seen.add((m, k, n))
            out.append(Benchmark.from_computation(_core.matmul(m, k, n, dtype="int8"), src))
    return out


def _conv2d_int8() -> list:
    from looptune.datasets import CONV_LAYERS, Benchmark

    return [Benchmark.from_computation(
        _core.conv2d(1, c, h, w, k, r, s, stride=st, pad=p, dtype="int8"), src)
        for (c, h, w, k, r, s, st, p), src in CONV_LAYERS]


# name -> (builder, fraction of benchmarks in the test split)
DATASETS = {"mm_int8": (_mm_int8, 0.2), "conv2d_int8": (_conv2d_int8, 0.25)}

__all__ = ["DATASETS", "bert_gemms", "large_matmuls"]
