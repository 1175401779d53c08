"""Train a LoopTune agent with RLlib (new API stack) and export it to the safe policy format.

    looptune train --backend rllib --algo appo --num-env-runners 2 [--address ray://head:10001]

    from looptune.distributed.rllib import train
    meta = train("ppo", timesteps=20_000, num_env_runners=2, save="runs/rllib/policy")

The env goes to RLlib the way Ray documents for custom envs: a creator function registered
with ``ray.tune.registry.register_env`` under :data:`ENV_NAME` (the gymnasium registry of the
driver does not reach Ray's workers), called with ``env_config = {"env_id", "env_kwargs",
"reward_scale"}``. The creator claims a free core of its host and pins the env runner to it
(:func:`looptune.distributed.cores.claim_core`) *before* the env is built, so the env measures
its peak, and every kernel, on that one core: rewards are ``delta GFLOP/s / peak`` of the core
that measured them, and no two env runners time kernels on one core.

Algorithms. The LoopTune paper used APEX-DQN; current RLlib has no APEX-DQN (it was removed
with the old API stack). The nearest design is **APPO** (``--algo appo``, asynchronous PPO on
the IMPALA architecture): like APEX it decouples many sampling env runners from one learner, so
slow, measurement-bound env steps on many cores keep the learner fed, and its V-trace / clipped
surrogate corrects for samples drawn with a slightly stale policy. APEX's other half,
distributed prioritized replay, has no new-stack equivalent; ``--algo dqn`` is RLlib's DQN
(double Q, prioritized episode replay) for the value-based side, and ``--algo ppo`` synchronous
PPO. PPO and APPO export as an SB3 ``ActorCriticPolicy`` ("ppo"), DQN as a ``DQNPolicy``
("dqn"): the same ``.safetensors`` + ``.json`` pair that ``looptune tune --policy`` loads.

The network: an MLP of ``net_arch`` hidden layers (tanh for PPO/APPO, relu for DQN), separate
actor and critic encoders (``vf_share_layers=False``), one linear head each (no dueling), so
every tensor maps one to one onto the SB3 policy of the same shape.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from looptune.distributed import require_ray

ENV_NAME = "looptune_rllib_env"
ALGOS = ("ppo", "appo", "dqn")
EXPORT_ALGO = {"ppo": "ppo", "appo": "ppo", "dqn": "dqn"}  # -> looptune.agent.policy_io algo


def make_env(env_config: Any) -> Any:
    """The env creator registered with Ray: claim a core, then build the LoopTune env."""
    import gymnasium as gym

    import looptune  # noqa: F401  (registers the LoopTune ids in this worker)
    from looptune.distributed.cores import claim_core

    if env_config.get("pin", True):
        claim_core()
    env = gym.make(env_config["env_id"], **dict(env_config.get("env_kwargs") or {}))
    scale = float(env_config.get("reward_scale", 1.0))
    if scale != 1.0:
        env = gym.wrappers.TransformReward(env, lambda r: r * scale)
    return env


def register() -> None:
    """Register :func:`make_env` with Ray under :data:`ENV_NAME`."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_env)


