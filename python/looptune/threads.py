"""How many threads looptune's kernels use: one setting for calls, benchmarks and measurers.

    >>> import looptune
    >>> looptune.set_num_threads(2)        # or "all": the cores this process may run on
    2
    >>> looptune.get_num_threads()
    2
    >>> looptune.set_num_threads(1)
    1

The default is 1, so measurements stay comparable across machines and runs; the environment
variable ``LOOPTUNE_NUM_THREADS`` (a count or ``all``) sets it when looptune is imported. Only a
kernel whose loop tree has a parallel loop (``LoopTree.toggle_parallel``, ``[parallel]`` in a
dump) uses more than one thread; its result is bit-identical at every thread count. More
threads than cores is allowed (with a :class:`ThreadsWarning`); below 1 or above
``MAX_THREADS`` is a ``ValueError``.

``kernel.benchmark(threads=T)`` and ``Measurer(threads=T)`` take the count per call; a
measurement's cache key and record carry it, so a 1-thread figure never stands for 2 threads.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

from looptune import _core

ENV_VAR = "LOOPTUNE_NUM_THREADS"
MAX_THREADS: int = _core.MAX_THREADS


class ThreadsWarning(UserWarning):
    """More threads were asked for than this process has cores."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(n: int | str, *, warn: bool = True) -> int:
    """The thread count ``n`` stands for: an int in 1..MAX_THREADS, a string of one, or "all".

    ``TypeError`` for another type, ``ValueError`` outside the range; a ``ThreadsWarning``
    (when ``warn``) for more threads than :func:`available_cores`.
    """
    if isinstance(n, str):
        text = n.strip().lower()
        if text == "all":
            return available_cores()
        if not text.isdigit():
            raise ValueError(f"thread count must be a positive integer or 'all', got {n!r}")
        n = int(text)
    elif isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"thread count must be an int or 'all', got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"thread count must be in 1..{MAX_THREADS} (or 'all'), got {n}")
    cores = available_cores()
    if warn and n > cores:
        warnings.warn(
            f"{n} threads on {cores} available core(s): threads will share cores "
            "(results are unchanged, timings get worse)",
            ThreadsWarning,
            stacklevel=3,
        )
    return n


def set_num_threads(n: int | str) -> int:
    """Set the thread count of kernel calls, benchmarks and new measurers; returns it."""
    t = resolve_threads(n)
    _core.set_num_threads(t)
    return t


def get_num_threads() -> int:
    """The thread count kernels use (1 unless set)."""
    return _core.get_num_threads()


@contextlib.contextmanager
def num_threads(n: int | str) -> Iterator[int]:
    """``with looptune.num_threads(2): ...`` sets the count for the block, then restores it."""
    old = get_num_threads()
    t = set_num_threads(n)
    try:
        yield t
    finally:
        _core.set_num_threads(old)


def init_from_env() -> None:
    """Apply ``LOOPTUNE_NUM_THREADS`` (called at import); ``ValueError`` naming the variable."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return
    try:
        t = resolve_threads(value, warn=False)
    except ValueError as exc:
        raise ValueError(f"{ENV_VAR}={value!r}: {exc}") from None
    if t > available_cores():
        warnings.warn(
            f"{ENV_VAR}={value}: {t} threads on {available_cores()} available core(s)",
            ThreadsWarning,
            stacklevel=2,
        )
    _core.set_num_threads(t)


__all__ = [
    "ENV_VAR",
    "MAX_THREADS",
    "ThreadsWarning",
    "available_cores",
    "get_num_threads",
    "init_from_env",
    "num_threads",
    "resolve_threads",
    "set_num_threads",
]
