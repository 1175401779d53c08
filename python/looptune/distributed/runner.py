"""RayRunner: a ``looptune.measure.Runner`` whose builds and timings run on pool workers.

    pool = WorkerPool("auto")                       # one actor per core of every node
    runner = RayRunner(pool, records="tuning.jsonl")
    m = Measurer(runner=runner)                     # any Measurer user: searches, ML2Tuner...
    runner.run_batch(trees, isa, budget, None)      # many at once, spread over the workers

Every measurement is made on a core of one node of the runner's kind (CPU signature + ISA:
``pool.default_kind()`` unless given), so figures of two kinds of machine never meet. The
records come back to the driver and are written there, once, with the measuring node's CPU name
and signature, the node and the core (``make_record`` fields plus ``cpu_signature``, ``node``,
``host``, ``core``): a ``Measurer`` on a node of that kind warms its cache from them, and no
other host's ``RecordStore.best`` picks them up. Give the ``Measurer`` no ``records`` of its own
(it would write them again, under the driver's CPU).

A measurement whose workers all died is ``Outcome.UNKNOWN`` with ``error`` starting
``"worker lost"`` (typed, never raised) and is not recorded; finished ones always are.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from looptune import _core
from looptune.distributed.pool import Failed, NodeKind, Worker, WorkerInfo, WorkerPool
from looptune.measure import (
    Budget,
    KernelRunner,
    MeasureResult,
    Outcome,
    RecordStore,
    RunnerBase,
    failure,
)
from looptune.measure.store import make_record

LOST = "worker lost"
FLUSH = 16  # records written per append on the driver


def _measure(worker: Worker, tree: _core.LoopTree, isa: str, budget: Budget, cap) -> tuple:
    runner = worker.payload if worker.payload is not None else worker.state.setdefault(
        "kernel_runner", KernelRunner()
    )
    return runner.run(tree, isa, budget, cap)


class RayRunner(RunnerBase):
    """Measures on the workers of ``pool`` of one node ``kind``; see the module doc.

    ``arm`` (a search's time budget starting) is the no-op of ``RunnerBase``: a measurement
    already sent is not cut off.

    Args:
        pool: the :class:`WorkerPool` (its workers measure with their ``payload`` runner, a
            ``KernelRunner`` when the pool has none).
        kind: the node kind to measure on (default ``pool.default_kind()``).
        records: a path or ``RecordStore`` the driver appends every finished measurement to.
    """

    def __init__(
        self,
        pool: WorkerPool,
        kind: NodeKind | None = None,
        records: str | os.PathLike | RecordStore | None = None,
    ) -> None:
        self.pool = pool
        self.kind = pool.default_kind() if kind is None else kind
        if isinstance(records, (str, os.PathLike)):
            records = RecordStore(records)
        self.records = records
        self.where: dict[int, WorkerInfo] = {}  # tree hash -> the worker that measured it last
        self._lock = threading.Lock()

    def run(
        self, tree: _core.LoopTree, isa: str, budget: Budget, cap_seconds: float | None
    ) -> MeasureResult:
        return self.run_batch([tree], isa, budget, cap_seconds)[0]

    def run_batch(
        self,
        trees: Sequence[_core.LoopTree],
        isa: str,
        budget: Budget,
        cap_seconds: float | None = None,
        on_result: Callable[[int, MeasureResult, WorkerInfo], None] | None = None,
    ) -> list[MeasureResult]:
        """Measure ``trees`` in parallel on the kind's workers; one result per tree, in order.
        Finished measurements are recorded on the driver as they arrive (in appends of
        :data:`FLUSH`, the rest at the end, also when the run is interrupted), so a worker that
        dies later loses none of them; ``on_result(i, result, worker)`` sees each one."""
        if isa != self.kind.isa and not (isa == "avx2" and self.kind.isa == "avx512"):
            return [failure(Outcome.COMPILE_ERROR, f"the {self.kind.tag} nodes cannot run {isa}")
                    for _ in trees]

        pending: list[dict] = []  # records not yet on disk (flushed every FLUSH and at the end)

        def arrived(i: int, value: object, info: WorkerInfo) -> None:
            if isinstance(value, MeasureResult):
                with self._lock:
                    self.where[trees[i].hash()] = info
                if self.records is not None:
                    pending.append(node_record(trees[i], value, info, isa, budget))
                    if len(pending) >= FLUSH:
                        self._flush(pending)
                if on_result is not None:
                    on_result(i, value, info)

        try:
            done = self.pool.map(
                _measure, [(t, isa, budget, cap_seconds) for t in trees], kind=self.kind,
                on_result=arrived,
            )
        finally:
            self._flush(pending)
        out = []
        for value, _ in done:
            if isinstance(value, Failed):
                what = LOST if value.lost else "worker error"
                value = failure(Outcome.UNKNOWN, f"{what}: {value.error}")
            out.append(value)
        return out


    def _flush(self, pending: list[dict]) -> None:
        if self.records is not None and pending:
            self.records.extend(pending)  # one locked append for the lot
        pending.clear()


def node_record(
    tree: _core.LoopTree, result: MeasureResult, info: WorkerInfo, isa: str, budget: Budget
) -> dict:
    """The tuning record of a measurement made by ``info``'s worker (keyed by its CPU)."""
    rec = make_record(tree, result, info.cpu, isa, budget, info.signature)
    rec.update(node=info.node, host=info.host, core=info.core)
    return rec


__all__ = ["LOST", "RayRunner", "node_record"]
