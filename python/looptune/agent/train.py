"""Train an SB3 agent (PPO, DQN or sb3-contrib MaskablePPO) on a LoopTune dataset.

    python -m looptune.agent.train --algo maskable_ppo --timesteps 200000 --save runs/mppo/policy
    looptune train ...            (the same; agents/train.py is a thin wrapper of this module)

One env per core (SubprocVecEnv), TensorBoard logs under --logdir, checkpoints, and a periodic
evaluation on held-out (test-split) benchmarks: the policy is rolled greedily from each base
schedule exactly as ``looptune.search.agent.tune`` does, and the mean best GFLOP/s and geomean
speedup are logged (``eval/``) and the best model so far is kept. The saved policy gets a JSON
file next to it (command, seed, timesteps, wall time, env id and kwargs, evaluation figures) that
``looptune.agent.policy.load_policy`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from looptune.agent.train_callbacks import TuneEvalCallback, save_policy
from looptune.report.progress import enabled as progress_enabled


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=("maskable_ppo", "ppo", "dqn", "appo"), default=None,
                   help="default maskable_ppo (sb3) or appo (rllib); appo needs --backend rllib")
    p.add_argument("--backend", choices=("sb3", "rllib"), default="sb3",
                   help="rllib: train on Ray RLlib (the ray extra; looptune.distributed.rllib)")
    p.add_argument("--num-env-runners", type=int, default=1,
                   help="rllib: env runners, each measuring on its own core")
    p.add_argument("--address", default=None, help="rllib: Ray cluster address (default local)")
    p.add_argument("--env-id", default="LoopTune-v0")
    p.add_argument("--env-kwargs", default="{}", help="JSON dict passed to gym.make")
    p.add_argument("--dataset", default="mm64_256_16")
    p.add_argument("--timesteps", type=int, default=200_000)
    p.add_argument("--n-envs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--net-arch", default="256,256", help="hidden layer sizes, comma separated")
    p.add_argument("--n-steps", type=int, default=512, help="PPO rollout length per env")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--n-epochs", type=int, default=10, help="PPO epochs per rollout")
    p.add_argument("--clip-range", type=float, default=0.2, help="PPO clip range")
    p.add_argument(
        "--reward-scale",
        type=float,
        default=1.0,
        help="multiply rewards by this (keeps the policy normalizer-free)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logdir", default="runs")
    p.add_argument(
        "--save",
        default=None,
        help="final policy path, saved as .safetensors + .json (default LOGDIR/RUN/policy)",
    )
    p.add_argument("--init", default=None, help="start from this saved .safetensors policy")
    p.add_argument("--eval-freq", type=int, default=20_000, help="timesteps between evaluations")
    p.add_argument("--eval-benchmarks", type=int, default=12)
    p.add_argument("--checkpoint-freq", type=int, default=50_000)
    p.add_argument("--run-name", default=None)
    p.add_argument(
        "--progress", action="store_true", help="show a progress bar (only on a terminal)"
    )
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="print the full result as JSON (per-benchmark rows and schedules of the final "
        "evaluation) instead of a short summary",
    )
    args = p.parse_args(argv)
    try:
        args.env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as e:
        p.error(f"--env-kwargs is not JSON: {e}")
    if not isinstance(args.env_kwargs, dict):
        p.error("--env-kwargs must be a JSON object")
    try:
        args.net_arch = [int(x) for x in args.net_arch.split(",") if x.strip()]
    except ValueError:
        p.error(f"--net-arch must be comma-separated integers, got {args.net_arch!r}")
    if args.timesteps < 1 or args.n_envs < 1:
        p.error("--timesteps and --n-envs must be positive")
    if args.algo is None:
        args.algo = "appo" if args.backend == "rllib" else "maskable_ppo"
    rllib_algos = ("ppo", "appo", "dqn")
    if args.backend == "rllib" and args.algo not in rllib_algos:
        p.error(f"--backend rllib trains {', '.join(rllib_algos)}, not {args.algo}")
    if args.backend == "sb3" and args.algo == "appo":
        p.error("--algo appo needs --backend rllib")
    if args.num_env_runners < 0:
        p.error("--num-env-runners must be >= 0")
    return args


def env_kwargs(args: argparse.Namespace, split: str) -> dict:
    return {"dataset": args.dataset, "split": split, **args.env_kwargs}


def make_env_fn(env_id: str, kwargs: dict, reward_scale: float):
    def _init():
        import gymnasium as gym
        from stable_baselines3.common.monitor import Monitor

        import looptune  # noqa: F401  (registers the ids in the subprocess)

        env = gym.make(env_id, **kwargs)
        if reward_scale != 1.0:
            env = gym.wrappers.TransformReward(env, lambda r: r * reward_scale)
        return Monitor(env)

    return _init


def make_vec_env(args: argparse.Namespace):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    fns = [
        make_env_fn(args.env_id, env_kwargs(args, "train"), args.reward_scale)
        for _ in range(args.n_envs)
    ]
    venv = SubprocVecEnv(fns, start_method="fork") if args.n_envs > 1 else DummyVecEnv(fns)
    venv.seed(args.seed)
    return venv


def build_model(args: argparse.Namespace, venv, tb_dir: str):
    from looptune.agent.policy import algo_class

    cls = algo_class(args.algo)
    init_meta = None
    if args.init:  # e.g. a behaviour-cloned policy (agents/imitation.py): fine-tune its weights
        init_meta = init_network(args)
    common = {
        "policy": "MlpPolicy",
        "env": venv,
        "learning_rate": args.lr,
        "gamma": args.gamma,
        "seed": args.seed,
        "tensorboard_log": tb_dir,
        "device": "cpu",
        "verbose": 0,
        "batch_size": args.batch_size,
        "policy_kwargs": {"net_arch": args.net_arch},
    }
    if init_meta is not None:
        common["policy_kwargs"] = {"net_arch": init_meta["network"]["policy_kwargs"]["net_arch"]}
    model = _new_model(cls, args, common)
    if args.init:
        from looptune.agent.policy_io import load_weights

        load_weights(model.policy, args.init)
    return model


def init_network(args: argparse.Namespace) -> dict:
    """The metadata of the ``--init`` policy (a .safetensors policy of the same algorithm)."""
    from looptune.agent.policy import load_policy

    init = load_policy(args.init)  # refuses pickles; checks the metadata and the tensors
    if init.algo != args.algo:
        raise ValueError(f"--init {args.init} is a {init.algo} policy, not {args.algo}")
    return init.meta


def _new_model(cls, args: argparse.Namespace, common: dict):
    if args.algo == "dqn":
        return cls(
            **common,
            buffer_size=100_000,
            learning_starts=2_000,
            train_freq=4,
            target_update_interval=2_000,
            exploration_fraction=0.3,
            exploration_final_eps=0.05,
        )
    return cls(
        **common,
        n_steps=args.n_steps,
        ent_coef=args.ent_coef,
        n_epochs=args.n_epochs,
        clip_range=args.clip_range,
    )


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", "looptune.agent.train", *(shlex.quote(a) for a in args)])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.backend == "rllib":
        from looptune.distributed.rllib import main as rllib_main

        return rllib_main(args, argv)
    import torch
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback

    from looptune.agent.policy import env_spec

    torch.set_num_threads(1)
    run = args.run_name or f"{args.algo}_{args.dataset}_s{args.seed}"
    run_dir = Path(args.logdir) / run
    run_dir.mkdir(parents=True, exist_ok=True)
    save = Path(args.save) if args.save else run_dir / "policy.safetensors"
    venv = make_vec_env(args)
    model = build_model(args, venv, str(Path(args.logdir) / "tb"))
    meta = {
        "algo": args.algo,
        "env_id": args.env_id,
        "env_kwargs": env_kwargs(args, "train"),
        "seed": args.seed,
        "command": command_line(argv),
    }
    meta.update(env_spec(args.env_id, meta["env_kwargs"]))
    if args.init:  # record how the starting policy was made (e.g. the imitation command)
        from looptune.agent.policy_io import read_meta

        meta["init"] = read_meta(Path(args.init).with_suffix(".json"))
    evaluator = TuneEvalCallback(
        args.env_id,
        env_kwargs(args, "test"),
        args.eval_benchmarks,
        max(args.eval_freq // args.n_envs, 1),
        run_dir,
        meta,
    )
    ckpt = CheckpointCallback(
        max(args.checkpoint_freq // args.n_envs, 1),
        str(run_dir / "checkpoints"),
        name_prefix=args.algo,
    )
    t0 = time.perf_counter()
    model.learn(
        args.timesteps,
        callback=CallbackList([ckpt, evaluator]),
        tb_log_name=run,
        progress_bar=args.progress and progress_enabled(),
    )
    wall = time.perf_counter() - t0
    venv.close()
    final = evaluator.evaluate(model)
    meta.update(
        timesteps=int(model.num_timesteps),
        wall_seconds=round(wall, 1),
        steps_per_second=round(model.num_timesteps / wall, 1),
        final_eval=final,
        best_eval=evaluator.best,
    )
    saved = save_policy(model, save, meta)
    if args.verbose:
        print(json.dumps({k: meta[k] for k in ("timesteps", "wall_seconds", "final_eval")},
                         indent=1))
    else:
        print(summary(meta, saved))
    return meta


def summary(meta: dict, saved: str | Path) -> str:
    """The few lines ``looptune train`` prints at the end (``--verbose``: the full JSON)."""
    final = meta.get("final_eval") or {}
    lines = [
        f"trained {meta['algo']} for {meta['timesteps']} timesteps in "
        f"{meta['wall_seconds']:.1f} s ({meta['steps_per_second']:.0f} steps/s)",
    ]
    if final.get("n"):
        lines.append(
            f"held-out evaluation ({final['n']} benchmarks): geomean "
            f"{final['geomean_agent_gflops']:.1f} GFLOP/s, {final['geomean_speedup']:.2f}x "
            f"over the base schedules"
        )
    best = meta.get("best_eval")
    if best:
        lines.append(
            f"best evaluation: {best['geomean_agent_gflops']:.1f} GFLOP/s at "
            f"{best['timesteps']} timesteps"
        )
    weights = Path(saved)
    lines.append(f"saved {weights} and {weights.with_suffix('.json')} (details: --verbose)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
