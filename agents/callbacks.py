"""Training callbacks: moved to ``looptune.train_callbacks`` (re-exported here for scripts)."""

from __future__ import annotations

from looptune.train_callbacks import (  # noqa: F401
    TuneEvalCallback,
    evaluate_trees,
    held_out_trees,
    save_policy,
    summarize,
    write_meta,
)
