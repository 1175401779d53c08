"""How honest is the cheap reward? Rank correlation of scaled-down against full-size timings.

    flock /tmp/looptune-bench.lock python agents/tiler_check.py --out runs/tiler/check.json \
        [--policy python/looptune/data/policy_tiler_avx512.safetensors]

For a fixed sample of held-out computations (the test splits of the datasets the tiler trains
on, ``--split test``, the default; ``--split train`` for the training sample) that the reward
does scale down (flops between ``--min-flops`` and ``--max-flops``, every dataset), every macro
is timed at full size (in-C++ timing, ``Kernel.benchmark``: these are the tuner's own ranking
decisions, not figures against another library) and on
its scaled instance; reported per computation and in the mean: Spearman's rho, and the
full-size GFLOP/s of the scaled reward's best macro relative to the full-size best. With
``--policy`` the same for the policy's scores against full-size timings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from tiler_data import DATASETS, SCALED_FLOPS, training_computations

import looptune
from looptune import datasets
from looptune.agent import tiler
from looptune.costmodel.predictor import spearman
from looptune.measure import Measurer


def held_out_computations() -> list[tuple[str, looptune.Computation]]:
    """(dataset, computation) of the test splits of the tiler's datasets: never trained on."""
    return [(name, b.computation()) for name, _ in DATASETS
            for b in datasets.get(name, "test")]


def sample(
    n: int, lo: float, hi: float, isa: str, split: str = "test"
) -> list[tuple[str, looptune.Computation]]:
    """``n`` computations, as many from each dataset, fixed by seed: from the held-out test
    splits (``split="test"``) or the training sample (``split="train"``)."""
    out = []
    comps = held_out_computations() if split == "test" else training_computations(isa)
    for name, _ in DATASETS:
        pool = [c for d, c in comps if d == name and lo <= c.flops <= hi]
        idx = np.random.default_rng(1).permutation(len(pool))[: n // len(DATASETS)]
        out += [(name, pool[i]) for i in sorted(idx)]
    return out


def check_one(comp: looptune.Computation, isa: str, policy: object | None) -> dict:
    full_m = Measurer(isa=isa, min_time=0.01, min_runs=1, max_runs=20, cache={})
    small_m = Measurer(isa=isa, min_time=0.003, min_runs=2, max_runs=20, cache={})
    small = tiler.scaled(comp, SCALED_FLOPS)
    trees = tiler.candidates(comp, isa)
    full = np.array([full_m.gflops(t) for t in trees])
    cheap = np.array([small_m.gflops(tiler.transfer(t, small)) for t in trees])
    row = {"comp": comp.header(), "small": small.header(), "macros": len(trees),
           "spearman_scaled": spearman(cheap, full),
           "scaled_best_rel": float(full[int(np.argmax(cheap))] / full.max())}
    if policy is not None:
        s = policy.scores(trees)
        row["spearman_policy"] = spearman(s, full)
        row["policy_top1_rel"] = float(full[int(np.argmax(s))] / full.max())
        row["policy_top3_rel"] = float(full[np.argsort(-s)[:3]].max() / full.max())
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tiler/check.json")
    p.add_argument("--n", type=int, default=9)
    p.add_argument("--min-flops", type=float, default=2e8)
    p.add_argument("--max-flops", type=float, default=1.5e9)
    p.add_argument("--policy", default=None)
    p.add_argument("--isa", default=None)
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="held-out test splits (default) or the training sample")
    args = p.parse_args()
    isa = args.isa or looptune.host_isa()
    policy = None
    if args.policy:
        from looptune.agent.tiler_policy import load_tiler

        policy = load_tiler(args.policy)
        if policy.isa != isa:
            raise SystemExit(f"the policy is for {policy.isa}, not {isa}")
    rows = []
    for dataset, comp in sample(args.n, args.min_flops, args.max_flops, isa, args.split):
        rows.append({"dataset": dataset, **check_one(comp, isa, policy)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    keys = [k for k in rows[0] if k.startswith(("spearman", "scaled_best", "policy_top"))]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out = {"command": "python " + " ".join(sys.argv), "isa": isa, "n": len(rows),
           "split": args.split, "cpu": looptune.cpu_name(),
           "cpu_signature": looptune.cpu_signature(), "timing": "in-C++ (Kernel.benchmark)",
           "scaled_flops": SCALED_FLOPS, "mean": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
