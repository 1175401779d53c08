"""Run-to-run noise of the harness's figures: the margin `looptune leaderboard --validate` uses.

    flock /tmp/looptune-bench.lock python benchmarks/timing_noise.py [--repeats 10] [--quick]

Each kernel (the base schedule and the best hand tiling of a few leaderboard-sized matmuls and
a conv) is timed ``--repeats`` times exactly as a leaderboard row is (best of
``FINAL_TIMINGS`` harness timings of ``FINAL_MIN_TIME`` s, ``looptune.leaderboard.entrants``),
and as ``--validate`` replays it (best of ``RETIMES``). A record and its replay come from
different processes, often hours apart, so every invocation of this script is one more
process: its figures are appended to the results file and the noise is taken over all the
invocations recorded there (run it a few times, at different moments). The noise of a kernel
is the largest ratio of one recorded figure to one replayed figure of the same kernel, any
processes; the margin is the largest such ratio over all kernels, rounded up to a whole
percent. Writes ``benchmarks/results/<isa>_<cpu>/timing_noise.json`` (harness timing).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import environment, host_results, strip_openblas_env, write_json

strip_openblas_env()

import argparse
import json
import math
import os
import time

import looptune
from looptune.leaderboard.entrants import FINAL_MIN_TIME, FINAL_TIMINGS
from looptune.leaderboard.validate import DEFAULT_TOLERANCE, RETIMES
from looptune.measure import harness
from looptune.report.tables import format_table
from looptune.space.schedules import tilings

SHAPES = [(64, 64, 64), (128, 128, 128), (256, 256, 256), (128, 768, 768)]


def figure(kernel: looptune.Kernel, best_of: int) -> float:
    return max(harness.time_kernel(kernel, min_time=FINAL_MIN_TIME, min_runs=10,
                                   check=False).gflops for _ in range(best_of))


def best_tiling(comp: looptune.Computation) -> looptune.LoopTree:
    return max(tilings(comp, looptune.host_isa()),
               key=lambda t: t.compile().benchmark(0.005).gflops)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="two kernels, 4 repeats")
    p.add_argument("--fresh", action="store_true", help="forget the runs already recorded")
    args = p.parse_args()
    comps = [looptune.matmul(*s) for s in SHAPES]
    comps.append(looptune.conv2d(1, 256, 14, 14, 256, 3, 3, stride=1, pad=1))
    repeats = args.repeats
    if args.quick:
        comps, repeats = comps[:2], 4
    path = host_results() / "timing_noise.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() and not args.fresh else []
    figures = {}
    for comp in comps:
        for label, tree in (("base", comp.default_schedule()), ("tiled", best_tiling(comp))):
            kernel = tree.compile()
            figures[f"{comp.name} {label}"] = {
                "recorded": [figure(kernel, FINAL_TIMINGS) for _ in range(repeats)],
                "replayed": [figure(kernel, RETIMES) for _ in range(repeats)],
            }
    runs.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "load_avg": list(os.getloadavg()), "repeats": repeats, "figures": figures})
    rows = []
    for kernel in figures:
        rec = [g for r in runs if kernel in r["figures"] for g in r["figures"][kernel]["recorded"]]
        rep = [g for r in runs if kernel in r["figures"] for g in r["figures"][kernel]["replayed"]]
        rows.append({"kernel": kernel, "recorded_min": min(rec), "recorded_max": max(rec),
                     "replayed_min": min(rep), "replayed_max": max(rep),
                     "worst_ratio": max(rec) / min(rep), "processes": sum(
                         kernel in r["figures"] for r in runs)})
    worst = max(r["worst_ratio"] for r in rows)
    margin = math.ceil((worst - 1) * 100) / 100
    print(format_table(rows, [("kernel", "kernel", "s"), ("recorded_min", "rec min", ".1f"),
                              ("recorded_max", "rec max", ".1f"),
                              ("replayed_min", "replay min", ".1f"),
                              ("replayed_max", "replay max", ".1f"),
                              ("worst_ratio", "worst rec/replay", ".3f"),
                              ("processes", "runs", "d")]))
    print(f"\nlargest record/replay ratio {worst:.3f}: margin {margin:.0%} "
          f"(--validate uses {DEFAULT_TOLERANCE:.0%})")
    path = write_json("timing_noise", {
        "environment": environment(),
        "method": f"per run (process): repeats x records (best of {FINAL_TIMINGS}) and replays "
                  f"(best of {RETIMES}) of {FINAL_MIN_TIME} s harness timings per kernel; worst "
                  "ratio of a record to a replay of the same kernel over all runs",
        "worst_ratio": worst, "margin": margin, "validate_tolerance": DEFAULT_TOLERANCE,
        "rows": rows, "runs": runs}, host_results())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
