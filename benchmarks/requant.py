"""The int8 'requant' epilogue (issue 25) against the separate pass it replaces, on an FFN-sized
GEMM (BERT-base's first FFN matmul: 128 x 768 x 3072):

    flock /tmp/looptune-bench.lock python benchmarks/requant.py [--threads 1] [--tune]

* ``requant``: ``kernel(a_u8, b_s8, out_u8, scale=, bias=, out_scale=, out_zero_point=)`` of
  ``scale+bias+relu+requant`` (uint8 out);
* ``f32 + quantize_u8``: the same schedule of ``scale+bias+relu`` (float32 out), then
  ``looptune.quantize_u8(y, out_scale, zero_point, out=q)``;
* ``f32 only``: that kernel alone (the float32 output the requant step starts from).

The schedule: the computation's default one, or with ``--tune`` the shipped agent's (tuned on
``scale+bias+relu``; the requant kernel runs the same loop nest). Each call is timed by
``looptune.measure.harness.time_call`` (best batch). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import looptune
from looptune.measure import Measurer, harness
from looptune.search.agent import agent_search


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tune", action="store_true")
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--shape", default="128,768,3072")
    p.add_argument("--isa", default=None, help="avx512 | avx2 (default: the best here)")
    args = p.parse_args()
    m, k, n = (int(x) for x in args.shape.split(","))
    looptune.set_num_threads(args.threads)
    chain = looptune.matmul(m, k, n, dtype="int8", epilogue="scale+bias+relu")
    tree = chain.default_schedule()
    if args.tune:
        measurer = Measurer(isa=args.isa, min_time=0.005, min_runs=1, threads=args.threads,
                            cache={})
        tree = agent_search(tree, measurer).best_tree
    head, rest = tree.dump().split("\n", 1)
    rtree = looptune.LoopTree.parse(head + "+requant\n" + rest)
    kf, kr = tree.compile(args.isa), rtree.compile(args.isa)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    scale = rng.uniform(1e-5, 1e-4, n).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    y = np.empty((m, n), np.float32)
    q = np.empty((m, n), np.uint8)
    q2 = np.empty((m, n), np.uint8)
    s, z = 0.02, 3
    kf.set_constant(b, bias=bias, scale=scale)
    kr.set_constant(b, bias=bias, scale=scale, out_scale=s, out_zero_point=z)

    def two_step():
        kf(a, None, y)
        looptune.quantize_u8(y, s, z, out=q)

    calls = {
        "requant": lambda: kr(a, None, q2),
        "f32 + quantize_u8": two_step,
        "f32 only": lambda: kf(a, None, y),
    }
    res = {name: harness.time_call(fn, args.min_time)[0] * 1e6 for name, fn in calls.items()}
    two_step()
    kr(a, None, q2)
    assert np.array_equal(q, q2)
    print(json.dumps({
        "shape": [m, k, n], "threads": args.threads, "tuned": args.tune,
        "isa": kr.isa, "int8_path": kr.facts["int8_path"],
        "chain_fused_in_f32_kernel": kf.facts["epilogue_fused"],
        "requant_fused": kr.facts["epilogue_fused"],
        "us": {k_: round(v, 1) for k_, v in res.items()},
        "requant_vs_two_step": round(res["f32 + quantize_u8"] / res["requant"], 3),
    }))


if __name__ == "__main__":
    main()
