"""Save and load trained policies without unpickling anything.

A policy is two files with the same stem:

- ``NAME.safetensors``: the network's tensors only (safetensors holds no code);
- ``NAME.json``: what is needed to rebuild the network from known classes (algorithm, policy
  class name from a fixed list, observation/action spaces, layer sizes, activation name), the
  env id and kwargs it was trained on, its action names and provenance.

Loading builds the SB3 policy class named in the JSON (only names in ``POLICY_CLASSES``) with the
stored shape and copies the tensors in with ``load_state_dict(strict=True)``. Nothing in either
file is imported, evaluated or unpickled. SB3's own ``.zip`` files contain pickles and are
loadable only through ``looptune.agent.policy.load_policy(path, trust_pickle=True)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from looptune.util.fileio import atomic_write_bytes, atomic_write_text, read_text_bounded

FORMAT = "looptune-policy-v1"
SUFFIX = ".safetensors"
MAX_META_BYTES = 4 << 20
MAX_WEIGHTS_BYTES = 256 << 20

# algorithm -> (policy class name, module); only these classes are ever built.
POLICY_CLASSES = {
    "maskable_ppo": ("MaskableActorCriticPolicy", "sb3_contrib.common.maskable.policies"),
    "ppo": ("ActorCriticPolicy", "stable_baselines3.common.policies"),
    "dqn": ("DQNPolicy", "stable_baselines3.dqn.policies"),
}
ACTIVATIONS = ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU")
BOOL_KWARGS = ("ortho_init", "normalize_images", "share_features_extractor")


class PolicyFormatError(ValueError):
    """A policy file or its metadata is malformed, or asks for something not allowed."""


class UntrustedPolicyError(PolicyFormatError):
    """A pickle-based policy (an SB3 ``.zip``) was given without ``trust_pickle=True``."""


def _space_to_json(space: Any) -> dict:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, spaces.Box):
        lo, hi = float(space.low.min()), float(space.high.max())
        if float(space.low.max()) != lo or float(space.high.min()) != hi:
            raise PolicyFormatError("only Box spaces with uniform bounds can be exported")
        return {"type": "Box", "low": lo, "high": hi, "shape": list(space.shape)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: _space_to_json(s) for k, s in space.spaces.items()}}
    raise PolicyFormatError(f"cannot export an observation space of type {type(space).__name__}")


def _space_from_json(d: Any, depth: int = 0) -> Any:
    import numpy as np
    from gymnasium import spaces

    if not isinstance(d, dict) or depth > 2:
        raise PolicyFormatError(f"bad space description {d!r:.80}")
    kind = d.get("type")
    if kind == "Discrete":
        n = d.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10_000:
            raise PolicyFormatError(f"Discrete space needs 1 <= n <= 10000, got {n!r}")
        return spaces.Discrete(n)
    if kind == "Box":
        shape, lo, hi = d.get("shape"), d.get("low"), d.get("high")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 4
            or not all(isinstance(s, int) and 1 <= s <= 1_000_000 for s in shape)
        ):
            raise PolicyFormatError(f"Box shape must be 1-4 positive ints, got {shape!r}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)):
            raise PolicyFormatError("Box bounds must be finite numbers")
        return spaces.Box(float(lo), float(hi), tuple(shape), np.float32)
    if kind == "Dict":
        subs = d.get("spaces")
        if not isinstance(subs, dict) or not subs:
            raise PolicyFormatError("Dict space needs a non-empty 'spaces' object")
        return spaces.Dict({str(k): _space_from_json(v, depth + 1) for k, v in subs.items()})
    raise PolicyFormatError(f"unknown space type {kind!r}")


def _net_arch_ok(arch: Any) -> bool:
    def ints(v: Any) -> bool:
        return isinstance(v, list) and len(v) <= 8 and all(
            isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 8192 for x in v
        )

    if isinstance(arch, dict):
        return set(arch) <= {"pi", "vf", "qf"} and all(ints(v) for v in arch.values())
    return ints(arch)


def network_spec(model: Any, algo: str) -> dict:
    """The JSON description of ``model``'s network (used when saving)."""
    if algo not in POLICY_CLASSES:
        raise PolicyFormatError(f"unknown algorithm {algo!r}; choose from {list(POLICY_CLASSES)}")
    policy = model.policy
    params = policy._get_constructor_parameters()
    kwargs: dict[str, Any] = {"net_arch": params.get("net_arch")}
    act = params.get("activation_fn")
    if act is not None:
        kwargs["activation_fn"] = act.__name__
    for k in BOOL_KWARGS:
        if k in params:
            kwargs[k] = bool(params[k])
    return {
        "policy_class": POLICY_CLASSES[algo][0],
        "observation_space": _space_to_json(policy.observation_space),
        "action_space": _space_to_json(policy.action_space),
        "policy_kwargs": kwargs,
    }


def _policy_kwargs(raw: Any) -> dict:
    """``network.policy_kwargs`` checked (``check_policy_kwargs``), with the activation name
    turned into its torch class."""
    import torch.nn as nn

    out = check_policy_kwargs(raw)
    if "activation_fn" in out:
        out["activation_fn"] = getattr(nn, out["activation_fn"])
    return out


