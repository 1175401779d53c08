"""Leaderboard entrants: looptune's searches, the numpy and PyTorch references, and plug-ins.

An entrant turns one suite entry into result rows (:func:`make_row`). Every looptune-made
schedule is checked against numpy and re-timed, and numpy and PyTorch are timed, by the one
harness (:mod:`looptune.measure.harness`: called from Python with preallocated outputs, the
same warm-up, batches, best-of and thread count: one, or ``looptune leaderboard --threads N``
for every entrant), so entrants are compared on equal terms
whatever they measured while tuning. Rows say which timing they report (``timing``).

Plug-in protocol (``looptune leaderboard --entrant mypkg.mod:tune``)::

    def tune(computation: looptune.Computation, budget: looptune.leaderboard.Budget) -> LoopTree:
        tree = computation.default_schedule()
        ...  # any search, within budget.seconds of wall time
        return tree

``mypkg.mod:Tuner`` may also name a class: it is instantiated without arguments and its
``tune(computation, budget)`` method is called. An optional ``name`` attribute names the row.
A plug-in is imported only when named by that explicit flag. Searches and plug-ins tune in a
worker process: one that runs past ``2 * budget + 5`` seconds is killed and its row says
``timeout``; one that raises, dies or returns something other than a LoopTree says ``failed``.
"""

from __future__ import annotations

import math

from looptune._core import LoopTree
from looptune.leaderboard.plugin import Budget, PluginError, load_plugin  # noqa: F401
from looptune.leaderboard.suite import Entry
from looptune.measure import harness
from looptune.measure.reference import check_tree

FINAL_MIN_TIME = 0.05  # seconds of timing behind every looptune figure in the table
FINAL_TIMINGS = 2  # best of this many such timings
TIMEOUT_FACTOR, TIMEOUT_GRACE = 2.0, 5.0  # a tuner past factor*budget+grace is killed


def make_row(entry: Entry, entrant: str, kind: str, **fields: object) -> dict:
    """One result row (the JSON schema of ``rows``)."""
    comp = entry.computation()
    row = {
        "benchmark": comp.name,
        "part": entry.part,
        "header": comp.header(),
        "flops": comp.flops,
        "entrant": entrant,
        "kind": kind,
        "status": "ok",
        "gflops": math.nan,
        "median_gflops": math.nan,
        "tuning_seconds": 0.0,
        "measurements": 0,
        "schedule": None,
        "max_abs_error": math.nan,
        "error": None,
    }
    row.update(fields)
    return row


def failure_row(
    entry: Entry, entrant: str, kind: str, exc: BaseException, status: str = "failed", **kw
) -> dict:
    """A row for an entrant that failed (or timed out) on ``entry``: kept, never dropped."""
    msg = f"{type(exc).__name__}: {exc}"
    return make_row(entry, entrant, kind, status=status, error=msg[:2000], **kw)


def final_measure(
    entry: Entry, entrant: str, kind: str, tree: LoopTree, seconds: float, budget: float,
    threads: int = 1, **kw
) -> dict:
    """Check ``tree`` against numpy and time it at length on ``threads`` threads; a wrong
    result is status "wrong"."""
    if not isinstance(tree, LoopTree):
        raise TypeError(f"entrant returned {type(tree).__name__}, expected a LoopTree")
    if tree.computation != entry.computation():
        raise ValueError("entrant returned a schedule of a different computation")
    check = check_tree(tree)
    status = "ok" if check.ok else "wrong"
    if seconds > TIMEOUT_FACTOR * budget + TIMEOUT_GRACE:
        status = "timeout"
    kernel = tree.compile()
    m = max(
        (harness.time_kernel(kernel, min_time=FINAL_MIN_TIME, min_runs=10, check=False,
                             threads=threads)
         for _ in range(FINAL_TIMINGS)),
        key=lambda x: x.gflops,
    )
    return make_row(
        entry,
        entrant,
        kind,
        status=status,
        gflops=m.gflops if status == "ok" else math.nan,
        measured_gflops=m.gflops,
        median_gflops=m.median_gflops,
        runs=m.runs,
        timing=m.timing,
        tuning_seconds=seconds,
        threads=threads,
        schedule=tree.dump(),
        max_abs_error=check.max_abs_error,
        tolerance=check.tolerance,
        **kw,
    )


