"""Depthwise conv2d (MobileNetV2's 3x3 layers and a few invented shapes): looptune's agent
search against ``torch.nn.functional.conv2d(groups=C)``, one thread, batch 1.

    flock /tmp/looptune-bench.lock python benchmarks/depthwise.py [--json out.json]

For each shape: the agent's best schedule for the host ISA (``layout="auto"``: channel-blocked
input, weights and output), timed with the engine's harness including the relayout copies
(NCHW in and out, weights packed once: ``prepacked``), against torch's best of repeated runs.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import looptune
from looptune.search import get

SHAPES = [  # (c, h, w, stride): 3x3, pad 1, k == c == groups
    (32, 112, 112, 1),
    (96, 112, 112, 2),
    (144, 56, 56, 1),
    (144, 56, 56, 2),
    (192, 28, 28, 1),
    (192, 28, 28, 2),
    (384, 14, 14, 1),
    (576, 14, 14, 1),
    (576, 14, 14, 2),
    (960, 7, 7, 1),
    (40, 33, 47, 1),  # invented: channels off the vector width, odd sizes
    (72, 21, 19, 2),
]


def torch_seconds(c: int, h: int, w: int, stride: int, reps: int = 50) -> float:
    x = torch.randn(1, c, h, w)
    wt = torch.randn(c, 1, 3, 3)
    f = torch.nn.functional.conv2d
    with torch.no_grad():
        for _ in range(5):
            f(x, wt, stride=stride, padding=1, groups=c)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            f(x, wt, stride=stride, padding=1, groups=c)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    search = get("agent")
    rows = []
    print(f"{'shape':>22} {'looptune us':>12} {'torch us':>10} {'speedup':>8}")
    for c, h, w, stride in SHAPES:
        comp = looptune.conv2d(1, c, h, w, c, 3, 3, stride=stride, pad=1, groups=c)
        res = search(comp.default_schedule())
        kernel = res.best_tree.compile()
        ours = kernel.benchmark(min_time=0.2, prepacked=True).min_seconds
        theirs = torch_seconds(c, h, w, stride)
        rows.append({"c": c, "h": h, "w": w, "stride": stride, "header": comp.header(),
                     "looptune_s": ours, "torch_s": theirs, "speedup": theirs / ours})
        print(f"{c:>4}x{h}x{w} s{stride:<9} {ours * 1e6:12.1f} {theirs * 1e6:10.1f} "
              f"{theirs / ours:8.2f}")
    geo = float(np.exp(np.mean([np.log(r["speedup"]) for r in rows])))
    print(f"geomean speedup over torch: {geo:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "geomean_speedup": geo, "threads": 1,
                       "isa": looptune.host_isa(), "cpu": looptune.cpu_name()}, fh, indent=1)


if __name__ == "__main__":
    main()
