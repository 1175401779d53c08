"""A roofline-style estimate of a compiled kernel, from what the JIT reports (``kernel.facts``)
and the loop tree's trip counts; no run. It becomes hidden features of the A model.

The register tile's inner step (one iteration of the reduction around the tile) issues one FMA
per accumulator, one vector load per vector of the tile and one broadcast per row. Counted in
FMA issue slots of a generic x86 core (two FMA pipes of latency 4; one vector load or
memory-operand broadcast per FMA slot), a step takes

    slots = max(accumulators, FMA_CHAINS (latency bound), loads + broadcasts)

plus, per visit of the tile, loading and storing every accumulator (2 x accumulators memory
operations spread over the reduction steps of the visit when they are hoisted, every step
otherwise). The estimate's efficiency is accumulators / slots, times the share of vector lanes
that hold data, times the share of the iteration space outside partial (tail) iterations, and
divided by the lanes if the JIT did not vectorize. Also reported: code bytes against the L1
instruction cache and the reduction steps per tile visit.
"""

from __future__ import annotations

import math

from looptune._core import LoopTree

FMA_CHAINS = 8  # independent accumulators two pipes of FMA latency 4 need to stay busy
L1I_BYTES = 32 * 1024
NAMES = (
    "roof_efficiency",
    "roof_fma_share",
    "roof_mem_per_fma",
    "roof_latency_bound",
    "roof_lane_use",
    "roof_full_share",
    "roof_log_reduction_steps",
    "roof_code_over_l1i",
)


def _reduction_steps(tree: LoopTree) -> int:
    """Iterations of the run of reduction loops right above the innermost spatial loops (the
    register tile): the steps of one tile visit."""
    red = {v.name for v in tree.computation.vars if v.reduction}
    loops = tree.loops
    i = len(loops) - 1
    while i >= 0 and loops[i].var not in red:
        i -= 1
    steps = 1
    while i >= 0 and loops[i].var in red:
        steps *= max(loops[i].size + (loops[i].tail > 0), 1)
        i -= 1
    return steps


def _full_share(tree: LoopTree) -> float:
    """Share of the iteration space in whole (non-tail) iterations of every loop."""
    share = 1.0
    for lp in tree.loops:
        if lp.range > 0 and lp.tail:
            share *= lp.size * lp.step / lp.range
    return share


def _lane_use(tree: LoopTree, lanes: int) -> float:
    """Share of the vector lanes holding data along the innermost (vector) loop."""
    inner = tree.loops[-1]
    n = inner.range
    return n / (lanes * math.ceil(n / lanes)) if n > 0 else 1.0


def estimate(tree: LoopTree, facts: dict, lanes: int) -> list[float]:
    """The features of :data:`NAMES` for ``tree`` compiled to ``facts``."""
    acc = max(int(facts.get("tile_accumulators", 0)), 1)
    vecs = max(int(facts.get("tile_vectors", 0)), 1)
    rows = max(int(facts.get("tile_rows", 0)), 1)
    steps = _reduction_steps(tree)
    mem = vecs + rows
    if facts.get("accumulators_hoisted", False):
        mem += 2 * acc / steps
    else:
        mem += 2 * acc
    slots = max(acc, FMA_CHAINS, mem)
    eff = acc / slots
    lane_use = _lane_use(tree, lanes) if facts.get("vectorized", False) else 1.0 / lanes
    full = _full_share(tree)
    code = float(facts.get("code_bytes", 0))
    return [
        eff * lane_use * full,
        eff,
        mem / acc,
        float(acc < FMA_CHAINS),
        lane_use,
        full,
        math.log2(max(steps, 1)),
        code / L1I_BYTES,
    ]