class Entrant:
    """Base class: ``name`` labels the row, ``kind`` groups entrants in the table."""

    name = "?"
    kind = "?"

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the entrant holds (a worker process); the run calls it at the end."""


def deadline(budget: Budget, grace: float = TIMEOUT_GRACE) -> float:
    """Wall seconds an in-process entrant may take before it is killed and shown as timed out."""
    return TIMEOUT_FACTOR * budget.seconds + grace


class WorkerEntrant(Entrant):
    """An entrant that tunes in a worker process under a hard deadline (see ``isolation``):
    ``TIMEOUT_FACTOR * budget + grace`` seconds."""

    def __init__(
        self, worker_kind: str, arg: str, grace: float = TIMEOUT_GRACE, threads: int = 1
    ) -> None:
        from looptune.leaderboard.isolation import EntrantWorker

        self.worker = EntrantWorker(worker_kind, arg, threads=threads)
        self.grace, self.threads = grace, threads

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        from looptune.leaderboard.isolation import EntrantCrash, EntrantTimeout

        limit = deadline(budget, self.grace)
        try:
            out = self.worker.tune(entry, budget.seconds, limit)
            tree = LoopTree.parse(out["schedule"])
            row = final_measure(
                entry, self.name, self.kind, tree, out["seconds"], budget.seconds,
                threads=self.threads, **out["extra"]
            )
        except EntrantCrash as exc:  # the entrant's own error, as it raised it
            row = make_row(entry, self.name, self.kind, status="failed",
                           error=str(exc)[:2000], traceback=exc.traceback)
        except EntrantTimeout as exc:
            row = failure_row(
                entry, self.name, self.kind, exc, status="timeout", tuning_seconds=limit
            )
        except Exception as exc:
            row = failure_row(entry, self.name, self.kind, exc)
        return [row]

    def close(self) -> None:
        self.worker.close()


class SearchEntrant(WorkerEntrant):
    """One of looptune's searches (``looptune.search.get(name)``)."""

    kind = "looptune"

    def __init__(self, search_name: str, grace: float = TIMEOUT_GRACE, threads: int = 1
                 ) -> None:
        self.name = search_name
        super().__init__("search", search_name, grace, threads)


class PluginEntrant(WorkerEntrant):
    """A user's tuner loaded from ``module:attribute`` (see the module docstring)."""

    kind = "plugin"

    def __init__(self, spec: str, grace: float = TIMEOUT_GRACE, threads: int = 1) -> None:
        self.spec = spec
        fn = load_plugin(spec)  # here too: a bad spec is an error before the run starts
        owner = getattr(fn, "__self__", fn)
        self.name = str(getattr(owner, "name", None) or spec)
        super().__init__("plugin", spec, grace, threads)


class NumpyEntrant(Entrant):
    """numpy with ``threads`` BLAS threads (default one; conv2d as an im2col GEMM), timed by
    the harness."""

    name = kind = "numpy"

    def __init__(self, min_time: float = 0.2, threads: int = 1) -> None:
        self.min_time, self.threads = min_time, threads

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        try:
            t = harness.time_numpy(entry.computation(), self.min_time, threads=self.threads)
            return [_reference_row(entry, self.name, self.kind, t)]
        except Exception as exc:
            return [failure_row(entry, self.name, self.kind, exc)]


class TorchEntrant(Entrant):
    """PyTorch on the CPU with ``threads`` threads (default one; ``torch.set_num_threads``),
    timed by the harness: the best of ``allocations``
    fresh buffers (a buffer's alignment moves its speed); ``torch.matmul(out=)`` for matmuls."""

    name = kind = "pytorch"

    def __init__(self, min_time: float = 0.1, allocations: int = harness.TORCH_ALLOCATIONS,
                 threads: int = 1) -> None:
        self.min_time, self.allocations, self.threads = min_time, allocations, threads

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        try:
            import torch
        except ImportError as exc:
            return [failure_row(entry, self.name, self.kind, exc)]
        try:
            t = harness.time_torch(entry.computation(), self.min_time,
                                   allocations=self.allocations, threads=self.threads)
            return [_reference_row(entry, self.name, self.kind, t,
                                   library_version=torch.__version__)]
        except Exception as exc:
            return [failure_row(entry, self.name, self.kind, exc)]


def _reference_row(entry: Entry, name: str, kind: str, t: harness.Timing, **kw) -> dict:
    """The row of a reference library timed by the harness; a wrong output is "wrong"."""
    return make_row(
        entry,
        name,
        kind,
        status="ok" if t.ok else "wrong",
        gflops=t.gflops if t.ok else math.nan,
        measured_gflops=t.gflops,
        median_gflops=t.median_gflops,
        allocation_gflops=t.allocation_gflops,
        max_abs_error=t.max_abs_error,
        tolerance=t.tolerance,
        runs=t.runs,
        timing=t.timing,
        threads=t.threads,
        call=t.note,
        **kw,
    )
