"""Behaviour cloning: pretrain a policy on action sequences found by a measured beam search.

    python agents/imitation.py --benchmarks 400 --save runs/bc/policy
    looptune train --init runs/bc/policy.safetensors ...   # then fine-tune with RL

The expert searches schedules in "macro steps" (move the cursor, then apply one
schedule-changing action) with a beam of measured states, counting every raw env action
(cursor moves included) against the episode length, so each expert path is an action sequence
the env can replay within one episode. The policy (an SB3 model of the chosen algorithm) is
then trained to predict each expert action from the env observation, with illegal actions
masked, and its value head to predict the GFLOP/s still to gain (as a fraction of peak).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from looptune.report.tables import dumps, geomean
from looptune.util.fileio import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))

CURSOR = ("up", "down")


def expert_path(tree, actions, max_steps: int, max_loops: int, measurer, width: int = 4):
    """Best (gflops, [action names]) reachable within ``max_steps`` raw actions (beam search)."""
    from looptune.space import ScheduleSpace, at_cursor

    space = ScheduleSpace(actions, max_loops)
    mutations = [a for a in actions if a not in CURSOR]
    g0 = measurer.gflops(tree)
    best, beam, seen = (g0, []), [(g0, tree, [])], {tree.hash()}
    while beam:
        cands = []
        for _, t, path in beam:
            for pos in range(t.depth):
                moves = ["down" if pos > t.cursor else "up"] * abs(pos - t.cursor)
                if len(path) + len(moves) + 1 > max_steps:
                    continue
                tc = at_cursor(t, pos)
                for a, nt in space.successors(tc, mutations):
                    if nt.hash() in seen:
                        continue
                    seen.add(nt.hash())
                    cands.append((measurer.gflops(nt), nt, path + moves + [a]))
        cands.sort(key=lambda c: -c[0])
        beam = cands[:width]
        if beam and beam[0][0] > best[0]:
            best = (beam[0][0], beam[0][2])
    return best


def template_paths(tree, actions, max_steps: int) -> list[list[str]]:
    """Register-tiling action sequences for a 3-loop (m, k, n) nest, most preferred first.

    ``split m by fm, split n by fn, reorder to m_o n_o k m_i n_i`` (9 actions), and the
    shorter ``m n_o k n_i`` (4 actions). Domain knowledge the beam alone finds too rarely.
    """
    if tree.depth != 3:
        return []
    factors = sorted((int(a[6:]) for a in actions if a.startswith("split_")), reverse=True)
    paths = [
        [
            f"split_{fm}",
            "down",
            "down",
            "down",
            f"split_{fn}",
            "swap_up",
            "swap_up",
            "down",
            "swap_down",
        ]
        for fn in factors
        for fm in factors
    ]
    paths += [["down", "down", f"split_{fn}", "swap_up"] for fn in factors]
    return [p for p in paths if len(p) <= max_steps and all(a in actions for a in p)]


def replay(tree, path: list[str], space=None):
    """The tree after ``path``, or None if an action is illegal on the way (in ``space``, whose
    depth cap applies, when given)."""
    for a in path:
        tree = tree.try_apply(a) if space is None else space.try_apply(tree, a)
        if tree is None:
            return None
    return tree


def expert(
    tree, actions, max_steps: int, max_loops: int, measurer, width: int = 2, margin: float = 0.02
):
    """The best of the tiling templates and the beam; a later candidate must win by ``margin``
    (measurement noise must not make the demonstrations inconsistent)."""
    from looptune.space import ScheduleSpace

    space = ScheduleSpace(actions, max_loops)
    best_g, best_p = measurer.gflops(tree), []
    for path in template_paths(tree, actions, max_steps):
        end = replay(tree, path, space)
        if end is not None:
            g = measurer.gflops(end)
            if g > best_g * (1 + margin):
                best_g, best_p = g, path
    if width > 0:
        g, path = expert_path(tree, actions, max_steps, max_loops, measurer, width)
        if g > best_g * (1 + margin):
            best_g, best_p = g, path
    return best_g, best_p


def demos_for(job: tuple) -> dict:
    """Expert demonstration of one benchmark: observations, masks, actions, value targets."""
    name, spec, width = job
    from looptune import datasets
    from looptune.measure import Measurer, peak_gflops
    from looptune.space import ScheduleSpace

    space = ScheduleSpace(spec["actions"], spec["max_loops"], spec["observation"])
    measurer = Measurer(min_time=spec.get("measure_min_time", 0.001))
    tree = datasets.find(name).default_schedule()
    best, path = expert(
        tree, space.actions, spec["episode_steps"], space.max_loops, measurer, width
    )
    obs, masks, acts, values = [], [], [], []
    peak = peak_gflops(measurer.isa)
    for a in path:
        obs.append(space.observe(tree))
        masks.append(space.mask(tree))
        acts.append(space.index(a))
        values.append((best - measurer.gflops(tree)) / peak)
        tree = space.apply(tree, a)
    return {
        "benchmark": name,
        "obs": obs,
        "masks": masks,
        "actions": acts,
        "values": values,
        "base_gflops": measurer.gflops(datasets.find(name).default_schedule()),
        "expert_gflops": best,
        "path": path,
    }


def collect(names: list[str], spec: dict, width: int, workers: int) -> list[dict]:
    from tqdm import tqdm

    jobs = [(n, spec, width) for n in names]
    with get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(demos_for, jobs), total=len(jobs), desc="expert"))


def clone(model, demos: list[dict], epochs: int, lr: float, batch: int, seed: int) -> list:
    """Fit the policy (cross-entropy on expert actions) and value head (MSE) in place."""
    import torch

    obs = torch.as_tensor(np.array([o for d in demos for o in d["obs"]]), dtype=torch.float32)
    acts = torch.as_tensor([a for d in demos for a in d["actions"]])
    masks = np.array([m for d in demos for m in d["masks"]])
    vals = torch.as_tensor([v for d in demos for v in d["values"]], dtype=torch.float32)
    policy = model.policy
    policy.set_training_mode(True)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        perm, total = torch.randperm(len(acts), generator=gen), 0.0
        for i in range(0, len(acts), batch):
            idx = perm[i : i + batch]
            kw = {"action_masks": masks[idx.numpy()]} if "Maskable" in type(policy).__name__ else {}
            v, logp, _ = policy.evaluate_actions(obs[idx], acts[idx], **kw)
            loss = -logp.mean() + 0.5 * ((v.flatten() - vals[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append({"loss": total / len(acts), "accuracy": accuracy(model, obs, acts, masks)})
    policy.set_training_mode(False)
    return history


def accuracy(model, obs, acts, masks) -> float:
    """Share of expert actions that are the policy's masked argmax."""
    import torch

    with torch.no_grad():
        logits = model.policy.get_distribution(obs).distribution.logits.numpy()
    pred = np.where(masks, logits, -np.inf).argmax(axis=1)
    return float((pred == acts.numpy()).mean())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=("maskable_ppo", "ppo"), default="maskable_ppo")
    p.add_argument("--env-id", default="LoopTune-v0")
    p.add_argument("--env-kwargs", default="{}", help="JSON dict passed to gym.make")
    p.add_argument("--dataset", default="mm64_256_16")
    p.add_argument("--benchmarks", type=int, default=300, help="train benchmarks to demonstrate")
    p.add_argument("--width", type=int, default=2, help="expert beam width (0: templates only)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--net-arch", default="256,256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--demos", default=None, help="reuse/write expert demos at this JSON path")
    p.add_argument("--save", required=True)
    args = p.parse_args(argv)
    try:
        args.env_kwargs = json.loads(args.env_kwargs)
        args.net_arch = [int(x) for x in args.net_arch.split(",") if x.strip()]
    except ValueError as e:
        p.error(str(e))
    if args.benchmarks < 1 or args.width < 0 or args.workers < 1 or args.epochs < 1:
        p.error("--benchmarks, --width, --workers and --epochs must be positive")
    return args


