"""The trained agent as one search among the others: roll a policy, measure what it visited.

The shipped agent is a set of two policies per ISA, chosen by the computation
(``uses_paper_policy``): the paper policy (``data/policy_<isa>``) for plain matmuls with every
dimension in its training range 64..256, and the tiling agent (``tiler_search``,
``data/policy_tiler_<isa>``) for every other layer: it scores the rule-generated tile macros
of the computation (``looptune.agent.tiler``) and times only the best-scored few at full size.
When no tiling policy is shipped for the ISA, the paper policy tunes everything.

**Threads.** Both tune for the measurer's thread count (``Measurer(threads=T)``, default
``looptune.get_num_threads()``). A tiling policy that knows threads (feature version 2) ranks
the serial macros and their parallel variants together at T and the best-ranked are timed, the
best-ranked serial macro and parallel variant always among them (``ranked_threaded_order``); an
older one ranks serial macros and the parallel variants of its best are timed beside the best
serial one (``threaded_order``). The paper policy never saw a parallel mark: after its rollout
the parallel variant of its best schedule is timed too (``best_with_threads``). The parallel
loop is chosen by the cost model of ``looptune.agent.tiler``; a layer too small for it stays
serial.

The policy acts on observations only: it is rolled greedily (argmax over the legal actions)
for its episode length from the given schedule, and afterwards only the distinct schedules it
visited are measured; the best one is returned. Cursor moves do not change a schedule, so they
cost no measurement. Observations and masks come from the policy's
:class:`looptune.space.ScheduleSpace`, the same object its training env uses.

    >>> import looptune, looptune.search
    >>> agent = looptune.search.get("agent")
    >>> result = agent(looptune.matmul(128, 256, 64).default_schedule())  # doctest: +SKIP
    >>> result.best_gflops, result.best_tree.dump()  # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from looptune import _core
from looptune.agent import tiler_int8
from looptune.agent.policy import LoadedPolicy, resolve_policy
from looptune.agent.tiler import candidates as tiler_candidates
from looptune.agent.tiler import parallel_variant
from looptune.agent.tiler_policy import TilerPolicy, default_tiler_path, load_tiler
from looptune.measure import Measurer
from looptune.search.base import BudgetExhausted, SearchResult, Tracker, run_search
from looptune.space import ScheduleSpace


def policy_space(policy: LoadedPolicy) -> ScheduleSpace:
    """The schedule space of the env ``policy`` was trained in (actions, cap, observation)."""
    space = getattr(policy, "_space", None)
    if space is None:
        space = ScheduleSpace(policy.actions, policy.max_loops, policy.observation)
        try:
            policy._space = space  # built once per policy object
        except AttributeError:  # a frozen policy object: rebuild each time (cheap)
            pass
    return space


def legal_actions(policy: LoadedPolicy, tree: _core.LoopTree) -> np.ndarray:
    """The env's action mask for ``tree`` (legal in the engine, within the depth cap)."""
    return policy_space(policy).mask(tree)


def observe(policy: LoadedPolicy, tree: _core.LoopTree) -> Any:
    """The observation the policy's training env produces for ``tree`` (no measurement)."""
    return policy_space(policy).observe(tree)


def action_scores(model: Any, obs: Any) -> np.ndarray:
    """Per-action preference of ``model`` for one observation: log-probabilities or Q-values
    (a loaded policy computes them in numpy; an SB3 model being trained, with torch)."""
    if hasattr(model, "action_scores"):
        return model.action_scores(obs)
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
    space = policy_space(policy)
    steps = policy.episode_steps if steps is None else steps
    rng = rng if rng is not None else np.random.default_rng(0)
    states = [tree]
    for _ in range(steps):
        mask = space.mask(tree)
        if not mask.any():
            break
        scores = action_scores(policy.model, space.observe(tree))
        scores = np.where(mask, scores, -np.inf)
        if deterministic:
            a = int(np.argmax(scores))
        else:
            p = np.exp(scores - scores.max())
            a = int(rng.choice(len(p), p=p / p.sum()))
        tree = space.apply(tree, a)
        states.append(tree)
    return states


