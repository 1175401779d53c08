"""Replay a result file, CompilerGym-style: every row that carries a looptune schedule is
recompiled from its text (``LoopTree.parse``), checked against numpy, and re-timed (best of
:data:`RETIMES` timings of :data:`looptune.leaderboard.entrants.FINAL_MIN_TIME` each); its
recorded GFLOP/s must be reproduced within a stated tolerance.

A row fails validation if its schedule does not parse, belongs to another computation than the
row's header, computes a wrong result, or was recorded more than ``tolerance`` (a fraction)
faster than the re-timed figure. Rows without a schedule (numpy, PyTorch, TVM) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from looptune._core import LoopTree, parse_computation
from looptune.leaderboard.entrants import FINAL_MIN_TIME
from looptune.measure import final_measurer
from looptune.measure.reference import check_tree

DEFAULT_TOLERANCE = 0.25  # shared VM: ±5-10% run to run, more on small kernels
RETIMES = 3  # best of this many separate timings: a neighbour's burst can halve one of them


@dataclass(frozen=True)
class Verdict:
    benchmark: str
    entrant: str
    ok: bool
    recorded_gflops: float
    replayed_gflops: float
    reason: str = ""


def _retime(tree: LoopTree) -> float:
    return max(
        final_measurer(FINAL_MIN_TIME).gflops(tree)
        for _ in range(RETIMES)
    )


def validate(
    doc: dict,
    tolerance: float = DEFAULT_TOLERANCE,
    retime: Callable[[LoopTree], float] = _retime,
) -> list[Verdict]:
    """One verdict per row with a schedule and status "ok" (in row order)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    out = []
    for row in doc["rows"]:
        if not row.get("schedule") or row.get("status") != "ok":
            continue
        out.append(_one(row, tolerance, retime))
    return out


def _one(row: dict, tolerance: float, retime: Callable[[LoopTree], float]) -> Verdict:
    bench, name = row["benchmark"], row["entrant"]
    recorded = row.get("gflops")
    recorded = float(recorded) if isinstance(recorded, (int, float)) else math.nan

    def bad(reason: str, replayed: float = math.nan) -> Verdict:
        return Verdict(bench, name, False, recorded, replayed, reason)

    try:
        tree = LoopTree.parse(row["schedule"])
    except Exception as exc:
        return bad(f"schedule does not parse: {exc}")
    try:
        if tree.computation != parse_computation(row["header"]):
            return bad("schedule belongs to another computation than the row's header")
    except Exception as exc:
        return bad(f"bad computation header: {exc}")
    check = check_tree(tree)
    if not check.ok:
        return bad(f"kernel {check}")
    replayed = retime(tree)
    if not math.isfinite(recorded) or recorded > replayed * (1 + tolerance):
        return bad(
            f"recorded {recorded:.1f} GFLOP/s not reproduced: replayed {replayed:.1f} "
            f"(tolerance {tolerance:.0%})",
            replayed,
        )
    return Verdict(bench, name, True, recorded, replayed)


def format_verdicts(verdicts: list[Verdict], tolerance: float) -> str:
    lines = [f"validation: {len(verdicts)} schedules, tolerance {tolerance:.0%}"]
    for v in verdicts:
        mark = "ok  " if v.ok else "FAIL"
        lines.append(
            f"{mark} {v.benchmark:<32} {v.entrant:<16} recorded {v.recorded_gflops:7.1f} "
            f"replayed {v.replayed_gflops:7.1f} {v.reason}"
        )
    bad = sum(not v.ok for v in verdicts)
    lines.append(f"{len(verdicts) - bad} passed, {bad} failed")
    return "\n".join(lines)
