"""The shipped policies' forward pass in numpy: tuning with the agent needs no torch.

A saved policy is a safetensors file (read here with :func:`read_tensors`, a plain parser of
the format: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw bytes) plus a JSON file describing the network. The
networks are small MLPs, so inference is a few matrix products:

* the paper policy (SB3 ``MaskableActorCriticPolicy`` / ``ActorCriticPolicy``): flattened
  observation -> ``mlp_extractor.policy_net`` (Linear + activation per layer) -> ``action_net``
  -> log-softmax; the value head is not needed to act and is not evaluated;
* a DQN policy: observation -> ``q_net.q_net`` (Linear + activation between layers) -> Q-values;
* the tiling agent's scorer: ``n_features -> hidden... -> 1`` with ReLU between layers.

The layers are read from the tensor names and shapes (they must chain), the activation from the
JSON. ``tests/test_inference.py`` checks that these give the torch networks' logits and action
choices on every policy shipped in ``looptune/data``. Training (SB3) still uses torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from looptune.agent.policy_io import MAX_WEIGHTS_BYTES, PolicyFormatError, check_network
from looptune.util.fileio import read_bytes_bounded

# safetensors dtype names -> numpy little-endian dtypes (bf16 has no numpy dtype; refused)
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
MAX_HEADER_BYTES = 1 << 20


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of the safetensors file ``path`` as numpy arrays (no torch, no safetensors
    package). Every entry is checked: a known dtype, a shape whose size matches its byte range,
    byte ranges inside the file.

    Raises:
        PolicyFormatError: the file is not a well-formed safetensors file (or is too large).
    """
    path = Path(path)
    try:
        data = read_bytes_bounded(path, MAX_WEIGHTS_BYTES)
    except ValueError as exc:
        raise PolicyFormatError(f"{path}: {exc}") from None
    if len(data) < 8:
        raise PolicyFormatError(f"{path} is not a safetensors file: shorter than its header")
    n = int.from_bytes(data[:8], "little")
    if not 2 <= n <= min(MAX_HEADER_BYTES, len(data) - 8):
        raise PolicyFormatError(f"{path} is not a safetensors file: header length {n}")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyFormatError(f"{path} is not a safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise PolicyFormatError(f"{path} is not a safetensors file: header is not an object")
    body = memoryview(data)[8 + n :]
    out: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise PolicyFormatError(f"{path}: tensor {name!r} has no description")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPES:
            raise PolicyFormatError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not (isinstance(shape, list) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
        )):
            raise PolicyFormatError(f"{path}: tensor {name!r} has a bad shape {shape!r:.60}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(o, int) and not isinstance(o, bool) for o in offsets
        )):
            raise PolicyFormatError(f"{path}: tensor {name!r} has bad data_offsets")
        begin, end = offsets
        dt = np.dtype(_DTYPES[dtype])
        if not 0 <= begin <= end <= len(body) or end - begin != math.prod(shape) * dt.itemsize:
            raise PolicyFormatError(f"{path}: tensor {name!r} does not fit its byte range")
        out[name] = np.frombuffer(body[begin:end], dtype=dt).reshape(shape).copy()
    return out


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[x.dtype])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


ACTIVATIONS = {  # torch.nn defaults (LeakyReLU slope 0.01, ELU alpha 1, exact GELU)
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0),
    "ELU": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "LeakyReLU": lambda x: np.where(x >= 0, x, 0.01 * x),
    "GELU": _gelu,
    "SiLU": lambda x: x / (1 + np.exp(-x)),
}