def build_config(
    algo: str,
    env_config: dict,
    num_env_runners: int,
    net_arch: Sequence[int],
    lr: float,
    gamma: float,
    seed: int,
    batch: int,
) -> Any:
    """The RLlib ``AlgorithmConfig`` (new API stack, one local learner)."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    if algo not in ALGOS:
        raise ValueError(f"unknown RLlib algorithm {algo!r}; choose from {list(ALGOS)}")
    if num_env_runners < 0:
        raise ValueError(f"num_env_runners must be >= 0, got {num_env_runners}")
    model = DefaultModelConfig(
        fcnet_hiddens=list(net_arch),
        fcnet_activation="relu" if algo == "dqn" else "tanh",
        head_fcnet_hiddens=[],
        vf_share_layers=False,
    )
    if algo == "ppo":
        from ray.rllib.algorithms.ppo import PPOConfig as Config
    elif algo == "appo":
        from ray.rllib.algorithms.appo import APPOConfig as Config
    else:
        from ray.rllib.algorithms.dqn import DQNConfig as Config
    cfg = (
        Config()
        .environment(ENV_NAME, env_config=env_config)
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=1,
                     rollout_fragment_length=max(10, batch // max(num_env_runners, 1) // 2))
        .learners(num_learners=0)
        .rl_module(model_config=model)
        .framework("torch")
        .debugging(seed=seed)
        .reporting(min_sample_timesteps_per_iteration=batch)
    )
    if algo == "dqn":
        return cfg.training(
            lr=lr, gamma=gamma, train_batch_size_per_learner=min(batch, 64), dueling=False,
            double_q=True, num_steps_sampled_before_learning_starts=min(batch, 200),
            training_intensity=1.0, target_network_update_freq=max(batch, 500),
        )
    extra = {"num_epochs": 4, "minibatch_size": max(16, batch // 4)} if algo == "ppo" else {}
    return cfg.training(lr=lr, gamma=gamma, train_batch_size_per_learner=batch, **extra)


def train(
    algo: str = "ppo",
    *,
    env_id: str = "LoopTune-v0",
    env_kwargs: dict | None = None,
    timesteps: int = 20_000,
    num_env_runners: int = 1,
    address: str | None = None,
    net_arch: Sequence[int] = (256, 256),
    lr: float = 3e-4,
    gamma: float = 0.99,
    seed: int = 0,
    batch: int = 512,
    reward_scale: float = 1.0,
    save: str | Path | None = None,
    command: str | None = None,
    pin: bool = True,
) -> dict:
    """Train ``algo`` for at least ``timesteps`` env steps; export to ``save`` (a
    ``.safetensors`` + ``.json`` pair) when given. Returns the policy metadata (with
    ``timesteps``, ``wall_seconds``, ``steps_per_second``, ``path``)."""
    from looptune.agent.policy import check_env_id, env_spec

    ray = require_ray()
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    env_kwargs = dict(env_kwargs or {})
    meta = {"algo": EXPORT_ALGO.get(algo, algo), "env_id": env_id, "env_kwargs": env_kwargs}
    check_env_id(meta, "the training env")
    env_config = {"env_id": env_id, "env_kwargs": env_kwargs, "reward_scale": reward_scale,
                  "pin": pin}
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    register()
    algorithm = build_config(algo, env_config, num_env_runners, net_arch, lr, gamma, seed,
                             batch).build_algo()
    try:
        t0, steps, iters = time.perf_counter(), 0, 0
        while steps < timesteps:
            result = algorithm.train()
            iters += 1
            steps = int(_sampled(result) or steps)
        wall = time.perf_counter() - t0
        weights = algorithm.learner_group.get_weights()["default_policy"]
        policy = sb3_policy(weights, algo, net_arch, env_id, env_kwargs)
        module = algorithm.get_module()  # RLlib's own forward pass, on the learner's weights
        keys = set(module.state_dict())
        module.set_state({k: v for k, v in weights.items() if k in keys})
        check = export_check(module, policy, algo, seed)
    finally:
        algorithm.stop()
        if started:
            ray.shutdown()
    meta.update(env_spec(env_id, env_kwargs))
    meta.update(
        trainer="rllib",
        rllib_algo=algo,
        ray=ray.__version__,
        num_env_runners=num_env_runners,
        seed=seed,
        command=command or f"looptune.distributed.rllib.train({algo!r})",
        timesteps=steps,
        iterations=iters,
        wall_seconds=round(wall, 1),
        steps_per_second=round(steps / wall, 1) if wall > 0 else None,
        export_check=check,
    )
    if save is not None:
        meta["path"] = str(export(policy, algo, save, meta))
    return meta


def export_check(module: Any, policy: Any, algo: str, seed: int, n: int = 64) -> dict:
    """Run RLlib's module and the exported SB3 policy on ``n`` random observations: the greedy
    actions must agree (and the logits, for PPO/APPO). Raises RuntimeError otherwise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *policy.observation_space.shape), generator=g) * 2 - 1
    with torch.no_grad():
        out = module.forward_inference({"obs": x})
        if EXPORT_ALGO[algo] == "dqn":
            theirs, mine = out["actions"], policy.q_net(x).argmax(-1)
            diff = 0.0
        else:
            logits = out["action_dist_inputs"]
            ours = policy.action_net(policy.mlp_extractor.forward_actor(x))
            diff = float((logits - ours).abs().max())
            theirs, mine = logits.argmax(-1), ours.argmax(-1)
    same = bool((theirs.reshape(-1) == mine.reshape(-1)).all())
    if not same or diff > 1e-4:
        raise RuntimeError(f"exported policy differs from RLlib's (max logit diff {diff:.3g})")
    return {"observations": n, "same_greedy_actions": same, "max_abs_logit_diff": diff}


def _sampled(result: dict) -> int | None:
    for where in (result.get("env_runners", {}), result):
        n = where.get("num_env_steps_sampled_lifetime")
        if n:
            return int(n)
    return None


