"""Gymnasium environments for loop-nest tuning.

``register_envs()`` runs at ``import looptune`` and registers every id (variants by kwargs).
"""

from __future__ import annotations

import gymnasium as gym

ENTRY_POINT = "looptune.envs.looptune_env:LoopTuneEnv"

# id -> kwargs; one env class, variants only by kwargs.
ENV_VARIANTS: dict[str, dict] = {
    "LoopTune-v0": {},
    "LoopTuneDict-v0": {"observation": "dict"},
    "LoopTuneRich-v0": {"actions": "rich"},
    "LoopTuneConv-v0": {"dataset": "conv2d_resnet", "actions": "rich"},
    "LoopTuneBmm-v0": {"dataset": "bmm_attention"},
}


def register_envs() -> None:
    """Register every LoopTune id with Gymnasium (idempotent)."""
    for env_id, kwargs in ENV_VARIANTS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id, entry_point=ENTRY_POINT, kwargs=dict(kwargs), disable_env_checker=False
        )


__all__ = ["ENV_VARIANTS", "register_envs"]
