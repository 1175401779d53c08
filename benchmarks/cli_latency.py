"""Wall time of ``looptune tune matmul 128 256 64`` as a user runs it: a fresh process each
time, interpreter start-up, imports, policy loading, tuning, re-timing and the numpy check.

    flock /tmp/looptune-bench.lock python benchmarks/cli_latency.py [--runs 7]
        [--tree before=/path/to/old/checkout] [--tree after=.]

For each source tree (``LABEL=PATH``: ``PATH/python`` goes on ``PYTHONPATH``; default: this
checkout as "after") and each search (the default search, i.e. the shipped agent; greedy2;
base), one warm-up run, then ``--runs`` timed runs of

    python -m looptune tune matmul 128 256 64 [--search S] --json

The table gives the best and the median wall time and the tuning time the command itself
reports. Results: benchmarks/results/cli_latency.json (with the CPU, ISA, the commands and the
load average when the run started: figures taken while other work runs are rough).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "python"))  # for environment()
from _bench import environment, strip_openblas_env, write_json  # noqa: E402

strip_openblas_env()

REPO = Path(__file__).resolve().parents[1]
SHAPE = ("matmul", "128", "256", "64")
SEARCHES = {"agent (default)": [], "greedy2": ["--search", "greedy2"], "base": ["--search", "base"]}


def git_revision(tree: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--", "python"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_once(tree: Path, extra: list[str]) -> dict:
    """One fresh ``python -m looptune tune ...`` process: its wall time and its JSON report."""
    cmd = [sys.executable, "-m", "looptune", "tune", *SHAPE, *extra, "--json"]
    env = {**os.environ, "PYTHONPATH": str(tree / "python")}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-500:]}")
    report = json.loads(out.stdout)
    return {"wall": wall, "tuning": report["tuning_seconds"], "search": report["search"],
            "reported_wall": report.get("wall_seconds")}


def check_tree_imported(tree: Path) -> None:
    """The interpreter must import looptune from ``tree``: an editable install (a venv made by
    ``make``) maps ``looptune`` to its own checkout whatever PYTHONPATH says, and every tree
    would then time the same code. Use an interpreter without looptune installed."""
    env = {**os.environ, "PYTHONPATH": str(tree / "python")}
    got = subprocess.run([sys.executable, "-c", "import looptune; print(looptune.__file__)"],
                         capture_output=True, text=True, env=env, timeout=120).stdout.strip()
    if not Path(got).resolve().is_relative_to((tree / "python").resolve()):
        raise SystemExit(f"{sys.executable} imports looptune from {got!r}, not from {tree}: "
                         "run this benchmark with a Python that has no looptune installed")


def measure(tree: Path, runs: int) -> dict:
    check_tree_imported(tree)
    rows = {}
    for label, extra in SEARCHES.items():
        run_once(tree, extra)  # warm-up: page cache, compiled bytecode
        samples = [run_once(tree, extra) for _ in range(runs)]
        walls = [s["wall"] for s in samples]
        rows[label] = {
            "search_run": samples[0]["search"],
            "best_wall_s": min(walls),
            "median_wall_s": statistics.median(walls),
            "median_tuning_s": statistics.median(s["tuning"] for s in samples),
            "walls_s": walls,
            "command": " ".join(["looptune", "tune", *SHAPE, *extra]),
        }
    return rows


def format_rows(results: dict) -> str:
    head = "| tree | search | best wall (s) | median wall (s) | median tuning (s) |"
    lines = [head, "|---|---|---:|---:|---:|"]
    for label, res in results.items():
        for search, r in res["searches"].items():
            lines.append(f"| {label} ({res['revision']}) | {search} | {r['best_wall_s']:.2f} | "
                         f"{r['median_wall_s']:.2f} | {r['median_tuning_s']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="timed runs per search and tree")
    p.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                   help="a source checkout to time (repeatable; default after=this checkout)")
    p.add_argument("--out", default="cli_latency", help="results/<OUT>.json")
    args = p.parse_args(argv)
    trees = {}
    for spec in args.tree or [f"after={REPO}"]:
        label, sep, path = spec.partition("=")
        if not sep or not (Path(path) / "python" / "looptune").is_dir():
            p.error(f"--tree needs LABEL=PATH of a looptune checkout, got {spec!r}")
        trees[label] = Path(path).resolve()
    load = os.getloadavg()
    env = environment()
    results = {}
    for label, tree in trees.items():
        results[label] = {"path": str(tree), "revision": git_revision(tree),
                          "searches": measure(tree, args.runs)}
    doc = {
        "benchmark": "cli_latency",
        "environment": env,
        "load_average_at_start": list(load),
        "note": "wall time of a fresh process (python -m looptune, the console script's code) "
                "on a warm machine (one warm-up run first); figures taken while other "
                "processes run (load average above ~0.5 on this 2-core host) are rough",
        "python": sys.executable,
        "runs": args.runs,
        "command": "flock /tmp/looptune-bench.lock python benchmarks/cli_latency.py "
                   + " ".join(sys.argv[1:]),
        "results": results,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = write_json(args.out, doc)
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(format_rows(results))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
