"""Which scorer should rank the tiling agent's int8 macros: measured, not assumed.

    flock /tmp/looptune-bench.lock python benchmarks/int8_tiler.py [--quick]

For every int8 computation of a set (BERT-base GEMMs, large and real-family matmuls from
``mm_int8``, the ``conv2d_int8`` layers), every tile macro (``looptune.agent.tiler.candidates``:
the rule's tiles, in 32-bit accumulators on an int8 computation) is compiled and timed
in C++ (``Kernel.benchmark``, the tuners' own timing). Then, per scorer, the fraction of the
best macro's speed reached by the best of its top-k (k = 1, 2, 4: what ``tiler_search`` times
first) and the Spearman rank correlation of its scores with the measured speeds:

* ``f32_scorer``: the shipped float32 tiling policy (``load_tiler()``) on the int8 macros,
  features unchanged (``tile_features``: sizes in 32-bit words, accumulators in vectors);
* ``rule``: ``looptune.agent.tiler_int8.rule_scores`` (accumulator fill and intensity, whole
  vectors, tails, reduction panel in L2);
* ``interleaved``: the two rankings alternated (the f32 scorer's best, the rule's best, ...);
* ``order``: the candidates in generation order (no scorer).

Writes benchmarks/results/int8_tiler.json and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import environment, strip_openblas_env, write_json

strip_openblas_env()

import argparse
import math

import numpy as np

import looptune
from looptune import datasets
from looptune.agent import tiler
from looptune.agent.tiler_int8 import rule_scores
from looptune.agent.tiler_policy import load_tiler
from looptune.report.tables import geomean

TOPK = (1, 2, 4)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(comp: looptune.Computation, isa: str, min_time: float) -> tuple[list, np.ndarray]:
    trees = tiler.candidates(comp, isa)
    speeds = np.zeros(len(trees))
    for i, tree in enumerate(trees):
        try:
            speeds[i] = tree.compile(isa).benchmark(min_time, 2, 50).gflops
        except Exception:  # noqa: BLE001 - a macro the engine refuses scores 0
            speeds[i] = 0.0
    return trees, speeds


def interleave(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Scores whose order alternates the two scorers' rankings (first's best, second's best,
    first's second, ...), each macro at its earliest place."""
    order: list[int] = []
    for a, b in zip(np.argsort(-first, kind="stable"), np.argsort(-second, kind="stable")):
        order += [i for i in (int(a), int(b)) if i not in order]
    out = np.zeros(len(first))
    out[order] = -np.arange(len(order), dtype=float)
    return out


def evaluate(scores: np.ndarray, speeds: np.ndarray) -> dict:
    order = np.argsort(-scores, kind="stable")
    best = speeds.max()
    out = {f"top{k}": float(speeds[order[:k]].max() / best) for k in TOPK}
    out["spearman"] = spearman(scores, speeds)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few computations")
    p.add_argument("--min-time", type=float, default=0.01)
    p.add_argument("--limit", type=int, default=12, help="mm_int8 family shapes kept")
    p.add_argument("--out", default="int8_tiler")
    args = p.parse_args()
    isa = looptune.host_isa()
    f32 = load_tiler(isa=isa)
    mm = datasets.get("mm_int8", "all")
    named = [b for b in mm if b.source != "matmul families"]
    family = [b for b in mm if b.source == "matmul families"][: args.limit]
    conv = datasets.get("conv2d_int8", "all")
    work = named + family + conv
    if args.quick:
        work = named[:3] + conv[:2]
    rows = []
    for b in work:
        comp = b.computation()
        trees, speeds = measure(comp, isa, args.min_time)
        if speeds.max() <= 0:
            continue
        fs, rs = f32.scores(trees), rule_scores(trees, isa)
        row = {"name": b.name, "macros": len(trees), "best_gops": float(speeds.max()),
               "f32_scorer": evaluate(fs, speeds), "rule": evaluate(rs, speeds),
               "interleaved": evaluate(interleave(fs, rs), speeds),
               "order": evaluate(-np.arange(len(trees), dtype=float), speeds),
               "gops": speeds.round(2).tolist(), "f32_scores": fs.round(4).tolist(),
               "rule_scores": rs.round(4).tolist(),
               "best_schedule": trees[int(np.argmax(speeds))].dump()}
        rows.append(row)
        print(f"  {b.name}: {len(trees)} macros, best {row['best_gops']:.0f} GOP/s; top1 "
              f"f32 {row['f32_scorer']['top1']:.2f} rule {row['rule']['top1']:.2f} "
              f"order {row['order']['top1']:.2f}", file=sys.stderr, flush=True)
    summary = {}
    for scorer in ("f32_scorer", "rule", "interleaved", "order"):
        s = {f"top{k}_geomean": float(geomean([r[scorer][f"top{k}"] for r in rows]))
             for k in TOPK}
        s[f"top{TOPK[0]}_min"] = min(r[scorer][f"top{TOPK[0]}"] for r in rows)
        s["top2_min"] = min(r[scorer]["top2"] for r in rows)
        sp = [r[scorer]["spearman"] for r in rows if math.isfinite(r[scorer]["spearman"])]
        s["spearman_mean"] = float(np.mean(sp)) if sp else math.nan
        summary[scorer] = s
    lines = [("| scorer | top1 geomean | top2 geomean | top4 geomean | top1 min | top2 min | "
              "spearman |"), "|---|---|---|---|---|---|---|"]
    for k, s in summary.items():
        lines.append(f"| {k} | {s['top1_geomean']:.3f} | {s['top2_geomean']:.3f} | "
                     f"{s['top4_geomean']:.3f} | {s['top1_min']:.2f} | {s['top2_min']:.2f} | "
                     f"{s['spearman_mean']:.2f} |")
    print("\n".join(lines))
    path = write_json(args.out, {"environment": environment(), "config": vars(args),
                                 "summary": summary, "rows": rows})
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
