"""Training callbacks: see ``looptune.agent.train_callbacks`` (re-exported for scripts)."""

from __future__ import annotations

from looptune.agent.train_callbacks import (  # noqa: F401
    TuneEvalCallback,
    evaluate_trees,
    held_out_trees,
    save_policy,
    summarize,
    write_meta,
)
