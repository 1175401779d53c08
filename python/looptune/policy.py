"""Tune a loop tree with a trained RL policy (the shipped one by default).

The policy acts on observations only: it is rolled greedily (argmax over the legal actions)
for the episode length from the given schedule, and afterwards only the distinct schedules it
visited are measured; the best one is returned. Cursor moves do not change a schedule, so they
cost no measurement.

    >>> import looptune
    >>> from looptune.policy import tune
    >>> result = tune(looptune.matmul(128, 256, 64).default_schedule())  # doctest: +SKIP
    >>> result.gflops, result.tree.dump()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from looptune import _core
from looptune import graph as lgraph
from looptune import policy_io
from looptune.measure import Measurer
from looptune.policy_io import PolicyFormatError, UntrustedPolicyError
from looptune.search.base import SearchResult, Tracker, run_search

DATA_DIR = Path(__file__).resolve().parent / "data"
ISAS = ("avx512", "avx2")

ALGOS = ("maskable_ppo", "ppo", "dqn")


@dataclass
class LoadedPolicy:
    """An SB3 model plus what is needed to build its observations outside an env."""

    model: Any
    algo: str
    env_id: str
    env_kwargs: dict
    actions: tuple[str, ...]
    episode_steps: int
    max_loops: int
    observation: str
    meta: dict
    path: Path

    @property
    def isa(self) -> str | None:
        """The ISA whose kernels the policy learned to tile for (None if not recorded)."""
        return self.meta.get("isa")


def algo_class(algo: str) -> type:
    """The SB3 / sb3-contrib class of an algorithm name ("maskable_ppo", "ppo", "dqn")."""
    if algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    if algo == "ppo":
        from stable_baselines3 import PPO

        return PPO
    if algo == "dqn":
        from stable_baselines3 import DQN

        return DQN
    raise ValueError(f"unknown algorithm {algo!r}; choose from {list(ALGOS)}")


def meta_path(path: str | Path) -> Path:
    """The JSON file that travels with a saved policy (same stem, ``.json``)."""
    return Path(path).with_suffix(".json")


def default_policy_path(isa: str | None = None) -> Path:
    """The shipped policy for ``isa`` (default: the host's, honouring ``LOOPTUNE_ISA``).

    Register tiles that fit 32 zmm registers do not fit 16 ymm ones, so each ISA has its own
    policy, trained on a machine of that ISA: ``data/policy_avx512.safetensors``,
    ``data/policy_avx2.safetensors`` (tensors only, plus a ``.json`` each; see ``policy_io``).
    """
    isa = _core.host_isa() if isa is None else isa
    if isa not in ISAS:
        raise ValueError(f"unknown ISA {isa!r}; choose from {list(ISAS)}")
    return DATA_DIR / f"policy_{isa}{policy_io.SUFFIX}"


def check_env_id(meta: dict, where: object = "the policy metadata") -> str:
    """The ``env_id`` of ``meta``, which must name a registered LoopTune environment.

    Nothing is imported from it: ids of the form ``module:Env-v0`` (which Gymnasium would import)
    are refused, as is any id not registered by looptune itself.

    Raises:
        PolicyFormatError: ``env_id`` is missing, not a string, or not a LoopTune id.
    """
    env_id = meta.get("env_id")
    if env_id is None:
        raise PolicyFormatError(f"{where} has no 'env_id' (which LoopTune env it was trained on)")
    if not isinstance(env_id, str) or ":" in env_id:
        raise PolicyFormatError(
            f"{where}: env_id {env_id!r} is not a LoopTune env id (module imports are refused)"
        )
    import gymnasium as gym

    spec = gym.registry.get(env_id)
    entry = getattr(spec, "entry_point", None)
    if spec is None or not (isinstance(entry, str) and entry.startswith("looptune.")):
        ours = (k for k, v in gym.registry.items() if str(v.entry_point).startswith("looptune."))
        ids = sorted(ours)
        raise PolicyFormatError(f"{where}: env_id {env_id!r} is not one of {ids}")
    kwargs = meta.get("env_kwargs", {})
    if not isinstance(kwargs, dict):
        raise PolicyFormatError(f"{where}: env_kwargs must be a JSON object")
    return env_id


def load_policy(
    path: str | Path | None = None, isa: str | None = None, trust_pickle: bool = False
) -> LoadedPolicy:
    """Load a policy saved by ``looptune.train`` (default: the one shipped for ``isa``, itself
    by default the host's ISA).

    A policy is ``NAME.safetensors`` (tensors only) plus ``NAME.json``; the network is rebuilt
    from a fixed list of SB3 classes, and nothing is unpickled or imported from either file.

    ``trust_pickle=True`` also accepts an SB3 ``.zip``. **Loading a zip unpickles it, which runs
    any code the file's author put in it**: pass it only for files you made yourself.

    Raises:
        FileNotFoundError: no policy (or no metadata JSON next to it) at ``path``.
        UntrustedPolicyError: ``path`` is not a ``.safetensors`` policy and ``trust_pickle`` is
            False (checked before the file is opened).
        PolicyFormatError: the metadata is malformed or names an env that is not LoopTune's.
        ValueError: ``isa`` is not "avx512" or "avx2".
    """
    path = Path(path) if path is not None else default_policy_path(isa)
    if path.suffix != policy_io.SUFFIX and not trust_pickle:
        raise UntrustedPolicyError(
            f"{path} is not a {policy_io.SUFFIX} policy; SB3 .zip files are pickles that can run "
            "code when loaded. Convert it, or pass trust_pickle=True (CLI: --trust-pickle) only "
            "if you made the file yourself"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained policy at {path}; train one with `python -m looptune.train --save {path}`"
        )
    mpath = meta_path(path)
    if not mpath.is_file():
        raise FileNotFoundError(f"policy {path} has no metadata file {mpath}")
    meta = policy_io.read_meta(mpath)
    check_env_id(meta, mpath)
    if trust_pickle and path.suffix != policy_io.SUFFIX:
        warnings.warn(
            f"unpickling {path}: this runs any code the file contains (trust_pickle=True)",
            RuntimeWarning,
            stacklevel=2,
        )
    return _load_cached(str(path), path.stat().st_mtime, json.dumps(meta, sort_keys=True))


@lru_cache(maxsize=4)
def _load_cached(path: str, _mtime: float, meta_json: str) -> LoadedPolicy:
    meta = json.loads(meta_json)
    algo = meta.get("algo", "maskable_ppo")
    if algo not in ALGOS:
        raise PolicyFormatError(f"unknown algorithm {algo!r} in {path}; choose from {list(ALGOS)}")
    if path.endswith(policy_io.SUFFIX):
        net = policy_io.build_policy(meta.get("network"), algo)
        policy_io.load_weights(net, path)
        net.set_training_mode(False)
        model: Any = policy_io.SafeModel(net, algo)
    else:  # trust_pickle=True was checked by load_policy
        model = algo_class(algo).load(path, device="cpu")
        model.policy.set_training_mode(False)
    return wrap_model(model, algo, meta["env_id"], meta.get("env_kwargs", {}), path, meta)


def save_policy(model: Any, path: str | Path, meta: dict) -> Path:
    """Save an SB3 ``model`` as ``PATH.safetensors`` + ``PATH.json`` (atomically; see
    ``policy_io.save``); ``meta`` must carry ``algo`` and ``env_id``. Returns the weights path."""
    check_env_id(meta, "meta")
    return policy_io.save(model, meta["algo"], path, meta)


def env_spec(env_id: str, env_kwargs: dict) -> dict:
    """What a policy needs to know about its training env: actions, episode length, etc."""
    import gymnasium as gym

    import looptune  # noqa: F401  (registers the ids)

    env = gym.make(env_id, **env_kwargs).unwrapped
    return {
        "actions": list(env.actions),
        "episode_steps": int(env.max_steps),
        "max_loops": int(env.max_loops),
        "observation": env.observation,
    }


def wrap_model(
    model: Any,
    algo: str,
    env_id: str,
    env_kwargs: dict,
    path: str | Path = "<memory>",
    meta: dict | None = None,
) -> LoadedPolicy:
    """Wrap an SB3 model (e.g. one being trained) so ``rollout`` and ``tune`` can use it.

    ``meta`` may carry the env facts (see ``env_spec``); otherwise the env is built once.
    """
    meta = dict(meta or {})
    if not all(k in meta for k in ("actions", "episode_steps", "max_loops", "observation")):
        meta.update(env_spec(env_id, env_kwargs))
    return LoadedPolicy(
        model,
        algo,
        env_id,
        dict(env_kwargs),
        tuple(meta["actions"]),
        int(meta["episode_steps"]),
        int(meta["max_loops"]),
        meta["observation"],
        meta,
        Path(path),
    )


def legal_actions(policy: LoadedPolicy, tree: _core.LoopTree) -> np.ndarray:
    """The env's action mask for ``tree``: legal in the engine, no split beyond max_loops."""
    mask = np.asarray(tree.legal_mask(list(policy.actions)), dtype=bool)
    if tree.depth >= policy.max_loops:
        mask &= ~np.array([a.startswith("split_") for a in policy.actions])
    return mask


def observe(policy: LoadedPolicy, tree: _core.LoopTree) -> Any:
    """The observation the policy's training env produces for ``tree`` (no measurement)."""
    obs = lgraph.observation(tree, policy.max_loops)
    if policy.observation == "box":
        return obs
    feats = obs.reshape(policy.max_loops, -1)
    return {
        "loops": feats[:, : lgraph.LOOP_FEATURES].reshape(-1),
        "tensors": feats[:, lgraph.LOOP_FEATURES :].reshape(-1),
        "action_mask": legal_actions(policy, tree).astype(np.float32),
    }


def action_scores(model: Any, obs: Any) -> np.ndarray:
    """Per-action preference of ``model`` for one observation: log-probabilities or Q-values."""
    import torch

    obs_t, _ = model.policy.obs_to_tensor(obs)
    with torch.no_grad():
        if hasattr(model, "q_net"):
            return model.q_net(obs_t)[0].cpu().numpy()
        dist = model.policy.get_distribution(obs_t).distribution
        return dist.logits[0].cpu().numpy()


def rollout(
    policy: LoadedPolicy,
    tree: _core.LoopTree,
    steps: int | None = None,
    deterministic: bool = True,
    rng: np.random.Generator | None = None,
) -> list[_core.LoopTree]:
    """Roll the policy for ``steps`` actions from ``tree``; return every state visited.

    Illegal actions are masked out. With ``deterministic=False`` actions are sampled from the
    policy's (masked) distribution using ``rng``.
    """
    steps = policy.episode_steps if steps is None else steps
    rng = rng if rng is not None else np.random.default_rng(0)
    states = [tree]
    for _ in range(steps):
        mask = legal_actions(policy, tree)
        if not mask.any():
            break
        scores = action_scores(policy.model, observe(policy, tree))
        scores = np.where(mask, scores, -np.inf)
        if deterministic:
            a = int(np.argmax(scores))
        else:
            p = np.exp(scores - scores.max())
            a = int(rng.choice(len(p), p=p / p.sum()))
        tree = tree.apply(policy.actions[a])
        states.append(tree)
    return states


def tune(
    tree: _core.LoopTree,
    measurer: Measurer | None = None,
    steps: int | None = None,
    rollouts: int = 1,
    deterministic: bool = True,
    policy: LoadedPolicy | str | None = None,
    seed: int = 0,
    time_budget: float | None = None,
    measure_budget: int | None = None,
    actions: Sequence[str] | None = None,
    **_: Any,
) -> SearchResult:
    """Tune ``tree`` with a trained policy; return a ``looptune.search.base.SearchResult``.

    Args:
        tree: the schedule to start from (usually ``computation.default_schedule()``).
        measurer: measures (and caches) GFLOP/s; default a fresh ``Measurer()``.
        steps: actions per rollout; default the policy's training episode length.
        rollouts: 1 = the greedy rollout only; more adds sampled rollouts (more measurements).
        deterministic: greedy (argmax) actions in the first rollout.
        policy: a ``LoadedPolicy`` or a path; default the policy shipped for the measurer's
            ISA. A policy trained for another ISA still runs, with a ``RuntimeWarning``.
        seed: seeds the sampled rollouts.
        time_budget, measure_budget: optional caps, as for the searches.
        actions: for a uniform search interface; the policy acts with the action set it was
            trained on, and any other set raises ``ValueError``.
    """
    if not isinstance(tree, _core.LoopTree):
        raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
    if rollouts < 1:
        raise ValueError(f"rollouts must be >= 1, got {rollouts}")
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    measurer = measurer if measurer is not None else Measurer()
    if not isinstance(policy, LoadedPolicy):
        policy = load_policy(policy, isa=measurer.isa if policy is None else None)
    if policy.isa is not None and policy.isa != measurer.isa:
        warnings.warn(
            f"the policy {policy.path.name} was trained on {policy.isa} kernels but tunes "
            f"{measurer.isa} ones; its tilings may not fit the register file",
            RuntimeWarning,
            stacklevel=2,
        )
    if actions is not None and tuple(actions) != tuple(policy.actions):
        raise ValueError(
            f"the policy was trained with the actions {list(policy.actions)} and cannot use "
            f"{list(actions)}; use its action set or another search"
        )

    def body(tracker: Tracker) -> None:
        rng = np.random.default_rng(seed)
        visited: dict[int, _core.LoopTree] = {}
        for r in range(rollouts):
            for state in rollout(policy, tree, steps, deterministic and r == 0, rng)[1:]:
                visited.setdefault(state.hash(), state)
        for state in visited.values():
            tracker.evaluate(state)

    return run_search("agent", tree, measurer, time_budget, measure_budget, body)


__all__ = [
    "LoadedPolicy",
    "PolicyFormatError",
    "UntrustedPolicyError",
    "action_scores",
    "default_policy_path",
    "load_policy",
    "observe",
    "rollout",
    "save_policy",
    "tune",
    "wrap_model",
]