def load_or_collect(args: argparse.Namespace, spec: dict) -> list[dict]:
    from looptune import datasets

    if args.demos and Path(args.demos).is_file():
        return json.loads(Path(args.demos).read_text())
    train = datasets.get(args.dataset, "train")
    picked = np.random.default_rng(args.seed).permutation(len(train))[: args.benchmarks]
    demos = collect([train[i].name for i in sorted(picked)], spec, args.width, args.workers)
    if args.demos:
        Path(args.demos).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.demos, dumps(demos, indent=None))
    return demos


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import gymnasium as gym
    import torch
    from callbacks import save_policy
    from train import command_line

    import looptune  # noqa: F401
    from looptune.agent.policy import algo_class, env_spec

    torch.manual_seed(args.seed)
    kwargs = {"dataset": args.dataset, "split": "train", **args.env_kwargs}
    spec = env_spec(args.env_id, kwargs)
    if spec["observation"] != "box":
        raise SystemExit("imitation.py supports the flat Box observation only")
    t0 = time.perf_counter()
    demos = load_or_collect(args, spec)
    t_demo = time.perf_counter() - t0
    model = algo_class(args.algo)(
        "MlpPolicy",
        gym.make(args.env_id, **kwargs),
        seed=args.seed,
        device="cpu",
        policy_kwargs={"net_arch": args.net_arch},
    )
    history = clone(model, demos, args.epochs, args.lr, args.batch_size, args.seed)
    gains = [d["expert_gflops"] / d["base_gflops"] for d in demos]
    meta = {
        "algo": args.algo,
        "env_id": args.env_id,
        "env_kwargs": kwargs,
        "seed": args.seed,
        **spec,
        "command": command_line(argv).replace("-m looptune.agent.train", "agents/imitation.py"),
        "imitation": {
            "benchmarks": len(demos),
            "steps": sum(len(d["actions"]) for d in demos),
            "expert_geomean_speedup": geomean(gains),
            "expert_seconds": round(t_demo, 1),
            "final": history[-1],
            "epochs": args.epochs,
        },
    }
    save_policy(model, Path(args.save), meta)
    print(json.dumps(meta["imitation"], indent=1))
    return meta


if __name__ == "__main__":
    main()
