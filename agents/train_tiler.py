"""Train the tiling agent's scorer from scaled-down measurements (``agents/tiler_data.py``).

    python agents/train_tiler.py --data runs/tiler/data.jsonl \
        --save python/looptune/data/policy_tiler_avx512.safetensors [--check runs/tiler/check.json]

Imitation of the measured expert, listwise: for each training computation and thread count
(``--threads`` of tiler_data.py: the serial macros and, at T > 1, the parallel variants) the
target is a
softmax over its macros of log(GFLOP/s / best GFLOP/s) / ``--temperature`` (measured on the
scaled instance), and the network's softmax over the same macros is fitted to it by
cross-entropy. A fixed 15% of the computations (by seed, with their groups at every T) is held
out to report how often the top-scored macro is the measured best, its GFLOP/s relative to the
best (top-1, top-3) and, at T > 1, how often the top-scored one is parallel exactly when the
measured best is (per thread count).
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
from looptune.agent.tile_features import V1_FEATURES, tile_features
from looptune.agent.tiler_policy import TilerPolicy, build_network, save_tiler

HIDDEN = [128, 64]
PARALLEL_COLUMN = V1_FEATURES + 1  # thread_features: 1.0 when a loop is parallel


def load_groups(path: Path, isa: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(computation header and thread count, features (n, F), GFLOP/s (n,)) per computation of
    the data file, kind of CPU that measured it (rows of two CPU signatures never share a
    group) and thread count T: the group at T holds the serial macros (timed at one thread,
    which is how they run at any T) and the parallel variants timed at T, with their features
    at T (the partition ones from the timed scaled-down tree)."""
    rows: dict[tuple[str, str], dict[int, list[tuple[str, str | None, float]]]] = \
        defaultdict(lambda: defaultdict(list))
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("isa", isa) == isa:
            key = r["comp"], r.get("cpu_signature") or ""
            rows[key][int(r.get("threads", 1))].append(
                (r["tree"], r.get("small_tree"), float(r["gflops"])))
    groups = []
    for (comp, _), by_t in sorted(rows.items()):
        serial = by_t.get(1, [])
        for t in sorted(by_t):
            items = serial if t == 1 else serial + by_t[t]
            g = np.array([x[2] for x in items], np.float32)
            if len(g) == 0 or g.max() <= 0:
                continue
            x = np.stack([
                tile_features(looptune.LoopTree.parse(tree), isa, t,
                              looptune.LoopTree.parse(small) if small else None)
                for tree, small, _ in items])
            groups.append((f"{comp} threads={t}", x, g))
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

    top1, top3, hits, rhos, decisions = [], [], 0, [], []
    for _, x, g in groups:
        with torch.no_grad():
            s = net(torch.from_numpy(x)).squeeze(-1).numpy()
        order = np.argsort(-s)
        par = (x[:, PARALLEL_COLUMN] > 0.5 if x.shape[1] > PARALLEL_COLUMN
               else np.zeros(len(g), bool))  # a version 1 scorer's features: all serial
        if par.any() and not par.all():  # serial or parallel: does the top-1 choose right?
            decisions.append(bool(par[order[0]]) == bool(par[int(np.argmax(g))]))
        top1.append(g[order[0]] / g.max())
        top3.append(g[order[:3]].max() / g.max())
        hits += int(g[order[0]] == g.max())
        if len(g) > 2:
            rhos.append(spearman(s, g))
    return {"n": len(groups), "top1_hit": hits / max(len(groups), 1),
            "top1_rel_gflops": float(np.mean(top1)), "top3_rel_gflops": float(np.mean(top3)),
            "spearman_mean": float(np.mean(rhos)) if rhos else None,
            "parallel_decision_hit": float(np.mean(decisions)) if decisions else None}


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
    # held out by computation (its groups at every T together)
    comps = sorted({c.rsplit(" threads=", 1)[0] for c, _, _ in groups})
    perm = np.random.default_rng(args.seed).permutation(len(comps))
    held = {comps[i] for i in perm[:max(1, round(0.15 * len(comps)))]}
    val = [gr for gr in groups if gr[0].rsplit(" threads=", 1)[0] in held]
    train = [gr for gr in groups if gr[0].rsplit(" threads=", 1)[0] not in held]
    net = fit(train, args.epochs, args.lr, args.temperature, args.seed)
    wall = time.perf_counter() - t0
    report = {}
    for name, part in (("train", train), ("validation", val)):
        report[name] = evaluate(net, part)
        for t in sorted({c.rsplit("=", 1)[1] for c, _, _ in part}):
            report[name][f"threads={t}"] = evaluate(
                net, [gr for gr in part if gr[0].endswith(f" threads={t}")])
    print(json.dumps(report, indent=1), file=sys.stderr)
    meta = {
        "kind": "tiler",
        "hidden": HIDDEN,
        "command": "python " + " ".join(sys.argv),
        "data": {"file": args.data, "computations": len(groups),
                 "macros": int(sum(len(g) for _, _, g in groups)),
                 "threads": sorted({int(c.rsplit("=", 1)[1]) for c, _, _ in groups}),
                 "datasets": "train splits of mm_real, bmm_real (every 2nd), conv2d_cnn "
                             "(every 2nd), 16 large packed matmuls (large_matmuls, seed 1212) "
                             "and 24 narrow-n matmuls with B transposed (narrow_matmuls, seed "
                             "1213), drawn by rule with mm_real test shapes skipped; "
                             "agents/tiler_data.py"},
        "reward": "GFLOP/s measured on scaled-down instances "
        "(looptune.agent.tiler.scaled, <= 6.4e7 "
                  "flops, at least 256 matmul rows): same loops, fewer output rows / batches / "
                  "lines; parallel variants timed at T threads on the same instance (one group "
                  "per computation and T: the serial macros and the variants)",
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
