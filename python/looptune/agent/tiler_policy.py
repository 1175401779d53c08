"""The tiling agent's policy: a small network scoring tile macros, saved without pickles.

    >>> import looptune
    >>> from looptune.agent.tiler_policy import load_tiler
    >>> pol = load_tiler()  # the one shipped for the host ISA  # doctest: +SKIP
    >>> trees, scores = pol.rank(looptune.conv2d(1, 64, 56, 56, 64, 3, 3, 1, 1))  # doctest: +SKIP

A policy is ``policy_tiler_<isa>.safetensors`` (tensors only) plus a ``.json`` with the layer
sizes, the feature version, the ISA and its provenance (command, data, wall time, rank
correlations). The network is an MLP (ReLU) from ``tile_features`` to one score per macro; the
macros of a computation are ranked by score (a softmax over them is the policy's distribution).
A policy of feature version 2 was trained at 1 and 2 threads and sees T (``thread_features``):
``rank(comp, threads=T)`` scores the serial macros and their parallel variants together. A
version 1 policy (trained before threads) still loads: it scores the first ``V1_FEATURES``
columns of serial macros only, and the search adds the parallel variants by the cost model.
A loaded policy scores in numpy (``looptune.agent.inference.Mlp``: no torch); training builds
the torch network of ``build_network``, and ``TilerPolicy`` scores with either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from looptune import _core
from looptune.agent import policy_io, tiler
from looptune.agent.inference import Mlp, read_tensors, sequential_layers
from looptune.agent.policy_io import PolicyFormatError
from looptune.agent.tile_features import N_FEATURES, V1_FEATURES, tile_features

FORMAT = "looptune-tiler-v1"
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
FEATURE_VERSION = 2
# feature version -> feature count this version of the code reads
FEATURE_COUNTS = {1: V1_FEATURES, 2: N_FEATURES}
MAX_HIDDEN = 1024


def build_network(hidden: list[int], n_features: int = N_FEATURES) -> Any:
    """The scoring MLP: ``n_features -> hidden... -> 1`` with ReLU between layers."""
    import torch.nn as nn

    _check_hidden(hidden)
    layers: list[Any] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _check_hidden(hidden: Any) -> None:
    if not (isinstance(hidden, list) and 1 <= len(hidden) <= 4):
        raise PolicyFormatError(f"hidden must be a list of 1-4 layer sizes, got {hidden!r}")
    if not all(isinstance(h, int) and 1 <= h <= MAX_HIDDEN for h in hidden):
        raise PolicyFormatError(f"layer sizes must be ints in 1..{MAX_HIDDEN}, got {hidden!r}")


@dataclass
class TilerPolicy:
    """A scoring network plus its metadata; ``rank`` orders a computation's macros."""

    net: Any
    isa: str
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def knows_threads(self) -> bool:
        """True when the policy was trained with the thread features (feature version 2)."""
        return self.meta.get("feature_version", FEATURE_VERSION) >= 2

    def scores(self, trees: list[_core.LoopTree], threads: int = 1) -> np.ndarray:
        """One score per tree (higher = expected faster) at ``threads`` threads, from
        ``tile_features`` (its first ``V1_FEATURES`` columns for a version 1 policy)."""
        if not trees:
            return np.zeros(0, np.float32)
        x = np.stack([tile_features(t, self.isa, threads) for t in trees])
        x = x[:, :FEATURE_COUNTS[self.meta.get("feature_version", FEATURE_VERSION)]]
        if isinstance(self.net, Mlp):
            return self.net(x).reshape(-1)
        import torch

        with torch.no_grad():
            return self.net(torch.from_numpy(x)).squeeze(-1).numpy()

    def rank(
        self, comp: _core.Computation, threads: int = 1
    ) -> tuple[list[_core.LoopTree], np.ndarray]:
        """The macros of ``comp`` best-scored first, and their scores; at ``threads`` > 1 a
        policy that knows threads ranks their parallel variants among them (a version 1
        policy ranks the serial macros)."""
        threads = tiler._check_threads(threads)
        trees = tiler.candidates(comp, self.isa, threads if self.knows_threads else 1)
        s = self.scores(trees, threads)
        order = np.argsort(-s, kind="stable")
        return [trees[i] for i in order], s[order]


def signature_tag(signature: str) -> str:
    """A file-name tag of a ``cpu_signature()``: "AuthenticAMD family 23 model 1" ->
    "amd-f23-m1"."""
    vendor, _, family, _, model = signature.split()
    short = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(vendor, vendor.lower())
    return f"{short}-f{family}-m{model}"


