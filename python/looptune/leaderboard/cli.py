"""The ``looptune leaderboard`` command (its arguments are declared in looptune/cli.py)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from looptune.leaderboard import replay, report, run, suite
from looptune.leaderboard.entrants import (
    Budget,
    Entrant,
    NumpyEntrant,
    PluginEntrant,
    SearchEntrant,
    TorchEntrant,
)


class _Only(Entrant):
    """Run ``inner`` only on the named benchmarks (e.g. TVM on a few small ones)."""

    def __init__(self, inner: Entrant, names: set[str]) -> None:
        self.inner, self.names = inner, names
        self.name, self.kind = inner.name, inner.kind

    def run(self, entry: suite.Entry, budget: Budget) -> list[dict]:
        return self.inner.run(entry, budget) if entry.name in self.names else []


def build_entrants(args: argparse.Namespace) -> list[Entrant]:
    from looptune import search

    if args.searches == "none":
        names: list[str] = []
    else:
        names = args.searches.split(",") if args.searches else list(search.NAMES)
    unknown = [n for n in names if n not in search.NAMES]
    if unknown:
        raise ValueError(f"unknown search {unknown[0]!r}; choose from {', '.join(search.NAMES)}")
    threads = getattr(args, "threads", 1)
    entrants: list[Entrant] = [NumpyEntrant(threads=threads)]
    if not args.no_torch:
        entrants.append(TorchEntrant(threads=threads))
    entrants += [SearchEntrant(n, threads=threads) for n in names]
    entrants += [PluginEntrant(spec, threads=threads) for spec in args.entrant]
    if not args.no_tvm:
        from looptune.leaderboard.tvm_entrant import TVMEntrant, check_python, tvm_python

        python = tvm_python(args.tvm_python)
        if python is None:
            print(
                "looptune: note: TVM skipped (no --tvm-python or LOOPTUNE_TVM_PYTHON); "
                "pass --no-tvm to silence this",
                file=sys.stderr,
            )
        else:
            check_python(python)
            tvm: Entrant = TVMEntrant(
                python, args.tvm_trials, args.tvm_records, cached_only=args.tvm_cached_only
            )
            if args.tvm_only:
                tvm = _Only(tvm, set(args.tvm_only.split(",")))
            entrants.append(tvm)
    return entrants


# --quick: a run of about a minute (6 benchmarks, three searches, 1 s budgets)
QUICK_SEARCHES = "base,greedy2,agent"
QUICK_BUDGET = 1.0
BUDGET = 10.0


def apply_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill ``--budget`` and ``--searches`` when not given: the full defaults, or the short
    ones of ``--quick``."""
    if getattr(args, "budget", None) is None:
        args.budget = QUICK_BUDGET if args.quick else BUDGET
    if args.searches is None and args.quick:
        args.searches = QUICK_SEARCHES
    return args


def main(args: argparse.Namespace) -> int:
    apply_defaults(args)
    if args.validate:
        return _validate(args)
    if args.merge:
        doc = run.merge([run.load_json(p) for p in args.merge])
    else:
        entries = suite.select(_parts(args.part), args.quick)
        if args.benchmarks:
            entries = _only_named(entries, args.benchmarks.split(","))
        run_fn = run.run_leaderboard
        if getattr(args, "ray", None):  # the same document, its rows measured on a Ray cluster
            from looptune.distributed.jobs import leaderboard_on_ray

            if getattr(args, "threads", 1) != 1:
                raise ValueError("--threads is for local runs: a Ray worker has one core")

            run_fn = functools.partial(leaderboard_on_ray, args)
        doc = run_fn(
            entries,
            build_entrants(args),
            Budget(args.budget, getattr(args, "threads", 1)),
            progress=not args.no_progress,
            config={
                "parts": _parts(args.part) or list(suite.PARTS),
                "quick": args.quick,
                "threads": getattr(args, "threads", 1),
                "tvm_trials": None if args.no_tvm else args.tvm_trials,
                "command": " ".join(sys.argv),
            },
        )
    return _write(doc, args)


def _only_named(entries: list[suite.Entry], names: list[str]) -> list[suite.Entry]:
    known = {e.name for e in entries}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r} in the selected parts")
    return [e for e in entries if e.name in names]


def _parts(values: list[str] | None) -> list[str]:
    return [p for v in values or () for p in v.split(",") if p]


def _write(doc: dict, args: argparse.Namespace) -> int:
    path = run.write_json(doc, args.out)
    text = report.report_markdown(doc)
    if "nodes" in doc:  # measured on a Ray cluster: which node measured each row
        from looptune.distributed.jobs import nodes_markdown

        text += nodes_markdown(doc["rows"])
    print(text)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(text)
    if args.plots:
        for png in report.plot(doc, args.plots):
            print(f"plot: {png}", file=sys.stderr)
    print(f"results: {path}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    tol = replay.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    verdicts = replay.validate(run.load_json(args.validate), tol)
    print(replay.format_verdicts(verdicts, tol))
    return 0 if all(v.ok for v in verdicts) else 1
