"""Dataset evaluation and the leaderboard on a Ray cluster: one job per (benchmark, entrant).

A search measures one schedule after another, each choice depending on the last timing, so the
unit of parallel work is a whole search on one benchmark: it runs on one worker, on that
worker's core, with that worker's ``Runner`` (a ``KernelRunner``, or the pool's payload such as
a ``FakeRunner``), and sends back its row and the records of every measurement it made. Sending
every single measurement over Ray instead (``RayRunner``) would add a round trip to each step.

All jobs of one benchmark go to workers of one node kind (kinds are dealt out in proportion to
their workers), so a row's figures and its benchmark's numpy/base figures come from the same
kind of machine. Each row says which node, host and core measured it; records are written by
the driver, once, as each job returns (a worker that dies later loses nothing returned).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

from looptune._core import Computation, LoopTree
from looptune.distributed.pool import Failed, NodeKind, Worker, WorkerInfo, WorkerPool
from looptune.distributed.runner import node_record
from looptune.measure import Budget, KernelRunner, Measurer, MeasureResult, RecordStore


class _Recording:
    """A Runner that keeps a record of every measurement its inner runner makes."""

    def __init__(self, inner, info: WorkerInfo) -> None:
        self.inner, self.info, self.records = inner, info, []

    def run(self, tree: LoopTree, isa: str, budget: Budget, cap) -> MeasureResult:
        r = self.inner.run(tree, isa, budget, cap)
        self.records.append(node_record(tree, r, self.info, isa, budget))
        return r

    def arm(self, seconds: float) -> None:
        arm = getattr(self.inner, "arm", None)
        if arm is not None:
            arm(seconds)


def _runner(worker: Worker) -> _Recording:
    inner = worker.payload if worker.payload is not None else KernelRunner()
    return _Recording(inner, worker.info)


def deal_kinds(pool: WorkerPool, n: int) -> list[NodeKind]:
    """Node kinds for ``n`` benchmarks, in proportion to each kind's live workers."""
    kinds = pool.kinds()
    if not kinds:
        from looptune.distributed import WorkerLostError

        raise WorkerLostError("no live worker in the pool")
    deck = [k for k, c in kinds.items() for _ in range(c)]
    return [deck[i % len(deck)] for i in range(n)]


def where(info: WorkerInfo | None) -> dict:
    """The row fields naming the worker that measured it."""
    if info is None:
        return {"node": None, "host": None, "core": None, "cpu_signature": None}
    return {"node": info.node, "host": info.host, "core": info.core,
            "cpu_signature": info.signature}


# -- dataset evaluation (looptune eval --ray) -------------------------------------------------
def _final(worker: Worker, tree: LoopTree, min_time: float) -> tuple[float, bool]:
    """A row's figure, as ``looptune.search.evaluate.run_eval`` takes it: checked against numpy,
    then timed by the harness; with a stand-in runner (the pool's payload), that runner's."""
    from looptune.measure import harness
    from looptune.measure.reference import check_tree

    if worker.payload is not None:
        r = worker.payload.run(tree, worker.info.isa, Budget(min_time, 10, 10_000), None)
        return r.gflops, r.ok
    if not check_tree(tree).ok:
        return math.nan, False
    return harness.time_kernel(tree, min_time=min_time, min_runs=10, check=False).gflops, True


def _eval_job(worker: Worker, bench: str, comp: Computation, name: str, opts: dict) -> dict:
    from looptune import search
    from looptune.measure.reference import numpy_gflops
    from looptune.search.evaluate import _row

    rec = _runner(worker)
    base = comp.default_schedule()
    if name == "numpy":
        base_g, _ = _final(worker, base, opts["final_min_time"])
        row = _row(bench, "numpy", numpy_gflops(comp, opts["numpy_min_time"]), base_g,
                   math.nan, 0, "")
        return {"row": row, "records": rec.records}
    result = search.get(name)(
        base,
        Measurer(cache={}, runner=rec),
        time_budget=opts["time_budget"],
        measure_budget=opts["measure_budget"],
        actions=opts["actions"],
        seed=opts["seed"],
    )
    g, ok = _final(worker, result.best_tree, opts["final_min_time"])
    row = _row(bench, name, g, math.nan, result.seconds, result.measurements,
               result.best_tree.dump(), result.best_gflops, len(result.failures), ok)
    return {"row": row, "records": rec.records}


