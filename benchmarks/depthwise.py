"""Depthwise conv2d (MobileNetV2's 3x3 layers and a few invented shapes): looptune's agent
search against ``torch.nn.functional.conv2d(groups=C)``, one thread, batch 1.

    flock /tmp/looptune-bench.lock python benchmarks/depthwise.py [--json out.json]

For each shape: the agent's best schedule for the host ISA (``layout="auto"``: channel-blocked
input, weights and output), timed with the engine's harness including the relayout copies
(NCHW in and out, weights packed once with ``set_constant``), against torch's: both are the best
wall time of one Python call out of 100. ``in place``: the same schedule reading its input
already in its kernel layout (channel-blocked, zero border of the padding) from the buffer its
producer wrote it to, as in a compiled model with layout propagation (``looptune.model.layout``;
the buffer view of ``LoopTree.compile(in_view=)``): no input copy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import looptune
from looptune.fuzz import nchw_to_view
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


def best_call(fn, reps: int = 100) -> float:
    """Best wall time of one Python call of ``fn`` (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_seconds(c: int, h: int, w: int, stride: int) -> float:
    x = torch.randn(1, c, h, w)
    wt = torch.randn(c, 1, 3, 3)
    f = torch.nn.functional.conv2d
    with torch.no_grad():
        return best_call(lambda: f(x, wt, stride=stride, padding=1, groups=c))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    search = get("agent")
    rows = []
    print(f"{'shape':>22} {'looptune us':>12} {'in place us':>12} {'torch us':>10} "
          f"{'speedup':>8} {'in place':>9}")
    for c, h, w, stride in SHAPES:
        comp = looptune.conv2d(1, c, h, w, c, 3, 3, stride=stride, pad=1, groups=c)
        res = search(comp.default_schedule())
        kernel = res.best_tree.compile()
        x = np.random.default_rng(0).standard_normal((1, c, h, w), np.float32)
        kernel.set_constant(np.random.default_rng(1).standard_normal((c, 1, 3, 3), np.float32))
        out = np.empty(comp.output.shape, np.float32)
        ours = best_call(lambda: kernel(x, out=out))  # a Python call, as torch's is
        block = comp.block if len(comp.inputs[0].alloc_shape) == 5 else 0
        xb = nchw_to_view(x, 1, block)
        view = res.best_tree.compile(in_view=(xb.shape, (0,) * xb.ndim))
        view.set_constant(np.random.default_rng(1).standard_normal((c, 1, 3, 3), np.float32))
        inplace = best_call(lambda: view(xb, out=out))
        theirs = torch_seconds(c, h, w, stride)
        rows.append({"c": c, "h": h, "w": w, "stride": stride, "header": comp.header(),
                     "looptune_s": ours, "inplace_s": inplace, "torch_s": theirs,
                     "speedup": theirs / ours, "inplace_speedup": theirs / inplace})
        print(f"{c:>4}x{h}x{w} s{stride:<9} {ours * 1e6:12.1f} {inplace * 1e6:12.1f} "
              f"{theirs * 1e6:10.1f} {theirs / ours:8.2f} {theirs / inplace:9.2f}")
    geo = float(np.exp(np.mean([np.log(r["speedup"]) for r in rows])))
    geo_in = float(np.exp(np.mean([np.log(r["inplace_speedup"]) for r in rows])))
    print(f"geomean speedup over torch: {geo:.2f}x (input in place: {geo_in:.2f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "geomean_speedup": geo,
                       "inplace_geomean_speedup": geo_in, "threads": 1,
                       "isa": looptune.host_isa(), "cpu": looptune.cpu_name()}, fh, indent=1)


if __name__ == "__main__":
    main()
