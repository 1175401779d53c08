"""The TVM comparison table and the leaderboard's goals, checked on a run.

The goals (set when the leaderboard was built, issue 15), each evaluated on the rows of one
result document:

* per suite part: a single looptune entrant, correct on every benchmark of the part, at or
  above numpy and PyTorch in geomean GFLOP/s over the part's benchmarks;
* the agent within 5% of MetaSchedule's geomean GFLOP/s at under 1/100 of its tuning time;
* a looptune tuner at or above MetaSchedule's geomean GFLOP/s at under 1/10 of its time.

The MetaSchedule targets use only the benchmarks where MetaSchedule produced a correct row, and
compare over exactly those (an entrant must be correct on all of them); tuning times are totals
over the same benchmarks (MetaSchedule's is its recorded tuning time, also when cached).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from looptune.leaderboard.rows import fmt as _fmt
from looptune.leaderboard.rows import ok as _ok
from looptune.report.tables import format_table, geomean

AGENT = "agent"
GOALS_HEADING = "Goals: looptune against numpy, PyTorch and MetaSchedule (checked on this run)"


def _n(count: int) -> str:
    return f"{count} benchmark{'s' * (count != 1)}"


def _figures(rows: Sequence[dict], entrant: str) -> dict[str, dict]:
    return {r["benchmark"]: r for r in rows if r["entrant"] == entrant and _ok(r)}


def _on(rows: dict[str, dict], benches: Sequence[str]) -> tuple[float, float] | None:
    """(geomean GFLOP/s, total tuning seconds) over ``benches``; None unless correct on all."""
    if not benches or any(b not in rows for b in benches):
        return None
    seconds = sum(rows[b].get("tuning_seconds") or 0.0 for b in benches)
    return geomean([rows[b]["gflops"] for b in benches]), seconds


def metaschedule_name(rows: Sequence[dict]) -> str | None:
    """The MetaSchedule entrant of the run (the one with most correct rows), if any."""
    names = [r["entrant"] for r in rows if r["entrant"].startswith("tvm-ms") and _ok(r)]
    return max(dict.fromkeys(names), key=names.count) if names else None


def looptune_names(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["entrant"] for r in rows if r.get("kind") == "looptune"))


def part_targets(rows: Sequence[dict]) -> list[str]:
    """One line per part: the best single looptune entrant against numpy and PyTorch."""
    out = []
    for part in dict.fromkeys(r["part"] for r in rows):
        sel = [r for r in rows if r["part"] == part]
        benches = list(dict.fromkeys(r["benchmark"] for r in sel))
        refs = {n: _on(_figures(sel, n), benches) for n in ("numpy", "pytorch")}
        scored = [(s[0], n) for n in looptune_names(sel) if (s := _on(_figures(sel, n), benches))]
        if not scored or refs["numpy"] is None or refs["pytorch"] is None:
            out.append(f"- {part}: **not measured** (a reference or every looptune entrant "
                       "failed on some benchmark)")
            continue
        g, name = max(scored)
        np_g, pt_g = refs["numpy"][0], refs["pytorch"][0]
        met = g >= np_g and g >= pt_g
        out.append(
            f"- {part} ({_n(len(benches))}): "
            f"best looptune entrant {name} "
            f"{g:.1f} GFLOP/s vs numpy {np_g:.1f} ({g / np_g:.2f}x), PyTorch {pt_g:.1f} "
            f"({g / pt_g:.2f}x): **{'met' if met else 'not met'}**"
        )
    return out


def tvm_targets(rows: Sequence[dict]) -> list[str]:
    """The two MetaSchedule targets, on the benchmarks where MetaSchedule ran."""
    ms_name = metaschedule_name(rows)
    if ms_name is None:
        return ["- agent vs MetaSchedule, best tuner vs MetaSchedule: **not measured** "
                "(no MetaSchedule result in this run)"]
    ms_rows = _figures(rows, ms_name)
    benches = list(ms_rows)
    ms_g, ms_s = _on(ms_rows, benches)
    where = (f"on the {_n(len(benches))} where {ms_name} ran ({ms_g:.1f} GFLOP/s, "
             f"{ms_s:.0f} s)")
    out = []
    agent = _on(_figures(rows, AGENT), benches)
    if agent is None:
        out.append(f"- agent within 5% of MetaSchedule at < 1/100 of its time: **not measured** "
                   f"(the agent is not correct on all of them) {where}")
    else:
        g, s = agent
        met = g >= 0.95 * ms_g and s < ms_s / 100
        out.append(f"- agent within 5% of MetaSchedule at < 1/100 of its time {where}: agent "
                   f"{g:.1f} GFLOP/s ({g / ms_g:.3f}x) in {s:.3g} s ({s / ms_s:.4f} of its time): "
                   f"**{'met' if met else 'not met'}**")
    tuners = [n for n in looptune_names(rows) if n != "base"]  # base does not tune
    scored = [(*v, n) for n in tuners if (v := _on(_figures(rows, n), benches))]
    fast = [x for x in scored if x[1] < ms_s / 10]
    if not scored:
        out.append(f"- best tuner >= MetaSchedule at < 1/10 of its time: **not measured** {where}")
        return out
    g, s, name = max(fast or scored)
    met = bool(fast) and g >= ms_g
    out.append(f"- a looptune tuner >= MetaSchedule at < 1/10 of its time {where}: best "
               f"{'within the time' if fast else 'overall'} {name} {g:.1f} GFLOP/s "
               f"({g / ms_g:.3f}x) in {s:.3g} s ({s / ms_s:.3f} of its time): "
               f"**{'met' if met else 'not met'}**")
    return out


def tvm_table(rows: Sequence[dict]) -> str:
    """Per benchmark where MetaSchedule ran: the references, the agent, the best looptune row
    (from which entrant), TVM's default schedule and MetaSchedule, with tuning seconds."""
    ms_name = metaschedule_name(rows)
    if ms_name is None:
        return "No MetaSchedule result in this run."
    ms = _figures(rows, ms_name)
    cols = [("numpy", False), ("pytorch", False), (AGENT, True), ("best looptune", True),
            ("tvm-default", False), (ms_name, True)]
    figs = {n: _figures(rows, n) for n, _ in cols}
    names = [n + (" (s)" if t else "") for n, t in cols]

    def cell_of(n: str, timed: bool, b: str) -> str:
        r = figs[n].get(b)
        if not r:
            return "-"
        text = _fmt(r["gflops"], ".1f")
        if n == "best looptune":
            text += f" {r.get('from', '')}"
        if timed:
            text += f" ({_fmt(r.get('tuning_seconds') or math.nan, '.3g')})"
        return text

    table = [{"benchmark": b, **{h: cell_of(n, t, b) for h, (n, t) in zip(names, cols)}}
             for b in ms]
    table.append({"benchmark": "geomean", **{
        h: _fmt(geomean([figs[n][b]["gflops"] for b in ms if b in figs[n]]), ".1f")
        for h, (n, _) in zip(names, cols)}})
    columns = [("benchmark", "benchmark", ""), *((h, h, "") for h in names)]
    return format_table(table, columns, markdown=True, align="l" + "r" * len(cols))


def targets_markdown(rows: Sequence[dict]) -> str:
    """The TVM table and every target, as Markdown (``rows`` include the "best looptune" rows)."""
    return "\n".join([
        "### TVM MetaSchedule against looptune (benchmarks where MetaSchedule ran)", "",
        tvm_table(rows), "",
        f"### {GOALS_HEADING}", "",
        *part_targets(rows), *tvm_targets(rows),
    ]) + "\n"


__all__ = ["metaschedule_name", "part_targets", "targets_markdown", "tvm_table", "tvm_targets"]
