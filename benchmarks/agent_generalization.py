"""Issue 12: does the shipped agent tune layers it was not trained on? One thread.

Suites: a fixed sample of the test split of each real-work dataset (``mm_real``, ``bmm_real``,
``conv2d_cnn``: every k-th benchmark of the held-out split, ``--per-suite`` of them) and the
engine-layers suite (the ResNet-18 convs and the large / skinny / GEMV matmuls of
``benchmarks/workloads.py``), plus the paper's ``mm64_256_16`` test split for the regression
check (agent only, against the previous policy's figure in ``paper_table.json``).

Per benchmark: the agent (``looptune.search.get("agent")``: its tuning time, compile and timing
included), the best of ``--search-seconds`` of search split evenly between random search and
beam search (rich actions, walks up to 16 loops deep; results cached in
``results/<isa>_<cpu tag>/agent_generalization_search.json``, per host, so reruns do not
search again), numpy and PyTorch.
The final GFLOP/s of the agent's and the search's schedules are re-timed side by side here.

Two parts, each taken under the bench lock in pieces of a few minutes:

    flock /tmp/looptune-bench.lock python benchmarks/agent_generalization.py --part search \
        --suite conv2d_cnn            # 60 s per benchmark, cached
    flock /tmp/looptune-bench.lock python benchmarks/agent_generalization.py --part final \
        --suite conv2d_cnn            # agent + re-timing + numpy + PyTorch -> JSON
    python benchmarks/agent_generalization.py --part report   # table of every suite
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import environment, host_results, strip_openblas_env, write_json

strip_openblas_env()

import argparse
import json
import time

import looptune
from looptune import datasets
from looptune.measure import Measurer, harness
from looptune.measure.reference import check_tree, numpy_gflops
from looptune.report.tables import format_table, geomean
from looptune.search.beam import beam_search
from looptune.search.random import random_search

SUITES = ("mm_real", "bmm_real", "conv2d_cnn", "engine_conv", "engine_matmul", "mm64_256_16")
KIND = {"mm_real": "matmul", "bmm_real": "matmul", "conv2d_cnn": "conv",
        "engine_conv": "conv", "engine_matmul": "matmul", "mm64_256_16": "matmul"}
# Results are kept per host (ISA and microarchitecture): benchmarks/results/<isa>_<cpu tag>/
HOST = host_results()
SEARCH_CACHE = HOST / "agent_generalization_search.json"
SUFFIX = ""  # "_quick" for --quick runs: they never replace the full results


def suite(name: str, per_suite: int) -> list[tuple[str, looptune.Computation]]:
    """(label, computation) of a suite, in a fixed order."""
    if name in ("engine_conv", "engine_matmul"):
        from workloads import MATMULS, RESNET18

        if name == "engine_conv":
            return [
                (lbl, looptune.conv2d(1, c, hw, hw, k, r, r, stride=st, pad=pd))
                for lbl, c, hw, k, r, st, pd in RESNET18
            ]
        return [(lbl, looptune.matmul(*shape)) for lbl, shape, _ in MATMULS]
    test = datasets.get(name, "test")
    if name != "mm64_256_16":
        step = max(1, len(test) // per_suite)
        test = test[::step][:per_suite]
    return [(b.name, b.computation()) for b in test]


def _load_cache() -> dict:
    return json.loads(SEARCH_CACHE.read_text()) if SEARCH_CACHE.is_file() else {}


def search_part(name: str, items: list, seconds: float) -> None:
    from looptune.space.actions import RICH_ACTIONS

    cache = _load_cache()
    for label, comp in items:
        key = f"{comp.header()}|{seconds:g}"
        if key in cache:
            continue
        measurer = Measurer(min_time=0.01, min_runs=1, max_runs=50, cache={})
        base = comp.default_schedule()
        found = []
        for fn in (random_search, beam_search):
            r = fn(base, measurer, time_budget=seconds / 2, actions=RICH_ACTIONS, max_loops=16)
            found.append({"search": r.search, "gflops": r.best_gflops, "tree": r.best_tree.dump(),
                          "measurements": r.measurements})
        cache = _load_cache()  # another piece may have written meanwhile
        cache[key] = {"label": label, "suite": name, "found": found}
        SEARCH_CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
        best = max(f["gflops"] for f in found)
        print(f"  {label}: search best {best:.1f} GFLOP/s", file=sys.stderr)


def torch_gflops(comp: looptune.Computation, min_time: float) -> float | None:
    from looptune.measure.reference import torch_gflops as tg

    if comp.kind == "batch_matmul" or comp.kind in ("matmul", "conv2d"):
        return tg(comp, min_time)
    return None


def best_of_rounds(timers: dict, rounds: int) -> dict:
    """Each timer's best GFLOP/s over ``rounds`` rounds, the timers taken in turn within a
    round: a phase of contention on the shared host (another tenant on the core's sibling
    thread cuts FMA throughput by up to a third for seconds at a time) then weighs on every
    entrant alike instead of on whichever was timed during it."""
    best: dict = {name: None for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            g = timer()
            if g is not None and (best[name] is None or g > best[name]):
                best[name] = g
    return best


def final_row(label: str, comp: looptune.Computation, seconds: float, min_time: float,
              cache: dict, refs: bool, rounds: int) -> dict:
    agent = looptune.search.get("agent")
    isa = looptune.host_isa()
    t0 = time.perf_counter()
    res = agent(comp.default_schedule())
    tune_s = time.perf_counter() - t0
    row = {"name": label, "flops": comp.flops, "tune_seconds": tune_s,
           "agent_measurements": res.measurements, "agent_tree": res.best_tree.dump()}
    share = min_time / rounds
    # Every schedule is checked against numpy before it is timed; a wrong one has no figure
    # (counted as a failure by the suite's geomean). All figures: the harness (Python call).
    row["agent_ok"] = check_tree(res.best_tree, isa=isa).ok
    kernel = res.best_tree.compile(isa)
    timers = {"agent": _timer(kernel, share, row["agent_ok"])}
    row["base"] = harness.time_kernel(comp.default_schedule(), isa=isa, min_time=min_time / 4,
                                      check=False).gflops
    hit = cache.get(f"{comp.header()}|{seconds:g}")
    if hit:
        best = max(hit["found"], key=lambda f: f["gflops"])
        found_tree = looptune.LoopTree.parse(best["tree"])
        row["search_ok"] = check_tree(found_tree, isa=isa).ok
        timers["search"] = _timer(found_tree.compile(isa), share, row["search_ok"])
        row["search_by"] = best["search"]
    if refs:
        timers["numpy"] = lambda: numpy_gflops(comp, share)
        timers["torch"] = lambda: torch_gflops(comp, share)
    row.update(best_of_rounds(timers, rounds))
    a = row["agent"]
    if hit:
        row["agent_vs_search"] = a / row["search"] if a and row["search"] else None
    if refs:
        row["vs_numpy"] = a / row["numpy"] if a and row["numpy"] else None
        row["vs_torch"] = a / row["torch"] if a and row["torch"] else None
    print(f"  {label}: agent {row['agent'] or float('nan'):.1f} ({tune_s:.2f} s) search "
          f"{row.get('search', float('nan')):.1f} numpy {row.get('numpy', float('nan')):.1f} "
          f"torch {row.get('torch') or float('nan'):.1f}", file=sys.stderr)
    return row


def _timer(kernel: looptune.Kernel, min_time: float, ok: bool):
    """GFLOP/s of ``kernel`` by the harness; None for a schedule that failed its check."""
    if not ok:
        return lambda: None
    return lambda: harness.time_kernel(kernel, min_time=min_time, check=False).gflops


def summarize(name: str, rows: list[dict]) -> dict:
    """Geomeans over the suite's fixed set of rows: a failed or missing figure is counted
    (``<key>_failed``), never averaged away."""
    out = {"suite": name, "kind": KIND[name], "n": len(rows)}
    for key, field in (("agent", "agent_gflops"), ("search", "search_gflops"),
                       ("agent_vs_search", "agent_vs_search"), ("vs_numpy", "vs_numpy"),
                       ("vs_torch", "vs_torch")):
        if not any(key in r for r in rows):
            out[field], out[f"{field}_failed"] = None, None
            continue
        gm = geomean(r.get(key) for r in rows)
        out[field], out[f"{field}_failed"] = float(gm), gm.failed
    out["mean_tune_seconds"] = sum(r["tune_seconds"] for r in rows) / len(rows)
    out["timing"] = harness.TIMING
    return out


def final_part(name: str, items: list, seconds: float, min_time: float, rounds: int) -> None:
    cache = _load_cache()
    refs = name != "mm64_256_16"
    rows = [final_row(lbl, comp, seconds, min_time, cache, refs, rounds) for lbl, comp in items]
    summary = summarize(name, rows)
    if name == "mm64_256_16":
        from looptune.search.agent import uses_paper_policy

        previous = _previous_agent()
        summary["previous_agent_gflops"] = previous
        summary["vs_previous"] = summary["agent_gflops"] / previous if previous else None
        summary["paper_policy_share"] = sum(uses_paper_policy(c) for _, c in items) / len(items)
    data = {"environment": environment(), "timing": harness.TIMING,
            "search_seconds": seconds, "min_time": min_time, "rounds": rounds,
            "summary": summary, "rows": rows}
    write_json(f"agent_generalization_{name}{SUFFIX}", data, HOST)
    print(json.dumps(summary, indent=1))


def _previous_agent() -> float | None:
    """The shipped paper policy's recorded geomean on the mm64_256_16 test split (its JSON),
    when it was recorded on this microarchitecture (a figure from another CPU is no baseline;
    then None, and ``paper_policy_share`` says how much of the split the unchanged paper
    policy still tunes)."""
    from looptune.agent.policy import default_policy_path, meta_path

    meta = json.loads(meta_path(default_policy_path()).read_text())
    if meta.get("cpu_signature") != looptune.cpu_signature():
        return None
    return meta.get("evaluations", {}).get("test_220", {}).get("geomean_agent_gflops")


def report() -> None:
    sums, rows = [], []
    for name in SUITES:
        path = HOST / f"agent_generalization_{name}.json"
        if path.is_file():
            d = json.loads(path.read_text())
            sm = d["summary"]
            failed = sm.get("agent_gflops_failed")
            sm["agent_ok"] = "?" if failed is None else f"{sm['n'] - failed}/{sm['n']}"
            sums.append(sm)
            rows += [{"suite": name, **r} for r in d["rows"]]
    cols = [("suite", "suite", "s"), ("agent_ok", "ok/n", "s"), ("agent_gflops", "agent", ".1f"),
            ("search_gflops", "search", ".1f"), ("agent_vs_search", "vs search", ".2f"),
            ("vs_numpy", "vs numpy", ".2f"), ("vs_torch", "vs torch", ".2f"),
            ("mean_tune_seconds", "tune s", ".2f")]
    text = format_table(sums, cols)
    per = [("suite", "suite", "s"), ("name", "benchmark", "s"), ("agent", "agent", ".1f"),
           ("search", "search", ".1f"), ("numpy", "numpy", ".1f"), ("torch", "torch", ".1f"),
           ("tune_seconds", "tune s", ".2f")]
    text += "\n\n" + format_table([r for r in rows if r["suite"] != "mm64_256_16"], per)
    print(text)
    (HOST / "agent_generalization.md").write_text(text + "\n")
    write_json("agent_generalization", {"environment": environment(peak=False),
                                        "note": "each suite's run environment is in its own "
                                                "agent_generalization_<suite>.json",
                                        "summary": sums, "rows": rows}, HOST)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("search", "final", "report"), required=True)
    p.add_argument("--suite", choices=SUITES)
    p.add_argument("--search-seconds", type=float, default=60.0)
    p.add_argument("--per-suite", type=int, default=5, help="benchmarks per dataset test sample")
    p.add_argument("--offset", type=int, default=0, help="skip the first N of the suite")
    p.add_argument("--limit", type=int, default=None, help="at most N benchmarks of the suite")
    p.add_argument("--min-time", type=float, default=0.3,
                   help="seconds of final timed runs per entrant, split over the rounds")
    p.add_argument("--rounds", type=int, default=3,
                   help="final timings alternate between the entrants this many times (best)")
    p.add_argument("--quick", action="store_true",
                   help="2 benchmarks per suite, 10 s searches, 0.1 s final timings")
    args = p.parse_args()
    if args.quick:
        global SEARCH_CACHE, SUFFIX
        args.per_suite, args.search_seconds, args.min_time = 2, 10.0, 0.1
        SUFFIX = "_quick"
        SEARCH_CACHE = HOST / "agent_generalization_search_quick.json"
    if args.part == "report":
        return report()
    if args.suite is None:
        p.error("--suite is required for the search and final parts")
    looptune._core  # noqa: B018
    items = suite(args.suite, args.per_suite)[args.offset:]
    items = items[: args.limit] if args.limit is not None else items
    if args.part == "search":
        search_part(args.suite, items, args.search_seconds)
    else:
        final_part(args.suite, items, args.search_seconds, args.min_time, args.rounds)


if __name__ == "__main__":
    main()
