"""Typed measurement outcomes (in the spirit of TVM's ``MeasureErrorNo``) and the result."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(str, enum.Enum):
    """How a measurement ended. Only ``OK`` carries a meaningful GFLOP/s figure."""

    OK = "ok"
    NOT_INSTANTIABLE = "not_instantiable"  # a template point that gives no loop tree
    COMPILE_REJECTED = "compile_rejected"  # compiled, but over a register or code-size limit
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    WRONG_ANSWER = "wrong_answer"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: object) -> Outcome:
        """The outcome spelled ``text``: its value ("ok") or its name ("OK", as the cost
        models' records store it); ``UNKNOWN`` for one this version lacks."""
        if isinstance(text, Outcome):
            return text
        s = str(text)
        try:
            return cls(s.lower())
        except ValueError:
            return cls.__members__.get(s.upper(), cls.UNKNOWN)


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
