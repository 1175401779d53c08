"""Build: compile a schedule to a kernel and its compile facts, without running it.

Cost models call :func:`build` to read a schedule's hidden (compile-time) features cheaply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from looptune import _core
from looptune.measure.result import Outcome


@dataclass(frozen=True)
class BuildResult:
    """A compiled kernel (None on failure), its facts, the compile time and the outcome."""

    kernel: _core.Kernel | None
    facts: dict = field(default_factory=dict)
    seconds: float = 0.0
    outcome: Outcome = Outcome.OK
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def build(tree: _core.LoopTree, isa: str | None = None) -> BuildResult:
    """JIT-compile ``tree`` for ``isa``; never raises for a bad schedule (``COMPILE_ERROR``)."""
    t0 = time.perf_counter()
    try:
        kernel = tree.compile(isa)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # CompileError, MemoryError, anything the engine throws
        return BuildResult(None, {}, time.perf_counter() - t0, Outcome.COMPILE_ERROR, _why(exc))
    return BuildResult(kernel, dict(kernel.facts), time.perf_counter() - t0)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["BuildResult", "build"]
