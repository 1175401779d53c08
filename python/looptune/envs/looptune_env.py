"""LoopTuneEnv: schedule one tensor computation per episode, rewarded by measured GFLOP/s."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np

from looptune import _core, datasets
from looptune.errors import UnknownBenchmarkError
from looptune.measure import FakeRunner, Measurer, Outcome
from looptune.measure import peak_gflops as measured_peak
from looptune.space import DEFAULT_MAX_LOOPS, ScheduleSpace
from looptune.threads import resolve_threads
from looptune.util.validate import action_index, finite_positive

if TYPE_CHECKING:  # networkx is imported only when a graph is built
    import networkx as nx

FAILURE_REWARD = 0.0  # reward of an action whose schedule fails to measure (state unchanged)


@dataclass(frozen=True)
class EnvState:
    """A serializable episode (CompilerGym's ``env.state``): the benchmark's computation header,
    the actions taken from its base schedule, the return and the final GFLOP/s. Replays with
    ``env.replay(state)``; checked with ``env.validate(state)``."""

    benchmark: str  # Computation.header() of the benchmark
    actions: tuple[str, ...] = ()
    reward: float = 0.0  # sum of the rewards of the episode
    gflops: float = 0.0  # measured GFLOP/s of the final schedule
    name: str = ""  # the benchmark's name (informative)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "actions": list(self.actions)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EnvState:
        d = json.loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("benchmark"), str):
            raise ValueError("not a LoopTune env state")
        return cls(
            d["benchmark"],
            tuple(d.get("actions", ())),
            float(d.get("reward", 0.0)),
            float(d.get("gflops", 0.0)),
            str(d.get("name", "")),
        )


@dataclass
class ValidationResult:
    """What ``env.validate()`` found: ``ok`` when the replay reaches the same schedule, its
    kernel matches numpy, and the re-measured GFLOP/s is within ``rel_tolerance``."""

    ok: bool
    errors: list[str] = field(default_factory=list)
    replay_gflops: float = math.nan
    max_abs_error: float = math.nan


class LoopTuneEnv(gym.Env):
    """Tune the loop nest of a tensor computation, one schedule mutation per step.

    ## Description
    Each episode draws a benchmark (a matmul, conv2d, batched matmul or any registered
    computation) from a dataset split and starts from its base schedule: one loop per variable
    in the natural order, no splits, the cursor on the outermost loop. Actions move the cursor,
    swap the cursor loop with a neighbour, split it, or (rich set) merge it back and toggle
    annotations. Every new schedule is JIT-compiled and timed by a ``looptune.measure.Measurer``
    (cached by schedule hash: cursor moves are free). The schedule space (action names, depth
    cap, masks, observations) is ``env.unwrapped.space``, a ``looptune.space.ScheduleSpace``:
    the shipped agent search uses the same object.

    ## Action Space
    ``Discrete(len(actions))``. ``actions="paper"``: up, down, swap_up, swap_down, split_4,
    split_8, split_16 (LoopTune). ``actions="rich"``: also split_2/3/6/12/32/64, merge, unroll,
    vectorize, parallel (marks the cursor loop parallel; schedules are timed on the env's
    ``threads``). An illegal action (e.g. splitting beyond ``max_loops`` loops or by more than
    the loop size) leaves the state unchanged, gives reward 0, costs no measurement, and sets
    ``info["illegal"] = True`` with ``info["reason"]``. ``action_masks()`` returns the legal
    actions as a bool array; through ``gym.make``'s wrappers call
    ``env.get_wrapper_attr("action_masks")()`` (what sb3-contrib's MaskablePPO does).

    ## Observation Space
    ``observation="box"``: ``Box(-1, 1, (max_loops * 76,), float32)``, the per-loop feature rows
    of ``looptune.space.graph``, padded with zero rows.
    ``observation="dict"``: ``Dict(loops=Box(-1, 1,
    (max_loops * 16,)), tensors=Box(-1, 1, (max_loops * 60,)), action_mask=Box(0, 1,
    (n_actions,)))`` for ``MultiInputPolicy``. When the action set has ``parallel`` (the rich
    set) the observation also shows which loop is parallel: the box gets ``max_loops`` more
    floats (1.0 at the parallel loop's row), the dict a ``parallel`` entry of that shape; the
    paper set (the shipped paper policies) keeps the shape above. The networkx graph the
    features come from is ``env.unwrapped.graph()`` (and ``info["graph"]`` with
    ``info_graph=True``).

    ## Rewards
    ``reward = (gflops(s') - gflops(s)) / peak_gflops``, gflops being the best timed run and
    peak_gflops this machine's measured single-core FMA peak for the ISA times ``threads``
    (the peak of the cores the kernels may use), so an episode's return is the speed-up gained
    as a fraction of that peak: the same schedule gains the same fraction at 1 and at T
    threads when it scales perfectly. A given ``peak_gflops`` is used as it is. Illegal
    actions and cursor moves give 0. A schedule whose measurement fails (compile error,
    runtime error, timeout, wrong answer) is not entered: the state stays as it was, the
    reward is ``FAILURE_REWARD`` (0.0), and ``info["outcome"]`` names the failure. So the
    rewards of an episode always sum to ``(gflops(final) - gflops(base)) / peak``: no reward
    is paid twice or missed.

    ## Episode End
    Never terminates. Truncated by Gymnasium's ``TimeLimit`` after the registration's
    ``max_episode_steps`` (10; ``gym.make(id, max_episode_steps=N)`` changes it). The env does
    not count steps itself unless given the legacy ``max_steps`` argument.

    ## Info
    benchmark, gflops, best_gflops, base_gflops, tree (the loop-tree dump), illegal, reason,
    outcome ("ok" or the failure), step.

    ## Arguments
    dataset ("mm64_256_16"), split ("train"/"test"/"all"), actions ("paper", "rich" or a list
    of action names), max_loops (the depth cap, default ``looptune.space.DEFAULT_MAX_LOOPS``),
    observation ("box"/"dict"), isa (None = the host's best), threads (schedules are timed on this
    many threads, only a parallel loop uses more than one: an int in 1..``looptune.MAX_THREADS``
    or "all"; None = the given ``measurer``'s, else ``looptune.get_num_threads()``, 1 unless
    set), measure_min_time (0.002 s),
    measure_min_runs (3), peak_gflops (None = measured), measurer (a ``Measurer`` to use),
    cost_model (a callable ``tree -> GFLOP/s`` used instead of timing: the cost-model reward
    mode, deterministic and cheap for training, e.g. ``looptune.costmodel.predictor(...)``;
    its figures never enter tuning records; its accuracy against measurement is reported by
    ``benchmarks/sample_efficiency.py``),
    info_graph (False), render_mode ("ansi"/"human"), max_steps (legacy: truncate after this
    many steps inside the env; prefer ``max_episode_steps``).

    ## Custom benchmarks
    ``reset(options={"benchmark": b})`` takes a benchmark name, a ``datasets.Benchmark`` or any
    ``Computation`` (an einsum contraction included); ``looptune.datasets.register`` adds a
    whole dataset.

    ## Version History
    * v0: initial version; episode length moved to the registration's ``max_episode_steps``,
      ``nondeterministic=True`` in the spec (rewards are timings), failed measurements leave
      the state unchanged, ``state``/``replay``/``validate`` added; the rich action set
      gained ``parallel`` (17 actions), with a parallel-loop column in its observation; the
      ``threads`` argument (paper-set observations unchanged).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        dataset: str = "mm64_256_16",
        split: str = "train",
        actions: str | Sequence[str] = "paper",
        max_loops: int = DEFAULT_MAX_LOOPS,
        observation: str = "box",
        isa: str | None = None,
        measure_min_time: float = 0.002,
        measure_min_runs: int = 3,
        peak_gflops: float | None = None,
        measurer: Measurer | None = None,
        cost_model: Callable[[_core.LoopTree], float] | None = None,
        info_graph: bool = False,
        render_mode: str | None = None,
        max_steps: int | None = None,
        threads: int | str | None = None,
    ) -> None:
        self.benchmarks = datasets.get(dataset, split)
        self.dataset, self.split = dataset, split
        self.space = ScheduleSpace(actions, max_loops, observation)
        self.actions, self.max_loops = self.space.actions, self.space.max_loops
        self.observation = self.space.observation
        if max_steps is not None and (
            not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1
        ):
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.max_steps = max_steps
        self.render_mode, self.info_graph = render_mode, info_graph
        if isa is not None and not _core.isa_supported(isa):
            raise ValueError(f"ISA {isa!r} is not supported on this CPU")
        if cost_model is not None and measurer is not None:
            raise ValueError("give either measurer or cost_model, not both")
        if cost_model is not None and not callable(cost_model):
            raise TypeError(f"cost_model must be callable (tree -> GFLOP/s), got {cost_model!r}")
        runner = FakeRunner(cost_model) if cost_model is not None else None
        if threads is not None:
            threads = resolve_threads(threads)
            if measurer is not None and measurer.threads != threads:
                raise ValueError(
                    f"threads={threads} but the given measurer times on {measurer.threads}"
                )
        self.measurer = measurer or Measurer(
            isa=isa, min_time=measure_min_time, min_runs=measure_min_runs, runner=runner,
            threads=threads,
        )
        self.threads = self.measurer.threads
        self.peak = (
            finite_positive("peak_gflops", peak_gflops)  # NaN/inf would zero every reward
            if peak_gflops is not None
            else measured_peak(self.measurer.isa) * self.threads
        )
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.observation_space = self.space.observation_space()
        self.benchmark: datasets.Benchmark | None = None
        self.tree: _core.LoopTree | None = None
        self._taken: list[str] = []
        self._return = 0.0

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
        self.space.check_tree(tree)
        self.tree, self.steps, self._taken, self._return = tree, 0, [], 0.0
        r = self.measurer.measure(tree)
        self.gflops = self.base_gflops = self.best_gflops = r.gflops
        return self.space.observe(tree), self._info(False, "", r.outcome)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.tree is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = action_index(action, len(self.actions))  # TypeError for 2.5, "3", True
        self.steps += 1
        self._taken.append(self.actions[a])
        new = self.space.try_apply(self.tree, a)
        reward, reason, outcome = 0.0, "", Outcome.OK
        if new is None:
            reason = self.space.reason(self.tree, a)
        elif new.hash() == self.tree.hash():
            self.tree = new  # a cursor move: same schedule, no measurement
        else:
            r = self.measurer.measure(new)
            outcome = r.outcome
            if r.ok:
                reward = (r.gflops - self.gflops) / self.peak
                self.tree, self.gflops = new, r.gflops
                self.best_gflops = max(self.best_gflops, r.gflops)
            else:
                reward, reason = FAILURE_REWARD, f"{self.actions[a]}: {r.outcome.value}: {r.error}"
        self._return += reward
        truncated = self.max_steps is not None and self.steps >= self.max_steps
        info = self._info(new is None, reason, outcome)
        return self.space.observe(self.tree), float(reward), False, truncated, info

    def action_masks(self) -> np.ndarray:
        """Legal actions in the current state, as a bool array (MaskablePPO's protocol)."""
        if self.tree is None:
            raise gym.error.ResetNeeded("call reset() before action_masks()")
        return self.space.mask(self.tree)

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
        """The networkx graph of the current loop nest (see ``looptune.space.graph.loop_graph``)."""
        if self.tree is None:
            raise gym.error.ResetNeeded("call reset() before graph()")
        return self.space.graph(self.tree)

    # -- CompilerGym-style state, replay and validation --------------------------------------
    @property
    def state(self) -> EnvState:
        """The episode so far as a serializable :class:`EnvState`."""
        if self.tree is None:
            raise gym.error.ResetNeeded("call reset() before reading the state")
        comp = self.benchmark.computation()
        return EnvState(comp.header(), tuple(self._taken), self._return, self.gflops, comp.name)

    def replay(self, state: EnvState | str) -> tuple[Any, float]:
        """Reset to ``state``'s benchmark and take its actions; returns (observation, return)."""
        if isinstance(state, str):
            state = EnvState.from_json(state)
        comp = _core.parse_computation(state.benchmark)
        obs, _ = self.reset(options={"benchmark": comp})
        total = 0.0
        for name in state.actions:
            obs, reward, *_ = self.step(self.space.index(name))
            total += reward
        return obs, total

    def validate(
        self, state: EnvState | None = None, rel_tolerance: float = 0.2
    ) -> ValidationResult:
        """Replay ``state`` (default the current one) in a fresh env and check it: same schedule
        reached, the kernel matches numpy, and the final GFLOP/s and the return agree with the
        state within ``rel_tolerance`` (timings are noisy; the default allows 20 %)."""
        from looptune.measure.reference import check_tree

        state = self.state if state is None else state
        fresh = Measurer(
            isa=self.measurer.isa,
            min_time=self.measurer.min_time,
            min_runs=self.measurer.min_runs,
            cache={},
            threads=self.threads,
        )
        other = LoopTuneEnv(
            self.dataset, self.split, self.actions, self.max_loops, self.observation,
            peak_gflops=self.peak, measurer=fresh, threads=self.threads,
        )  # fmt: skip
        _, total = other.replay(state)
        errors = []
        check = check_tree(other.tree, isa=self.measurer.isa)
        if not check.ok:
            errors.append(f"the replayed kernel {check}")
        g = other.gflops
        if state.gflops > 0 and abs(g - state.gflops) > rel_tolerance * state.gflops:
            errors.append(f"replayed {g:.2f} GFLOP/s, the state says {state.gflops:.2f}")
        scale = rel_tolerance * max(g, state.gflops) / self.peak
        if abs(total - state.reward) > scale + 1e-9:
            errors.append(f"replayed return {total:.4f}, the state says {state.reward:.4f}")
        if self.tree is not None and state == self.state and other.tree.hash() != self.tree.hash():
            errors.append("the replay reached a different schedule")
        return ValidationResult(not errors, errors, g, check.max_abs_error)

    # -- internals ---------------------------------------------------------------------------
    def _lookup(self, wanted: Any) -> datasets.Benchmark:
        if isinstance(wanted, datasets.Benchmark):
            return wanted
        if isinstance(wanted, _core.Computation):
            return datasets.Benchmark.from_computation(wanted, "reset(options)")
        for bench in self.benchmarks:
            if bench.name == wanted:
                return bench
        if not isinstance(wanted, str):
            raise UnknownBenchmarkError(f"unknown benchmark {wanted!r}")
        return datasets.find(wanted)

    def _info(self, illegal: bool, reason: str, outcome: Outcome) -> dict[str, Any]:
        info = {
            "benchmark": self.benchmark.name,
            "gflops": self.gflops,
            "best_gflops": self.best_gflops,
            "base_gflops": self.base_gflops,
            "tree": self.tree.dump(),
            "illegal": illegal,
            "reason": reason,
            "outcome": outcome.value,
            "step": self.steps,
        }
        if self.info_graph:
            info["graph"] = self.space.graph(self.tree)
        return info


__all__ = ["FAILURE_REWARD", "EnvState", "LoopTuneEnv", "ValidationResult"]
