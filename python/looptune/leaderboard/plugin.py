"""The plug-in protocol of ``looptune leaderboard --entrant MODULE:ATTRIBUTE``: what a plug-in
is given (:class:`Budget`) and how it is loaded (:func:`load_plugin`); see
:mod:`looptune.leaderboard.entrants` for the protocol. Both the entrants and the worker
processes of :mod:`looptune.leaderboard.isolation` import it (neither imports the other's
module for it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from looptune._core import Computation, LoopTree


class PluginError(ValueError):
    """A ``--entrant`` spec that cannot be loaded or does not follow the protocol."""


@dataclass(frozen=True)
class Budget:
    """What an entrant may spend on one benchmark: ``seconds`` of wall time; its schedule is
    timed (and should be tuned) on ``threads`` threads (``looptune leaderboard --threads``;
    the worker's ``looptune.get_num_threads()`` is set to it)."""

    seconds: float
    threads: int = 1


def load_plugin(spec: str) -> Callable[[Computation, Budget], LoopTree]:
    """Import ``module:attribute``; a class is instantiated and its ``tune`` method returned.

    Raises:
        PluginError: malformed spec, import failure, missing attribute, or not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"--entrant expects MODULE:ATTRIBUTE (e.g. mypkg.mod:tune), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"cannot import entrant module {module_name!r}: {exc}") from exc
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"entrant module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginError(f"cannot instantiate entrant class {attr!r}: {exc}") from exc
        obj = getattr(obj, "tune", None)
    if not callable(obj):
        raise PluginError(f"entrant {spec!r} is not callable (and has no tune method)")
    return obj


__all__ = ["Budget", "PluginError", "load_plugin"]
