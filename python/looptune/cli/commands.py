"""Implementations of the ``looptune`` sub-commands (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import looptune
from looptune import search
from looptune._core import Computation, LoopTree
from looptune.measure import Measurer, best_tree, final_measurer
from looptune.measure.reference import Check, check_tree, numpy_gflops
from looptune.report.progress import search_progress
from looptune.space.actions import action_set
from looptune.util.fileio import MAX_SCHEDULE_BYTES, atomic_write_text, read_text_bounded

FALLBACK_SEARCH = "greedy2"
REPORT_MIN_TIME = 0.05  # seconds of timing behind every GFLOP/s figure printed


def build_computation(args: argparse.Namespace) -> Computation:
    if args.op == "matmul":
        return looptune.matmul(args.m, args.k, args.n, layout=args.layout)
    if args.op == "bmm":
        return looptune.batch_matmul(args.b, args.m, args.k, args.n)
    if args.op == "conv2d":
        if args.pad < 0:
            raise ValueError(f"--pad must be >= 0, got {args.pad}")
        return looptune.conv2d(
            *(args.N, args.C, args.H, args.W, args.K, args.R, args.S),
            stride=args.stride,
            pad=args.pad,
            layout=args.layout,
        )
    sizes = dict(args.sizes)
    if len(sizes) != len(args.sizes):
        raise ValueError("a size is given twice")
    return looptune.contraction(args.spec, sizes)


def resolve_search(name: str | None) -> tuple[str, search.SearchFn]:
    """The search to run; the default (the agent) falls back to greedy2 with a note."""
    if name is not None:
        return name, search.get(name)
    try:
        return "agent", search.get("agent")
    except search.SearchUnavailableError as exc:
        print(f"looptune: note: {exc}; using {FALLBACK_SEARCH} instead", file=sys.stderr)
        return FALLBACK_SEARCH, search.get(FALLBACK_SEARCH)


def tune(args: argparse.Namespace) -> int:
    comp = build_computation(args)
    comp.default_schedule().compile()  # oversized buffers fail here, before any search starts
    policy = agent_policy(args)
    name, fn = resolve_search("agent" if policy is not None else args.search)
    base = comp.default_schedule()
    quiet = args.json or getattr(args, "quiet", False)
    if not quiet:
        print(f"tuning {comp.name} with {name}...", file=sys.stderr)
    records = getattr(args, "records", None)
    measurer = Measurer(records=records)
    with search_progress(name, measurer, args.time_budget, quiet=quiet):
        result = fn(
            base,
            measurer,
            time_budget=args.time_budget,
            measure_budget=args.measure_budget,
            actions=action_set(args.actions),
            seed=args.seed,
            **({"policy": policy} if policy is not None else {}),
        )
    # Re-time both schedules at length so the printed figures are not a lucky short run; if the
    # search's pick does not hold up against the base, keep the base (never return a slowdown).
    meter = final_measurer(REPORT_MIN_TIME)
    tuned, base_g = result.best_tree, meter.gflops(base)
    tuned_g = meter.gflops(tuned)
    if records:  # reuse: the best schedule ever recorded for this computation competes too
        recorded = best_tree(comp, records)
        if recorded.hash() not in (tuned.hash(), base.hash()):
            rec_g = meter.gflops(recorded)
            if rec_g > tuned_g:
                tuned, tuned_g = recorded, rec_g
    kept_base = tuned_g < base_g
    if kept_base:
        tuned, tuned_g = base, base_g
    check = check_tree(tuned)
    np_g = numpy_gflops(comp)
    report = {
        "computation": comp.header(),
        "name": comp.name,
        "search": name,
        "base": {"schedule": base.dump(), "gflops": base_g},
        "tuned": {"schedule": tuned.dump(), "gflops": tuned_g},
        "kept_base": kept_base,
        "numpy_gflops": np_g,
        "speedup": tuned_g / base_g,
        "ratio_to_numpy": tuned_g / np_g,
        "tuning_seconds": result.seconds,
        "measurements": result.measurements,
        "check": {
            "ok": check.ok,
            "max_abs_error": check.max_abs_error,
            "tolerance": check.tolerance,
        },
        "saved": None,
    }
    if args.save and check.ok:
        save_schedule(tuned, args.save)
        report["saved"] = str(args.save)
    print(json.dumps(report, indent=2) if args.json else format_tune(report, check))
    if not check.ok:
        print("looptune: error: the tuned kernel is wrong; nothing saved", file=sys.stderr)
        return 1
    return 0


def agent_policy(args: argparse.Namespace) -> object | None:
    """The policy of ``--policy`` (loaded before any tuning starts), or None."""
    path = getattr(args, "policy", None)
    if path is None:
        return None
    if args.search not in (None, "agent"):
        raise ValueError(f"--policy is for the agent search, not --search {args.search}")
    from looptune.agent.policy import load_policy

    return load_policy(path, trust_pickle=getattr(args, "trust_pickle", False))


def format_tune(r: dict, check: Check) -> str:
    return "\n".join(
        [
            f"computation: {r['computation']}",
            f"search: {r['search']}"
            + (
                "  (nothing beat the base schedule on re-timing; kept it)" if r["kept_base"] else ""
            ),
            "",
            "base schedule:",
            r["base"]["schedule"].rstrip(),
            "",
            "tuned schedule:",
            r["tuned"]["schedule"].rstrip(),
            "",
            f"correctness: tuned kernel {check}",
            (
                f"GFLOP/s: base {r['base']['gflops']:.1f}, tuned {r['tuned']['gflops']:.1f}, "
                f"numpy (1 thread) {r['numpy_gflops']:.1f}"
            ),
            f"speedup over base: {r['speedup']:.2f}x; tuned / numpy: {r['ratio_to_numpy']:.2f}",
            f"tuning time: {r['tuning_seconds']:.3f} s ({r['measurements']} measurements)",
        ]
        + ([f"saved: {r['saved']}"] if r["saved"] else [])
    )


def save_schedule(tree: LoopTree, path: str | Path) -> None:
    atomic_write_text(path, tree.dump().rstrip("\n") + "\n")  # readers never see a partial file


def load_schedule(path: str | Path) -> LoopTree:
    text = read_text_bounded(path, MAX_SCHEDULE_BYTES)  # refuses FIFOs, devices, huge files
    try:
        return LoopTree.parse(text)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a looptune schedule: {exc}") from exc


def show(args: argparse.Namespace) -> int:
    tree = load_schedule(args.file)
    comp = tree.computation
    print(f"computation: {comp.header()}")
    print(f"schedule ({tree.depth} loops):")
    print(tree.dump().rstrip())
    if not args.benchmark:
        return 0
    check = check_tree(tree)
    meter = final_measurer(REPORT_MIN_TIME)
    g, ref = meter.gflops(tree), numpy_gflops(comp)
    print(f"\ncorrectness: {check}")
    print(f"GFLOP/s: {g:.1f}, numpy (1 thread) {ref:.1f}, ratio {g / ref:.2f}")
    return 0 if check.ok else 1


def eval(args: argparse.Namespace) -> int:
    from looptune.search.evaluate import (
        format_table,
        load_benchmarks,
        run_eval,
        summarize,
        write_outputs,
    )

    names = [s.strip() for s in args.searches.split(",") if s.strip()]
    unknown = [s for s in names if s not in search.NAMES]
    if not names or unknown:
        raise ValueError(f"unknown search(es) {unknown}; choose from {', '.join(search.NAMES)}")
    benches = load_benchmarks(args.dataset, args.split, args.limit)
    if args.plot:  # fail before a long run, not after it
        from looptune.report.plots import _pyplot

        _pyplot()
    try:
        rows = run_eval(
            benches,
            names,
            time_budget=args.time_budget,
            measure_budget=args.measure_budget,
            actions=action_set(args.actions),
            seed=args.seed,
            skip_unavailable=args.skip_unavailable,
            progress=not args.quiet,
        )
    except search.SearchUnavailableError as exc:
        raise search.SearchUnavailableError(
            f"{exc}; pass --skip-unavailable to run the other searches"
        ) from exc
    summary = summarize(rows)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    write_outputs(summary, rows, config, args.out, args.csv)
    if args.plot:
        from looptune.report.plots import plot_eval

        for path in plot_eval(rows, summary, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    print(
        f"{args.dataset} {args.split}: {len(benches)} benchmarks, time budget "
        f"{args.time_budget:g} s per search"
    )
    print(format_table(summary))
    return 0


def train_script(argv: list[str]) -> int:
    """Run the training entry point ``looptune.agent.train`` (a module of the installed package,
    never
    a script found in the current directory) with ``argv``; return its exit code."""
    from looptune.agent.train import main as train_main

    try:
        train_main(argv)
    except SystemExit as exc:  # --help or a usage error (already printed by argparse)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return 0


def train(args: argparse.Namespace) -> int:
    return train_script(args.args)


def leaderboard(args: argparse.Namespace) -> int:
    """``looptune leaderboard``: run, ``--validate`` or ``--merge`` (see looptune.leaderboard)."""
    from looptune.leaderboard import cli as lb_cli

    return lb_cli.main(args)