def run_eval(
    pool: WorkerPool,
    benchmarks: Sequence[tuple[str, Computation]],
    names: Sequence[str],
    *,
    time_budget: float | None = 60.0,
    measure_budget: int | None = None,
    actions: Sequence[str] | None = None,
    seed: int = 0,
    final_min_time: float = 0.02,
    numpy_min_time: float = 0.1,
    records: str | os.PathLike | RecordStore | None = None,
    progress: bool = True,
) -> list[dict]:
    """``looptune.search.evaluate.run_eval`` on the pool: the same rows (plus ``node``,
    ``host``, ``core``, ``cpu_signature`` and ``status``), in the same order. A job whose
    workers all died is a row with ``status`` "lost" (and "failed" for a job that raised)."""
    from looptune.report.progress import bar as progress_bar
    from looptune.space.actions import PAPER_ACTIONS

    opts = {"time_budget": time_budget, "measure_budget": measure_budget,
            "actions": tuple(actions or PAPER_ACTIONS), "seed": seed,
            "final_min_time": final_min_time, "numpy_min_time": numpy_min_time}
    store = RecordStore(records) if isinstance(records, (str, os.PathLike)) else records
    kinds = deal_kinds(pool, len(benchmarks))
    items, item_kinds = [], []
    for (bench, comp), kind in zip(benchmarks, kinds):
        for name in ("numpy", *names):
            items.append((bench, comp, name, opts))
            item_kinds.append(kind)
    bar = progress_bar(len(items), quiet=not progress, unit="search")

    def arrived(i: int, value: object, info: WorkerInfo) -> None:
        if store is not None and isinstance(value, dict):
            store.extend(value["records"])
        bar.update()

    done = pool.map(_eval_job, items, kind=item_kinds, on_result=arrived, chunk=1)
    bar.close()
    return _eval_rows(items, done)


def _eval_rows(items: list, done: list) -> list[dict]:
    from looptune.search.evaluate import _row

    rows, base = [], {}
    for (bench, _, name, _), (value, info) in zip(items, done):
        if isinstance(value, Failed):
            row = _row(bench, name, math.nan, math.nan, math.nan, 0, "", failures=1, ok=False)
            row.update(status="lost" if value.lost else "failed", error=value.error)
        else:
            row = {**value["row"], "status": "ok"}
        if name == "numpy":
            base[bench] = row["base_gflops"]
        row["base_gflops"] = b = base.get(bench, math.nan)
        row["speedup"] = row["gflops"] / b if b and b > 0 else math.nan
        rows.append({**row, **where(info)})
    return rows


# -- the leaderboard (looptune leaderboard --ray) ---------------------------------------------
def _leaderboard_job(worker: Worker, args: dict, entry, index: int, seconds: float) -> list:
    from looptune.leaderboard.cli import build_entrants
    from looptune.leaderboard.entrants import Budget as LBBudget

    key = ("leaderboard", repr(sorted(args.items())))
    if key not in worker.state:  # entrants (and their worker processes) live on the worker
        worker.state[key] = build_entrants(argparse.Namespace(**args))
    entrant = worker.state[key][index]
    return entrant.run(entry, LBBudget(seconds))