# The paper policy's domain: plain matmuls with every dimension in its training range.
PAPER_RANGE = (64, 256)
# The tiling agent times macros best-scored first until TUNE_SECONDS have passed, at least
# MIN_TIMED and at most MAX_TIMED of them: a cheap layer gets many timed (its scorer's top few
# can all miss: on Zen 1 the best tile of a 1024x1024x8 matmul was scored 8th to 10th), a
# large one the top two.
TUNE_SECONDS = 0.5
MIN_TIMED, MAX_TIMED = 2, 16


def uses_paper_policy(comp: _core.Computation) -> bool:
    """True for the computations the shipped paper policy was trained on (plain matmuls with
    every dimension in 64..256): it tunes those; the tiling agent tunes everything else."""
    lo, hi = PAPER_RANGE
    if tiler_int8.is_int8(comp):
        return False  # int8: the tiling agent's int8 macros (looptune.agent.tiler_int8)
    return comp.kind == "matmul" and comp.block == 0 and all(
        lo <= v.extent <= hi for v in comp.vars
    )


def _has_tiler(measurer: Measurer | None, comp: _core.Computation) -> bool:
    """True when the tiling agent is shipped for the measurer's ISA and has tile macros for
    ``comp`` beyond its base schedule (an einsum the rule generators do not cover has none:
    the paper policy's step-by-step rollout tunes it instead)."""
    isa = measurer.isa if measurer is not None else _core.host_isa()
    return default_tiler_path(isa).is_file() and len(tiler_candidates(comp, isa)) > 1


def tiler_search(
    tree: _core.LoopTree,
    measurer: Measurer | None = None,
    *,
    time_budget: float | None = None,
    measure_budget: int | None = None,
    tiler: TilerPolicy | str | None = None,
    tune_seconds: float = TUNE_SECONDS,
    top_k: int = MAX_TIMED,
    **_: Any,
) -> SearchResult:
    """Tune ``tree``'s computation with the tiling agent: score every tile macro, then time at
    full size the best-scored ones in order, at least ``MIN_TIMED`` and at most ``top_k``,
    stopping once ``tune_seconds`` have passed. The start schedule is not timed (it is the
    base schedule of an untuned layer; its ``base_gflops`` is NaN unless it is also a macro
    that was timed). Returns the fastest timed macro.

    At the measurer's ``threads`` > 1 the macros timed are their parallel variants plus the
    best serial macro (``threaded_order``)."""
    if not isinstance(tree, _core.LoopTree):
        raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    measurer = measurer if measurer is not None else Measurer(min_time=0.005, min_runs=1)
    if not isinstance(tiler, TilerPolicy):
        tiler = load_tiler(tiler, isa=measurer.isa if tiler is None else None)
    tracker = Tracker(measurer, time_budget, measure_budget)
    if tiler.knows_threads and measurer.threads > 1:
        ranked, _scores = tiler.rank(tree.computation, measurer.threads)
        order, min_timed = ranked_threaded_order(ranked)
    else:
        ranked, _scores = tiler.rank(tree.computation)
        order, min_timed = threaded_order(ranked[:top_k], measurer.threads)
    if tiler_int8.is_int8(tree.computation):  # the scorer's top 2 is not safe on int8
        min_timed = max(min_timed, tiler_int8.MIN_TIMED)
    try:
        for i, cand in enumerate(order[:top_k]):
            if i >= min_timed and tracker.elapsed >= tune_seconds:
                break
            tracker.evaluate(cand, force=i == 0)
    except BudgetExhausted:
        pass
    tracker.base_gflops = tracker.seen.get(tree.hash(), math.nan)
    return tracker.result("agent")


def threaded_order(
    ranked: list[_core.LoopTree], threads: int
) -> tuple[list[_core.LoopTree], int]:
    """The macros to time at ``threads`` threads, in order, and how many to time at least.

    One thread: the scorer's order, at least ``MIN_TIMED``. More: each macro replaced by its
    parallel variant (``looptune.agent.tiler.parallel_variant``; the macro itself when the rule
    keeps it serial), with the best-scored serial macro third, and at least three timed: the
    two best parallel variants and that serial macro, so a layer where threads do not pay
    (memory-bound, or too small for the rule) ends serial by measurement. The parallel runs
    take about 1/T of the serial time, so tuning takes about as long as at one thread."""
    if threads <= 1 or not ranked:
        return list(ranked), MIN_TIMED
    par = [parallel_variant(t, threads) or t for t in ranked]
    order = par[:2] + [ranked[0]] + par[2:]
    seen: set[int] = set()
    out = [t for t in order if not (t.hash() in seen or seen.add(t.hash()))]
    return out, min(MIN_TIMED + 1, len(out))


