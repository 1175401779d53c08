"""Scale-out on a Ray cluster: measurement actors, distributed evaluation and RLlib training.

Needs the optional ``ray`` extra (``pip install "looptune[ray]"``). Nothing outside this
package imports ray; importing ``looptune.distributed`` itself does not either (only its
functions do, when called), so ``looptune --help`` works without ray.

* :mod:`~looptune.distributed.cores`: each measuring process claims a core of its host
  (``os.sched_setaffinity``), held by a lock file, so no two of them time kernels on one core.
* :mod:`~looptune.distributed.pool`: ``WorkerPool``, one actor per core of every node,
  grouped by node kind (CPU signature, ISA); dynamic scheduling with retries on dead actors.
* :mod:`~looptune.distributed.runner`: ``RayRunner``, a ``looptune.measure.Runner`` that sends
  builds and timings to the pool (``Measurer(runner=RayRunner(pool))``) and writes records once.
* :mod:`~looptune.distributed.jobs`: dataset evaluation and the leaderboard, one job per
  (benchmark, search) on a worker.
* :mod:`~looptune.distributed.rllib`: training with RLlib (PPO, APPO, DQN) and export to the
  safe policy format.
"""

from __future__ import annotations

from looptune.errors import LoopTuneError


class RayUnavailableError(LoopTuneError, ImportError):
    """Ray (the ``ray`` extra) is not installed."""


class WorkerLostError(LoopTuneError, RuntimeError):
    """Work whose actors died more often than the retry limit, or with no live actor left."""


class NoCoreError(LoopTuneError, RuntimeError):
    """Every core of this host is already claimed by another measuring process."""


def require_ray():
    """``import ray``, or a clear :class:`RayUnavailableError`."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(
            'this needs Ray: pip install "looptune[ray]" (ray[rllib]==2.60.0, which pins '
            f"gymnasium==1.2.2) ({exc})"
        ) from None
    return ray


__all__ = ["NoCoreError", "RayUnavailableError", "WorkerLostError", "require_ray"]
