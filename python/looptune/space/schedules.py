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


# Register tiles (rows x floats of the vector variable) worth trying, hand-picked per ISA; an
# ISA without a list gets the tiles of :func:`register_tiles` (the rule, from the engine's facts).
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
    for mi, ni in TILES.get(isa) or register_tiles(isa):
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


def grouped_conv_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Register tiles of a grouped conv2d in the user's layouts (variables n, g, k, oh, c, r,
    s, ow; k and c count channels within a group; depthwise: k = c = 1): one group at a time,
    ``n, g, k_o, oh_o, [ow_o,] c, r, s, k_i, oh_i, ow`` holding k_i x oh_i rows of output
    columns in registers across the c, r, s reduction. The output width is the vector loop
    (stride 1 in the input only at conv stride 1; other strides give scalar code, which the
    channel-blocked depthwise layout avoids). Tiles are generated by rule: every k_i x oh_i x
    ow_i vectors that fit the accumulator registers and fill at least half of them (or the
    whole output of a group)."""
    ext = {v.name: v.extent for v in comp.vars}
    lanes, acc = _lanes(isa), _acc_max(isa)
    seen = set()
    for ow_i in sorted({ext["ow"], 2 * lanes, lanes, 3 * lanes}):
        ow_i = min(ow_i, ext["ow"])
        vecs = -(-ow_i // lanes)
        for k_i in (1, 2, 4, 8):
            for oh_i in sorted({1, 2, 3, 4, 6, 8, ext["oh"]}):
                k_i2, oh_i2 = min(k_i, ext["k"]), min(oh_i, ext["oh"])
                accs = k_i2 * oh_i2 * vecs
                whole = k_i2 == ext["k"] and oh_i2 == ext["oh"] and ow_i == ext["ow"]
                if accs > acc or (2 * accs < acc and not whole) or (k_i2, oh_i2, ow_i) in seen:
                    continue
                seen.add((k_i2, oh_i2, ow_i))
                outer_ow = [("ow", ow_i)] if ow_i < ext["ow"] else []
                yield from_steps(
                    comp,
                    [("n", 1), ("g", 1), ("k", k_i2), ("oh", oh_i2)]
                    + outer_ow
                    + [("c", 1), ("r", 1), ("s", 1), ("k", 1), ("oh", 1), ("ow", 1)],
                )


def _acc_max(isa: str) -> int:
    return int(isa_facts(isa)["accumulator_registers"])


def _lanes(isa: str) -> int:
    return int(isa_facts(isa)["lanes"])


def register_tiles(isa: str) -> list[tuple[int, int]]:
    """(rows, floats) tiles that fill at least half the accumulator registers of ``isa``, the
    widest first (the rule for an ISA without a hand-picked :data:`TILES` list)."""
    lanes, acc = _lanes(isa), _acc_max(isa)
    tiles = [(acc // v, v * lanes) for v in range(1, 5) if acc // v >= 1]
    return [(r, f) for r, f in tiles if r * (f // lanes) * 2 >= acc]


def blocked_conv_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Register tiles of a conv2d with blocked output channels (variables ko, ki): schedules
    ``n, ko_o, oh_o, ow_o, c, r, s, ko_i, oh_i, ow_i, ki`` holding ko_i x oh_i x ow_i vectors
    of the channel block in registers across the c, r, s reduction. Tiles are generated by
    rule: every (ko_i, oh_i, ow_i) that fills at least half the accumulator registers (or the
    whole output), ow_i taken as the full width or an even share of it."""
    ext = {v.name: v.extent for v in comp.vars}
    vecs = -(-ext["ki"] // _lanes(isa))
    budget = _acc_max(isa) // vecs
    ow_opts = {-(-ext["ow"] // parts) for parts in range(1, 9)} | {ext["ow"]}
    ow_opts = sorted(ow_opts | {min(x, ext["ow"]) for x in range(2, budget + 1)})
    seen = set()
    for ko_i in (1, 2, 3, 4):
        for oh_i in (1, 2, 4):
            for ow_i in ow_opts:
                ko_i2, oh_i2 = min(ko_i, ext["ko"]), min(oh_i, ext["oh"])
                accs = ko_i2 * oh_i2 * ow_i
                whole = ko_i2 == ext["ko"] and oh_i2 == ext["oh"] and ow_i == ext["ow"]
                if accs > budget or (2 * accs < budget and not whole):
                    continue
                if (ko_i2, oh_i2, ow_i) in seen:
                    continue
                seen.add((ko_i2, oh_i2, ow_i))
                group = [("g", 1)] if "g" in ext else []  # grouped: one group at a time
                outer = [("n", 1)] + group + [("ko", ko_i2), ("oh", oh_i2), ("ow", ow_i)]
                inner = [("c", 1), ("r", 1), ("s", 1), ("ko", 1), ("oh", 1), ("ow", 1)]
                yield from_steps(comp, outer + inner + [("ki", 1)])


def packed_matmul_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Register tiles of a matmul with B in column panels (variables no, ni):
    ``[no_o,] [k_o,] m_o, no_i, k, m_i, ni`` with m_i rows of no_i panels."""
    ext = {v.name: v.extent for v in comp.vars}
    vecs = -(-ext["ni"] // _lanes(isa))
    for no_i in (1, 2, 3, 4):
        no_i = min(no_i, ext["no"])
        mi = min(_acc_max(isa) // (no_i * vecs), ext["m"])
        for mi in sorted({mi, max(1, mi // 2), min(mi, 6)}):
            for kb in (None, 256, 512):
                if kb is not None and kb >= ext["k"]:
                    continue
                outer_k = [("k", kb)] if kb else []
                tile = [("m", mi), ("no", no_i), ("k", 1), ("m", 1), ("no", 1), ("ni", 1)]
                yield from_steps(comp, outer_k + tile)
                for panels in (4, 16):  # a block of panels outermost (B panel reuse in L2)
                    if panels * no_i < ext["no"]:
                        yield from_steps(comp, [("no", panels * no_i)] + outer_k + tile)


def transposed_matmul_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Register tiles of a matmul with B transposed (block 1: variables no, ni with ni == 1;
    a narrow n): both inputs are contiguous in k, so the k loop is vectorized as a reduction.
    ``ni, m_o, no_o, k_o, m_i, no_i, k_i`` holds m_i x no_i outputs, each as kc vectors of
    partial sums (``k_o`` steps kc vectors), in registers; they are summed at the store."""
    ext = {v.name: v.extent for v in comp.vars}
    if ext.get("ni") != 1:
        return
    lanes, acc = _lanes(isa), _acc_max(isa)
    for kc in (1, 2):
        kv = min(kc * lanes, ext["k"])
        for noi in sorted({1, 2, 3, 4, ext["no"]}):
            noi = min(noi, ext["no"])
            for mi in (1, 2, 3, 4, 6, 8, 12):
                mi = min(mi, ext["m"])
                accs = mi * noi * kc
                if accs > acc or (3 * accs < acc and mi < ext["m"]):
                    continue
                yield from_steps(
                    comp,
                    [("ni", 1), ("m", mi), ("no", noi), ("k", kv), ("m", 1), ("no", 1), ("k", 1)],
                )


def blocked_matmul_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Register tiles of a matmul in a blocked layout (variables no, ni): B transposed
    (block 1) or B in column panels."""
    if comp.block == 1:
        return transposed_matmul_tilings(comp, isa)
    return packed_matmul_tilings(comp, isa)


def skinny_tilings(comp: Computation, isa: str) -> Iterator[LoopTree]:
    """Memory-bound matmuls. n == 1 (matrix-vector): m_i rows with the k reduction vectorized
    (partial sums in registers), ``m_o, n, k_o, m_i, k``; m == 1 (vector-matrix): k_i rows of
    B streamed into n_i-wide output chunks, ``m, k_o, n_o, k_i, n``; small n: m_i rows of an
    n-vector."""
    ext = {v.name: v.extent for v in comp.vars}
    if not {"m", "k", "n"} <= set(ext):
        return
    lanes = _lanes(isa)
    if ext["n"] == 1:
        for mi in (1, 2, 4, 8):
            for kc in (2, 4, 8):
                k_chunk = min(kc * lanes, ext["k"])
                if min(mi, ext["m"]) * kc <= _acc_max(isa) or kc == 2:
                    yield from_steps(
                        comp,
                        [("m", min(mi, ext["m"])), ("n", 1), ("k", k_chunk), ("m", 1), ("k", 1)],
                    )
    elif ext["m"] == 1:
        for ki in (4, 8, 16):
            for nv in (2, 4, 8):
                ki2, ni = min(ki, ext["k"]), min(nv * lanes, ext["n"])
                yield from_steps(comp, [("m", 1), ("k", ki2), ("n", ni), ("k", 1), ("n", 1)])
    elif ext["n"] <= 2 * lanes:
        vecs = -(-ext["n"] // lanes)
        for mi in (4, 6, 8, 12, 16, 24):
            if mi * vecs <= _acc_max(isa):
                mi = min(mi, ext["m"])
                yield from_steps(comp, [("m", mi), ("k", 1), ("m", 1), ("n", 1)])


def tilings(comp: Computation, isa: str) -> list[LoopTree]:
    """The hand-tiling sweep for ``comp`` (empty for kinds without one)."""
    names = {v.name for v in comp.vars}
    if comp.kind == "conv2d":
        if "ki" in names:
            return list(blocked_conv_tilings(comp, isa))
        if "g" in names:
            return list(grouped_conv_tilings(comp, isa))
        return list(conv_tilings(comp, isa))
    if "ni" in names:
        return list(blocked_matmul_tilings(comp, isa))
    return list(skinny_tilings(comp, isa)) + list(matmul_tilings(comp, isa))