class Mlp:
    """Linear layers ``(W, b)`` (torch's ``y = x W^T + b``) with an activation after each of
    them, except after the last one when ``last_activation`` is False."""

    def __init__(
        self, layers: list[tuple[np.ndarray, np.ndarray]], activation: str,
        last_activation: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise PolicyFormatError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        for i, (w, b) in enumerate(layers):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise PolicyFormatError(f"layer {i}: weight {w.shape} and bias {b.shape} differ")
            if i and w.shape[1] != layers[i - 1][0].shape[0]:
                raise PolicyFormatError(
                    f"layer {i} takes {w.shape[1]} inputs but layer {i - 1} gives "
                    f"{layers[i - 1][0].shape[0]}"
                )
        self.layers = [(np.ascontiguousarray(w.T), b) for w, b in layers]
        self.activation = activation
        self.last_activation = last_activation

    @property
    def n_in(self) -> int:
        return self.layers[0][0].shape[0] if self.layers else 0

    @property
    def n_out(self) -> int:
        return self.layers[-1][0].shape[1] if self.layers else 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        act = ACTIVATIONS[self.activation]
        last = len(self.layers) - 1
        with _one_blas_thread():
            for i, (wt, b) in enumerate(self.layers):
                x = x @ wt + b
                if i < last or self.last_activation:
                    x = act(x)
        return x


_BLAS: list = []  # the threadpoolctl controller, made on first use (it costs ~1 ms)


def _one_blas_thread() -> Any:
    """A context that runs numpy's BLAS on one thread (~10 us to enter). A policy's matrices
    are small, and an OpenBLAS call on several threads leaves its threads spinning for a
    while afterwards: the agent's next timing of a parallel kernel then shared the other core
    with them and ran at serial speed (measured on 2 cores: 4 of 4 paper-domain layers kept
    serial at 2 threads in one run, none with BLAS on one thread)."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS.append(ThreadpoolController())
        except ImportError:  # threadpoolctl is a dependency; without it, no limit
            _BLAS.append(None)
    return contextlib.nullcontext() if _BLAS[0] is None else _BLAS[0].limit(
        limits=1, user_api="blas")


def sequential_layers(
    tensors: Mapping[str, np.ndarray], prefix: str = ""
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Linear layers of a torch ``nn.Sequential`` saved under ``prefix`` (``PREFIX0.weight``,
    ``PREFIX0.bias``, ``PREFIX2.weight``, ...), in index order."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.weight")
    idx = sorted(int(m.group(1)) for k in tensors if (m := pattern.fullmatch(k)))
    layers = []
    for i in idx:
        bias = tensors.get(f"{prefix}{i}.bias")
        if bias is None:
            raise PolicyFormatError(f"layer {prefix}{i} has a weight but no bias")
        layers.append((tensors[f"{prefix}{i}.weight"], bias))
    return layers


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class NumpyPolicy:
    """An SB3 policy's acting part in numpy: ``action_scores(obs)`` gives the log-probabilities
    (actor-critic) or Q-values (DQN) torch would give, ``predict`` the masked greedy action.

    Args:
        network: the ``network`` object of the policy JSON (spaces and ``policy_kwargs``).
        algo: "maskable_ppo", "ppo" or "dqn".
        tensors: the policy's state dict (see ``read_tensors``).
    """

    def __init__(self, network: Any, algo: str, tensors: Mapping[str, np.ndarray]) -> None:
        check_network(network, algo)  # class, spaces and kwargs, as the torch loader checks
        self.algo = algo
        self.obs_size = _observation_size(network.get("observation_space"))
        act = network.get("action_space")
        if not (isinstance(act, dict) and act.get("type") == "Discrete"):
            raise PolicyFormatError(f"only Discrete action spaces are supported, got {act!r:.60}")
        self.n_actions = int(act["n"])
        kwargs = network.get("policy_kwargs") or {}
        if algo == "dqn":
            activation = kwargs.get("activation_fn", "ReLU")
            self.net = Mlp(sequential_layers(tensors, "q_net.q_net."), activation)
        elif algo in ("maskable_ppo", "ppo"):
            activation = kwargs.get("activation_fn", "Tanh")
            hidden = sequential_layers(tensors, "mlp_extractor.policy_net.")
            head = [(tensors.get("action_net.weight"), tensors.get("action_net.bias"))]
            if head[0][0] is None or head[0][1] is None:
                raise PolicyFormatError("the policy has no action_net tensors")
            # SB3's MlpExtractor puts the activation after every hidden layer; the action head
            # is a bare Linear.
            self.net = Mlp(hidden + head, activation)
            if not hidden:  # no hidden layer: the head reads the features directly
                self.net.last_activation = False
        else:
            raise PolicyFormatError(f"unknown algorithm {algo!r}")
        if self.net.n_in != self.obs_size or self.net.n_out != self.n_actions:
            raise PolicyFormatError(
                f"the network maps {self.net.n_in} -> {self.net.n_out} but the spaces need "
                f"{self.obs_size} -> {self.n_actions}"
            )

    def features(self, obs: Any) -> np.ndarray:
        """A batch (rows) of flattened float32 observations (SB3's ``FlattenExtractor``)."""
        return np.asarray(obs, np.float32).reshape(-1, self.obs_size)

    def action_scores(self, obs: Any) -> np.ndarray:
        """Per-action preference for one observation (or a batch): log-probabilities of the
        actor-critic's categorical distribution, or DQN's Q-values."""
        x = self.features(obs)
        out = self.net(x)
        if self.algo != "dqn":
            out = _log_softmax(out)
        return out[0] if np.ndim(obs) == 1 else out

    def predict(
        self, observation: Any, deterministic: bool = True, action_masks: Any = None, **_: Any
    ) -> tuple[Any, None]:
        """The greedy action (SB3's ``predict`` signature; only deterministic acting)."""
        if not deterministic:
            raise ValueError("the numpy policy acts greedily only (deterministic=True)")
        scores = np.atleast_2d(self.action_scores(observation))
        if action_masks is not None:
            mask = np.asarray(action_masks, bool).reshape(scores.shape)
            scores = np.where(mask, scores, -np.inf)
        actions = scores.argmax(axis=1)
        return (int(actions[0]) if np.ndim(observation) == 1 else actions), None


def _observation_size(space: Any) -> int:
    """The flat size of a Box observation space. The saved policy classes flatten a Box (SB3's
    ``FlattenExtractor``); Dict observations need ``MultiInputPolicy``, which the format does
    not describe, so they are refused here as by the torch loader."""
    if not isinstance(space, dict) or space.get("type") != "Box":
        kind = space.get("type") if isinstance(space, dict) else space
        raise PolicyFormatError(f"only Box observation spaces are supported, got {kind!r:.60}")
    shape = space.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) for s in shape)):
        raise PolicyFormatError(f"bad Box shape {shape!r:.60}")
    return math.prod(shape)


__all__ = ["ACTIVATIONS", "Mlp", "NumpyPolicy", "read_tensors", "sequential_layers"]
