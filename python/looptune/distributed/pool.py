"""WorkerPool: one Ray actor per core of every node, grouped by node kind.

Each actor claims a core of its host (:func:`looptune.distributed.cores.claim_core`) before it
does anything, and reports what it runs on (:class:`WorkerInfo`: node, host, core, CPU name and
signature, ISA). Work is handed out dynamically (a worker gets its next item as soon as one of
its ``depth`` in-flight items returns), and every item of one :meth:`WorkerPool.map` goes to
workers of a single :class:`NodeKind`, so timings of two kinds of machine never meet.

Faults: an actor that dies (``ray.kill``, a node lost, a crash) is dropped; the items it had in
flight go back to the queue and run on another worker of the same kind, up to ``attempts``
times each. An item past its attempts, or left when its kind has no live worker, comes back as a
:class:`Failed` (``lost=True``); an exception raised by the work itself is a ``Failed`` too
(``lost=False``, not retried). Finished items are never lost: ``map`` always returns one
result per item.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from looptune.distributed import WorkerLostError, require_ray


@dataclass(frozen=True)
class NodeKind:
    """What makes two timings comparable: the CPU (vendor/family/model) and the ISA."""

    signature: str
    isa: str

    @property
    def tag(self) -> str:
        """A file-name-safe label, e.g. ``AuthenticAMD-family-25-model-17_avx512``."""
        return f"{'-'.join(self.signature.split())}_{self.isa}"


@dataclass(frozen=True)
class WorkerInfo:
    node: str  # Ray node id
    host: str
    pid: int
    core: int
    cpu: str  # looptune.cpu_name()
    signature: str  # looptune.cpu_signature()
    isa: str  # the node's best ISA

    @property
    def kind(self) -> NodeKind:
        return NodeKind(self.signature, self.isa)

    def label(self) -> str:
        return f"{self.host}:{self.node[:8]}/core{self.core}"

    def to_dict(self) -> dict:
        return {"node": self.node, "host": self.host, "core": self.core, "cpu": self.cpu,
                "cpu_signature": self.signature, "isa": self.isa}


@dataclass(frozen=True)
class Failed:
    """An item that produced no result: ``lost`` (its workers died) or its own ``error``."""

    error: str
    lost: bool
    attempts: int


class Worker:
    """The actor body (wrapped with ``ray.remote`` by the pool). ``payload`` is shared state the
    pool's user gives every worker (e.g. a ``Runner``); ``call(fn, *args)`` runs ``fn(worker,
    *args)`` here, on the claimed core."""

    def __init__(self, payload: Any = None) -> None:
        import looptune
        from looptune.distributed.cores import claim_core

        self.core = claim_core()
        self.payload = payload
        self.state: dict = {}  # per-worker caches of the jobs run here
        ctx = require_ray().get_runtime_context()
        self.info = WorkerInfo(
            ctx.get_node_id(), socket.gethostname(), os.getpid(), self.core,
            looptune.cpu_name(), looptune.cpu_signature(), looptune.host_isa(),
        )

    def whoami(self) -> WorkerInfo:
        return self.info

    def call(self, fn: Callable, *args: Any) -> Any:
        return fn(self, *args)

    def call_batch(self, fn: Callable, items: Sequence[tuple]) -> list[tuple[bool, Any]]:
        """``(True, fn(worker, *item))`` per item, or ``(False, error)`` for one that raised."""
        out = []
        for a in items:
            try:
                out.append((True, fn(self, *a)))
            except Exception as exc:  # noqa: BLE001 - reported per item, the rest still run
                out.append((False, f"{type(exc).__name__}: {exc}"[:2000]))
        return out


@dataclass
class _Slot:
    handle: Any
    info: WorkerInfo
    alive: bool = True
    inflight: int = 0
    done: int = 0


@dataclass
class MapStats:
    items: int = 0
    retried: int = 0
    lost: int = 0
    failed: int = 0
    dead_workers: list = field(default_factory=list)  # labels of workers that died


class WorkerPool:
    """Ray actors, one per core (by default every CPU Ray sees on every live node).

    Args:
        address: a cluster address ("auto", "ray://host:10001", "host:6379"); None starts a
            local Ray unless one is already running in this process.
        workers: at most this many actors (spread over the nodes in turn); None: one per CPU.
        payload: an object every worker keeps (e.g. the ``Runner`` it measures with).
        depth: items in flight per worker (2 hides the round trip behind the running item).
        attempts: how often an item is tried when its workers die.
        init_kwargs: extra ``ray.init`` arguments when the pool starts Ray.
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        payload: Any = None,
        depth: int = 2,
        attempts: int = 3,
        init_kwargs: dict | None = None,
    ) -> None:
        ray = require_ray()
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if depth < 1 or attempts < 1:
            raise ValueError("depth and attempts must be >= 1")
        self.depth, self.attempts = depth, attempts
        self._started = False
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
            ray.init(address=address, **kw)
            self._started = True
        self.stats = MapStats()
        self._fn_refs: dict = {}
        self.slots = self._start(ray, workers, payload)

    def _start(self, ray: Any, workers: int | None, payload: Any) -> list[_Slot]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
        plan = [
            (n["NodeID"], i) for i in range(64) for n in nodes if i < int(n["Resources"]["CPU"])
        ]
        plan = plan[:workers] if workers is not None else plan
        if not plan:
            raise WorkerLostError("the Ray cluster has no node with a free CPU")
        actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(Worker)
        handles = [
            actor.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote(payload)
            for node, _ in plan
        ]
        infos = ray.get([h.whoami.remote() for h in handles])
        return [_Slot(h, info) for h, info in zip(handles, infos)]

    # -- what is there ----------------------------------------------------------------------
    def live(self, kind: NodeKind | None = None) -> list[_Slot]:
        return [s for s in self.slots if s.alive and (kind is None or s.info.kind == kind)]

    def kinds(self) -> dict[NodeKind, int]:
        """Live workers per node kind, largest first."""
        out: dict[NodeKind, int] = {}
        for s in self.live():
            out[s.info.kind] = out.get(s.info.kind, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def default_kind(self) -> NodeKind:
        """The driver's own kind when some worker has it, else the kind with most workers."""
        import looptune

        kinds = self.kinds()
        if not kinds:
            raise WorkerLostError("no live worker in the pool")
        mine = NodeKind(looptune.cpu_signature(), looptune.host_isa())
        return mine if mine in kinds else next(iter(kinds))

    def workers(self, kind: NodeKind | None = None) -> list[WorkerInfo]:
        return [s.info for s in self.live(kind)]

    # -- work -------------------------------------------------------------------------------
    def map(
        self,
        fn: Callable,
        items: Sequence[tuple],
        kind: NodeKind | Sequence[NodeKind] | None = None,
        on_result: Callable[[int, Any, WorkerInfo], None] | None = None,
        chunk: int | None = None,
    ) -> list[tuple[Any, WorkerInfo | None]]:
        """``fn(worker, *item)`` for every item on workers of ``kind`` (default
        :meth:`default_kind`; or one kind per item); returns ``(result or Failed, WorkerInfo or
        None)`` per item, in order. ``on_result(index, result, info)`` is called as each one
        arrives (on the driver, in this thread). Items travel ``chunk`` to a task (default:
        enough to give every worker a few tasks, at most 16), which spreads Ray's cost per task
        over them."""
        ray = require_ray()
        from ray.exceptions import RayError, RayTaskError

        if kind is None or isinstance(kind, NodeKind):
            kinds = [self.default_kind() if kind is None else kind] * len(items)
        else:
            kinds = list(kind)
            if len(kinds) != len(items):
                raise ValueError(f"{len(kinds)} kinds for {len(items)} items")
        if chunk is None:
            n_live = max(1, len(self.live()))
            chunk = max(1, min(16, len(items) // (4 * self.depth * n_live)))
        chunks: list[list[int]] = []
        for i in range(len(items)):  # consecutive items of one kind share a chunk
            if chunks and len(chunks[-1]) < chunk and kinds[chunks[-1][0]] == kinds[i]:
                chunks[-1].append(i)
            else:
                chunks.append([i])
        out: list = [None] * len(items)
        queue = deque(range(len(chunks)))
        tries = [0] * len(chunks)
        pending: dict[Any, tuple[int, _Slot]] = {}
        self.stats.items += len(items)
        fn_ref = self._fn_refs.get(fn)
        if fn_ref is None:  # shipped once per function, not once per map (single-item calls)
            fn_ref = self._fn_refs[fn] = ray.put(fn)

        def fill() -> None:
            for slot in sorted(self.live(), key=lambda s: s.inflight):
                while slot.inflight < self.depth:
                    c = next((c for c in queue if kinds[chunks[c][0]] == slot.info.kind), None)
                    if c is None:
                        break
                    queue.remove(c)
                    tries[c] += 1
                    args = [items[i] for i in chunks[c]]
                    pending[slot.handle.call_batch.remote(fn_ref, args)] = (c, slot)
                    slot.inflight += 1

        def give_up(c: int, why: str) -> None:
            for i in chunks[c]:
                out[i] = (Failed(why, True, tries[c]), None)
                self.stats.lost += 1

        fill()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            c, slot = pending.pop(ready[0])
            slot.inflight -= 1
            try:
                values = ray.get(ready[0])
            except RayTaskError as exc:  # the batch itself broke (e.g. fn not importable)
                for i in chunks[c]:
                    out[i] = (Failed(str(exc)[:2000], False, tries[c]), slot.info)
                    self.stats.failed += 1
            except RayError as exc:  # the actor died (or its node): retry elsewhere
                self._bury(slot)
                if tries[c] < self.attempts:
                    self.stats.retried += 1
                    queue.appendleft(c)
                else:
                    give_up(c, f"worker lost {tries[c]} times: {type(exc).__name__}")
            else:
                slot.done += len(values)
                for i, (ok, value) in zip(chunks[c], values):
                    if not ok:
                        value = Failed(value, False, tries[c])
                        self.stats.failed += 1
                    out[i] = (value, slot.info)
                    if on_result is not None:
                        on_result(i, value, slot.info)
            alive = {sl.info.kind for sl in self.live()}
            for c in [c for c in queue if kinds[chunks[c][0]] not in alive]:
                queue.remove(c)
                give_up(c, f"no live worker of kind {kinds[chunks[c][0]].tag} left")
            fill()
        return out

    def _bury(self, slot: _Slot) -> None:
        if slot.alive:
            slot.alive = False
            self.stats.dead_workers.append(slot.info.label())

    def kill(self, index: int) -> WorkerInfo:
        """Kill worker ``index`` (for fault tests): its in-flight items are retried elsewhere."""
        ray = require_ray()
        slot = self.slots[index]
        ray.kill(slot.handle, no_restart=True)
        return slot.info

    def close(self) -> None:
        """Kill the actors (their cores are freed) and stop Ray if this pool started it."""
        ray = require_ray()
        for s in self.slots:
            if s.alive:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(s.handle, no_restart=True)
                s.alive = False
        if self._started and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Failed", "MapStats", "NodeKind", "Worker", "WorkerInfo", "WorkerPool"]
