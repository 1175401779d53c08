"""Small predicates and cell formatting over leaderboard result rows, shared by the tables
(``report``) and the targets (``targets``)."""

from __future__ import annotations

import math

from looptune.report.tables import cell


def finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def ok(row: dict) -> bool:
    """A correct row with a finite GFLOP/s figure."""
    return row.get("status") == "ok" and finite(row.get("gflops"))


def fmt(x: object, spec: str) -> str:
    """``x`` formatted by ``spec``; ``-`` when it is not a finite number."""
    return cell(x if finite(x) else None, spec)


__all__ = ["finite", "fmt", "ok"]
