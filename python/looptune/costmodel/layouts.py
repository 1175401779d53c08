"""The layout knob of a :class:`~looptune.costmodel.ConfigSpace`: one computation per data layout
the engine offers for an op, and the translation of a loop list written over the *logical*
variables (those of the plain layout) into the variables of a blocked layout.

A blocked layout splits one logical variable ``x`` (matmul's ``n``, conv2d's ``k``) into an
outer ``xo`` (panels or channel blocks) and an inner ``xi`` of the block width, stored
innermost. Its loop trees vectorize ``xi``; a tile of ``x`` of ``s`` elements becomes a tile of
``ceil(s / block)`` blocks of ``xo``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from looptune._core import Computation, parse_computation
from looptune.errors import IllegalActionError

BLOCKABLE = ("matmul", "conv2d")  # ops with a blocked layout in the engine


@dataclass(frozen=True)
class Layout:
    name: str  # "plain" or "blocked<B>"
    comp: Computation
    block: int  # 0 for plain
    var: str = ""  # the blocked logical variable ("" for plain)

    @property
    def outer(self) -> str:
        return self.var + "o"

    @property
    def inner(self) -> str:
        return self.var + "i"


def layout_name(comp: Computation) -> str:
    return f"blocked{comp.block}" if comp.block else "plain"


def variants(comp: Computation, lanes: int, names: tuple[str, ...] | None = None) -> list[Layout]:
    """The layouts of ``comp``'s op: its own first, then plain and blocked by ``lanes`` (for the
    ops in :data:`BLOCKABLE`); only ``names`` if given (ValueError for one not offered)."""
    base = re.sub(r"\s+block=\d+", "", comp.header())
    comps = {layout_name(comp): comp}
    if comp.kind in BLOCKABLE:
        comps.setdefault("plain", parse_computation(base))
        try:
            comps.setdefault(f"blocked{lanes}", parse_computation(f"{base} block={lanes}"))
        except ValueError:  # a grouped conv2d whose groups' channels the block does not divide
            pass
    if names is not None:
        missing = [n for n in names if n not in comps]
        if missing or not names:
            raise ValueError(f"layouts {list(names)}: {comp.kind} offers {list(comps)}")
        comps = {n: comps[n] for n in names}
    plain_vars = {v.name for v in parse_computation(base).vars}
    out = []
    for name, c in comps.items():
        var = ""
        if c.block:
            names_c = {v.name for v in c.vars}
            var = next(x for x in plain_vars - names_c if {x + "o", x + "i"} <= names_c)
        out.append(Layout(name, c, c.block, var))
    return out


def logical(comp: Computation) -> Computation:
    """The plain-layout computation of ``comp`` (whose variables the knobs are written in)."""
    if not comp.block:
        return comp
    return parse_computation(re.sub(r"\s+block=\d+", "", comp.header()))


def to_physical(steps: list[tuple[str, int]], layout: Layout) -> list[tuple[str, int]]:
    """Translate ``(logical variable, step)`` loops into ``layout``'s variables. The blocked
    variable's tiles become tiles of whole blocks (a tile that covers every block is dropped);
    its innermost loop (step 1) becomes ``xo`` by 1 and the vector loop ``xi``. Raises
    :class:`IllegalActionError` if a tile of blocks is larger than the tile around it."""
    if not layout.block:
        return list(steps)
    ext = {v.name: v.extent for v in layout.comp.vars}
    left = ext[layout.outer]  # blocks the enclosing loops of x leave
    out = []
    for var, step in steps:
        if var != layout.var:
            out.append((var, step))
        elif step == 1:
            if left > 1:
                out.append((layout.outer, 1))
            out.append((layout.inner, 1))
            left = 1
        else:
            blocks = -(-step // layout.block)
            if blocks > left:
                raise IllegalActionError(f"a tile of {blocks} blocks of {var} > {left}")
            if blocks < left:
                out.append((layout.outer, blocks))
                left = blocks
    return out