def run_leaderboard(
    pool: WorkerPool,
    entries: Sequence,
    args: argparse.Namespace,
    seconds: float,
    *,
    progress: bool = True,
    config: dict | None = None,
) -> dict:
    """The leaderboard document of ``looptune.leaderboard.run.run_leaderboard``, its rows
    measured on the pool (every entrant of one benchmark on one node kind); each row names its
    node, and the document lists the workers under ``nodes``."""
    from looptune.leaderboard import run, suite
    from looptune.leaderboard.cli import build_entrants
    from looptune.leaderboard.entrants import failure_row
    from looptune.report.progress import bar as progress_bar

    entrants = build_entrants(args)  # here too: a bad plug-in fails before the run
    for e in entrants:
        e.close()
    plain = {k: v for k, v in vars(args).items() if k != "func"}
    kinds = deal_kinds(pool, len(entries))
    items, item_kinds = [], []
    for entry, kind in zip(entries, kinds):
        for index in range(len(entrants)):
            items.append((plain, entry, index, seconds))
            item_kinds.append(kind)
    bar = progress_bar(len(items), quiet=not progress, unit="run")
    done = pool.map(_leaderboard_job, items, kind=item_kinds, chunk=1,
                    on_result=lambda *_: bar.update())
    bar.close()
    rows = []
    for (_, entry, index, _), (value, info) in zip(items, done):
        e = entrants[index]
        if isinstance(value, Failed):
            status = "lost" if value.lost else "failed"
            value = [failure_row(entry, e.name, e.kind, RuntimeError(value.error), status=status)]
        rows += [{**r, **where(info)} for r in value]
    return {
        "schema": run.SCHEMA,
        "suite_version": suite.VERSION,
        "suite": [e.to_dict() for e in entries],
        "machine": run.machine_info(),
        "nodes": [w.to_dict() for w in pool.workers()],
        "libraries": run.library_versions(),
        "git_revision": run.git_revision(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"budget_seconds": seconds, "ray": True, **(config or {})},
        "rows": rows,
    }


def open_pool(address: str, payload: object = None) -> WorkerPool:
    """The pool of ``--ray ADDR`` ("local": start Ray on this machine)."""
    return WorkerPool(None if address == "local" else address, payload=payload)


def eval_on_ray(args: argparse.Namespace, benches: Sequence, names: Sequence[str],
                actions: Sequence[str]) -> list[dict]:
    """``looptune eval --ray ADDR``: :func:`run_eval` on a pool over the cluster."""
    with open_pool(args.ray) as pool:
        print(f"looptune: {len(pool.slots)} Ray workers, kinds "
              f"{ {k.tag: n for k, n in pool.kinds().items()} }", file=sys.stderr)
        return run_eval(pool, benches, names, time_budget=args.time_budget,
                        measure_budget=args.measure_budget, actions=actions, seed=args.seed,
                        records=getattr(args, "records", None), progress=not args.quiet)


def leaderboard_on_ray(args: argparse.Namespace, entries: Sequence, entrants: Sequence,
                       budget: object, *, progress: bool = True, config: dict | None = None
                       ) -> dict:
    """``looptune leaderboard --ray ADDR`` (the signature of the serial ``run_leaderboard``
    after ``args``; the entrants are rebuilt on each worker)."""
    for e in entrants:
        e.close()
    with open_pool(args.ray) as pool:
        return run_leaderboard(pool, entries, args, budget.seconds, progress=progress,
                               config=config)


def nodes_markdown(rows: Sequence[dict]) -> str:
    """A Markdown table: which node (host, core, CPU signature) measured each row."""
    lines = ["", "### Where each row was measured", "",
             "| benchmark | entrant | host | node | core | CPU signature |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        node = (r.get("node") or "-")[:8]
        lines.append(
            f"| {r.get('benchmark')} | {r.get('entrant') or r.get('search')} | "
            f"{r.get('host') or '-'} | {node} | {r.get('core', '-')} | "
            f"{r.get('cpu_signature') or '-'} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["deal_kinds", "eval_on_ray", "leaderboard_on_ray", "nodes_markdown", "open_pool",
           "run_eval", "run_leaderboard", "where"]
