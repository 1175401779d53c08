"""Leaderboard tables (Markdown, one per suite part) and plots (PNG) from a result document."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from looptune.leaderboard.rows import finite as _finite
from looptune.leaderboard.rows import fmt as _fmt
from looptune.leaderboard.rows import ok as _ok
from looptune.report.tables import format_table, geomean

BEST = "best looptune"


def with_best(rows: Sequence[dict]) -> list[dict]:
    """``rows`` plus a synthetic "best looptune" row per benchmark: the fastest correct row of
    any looptune entrant (its tuning time is the sum over those entrants)."""
    out = list(rows)
    by_bench: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("kind") == "looptune":
            by_bench.setdefault(r["benchmark"], []).append(r)
    for bench, rs in by_bench.items():
        good = [r for r in rs if _ok(r)]
        if good:
            top = max(good, key=lambda r: r["gflops"])
            seconds = sum(r.get("tuning_seconds") or 0.0 for r in rs)
            out.append({**top, "entrant": BEST, "kind": "best", "from": top["entrant"],
                        "tuning_seconds": seconds})
    return out


def summarize(rows: Sequence[dict], peak: float | None) -> list[dict]:
    """Per entrant (first-seen order): benchmarks, failures, geomean GFLOP/s over its correct
    rows, geomean ratios to numpy and PyTorch over benchmarks where both are correct, ratio of
    its geomean to peak, mean tuning time."""
    ref = {
        name: {r["benchmark"]: r["gflops"] for r in rows if r["entrant"] == name and _ok(r)}
        for name in ("numpy", "pytorch")
    }
    out = []
    for name in dict.fromkeys(r["entrant"] for r in rows):
        rs = [r for r in rows if r["entrant"] == name]
        good = [r for r in rs if _ok(r)]
        fails: dict[str, int] = {}
        for r in rs:
            if not _ok(r):
                fails[r.get("status", "failed")] = fails.get(r.get("status", "failed"), 0) + 1
        g = geomean([r["gflops"] for r in good])
        times = [r["tuning_seconds"] for r in rs if _finite(r.get("tuning_seconds"))]
        out.append(
            {
                "entrant": name,
                "kind": rs[0].get("kind", ""),
                "benchmarks": len(rs),
                "ok": len(good),
                "failures": fails,
                "geomean_gflops": g,
                "vs_numpy": _ratio(good, ref["numpy"]),
                "vs_pytorch": _ratio(good, ref["pytorch"]),
                "vs_peak": g / peak if peak else math.nan,
                "mean_tuning_seconds": sum(times) / len(times) if times else math.nan,
            }
        )
    return out


def _ratio(good: Sequence[dict], ref: dict[str, float]) -> float:
    return geomean([r["gflops"] / ref[r["benchmark"]] for r in good if r["benchmark"] in ref])


def markdown_table(summary: Sequence[dict]) -> str:
    rows = [{**s, "ok/n": f"{s['ok']}/{s['benchmarks']}",
             "fails": ", ".join(f"{n} {k}" for k, n in sorted(s["failures"].items())) or "0"}
            for s in summary]
    cols = [("entrant", "entrant", ""), ("kind", "kind", ""), ("ok/n", "ok/n", ""),
            *((k, h, lambda x, f=f: _fmt(x, f)) for k, h, f in (
                ("geomean_gflops", "geomean GFLOP/s", ".1f"), ("vs_numpy", "/ numpy", ".2f"),
                ("vs_pytorch", "/ PyTorch", ".2f"), ("vs_peak", "/ peak", ".2f"),
                ("mean_tuning_seconds", "mean tuning s", ".2f"))),
            ("fails", "failures", "")]
    return format_table(rows, cols, markdown=True, align="lllrrrrrl")


def parts_of(doc: dict) -> list[str]:
    return list(dict.fromkeys(r["part"] for r in doc["rows"]))


def _thread_count(doc: dict) -> int:
    """The run's ``--threads`` (1 for runs before it existed); "/ peak" is over T cores."""
    return int((doc.get("config") or {}).get("threads") or 1)


def _threads(doc: dict) -> str:
    t = _thread_count(doc)
    return "one core" if t == 1 else f"{t} threads (every entrant, numpy and PyTorch included)"


def report_markdown(doc: dict) -> str:
    """Header (suite version, machine, libraries), one table per suite part and one over the
    whole run, the TVM comparison and the issue's targets (``targets.targets_markdown``)."""
    m = doc.get("machine", {})
    peak = m.get("peak_gflops")
    libs = doc.get("libraries", {})
    head = [
        f"Leaderboard, suite {doc['suite_version']}, looptune {libs.get('looptune')} "
        f"(git {str(doc.get('git_revision'))[:10]})",
        "",
        f"Machine: {m.get('cpu')}, ISA {m.get('isa')}, {_threads(doc)}, measured FMA peak "
        f"{_fmt(peak or math.nan, '.0f')} GFLOP/s per core (/ peak: over the cores used); "
        f"numpy {libs.get('numpy')} "
        f"({(libs.get('blas') or {}).get('internal_api', '?')} "
        f"{(libs.get('blas') or {}).get('version', '')}), torch {libs.get('torch')}.",
        "Geomean over each entrant's correct rows; ratios are geomeans of per-benchmark ratios "
        "over benchmarks where both sides are correct.",
    ]
    rows = with_best(doc["rows"])
    out = head
    for part in [*parts_of(doc), None]:
        sel = [r for r in rows if part is None or r["part"] == part]
        n = len({r["benchmark"] for r in sel})
        out += ["", f"### {part or 'all parts'} ({n} benchmark{'s' * (n != 1)})", ""]
        out.append(markdown_table(summarize(sel, peak and peak * _thread_count(doc))))
    from looptune.leaderboard.targets import targets_markdown

    return "\n".join(out) + "\n\n" + targets_markdown(rows)


def plot(doc: dict, out_dir: str | Path, stem: str = "leaderboard") -> list[Path]:
    """Two PNGs (``looptune.report.plots``, legends outside the axes): GFLOP/s per benchmark
    per entrant, and quality against tuning time."""
    from looptune.report import plots

    out_dir = Path(out_dir)
    rows = doc["rows"]
    bars = plots.gflops_per_benchmark(
        [{**r, "gflops": r["gflops"] if _ok(r) else math.nan} for r in rows],
        out_dir / f"{stem}_gflops.png",
        f"looptune leaderboard {doc['suite_version']}: {doc['machine'].get('cpu')}, "
        f"{_threads(doc).split(' (')[0]}",
        series="entrant",
        width=min(24.0, max(8.0, 0.6 * len({r["benchmark"] for r in rows}))),
    )
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5))
    points = []
    for s in summarize(with_best(rows), doc["machine"].get("peak_gflops")):
        # y: per-benchmark ratio to numpy, so entrants run on different subsets compare fairly
        t, q = s["mean_tuning_seconds"], s["vs_numpy"]
        if _finite(q):
            tuned = _finite(t) and t > 1e-3
            t = t if tuned else 1e-3
            when = f"{t:.3g} s" if tuned else "no tuning"
            points.append((f"{s['entrant']} ({s['ok']}): {q:.2f}x numpy, {when}", t, q))
    plots.labelled_points(ax, points)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mean tuning time per benchmark, s (references at 1e-3)")
    ax.set_ylabel("geomean GFLOP/s ratio to numpy (benchmarks run)")
    ax.set_title("quality against tuning time (n benchmarks in brackets)")
    ax.grid(True, which="both", alpha=0.3)
    plots.outside_legend(ax)
    scatter = plots._save(fig, out_dir / f"{stem}_time.png")
    return [bars, scatter]
