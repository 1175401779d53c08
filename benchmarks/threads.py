"""Kernels on N threads (issue 23): the agent's schedule at 1 and 2 threads against numpy and
PyTorch at the same thread count, and a load-balance model past this machine's cores.

    flock /tmp/looptune-bench.lock python benchmarks/threads.py [--quick] [--threads 1,2]
        [--simulate 4,8,16,32,64]

Suites: every distinct ResNet-18 conv at batch 1, BERT-base-like GEMMs (128x768x768,
128x768x3072, 128x3072x768) and batched matmuls (12x128x64x128, 12x128x128x64: 12 heads,
QK^T and PV), the large / skinny / GEMV matmuls of ``benchmarks/workloads.py``, and the
paper's ``mm64_256_16`` test split (``--mm-limit`` of them; ``--quick``: a few layers per
suite). At each thread count T, per layer: the shipped agent tunes for T threads (a fresh
``Measurer(threads=T)``: ``looptune.search.agent``), then its schedule, numpy (BLAS limited
to T threads by threadpoolctl) and PyTorch (``torch.set_num_threads(T)``) are all timed by the
one harness (``looptune.measure.harness``: called from Python, output preallocated, best of
~1 ms batches, T threads), after the schedule is checked against numpy.

Reported: the 2-thread speedup over the same layer's 1-thread looptune (geomean over layers of
at least ``--big`` flops, 50 MFLOP; the smallest ratio among the smaller ones), looptune over
PyTorch and numpy at the highest T per suite and overall, the layers below 0.9x PyTorch, and
the agent's tuning time at T over 1.

``--simulate``: the load-balance model. For each layer, the tiling the agent chose (its
parallel mark removed) and, at S threads, the parallel variant the agent's cost model would
time (``looptune.agent.tiler.parallel_variant``: the loop with the best predicted speedup,
re-blocked when that divides its iterations better): the flops each thread gets from the
engine's partition of that loop's iterations (tails included; ``tiler.thread_work``), the
imbalance (busiest thread / mean) and the predicted speedup bound S / imbalance. A layer the
model keeps serial at S (predicted speedup under ``MIN_SPEEDUP``, or no loop) is predicted at
1x. Memory bandwidth, caches shared between cores and the relayout copies are not modelled;
the fork/join cost enters only the serial/parallel decision (``tiler.dispatch_seconds``,
measured at 2 threads and extrapolated): the bound is the compute-balance bound only.

``--resimulate``: recompute the model and the tables of an existing results file (no
timing).

``--pool-cost``: print the pool's warm dispatch cost at 2 threads
(``tiler.measure_dispatch_seconds``, the figure behind ``tiler.DISPATCH_SECONDS``) and, for a
~40 us layer, the time of a call at 1 and 2 threads after idle gaps of 0 us to 5 ms (the
pool's spin, nap and sleep phases), then exit.

Each layer waits (up to 2 min) until the host's cores are idle (/proc/stat), so that a process
running outside the bench lock does not turn a 2-thread figure into a serial one.

Writes benchmarks/results/threads.json, threads.md (the tables) and threads.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import RESNET18, RESULTS, environment, strip_openblas_env, write_json

strip_openblas_env()

import argparse
import math
import os
import time

import looptune
from looptune import datasets
from looptune.agent import tiler
from looptune.measure import Measurer, harness
from looptune.measure.reference import check_tree
from looptune.report.tables import geomean as _geomean
from looptune.search.agent import agent_search
from looptune.threads import MAX_THREADS

BERT = [
    ("qkv/out 128x768x768", "mm", (128, 768, 768)),
    ("ffn1 128x768x3072", "mm", (128, 768, 3072)),
    ("ffn2 128x3072x768", "mm", (128, 3072, 768)),
    ("QK^T 12x128x64x128", "bmm", (12, 128, 64, 128)),
    ("PV 12x128x128x64", "bmm", (12, 128, 128, 64)),
]
MATMULS = [
    ("mm512", (512, 512, 512)),
    ("mm1024", (1024, 1024, 1024)),
    ("mm2048", (2048, 2048, 2048)),
    ("skinny256x1024x4096", (256, 1024, 4096)),
    ("skinny256x4096x1024", (256, 4096, 1024)),
    ("gemv4096", (4096, 4096, 1)),
    ("vecmat4096", (1, 4096, 4096)),
    ("mm1024x1024x8", (1024, 1024, 8)),
]
SUITES = ("resnet18", "bert", "matmul", "mm64_256_16")
BIG_FLOPS = 50e6


def geomean(values: list[float]) -> float:
    """Geometric mean of the positive finite values (NaN when there are none)."""
    return float(_geomean(values))


def table(head: list[str], body: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def layers(quick: bool, mm_limit: int) -> list[tuple[str, str, looptune.Computation]]:
    out = [("resnet18", name, looptune.conv2d(1, c, hw, hw, k, r, r, stride=st, pad=pd))
           for name, c, hw, k, r, st, pd in RESNET18]
    for name, kind, shape in BERT:
        comp = looptune.matmul(*shape) if kind == "mm" else looptune.batch_matmul(*shape)
        out.append(("bert", name, comp))
    out += [("matmul", name, looptune.matmul(*shape)) for name, shape in MATMULS]
    test = datasets.get("mm64_256_16", "test")
    step = max(1, len(test) // mm_limit) if mm_limit else 1
    picked = test[::step][:mm_limit] if mm_limit else test
    out += [("mm64_256_16", b.name, b.computation()) for b in picked]
    if quick:
        keep = {"stem7x7/2", "3x3@56", "3x3@7", "1x1/2@14", "qkv/out 128x768x768",
                "ffn1 128x768x3072", "QK^T 12x128x64x128", "mm1024", "vecmat4096",
                "skinny256x4096x1024"}
        mm = [x for x in out if x[0] == "mm64_256_16"][:4]
        out = [x for x in out if x[1] in keep] + mm
    return out


def idle_fraction(seconds: float = 0.2) -> float:
    """The fraction of the host's CPU time that was idle over ``seconds`` (/proc/stat; 1.0
    where it does not exist)."""
    def snap() -> tuple[int, int]:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return values[3] + values[4], sum(values)

    if not Path("/proc/stat").is_file():
        return 1.0
    a = snap()
    time.sleep(seconds)
    b = snap()
    return (b[0] - a[0]) / max(1, b[1] - a[1])


def wait_for_idle(need: float = 0.95, max_wait: float = 120.0) -> float:
    """Wait (up to ``max_wait`` s) until the other cores are idle: a threaded figure taken
    while another process runs (outside the bench lock) is the serial one. Returns the idle
    fraction seen last."""
    end = time.perf_counter() + max_wait
    idle = idle_fraction()
    while idle < need and time.perf_counter() < end:
        time.sleep(0.5)
        idle = idle_fraction()
    return idle


def run_layer(comp: looptune.Computation, threads: list[int], min_time: float,
              with_torch: bool) -> dict:
    row: dict = {"flops": comp.flops, "header": comp.header(), "at": {}}
    for t in threads:
        measurer = Measurer(min_time=0.005, min_runs=1, threads=t, cache={})
        t0 = time.perf_counter()
        result = agent_search(comp.default_schedule(), measurer)
        tune_s = time.perf_counter() - t0
        tree = result.best_tree
        check = check_tree(tree)
        lt = harness.time_kernel(tree, min_time=min_time, min_runs=10, check=False, threads=t)
        np_t = harness.time_numpy(comp, min_time, check=False, threads=t)
        th = harness.time_torch(comp, min_time, check=False, threads=t) if with_torch else None
        row["at"][str(t)] = {
            "looptune": lt.gflops if check.ok else math.nan,
            "numpy": np_t.gflops,
            "pytorch": th.gflops if th is not None else None,
            "tuning_seconds": tune_s,
            "measurements": result.measurements,
            "schedule": tree.dump(),
            "parallel_loop": tree.parallel_loop,
            "threads_used": tree.compile().threads_used(t),
            "ok": check.ok,
        }
    return row


def simulate(tree: looptune.LoopTree, counts: list[int]) -> dict:
    """The load-balance model of ``tree``'s tiling at each of ``counts`` threads, and (key
    "ranked") of the schedule the tiling agent's threads-aware scorer ranks first at that
    count (``ranked_first``)."""
    serial = tiler.serial(tree)
    out = {}
    for s in counts:
        first = ranked_first(serial.computation, s)
        ranked = None
        if first is not None and first.parallel_loop is not None:
            ranked = {"loop": first.parallel_loop, "var": first.loops[first.parallel_loop].var,
                      "imbalance": tiler.imbalance(first, first.parallel_loop, s)}
        elif first is not None:
            ranked = {"loop": None, "imbalance": 1.0}
        par = tiler.parallel_variant(serial, s)
        if par is None:
            out[str(s)] = {"loop": None, "imbalance": 1.0, "bound": 1.0, "work_mflop": [
                serial.computation.flops / 1e6], "ranked": ranked}
            continue
        loop = par.parallel_loop
        work = tiler.thread_work(par, loop, s) * serial.computation.flops / 1e6
        imb = float(work.max() / work.mean())
        out[str(s)] = {"loop": loop, "var": par.loops[loop].var,
                       "step": par.loops[loop].step,
                       "reblocked": par.loops[loop].step != serial.loops[loop].step,
                       "iterations": len(tiler.iteration_work(par, loop)),
                       "imbalance": imb, "bound": s / imb,
                       "work_mflop": [round(float(w), 3) for w in work], "ranked": ranked}
    return out


def ranked_first(comp: looptune.Computation, threads: int) -> looptune.LoopTree | None:
    """The macro the shipped tiling policy ranks first for ``comp`` at ``threads`` threads
    (the first one the agent would time on a machine with that many cores), or None when the
    tiling agent does not tune ``comp`` or its policy does not know threads. The policy was
    trained at 1 and 2 threads: past 2 its thread features (efficiency 1 / imbalance, T,
    work per thread) are extrapolated."""
    from looptune.agent.tiler_policy import load_tiler
    from looptune.search.agent import uses_paper_policy

    if uses_paper_policy(comp):
        return None
    try:
        policy = load_tiler()
    except (FileNotFoundError, ValueError):
        return None
    if not policy.knows_threads:
        return None
    trees, _ = policy.rank(comp, threads)
    return trees[0] if trees else None


def pool_cost() -> None:
    """``--pool-cost``: the pool's dispatch cost and a call's time after idle gaps."""
    import numpy as np

    warm = [tiler.measure_dispatch_seconds(2) * 1e6 for _ in range(5)]
    print(f"warm dispatch at 2 threads: {', '.join(f'{w:.2f}' for w in warm)} us "
          f"(the model uses {tiler.DISPATCH_SECONDS * 1e6:.2f} us)")
    comp = looptune.matmul(96, 160, 128)
    par = tiler.parallel_variant(tiler.candidates(comp, looptune.host_isa())[1], 2)
    kernel = par.compile()
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(tuple(t.shape)).astype(np.float32) for t in comp.inputs)
    out = np.zeros(tuple(comp.output.shape), np.float32)
    print("gap before each call: median call time at 1 / 2 threads (us)")
    for gap in (0.0, 20e-6, 100e-6, 300e-6, 1e-3, 5e-3, 50e-3):
        med = []
        for t in (1, 2):
            looptune.set_num_threads(t)
            times = []
            for _ in range(200 if gap < 1e-3 else 40):
                if gap >= 1e-3:
                    time.sleep(gap)
                else:
                    end = time.perf_counter() + gap
                    while time.perf_counter() < end:
                        pass
                t0 = time.perf_counter()
                kernel(a, b, out=out)
                times.append(time.perf_counter() - t0)
            med.append(sorted(times)[len(times) // 2] * 1e6)
        looptune.set_num_threads(1)
        print(f"  {gap * 1e6:7.0f} us: {med[0]:7.1f} / {med[1]:7.1f}")


def ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b and math.isfinite(a) and math.isfinite(b) else math.nan


def summarize(rows: list[dict], threads: list[int], counts: list[int]) -> dict:
    lo, hi = str(threads[0]), str(threads[-1])
    big = [r for r in rows if r["flops"] >= BIG_FLOPS]
    small = [r for r in rows if r["flops"] < BIG_FLOPS]
    def sp(r):
        return ratio(r["at"][hi]["looptune"], r["at"][lo]["looptune"])
    out: dict = {
        "threads": threads,
        "speedup_big_geomean": geomean([sp(r) for r in big]) if big else math.nan,
        "speedup_big_layers": len(big),
        "speedup_small_min": min((sp(r) for r in small), default=math.nan),
        "speedup_small_geomean": geomean([sp(r) for r in small]) if small else math.nan,
        "small_slower": [r["name"] for r in small if sp(r) < 0.97],
        "suites": {},
    }
    for suite in [*SUITES, "all"]:
        rs = [r for r in rows if suite in ("all", r["suite"])]
        if not rs:
            continue
        vt = [ratio(r["at"][hi]["looptune"], r["at"][hi]["pytorch"]) for r in rs]
        vn = [ratio(r["at"][hi]["looptune"], r["at"][hi]["numpy"]) for r in rs]
        t1 = sum(r["at"][lo]["tuning_seconds"] for r in rs)
        tt = sum(r["at"][hi]["tuning_seconds"] for r in rs)
        s = {
            "layers": len(rs),
            "vs_pytorch": geomean(vt),
            "vs_numpy": geomean(vn),
            "below_0.9_pytorch": [r["name"] for r, v in zip(rs, vt) if v < 0.9],
            "speedup_geomean": geomean([sp(r) for r in rs]),
            "tuning_ratio": tt / t1 if t1 else math.nan,
        }
        for c in counts:  # imbalance over the layers that run parallel at c threads
            sims = [r["simulate"][str(c)] for r in rs]
            par = [x for x in sims if x["loop"] is not None] or [{"imbalance": math.nan}]
            s[f"sim{c}_imbalance_mean"] = sum(x["imbalance"] for x in par) / len(par)
            s[f"sim{c}_imbalance_max"] = max(x["imbalance"] for x in par)
            s[f"sim{c}_serial"] = sum(x["loop"] is None for x in sims)
            s[f"sim{c}_bound_geomean"] = geomean([x["bound"] for x in sims])
            ranked = [x["ranked"] for x in sims if x.get("ranked")]
            rpar = [x for x in ranked if x["loop"] is not None]
            s[f"sim{c}_ranked_imbalance_mean"] = (
                sum(x["imbalance"] for x in rpar) / len(rpar) if rpar else math.nan)
            s[f"sim{c}_ranked_layers"] = len(ranked)
        out["suites"][suite] = s
    return out


def tables(rows: list[dict], summary: dict, threads: list[int], counts: list[int]) -> str:
    lo, hi = str(threads[0]), str(threads[-1])
    head = ["suite", "layer", "MFLOP", f"lt@{lo}", f"lt@{hi}", "x", f"torch@{hi}",
            f"numpy@{hi}", "/torch", "/numpy", "par", f"tune {lo}/{hi} s"]
    body = []
    for r in rows:
        a, b = r["at"][lo], r["at"][hi]
        body.append([
            r["suite"], r["name"], f"{r['flops'] / 1e6:.1f}", f"{a['looptune']:.1f}",
            f"{b['looptune']:.1f}", f"{ratio(b['looptune'], a['looptune']):.2f}",
            f"{b['pytorch']:.1f}" if b["pytorch"] else "-", f"{b['numpy']:.1f}",
            f"{ratio(b['looptune'], b['pytorch']):.2f}", f"{ratio(b['looptune'], b['numpy']):.2f}",
            "-" if b["parallel_loop"] is None else str(b["parallel_loop"]),
            f"{a['tuning_seconds']:.2f}/{b['tuning_seconds']:.2f}",
        ])
    loads = [r["load_avg_1m"] for r in rows]
    idle = [r.get("idle_before", 1.0) for r in rows]
    text = [(f"GFLOP/s, harness timing (kernel(a, b, out=c) from Python), threads {lo} and {hi}; "
            f"1-minute load average during the run {min(loads):.2f}-{max(loads):.2f}; "
            f"each layer started once the host was idle (idle fraction before it "
            f"{min(idle):.2f}-{max(idle):.2f}; threaded figures mean something only with the "
            f"{os.cpu_count()} cores idle)"),
            "", table(head, body), ""]
    s = summary
    text.append(
        f"{hi}-thread speedup over {lo}-thread looptune: geomean {s['speedup_big_geomean']:.2f}x "
        f"over {s['speedup_big_layers']} layers >= {BIG_FLOPS / 1e6:.0f} MFLOP; smaller layers "
        f"min {s['speedup_small_min']:.2f}x, geomean {s['speedup_small_geomean']:.2f}x; "
        f"smaller layers slower (< 0.97x): {s['small_slower'] or 'none'}")
    head2 = ["suite", "layers", f"lt/torch@{hi}", f"lt/numpy@{hi}", f"speedup {hi}/{lo}",
             f"tuning {hi}/{lo}", "< 0.9x torch"]
    body2 = [[k, v["layers"], f"{v['vs_pytorch']:.2f}", f"{v['vs_numpy']:.2f}",
              f"{v['speedup_geomean']:.2f}", f"{v['tuning_ratio']:.2f}",
              ", ".join(v["below_0.9_pytorch"]) or "-"] for k, v in s["suites"].items()]
    text += ["", table(head2, body2)]
    if counts:
        head3 = ["suite"] + [f"{c}: imbalance mean/max, serial, bound" for c in counts]
        body3 = [[k] + [f"{v[f'sim{c}_imbalance_mean']:.3f}/{v[f'sim{c}_imbalance_max']:.3f}, "
                        f"{v[f'sim{c}_serial']}, {v[f'sim{c}_bound_geomean']:.1f}x"
                        for c in counts]
                 for k, v in s["suites"].items()]
        text += ["", ("load-balance model (compute balance only: memory bandwidth, shared caches "
                 "and fork/join not modelled). imbalance = busiest thread / mean over the "
                 "layers run parallel; serial = layers the cost model keeps serial (predicted "
                 f"speedup under {tiler.MIN_SPEEDUP:g}x); bound = geomean "
                 "of S / imbalance (1 for serial layers)"), table(head3, body3)]
        head4 = ["suite"] + [f"{c}: ranked-first imbalance mean (layers)" for c in counts]
        body4 = [[k] + [f"{v[f'sim{c}_ranked_imbalance_mean']:.3f} "
                        f"({v[f'sim{c}_ranked_layers']})" for c in counts]
                 for k, v in s["suites"].items()]
        text += ["", ("the same model for the schedule the tiling agent's threads-aware scorer "
                 "ranks first at S threads (the first it would time on an S-core machine; "
                 "tiler-domain layers only; trained at 1 and 2 threads, extrapolated past 2)"),
                 table(head4, body4)]
    return "\n".join(text) + "\n"


def plot(rows: list[dict], threads: list[int], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    lo, hi = str(threads[0]), str(threads[-1])
    names = [r["name"] for r in rows]
    sp = [ratio(r["at"][hi]["looptune"], r["at"][lo]["looptune"]) for r in rows]
    vt = [ratio(r["at"][hi]["looptune"], r["at"][hi]["pytorch"]) for r in rows]
    fig, ax = plt.subplots(2, 1, figsize=(max(8, len(rows) * 0.3), 7), sharex=True)
    ax[0].bar(range(len(rows)), sp, color="tab:blue")
    ax[0].axhline(1.0, color="k", lw=0.5)
    ax[0].set_ylabel(f"looptune {hi} / {lo} threads")
    ax[1].bar(range(len(rows)), vt, color="tab:orange")
    ax[1].axhline(1.0, color="k", lw=0.5)
    ax[1].set_yscale("log")
    ax[1].set_ylabel(f"looptune / PyTorch at {hi} (log)")
    ax[1].set_xticks(range(len(rows)), names, rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def resimulate(name: str, counts: list[int]) -> None:
    """``--resimulate``: the load-balance model and the tables of ``results/<name>.json``
    recomputed from its recorded schedules (no timing)."""
    import json

    doc = json.loads((RESULTS / f"{name}.json").read_text())
    rows, threads = doc["rows"], doc["summary"]["threads"]
    hi = str(threads[-1])
    for row in rows:
        row["simulate"] = simulate(looptune.LoopTree.parse(row["at"][hi]["schedule"]), counts)
    doc["summary"] = summarize(rows, threads, counts)
    text = tables(rows, doc["summary"], threads, counts)
    print(text)
    write_json(name, doc)
    (RESULTS / f"{name}.md").write_text(text)


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"expected comma-separated thread counts, got {text!r}") from None
    if not counts or any(c < 1 or c > MAX_THREADS for c in counts):
        raise SystemExit(f"thread counts must be in 1..{MAX_THREADS}, got {text!r}")
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2", help="thread counts to measure (first: base)")
    p.add_argument("--simulate", default="4,8,16,32,64", help="thread counts of the model")
    p.add_argument("--min-time", type=float, default=0.1, help="seconds of timed batches")
    p.add_argument("--mm-limit", type=int, default=0,
                   help="mm64_256_16 test benchmarks (spread; 0: all 220)")
    p.add_argument("--quick", action="store_true", help="a few layers per suite, short timings")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--out", default="threads", help="result name under benchmarks/results")
    p.add_argument("--resimulate", action="store_true",
                   help="recompute the model and tables of the existing results (no timing)")
    p.add_argument("--pool-cost", action="store_true",
                   help="print the pool's dispatch cost and idle-gap latencies, then exit")
    args = p.parse_args()
    if args.pool_cost:
        pool_cost()
        return
    if args.resimulate:
        resimulate(args.out, parse_counts(args.simulate) if args.simulate else [])
        return
    threads = parse_counts(args.threads)
    counts = parse_counts(args.simulate) if args.simulate else []
    if args.quick:
        args.min_time = min(args.min_time, 0.03)
    with_torch = not args.no_torch and harness.torch_available()
    work = layers(args.quick, args.mm_limit)
    rows = []
    for suite, name, comp in work:
        idle = wait_for_idle()
        load = os.getloadavg()[0]
        row = {"suite": suite, "name": name, "load_avg_1m": load, "idle_before": idle,
               **run_layer(comp, threads, args.min_time, with_torch)}
        hi = row["at"][str(threads[-1])]
        row["simulate"] = simulate(looptune.LoopTree.parse(hi["schedule"]), counts)
        rows.append(row)
        lo = row["at"][str(threads[0])]
        print(f"  {suite} {name}: {lo['looptune']:.1f} -> {hi['looptune']:.1f} GFLOP/s "
              f"(torch {hi['pytorch'] or math.nan:.1f}, numpy {hi['numpy']:.1f}; load {load:.2f})",
              file=sys.stderr, flush=True)
    summary = summarize(rows, threads, counts)
    text = tables(rows, summary, threads, counts)
    print(text)
    doc = {"environment": environment(), "config": vars(args), "summary": summary,
           "model": "compute balance only: flops per thread from the engine's partition of the "
                    "parallel loop (re-blocked when that balances it) the agent's cost model "
                    "chooses at each count; memory bandwidth, shared caches and relayout "
                    "copies are not modelled, the fork/join cost only in the serial/parallel "
                    "decision",
           "rows": rows}
    path = write_json(args.out, doc)
    (RESULTS / f"{args.out}.md").write_text(text)
    png = plot(rows, threads, RESULTS / f"{args.out}.png")
    print(f"wrote {path}" + (f", {png}" if png else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
