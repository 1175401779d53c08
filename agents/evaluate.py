"""Evaluate a saved policy on a dataset split: base vs agent GFLOP/s per benchmark.

    python agents/evaluate.py --policy python/looptune/data/policy_avx2.safetensors --split test \\
        --json benchmarks/results/agent_eval.json

Prints a table (per benchmark: base and agent GFLOP/s, speedup, tuning seconds) and the
geomean speedup; ``--greedy`` also runs helper searches from ``looptune.search`` for reference.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callbacks import held_out_trees, summarize

from looptune.report.tables import format_table, geomean
from looptune.util.fileio import atomic_write_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=None, help="saved policy (default: the shipped one)")
    p.add_argument("--dataset", default=None, help="default: the policy's training dataset")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="first N benchmarks (0 = all)")
    p.add_argument("--rollouts", type=int, default=1)
    p.add_argument(
        "--search",
        action="append",
        default=[],
        help="also run this search (a name known to looptune.search), repeatable",
    )
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--record",
        action="store_true",
        help="also store the summary (no per-benchmark rows) in the policy's JSON metadata",
    )
    return p.parse_args(argv)


def run_search(name: str, tree, measurer) -> float:
    from looptune import search

    return search.get(name)(tree, measurer).best_gflops


def evaluate(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from looptune.agent.policy import load_policy
    from looptune.measure import Measurer
    from looptune.search.agent import tune

    policy = load_policy(args.policy)
    dataset = args.dataset or policy.env_kwargs.get("dataset", "mm64_256_16")
    trees = held_out_trees({"dataset": dataset, "split": args.split}, args.limit or 10**9)
    measurer = Measurer()
    rows = []
    for name, tree in tqdm(trees, disable=args.quiet, desc="tuning"):
        base = measurer.gflops(tree)
        res = tune(tree, measurer, policy=policy, rollouts=args.rollouts)
        row = {
            "benchmark": name,
            "base_gflops": base,
            "agent_gflops": res.best_gflops,
            "seconds": res.seconds,
            "measurements": res.measurements,
            "tree": res.best_tree.dump(),
        }
        for s in args.search:
            row[f"{s}_gflops"] = run_search(s, tree, measurer)
        rows.append(row)
    out = summarize(rows)
    out.update(policy=str(policy.path), dataset=dataset, split=args.split, rollouts=args.rollouts)
    for s in args.search:
        vals = [r[f"{s}_gflops"] for r in rows]
        out[f"geomean_{s}_gflops"] = geomean(vals)
    return out


def print_table(out: dict, searches: list[str]) -> None:
    cols = [
        ("benchmark", "benchmark", ""),
        ("base_gflops", "base", ".1f"),
        ("agent_gflops", "agent", ".1f"),
        ("x", "x", ".2f"),
        ("seconds", "sec", ".3f"),
    ] + [(f"{s}_gflops", s, ".1f") for s in searches]
    rows = [{**r, "x": r["agent_gflops"] / r["base_gflops"]} for r in out["rows"]]
    print(format_table(rows, cols))
    print(
        f"\n{out['n']} benchmarks: geomean agent {out['geomean_agent_gflops']:.1f} GFLOP/s, "
        f"geomean speedup {out['geomean_speedup']:.2f}x over base, "
        f"mean tuning time {out['mean_seconds']:.3f} s"
    )
    for s in searches:
        print(f"geomean {s}: {out[f'geomean_{s}_gflops']:.1f} GFLOP/s")


def record(out: dict, command: str) -> None:
    """Add the summary to the policy's metadata as ``evaluations[<split>_<n>]``."""
    from looptune.agent.policy import meta_path

    path = meta_path(out["policy"])
    meta = json.loads(path.read_text())
    summary = {k: v for k, v in out.items() if k != "rows"}
    summary["command"] = command
    meta.setdefault("evaluations", {})[f"{out['split']}_{out['n']}"] = summary
    atomic_write_text(path, json.dumps(meta, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = evaluate(args)
    if not args.quiet:
        print_table(out, args.search)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
    if args.record:
        words = sys.argv[1:] if argv is None else argv
        record(out, " ".join(["python", "agents/evaluate.py", *map(shlex.quote, words)]))
    return out


if __name__ == "__main__":
    main()