def check_policy_kwargs(raw: Any) -> dict:
    """The allowed ``network.policy_kwargs`` (net_arch, an activation name from
    ``ACTIVATIONS``, the boolean flags), checked without importing torch."""
    if not isinstance(raw, dict):
        raise PolicyFormatError("network.policy_kwargs must be an object")
    unknown = set(raw) - {"net_arch", "activation_fn", *BOOL_KWARGS}
    if unknown:
        raise PolicyFormatError(f"network.policy_kwargs has unsupported keys {sorted(unknown)}")
    out: dict[str, Any] = {}
    if raw.get("net_arch") is not None:
        if not _net_arch_ok(raw["net_arch"]):
            raise PolicyFormatError(f"bad net_arch {raw['net_arch']!r:.80}")
        out["net_arch"] = raw["net_arch"]
    if "activation_fn" in raw:
        if raw["activation_fn"] not in ACTIVATIONS:
            raise PolicyFormatError(
                f"activation_fn must be one of {list(ACTIVATIONS)}, got {raw['activation_fn']!r}"
            )
        out["activation_fn"] = raw["activation_fn"]
    for k in BOOL_KWARGS:
        if k in raw:
            if not isinstance(raw[k], bool):
                raise PolicyFormatError(f"network.policy_kwargs.{k} must be true or false")
            out[k] = raw[k]
    return out


def check_network(network: Any, algo: str) -> tuple[Any, Any, dict]:
    """The ``network`` object of a policy's JSON checked against ``algo``: its policy class is
    the one of ``POLICY_CLASSES`` (never a name taken from the file), its spaces parse, its
    kwargs are allowed. Returns (observation space, action space, checked policy_kwargs).

    Raises:
        PolicyFormatError: anything else.
    """
    if algo not in POLICY_CLASSES:
        raise PolicyFormatError(f"unknown algorithm {algo!r}; choose from {list(POLICY_CLASSES)}")
    if not isinstance(network, dict):
        raise PolicyFormatError("the policy metadata has no 'network' object")
    name = POLICY_CLASSES[algo][0]
    if network.get("policy_class") != name:
        raise PolicyFormatError(
            f"algorithm {algo!r} uses the policy class {name}, not {network.get('policy_class')!r}"
        )
    obs = _space_from_json(network.get("observation_space"))
    act = _space_from_json(network.get("action_space"))
    return obs, act, check_policy_kwargs(network.get("policy_kwargs", {}))


class SafeModel:
    """The parts of an SB3 model that tuning uses (``policy``; ``q_net`` for DQN), rebuilt from
    tensors. It cannot be trained further; fine-tune by building a fresh SB3 model and calling
    ``load_weights`` on its policy."""

    def __init__(self, policy: Any, algo: str) -> None:
        self.policy = policy
        self.algo = algo
        if algo == "dqn":
            self.q_net = policy.q_net

    def predict(self, observation: Any, deterministic: bool = True, **kw: Any) -> Any:
        return self.policy.predict(observation, deterministic=deterministic, **kw)


def build_policy(network: Any, algo: str) -> Any:
    """A freshly initialised SB3 policy of the class and shape described by ``network``."""
    import importlib

    obs, act, _ = check_network(network, algo)
    name, module = POLICY_CLASSES[algo]
    cls = getattr(importlib.import_module(module), name)  # fixed table, never from the file
    kwargs = _policy_kwargs(network.get("policy_kwargs", {}))
    return cls(obs, act, lambda _: 0.0, **kwargs)


def load_weights(policy: Any, path: str | Path) -> None:
    """Copy the tensors of the safetensors file ``path`` into ``policy`` (names and shapes must
    match exactly)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise PolicyFormatError(f"{path} has {size} bytes, more than {MAX_WEIGHTS_BYTES}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PolicyFormatError(f"{path} is not a safetensors file: {exc}") from None
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PolicyFormatError(f"{path} does not fit the network in its metadata: {exc}") from None


def read_meta(path: str | Path) -> dict:
    """The JSON metadata at ``path``, bounded in size; must be a JSON object."""
    try:
        meta = json.loads(read_text_bounded(path, MAX_META_BYTES))
    except json.JSONDecodeError as exc:
        raise PolicyFormatError(f"{path} is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise PolicyFormatError(f"{path} must hold a JSON object")
    return meta


def save(model: Any, algo: str, path: str | Path, meta: dict) -> Path:
    """Save ``model``'s network tensors at ``path`` (suffix forced to ``.safetensors``) and
    ``meta`` plus the network description next to it, both atomically. Returns the weights path."""
    from safetensors.torch import save as st_save

    path = Path(path).with_suffix(SUFFIX)
    state = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    meta = {**meta, "algo": algo, "format": FORMAT, "network": network_spec(model, algo)}
    atomic_write_bytes(path, st_save(state, metadata={"format": FORMAT}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return path


__all__ = [
    "FORMAT",
    "POLICY_CLASSES",
    "PolicyFormatError",
    "SafeModel",
    "UntrustedPolicyError",
    "build_policy",
    "check_network",
    "check_policy_kwargs",
    "load_weights",
    "network_spec",
    "read_meta",
    "save",
]