def ranked_threaded_order(ranked: list[_core.LoopTree]) -> tuple[list[_core.LoopTree], int]:
    """The order to time a threads-aware ranking (serial macros and parallel variants, best
    first) in, and how many to time at least: its best two, then the best-ranked serial macro
    and the best-ranked parallel variant if they are not among them, so that whether threads
    pay is always decided by measurement; then the rest."""
    head = list(ranked[:2])
    for pick in (lambda t: t.parallel_loop is None, lambda t: t.parallel_loop is not None):
        best = next((t for t in ranked if pick(t)), None)
        if best is not None and all(best.hash() != h.hash() for h in head):
            head.append(best)
    hashes = {t.hash() for t in head}
    return head + [t for t in ranked if t.hash() not in hashes], max(MIN_TIMED, len(head))


def best_with_threads(tracker: Tracker, threads: int) -> None:
    """After a search of serial schedules at ``threads`` > 1 threads: also time the parallel
    variant of the best schedule found (the tracker keeps the faster)."""
    if threads <= 1 or tracker.best_tree is None:
        return
    par = parallel_variant(tracker.best_tree, threads)
    if par is not None:
        tracker.evaluate(par)


def agent_search(
    tree: _core.LoopTree,
    measurer: Measurer | None = None,
    *,
    time_budget: float | None = None,
    measure_budget: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    rollouts: int = 1,
    deterministic: bool = True,
    policy: LoadedPolicy | str | None = None,
    actions: Sequence[str] | None = None,
    **_: Any,
) -> SearchResult:
    """Tune ``tree`` with a trained policy; returns a ``SearchResult``.

    Args:
        tree: the schedule to start from (usually ``computation.default_schedule()``).
        measurer: measures (and caches) GFLOP/s; default a fresh ``Measurer()``.
        steps: actions per rollout; default the policy's training episode length.
        rollouts: 1 = the greedy rollout only; more adds sampled rollouts (more measurements).
        deterministic: greedy (argmax) actions in the first rollout.
        policy: a ``LoadedPolicy`` or a path; default the policy set shipped for the
            measurer's ISA, chosen by the computation: the paper policy for plain matmuls in
            its training range (``uses_paper_policy``), the tiling agent (``tiler_search``)
            for everything else. A policy trained for another ISA still runs, with a
            ``RuntimeWarning``.
        seed: seeds the sampled rollouts.
        time_budget, measure_budget: optional caps, as for the searches.
        actions: for a uniform search interface; any set other than the policy's raises
            ``ValueError``.
    """
    if not isinstance(tree, _core.LoopTree):
        raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
    if rollouts < 1:
        raise ValueError(f"rollouts must be >= 1, got {rollouts}")
    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    comp = tree.computation
    if policy is None and not uses_paper_policy(comp) and _has_tiler(measurer, comp):
        return tiler_search(tree, measurer, time_budget=time_budget,
                            measure_budget=measure_budget)
    measurer = measurer if measurer is not None else Measurer()
    policy = resolve_policy(policy, isa=measurer.isa)
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
    policy_space(policy).check_tree(tree)

    def body(tracker: Tracker) -> None:
        rng = np.random.default_rng(seed)
        visited: dict[int, _core.LoopTree] = {}
        for r in range(rollouts):
            for state in rollout(policy, tree, steps, deterministic and r == 0, rng)[1:]:
                visited.setdefault(state.hash(), state)
        for state in visited.values():
            tracker.evaluate(state)
        best_with_threads(tracker, measurer.threads)

    return run_search("agent", tree, measurer, time_budget, measure_budget, body)


# The historical name (``looptune.agent.policy.tune`` before the agent moved here).
tune = agent_search

__all__ = [
    "action_scores",
    "agent_search",
    "best_with_threads",
    "legal_actions",
    "observe",
    "policy_space",
    "ranked_threaded_order",
    "rollout",
    "threaded_order",
    "tiler_search",
    "tune",
    "uses_paper_policy",
]
