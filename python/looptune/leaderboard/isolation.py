"""Hard time limits for in-process entrants: each runs in a worker process with a deadline.

A search or plug-in tunes in its own spawned process (started once, reused benchmark after
benchmark). The parent sends the benchmark and the budget and waits at most the deadline; a
worker that overruns it is killed with everything it started (its own process group) and the
benchmark is reported as ``timeout``; a worker that dies or raises is ``failed``. Either way the
next benchmark gets a fresh worker, and the run goes on.

The worker answers with the schedule's text; the parent parses it and times it with the same
final measurement as every other entrant. A search measures through a
:class:`looptune.measure.deadline.DeadlineRunner`, so a slow measurement cannot carry it past its
own budget either.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from typing import Any

from looptune.measure.isolate import WorkerProcess

STARTUP_SECONDS = 300.0  # importing torch and loading a policy on a busy machine


class EntrantTimeout(Exception):
    """The worker did not answer within its deadline (it was killed)."""


class EntrantCrash(RuntimeError):
    """The worker died, or could not start the entrant, or the entrant raised: the message is
    the entrant's own error (``Type: message``), ``traceback`` its traceback if any."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


def _searcher(name: str, threads: int = 1) -> Any:
    from looptune import search
    from looptune.measure import Measurer
    from looptune.measure.deadline import DeadlineRunner

    fn, runner = search.get(name), DeadlineRunner()

    def tune(entry: Any, seconds: float) -> dict:
        runner.arm(seconds)
        t0 = time.perf_counter()
        result = fn(
            entry.computation().default_schedule(),
            Measurer(cache={}, runner=runner, threads=threads),
            time_budget=seconds,
            seed=0,
        )
        return {
            "tree": result.best_tree,
            "seconds": time.perf_counter() - t0,
            "extra": {"measurements": result.measurements, "search_gflops": result.best_gflops},
        }

    return tune


def _plugin(spec: str, threads: int = 1) -> Any:
    from looptune.leaderboard.plugin import Budget, load_plugin

    fn = load_plugin(spec)

    def tune(entry: Any, seconds: float) -> dict:
        t0 = time.perf_counter()
        tree = fn(entry.computation(), Budget(seconds, threads))
        return {"tree": tree, "seconds": time.perf_counter() - t0, "extra": {}}

    return tune


def _serve(conn: Any, kind: str, arg: str, threads: int = 1) -> None:
    """The worker's loop: build the entrant, then answer (entry, seconds) jobs."""
    os.setpgid(0, 0)  # its own group: the parent kills it and its measuring workers together
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    try:
        from looptune import _core

        _core.set_num_threads(threads)  # what the entrant's kernels and measurers default to
        tune = _searcher(arg, threads) if kind == "search" else _plugin(arg, threads)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    conn.send(("ready", None, None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            out = tune(*msg)
            out["tree"] = _schedule_text(out["tree"])
            conn.send(("ok", out, None))
        except BaseException as exc:  # the entrant's failure: reported, the worker lives on
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:2000], traceback.format_exc()))


def _schedule_text(tree: object) -> str:
    from looptune._core import LoopTree

    if not isinstance(tree, LoopTree):
        raise TypeError(f"entrant returned {type(tree).__name__}, expected a LoopTree")
    return tree.dump()


class EntrantWorker(WorkerProcess):
    """The parent's handle on one entrant's worker process (``kind`` "search" or "plugin")."""

    join_seconds = 2.0

    def __init__(
        self, kind: str, arg: str, startup: float = STARTUP_SECONDS, threads: int = 1
    ) -> None:
        if kind not in ("search", "plugin"):
            raise ValueError(f"unknown entrant kind {kind!r}")
        self.kind, self.arg, self.startup, self.threads = kind, arg, startup, threads
        self._ctx = mp.get_context("spawn")  # no forked torch/OpenMP state in the worker
        self._proc: Any = None
        self._conn: Any = None
        self.restarts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_serve, args=(child, self.kind, self.arg, self.threads)
        )
        self._proc.start()
        child.close()
        self._conn = parent
        status, payload, tb = self._receive(self.startup, "starting")
        if status != "ready":
            self.kill()
            raise EntrantCrash(f"entrant could not start: {payload}", tb)

    def _receive(self, seconds: float, what: str) -> tuple:
        try:
            if self._conn.poll(seconds):
                return self._conn.recv()
        except (EOFError, OSError) as exc:
            self._proc.join(2.0)
            code = self._proc.exitcode
            self.kill()
            raise EntrantCrash(f"the entrant's worker died while {what} (exit {code})") from exc
        self.kill()
        raise EntrantTimeout(f"no answer within {seconds:g} s while {what}; worker killed")

    def tune(self, entry: Any, seconds: float, deadline: float) -> dict:
        """Run the entrant on ``entry`` with a ``seconds`` budget; kill it past ``deadline``.

        Returns ``{"schedule": text, "seconds": tuning seconds, "extra": {...}}``.

        Raises:
            EntrantTimeout: no answer within ``deadline`` seconds.
            EntrantCrash: the worker died, or the entrant raised (the message says which).
        """
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self.kill()
            self._start()
        try:
            self._conn.send((entry, seconds))
        except (OSError, ValueError) as exc:
            self.kill()
            raise EntrantCrash(f"cannot reach the entrant's worker: {exc}") from exc
        status, payload, tb = self._receive(deadline, "tuning")
        if status != "ok":
            raise EntrantCrash(payload, tb)
        return {"schedule": payload["tree"], "seconds": payload["seconds"],
                "extra": payload["extra"]}

    def kill(self) -> None:
        """Kill the worker and every process it started."""
        if self._proc is None:
            return
        if self._proc.is_alive():
            for kill in (lambda: os.killpg(self._proc.pid, signal.SIGKILL), self._proc.kill):
                try:
                    kill()
                except (ProcessLookupError, PermissionError):
                    pass
        self._proc.join(5.0)
        self._conn.close()
        self._proc = self._conn = None
        self.restarts += 1


__all__ = ["EntrantCrash", "EntrantTimeout", "EntrantWorker"]