def default_tiler_path(isa: str | None = None, signature: str | None = None) -> Path:
    """The shipped tiling policy for ``isa`` (default: the host's) on the CPU with
    ``signature`` (default: the host's ``cpu_signature()``): the policy trained on that
    microarchitecture (``policy_tiler_<isa>_<tag>``) when one is shipped, else the ISA's.
    A scorer's ranking is the microarchitecture's: a 12 x 1-vector AVX2 tile that is among the
    best where 256-bit loads are cheap runs at a quarter of the best tile on a core that splits
    them (Zen 1)."""
    isa = _core.host_isa() if isa is None else isa
    if isa not in _core.known_isas():
        raise ValueError(f"unknown ISA {isa!r}; choose from {_core.known_isas()}")
    signature = _core.cpu_signature() if signature is None else signature
    tuned = DATA_DIR / f"policy_tiler_{isa}_{signature_tag(signature)}{policy_io.SUFFIX}"
    return tuned if tuned.is_file() else DATA_DIR / f"policy_tiler_{isa}{policy_io.SUFFIX}"


def save_tiler(policy: TilerPolicy, path: str | Path, meta: dict) -> Path:
    """Write ``PATH.safetensors`` and ``PATH.json`` atomically; returns the weights path."""
    from safetensors.torch import save as st_save

    from looptune.util.fileio import atomic_write_bytes, atomic_write_text

    path = Path(path).with_suffix(policy_io.SUFFIX)
    state = {k: v.detach().cpu().contiguous() for k, v in policy.net.state_dict().items()}
    full = {**meta, "format": FORMAT, "isa": policy.isa, "n_features": N_FEATURES,
            "feature_version": FEATURE_VERSION, "hidden": policy.meta["hidden"]}
    atomic_write_bytes(path, st_save(state, metadata={"format": FORMAT}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(full, indent=1, sort_keys=True) + "\n")
    return path


def load_tiler(
    path: str | Path | None = None, isa: str | None = None, backend: str = "numpy"
) -> TilerPolicy:
    """Load a tiling policy (default: the one shipped for ``isa``, itself the host's); its
    network runs in numpy (``backend="numpy"``, no torch) or is a torch ``nn.Sequential``
    (``backend="torch"``, for further training).

    Raises:
        FileNotFoundError: no policy or no metadata at ``path``.
        PolicyFormatError: malformed metadata, another feature version, or tensors that do not
            fit the network the metadata describes.
    """
    path = Path(path) if path is not None else default_tiler_path(isa)
    if path.suffix != policy_io.SUFFIX:
        raise PolicyFormatError(f"{path} is not a {policy_io.SUFFIX} tiling policy")
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise FileNotFoundError(f"no tiling policy (and metadata) at {path}")
    if backend not in ("numpy", "torch"):
        raise ValueError(f"unknown backend {backend!r}; choose from ['numpy', 'torch']")
    stamp = (path.stat().st_mtime_ns, path.with_suffix(".json").stat().st_mtime_ns)
    return _load(str(path), stamp, backend)


@lru_cache(maxsize=8)
def _load(path: str, _stamp: tuple[int, int], backend: str) -> TilerPolicy:
    meta = policy_io.read_meta(Path(path).with_suffix(".json"))
    if meta.get("format") != FORMAT:
        raise PolicyFormatError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    version = meta.get("feature_version")
    if version not in FEATURE_COUNTS or meta.get("n_features") != FEATURE_COUNTS[version]:
        raise PolicyFormatError(f"{path} was trained on other features than this version's")
    n_features = FEATURE_COUNTS[version]
    if meta.get("isa") not in _core.known_isas():
        raise PolicyFormatError(f"{path}: unknown isa {meta.get('isa')!r}")
    hidden = meta.get("hidden")
    if backend == "numpy":
        _check_hidden(hidden)
        layers = sequential_layers(read_tensors(path))
        sizes = [w.shape[0] for w, _ in layers]
        if sizes != [*hidden, 1] or layers[0][0].shape[1] != n_features:
            raise PolicyFormatError(
                f"{path}: tensors of layer sizes {sizes} do not fit hidden {hidden} "
                f"with {n_features} features"
            )
        net: Any = Mlp(layers, "ReLU")
    else:
        net = build_network(hidden, n_features)
        policy_io.load_weights(net, path)
        net.eval()
    return TilerPolicy(net, meta["isa"], meta, Path(path))


__all__ = ["FORMAT", "TilerPolicy", "build_network", "default_tiler_path", "load_tiler",
           "save_tiler", "signature_tag"]
