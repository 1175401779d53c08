"""Argument checks shared by the environments, measurers and searches: each raises a typed,
clear error before any work starts.

    >>> action_index(2, 7)
    2
    >>> action_index(2.5, 7)
    Traceback (most recent call last):
    ...
    TypeError: an action is an integer index into the action set, got float 2.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

MAX_MIN_TIME = 60.0  # seconds of timing per schedule at most (as Kernel.benchmark)
MAX_RUNS = 100_000_000


def action_index(action: Any, n: int) -> int:
    """``action`` as an index into an action set of ``n`` names.

    Integers (Python or numpy, or a 0-d / 1-element integer array) are accepted; floats,
    strings and booleans raise ``TypeError``; an index outside ``[0, n)`` raises ``ValueError``.
    """
    if isinstance(action, np.ndarray) and action.size == 1 and action.dtype.kind in "iu":
        action = action.reshape(()).item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, Integral):
        raise TypeError(
            "an action is an integer index into the action set, got "
            f"{type(action).__name__} {action!r}"
        )
    a = int(action)
    if not 0 <= a < n:
        raise ValueError(f"action {a} outside Discrete({n})")
    return a


def check_action_names(names: Sequence[Any]) -> tuple[str, ...]:
    """The action names as a tuple, each one checked by the engine's own action parser
    (``split_0``, ``split_1``, ``split_abc`` and unknown names raise ``ValueError``)."""
    from looptune import _core

    names = tuple(names)
    if not names:
        raise ValueError("the action set is empty")
    probe = _core.matmul(2, 2, 2).default_schedule()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"an action name is a string, got {type(name).__name__} {name!r}")
        probe.is_legal(name)  # the engine's parser: ValueError naming the grammar
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate actions in {list(names)}")
    return names


def finite_positive(name: str, value: Any) -> float:
    """``value`` as a float that is finite and > 0 (NaN, inf, 0, negatives raise ValueError)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return v


def check_timing(min_time: Any, min_runs: Any, max_runs: Any) -> None:
    """Range-check timing options: 0 <= min_time <= 60 s (finite), 1 <= min_runs <= max_runs
    <= 10**8, all of the right type."""
    if isinstance(min_time, bool) or not isinstance(min_time, Real):
        raise TypeError(f"min_time must be a number of seconds, got {min_time!r}")
    if not (math.isfinite(float(min_time)) and 0 <= min_time <= MAX_MIN_TIME):
        raise ValueError(f"min_time must be in [0, {MAX_MIN_TIME:g}] seconds, got {min_time!r}")
    for name, v in (("min_runs", min_runs), ("max_runs", max_runs)):
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    if not 1 <= min_runs <= max_runs <= MAX_RUNS:
        raise ValueError(
            f"need 1 <= min_runs <= max_runs <= {MAX_RUNS}, got min_runs={min_runs}, "
            f"max_runs={max_runs}"
        )


__all__ = ["action_index", "check_action_names", "check_timing", "finite_positive"]
