"""The cost models' only contact with the measurement pipeline.

Everything that compiles or times a loop tree for :mod:`looptune.costmodel` goes through the two
functions here, so moving to another measurement pipeline is a change to this file alone.
Outcomes are plain strings (see :class:`Outcome`); errors are caught and returned, never raised.
"""

from __future__ import annotations

from looptune._core import LoopTree
from looptune.errors import CompileError, LoopTuneError


class Outcome:
    """Typed outcomes of building or measuring one configuration."""

    OK = "OK"
    NOT_INSTANTIABLE = "NOT_INSTANTIABLE"  # the knobs do not give a loop tree
    COMPILE_REJECTED = "COMPILE_REJECTED"  # compiled, but over a register or code-size limit
    COMPILE_ERROR = "COMPILE_ERROR"  # the JIT raised
    RUNTIME_ERROR = "RUNTIME_ERROR"
    TIMEOUT = "TIMEOUT"  # one run took longer than the cap
    WRONG_ANSWER = "WRONG_ANSWER"

    ALL = (
        OK,
        NOT_INSTANTIABLE,
        COMPILE_REJECTED,
        COMPILE_ERROR,
        RUNTIME_ERROR,
        TIMEOUT,
        WRONG_ANSWER,
    )


def build_facts(tree: LoopTree, isa: str) -> tuple[dict | None, str, str]:
    """Compile ``tree`` without running it: ``(facts, outcome, error)``."""
    try:
        kernel = tree.compile(isa)
    except (CompileError, LoopTuneError, ValueError) as exc:
        return None, Outcome.COMPILE_ERROR, str(exc)
    return dict(kernel.facts), Outcome.OK, ""


def probe_seconds(tree: LoopTree, isa: str) -> float:
    """Seconds of one run of ``tree`` (a single timed run after warm-up; for the timeout)."""
    return tree.compile(isa).benchmark(0.0, 1, 1).min_seconds


def measure(
    tree: LoopTree, measurer: object, timeout: float | None = None
) -> tuple[float, str, str]:
    """Time ``tree`` with ``measurer`` (a ``looptune.measure.Measurer``): ``(gflops, outcome,
    error)``. With ``timeout`` (seconds), a single probe run slower than it is cut off as
    ``TIMEOUT`` before the full timing (as TVM's runners cut slow candidates off)."""
    isa = getattr(measurer, "isa", None)
    try:
        if timeout is not None:
            secs = probe_seconds(tree, isa)
            if secs > timeout:
                return 0.0, Outcome.TIMEOUT, f"one run took {secs:.3g} s > {timeout:.3g} s"
        result = measurer.measure(tree)
    except CompileError as exc:
        return 0.0, Outcome.COMPILE_ERROR, str(exc)
    except (LoopTuneError, RuntimeError, ValueError) as exc:
        return 0.0, Outcome.RUNTIME_ERROR, str(exc)
    outcome = getattr(result, "outcome", Outcome.OK)
    outcome = getattr(outcome, "name", outcome)  # an enum from the new pipeline
    if outcome != Outcome.OK:
        return 0.0, str(outcome), str(getattr(result, "error", ""))
    return float(result.gflops), Outcome.OK, ""


def check(tree: LoopTree, isa: str, seed: int = 0) -> tuple[bool, str]:
    """Compare ``tree``'s output with numpy's: ``(ok, message)``."""
    from looptune.measure.reference import check_tree

    try:
        result = check_tree(tree, seed=seed, isa=isa)
    except (LoopTuneError, RuntimeError, ValueError) as exc:
        return False, str(exc)
    return result.ok, str(result)
