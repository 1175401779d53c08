"""The paper's comparison table: every search on a set of benchmarks, in one run.

Each search starts from the base schedule with its own empty measurement cache (so it pays for
every measurement it makes), and the best tree each search returns is then re-timed by one
shared, longer-running measurer so that all rows are compared on the same footing and no
search profits from the luck of a short noisy timing. numpy (one BLAS thread) is timed on
every benchmark in the same run.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from looptune import search as searches_mod
from looptune._core import Computation
from looptune.measure import Measurer, harness
from looptune.measure.reference import blas_info, check_tree, numpy_gflops
from looptune.report.progress import bar as progress_bar
from looptune.report.tables import Column, geomean, write_json
from looptune.report.tables import format_table as _format_table
from looptune.space.actions import PAPER_ACTIONS
from looptune.util.fileio import atomic_open

SUMMARY_FIELDS = (
    "search",
    "benchmarks",
    "ok",
    "mean_gflops",
    "geomean_gflops",
    "geomean_speedup",
    "mean_seconds",
    "mean_measurements",
)


def as_computation(bench: object) -> Computation:
    """The Computation of a dataset entry (a Computation, or an object that builds one)."""
    if isinstance(bench, Computation):
        return bench
    for attr in ("computation", "build", "make", "comp"):
        value = getattr(bench, attr, None)
        if value is not None:
            value = value() if callable(value) else value
            if isinstance(value, Computation):
                return value
    raise TypeError(f"cannot get a Computation from {bench!r}")


def load_benchmarks(
    dataset: str, split: str | None, limit: int | None = None
) -> list[tuple[str, Computation]]:
    """The first ``limit`` benchmarks of a dataset split, in the dataset's fixed order."""
    from looptune import datasets

    items = datasets.get(dataset, split=split) if split else datasets.get(dataset)
    out = []
    for bench in items:
        comp = as_computation(bench)
        out.append((str(getattr(bench, "name", comp.name)), comp))
        if limit is not None and len(out) >= limit:
            break
    return out


def available_searches(names: Sequence[str], skip_unavailable: bool) -> dict:
    """Resolve search names; unavailable ones (the agent without its policy) raise or are
    skipped with a message on stderr."""
    fns = {}
    for name in names:
        try:
            fns[name] = searches_mod.get(name)
        except searches_mod.SearchUnavailableError as exc:
            if not skip_unavailable:
                raise
            print(f"looptune: skipping {name}: {exc}", file=sys.stderr)
    return fns


def run_eval(
    benchmarks: Sequence[tuple[str, Computation]],
    names: Sequence[str],
    *,
    time_budget: float | None = 60.0,
    measure_budget: int | None = None,
    time_budgets: Mapping[str, float | None] | None = None,
    actions: Sequence[str] = PAPER_ACTIONS,
    seed: int = 0,
    final_min_time: float = 0.02,
    numpy_min_time: float = 0.1,
    skip_unavailable: bool = False,
    progress: bool = True,
    make_measurer: Callable[[], Measurer] | None = None,
    threads: int = 1,
) -> list[dict]:
    """Run every search on every benchmark; one row per (benchmark, search), plus a "numpy"
    row per benchmark. ``time_budgets`` overrides ``time_budget`` per search name.
    ``make_measurer`` builds each search's measurer (default: a fresh ``Measurer`` with a
    private cache, timing on ``threads`` threads); a failed measurement is a row's
    ``failures``, never an exception. Schedules and numpy are timed on ``threads`` threads.

    Every schedule a row reports is checked against numpy first (a wrong one has ``ok``
    False and GFLOP/s NaN, counted as a failure by the summary's geomean), then timed by the
    harness (:mod:`looptune.measure.harness`), as numpy is: called from Python."""
    fns = available_searches(names, skip_unavailable)

    timed: dict[int, tuple[float, bool]] = {}  # per benchmark: one figure per distinct schedule

    def final(tree: object) -> tuple[float, bool]:
        key = tree.hash()
        if key not in timed:
            if not check_tree(tree).ok:
                timed[key] = (math.nan, False)
            else:
                t = harness.time_kernel(tree, min_time=final_min_time, min_runs=10, check=False,
                                        threads=threads)
                timed[key] = (t.gflops, True)
        return timed[key]

    rows: list[dict] = []
    bar = progress_bar(len(benchmarks) * len(fns), quiet=not progress, unit="search")
    for bench, comp in benchmarks:
        base = comp.default_schedule()
        timed.clear()
        base_g, _ = final(base)
        np_g = numpy_gflops(comp, numpy_min_time, threads=threads)
        rows.append(_row(bench, "numpy", np_g, base_g, math.nan, 0, ""))
        for name, fn in fns.items():
            bar.set_postfix_str(f"{bench} {name}")
            result = fn(
                base,
                make_measurer() if make_measurer is not None
                else Measurer(cache={}, threads=threads),
                time_budget=(time_budgets or {}).get(name, time_budget),
                measure_budget=measure_budget,
                actions=actions,
                seed=seed,
            )
            g, ok = final(result.best_tree)
            rows.append(
                _row(
                    bench,
                    name,
                    g,
                    base_g,
                    result.seconds,
                    result.measurements,
                    result.best_tree.dump(),
                    result.best_gflops,
                    len(result.failures),
                    ok,
                )
            )
            bar.update()
    bar.close()
    return rows


