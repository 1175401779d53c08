"""Implementations of the ``looptune`` sub-commands (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import looptune
from looptune import search
from looptune._core import Computation, LoopTree
from looptune.measure import Measurer, best_tree, harness
from looptune.measure.reference import Check, check_tree
from looptune.report.progress import search_progress
from looptune.space.actions import action_set
from looptune.util.fileio import MAX_SCHEDULE_BYTES, atomic_write_text, read_text_bounded

FALLBACK_SEARCH = "greedy2"
REPORT_MIN_TIME = 0.05  # seconds of timing behind every GFLOP/s figure printed
REFERENCES = ("numpy", "torch")  # what --compare may name
CONV_NOTE = "numpy's conv2d is an im2col GEMM (window copy + one BLAS matmul), not a conv library"


def parse_compare(text: str) -> tuple[str, ...]:
    """``--compare numpy,torch`` -> ("numpy", "torch"); ValueError for an unknown name."""
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [n for n in names if n not in REFERENCES]
    if not names or bad:
        raise ValueError(
            f"--compare takes a comma list of {', '.join(REFERENCES)}; got {text!r}"
        )
    return names


def reference_timings(
    comp: Computation, names: tuple[str, ...], threads: int = 1
) -> dict[str, dict]:
    """The references of ``--compare``, timed by the harness as the kernels are, on
    ``threads`` threads: {name: {"gflops", "call", "ok"}}; torch is None-valued with an
    ``error`` when not installed."""
    out: dict[str, dict] = {}
    if getattr(comp, "dtype", "float32") == "int8":
        return int8_reference_timings(comp, names, threads)
    for name in names:
        try:
            t = (harness.time_numpy if name == "numpy" else harness.time_torch)(
                comp, REPORT_MIN_TIME, threads=threads
            )
        except ImportError as exc:
            out[name] = {"gflops": None, "call": None, "ok": False, "error": str(exc)}
            continue
        out[name] = {"gflops": t.gflops if t.ok else None, "call": t.note, "ok": t.ok}
    return out


def int8_reference_timings(
    comp: Computation, names: tuple[str, ...], threads: int = 1
) -> dict[str, dict]:
    """The references of an int8 computation: numpy / PyTorch on its float32 twin (same
    shapes; "numpy f32", "torch f32") and, with torch, ``torch._int_mm`` for a matmul."""
    from looptune.measure import int8

    twin = looptune.parse_computation(
        comp.header().replace(" dtype=int8", "").split(" epilogue=")[0])
    out = {f"{k} f32": v for k, v in reference_timings(twin, names, threads).items()}
    if "torch" in names and comp.kind == "matmul" and not comp.block:
        try:
            factory, note = int8.int_mm_entrant(comp)
            t = harness.time_entrant(comp.with_epilogue(""), factory, "torch._int_mm",
                                     min_time=REPORT_MIN_TIME, check=False, note=note,
                                     threads=threads)
            out["torch._int_mm"] = {"gflops": t.gflops, "call": note, "ok": True}
        except ImportError as exc:
            out["torch._int_mm"] = {"gflops": None, "call": None, "ok": False,
                                    "error": str(exc)}
    return out


def build_computation(args: argparse.Namespace) -> Computation:
    # int8 (--dtype int8): passed only then, so a float32 command needs no int8 engine
    dt = {"dtype": "int8"} if getattr(args, "dtype", "float32") == "int8" else {}
    if args.op == "matmul":
        return looptune.matmul(args.m, args.k, args.n, layout=args.layout,
                               epilogue=args.epilogue, **dt)
    if args.op == "bmm":
        return looptune.batch_matmul(args.b, args.m, args.k, args.n, epilogue=args.epilogue,
                                     **dt)
    if args.op == "conv2d":
        if args.pad < 0:
            raise ValueError(f"--pad must be >= 0, got {args.pad}")
        return looptune.conv2d(
            *(args.N, args.C, args.H, args.W, args.K, args.R, args.S),
            stride=args.stride,
            pad=args.pad,
            layout=args.layout,
            groups=args.groups,
            epilogue=args.epilogue,
            **dt,
        )
    sizes = dict(args.sizes)
    if len(sizes) != len(args.sizes):
        raise ValueError("a size is given twice")
    return looptune.contraction(args.spec, sizes)


def wall_seconds() -> float:
    """Seconds since this process started, interpreter start-up and imports included (Linux:
    from /proc; elsewhere: since ``looptune.cli.commands`` was imported)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def resolve_search(name: str | None) -> tuple[str, search.SearchFn]:
    """The search to run; the default (the agent, which runs in numpy: no torch needed) falls
    back to greedy2 with a note when its shipped policy cannot be loaded (a missing or broken
    policy file)."""
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
    threads = getattr(args, "threads", 1)
    measurer = Measurer(records=records, threads=threads)
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
    # Re-time both schedules at length, as a user calls them (the harness: kernel(a, b, out=c)
    # from Python, as the references are timed), so the printed figures are not a lucky short
    # run; if the search's pick does not hold up against the base, keep the base (never
    # return a slowdown).
    def timed(tree: LoopTree) -> float:
        return harness.time_kernel(
            tree, min_time=REPORT_MIN_TIME, min_runs=10, check=False, threads=threads
        ).gflops

    compare = parse_compare(getattr(args, "compare", None) or "numpy")
    tuned, base_g = result.best_tree, timed(base)
    tuned_g = timed(tuned)
    if records:  # reuse: the best schedule ever recorded for this computation competes too
        recorded = best_tree(comp, records)
        if recorded.hash() not in (tuned.hash(), base.hash()):
            rec_g = timed(recorded)
            if rec_g > tuned_g:
                tuned, tuned_g = recorded, rec_g
    kept_base = tuned_g < base_g
    if kept_base:
        tuned, tuned_g = base, base_g
    check = check_tree(tuned)
    refs = reference_timings(comp, compare, threads)
    np_g = refs.get("numpy", {}).get("gflops")
    report = {
        "computation": comp.header(),
        "name": comp.name,
        "search": name,
        "threads": threads,
        "base": {"schedule": base.dump(), "gflops": base_g},
        "tuned": {"schedule": tuned.dump(), "gflops": tuned_g},
        "kept_base": kept_base,
        "numpy_gflops": np_g,
        "speedup": tuned_g / base_g,
        "ratio_to_numpy": tuned_g / np_g if np_g else None,
        "references": {
            k: {**v, "ratio": tuned_g / v["gflops"] if v["gflops"] else None}
            for k, v in refs.items()
        },
        "timing": harness.TIMING,
        "note": CONV_NOTE if comp.kind == "conv2d" and "numpy" in refs else None,
        "tuning_seconds": result.seconds,
        "measurements": result.measurements,
        "wall_seconds": None,
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
    report["wall_seconds"] = wall_seconds()
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
    from looptune.agent.policy import resolve_policy

    return resolve_policy(path, trust_pickle=getattr(args, "trust_pickle", False))


def _threads_text(threads: int) -> str:
    return "one thread" if threads == 1 else f"{threads} threads"


def _label(name: str, threads: int = 1) -> str:
    label = {"numpy": "numpy", "torch": "PyTorch"}.get(name, name)
    return f"{label} ({_threads_text(threads).replace('one ', '1 ')})"


def format_tune(r: dict, check: Check) -> str:
    refs = r.get("references") or {}
    threads = r.get("threads", 1)
    figures = [f"base {r['base']['gflops']:.1f}", f"tuned {r['tuned']['gflops']:.1f}"]
    ratios = [f"speedup over base: {r['speedup']:.2f}x"]
    for name, v in refs.items():
        if v["gflops"] is None:
            why = v.get("error") or "wrong result"
            figures.append(f"{_label(name, threads)} unavailable ({why})")
            continue
        figures.append(f"{_label(name, threads)} {v['gflops']:.1f}")
        ratios.append(f"tuned / {name}: {v['ratio']:.2f}")
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
            ("GOP/s (int8; references in float32 are GFLOP/s): "
             if " dtype=int8" in r["computation"] else "GFLOP/s: ") + ", ".join(figures),
            "; ".join(ratios),
            "(every figure timed the same way: called from Python, output preallocated where the "
            "library allows it, "
            f"best of ~1 ms batches, {_threads_text(threads)})",
        ]
        + ([f"note: {r['note']}"] if r.get("note") else [])
        + [
            f"tuning time: {r['tuning_seconds']:.3f} s ({r['measurements']} measurements); "
            f"command wall time {r['wall_seconds']:.2f} s (start-up, tuning, re-timing, check)"
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
    g = harness.time_kernel(tree, min_time=REPORT_MIN_TIME, min_runs=10, check=False).gflops
    ref = harness.time_numpy(comp, REPORT_MIN_TIME, check=False).gflops
    print(f"\ncorrectness: {check}")
    print(f"GFLOP/s: {g:.1f}, numpy (1 thread) {ref:.1f}, ratio {g / ref:.2f} "
          "(both called from Python, timed by the same harness)")
    if comp.kind == "conv2d":
        print(f"note: {CONV_NOTE}")
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
        if getattr(args, "ray", None):
            from looptune.distributed.jobs import eval_on_ray

            if getattr(args, "threads", 1) != 1:
                raise ValueError("--threads is for local runs: a Ray worker has one core")
            rows = eval_on_ray(args, benches, names, action_set(args.actions))
        else:
            rows = run_eval(
                benches,
                names,
                time_budget=args.time_budget,
                measure_budget=args.measure_budget,
                actions=action_set(args.actions),
                seed=args.seed,
                skip_unavailable=args.skip_unavailable,
                progress=not args.quiet,
                threads=getattr(args, "threads", 1),
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
        f"{args.time_budget:g} s per search, {_threads_text(getattr(args, 'threads', 1))}"
    )
    print(format_table(summary))
    if getattr(args, "ray", None):
        from looptune.distributed.jobs import nodes_markdown

        print(nodes_markdown(rows))
    return 0


def train_script(argv: list[str]) -> int:
    """Run the training entry point ``looptune.agent.train`` (a module of the installed package,
    never
    a script found in the current directory) with ``argv``; return its exit code."""
    try:
        from looptune.agent.train import main as train_main
    except ImportError as exc:
        raise ImportError(
            f"training needs the rl extra (torch, stable-baselines3, sb3-contrib): "
            f"pip install 'looptune[rl]' ({exc})"
        ) from exc
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
