"""The measurement pipeline, in small pieces (after TVM's builder / runner / database):

* ``build``  (:mod:`looptune.measure.build`): compile a schedule -> kernel + compile facts.
* ``run``    (:mod:`looptune.measure.run`): time under a budget with a typed ``Outcome``; the
  ``Runner`` protocol lets a cost model or a deterministic fake stand in.
* ``store``  (:mod:`looptune.measure.store`): JSON Lines tuning records and the bounded cache.
* ``Measurer`` (:mod:`looptune.measure.measurer`) composes them; :func:`final_measurer` is the
  longer timing behind every reported figure. A failed measurement is
  returned (``result.outcome``, GFLOP/s 0) and recorded, never raised.

    >>> import looptune
    >>> from looptune.measure import Measurer, best_kernel
    >>> m = Measurer(records="tuning.jsonl")                           # doctest: +SKIP
    >>> r = m.measure(looptune.matmul(64, 64, 64).default_schedule())  # doctest: +SKIP
    >>> r.outcome, r.gflops, r.median_gflops, r.facts                  # doctest: +SKIP
    >>> kernel = best_kernel(looptune.matmul(64, 64, 64), records="tuning.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from looptune import _core
from looptune.measure.build import BuildResult, build
from looptune.measure.measurer import (
    DEFAULT_CACHE_SIZE,
    FINAL_MIN_TIME,
    Measurer,
    MeasureStats,
    final_measurer,
    peak_gflops,
    shared_cache,
)
from looptune.measure.result import Measurement, MeasureResult, Outcome, failure
from looptune.measure.run import (
    Budget,
    FakeRunner,
    FaultyRunner,
    KernelRunner,
    Runner,
    RunnerBase,
    TimingBudget,
)
from looptune.measure.store import LRUCache, RecordStore


def best_tree(
    computation: _core.Computation,
    records: str | os.PathLike | RecordStore,
    isa: str | None = None,
) -> _core.LoopTree:
    """The fastest recorded schedule of ``computation`` on this CPU and ``isa`` (default the
    host's), else its base schedule (TVM's ``apply_history_best``)."""
    store = records if isinstance(records, RecordStore) else RecordStore(records)
    rec = store.best(computation, isa=_core.host_isa() if isa is None else isa)
    if rec is not None:
        try:
            tree = _core.LoopTree.parse(rec["schedule"])
        except Exception:  # a record from an incompatible version: fall back
            tree = None
        if tree is not None and tree.computation == computation:
            return tree
    return computation.default_schedule()


def best_kernel(
    computation: _core.Computation,
    records: str | os.PathLike | RecordStore,
    isa: str | None = None,
) -> _core.Kernel:
    """The compiled kernel of :func:`best_tree` (falls back to the base schedule)."""
    return best_tree(computation, records, isa).compile(isa)


__all__ = [
    "DEFAULT_CACHE_SIZE",
    "FINAL_MIN_TIME",
    "Budget",
    "BuildResult",
    "FakeRunner",
    "FaultyRunner",
    "KernelRunner",
    "LRUCache",
    "MeasureResult",
    "MeasureStats",
    "Measurement",
    "Measurer",
    "Outcome",
    "RecordStore",
    "Runner",
    "RunnerBase",
    "TimingBudget",
    "best_kernel",
    "best_tree",
    "build",
    "failure",
    "final_measurer",
    "peak_gflops",
    "shared_cache",
]
