"""Gymnasium environments for loop-nest tuning.

``register_envs()`` runs at ``import looptune`` and registers every id (variants by kwargs).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENTRY_POINT = "looptune.envs.looptune_env:LoopTuneEnv"

# id -> kwargs; one env class, variants only by kwargs.
EPISODE_STEPS = 10  # the registration's max_episode_steps (Gymnasium's TimeLimit), as in the paper

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
            id=env_id,
            entry_point=ENTRY_POINT,
            kwargs=dict(kwargs),
            max_episode_steps=EPISODE_STEPS,
            nondeterministic=True,  # rewards are wall-clock measurements
            disable_env_checker=False,
        )


def action_masks(env: gym.Env) -> np.ndarray:
    """The legal-action mask of a LoopTune env, through any wrappers (as MaskablePPO reads it)."""
    return env.get_wrapper_attr("action_masks")()


__all__ = ["ENV_VARIANTS", "EPISODE_STEPS", "action_masks", "register_envs"]
