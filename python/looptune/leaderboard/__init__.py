"""The leaderboard: every tuner against numpy, PyTorch and (optionally) TVM on a fixed,
versioned suite, with replayable results (``looptune leaderboard``; see ``entrants`` for the
plug-in protocol of ``--entrant``)."""

from looptune.leaderboard.entrants import Entrant
from looptune.leaderboard.plugin import Budget, PluginError, load_plugin
from looptune.leaderboard.suite import PARTS, VERSION, Entry

__all__ = ["PARTS", "VERSION", "Budget", "Entrant", "Entry", "PluginError", "load_plugin"]
