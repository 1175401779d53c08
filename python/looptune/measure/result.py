"""Typed measurement outcomes (in the spirit of TVM's ``MeasureErrorNo``) and the result."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(str, enum.Enum):
    """How a measurement ended. Only ``OK`` carries a meaningful GFLOP/s figure."""

    OK = "ok"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    WRONG_ANSWER = "wrong_answer"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class MeasureResult:
    """One measurement of a schedule. A failed one has ``gflops == median_gflops == 0.0``
    (a failure ranks below every working schedule) and says why in ``error``."""

    outcome: Outcome
    gflops: float = 0.0  # best run
    median_gflops: float = 0.0
    runs: int = 0
    compile_seconds: float = 0.0
    timing_seconds: float = 0.0  # wall time spent timing
    facts: dict = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0  # best run's wall time (0 when unknown)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def failure(outcome: Outcome, error: str, **kw: object) -> MeasureResult:
    """A failed measurement (GFLOP/s 0)."""
    return MeasureResult(outcome, 0.0, 0.0, error=error, **kw)


# Kept for callers of the old name.
Measurement = MeasureResult

__all__ = ["MeasureResult", "Measurement", "Outcome", "failure"]
