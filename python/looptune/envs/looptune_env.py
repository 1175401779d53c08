"""LoopTuneEnv: schedule one tensor computation per episode, rewarded by measured GFLOP/s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import networkx as nx
import numpy as np
from gymnasium import spaces

from looptune import _core, datasets
from looptune import graph as lgraph
from looptune.actions import action_set
from looptune.validate import action_index, check_action_names, finite_positive
from looptune.errors import IllegalActionError, UnknownBenchmarkError
from looptune.measure import Measurer
from looptune.measure import peak_gflops as measured_peak

_FEATURE_CACHE_SIZE = 8192


class LoopTuneEnv(gym.Env):
    """Tune the loop nest of a tensor computation, one schedule mutation per step.

    ## Description
    Each episode draws a benchmark (a matmul, conv2d or batched matmul) from a dataset split and
    starts from its base schedule: one loop per variable in the natural order, no splits, the
    cursor on the outermost loop. Actions move the cursor, swap the cursor loop with a
    neighbour, split it, or (rich set) merge it back and toggle annotations. Every new schedule
    is JIT-compiled and timed; measurements are cached by schedule hash (cursor moves are free).

    ## Action Space
    ``Discrete(len(actions))``. ``actions="paper"``: up, down, swap_up, swap_down, split_4,
    split_8, split_16 (LoopTune). ``actions="rich"``: also split_2/3/6/12/32/64, merge, unroll,
    vectorize. An illegal action (e.g. splitting beyond ``max_loops`` loops or by more than the
    loop size) leaves the state unchanged, gives reward 0, costs no measurement, and sets
    ``info["illegal"] = True`` with ``info["reason"]``. ``action_masks()`` returns the legal
    actions as a bool array (used by sb3-contrib's MaskablePPO).

    ## Observation Space
    ``observation="box"``: ``Box(-1, 1, (max_loops * 76,), float32)``, the per-loop feature rows
    of ``looptune.graph`` (cursor, size, tail, stride histograms, reuse, working set against
    L1/L2 per tensor), padded with zero rows. ``observation="dict"``: ``Dict(loops=Box(-1, 1,
    (max_loops * 16,)), tensors=Box(-1, 1, (max_loops * 60,)), action_mask=Box(0, 1,
    (n_actions,)))`` for ``MultiInputPolicy``. The networkx graph the features come from is
    ``env.unwrapped.graph()`` (and ``info["graph"]`` with ``info_graph=True``).

    ## Rewards
    ``reward = (gflops(s') - gflops(s)) / peak_gflops``, where gflops is the best timed run of
    the schedule and peak_gflops is this machine's measured single-core FMA peak for the ISA
    (``looptune.measure.peak_gflops``), so an episode's return is the speed-up gained as a
    fraction of peak. Illegal actions and cursor moves give 0.

    ## Episode End
    Never terminates; truncated after ``max_steps`` steps (illegal ones count).

    ## Info
    benchmark, gflops, best_gflops, base_gflops, tree (the loop-tree dump), illegal, reason,
    action, step.

    ## Arguments
    dataset ("mm64_256_16"), split ("train"/"test"/"all"), actions ("paper", "rich" or a list
    of action names), max_steps (10), max_loops (10), observation ("box"/"dict"), isa (None =
    the host's best), measure_min_time (0.002 s of timed runs per new schedule, the Measurer
    default, so the cache is shared with searches), measure_min_runs (3), peak_gflops (None =
    measured), measurer (a ``Measurer`` to use instead of building one), info_graph (False),
    render_mode ("ansi" returns the dump, "human" prints it).

    ## Version History
    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        dataset: str = "mm64_256_16",
        split: str = "train",
        actions: str | Sequence[str] = "paper",
        max_steps: int = 10,
        max_loops: int = 10,
        observation: str = "box",
        isa: str | None = None,
        measure_min_time: float = 0.002,
        measure_min_runs: int = 3,
        peak_gflops: float | None = None,
        measurer: Measurer | None = None,
        info_graph: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self.benchmarks = datasets.get(dataset, split)
        self.dataset, self.split = dataset, split
        self.actions = _action_names(actions)
        for name, value in (("max_steps", max_steps), ("max_loops", max_loops)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if observation not in ("box", "dict"):
            raise ValueError(f"observation must be 'box' or 'dict', got {observation!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.max_steps, self.max_loops, self.observation = max_steps, max_loops, observation
        self.render_mode, self.info_graph = render_mode, info_graph
        if isa is not None and not _core.isa_supported(isa):
            raise ValueError(f"ISA {isa!r} is not supported on this CPU")
        self.measurer = measurer or Measurer(
            isa=isa, min_time=measure_min_time, min_runs=measure_min_runs
        )
        self.peak = (
            finite_positive("peak_gflops", peak_gflops)  # NaN/inf would zero every reward
            if peak_gflops is not None
            else measured_peak(self.measurer.isa)
        )
        self._splits = np.array([a.startswith("split_") for a in self.actions])
        self.action_space = spaces.Discrete(len(self.actions))
        self.observation_space = self._make_observation_space()
        self._features: dict[int, np.ndarray] = {}
        self.benchmark: datasets.Benchmark | None = None
        self.tree: _core.LoopTree | None = None

    def _make_observation_space(self) -> spaces.Space:
        rows = self.max_loops
        if self.observation == "box":
            return spaces.Box(-1.0, 1.0, (rows * lgraph.FEATURES_PER_LOOP,), np.float32)
        return spaces.Dict(
            {
                "loops": spaces.Box(-1.0, 1.0, (rows * lgraph.LOOP_FEATURES,), np.float32),
                "tensors": spaces.Box(
                    -1.0,
                    1.0,
                    (rows * (lgraph.FEATURES_PER_LOOP - lgraph.LOOP_FEATURES),),
                    np.float32,
                ),
                "action_mask": spaces.Box(0.0, 1.0, (len(self.actions),), np.float32),
            }
        )

    # -- gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "benchmark" in options:
            self.benchmark = self._lookup(options["benchmark"])
        else:
            self.benchmark = self.benchmarks[int(self.np_random.integers(len(self.benchmarks)))]
        tree = self.benchmark.default_schedule()
        if tree.depth > self.max_loops:
            raise ValueError(
                f"{self.benchmark.name} has {tree.depth} loops, more than "
                f"max_loops={self.max_loops}"
            )
        self.tree, self.steps = tree, 0
        self.gflops = self.base_gflops = self.best_gflops = self.measurer.gflops(tree)
        return self._observe(), self._info(False, "")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.tree is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = action_index(action, len(self.actions))  # TypeError for 2.5, "3", True
        self.steps += 1
        new, reason = self._mutate(self.actions[a])
        reward = 0.0
        if new is not None:
            self.tree = new
            gflops = self.measurer.gflops(new)
            reward = (gflops - self.gflops) / self.peak
            self.gflops = gflops
            self.best_gflops = max(self.best_gflops, gflops)
        truncated = self.steps >= self.max_steps
        return self._observe(), float(reward), False, truncated, self._info(new is None, reason)

    def action_masks(self) -> np.ndarray:
        """Legal actions in the current state, as a bool array (MaskablePPO's protocol)."""
        if self.tree is None:
            raise gym.error.ResetNeeded("call reset() before action_masks()")
        mask = np.asarray(self.tree.legal_mask(list(self.actions)), dtype=np.bool_)
        if self.tree.depth >= self.max_loops:
            mask &= ~self._splits
        return mask

    def render(self) -> str | None:
        if self.tree is None or self.render_mode is None:
            return None
        text = (
            f"{self.benchmark.name}: {self.gflops:.1f} GFLOP/s (best "
            f"{self.best_gflops:.1f}, base {self.base_gflops:.1f})\n{self.tree.dump()}"
        )
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def graph(self) -> nx.DiGraph:
        """The networkx graph of the current loop nest (see ``looptune.graph.loop_graph``)."""
        if self.tree is None:
            raise gym.error.ResetNeeded("call reset() before graph()")
        return lgraph.loop_graph(self.tree)

    # -- internals ---------------------------------------------------------------------------
    def _lookup(self, wanted: Any) -> datasets.Benchmark:
        if isinstance(wanted, datasets.Benchmark):
            return wanted
        for bench in self.benchmarks:
            if bench.name == wanted:
                return bench
        if not isinstance(wanted, str):
            raise UnknownBenchmarkError(f"unknown benchmark {wanted!r}")
        return datasets.find(wanted)

    def _mutate(self, name: str) -> tuple[_core.LoopTree | None, str]:
        if name.startswith("split_") and self.tree.depth >= self.max_loops:
            return None, f"{name}: the tree already has max_loops={self.max_loops} loops"
        new = self.tree.try_apply(name)
        if new is not None:
            return new, ""
        try:
            self.tree.apply(name)
        except IllegalActionError as e:
            return None, f"{name}: {e}"
        return None, f"{name}: illegal"  # pragma: no cover - engine disagrees with itself

    def _observe(self) -> Any:
        key = self.tree.hash()
        feats = self._features.get(key)
        if feats is None:
            if len(self._features) >= _FEATURE_CACHE_SIZE:
                self._features.clear()
            feats = lgraph.features(lgraph.nest_facts(self.tree), self.max_loops, cursor=False)
            self._features[key] = feats
        feats = feats.copy()
        feats[self.tree.cursor, lgraph.CURSOR_COLUMN] = 1.0
        if self.observation == "box":
            return feats.reshape(-1)
        return {
            "loops": feats[:, : lgraph.LOOP_FEATURES].reshape(-1),
            "tensors": feats[:, lgraph.LOOP_FEATURES :].reshape(-1),
            "action_mask": self.action_masks().astype(np.float32),
        }

    def _info(self, illegal: bool, reason: str) -> dict[str, Any]:
        info = {
            "benchmark": self.benchmark.name,
            "gflops": self.gflops,
            "best_gflops": self.best_gflops,
            "base_gflops": self.base_gflops,
            "tree": self.tree.dump(),
            "illegal": illegal,
            "reason": reason,
            "step": self.steps,
        }
        if self.info_graph:
            info["graph"] = lgraph.loop_graph(self.tree)
        return info


def _action_names(actions: str | Sequence[str]) -> tuple[str, ...]:
    names = action_set(actions) if isinstance(actions, str) else tuple(actions)
    return check_action_names(names)  # the engine's grammar: split_0, split_abc... refused