def _row(
    bench: str,
    name: str,
    gflops: float,
    base: float,
    seconds: float,
    measured: int,
    schedule: str,
    search_gflops: float = math.nan,
    failures: int = 0,
    ok: bool = True,
) -> dict:
    return {
        "benchmark": bench,
        "search": name,
        "ok": ok,
        "timing": harness.TIMING,
        "gflops": gflops,
        "base_gflops": base,
        "speedup": gflops / base if base > 0 else math.nan,
        "seconds": seconds,
        "measurements": measured,
        "search_gflops": search_gflops,
        "failures": failures,
        "schedule": schedule,
    }


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per search (in first-seen order): mean and geomean GFLOP/s, geomean speedup over base,
    mean tuning time; plus a "best" row: per benchmark, the best any search found."""
    order = list(dict.fromkeys(r["search"] for r in rows))
    out = [_summary(name, [r for r in rows if r["search"] == name]) for name in order]
    tuned = [r for r in rows if r["search"] != "numpy"]
    best: dict[str, dict] = {}
    for r in tuned:
        b = best.get(r["benchmark"])
        if b is None or (math.isnan(b["gflops"]) and not math.isnan(r["gflops"])) or (
            r["gflops"] > b["gflops"]
        ):
            best[r["benchmark"]] = r
    if best:
        row = _summary("best", list(best.values()))
        row["mean_seconds"] = row["mean_measurements"] = math.nan
        out.append(row)
    return out


def _summary(name: str, rows: Sequence[dict]) -> dict:
    """One search's summary over its fixed set of benchmarks: a wrong or failed row is
    counted (``ok`` of ``benchmarks``, ``geomean_failed``), never averaged away; the mean
    GFLOP/s is over the good rows."""
    gm = geomean(r["gflops"] for r in rows)
    good = [r["gflops"] for r in rows if math.isfinite(r["gflops"]) and r["gflops"] > 0]
    return {
        "search": name,
        "benchmarks": len(rows),
        "ok": len(good),
        "mean_gflops": sum(good) / len(good) if good else math.nan,
        "geomean_gflops": gm,
        "geomean_failed": gm.failed,
        "geomean_speedup": geomean(r["speedup"] for r in rows),
        "mean_seconds": sum(r["seconds"] for r in rows) / len(rows),
        "mean_measurements": sum(r["measurements"] for r in rows) / len(rows),
    }


SUMMARY_COLUMNS: list[Column] = [
    ("search", "search", ""),
    ("ok", "ok", "d"),
    ("benchmarks", "n", "d"),
    ("mean_gflops", "mean GF/s", ".1f"),
    ("geomean_gflops", "geomean GF/s", ".1f"),
    ("geomean_speedup", "speedup", lambda x: f"{x:.2f}x"),
    ("mean_seconds", "time s", ".3f"),
    ("mean_measurements", "measured", ".0f"),
]


def format_table(summary: Sequence[dict], markdown: bool = False) -> str:
    """The summary as a plain-text (or Markdown) table."""
    return _format_table(summary, SUMMARY_COLUMNS, markdown)


def write_outputs(
    summary: Sequence[dict],
    rows: Sequence[dict],
    config: dict,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
) -> None:
    """JSON: config, BLAS, summary and per-benchmark rows. CSV: the summary table."""
    if json_path:
        doc = {"config": config, "blas": blas_info(), "summary": list(summary), "rows": list(rows)}
        write_json(json_path, doc)
    if csv_path:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
            writer.writeheader()
            for s in summary:
                writer.writerow({k: s[k] for k in SUMMARY_FIELDS})
