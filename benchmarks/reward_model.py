"""Accuracy of the environment's cost-model reward mode (issue 11): how well a learned
``tree -> GFLOP/s`` predictor ranks env states against full measurements, and what it saves.

    flock /tmp/looptune-bench.lock python benchmarks/reward_model.py [--states 300]

States are collected the way training visits them: masked random walks of the paper's actions
from the base schedules of `mm64_256_16` train benchmarks. Each distinct state is measured (the
env's default budget); the predictor (`looptune.costmodel.predictor`) is trained on the states
of the first benchmarks and scored on held-out benchmarks' states: Spearman rank correlation of
predicted against measured GFLOP/s, and of predicted against measured rewards (differences of
consecutive states). Writes benchmarks/results/reward_model.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import strip_openblas_env  # noqa: E402

strip_openblas_env()

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _bench import cpp_timing, environment, write_json  # noqa: E402

import looptune  # noqa: E402
from looptune import datasets  # noqa: E402
from looptune.costmodel import predictor, spearman  # noqa: E402
from looptune.measure import Measurer  # noqa: E402
from looptune.report.tables import format_table  # noqa: E402
from looptune.space import ScheduleSpace  # noqa: E402


def walks(bench: datasets.Benchmark, space: ScheduleSpace, rng, n_walks: int, steps: int):
    """Consecutive state pairs of masked random walks (what a training episode visits)."""
    pairs = []
    for _ in range(n_walks):
        tree = bench.default_schedule()
        for _ in range(steps):
            legal = np.flatnonzero(space.mask(tree))
            nxt = space.apply(tree, space.actions[int(rng.choice(legal))])
            pairs.append((tree, nxt))
            tree = nxt
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmarks", type=int, default=12, help="benchmarks (2/3 train, 1/3 test)")
    ap.add_argument("--walks", type=int, default=6, help="random walks per benchmark")
    ap.add_argument("--steps", type=int, default=10, help="steps per walk")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    benches = datasets.get("mm64_256_16", "train")
    picked = [benches[int(i)] for i in rng.choice(len(benches), args.benchmarks, replace=False)]
    space, measurer = ScheduleSpace("paper"), Measurer()
    n_train = (2 * len(picked)) // 3
    split = {"train": picked[:n_train], "test": picked[n_train:]}
    data = {}
    t_measure = 0.0
    for part, bs in split.items():
        pairs = [p for b in bs for p in walks(b, space, rng, args.walks, args.steps)]
        t0 = time.perf_counter()
        g = {t.hash(): (t, measurer.gflops(t)) for pair in pairs for t in pair}
        t_measure += time.perf_counter() - t0
        data[part] = (pairs, g)
    train_states = list(data["train"][1].values())
    t0 = time.perf_counter()
    isa = looptune.host_isa()
    model = predictor([t for t, _ in train_states], [v for _, v in train_states], isa)
    fit_s = time.perf_counter() - t0
    pairs, g = data["test"]
    states = list(g.values())
    t0 = time.perf_counter()
    pred = {h: model(t) for h, (t, _) in g.items()}
    predict_s = (time.perf_counter() - t0) / len(g)
    moves = [(a, b) for a, b in pairs if a.hash() != b.hash()]
    out = {
        "environment": environment(timing=cpp_timing(
            "the cost model is judged against the measurer the tuners use")),
        "train_states": len(train_states),
        "test_states": len(states),
        "test_moves": len(moves),
        "spearman_gflops": spearman([pred[t.hash()] for t, _ in states], [v for _, v in states]),
        "spearman_reward": spearman(
            [pred[b.hash()] - pred[a.hash()] for a, b in moves],
            [g[b.hash()][1] - g[a.hash()][1] for a, b in moves],
        ),
        "fit_seconds": fit_s,
        "predict_ms_per_state": 1e3 * predict_s,
        "measure_ms_per_state": 1e3 * t_measure / sum(len(d[1]) for d in data.values()),
    }
    rows = [{"q": k, "v": v} for k, v in out.items() if k != "environment"]
    print(format_table(rows, [("q", "quantity", "s"), ("v", "value", lambda v: f"{v:.3g}")]))
    write_json("reward_model", out)


if __name__ == "__main__":
    main()
