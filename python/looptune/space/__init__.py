"""The schedule space: the one owner of action names, the depth cap, masks and observations.

The environments, the agent search (``looptune.search.agent``), the other searches and the
imitation expert all use a :class:`ScheduleSpace`, so what the shipped policy sees and what the
env it was trained in sees cannot drift apart.

    >>> import looptune
    >>> from looptune.space import ScheduleSpace
    >>> space = ScheduleSpace("paper")
    >>> tree = looptune.matmul(64, 64, 64).default_schedule()
    >>> mask, reasons = space.legality(tree)       # one engine call for the whole action list
    >>> obs = space.observe(tree)                   # what LoopTune-v0 returns for this state

Action names and their grammar belong to the engine (``_core.check_action`` validates a name,
``LoopTree.legality`` gives the mask and the reasons under the depth cap in one call); the
depth cap defaults to the engine's ``DEFAULT_MAX_LOOPS``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from looptune import _core
from looptune.errors import IllegalActionError
from looptune.space import graph as lgraph
from looptune.space.actions import action_set
from looptune.util.validate import check_action_names

if TYPE_CHECKING:  # networkx is imported only when a graph is built
    import networkx as nx

DEFAULT_MAX_LOOPS: int = _core.DEFAULT_MAX_LOOPS  # the depth cap of envs, searches and agents
MAX_LOOPS = DEFAULT_MAX_LOOPS  # the old name of DEFAULT_MAX_LOOPS (not _core.MAX_TREE_LOOPS)
CURSOR_ACTIONS = ("up", "down")
OBSERVATIONS = ("box", "dict")
_FEATURE_CACHE_SIZE = 8192


def action_names(actions: str | Sequence[str]) -> tuple[str, ...]:
    """A validated action tuple: a set name ("paper", "rich") or a list of names, each checked
    by the engine's parser (``ValueError`` for an unknown, malformed or duplicate name)."""
    names = action_set(actions) if isinstance(actions, str) else tuple(actions)
    return check_action_names(names)  # the engine's parser; TypeError for a non-string


