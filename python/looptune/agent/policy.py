"""Trained RL policies: loading, saving and wrapping SB3 models.

The search that uses a policy lives in :mod:`looptune.search.agent` (``search.get("agent")``);
this module knows nothing of searches (the dependency points search -> policy).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from looptune import _core
from looptune.agent import policy_io
from looptune.agent.policy_io import PolicyFormatError, UntrustedPolicyError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
ISAS = tuple(_core.known_isas())  # the engine's list, best first

ALGOS = ("maskable_ppo", "ppo", "dqn")
BACKENDS = ("numpy", "torch")


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
    path: str | Path | None = None,
    isa: str | None = None,
    trust_pickle: bool = False,
    backend: str = "numpy",
) -> LoadedPolicy:
    """Load a policy saved by ``looptune.agent.train`` (default: the one shipped for ``isa``, itself
    by default the host's ISA).

    A policy is ``NAME.safetensors`` (tensors only) plus ``NAME.json``; nothing is unpickled or
    imported from either file. With ``backend="numpy"`` (the default) the network runs in numpy
    (``looptune.agent.inference.NumpyPolicy``: no torch needed); with ``backend="torch"`` it is
    rebuilt from a fixed list of SB3 classes (``model.policy`` is the SB3 policy).

    ``trust_pickle=True`` also accepts an SB3 ``.zip``. **Loading a zip unpickles it, which runs
    any code the file's author put in it**: pass it only for files you made yourself.

    Raises:
        FileNotFoundError: no policy (or no metadata JSON next to it) at ``path``.
        UntrustedPolicyError: ``path`` is not a ``.safetensors`` policy and ``trust_pickle`` is
            False (checked before the file is opened).
        PolicyFormatError: the metadata is malformed or names an env that is not LoopTune's.
        ValueError: ``isa`` is not "avx512" or "avx2", or an unknown ``backend``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    path = Path(path) if path is not None else default_policy_path(isa)
    if path.suffix != policy_io.SUFFIX and not trust_pickle:
        raise UntrustedPolicyError(
            f"{path} is not a {policy_io.SUFFIX} policy; SB3 .zip files are pickles that can run "
            "code when loaded. Convert it, or pass trust_pickle=True (CLI: --trust-pickle) only "
            "if you made the file yourself"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained policy at {path}; train one with `looptune train --save {path}`"
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
    if path.suffix != policy_io.SUFFIX:
        backend = "torch"  # an SB3 zip is an SB3 model
    meta_json = json.dumps(meta, sort_keys=True)
    return _load_cached(str(path), path.stat().st_mtime, meta_json, backend)


def resolve_policy(
    policy: LoadedPolicy | str | Path | None = None,
    isa: str | None = None,
    trust_pickle: bool = False,
) -> LoadedPolicy:
    """The one way the agent gets its paper policy: ``policy`` itself when it is already loaded,
    else ``load_policy(policy)`` (a path), else the policy shipped for ``isa`` (default: the
    host's). Loads are cached, so checking availability first and tuning later reads the files
    once."""
    if isinstance(policy, LoadedPolicy):
        return policy
    if policy is None:
        return load_policy(None, isa=isa)
    return load_policy(policy, trust_pickle=trust_pickle)


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime: float, meta_json: str, backend: str) -> LoadedPolicy:
    meta = json.loads(meta_json)
    algo = meta.get("algo", "maskable_ppo")
    if algo not in ALGOS:
        raise PolicyFormatError(f"unknown algorithm {algo!r} in {path}; choose from {list(ALGOS)}")
    if backend == "numpy":
        from looptune.agent.inference import NumpyPolicy, read_tensors

        model: Any = NumpyPolicy(meta.get("network"), algo, read_tensors(path))
    else:
        try:
            model = _torch_model(path, meta, algo)
        except ImportError as exc:
            raise ImportError(
                f"loading {path} with torch (an SB3 .zip, or backend='torch') needs the rl "
                f"extra: pip install 'looptune[rl]' ({exc})"
            ) from exc
    return wrap_model(model, algo, meta["env_id"], meta.get("env_kwargs", {}), path, meta)


def _torch_model(path: str, meta: dict, algo: str) -> Any:
    if path.endswith(policy_io.SUFFIX):
        net = policy_io.build_policy(meta.get("network"), algo)
        policy_io.load_weights(net, path)
        net.set_training_mode(False)
        return policy_io.SafeModel(net, algo)
    model = algo_class(algo).load(path, device="cpu")  # trust_pickle=True: load_policy checked
    model.policy.set_training_mode(False)
    return model


def save_policy(model: Any, path: str | Path, meta: dict) -> Path:
    """Save an SB3 ``model`` as ``PATH.safetensors`` + ``PATH.json`` (atomically; see
    ``policy_io.save``); ``meta`` must carry ``algo`` and ``env_id``. Returns the weights path."""
    check_env_id(meta, "meta")
    return policy_io.save(model, meta["algo"], path, meta)


def env_spec(env_id: str, env_kwargs: dict) -> dict:
    """What a policy needs to know about its training env: actions, episode length, etc.

    The episode length is the registration's ``max_episode_steps`` (Gymnasium's TimeLimit),
    or a legacy ``max_steps`` env kwarg when one is given."""
    import gymnasium as gym

    import looptune  # noqa: F401  (registers the ids)

    wrapped = gym.make(env_id, **env_kwargs)
    env = wrapped.unwrapped
    steps = env_kwargs.get("max_steps") or (wrapped.spec and wrapped.spec.max_episode_steps)
    return {
        "actions": list(env.actions),
        "episode_steps": int(steps or 10),
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
    """Wrap an SB3 model (e.g. one being trained) for ``looptune.search.agent``.

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


__all__ = [
    "LoadedPolicy",
    "PolicyFormatError",
    "UntrustedPolicyError",
    "algo_class",
    "default_policy_path",
    "env_spec",
    "load_policy",
    "meta_path",
    "resolve_policy",
    "save_policy",
    "wrap_model",
]
