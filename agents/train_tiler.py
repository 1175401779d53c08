"""Train the tiling agent's scorer from scaled-down measurements (``agents/tiler_data.py``).

    python agents/train_tiler.py --data runs/tiler/data.jsonl \
        --save python/looptune/data/policy_tiler_avx512.safetensors [--check runs/tiler/check.json]

Imitation of the measured expert, listwise: for each training computation the target is a
softmax over its macros of log(GFLOP/s / best GFLOP/s) / ``--temperature`` (measured on the
scaled instance), and the network's softmax over the same macros is fitted to it by
cross-entropy. A fixed 15% of the computations (by seed) is held out to report how often the
top-scored macro is the measured best and its GFLOP/s relative to the best (top-1, top-3).
Deterministic for a seed (torch on one thread). ``--check`` adds the rank correlations of the
cheap reward against full-size measurements (``agents/tiler_check.py``) to the provenance.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import looptune
from looptune.agent.tile_features import tile_features
from looptune.agent.tiler_policy import TilerPolicy, build_network, save_tiler

HIDDEN = [128, 64]


def load_groups(path: Path, isa: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(computation header, features (n, F), GFLOP/s (n,)) per computation of the data file
    and kind of CPU that measured it (rows of two CPU signatures never share a group)."""
    rows: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("isa", isa) == isa:
            rows[r["comp"], r.get("cpu_signature") or ""].append((r["tree"], float(r["gflops"])))
    groups = []
    for (comp, _), items in sorted(rows.items()):
        g = np.array([x[1] for x in items], np.float32)
        if g.max() <= 0:
            continue
        x = np.stack([tile_features(looptune.LoopTree.parse(t), isa) for t, _ in items])
        groups.append((comp, x, g))
    return groups


def _targets(g: np.ndarray, temperature: float) -> np.ndarray:
    rel = np.log(np.maximum(g, 1e-3 * g.max()) / g.max()) / temperature
    p = np.exp(rel - rel.max())
    return p / p.sum()


def fit(groups: list, epochs: int, lr: float, temperature: float, seed: int) -> object:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    net = build_network(HIDDEN)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
    data = [(torch.from_numpy(x), torch.from_numpy(_targets(g, temperature))) for _, x, g in groups]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for i in rng.permutation(len(data)):
            x, p = data[i]
            logp = torch.log_softmax(net(x).squeeze(-1), 0)
            loss = -(p * logp).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


def evaluate(net: object, groups: list) -> dict:
    """Top-1 hit rate and mean GFLOP/s of the top-1 / best-of-top-3 relative to the best."""
    import torch

    from looptune.costmodel.predictor import spearman

    top1, top3, hits, rhos = [], [], 0, []
    for _, x, g in groups:
        with torch.no_grad():
            s = net(torch.from_numpy(x)).squeeze(-1).numpy()
        order = np.argsort(-s)
        top1.append(g[order[0]] / g.max())
        top3.append(g[order[:3]].max() / g.max())
        hits += int(g[order[0]] == g.max())
        if len(g) > 2:
            rhos.append(spearman(s, g))
    return {"n": len(groups), "top1_hit": hits / max(len(groups), 1),
            "top1_rel_gflops": float(np.mean(top1)), "top3_rel_gflops": float(np.mean(top3)),
            "spearman_mean": float(np.mean(rhos)) if rhos else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="runs/tiler/data.jsonl")
    p.add_argument("--save", required=True)
    p.add_argument("--isa", default=None)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", default=None, help="JSON of agents/tiler_check.py to record")
    args = p.parse_args()
    isa = args.isa or looptune.host_isa()
    t0 = time.perf_counter()
    groups = load_groups(Path(args.data), isa)
    perm = np.random.default_rng(args.seed).permutation(len(groups))
    n_val = max(1, round(0.15 * len(groups)))
    val = [groups[i] for i in perm[:n_val]]
    train = [groups[i] for i in perm[n_val:]]
    net = fit(train, args.epochs, args.lr, args.temperature, args.seed)
    wall = time.perf_counter() - t0
    report = {"train": evaluate(net, train), "validation": evaluate(net, val)}
    print(json.dumps(report, indent=1), file=sys.stderr)
    meta = {
        "kind": "tiler",
        "hidden": HIDDEN,
        "command": "python " + " ".join(sys.argv),
        "data": {"file": args.data, "computations": len(groups),
                 "macros": int(sum(len(g) for _, _, g in groups)),
                 "datasets": "train splits of mm_real, bmm_real (every 2nd), conv2d_cnn "
                             "(every 2nd), 16 large packed matmuls (large_matmuls, seed 1212) "
                             "and 24 narrow-n matmuls with B transposed (narrow_matmuls, seed "
                             "1213), drawn by rule with mm_real test shapes skipped; "
                             "agents/tiler_data.py"},
        "reward": "GFLOP/s measured on scaled-down instances "
        "(looptune.agent.tiler.scaled, <= 6.4e7 "
                  "flops, at least 256 matmul rows): same loops, fewer output rows / batches / "
                  "lines",
        "training": {"epochs": args.epochs, "lr": args.lr, "temperature": args.temperature,
                     "seed": args.seed, "fit_seconds": wall},
        "evaluation": report,
        "cpu": looptune.cpu_name(),
        "cpu_signature": looptune.cpu_signature(),
        "python": platform.python_version(),
    }
    if args.check:
        meta["reward_check"] = json.loads(Path(args.check).read_text())
    policy = TilerPolicy(net, isa, {"hidden": HIDDEN})
    print(f"saved {save_tiler(policy, args.save, meta)} ({wall:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
