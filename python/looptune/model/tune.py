"""Tuning a model's layers: each distinct computation once, the results kept in records.

A computation with an OK record of this CPU, ISA and thread count in the records is not
measured again (its fastest recorded schedule is used, as ``looptune.measure.best_tree`` would
choose), so compiling the same model twice on one CPU tunes nothing the second time. The
others are tuned by the named search (``looptune.search.get``), one progress bar per layer on a
terminal.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from looptune import _core
from looptune.measure import Measurer, RecordStore
from looptune.measure.result import Outcome
from looptune.measure.store import host_cpu, same_cpu

DEFAULT_LAYER_BUDGET = 2.0  # seconds of search per distinct layer (the agent needs far less)


def default_records() -> Path:
    """Where ``looptune.compile(records=None)`` keeps its tuning records:
    ``$XDG_CACHE_HOME/looptune/records.jsonl`` (default ``~/.cache/looptune/records.jsonl``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "looptune" / "records.jsonl"


@dataclass
class TuneStats:
    layers: int = 0  # distinct computations
    from_records: int = 0  # found in the records (no measurement)
    tuned: int = 0  # searched now
    measured: int = 0  # fresh measurements
    seconds: float = 0.0  # wall time of the tuning (records lookup included)
    per_layer: list[dict] = field(default_factory=list)


def _recorded(store: RecordStore, headers: set[str], isa: str, threads: int) -> dict[str, dict]:
    """One pass over the records: the fastest OK record of each header on this CPU / ISA /
    thread count (records written before threads were timed on one)."""
    sig, brand = host_cpu()
    best: dict[str, dict] = {}
    for rec in store:
        h = rec.get("computation")
        if (
            h in headers
            and rec.get("outcome") == Outcome.OK.value
            and rec.get("isa") == isa
            and rec.get("threads", 1) == threads
            and same_cpu(rec, sig, brand)
            and (h not in best or (rec.get("gflops") or 0) > (best[h].get("gflops") or 0))
        ):
            best[h] = rec
    return best


def tune(
    computations: list[_core.Computation],
    records: str | os.PathLike | RecordStore | None,
    search: str = "agent",
    layer_budget: float = DEFAULT_LAYER_BUDGET,
    quiet: bool = False,
) -> tuple[dict[str, _core.LoopTree], TuneStats]:
    """The schedule of every computation (keyed by header) and what it took to find them.
    ``records=None``: nothing is read or written (every layer is tuned)."""
    from looptune.report.progress import search_progress
    from looptune.search import get as get_search

    t0 = time.perf_counter()
    isa = _core.host_isa()
    distinct: dict[str, _core.Computation] = {}
    for c in computations:
        distinct.setdefault(c.header(), c)
    store = (
        None if records is None else records if isinstance(records, RecordStore)
        else RecordStore(records)
    )
    stats = TuneStats(layers=len(distinct))
    trees: dict[str, _core.LoopTree] = {}
    threads = getattr(_core, "get_num_threads", lambda: 1)()  # the count kernels run at
    known = _recorded(store, set(distinct), isa, threads) if store is not None else {}
    for h, rec in known.items():
        try:
            tree = _core.LoopTree.parse(rec["schedule"])
        except Exception:  # a record of an incompatible version: tune again
            continue
        if tree.computation == distinct[h]:
            trees[h] = tree
            stats.from_records += 1
    todo = [c for h, c in distinct.items() if h not in trees]
    if todo:
        fn = get_search(search)
        measurer = Measurer(records=store, cache={})
        for i, comp in enumerate(todo, 1):
            before = measurer.stats.measured
            ts = time.perf_counter()
            with search_progress(f"{i}/{len(todo)} {comp.name}", measurer, layer_budget, quiet):
                result = fn(comp.default_schedule(), measurer, time_budget=layer_budget)
            tree = result.best_tree if result.best_gflops > 0 else comp.default_schedule()
            trees[comp.header()] = tree
            stats.tuned += 1
            stats.per_layer.append({
                "computation": comp.name, "gflops": result.best_gflops,
                "measured": measurer.stats.measured - before,
                "seconds": time.perf_counter() - ts,
            })
        stats.measured = measurer.stats.measured
    stats.seconds = time.perf_counter() - t0
    return trees, stats
