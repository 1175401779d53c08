"""The tiling agent on int8 computations: its macros, and which scorer ranks them (measured).

An int8 computation (``looptune.matmul(m, k, n, dtype="int8")``, batched matmul, conv2d) has
the loop structure of its float32 twin with one difference: its reduction variable (``k`` of a
matmul, ``c`` of a conv2d) counts **groups of 4** reduction values, the 32-bit words one
``vpdpbusd`` multiplies (4 u8 x s8 products summed into each int32 lane: 64 MACs per zmm
instruction, 4x an f32 FMA's 16). A register tile is therefore counted in **32-bit
accumulators** (16 per zmm, 8 per ymm: the ISA's ``lanes``) exactly as an f32 tile is counted
in floats, and an operand word holds the bytes of one float. So the tile macros of
``looptune.agent.tiler.candidates`` (the rule generators of ``looptune.space.schedules``,
sized from ``isa_facts``: accumulator registers, lanes, caches) are the int8 macros as they
are, on the int8 computation's own variables.

Measured (``benchmarks/int8_tiler.py`` -> ``benchmarks/results/int8_tiler.json``; every macro of
33 int8 computations timed: BERT-base GEMMs, large and family matmuls, the ResNet layers):

* extra int8 reduction blocks (64 and 512 groups, i.e. 256 and 2048 values, beside the f32
  rule's 128 and 256) were tried as macros (a first run of the same benchmark) and were the fastest
  macro of none of the 33 computations, so they are not generated;
* the shipped **float32** tiling policy, its features unchanged (``tile_features``: sizes in
  32-bit words, accumulators in vectors), ranks int8 macros at least as well as a hand rule
  written for int8 (:func:`rule_scores`): the best of its top 1 / 2 / 4 macros reached 0.94 /
  0.97 / 0.98 of the best macro's speed (geomean over the 33), the rule's 0.93 / 0.95 / 0.98,
  generation order's 0.74 / 0.94 / 0.95. So int8 uses the shipped scorer
  (:data:`POLICY_CHOICE`). Its top 1 can miss badly (0.48 at worst), its top 2 less (0.77 at
  worst), its top 4 least (0.85 at worst), so ``tiler_search`` times at least
  :data:`MIN_TIMED` int8 macros: int8 kernels run ~3-4x faster than float32 ones, so four
  take about the time of the two float32 macros it times at least.
"""

from __future__ import annotations

import numpy as np

from looptune import _core

POLICY_CHOICE = "f32_scorer"  # the shipped tiling policy ranks int8 macros (see the module doc)
MIN_TIMED = 4  # int8 macros tiler_search times at least


def is_int8(comp: _core.Computation) -> bool:
    """Whether ``comp`` is an int8 computation (u8 x s8 summed in int32)."""
    return getattr(comp, "dtype", "float32") == "int8"


def rule_scores(trees: list[_core.LoopTree], isa: str | None = None) -> np.ndarray:
    """The hand rule the shipped scorer was measured against: a score per macro from its
    register tile and reduction panel, higher = expected faster. Fuller accumulator tiles and
    higher intensity (MACs per operand load: each vpdpbusd of a tile shares its broadcast /
    load with the others), whole vectors of the vector variable, fewer tails, a reduction
    working set in L2 (``isa_facts``); -1 for a tile that spills or is not vectorized."""
    from looptune.agent.tile_features import vector_var
    from looptune.space.graph import nest_facts

    facts = _core.isa_facts(isa)
    lanes, acc_regs = int(facts["lanes"]), int(facts["accumulator_registers"])
    l2 = facts["l2_bytes"]
    out = np.zeros(len(trees), np.float64)
    for i, tree in enumerate(trees):
        loops = nest_facts(tree).loops
        vec = vector_var(tree.computation)
        last_red = max((j for j, lp in enumerate(loops) if lp.reduction), default=-1)
        tile = loops[last_red + 1:]
        ranges: dict[str, int] = {}
        for lp in tile:
            ranges.setdefault(lp.var, lp.range)
        width = ranges.get(vec, 1)
        vecs = -(-width // lanes)
        rows = int(np.prod([r for v, r in ranges.items() if v != vec]))
        accs = rows * vecs
        if not tile or accs > acc_regs or loops[-1].var != vec:
            out[i] = -1.0
            continue
        waste = (vecs * lanes - width) / (vecs * lanes)
        tails = sum(lp.tail > 0 for lp in loops) / len(loops)
        ws = max((sum(lp.footprints) for lp in loops if lp.reduction), default=0)
        cache = 1.0 if ws <= l2 else 0.8
        intensity = rows * vecs / (rows + vecs)
        out[i] = (0.5 * accs / acc_regs + intensity / 8) * (1 - waste) * (1 - 0.2 * tails) * cache
    return out


__all__ = ["MIN_TIMED", "POLICY_CHOICE", "is_int8", "rule_scores"]
