"""One measuring process per core: claim a free core of this host and pin to it.

A claim is an exclusive ``flock`` on ``<dir>/core-<N>.lock`` held for the life of the process
(the kernel drops it when the process dies, so a killed actor frees its core). Every process
that times kernels through this package claims first: pool actors and RLlib env runners alike,
across Ray nodes that share one host (``ray.cluster_utils.Cluster``) and across pools.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path

from looptune.distributed import NoCoreError

_CLAIMED: dict[int, int] = {}  # core -> open lock fd (this process)


def lock_dir() -> Path:
    """Where the lock files live: ``$LOOPTUNE_CORE_LOCKS`` or ``<tmp>/looptune-cores-<uid>``."""
    path = os.environ.get("LOOPTUNE_CORE_LOCKS") or os.path.join(
        tempfile.gettempdir(), f"looptune-cores-{os.getuid()}"
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def claimed_core() -> int | None:
    """The core this process holds, or None."""
    return next(iter(_CLAIMED), None)


def claim_core(wait: float = 10.0) -> int:
    """Claim a free core of this host (of this process's allowed set), pin to it, and return it.

    Waits up to ``wait`` seconds for one to come free (a killed process's lock goes only when
    its process has exited, a moment after ``ray.kill``). Idempotent within a process. The BLAS
    and OpenMP thread pools are limited to one thread so a reference timing (numpy) stays on the
    core too.

    Raises:
        NoCoreError: every allowed core is held by another process.
    """
    held = claimed_core()
    if held is not None:
        return held
    allowed = sorted(os.sched_getaffinity(0))
    directory = lock_dir()
    deadline = time.monotonic() + wait
    while True:
        core = _try_claim(allowed, directory)
        if core is not None:
            return core
        if time.monotonic() >= deadline:
            raise NoCoreError(
                f"all {len(allowed)} cores of this host ({allowed}) are claimed by other "
                f"measuring processes (locks in {directory}); use fewer workers or env runners"
            )
        time.sleep(0.05)


def _try_claim(allowed: list[int], directory: Path) -> int | None:
    for core in allowed:
        fd = os.open(directory / f"core-{core}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.sched_setaffinity(0, {core})
        _CLAIMED[core] = fd
        _single_thread()
        return core
    return None


def release_core() -> None:
    """Give the claimed core back (the process keeps its affinity)."""
    for core, fd in list(_CLAIMED.items()):
        os.close(fd)
        del _CLAIMED[core]


def _single_thread() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    with contextlib.suppress(Exception):  # thread limits are best effort
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


__all__ = ["claim_core", "claimed_core", "lock_dir", "release_core"]