def sb3_policy(weights: dict, algo: str, net_arch: Sequence[int], env_id: str,
               env_kwargs: dict) -> Any:
    """The SB3 policy (``ActorCriticPolicy`` or ``DQNPolicy``) holding RLlib's ``weights``."""
    import gymnasium as gym
    import torch

    from looptune.agent import policy_io

    env = gym.make(env_id, **{**env_kwargs, "peak_gflops": 1.0, "measure_min_time": 0.0})
    obs, act = env.observation_space, env.action_space
    env.close()
    kind = EXPORT_ALGO[algo]
    arch = list(net_arch)
    network = {
        "policy_class": policy_io.POLICY_CLASSES[kind][0],
        "observation_space": {"type": "Box", "low": float(obs.low.min()),
                              "high": float(obs.high.max()), "shape": list(obs.shape)},
        "action_space": {"type": "Discrete", "n": int(act.n)},
        "policy_kwargs": {
            "net_arch": arch if kind == "dqn" else {"pi": arch, "vf": arch},
            "activation_fn": "ReLU" if kind == "dqn" else "Tanh",
        },
    }
    policy = policy_io.build_policy(network, kind)
    t = {k: torch.as_tensor(v) for k, v in weights.items()}
    if kind == "dqn":
        state = _layers(t, ["encoder.net.mlp.", "af.net.mlp."], "q_net.q_net.")
        target = ["_target_encoder.net.mlp.", "_target_af.net.mlp."]
        if not any(k.startswith(target[0]) for k in t):
            target = ["encoder.net.mlp.", "af.net.mlp."]
        state.update(_layers(t, target, "q_net_target.q_net."))
    else:
        state = _layers(t, ["encoder.actor_encoder.net.mlp."], "mlp_extractor.policy_net.")
        state.update(_layers(t, ["encoder.critic_encoder.net.mlp."], "mlp_extractor.value_net."))
        state.update(_layers(t, ["pi.net.mlp."], "action_net."))
        state.update(_layers(t, ["vf.net.mlp."], "value_net."))
    policy.load_state_dict(state, strict=True)  # every tensor, exact shapes
    policy.set_training_mode(False)
    return policy


def _layers(t: dict, prefixes: list[str], dest: str) -> dict:
    """The Linear layers under ``prefixes`` (in order) renamed to SB3's ``dest`` layout: an
    ``nn.Sequential`` of Linear + activation (``dest.0``, ``dest.2``, ...) or one Linear."""
    linear = []
    for p in prefixes:
        idx = sorted({int(k[len(p):].split(".")[0]) for k in t if k.startswith(p)})
        linear += [(f"{p}{i}.weight", f"{p}{i}.bias") for i in idx]
    if dest.endswith("_net.") and dest in ("action_net.", "value_net."):
        (w, b), = linear
        return {dest + "weight": t[w], dest + "bias": t[b]}
    return {f"{dest}{2 * j}.{s}": t[k] for j, (w, b) in enumerate(linear)
            for s, k in (("weight", w), ("bias", b))}


def export(policy: Any, algo: str, path: str | Path, meta: dict) -> Path:
    """Write the SB3 ``policy`` (from :func:`sb3_policy`) as a looptune policy
    (``.safetensors`` + ``.json``)."""
    from looptune.agent import policy_io
    from looptune.agent.policy import save_policy

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_policy(policy_io.SafeModel(policy, EXPORT_ALGO[algo]), path,
                       {**meta, "algo": EXPORT_ALGO[algo]})


def main(args: Any, argv: list[str] | None = None) -> dict:
    """``looptune train --backend rllib`` (``args`` from ``looptune.agent.train.parse_args``)."""
    run = args.run_name or f"rllib_{args.algo}_{args.dataset}_s{args.seed}"
    save = Path(args.save) if args.save else Path(args.logdir) / run / "policy.safetensors"
    argv = sys.argv[1:] if argv is None else argv
    meta = train(
        args.algo,
        env_id=args.env_id,
        env_kwargs={"dataset": args.dataset, "split": "train", **args.env_kwargs},
        timesteps=args.timesteps,
        num_env_runners=args.num_env_runners,
        address=args.address,
        net_arch=args.net_arch,
        lr=args.lr,
        gamma=args.gamma,
        seed=args.seed,
        batch=args.n_steps,  # the env steps of one training iteration
        reward_scale=args.reward_scale,
        save=save,
        command=" ".join(["looptune", "train", *(shlex.quote(a) for a in argv)]),
    )
    keys = ("rllib_algo", "timesteps", "wall_seconds", "steps_per_second", "path")
    print(json.dumps({k: meta.get(k) for k in keys}, indent=1))
    return meta


__all__ = ["ALGOS", "ENV_NAME", "build_config", "export", "main", "make_env", "register",
           "sb3_policy", "train"]
