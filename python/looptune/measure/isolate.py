"""Isolation: measure in a worker process, so a kernel that crashes or hangs kills a worker,
not the tuner.

    >>> from looptune.measure import Measurer
    >>> from looptune.measure.isolate import IsolatedRunner
    >>> m = Measurer(runner=IsolatedRunner())  # doctest: +SKIP

The worker is forked once and reused; each measurement sends the schedule text and gets a
``MeasureResult`` back. A worker that dies (a segfault, ``os._exit``) yields
``RUNTIME_ERROR``; one that does not answer within ``hard_timeout`` seconds (or, when the
measurer passes a cap, about ``min_runs + 2`` runs at the cap plus ``min_time`` plus 1 s) is
killed and yields ``TIMEOUT``. Either way a fresh worker is started for the next measurement.
One worker measures at a time (the tuner waits for it): start one measurer per core for parallelism.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from typing import Any

from looptune import _core
from looptune.measure.result import MeasureResult, Outcome, failure
from looptune.measure.run import KernelRunner, Runner, RunnerBase, TimingBudget


def _worker(conn: Any, inner: Runner) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the tuner's business
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        text, isa, budget, cap = msg
        try:
            result = inner.run(_core.LoopTree.parse(text), isa, budget, cap)
        except BaseException as exc:  # the inner runner broke its protocol
            result = failure(Outcome.UNKNOWN, f"{type(exc).__name__}: {exc}")
        conn.send(result)


class WorkerProcess:
    """The stop half of a one-worker process owner: ``close`` asks the worker to exit (a ``None``
    message), waits ``join_seconds``, then ``kill``s it; ``__del__`` closes. Subclasses hold
    ``_proc``/``_conn``/``restarts`` and define ``kill`` (which counts a restart)."""

    join_seconds = 1.0

    def kill(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        if self._proc is None:
            return
        try:
            self._conn.send(None)
            self._proc.join(self.join_seconds)
        except (OSError, ValueError):
            pass
        self.kill()
        self.restarts -= 1  # a requested stop is not a restart

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class IsolatedRunner(WorkerProcess, RunnerBase):
    """Runs ``inner`` (default ``KernelRunner(verify)``) in a forked worker process.

    Args:
        inner: the runner the worker uses.
        verify: for the default inner runner: check kernels against numpy.
        hard_timeout: seconds to wait for one measurement before killing the worker.
    """

    def __init__(
        self, inner: Runner | None = None, verify: bool = False, hard_timeout: float = 30.0
    ) -> None:
        if not hard_timeout > 0:
            raise ValueError(f"hard_timeout must be > 0, got {hard_timeout}")
        self.inner = inner if inner is not None else KernelRunner(verify)
        self.hard_timeout = hard_timeout
        self._ctx = mp.get_context("fork")
        self._proc: Any = None
        self._conn: Any = None
        self.restarts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker, args=(child, self.inner), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join()
            self._conn.close()
        self._proc = self._conn = None
        self.restarts += 1

    def run(
        self, tree: _core.LoopTree, isa: str, budget: TimingBudget, cap_seconds: float | None
    ) -> MeasureResult:
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self.kill()
            self._start()
        try:
            self._conn.send((tree.dump(), isa, budget, cap_seconds))
            wait = self.hard_timeout
            if cap_seconds is not None:  # a real cut-off: warm-up + min_runs runs at the cap
                cap_wait = cap_seconds * (budget.min_runs + 2) + budget.min_time + 1.0
                wait = min(wait, cap_wait)
            if self._conn.poll(wait):
                return self._conn.recv()
        except (EOFError, OSError, ConnectionError):
            code = None
            if self._proc is not None:
                self._proc.join(1.0)
                code = self._proc.exitcode
            self.kill()
            return failure(Outcome.RUNTIME_ERROR, f"the measuring worker died (exit code {code})")
        self.kill()
        return failure(Outcome.TIMEOUT, f"no result within {wait:g} s; worker killed")


__all__ = ["IsolatedRunner"]
