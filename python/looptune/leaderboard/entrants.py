"""Leaderboard entrants: looptune's searches, the numpy and PyTorch references, and plug-ins.

An entrant turns one suite entry into result rows (:func:`make_row`). Every looptune-made
schedule is re-timed by the same final measurer and checked against numpy, so entrants are
compared on equal terms whatever they measured while tuning.

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

import numpy as np

from looptune._core import Computation, LoopTree
from looptune.leaderboard.plugin import Budget, PluginError, load_plugin  # noqa: F401
from looptune.leaderboard.suite import Entry
from looptune.measure import final_measurer
from looptune.measure.reference import (
    best_seconds,
    check_tree,
    expected,
    numpy_gflops,
    random_inputs,
)

FINAL_MIN_TIME = 0.05  # seconds of timing behind every looptune figure in the table
FINAL_TIMINGS = 2  # best of this many such timings (numpy's single window is 0.2 s)
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
    entry: Entry, entrant: str, kind: str, tree: LoopTree, seconds: float, budget: float, **kw
) -> dict:
    """Check ``tree`` against numpy and time it at length; a wrong result is status "wrong"."""
    if not isinstance(tree, LoopTree):
        raise TypeError(f"entrant returned {type(tree).__name__}, expected a LoopTree")
    if tree.computation != entry.computation():
        raise ValueError("entrant returned a schedule of a different computation")
    check = check_tree(tree)
    status = "ok" if check.ok else "wrong"
    if seconds > TIMEOUT_FACTOR * budget + TIMEOUT_GRACE:
        status = "timeout"
    m = max(
        (
            final_measurer(FINAL_MIN_TIME).measure(tree)
            for _ in range(FINAL_TIMINGS)
        ),
        key=lambda x: x.gflops,
    )
    outcome = getattr(getattr(m, "outcome", None), "value", "ok")  # typed outcomes of measure/
    if outcome != "ok":
        status = "failed"
        kw["error"] = f"final measurement: {outcome} {getattr(m, 'error', '')}".strip()
    return make_row(
        entry,
        entrant,
        kind,
        status=status,
        gflops=m.gflops if status == "ok" else math.nan,
        measured_gflops=m.gflops,
        median_gflops=m.median_gflops,
        runs=m.runs,
        tuning_seconds=seconds,
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

    def __init__(self, worker_kind: str, arg: str, grace: float = TIMEOUT_GRACE) -> None:
        from looptune.leaderboard.isolation import EntrantWorker

        self.worker, self.grace = EntrantWorker(worker_kind, arg), grace

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        from looptune.leaderboard.isolation import EntrantCrash, EntrantTimeout

        limit = deadline(budget, self.grace)
        try:
            out = self.worker.tune(entry, budget.seconds, limit)
            tree = LoopTree.parse(out["schedule"])
            row = final_measure(
                entry, self.name, self.kind, tree, out["seconds"], budget.seconds, **out["extra"]
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

    def __init__(self, search_name: str, grace: float = TIMEOUT_GRACE) -> None:
        self.name = search_name
        super().__init__("search", search_name, grace)


class PluginEntrant(WorkerEntrant):
    """A user's tuner loaded from ``module:attribute`` (see the module docstring)."""

    kind = "plugin"

    def __init__(self, spec: str, grace: float = TIMEOUT_GRACE) -> None:
        self.spec = spec
        fn = load_plugin(spec)  # here too: a bad spec is an error before the run starts
        owner = getattr(fn, "__self__", fn)
        self.name = str(getattr(owner, "name", None) or spec)
        super().__init__("plugin", spec, grace)


class NumpyEntrant(Entrant):
    """numpy with one BLAS thread (conv2d as im2col + matmul)."""

    name = kind = "numpy"

    def __init__(self, min_time: float = 0.2) -> None:
        self.min_time = min_time

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        try:
            g = numpy_gflops(entry.computation(), self.min_time)
            return [make_row(entry, self.name, self.kind, gflops=g)]
        except Exception as exc:
            return [failure_row(entry, self.name, self.kind, exc)]


class TorchEntrant(Entrant):
    """PyTorch on the CPU with one thread; the best of ``allocations`` fresh input buffers (a
    buffer's alignment moves its speed), each timed as :func:`best_seconds` does."""

    name = kind = "pytorch"

    def __init__(self, min_time: float = 0.1, allocations: int = 3) -> None:
        self.min_time, self.allocations = min_time, allocations

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        try:
            import torch
        except ImportError as exc:
            return [failure_row(entry, self.name, self.kind, exc)]
        try:
            return [self._run(torch, entry)]
        except Exception as exc:
            return [failure_row(entry, self.name, self.kind, exc)]

    def _run(self, torch, entry: Entry) -> dict:
        comp = entry.computation()
        a, b = random_inputs(comp)
        want = expected(comp, a, b)
        fn = _torch_fn(torch, comp)
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            best, runs, err = math.inf, [], 0.0
            with torch.no_grad():
                for _ in range(self.allocations):
                    ta, tb = torch.from_numpy(a.copy()), torch.from_numpy(b.copy())
                    err = float(np.max(np.abs(fn(ta, tb).numpy().astype(np.float64) - want)))
                    s = best_seconds(lambda: fn(ta, tb), self.min_time)
                    runs.append(comp.flops / s / 1e9)
                    best = min(best, s)
        finally:
            torch.set_num_threads(old)
        return make_row(
            entry,
            self.name,
            self.kind,
            gflops=comp.flops / best / 1e9,
            allocation_gflops=runs,
            max_abs_error=err,
            library_version=torch.__version__,
        )


def _torch_fn(torch, comp: Computation):
    if comp.kind == "conv2d":
        stride, pad = comp.conv_stride, comp.conv_pad
        return lambda x, w: torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
    if comp.kind in ("matmul", "batch_matmul"):
        return torch.matmul
    return lambda a, b: torch.einsum(comp.spec, a, b)
