"""Tile macros and the policy of the tiling agent for int8 computations.

An int8 computation (``looptune.matmul(m, k, n, dtype="int8")``, batched matmul, conv2d) has
the loop structure of its float32 twin with one difference: its reduction variable (``k`` of a
matmul, ``c`` of a conv2d) counts **groups of 4** reduction values, the 32-bit words one
``vpdpbusd`` multiplies (4 u8 x s8 products summed into each int32 lane: 64 MACs per zmm
instruction, 4x an f32 FMA's 16). Its register tiles are therefore counted in **32-bit
accumulators**, exactly as f32 tiles are counted in floats, and the rule generators of
``looptune.space.schedules`` (register tiles sized to the accumulator registers of the ISA)
apply unchanged to it. What changes is the cache side: a word of an int8 operand holds 4
reduction values, so a k block of ``kb`` groups covers ``4 kb`` values and the same bytes; the
int8 macros add reduction blocks of 64 and 512 groups (256 and 2048 values) to the f32 ones
(128, 256), so a B panel can fill L1 or L2 as a float32 panel of the same bytes does.

Policy (``policy``): which scorer ranks the macros of an int8 computation was decided by
measurement, not assumed (``benchmarks/int8_tiler.py``, ``benchmarks/results/int8_tiler.json``):
see :data:`POLICY_CHOICE`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from looptune import _core
from looptune.space.schedules import from_steps

# Extra reduction blocks (in groups of 4 values) of the int8 matmul macros.
INT8_K_BLOCKS = (64, 512)


def is_int8(comp: _core.Computation) -> bool:
    """Whether ``comp`` is an int8 computation (u8 x s8 summed in int32)."""
    return getattr(comp, "dtype", "float32") == "int8"


def _k_blocked(comp: _core.Computation, isa: str) -> Iterator[_core.LoopTree]:
    """``[batch,] k_o, m_o, n_o, k, m_i, n_i`` with the :data:`INT8_K_BLOCKS` k blocks over the
    register tiles of the rule (``schedules.register_tiles`` or the ISA's hand-picked list)."""
    from looptune.space.schedules import TILES, register_tiles

    names = [v.name for v in comp.vars]
    if not {"m", "k", "n"} <= set(names) or "ni" in names:
        return
    ext = {v.name: v.extent for v in comp.vars}
    batch = [(v, 1) for v in names if v not in ("m", "k", "n")]
    for mi, ni in TILES.get(isa) or register_tiles(isa):
        mi, ni = min(mi, ext["m"]), min(ni, ext["n"])
        for kb in INT8_K_BLOCKS:
            if kb >= ext["k"]:
                continue
            yield from_steps(comp, batch + [("k", kb), ("m", mi), ("n", ni), ("k", 1),
                                            ("m", 1), ("n", 1)])


def tilings(comp: _core.Computation, isa: str,
            f32_macros: list[_core.LoopTree]) -> list[_core.LoopTree]:
    """The int8 macros of ``comp``: the float32 rule's (``f32_macros``, built by
    ``looptune.agent.tiler`` on the same loop structure) plus the int8 k blocks."""
    out = list(f32_macros)
    try:
        out.extend(_k_blocked(comp, isa))
    except ValueError:
        pass
    return out


# --------------------------------------------------------------------------------- policy


def rule_scores(trees: list[_core.LoopTree], isa: str | None = None) -> np.ndarray:
    """The int8 rule: a score per macro from its register tile and reduction block, higher =
    expected faster. Fuller accumulator tiles first (each vpdpbusd of a tile shares its
    broadcast / load with the others), whole vectors of the vector variable, no tails, and a
    reduction block whose operand panel fits L2 (``isa_facts``)."""
    from looptune.agent.tile_features import vector_var
    from looptune.space.graph import nest_facts

    facts = _core.isa_facts(isa)
    lanes, acc_regs, l2 = int(facts["lanes"]), int(facts["accumulator_registers"]), facts[
        "l2_bytes"]
    out = np.zeros(len(trees), np.float64)
    for i, tree in enumerate(trees):
        nf = nest_facts(tree)
        loops = nf.loops
        if not loops:
            continue
        vec = vector_var(tree.computation)
        last_red = max((j for j, lp in enumerate(loops) if lp.reduction), default=-1)
        tile = loops[last_red + 1:]
        ranges: dict[str, int] = {}
        for lp in tile:
            ranges.setdefault(lp.var, lp.range)
        width = ranges.get(vec, 1)
        vecs = -(-width // lanes)
        rows = int(np.prod([r for v, r in ranges.items() if v != vec])) if ranges else 1
        accs = rows * vecs
        if accs > acc_regs or not tile or loops[-1].var != vec:
            out[i] = -1.0  # spills or scalar code
            continue
        fill = accs / acc_regs
        waste = (vecs * lanes - width) / (vecs * lanes)
        # intensity of the tile: MACs per operand load (rows x vecs over rows + vecs)
        intensity = rows * vecs / (rows + vecs)
        tails = sum(lp.tail > 0 for lp in loops) / len(loops)
        ws = max((sum(lp.footprints) for lp in loops if lp.reduction), default=0)
        cache = 1.0 if ws <= l2 else 0.8
        out[i] = (0.5 * fill + intensity / 8) * (1 - waste) * (1 - 0.2 * tails) * cache
    return out


__all__ = ["INT8_K_BLOCKS", "is_int8", "rule_scores", "tilings"]
