"""Training data of the tiling agent: every macro of each training computation, measured on a
scaled-down instance (``looptune.agent.tiler.scaled``), appended to a JSON Lines file (resumable).

    flock /tmp/looptune-bench.lock python agents/tiler_data.py --out runs/tiler/data.jsonl \
        --max-seconds 420            # one piece under the bench lock; rerun to continue

Each line: {"dataset", "comp" (header), "small" (header), "tree" (full-size dump), "gflops"
(measured on the scaled instance; 0 for a failure), "threads"}. Only train splits are used.

``--threads 1,2`` (the default): every macro is timed serially (threads 1), then, at each
further count T, the parallel variant of every macro that has one (``tiler.parallel_variant``
of the full-size tree) is timed at T threads on the same scaled instance, with the same loop
marked (and the same re-blocked step, clipped): those rows carry "threads": T and
"small_tree", the timed tree, whose partition the thread features describe. A serial macro
runs the same at any T, so its threads-1 row serves every T (``agents/train_tiler.py`` groups
the rows by computation and T).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import looptune
from looptune import datasets
from looptune.agent import tiler
from looptune.measure import Measurer

DATASETS = (("mm_real", 1), ("bmm_real", 2), ("conv2d_cnn", 2))  # (dataset, take every k-th)
SCALED_FLOPS = 6.4e7


LARGE_SEED, LARGE_COUNT = 1212, 16  # the large packed matmul family (training only)


def large_matmuls() -> list[looptune.Computation]:
    """Large matmuls in the packed layout (B in column panels), drawn by rule: m, k, n
    log-uniform in 256..2048, 512..2048, 512..4096 by a fixed seed, half rounded to a multiple
    of 16. The real-work train splits hold only a few of them, and the scorer ranked their
    register tiles badly. Shapes of the mm_real test split are skipped (held out)."""
    rng = np.random.default_rng(LARGE_SEED)
    held = {b.computation().header() for b in datasets.get("mm_real", "test")}
    out: list[looptune.Computation] = []
    while len(out) < LARGE_COUNT:
        r16 = len(out) % 2 == 0
        dims = [_draw(rng, lo, hi, r16) for lo, hi in ((256, 2048), (512, 2048), (512, 4096))]
        comp = looptune.matmul(*dims)
        if comp.block and comp.flops <= 2 * 2048**3 and comp.header() not in held:
            out.append(comp)
    return out


NARROW_SEED, NARROW_COUNT = 1213, 24  # the narrow-n matmul family (training only)


def narrow_matmuls(lanes: int) -> list[looptune.Computation]:
    """Narrow-n matmuls, which the default layout gives a transposed B (block 1) and the
    kernel a vectorized reduction, drawn by rule: m log-uniform in 64..4096, k in
    lanes..4096, n uniform in 2..2 lanes - 1 (multiples of lanes skipped), by a fixed seed.
    The real-work train split holds only a few of them. mm_real test shapes are skipped."""
    rng = np.random.default_rng(NARROW_SEED)
    held = {b.computation().header() for b in datasets.get("mm_real", "test")}
    out: list[looptune.Computation] = []
    while len(out) < NARROW_COUNT:
        m, k = _draw(rng, 64, 4096, False), _draw(rng, lanes, 4096, False)
        n = int(rng.integers(2, 2 * lanes))
        if n % lanes == 0:
            continue
        comp = looptune.matmul(m, k, n, layout="blocked1")
        if comp.header() not in held:
            out.append(comp)
    return out


def _draw(rng: np.random.Generator, lo: int, hi: int, round16: bool) -> int:
    x = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return 16 * max(1, round(x / 16)) if round16 else x


def training_computations(isa: str) -> list[tuple[str, looptune.Computation]]:
    """(dataset, computation) of the training sample: every k-th of each train split, then
    the large packed matmul family and the narrow matmul family."""
    lanes = int(looptune._core.isa_facts(isa)["lanes"])
    return (
        [(name, b.computation()) for name, every in DATASETS
         for b in datasets.get(name, "train")[::every]]
        + [("mm_large", c) for c in large_matmuls()]
        + [("mm_narrow", c) for c in narrow_matmuls(lanes)]
    )


def measure_macros(
    comp: looptune.Computation, measurer: Measurer, isa: str, runner: object = None,
    threads: tuple[int, ...] = (1,),
) -> list[dict]:
    """Every macro of ``comp`` measured on its scaled instance (threads 1), then the parallel
    variants at each further count in ``threads`` (``threaded_rows``); with ``runner`` (a
    ``looptune.distributed.RayRunner``) the serial ones all at once, spread over its
    workers."""
    small = tiler.scaled(comp, SCALED_FLOPS)
    trees = list(tiler.candidates(comp, isa))
    smalls = [tiler.transfer(tree, small) for tree in trees]
    if runner is not None:
        gs = [r.gflops for r in runner.run_batch(smalls, isa, measurer.budget)]
    else:
        gs = [measurer.gflops(s) for s in smalls]
    rows = [{"comp": comp.header(), "small": small.header(), "tree": tree.dump(), "gflops": g,
             "threads": 1} for tree, g in zip(trees, gs)]
    for t in threads:
        if t > 1:
            rows += threaded_rows(comp, trees, small, isa, t)
    return rows


def small_variant(par: looptune.LoopTree, small: looptune.Computation) -> looptune.LoopTree:
    """``par`` (a parallel variant) rebuilt on the scaled instance with the same loop marked."""
    from looptune.space import at_cursor

    tree = tiler.transfer(par, small)
    return at_cursor(at_cursor(tree, par.parallel_loop).toggle_parallel(), 0)


def cores_free(threads: int, isa: str, need: float = 0.85, tries: int = 30) -> bool:
    """Wait (up to ``tries`` seconds) until ``threads`` threads run a kernel of equal parts at
    least ``need`` x ``threads`` as fast as one: a process outside the bench lock on the other
    core made a first collection's 2-thread rows worthless (a 1.0x 'speedup' where the layer
    scales 2.0x). False when the cores never came free."""
    from looptune.space import at_cursor
    from looptune.space.schedules import from_steps

    comp = looptune._core.parse_computation(f"matmul m={32 * threads} k=256 n=64")
    tree = from_steps(comp, [("m", 32), ("k", 256), ("m", 1), ("n", 16), ("k", 1), ("n", 1)])
    kernel = at_cursor(tree, 0).toggle_parallel().compile(isa)
    for _ in range(tries):
        one = kernel.benchmark(min_time=0.01, threads=1).min_seconds
        many = kernel.benchmark(min_time=0.01, threads=threads).min_seconds
        if one / many >= need * threads:
            return True
        time.sleep(1.0)
    return False


def threaded_rows(comp: looptune.Computation, trees: list, small: looptune.Computation,
                  isa: str, threads: int, attempts: int = 3) -> list[dict]:
    """The parallel variants of ``trees`` timed at ``threads`` threads on ``small``, with the
    cores free (``cores_free``) before and after: rows timed while they became busy are
    measured again (none after ``attempts`` tries)."""
    variants, seen = [], set()
    for tree in trees:
        par = tiler.parallel_variant(tree, threads)
        if par is None or par.hash() in seen:
            continue
        seen.add(par.hash())
        try:
            variants.append((par, small_variant(par, small)))
        except (ValueError, RuntimeError):
            continue  # the marked loop is not parallel-legal once clipped
    for _ in range(attempts):
        if not variants or not cores_free(threads, isa):
            break
        measurer = Measurer(isa=isa, min_time=0.003, min_runs=2, max_runs=20, cache={},
                            threads=threads)
        rows = [{"comp": comp.header(), "small": small.header(), "tree": par.dump(),
                 "small_tree": timed.dump(), "gflops": measurer.gflops(timed),
                 "threads": threads} for par, timed in variants]
        if cores_free(threads, isa, tries=1):
            return rows
    if variants:
        print(f"{comp.header()}: the cores stayed busy; no {threads}-thread rows",
              file=sys.stderr)
    return []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tiler/data.jsonl")
    p.add_argument("--max-seconds", type=float, default=420.0, help="stop after this long")
    p.add_argument("--isa", default=None)
    p.add_argument("--threads", default="1,2",
                   help="thread counts (comma-separated; parallel variants timed at each > 1)")
    p.add_argument("--ray", default=None, metavar="ADDR",
                   help="measure on a Ray cluster ('local' or an address; the ray extra)")
    args = p.parse_args()
    isa = args.isa or looptune.host_isa()
    threads = tuple(int(x) for x in args.threads.split(",") if x.strip())
    if not threads or any(t < 1 or t > looptune._core.MAX_THREADS for t in threads):
        raise SystemExit(f"--threads must list counts in 1..{looptune._core.MAX_THREADS}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        done = {json.loads(line)["comp"] for line in out.read_text().splitlines() if line}
    measurer = Measurer(isa=isa, min_time=0.003, min_runs=2, max_runs=20, cache={})
    runner, signature = None, looptune.cpu_signature()
    if args.ray:  # every row measured on nodes of one kind (CPU signature + ISA)
        from looptune.distributed.jobs import open_pool
        from looptune.distributed.runner import RayRunner

        runner = RayRunner(open_pool(args.ray))
        signature = runner.kind.signature
    start, n = time.perf_counter(), 0
    todo = [(d, c) for d, c in training_computations(isa) if c.header() not in done]
    for dataset, comp in todo:
        if time.perf_counter() - start > args.max_seconds:
            break
        rows = measure_macros(comp, measurer, isa, runner, threads)
        with out.open("a") as f:
            for r in rows:
                row = {"dataset": dataset, "isa": isa, "cpu_signature": signature, **r}
                f.write(json.dumps(row) + "\n")
        n += 1
    if runner is not None:
        runner.pool.close()
    left = len(todo) - n
    print(f"measured {n} computations in {time.perf_counter() - start:.0f} s; {left} left",
          file=sys.stderr)
    sys.exit(0 if left == 0 else 3)


if __name__ == "__main__":
    main()
