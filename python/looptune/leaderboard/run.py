"""Run entrants over the suite and write the result file (JSON, written atomically).

The JSON document::

    {"schema": 1, "suite_version": ..., "suite": [entry...], "machine": {cpu, isa, peak_gflops},
     "libraries": {...}, "git_revision": ..., "config": {...}, "rows": [row...]}

with one row per (benchmark, entrant): see :func:`looptune.leaderboard.entrants.make_row`.
A failing entrant yields a row with ``status`` "failed"/"timeout"/"wrong" and never stops the run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from looptune.leaderboard import suite
from looptune.leaderboard.entrants import Budget, Entrant, failure_row
from looptune.report import tables

SCHEMA = 1


def run_leaderboard(
    entries: Sequence[suite.Entry],
    entrants: Sequence[Entrant],
    budget: Budget,
    *,
    progress: bool = True,
    config: dict | None = None,
    machine: dict | None = None,
) -> dict:
    """Every entrant on every entry, in order; returns the result document. The progress bar
    is drawn only when ``progress`` and stderr is a terminal (``looptune.report.progress``)."""
    from looptune.report.progress import bar as progress_bar

    rows: list[dict] = []
    bar = progress_bar(len(entries) * len(entrants), quiet=not progress, unit="run", delay=0)
    try:
        for entry in entries:
            for entrant in entrants:
                bar.set_postfix_str(f"{entry.name} {entrant.name}")
                try:
                    rows.extend(entrant.run(entry, budget))
                except Exception as exc:  # an entrant's own bug: still a row
                    rows.append(failure_row(entry, entrant.name, entrant.kind, exc))
                bar.update()
    finally:
        bar.close()
        for entrant in entrants:
            entrant.close()
    return {
        "schema": SCHEMA,
        "suite_version": suite.VERSION,
        "suite": [e.to_dict() for e in entries],
        "machine": machine if machine is not None else machine_info(),
        "libraries": library_versions(),
        "git_revision": git_revision(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"budget_seconds": budget.seconds, **(config or {})},
        "rows": rows,
    }


def machine_info() -> dict:
    from looptune._core import cpu_name, cpu_signature, host_isa
    from looptune.measure import harness, peak_gflops

    isa = os.environ.get("LOOPTUNE_ISA") or host_isa()
    return {
        "cpu": cpu_name(),
        "cpu_signature": cpu_signature(),  # vendor/family/model: the microarchitecture
        "command": " ".join(sys.argv),
        "timing": harness.TIMING,
        "isa": isa,
        "peak_gflops": peak_gflops(isa),
        "host": platform.node(),
        "python": platform.python_version(),
    }


def library_versions() -> dict:
    import numpy

    import looptune
    from looptune.measure.reference import blas_info

    out: dict = {"looptune": looptune.__version__, "numpy": numpy.__version__, "blas": blas_info()}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    return out


def git_revision() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def write_json(doc: dict, path: str | Path) -> Path:
    """Write ``doc`` atomically (NaN as null; see ``looptune.report.tables.write_json``)."""
    return tables.write_json(path, doc, indent=1)


REQUIRED_FIELDS = ("schema", "suite_version", "machine", "libraries", "git_revision", "rows")


def load_json(path: str | Path) -> dict:
    """Read a result file; raises ValueError if it is not one."""
    doc = json.loads(Path(path).read_text())
    missing = [k for k in REQUIRED_FIELDS if k not in doc] if isinstance(doc, dict) else ["all"]
    if missing:
        raise ValueError(f"{path}: not a leaderboard result file (missing {', '.join(missing)})")
    for row in doc["rows"]:
        for k in ("gflops", "median_gflops", "max_abs_error", "tuning_seconds"):
            if row.get(k) is None and k in row:
                row[k] = math.nan
    return doc


def merge(docs: Sequence[dict]) -> dict:
    """One document holding the rows of several runs. Rows of a (benchmark, entrant) pair seen
    in an earlier document are replaced by the later one's; each row keeps its ``run`` index
    and the per-run metadata stays in ``runs``. Runs of different suite versions may merge, but
    the merged ``suite_version`` then lists them all."""
    if not docs:
        raise ValueError("nothing to merge")
    rows: dict[tuple[str, str], dict] = {}
    entries: dict[str, dict] = {}
    for i, doc in enumerate(docs):
        for e in doc.get("suite", []):
            entries.setdefault(e["name"], e)
        for row in doc["rows"]:
            rows[(row["benchmark"], row["entrant"])] = {**row, "run": i}
    versions = list(dict.fromkeys(d["suite_version"] for d in docs))
    meta = ("suite_version", "machine", "libraries", "git_revision", "created", "config")
    return {
        "schema": SCHEMA,
        "suite_version": versions[0] if len(versions) == 1 else "+".join(versions),
        "suite": list(entries.values()),
        "machine": docs[0]["machine"],
        "libraries": docs[0]["libraries"],
        "git_revision": docs[0]["git_revision"],
        "runs": [{k: d.get(k) for k in meta} for d in docs],
        "rows": list(rows.values()),
    }
