"""A template configuration space per computation, in the style of AutoTVM's knobs.

Every point is a tuple of knob choices (indices); :meth:`ConfigSpace.instantiate` turns it into
a loop tree built from the computation alone, generically over matmul, batch_matmul, conv2d
and contractions:

    level 1 (cache tile)     for v in order:            (v, tile1[v])   if tile1[v] < extent
    level 2 (register tile)  for v in spatial vars:     (v, reg[v])     the register-tile loop
                             for r in reduction vars:   (r, 1)          optionally unrolled
    register tile            for v in spatial vars:     (v, 1)          the vector var innermost

Knobs: ``t1_<var>`` (cache-tile size per variable), ``r_<var>`` (register-tile size of each
spatial variable, in vectors for the vector variable and in rows otherwise), ``order`` (of the
cache-tile loops), ``vec`` (which spatial variable is innermost and vectorized) and ``unroll``
(of the innermost reduction loop) and ``layout`` (for matmul and conv2d: plain or blocked by
the vector width, see :mod:`looptune.costmodel.layouts`). Knobs name the *logical* variables
(those of the plain layout); a point's loop list is translated into its layout's variables.

Points that do not give a loop tree (a register tile larger than its cache tile, too many
loops, an unroll of a loop too long, a vector variable the layout cannot vectorize) are
``NOT_INSTANTIABLE``; points whose register tile needs more accumulators than the ISA has
registers, or whose code is over :data:`CODE_BYTES_CAP`, are ``COMPILE_REJECTED``
(see :func:`compile_check`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from looptune._core import MAX_TREE_LOOPS, Computation, LoopTree, isa_facts, known_isas
from looptune.costmodel.layouts import Layout, logical, to_physical, variants
from looptune.errors import IllegalActionError
from looptune.measure.result import Outcome
from looptune.space.schedules import from_steps

# Per ISA the engine knows (looptune._core.isa_facts is the one source).
LANES = {isa: int(isa_facts(isa)["lanes"]) for isa in known_isas()}
REGISTERS = {isa: int(isa_facts(isa)["vector_registers"]) for isa in known_isas()}
# Accumulators a register tile may hold (the engine keeps the other registers for the loaded
# vectors and broadcasts of the tile's body).
ACCUMULATORS = {isa: int(isa_facts(isa)["accumulator_registers"]) for isa in known_isas()}
CODE_BYTES_CAP = 16 * 1024  # half the 32 KiB L1 instruction cache
TILE1_SIZES = (8, 16, 24, 32, 48, 64, 96, 128, 256)
REG_UNITS = (1, 2, 3, 4, 6, 8, 12, 16)


def accumulator_limit(isa: str) -> int:
    """Accumulator registers a register tile may use on ``isa``."""
    return ACCUMULATORS[isa]


@dataclass(frozen=True)
class Knob:
    name: str
    values: tuple


class ConfigSpace:
    """The knob space of one computation on one ISA."""

    def __init__(
        self, comp: Computation, isa: str, layouts: Sequence[str] | None = None
    ) -> None:
        """``layouts``: names of the layouts to offer (default: every one the op has, ``comp``'s
        own first); see :func:`looptune.costmodel.layouts.variants`."""
        if isa not in LANES:
            raise ValueError(f"unknown isa {isa!r}; choose {' or '.join(LANES)}")
        self.comp, self.isa, self.lanes = comp, isa, LANES[isa]
        names = tuple(layouts) if layouts is not None else None
        self.layouts: dict[str, Layout] = {
            lay.name: lay for lay in variants(comp, self.lanes, names)
        }
        plain = logical(comp)
        self.flops = plain.flops
        self.vars = [v.name for v in plain.vars]
        self.extent = {v.name: v.extent for v in plain.vars}
        self.reduction = [v.name for v in plain.vars if v.reduction]
        self.spatial = [v.name for v in plain.vars if not v.reduction]
        # Vector candidates per layout: a blocked layout vectorizes its block; the plain one
        # the two spatial variables with the smallest output stride.
        out_strides = plain.output.strides
        plain_vecs = tuple(sorted(self.spatial, key=lambda v: out_strides.get(v, 0))[:2])
        self.vec_allowed = {
            n: (lay.var,) if lay.block else plain_vecs for n, lay in self.layouts.items()
        }
        self.vec_choices = tuple(dict.fromkeys(v for vs in self.vec_allowed.values() for v in vs))
        knobs = []
        for v in self.vars:
            ext = self.extent[v]
            knobs.append(Knob(f"t1_{v}", tuple(s for s in TILE1_SIZES if s < ext) + (ext,)))
        for v in self.spatial:
            knobs.append(Knob(f"r_{v}", tuple(u for u in REG_UNITS if u <= self.extent[v])))
        self.orders = _orders(self.vars, self.reduction)
        knobs.append(Knob("order", tuple(range(len(self.orders)))))
        knobs.append(Knob("vec", self.vec_choices))
        knobs.append(Knob("unroll", (False, True)))
        knobs.append(Knob("layout", tuple(self.layouts)))
        self.knobs = knobs
        self.dims = tuple(len(k.values) for k in knobs)

    def layout(self, point: tuple[int, ...]) -> Layout:
        """The layout (and its computation) of ``point``."""
        return self.layouts[self.values(point)["layout"]]

    def __len__(self) -> int:
        return math.prod(self.dims)

    def values(self, point: tuple[int, ...]) -> dict:
        """Knob name -> value of ``point``."""
        self._check(point)
        return {k.name: k.values[i] for k, i in zip(self.knobs, point)}

    def _check(self, point: tuple[int, ...]) -> None:
        if len(point) != len(self.dims) or any(not 0 <= i < d for i, d in zip(point, self.dims)):
            raise ValueError(f"point {point} outside the space of dims {self.dims}")

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(rng.integers(d)) for d in self.dims)

    def neighbor(self, point: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
        """``point`` with one knob changed to another value (simulated annealing's move)."""
        movable = [i for i, d in enumerate(self.dims) if d > 1]
        i = movable[int(rng.integers(len(movable)))]
        p = list(point)
        p[i] = (p[i] + 1 + int(rng.integers(self.dims[i] - 1))) % self.dims[i]
        return tuple(p)

    def register_tile(self, point: tuple[int, ...]) -> dict[str, int]:
        """Requested register-tile size (elements) per spatial variable."""
        vals = self.values(point)
        return {
            v: min(
                vals[f"r_{v}"] * (self.lanes if v == vals["vec"] else 1),
                vals[f"t1_{v}"],
                self.extent[v],
            )
            for v in self.spatial
        }

    def requested_accumulators(self, point: tuple[int, ...]) -> int:
        vals, tile = self.values(point), self.register_tile(point)
        vec = vals["vec"]
        n = -(-tile[vec] // self.lanes)
        for v in self.spatial:
            if v != vec:
                n *= tile[v]
        return n

    def steps(self, point: tuple[int, ...]) -> list[tuple[str, int]]:
        """The ``(variable, step)`` loop list of ``point`` (outer to inner)."""
        vals = self.values(point)
        vec = vals["vec"]
        t1 = {v: vals[f"t1_{v}"] for v in self.vars}
        reg = {
            v: min(vals[f"r_{v}"] * (self.lanes if v == vec else 1), self.extent[v])
            for v in self.spatial
        }
        steps = [(v, t1[v]) for v in self.orders[vals["order"]] if t1[v] < self.extent[v]]
        inner = [v for v in self.spatial if v != vec] + [vec]
        for v in inner:
            if reg[v] == 1 and v != vec:
                steps.append((v, 1))  # no register tile along v: a plain loop over its tile
            elif reg[v] != t1[v]:
                steps.append((v, reg[v]))  # larger than its cache tile: not instantiable
        steps += [(r, 1) for r in self.reduction]
        steps += [(v, 1) for v in inner if reg[v] > 1 or v == vec]
        return steps

    def instantiate(self, point: tuple[int, ...]) -> LoopTree:
        """The loop tree of ``point`` (over its layout's computation); raises
        :class:`IllegalActionError` if there is none."""
        vals, lay = self.values(point), self.layout(point)
        if vals["vec"] not in self.vec_allowed[lay.name]:
            raise IllegalActionError(
                f"layout {lay.name} vectorizes {' or '.join(self.vec_allowed[lay.name])}, "
                f"not {vals['vec']}"
            )
        steps = to_physical(self.steps(point), lay)
        if len(steps) > MAX_TREE_LOOPS:
            raise IllegalActionError(f"{len(steps)} loops > MAX_TREE_LOOPS={MAX_TREE_LOOPS}")
        try:
            tree = from_steps(lay.comp, steps)
        except ValueError as exc:
            raise IllegalActionError(str(exc)) from exc
        if vals["unroll"]:
            red = [i for i, lp in enumerate(tree.loops) if lp.var in self.reduction]
            if not red:
                raise IllegalActionError("no reduction loop to unroll")
            tree = _at(tree, red[-1]).toggle_unroll()  # raises IllegalActionError if too long
            tree = _at(tree, 0)
        return tree

    def try_instantiate(self, point: tuple[int, ...]) -> tuple[LoopTree | None, str]:
        try:
            return self.instantiate(point), ""
        except IllegalActionError as exc:
            return None, str(exc)

    def compile_check(self, point: tuple[int, ...], facts: dict) -> tuple[Outcome, str]:
        """``(outcome, error)`` of the compile-time limits for ``point`` compiled to ``facts``."""
        need, limit = self.requested_accumulators(point), accumulator_limit(self.isa)
        if need > limit:
            return Outcome.COMPILE_REJECTED, f"register tile needs {need} > {limit} registers"
        if facts.get("code_bytes", 0) > CODE_BYTES_CAP:
            return Outcome.COMPILE_REJECTED, f"code {facts['code_bytes']} > {CODE_BYTES_CAP} B"
        return Outcome.OK, ""

    def all_points(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(d) for d in self.dims))


def _orders(names: list[str], reduction: list[str]) -> list[tuple[str, ...]]:
    """A handful of distinct cache-tile loop orders: as declared, reduction outermost,
    reduction innermost, reversed and two rotations."""
    spatial = [v for v in names if v not in reduction]
    cands = [
        tuple(names),
        tuple(reduction + spatial),
        tuple(spatial + reduction),
        tuple(reversed(names)),
        tuple(names[1:] + names[:1]),
        tuple(names[-1:] + names[:-1]),
    ]
    return list(dict.fromkeys(cands))


def _at(tree: LoopTree, position: int) -> LoopTree:
    while tree.cursor < position:
        tree = tree.down()
    while tree.cursor > position:
        tree = tree.up()
    return tree
