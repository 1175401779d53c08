"""Named schedule actions shared by the environments, searches and agents.

Each name is understood by ``LoopTree.apply`` / ``LoopTree.is_legal`` in the engine.
"""

from __future__ import annotations

# The LoopTune paper's action set (Grubisic et al., 2023).
PAPER_ACTIONS: tuple[str, ...] = (
    "up",
    "down",
    "swap_up",
    "swap_down",
    "split_4",
    "split_8",
    "split_16",
)

# A richer set: more split factors, merging a split back, and annotation toggles ("parallel"
# marks the cursor loop parallel or serial again; the paper's set has no parallel action, so
# policies trained on it keep their action space).
RICH_ACTIONS: tuple[str, ...] = PAPER_ACTIONS + (
    "split_2",
    "split_3",
    "split_6",
    "split_12",
    "split_32",
    "split_64",
    "merge",
    "unroll",
    "vectorize",
    "parallel",
)

ACTION_SETS: dict[str, tuple[str, ...]] = {"paper": PAPER_ACTIONS, "rich": RICH_ACTIONS}


def action_set(name: str) -> tuple[str, ...]:
    try:
        return ACTION_SETS[name]
    except KeyError:
        raise ValueError(
            f"unknown action set {name!r}; choose from {sorted(ACTION_SETS)}"
        ) from None
