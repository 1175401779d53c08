"""Scale-invariant features of a schedule for the tiling agent (``looptune.agent.tiler``).

A feature means the same at 64 and at 4096: sizes enter as logarithms, working sets as their
ratio to the host's cache sizes (``_core.isa_facts()``: L1, L2, L3), register tiles as the
fraction of the vector register file their accumulators take, vector loops in lanes.

    >>> import looptune
    >>> from looptune.agent.tile_features import tile_features, N_FEATURES
    >>> x = tile_features(looptune.matmul(512, 512, 512).default_schedule())
    >>> x.shape == (N_FEATURES,)
    True

Layout of the vector (``N_FEATURES`` float32 values, each clipped to [-1, 1]):

* computation (18): kind one-hot (matmul, batch_matmul, conv2d, other), blocked layout,
  log2(flops), log2(reduction length), log2(output elements), log2(vector-variable extent in
  lanes), and each tensor's size against L1, L2 and L3 (3 x 3).
* register tile (8): the loops below the innermost reduction loop hold the accumulators:
  their count in vectors against the register file (linear and log), whether the vector
  variable is innermost, its tile width in lanes and the lanes wasted by a partial vector, the
  number of tile loops, the loop count of the whole nest, the fraction of the reduction's
  iterations inside the tile's enclosing loops that are partial (tails).
* loops (``INNER_LOOPS`` x 8), aligned from the innermost loop outwards: present, log2(size),
  log2(step), reduction, vector variable, working set below it against L1, L2 and L3.
* threads (7, feature version 2): log2(T), whether a loop is parallel, log2(flops per
  thread), the partition's efficiency 1 / imbalance (1/T for a serial tree: one thread
  works), log2(parallel iterations per thread), the speedup the cost model predicts over T
  (``looptune.agent.tiler.predicted_speedup``; 1/T serial) and how far above the register
  tile the parallel loop is. A policy of feature version 1 reads only the first
  ``V1_FEATURES`` columns (it ranks serial macros; the parallel loop is then the model's).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from looptune import _core
from looptune.space.graph import NestFacts, nest_facts

INNER_LOOPS = 14
LOOP_COLUMNS = 8
COMP_FEATURES = 18
TILE_FEATURES = 8
THREAD_FEATURES = 7
V1_FEATURES = COMP_FEATURES + TILE_FEATURES + INNER_LOOPS * LOOP_COLUMNS
N_FEATURES = V1_FEATURES + THREAD_FEATURES
KINDS = ("matmul", "batch_matmul", "conv2d")


@cache
def _facts(isa: str | None) -> tuple[int, int, float, float, float]:
    f = _core.isa_facts(isa)
    return (
        int(f["lanes"]),
        int(f["vector_registers"]),
        math.log2(f["l1d_bytes"]),
        math.log2(f["l2_bytes"]),
        math.log2(f["l3_bytes"]),
    )


def _ratio(log2_bytes: float, log2_cache: float) -> float:
    return max(-12.0, min(12.0, log2_bytes - log2_cache)) / 12.0


def vector_var(comp: _core.Computation) -> str:
    """The variable kernels vectorize: the one the output is contiguous in, or the reduction
    ``k`` of a matmul with B transposed (block 1), whose inputs are both contiguous in it."""
    if comp.block == 1 and comp.kind == "matmul":
        return "k"
    ones = [v for v, s in comp.output.strides.items() if s == 1]
    return ones[0] if ones else comp.vars[-1].name


def _comp_features(comp: _core.Computation, isa: str | None) -> list[float]:
    lanes, _, l1, l2, l3 = _facts(isa)
    kind = [float(comp.kind == k) for k in KINDS] + [float(comp.kind not in KINDS)]
    red = math.prod(v.extent for v in comp.vars if v.reduction)
    out_elems = math.prod(comp.output.shape)
    vec = {v.name: v.extent for v in comp.vars}[vector_var(comp)]
    row = kind + [
        float(comp.block > 0),
        math.log2(comp.flops) / 40,
        math.log2(red) / 24,
        math.log2(out_elems) / 24,
        math.log2(vec / lanes) / 8,
    ]
    for t in (*comp.inputs, comp.output):
        lb = math.log2(4 * math.prod(t.alloc_shape))
        row += [_ratio(lb, l1), _ratio(lb, l2), _ratio(lb, l3)]
    return row[:COMP_FEATURES]


def _tile_features(facts: NestFacts, vec: str, isa: str | None) -> list[float]:
    lanes, regs, *_ = _facts(isa)
    loops = facts.loops
    last_red = max((i for i, lp in enumerate(loops) if lp.reduction), default=-1)
    tile = loops[last_red + 1 :]
    ranges: dict[str, int] = {}
    for lp in tile:  # the outermost tile loop of a variable covers its tile width
        ranges.setdefault(lp.var, lp.range)
    width = ranges.get(vec, 1)
    accs = math.prod(r for v, r in ranges.items() if v != vec) * math.ceil(width / lanes)
    waste = (math.ceil(width / lanes) * lanes - width) / (math.ceil(width / lanes) * lanes)
    tails = sum(lp.tail > 0 for lp in loops) / max(len(loops), 1)
    return [
        min(accs / regs, 4.0) / 4.0,
        math.log2(accs) / 8,
        float(bool(loops) and loops[-1].var == vec),
        math.log2(max(width, 1) / lanes) / 8,
        waste,
        len(tile) / 8,
        len(loops) / _core.MAX_TREE_LOOPS,
        tails,
    ]


def _loop_rows(facts: NestFacts, vec: str, isa: str | None) -> np.ndarray:
    _, _, l1, l2, l3 = _facts(isa)
    out = np.zeros((INNER_LOOPS, LOOP_COLUMNS), np.float32)
    for j, lp in enumerate(reversed(facts.loops[-INNER_LOOPS:])):
        ws = math.log2(max(sum(lp.footprints), 1))
        out[j] = [
            1.0,
            math.log2(max(lp.size, 1)) / 12,
            math.log2(lp.step) / 12,
            float(lp.reduction),
            float(lp.var == vec),
            _ratio(ws, l1),
            _ratio(ws, l2),
            _ratio(ws, l3),
        ]
    return out


def thread_features(
    tree: _core.LoopTree, threads: int, partition: _core.LoopTree | None = None
) -> list[float]:
    """The ``THREAD_FEATURES`` values of ``tree`` run on ``threads`` threads; the partition
    ones (imbalance, iterations, predicted speedup, depth) from ``partition`` (default
    ``tree``; training passes the scaled-down tree that was timed)."""
    from looptune.agent import tiler

    part = tree if partition is None else partition
    comp = tree.computation
    head = [math.log2(threads) / 8, 0.0, math.log2(max(comp.flops / threads, 1.0)) / 40]
    loop = part.parallel_loop
    if loop is None or threads == 1:
        return head + [1.0 / threads, 0.0, 1.0 / threads, 0.0]
    loops = part.loops
    reds = [i for i, lp in enumerate(loops) if lp.var in
            {v.name for v in part.computation.vars if v.reduction}]
    top = max(reds) if reds else len(loops) - 1
    iters = len(tiler.iteration_work(part, loop))
    head[1] = 1.0
    return head + [
        1.0 / tiler.imbalance(part, loop, threads),
        math.log2(iters / threads) / 8,
        tiler.predicted_speedup(part, loop, threads) / threads,
        (top - loop) / _core.MAX_TREE_LOOPS,
    ]


def tile_features(
    tree: _core.LoopTree, isa: str | None = None, threads: int = 1,
    partition: _core.LoopTree | None = None,
) -> np.ndarray:
    """The (N_FEATURES,) float32 features of ``tree`` for ``isa`` (default the host's) run on
    ``threads`` threads (``partition``: see ``thread_features``)."""
    if not isinstance(tree, _core.LoopTree):
        raise TypeError(f"expected a looptune LoopTree, got {type(tree).__name__}")
    comp = tree.computation
    facts = nest_facts(tree)
    vec = vector_var(comp)
    head = _comp_features(comp, isa) + _tile_features(facts, vec, isa)
    x = np.concatenate([np.asarray(head, np.float32), _loop_rows(facts, vec, isa).reshape(-1),
                        np.asarray(thread_features(tree, threads, partition), np.float32)])
    return np.clip(x, -1.0, 1.0)


__all__ = ["INNER_LOOPS", "N_FEATURES", "THREAD_FEATURES", "V1_FEATURES", "thread_features",
           "tile_features", "vector_var"]
