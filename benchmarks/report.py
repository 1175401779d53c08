"""Render benchmarks/results/*.json as the Markdown tables of the README.

    python benchmarks/report.py            # print the tables
    python benchmarks/report.py --readme   # replace the block between the README's markers

Only what the JSON files hold is shown: run the benchmarks first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from looptune.report.tables import format_table

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent.parent / "README.md"
BEGIN, END = "<!-- BENCHMARK TABLES -->", "<!-- END BENCHMARK TABLES -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _md(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of already formatted cells (``looptune.report.tables`` does the layout)."""
    columns = [(i, h, "") for i, h in enumerate(header)]
    return format_table([dict(enumerate(r)) for r in rows], columns, markdown=True)


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None or x != x else format(x, fmt)


OLD_TIMING = ("before the one harness: looptune kernels timed in C++ (Kernel.benchmark), numpy "
              "and PyTorch through Python calls; ratios on small kernels flatter looptune")


def source(name: str, env: dict, folder: str = "", old_timing: str = OLD_TIMING) -> str:
    """The line under every table: which file, which host, which timing, which command."""
    sig = env.get("cpu_signature") or "signature not recorded"
    peak = env.get("peak_gflops")
    peak = peak if isinstance(peak, (int, float)) else None
    parts = [f"`benchmarks/results/{folder}{name}.json`",
             f"{env.get('cpu', '?')} ({sig}), {env.get('isa', '?')}"
             + (f", peak {peak:.1f} measured in the run" if peak else ""),
             f"timing: {env.get('timing') or old_timing}"]
    if env.get("command"):
        parts.append(f"command: `{env['command']}`")
    return "Source: " + "; ".join(parts) + "."


def codegen(d: dict) -> str:
    env, s = d["environment"], d["summary"]
    peak = s["peak_gflops"]
    rows = [
        [
            r["name"],
            _f(r["base"]),
            _f(r.get("best_avx512")),
            _f(r.get("best_avx2")),
            _f(r["numpy"]),
            _f(r["torch"]),
            _f(r["best/peak"], ".2f"),
            _f(r["best/numpy"], ".2f"),
            _f(r["best/torch"], ".2f"),
        ]
        for r in d["rows"]
    ]
    g = s["mid_geomean"]
    return "\n".join(
        [
            "### Code generation (`python benchmarks/codegen.py`)",
            "",
            f"GFLOP/s, one thread, {env['cpu']}; numpy: OpenBLAS {env['blas'].get('version')} "
            f"({env['blas'].get('architecture')} kernel). Measured peak: "
            + ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
            + ". *best* is the best of a sweep of hand tilings.",
            "",
            _md(
                [
                    "computation",
                    "base",
                    "best AVX-512",
                    "best AVX2",
                    "numpy",
                    "PyTorch",
                    "best/peak",
                    "best/numpy",
                    "best/PyTorch",
                ],
                rows,
            ),
            "",
            (
                f"Mid-size matmuls (the first six rows), geomean: base {g['base']:.1f}, best "
                f"{g['best']:.1f} ({s['mid_best_over_peak']:.0%} of peak), "
                f"numpy {g['numpy']:.1f}, PyTorch {g['torch']:.1f}. "
                f"JIT latency: median {s['jit_latency_us_median']:.0f} us, "
                f"p90 {s['jit_latency_us_p90']:.0f} us over {s['kernels_compiled']} kernels."
            ),
            "",
            source("codegen", env),
        ]
    )


def env_speed(d: dict) -> str:
    sp, mem, rec, iso, fl = d["speed"], d["memory"], d["records"], d["isolation"], d["faults"]
    rows = [
        ["fresh env steps/s (every state measured)", f"{sp['fresh_steps_per_s']:.0f}"],
        ["cached env steps/s", f"{sp['cached_steps_per_s']:.0f}"],
        ["ms per measurement", f"{sp['ms_per_measurement']:.2f}"],
        [f"RSS growth over {mem['steps']} steps", f"{mem['rss_growth_mb']:.0f} MB"],
        ["record appends / reads per s", f"{rec['append_per_s']:.0f} / {rec['read_per_s']:.0f}"],
        ["isolation overhead per measurement", f"{iso['overhead_ms']:.2f} ms"],
    ]
    injected = sum(fl["injected"].values())
    return "\n".join(
        [
            "### Environment speed (`python benchmarks/env_speed.py`)",
            "",
            (
                f"A masked random policy over {sp['steps']} steps, one core, "
                f"{d['environment']['cpu']} ({d['environment']['isa']}, peak "
                f"{d['peak_gflops']:.0f}). Fault run: {injected} injected failures "
                "(compile error, runtime error, timeout) in a random search, a greedy search, an "
                "eval and env steps; every failure recorded: "
                f"{fl['every_failure_recorded']}."
            ),
            "",
            _md(["measure", "result"], rows),
            "",
            source("env_speed", d["environment"],
                   old_timing="in-C++ measurements (environment throughput, no comparison)"),
        ]
    )


def paper_table(d: dict) -> str:
    cfg = d["config"]
    rows = [
        [
            s["search"],
            f"{s['ok']}/{s['benchmarks']}" if "ok" in s else f"?/{s['benchmarks']}",
            _f(s["geomean_gflops"]),
            _f(s["mean_gflops"]),
            f"{s['geomean_speedup']:.2f}x",
            _f(s["mean_seconds"], ".3f"),
            _f(s["mean_measurements"], ".0f"),
        ]
        for s in d["summary"]
    ]
    targets = cfg.get("targets", {})
    return "\n".join(
        [
            "### The paper's table (`python benchmarks/paper_table.py --spread`)",
            "",
            (
                f"{len(cfg['benchmarks'])} benchmarks spread over the `{cfg['dataset']}` "
                f"{cfg['split']} split; time-boxed searches get {cfg['budget_s']:g} s each "
                f"(random {cfg['random_budget_s']:g} s); every search starts from the base "
                "schedule with an empty cache and its best schedule is checked against numpy "
                "and re-timed; numpy with one thread in the same run. "
                f"Wall time {cfg['wall_seconds'] / 60:.0f} min."
            ),
            "",
            _md(
                [
                    "search",
                    "ok/n",
                    "geomean GFLOP/s",
                    "mean GFLOP/s",
                    "speedup vs base",
                    "time s",
                    "measured",
                ],
                rows,
            ),
            "",
            "Targets: "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in targets.items()
            )
            + ". ok/n: schedules that matched numpy (\"?\": a run before the check was made).",
            "",
            source("paper_table", {**cfg, "timing": cfg.get("timing")}),
        ]
    )


def render() -> str:
    parts = []
    for name, fn in (("codegen", codegen), ("env_speed", env_speed), ("paper_table", paper_table)):
        d = _load(name)
        if d is not None:
            parts.append(fn(d))
    return "\n\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readme", action="store_true", help="rewrite the README's table block")
    args = ap.parse_args()
    text = render()
    if not args.readme:
        print(text)
        return 0
    readme = README.read_text()
    if BEGIN not in readme:
        print(f"README.md has no {BEGIN} marker", file=sys.stderr)
        return 1
    head, rest = readme.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else rest
    from looptune.util.fileio import atomic_write_text

    atomic_write_text(README, f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"rewrote the tables in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
