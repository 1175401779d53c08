"""Shared plumbing of the benchmark scripts: a clean BLAS environment, tables and JSON."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
_STRIP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MARK = "LOOPTUNE_BENCH_UNSET"


def strip_openblas_env() -> None:
    """Re-execute this script without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (they make numpy pick
    a weaker kernel). Must run before numpy is imported; changes only this process."""
    if any(v in os.environ for v in _STRIP):
        env = {k: v for k, v in os.environ.items() if k not in _STRIP}
        env[_MARK] = ",".join(f"{v}={os.environ[v]}" for v in _STRIP if v in os.environ)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def environment() -> dict:
    """What the run measured on: CPU, ISA, numpy's BLAS kernel, unset variables."""
    import looptune
    from looptune.reference import blas_info

    return {
        "cpu": looptune.cpu_name(),
        "isa": looptune.host_isa(),
        "python": platform.python_version(),
        "blas": blas_info(),
        "unset_env": os.environ.get(_MARK, ""),
    }


def geomean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    from looptune.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