class ScheduleSpace:
    """Actions, legality under a depth cap, and observations of loop trees.

    Args:
        actions: "paper", "rich" or a sequence of action names.
        max_loops: the depth cap (a split making a tree deeper is illegal) and the number of
            feature rows of an observation; at most ``_core.MAX_TREE_LOOPS``.
        observation: "box" (flat per-loop features) or "dict" (loops, tensors, action_mask).

    When the action set has ``parallel`` (the rich set), the observation also shows which loop
    is parallel: ``max_loops`` more floats after the box's features (1.0 on the parallel loop's
    row), or a ``parallel`` entry of the dict. Spaces without that action (the paper set, the
    shipped paper policies) keep their observation shape.
    """

    def __init__(
        self,
        actions: str | Sequence[str] = "paper",
        max_loops: int = DEFAULT_MAX_LOOPS,
        observation: str = "box",
    ) -> None:
        self.actions = action_names(actions)
        if not isinstance(max_loops, int) or isinstance(max_loops, bool) or max_loops < 1:
            raise ValueError(f"max_loops must be a positive int, got {max_loops!r}")
        if max_loops > _core.MAX_TREE_LOOPS:
            raise ValueError(f"max_loops must be <= {_core.MAX_TREE_LOOPS}, got {max_loops}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be 'box' or 'dict', got {observation!r}")
        self.max_loops, self.observation = max_loops, observation
        self._index = {a: i for i, a in enumerate(self.actions)}
        self.parallel_column = "parallel" in self._index
        self._features: OrderedDict[int, np.ndarray] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"ScheduleSpace(actions={list(self.actions)}, max_loops={self.max_loops}, "
            f"observation={self.observation!r})"
        )

    # -- legality and mutation ---------------------------------------------------------------
    def check_tree(self, tree: _core.LoopTree) -> None:
        """``ValueError`` if ``tree`` is deeper than the cap (it cannot be observed)."""
        if not isinstance(tree, _core.LoopTree):
            raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
        if tree.depth > self.max_loops:
            raise ValueError(
                f"{tree.computation.name} has {tree.depth} loops, more than "
                f"max_loops={self.max_loops}"
            )

    def legality(self, tree: _core.LoopTree) -> tuple[np.ndarray, list[str]]:
        """(bool mask over ``actions``, reason per action: "" when legal), one engine call."""
        return tree.legality(list(self.actions), self.max_loops)

    def mask(self, tree: _core.LoopTree) -> np.ndarray:
        """Legal actions of ``tree`` as a bool array (MaskablePPO's protocol)."""
        return self.legality(tree)[0]

    def index(self, action: int | str) -> int:
        """The index of an action given by index or name (``ValueError`` if not in the set)."""
        if isinstance(action, str):
            if action not in self._index:
                raise ValueError(f"action {action!r} is not in {list(self.actions)}")
            return self._index[action]
        a = int(action)
        if not 0 <= a < len(self.actions):
            raise ValueError(f"action {action!r} outside Discrete({len(self.actions)})")
        return a

    def try_apply(self, tree: _core.LoopTree, action: int | str) -> _core.LoopTree | None:
        """The tree after ``action``, or None when it is illegal (depth cap included)."""
        return tree.try_apply_capped(self.actions[self.index(action)], self.max_loops)

    def apply(self, tree: _core.LoopTree, action: int | str) -> _core.LoopTree:
        """The tree after ``action``; ``IllegalActionError`` with the engine's reason if illegal."""
        new = self.try_apply(tree, action)
        if new is None:
            raise IllegalActionError(self.reason(tree, action))
        return new

    def reason(self, tree: _core.LoopTree, action: int | str) -> str:
        """Why ``action`` is illegal in ``tree`` ("" if it is legal)."""
        name = self.actions[self.index(action)]
        return tree.legality([name], self.max_loops)[1][0]

    def successors(
        self, tree: _core.LoopTree, actions: Sequence[str] | None = None
    ) -> list[tuple[str, _core.LoopTree]]:
        """Legal ``(action, tree)`` pairs one action away (``actions`` default: the space's)."""
        out = []
        for a in self.actions if actions is None else actions:
            nxt = tree.try_apply_capped(a, self.max_loops)
            if nxt is not None:
                out.append((a, nxt))
        return out

    def neighbors(self, tree: _core.LoopTree) -> list[_core.LoopTree]:
        """Distinct schedules reachable by free cursor moves plus one schedule-changing action.

        Cursor moves are free only if the action set has both of them; otherwise the cursor
        stays where it is. Excludes ``tree`` itself; deterministic order.
        """
        mutations = [a for a in self.actions if a not in CURSOR_ACTIONS]
        free_cursor = all(a in self.actions for a in CURSOR_ACTIONS)
        positions = range(tree.depth) if free_cursor else [tree.cursor]
        seen = {tree.hash()}
        out = []
        for pos in positions:
            for _, nxt in self.successors(at_cursor(tree, pos), mutations):
                h = nxt.hash()
                if h not in seen:
                    seen.add(h)
                    out.append(nxt)
        return out

    # -- observations ------------------------------------------------------------------------
    def observation_space(self) -> spaces.Space:
        rows = self.max_loops
        extra = rows if self.parallel_column else 0
        if self.observation == "box":
            return spaces.Box(-1.0, 1.0, (rows * lgraph.FEATURES_PER_LOOP + extra,), np.float32)
        tensor_cols = lgraph.FEATURES_PER_LOOP - lgraph.LOOP_FEATURES
        entries = {
            "loops": spaces.Box(-1.0, 1.0, (rows * lgraph.LOOP_FEATURES,), np.float32),
            "tensors": spaces.Box(-1.0, 1.0, (rows * tensor_cols,), np.float32),
            "action_mask": spaces.Box(0.0, 1.0, (len(self.actions),), np.float32),
        }
        if extra:
            entries["parallel"] = spaces.Box(0.0, 1.0, (rows,), np.float32)
        return spaces.Dict(entries)

    def parallel_flags(self, tree: _core.LoopTree) -> np.ndarray:
        """(max_loops,) float32: 1.0 at the parallel loop's row, 0 elsewhere."""
        flags = np.zeros(self.max_loops, np.float32)
        if tree.parallel_loop is not None:
            flags[tree.parallel_loop] = 1.0
        return flags

    def features(self, tree: _core.LoopTree) -> np.ndarray:
        """The (max_loops, FEATURES_PER_LOOP) matrix of ``tree``, cursor column set (a copy).

        The cursor-free part is cached by schedule hash in a bounded LRU."""
        key = tree.hash()
        feats = self._features.get(key)
        if feats is None:
            self.check_tree(tree)
            feats = lgraph.features(lgraph.nest_facts(tree), self.max_loops, cursor=False)
            self._features[key] = feats
            if len(self._features) > _FEATURE_CACHE_SIZE:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(key)
        feats = feats.copy()
        feats[tree.cursor, lgraph.CURSOR_COLUMN] = 1.0
        return feats

    def observe(self, tree: _core.LoopTree) -> Any:
        """The observation of ``tree``: a flat float32 array ("box") or a dict of them."""
        feats = self.features(tree)
        if self.observation == "box":
            if self.parallel_column:
                return np.concatenate([feats.reshape(-1), self.parallel_flags(tree)])
            return feats.reshape(-1)
        obs = {
            "loops": feats[:, : lgraph.LOOP_FEATURES].reshape(-1),
            "tensors": feats[:, lgraph.LOOP_FEATURES :].reshape(-1),
            "action_mask": self.mask(tree).astype(np.float32),
        }
        if self.parallel_column:
            obs["parallel"] = self.parallel_flags(tree)
        return obs

    def graph(self, tree: _core.LoopTree) -> nx.DiGraph:
        """The networkx graph the features come from (``looptune.space.graph.loop_graph``)."""
        return lgraph.loop_graph(tree)


def at_cursor(tree: _core.LoopTree, position: int) -> _core.LoopTree:
    """The same schedule with the cursor on loop ``position`` (0 = outermost)."""
    while tree.cursor < position:
        tree = tree.down()
    while tree.cursor > position:
        tree = tree.up()
    return tree


__all__ = [
    "CURSOR_ACTIONS",
    "DEFAULT_MAX_LOOPS",
    "MAX_LOOPS",
    "ScheduleSpace",
    "action_names",
    "at_cursor",
]
