"""Features of a configuration for the cost models.

*Visible* features come from the knobs and the loop tree alone (no compiler): per variable the
log sizes of the extent, cache tile and register tile, whether it is the vector or a reduction
variable and its place in the tile order; the requested accumulators against the register
file; the depth; and per tensor the stride of the innermost loop and the footprints of the
cache tile and of the register-tile loop, as log2 ratios to the L1, L2 and L3 caches.

*Hidden* features are what the JIT learned while generating code (``kernel.facts``): static
instruction counts by kind, the register tile it really built and its register pressure, loads
per FMA, code bytes, tail bodies, hoisting; and a roofline-style estimate built from them and
the tree's trip counts (:mod:`looptune.costmodel.roofline`). They cost one compile (tens of
microseconds).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from looptune._core import LoopTree, isa_facts
from looptune.costmodel import roofline
from looptune.costmodel.configspace import LANES, ConfigSpace, accumulator_limit
from looptune.space.graph import nest_facts

MAX_VARS = 8
_PER_VAR = 6


# Used when CPUID does not report a level (a hypervisor may hide it).
DEFAULT_CACHE_BYTES = (32 * 1024, 1024 * 1024, 32 * 1024 * 1024)


@cache
def cache_sizes() -> tuple[int, int, int]:
    """(L1d, L2, L3) bytes from the engine's CPUID read (``_core.isa_facts``); a level it
    cannot tell takes :data:`DEFAULT_CACHE_BYTES`."""
    f = isa_facts()
    got = (f["l1d_bytes"], f["l2_bytes"], f["l3_bytes"])
    return tuple(int(b) if b else d for b, d in zip(got, DEFAULT_CACHE_BYTES))


def _log2(x: float) -> float:
    return math.log2(max(x, 1.0))


def visible(space: ConfigSpace, point: tuple[int, ...]) -> np.ndarray:
    """Visible features of ``point`` (a fixed-length float32 vector; zeros for loop-tree
    features when the point is not instantiable)."""
    vals = space.values(point)
    tile = space.register_tile(point)
    order = space.orders[vals["order"]]
    row = []
    for i in range(MAX_VARS):
        if i >= len(space.vars):
            row += [0.0] * _PER_VAR
            continue
        v = space.vars[i]
        row += [
            _log2(space.extent[v]),
            _log2(vals[f"t1_{v}"]),
            _log2(tile.get(v, 1)),
            float(v == vals["vec"]),
            float(v in space.reduction),
            float(order.index(v)),
        ]
    need = space.requested_accumulators(point)
    row += [float(vals["unroll"]), float(need), need / accumulator_limit(space.isa)]
    block = space.layout(point).block
    row += [float(block > 0), block / space.lanes, float(vals["vec"] in space.vec_allowed[
        vals["layout"]])]
    tree, _ = space.try_instantiate(point)
    row += _tree_features(tree)
    return np.asarray(row, dtype=np.float32)


N_TREE = 1 + 3 * 7


def _tree_features(tree: object) -> list[float]:
    if tree is None:
        return [0.0] * N_TREE
    nf = nest_facts(tree)
    loops = nf.loops
    l1, l2, l3 = (math.log2(c) for c in cache_sizes())
    # Footprints below the outermost loop whose step is below the full extent (cache tile) and
    # below the outermost loop of the register tile (first loop whose range is a register tile).
    depth = len(loops)
    inner = loops[-1]
    out = [float(depth)]
    reg_start = next((i for i, lp in enumerate(loops) if lp.step == 1 and lp.reduction), depth - 1)
    cache_start = min(1, depth - 1)
    for t in range(3):
        fp_cache = _log2(loops[cache_start].footprints[t])
        fp_reg = _log2(loops[max(reg_start - 1, 0)].footprints[t])
        out += [
            _log2(abs(inner.strides[t]) + 1),
            fp_cache - l1,
            fp_cache - l2,
            fp_cache - l3,
            fp_reg - l1,
            fp_reg - l2,
            float(sum(lp.tail > 0 for lp in loops)),
        ]
    return out


HIDDEN_KEYS = (
    "lanes",
    "vectorized",
    "tile_loops",
    "tile_accumulators",
    "tile_rows",
    "tile_vectors",
    "accumulators_hoisted",
    "hoisted_loops",
    "zero_init",
    "runtime_loops",
    "unrolled_loops",
    "code_bytes",
    "fma",
    "loads",
    "stores",
    "broadcasts",
    "masked",
    "pointer_updates",
    "branches",
    "tail_bodies",
    "spills",
)


def isa_lanes(isa: str) -> int:
    return LANES[isa]


def hidden(facts: dict, isa: str, tree: LoopTree | None = None) -> np.ndarray:
    """Hidden features from ``kernel.facts`` plus derived ratios (loads and broadcasts per FMA,
    accumulators against the register limit, log code size) and, given the compiled ``tree``,
    the roofline estimate (zeros without it)."""
    row = [float(facts.get(k, 0)) for k in HIDDEN_KEYS]
    fma = max(float(facts.get("fma", 0)), 1.0)
    row += [
        facts.get("loads", 0) / fma,
        facts.get("broadcasts", 0) / fma,
        facts.get("stores", 0) / fma,
        facts.get("tile_accumulators", 0) / accumulator_limit(isa),
        _log2(facts.get("code_bytes", 0)),
        facts.get("tail_bodies", 0) / (1.0 + facts.get("runtime_loops", 0)),
    ]
    if tree is None:
        row += [0.0] * len(roofline.NAMES)
    else:
        row += roofline.estimate(tree, facts, isa_lanes(isa))
    return np.asarray(row, dtype=np.float32)


N_HIDDEN = len(HIDDEN_KEYS) + 6 + len(roofline.NAMES)
ROOF_EFFICIENCY = len(HIDDEN_KEYS) + 6  # index of the roofline efficiency in a hidden row
