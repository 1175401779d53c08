"""Hand-written schedules: build a loop tree from an explicit loop list, and the sweep of
register tilings the code-generation benchmark takes the best of.

    >>> comp = looptune.matmul(256, 256, 256)
    >>> tree = from_steps(comp, [("m", 6), ("n", 64), ("k", 1), ("m", 1), ("n", 1)])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from looptune._core import Computation, LoopTree, isa_facts


def from_steps(comp: Computation, loops: Sequence[tuple[str, int]], cursor: int = 0) -> LoopTree:
    """A tree whose loops are ``(variable, step)`` pairs, outer to inner.

    Steps of one variable must decrease and end at 1 (the engine checks; ValueError if not).
    """
    extents = {v.name: v.extent for v in comp.vars}
    ranges = dict(extents)
    seen: dict[str, int] = {}
    lines = [f"# {comp.header()}"]
    for depth, (var, step) in enumerate(loops):
        if var not in extents:
            raise ValueError(f"{comp.name} has no variable {var!r}")
        if step < 1 or step > ranges[var]:
            raise ValueError(f"step {step} of {var!r} outside 1..{ranges[var]}")
        size, tail = divmod(ranges[var], step)
        name = var + "'" * seen.get(var, 0)
        seen[var] = seen.get(var, 0) + 1
        text = f"{' ' * depth}for {name} in {size}" + (f" r {tail}" if tail else "")
        lines.append(text + ("  <-" if depth == cursor else ""))
        ranges[var] = step
    return LoopTree.parse("\n".join(lines) + "\n")


# Register tiles (rows x floats of the vector variable) worth trying per ISA.
TILES = {
    "avx512": [(4, 64), (6, 64), (8, 48), (6, 48), (12, 32), (14, 32), (8, 32), (4, 96), (24, 16)],
    "avx2": [(6, 16), (4, 24), (3, 32), (8, 8), (12, 8), (2, 48)],
}


def matmul_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Register-tiled schedules ``m_o, n_o, [k_o,] k, m_i, n_i`` for matmul-like computations
    (batch variables stay outermost), with and without an outer k block."""
    names = [v.name for v in comp.vars]
    if not {"m", "k", "n"} <= set(names):
        return
    ext = {v.name: v.extent for v in comp.vars}
    batch = [(v, 1) for v in names if v not in ("m", "k", "n")]
    for mi, ni in TILES[isa]:
        mi, ni = min(mi, ext["m"]), min(ni, ext["n"])
        for kb in (None, 128, 256):
            if kb is not None and kb >= ext["k"]:
                continue
            outer_k = [("k", kb)] if kb else []
            yield from_steps(
                comp, batch + outer_k + [("m", mi), ("n", ni), ("k", 1), ("m", 1), ("n", 1)]
            )
            if kb is None:  # a wider n panel outermost, alone or over a block of m rows
                for panel, mblock in ((2, None), (4, None), (4, 8)):
                    if panel * ni > ext["n"] or (mblock and mblock * mi > ext["m"]):
                        continue
                    outer = [("n", panel * ni)] + ([("m", mblock * mi)] if mblock else [])
                    yield from_steps(
                        comp, batch + outer + [("m", mi), ("n", ni), ("k", 1), ("m", 1), ("n", 1)]
                    )
            if kb:  # k block outside the n panel loop too
                yield from_steps(
                    comp, batch + [("n", ni), ("k", kb), ("m", mi), ("k", 1), ("m", 1), ("n", 1)]
                )


def conv_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Schedules that keep a (output channels x output columns) tile in registers across the
    c, r, s reduction: ``n, k_o, oh, c, r, s, k_i, ow``."""
    ext = {v.name: v.extent for v in comp.vars}
    facts = isa_facts(isa)
    lanes = facts["lanes"]
    tile_registers = facts["vector_registers"] - 4  # keep 4 for the broadcast/load operands
    for ki in (2, 4, 6, 8, 12):
        ki = min(ki, ext["k"])
        for ow_step in sorted({ext["ow"], 2 * lanes, lanes}):
            ow_step = min(ow_step, ext["ow"])
            if ki * -(-ow_step // lanes) > tile_registers:
                continue
            outer_ow = [("ow", ow_step)] if ow_step < ext["ow"] else []
            yield from_steps(
                comp,
                [("n", 1), ("k", ki), ("oh", 1)]
                + outer_ow
                + [("c", 1), ("r", 1), ("s", 1), ("k", 1), ("ow", 1)],
            )


def tilings(comp: Computation, isa: str) -> list[LoopTree]:
    """The hand-tiling sweep for ``comp`` (empty for kinds without one)."""
    if comp.kind == "conv2d":
        return list(conv_tilings(comp, isa))
    return list(matmul_tilings(comp, isa))
