"""Strided operands (``compile(strides=...)``) on the BERT-base attention batched matmuls.

    flock /tmp/looptune-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/strided.py [--threads 1,2] [--min-time 0.2]

The two attention bmm's of a BERT-base layer (12 heads, 128 tokens, head size 64) as the
model feeds them, torch views of the [128, 768] projections:

* scores: q [12,128,64] (element strides (64, 768, 1)) @ k^T [12,64,128] (strides (64, 1, 768))
  -> [12,128,128] dense: q read in place, k^T packed by the kernel (its vector dim is strided);
* context: p [12,128,128] dense @ v [12,128,64] (strides (64, 768, 1)) -> the context wanted as
  [128, 768] (the output view [12,128,64] with strides (64, 768, 1)): v and the output in
  place.

At each thread count T the agent tunes the contiguous computation (``agent_search`` with a
``Measurer(min_time=0.005, min_runs=1, threads=T, cache={})``), and its best tree is timed
three ways from Python (best of batches, ``looptune.measure.harness.best_seconds``):
``strided`` (compiled with the views' strides, called on the views), ``contiguous`` (the
views copied by torch's ``.contiguous()``, the contiguous kernel, and for the context the copy
of the result into the [128, 768] layout, as ``looptune.model.runtime`` does today) and
``torch`` (``torch.matmul`` on the same views; for the context, plus its
``transpose(1, 2).reshape`` into [128, 768], the model's own code); and, for reference,
``dense``: the contiguous kernel alone on inputs copied beforehand (the strided kernel's
overhead over it is its call-time packing). Every result is checked against ``torch.matmul``
first. Each op waits (up to 2 min) until the host's cores are idle (``idle_before``): a
process running outside the bench lock turns the 2-thread figures (torch's OpenMP copies
above all) into noise.

Writes benchmarks/results/strided.json (CPU, ISA, per op and thread count the three times,
the ratios and the kernel's ``facts['access']``) and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import environment, strip_openblas_env, write_json

strip_openblas_env()

import argparse

import numpy as np
import torch
from threads import wait_for_idle  # (benchmarks/threads.py)

import looptune
from looptune.measure import Measurer
from looptune.measure.harness import best_seconds, thread_limit
from looptune.search.agent import agent_search

H, S, D = 12, 128, 64  # heads, tokens, head size


def elem_strides(x: np.ndarray) -> tuple[int, ...]:
    return tuple(s // x.itemsize for s in x.strides)


def operands(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    proj = [torch.randn(1, S, H * D, generator=g) for _ in range(3)]
    q, k, v = (x.view(1, S, H, D).transpose(1, 2) for x in proj)  # [1, 12, 128, 64] views
    p = torch.softmax(torch.randn(1, H, S, S, generator=g), dim=-1)
    return {"q": q, "kt": k.transpose(-2, -1), "v": v, "p": p}


def tuned(comp: looptune.Computation, threads: int) -> looptune.LoopTree:
    measurer = Measurer(min_time=0.005, min_runs=1, threads=threads, cache={})
    return agent_search(comp.default_schedule(), measurer).best_tree


def bench_scores(ops: dict, threads: int, min_time: float) -> dict:
    comp = looptune.batch_matmul(H, S, D, S)
    tree = tuned(comp, threads)
    q, kt = ops["q"][0].numpy(), ops["kt"][0].numpy()
    strided = tree.compile(strides={"in0": elem_strides(q), "in1": elem_strides(kt)})
    plain = tree.compile()
    out = np.empty((H, S, S), np.float32)
    want = torch.matmul(ops["q"], ops["kt"])[0].numpy()
    np.testing.assert_allclose(strided(q, kt, out), want, rtol=1e-4, atol=1e-4)

    def contiguous() -> None:
        plain(ops["q"].contiguous().numpy()[0], ops["kt"].contiguous().numpy()[0], out)

    contiguous()
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    qc, ktc = np.ascontiguousarray(q), np.ascontiguousarray(kt)
    return {
        "strided": best_seconds(lambda: strided(q, kt, out), min_time),
        "dense": best_seconds(lambda: plain(qc, ktc, out), min_time),
        "contiguous": best_seconds(contiguous, min_time),
        "torch": best_seconds(lambda: torch.matmul(ops["q"], ops["kt"]), min_time),
        "access": strided.facts["access"],
        "tree": tree.dump(),
    }


def bench_context(ops: dict, threads: int, min_time: float) -> dict:
    comp = looptune.batch_matmul(H, S, S, D)
    tree = tuned(comp, threads)
    p, v = ops["p"][0].numpy(), ops["v"][0].numpy()
    ctx = torch.empty(1, S, H * D)
    view = ctx[0].numpy().reshape(S, H, D).transpose(1, 0, 2)  # [12, 128, 64] into ctx
    strided = tree.compile(strides={"in1": elem_strides(v), "out": elem_strides(view)})
    plain = tree.compile()
    tmp = np.empty((H, S, D), np.float32)
    want = torch.matmul(ops["p"], ops["v"]).transpose(1, 2).reshape(1, S, H * D)
    strided(p, v, view)
    np.testing.assert_allclose(ctx.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)

    def contiguous() -> None:
        plain(p, ops["v"].contiguous().numpy()[0], tmp)
        torch.from_numpy(tmp).unsqueeze(0).transpose(1, 2).reshape(1, S, H * D)

    def eager() -> None:
        torch.matmul(ops["p"], ops["v"]).transpose(1, 2).reshape(1, S, H * D)

    vc = np.ascontiguousarray(v)
    return {
        "strided": best_seconds(lambda: strided(p, v, view), min_time),
        "dense": best_seconds(lambda: plain(p, vc, tmp), min_time),
        "contiguous": best_seconds(contiguous, min_time),
        "torch": best_seconds(eager, min_time),
        "access": strided.facts["access"],
        "tree": tree.dump(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per entry")
    args = ap.parse_args()
    ops = operands()
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        with thread_limit(threads):
            for name, fn in (("scores q@k^T 12x128x64x128", bench_scores),
                             ("context p@v 12x128x128x64", bench_context)):
                idle = wait_for_idle()
                r = fn(ops, threads, args.min_time)
                r.update(op=name, threads=threads, idle_before=round(idle, 3),
                         vs_contiguous=r["contiguous"] / r["strided"],
                         vs_torch=r["torch"] / r["strided"])
                rows.append(r)
    print(f"{'op':28} {'T':>2} {'strided us':>10} {'contig us':>10} {'torch us':>9} "
          f"{'dense us':>9} {'x contig':>8} {'x torch':>8}  access")
    for r in rows:
        acc = ",".join(f"{k}={v}" for k, v in r["access"].items() if v != "dense")
        print(f"{r['op']:28} {r['threads']:>2} {r['strided'] * 1e6:10.1f} "
              f"{r['contiguous'] * 1e6:10.1f} {r['torch'] * 1e6:9.1f} {r['dense'] * 1e6:9.1f} "
              f"{r['vs_contiguous']:8.2f} {r['vs_torch']:8.2f}  {acc}")
    path = write_json("strided", {"environment": environment(peak=False), "rows": rows,
                                  "isa": looptune.host_isa()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
