"""Old module paths keep working after the package was grouped into subpackages.

``import looptune.policy`` (and ``from looptune.tables import geomean``, ``python -m
looptune.train``, ...) resolve to the module's new home: the very same module object, so
classes, monkeypatching and pickles behave as before. New code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old dotted name -> new dotted name
MOVED: dict[str, str] = {
    f"looptune.{old}": f"looptune.{new}"
    for old, new in {
        "actions": "space.actions",
        "graph": "space.graph",
        "schedules": "space.schedules",
        "reference": "measure.reference",
        "evaluate": "search.evaluate",
        "search.deadline": "measure.deadline",
        "tables": "report.tables",
        "plots": "report.plots",
        "progress": "report.progress",
        "fileio": "util.fileio",
        "validate": "util.validate",
        "commands": "cli.commands",
        "families": "datasets.families",
        "policy": "agent.policy",
        "policy_io": "agent.policy_io",
        "tiler": "agent.tiler",
        "tiler_policy": "agent.tiler_policy",
        "tile_features": "agent.tile_features",
        "train": "agent.train",
        "train_callbacks": "agent.train_callbacks",
        "costmodel.tuner": "search.model_guided",
        "costmodel.search": "search.model_guided",
        "leaderboard.validate": "leaderboard.replay",
    }.items()
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # the already-imported module itself, not a copy
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec  # keep the module's own spec (the import machinery set ours)

    def get_code(self, fullname: str):  # ``python -m looptune.train`` runs the new module
        spec = importlib.util.find_spec(self.target)
        return spec.loader.get_code(self.target)


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        origin = importlib.util.find_spec(new).origin  # runpy's argv[0]
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new), origin=origin)


def install() -> None:
    """Put the finder on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
