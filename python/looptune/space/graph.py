"""The loop nest as a networkx graph, and fixed-shape float32 features derived from it.

    >>> import looptune, looptune.space.graph as lg
    >>> tree = looptune.matmul(128, 256, 64).default_schedule()
    >>> g = lg.loop_graph(tree)            # nx.DiGraph: loops, tensors, nesting and access edges
    >>> x = lg.observation(tree)           # float32, shape (max_loops * FEATURES_PER_LOOP,)

Both come from one pass over the tree (``nest_facts``), so every feature is an attribute of the
graph: loop nodes carry size, tail, step, depth, cursor, annotations and the total working set;
access edges (loop -> tensor) carry the tensor's stride in that loop (elements) and the tensor's
footprint below the loop (bytes).

Footprint of tensor T below loop i: for each variable v indexing T, the extent covered is the
range of the outermost loop of v at or below i (1 if none). The distinct elements touched are
estimated as ``min(prod(extent_v), 1 + sum((extent_v - 1) * |stride_v|))``: exact for tensors
whose variables index distinct dimensions (matmul), and the address span when several variables
share a dimension (a convolution's ``oh`` and ``r``), where the product would double count.

Per-loop feature row (all values in [-1, 1]; rows past the last loop are zero):

====  ======================================================================
0     present (1 for a real loop)
1     cursor is on this loop
2-5   log2(size) / 24, log2(tail + 1) / 24, log2(step) / 24, log2(range) / 24
6     depth / (max_loops - 1)
7-11  is reduction, is innermost, is innermost loop of its variable, unroll, vectorize
12    log2(total working set bytes below the loop) / 40
13-14 log2(total working set / L1), log2(total working set / L2), each clipped to +-16, / 16
15    log2(times the loop is entered = product of the sizes above) / 48
16+   per tensor (inputs then output), 20 values: a 16-bucket one-hot histogram of the
      log2 stride (bucket 0 = stride 0, bucket b = stride in [2^(b-1), 2^b), the last bucket
      open-ended), reuse flag (stride 0), log2(footprint bytes) / 40, footprint vs L1 and L2
      (as above)
====  ======================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from looptune import _core

if TYPE_CHECKING:  # networkx is imported only when a graph is built
    import networkx as nx

# Feature scales, not host facts: the working-set columns compare against these fixed sizes so
# that a trained policy sees the same inputs on every machine. The host's real cache sizes,
# lanes and register count come from the engine: ``looptune._core.isa_facts()``.
L1_BYTES = 48 * 1024
L2_BYTES = 2 * 1024 * 1024
ELEMENT_BYTES = 4
N_BUCKETS = 16
N_TENSORS = 3
LOOP_FEATURES = 16
TENSOR_FEATURES = N_BUCKETS + 4
FEATURES_PER_LOOP = LOOP_FEATURES + N_TENSORS * TENSOR_FEATURES
CURSOR_COLUMN = 1
_LOG2_L1 = math.log2(L1_BYTES)
_LOG2_L2 = math.log2(L2_BYTES)


@dataclass(frozen=True)
class LoopFacts:
    var: str
    step: int
    size: int
    tail: int
    range: int
    unroll: bool
    vectorize: bool
    reduction: bool
    innermost_of_var: bool
    entered: int  # times the loop starts: product of the sizes above
    strides: tuple[int, ...]  # per tensor, elements per iteration of this loop
    footprints: tuple[int, ...]  # per tensor, bytes touched below (and by) this loop


@dataclass(frozen=True)
class NestFacts:
    name: str
    cursor: int
    tensors: tuple[str, ...]  # inputs then output
    tensor_bytes: tuple[int, ...]
    loops: tuple[LoopFacts, ...]


def _footprint(cov: dict[str, int], strides: dict[str, int]) -> int:
    prod, span = 1, 1
    for v, s in strides.items():
        if s:
            e = cov[v]
            prod *= e
            span += (e - 1) * abs(s)
    return min(prod, span) * ELEMENT_BYTES


def nest_facts(tree: _core.LoopTree) -> NestFacts:
    """Everything the graph and the features need, in one pass over the tree."""
    comp = tree.computation
    tensors = (*comp.inputs, comp.output)
    tstrides = [t.strides for t in tensors]
    reduction = {v.name: v.reduction for v in comp.vars}
    raw = [(lp.var, lp.step, lp.size, lp.tail, lp.unroll, lp.vectorize) for lp in tree.loops]
    cov = dict.fromkeys(reduction, 1)
    seen: set[str] = set()
    below = []
    for var, step, size, tail, *_ in reversed(raw):
        cov[var] = size * step + tail
        below.append((var not in seen, tuple(_footprint(cov, ts) for ts in tstrides)))
        seen.add(var)
    below.reverse()
    loops, entered = [], 1
    for (var, step, size, tail, unroll, vec), (inner, fps) in zip(raw, below):
        strides = tuple(ts.get(var, 0) * step for ts in tstrides)
        loops.append(
            LoopFacts(
                var,
                step,
                size,
                tail,
                size * step + tail,
                unroll,
                vec,
                reduction[var],
                inner,
                entered,
                strides,
                fps,
            )
        )
        entered *= max(size, 1)
    return NestFacts(
        comp.name,
        tree.cursor,
        tuple(t.name for t in tensors),
        tuple(math.prod(t.alloc_shape) * ELEMENT_BYTES for t in tensors),
        tuple(loops),
    )


def loop_graph(tree: _core.LoopTree, facts: NestFacts | None = None) -> nx.DiGraph:
    """A directed graph of the loop nest.

    Nodes ``("loop", i)`` (outer to inner) with attributes var, step, size, tail, range, depth,
    cursor, unroll, vectorize, reduction, innermost, entered; nodes ``("tensor", name)`` with
    role ("input"/"output") and bytes. Edges ``("loop", i) -> ("loop", i + 1)`` have
    kind="nest"; edges ``("loop", i) -> ("tensor", name)`` have kind="access", stride
    (elements per iteration of the loop), footprint (bytes touched below the loop) and reuse.
    """
    f = facts or nest_facts(tree)
    import networkx as nx

    g = nx.DiGraph(name=f.name, cursor=f.cursor)
    for j, (tname, nbytes) in enumerate(zip(f.tensors, f.tensor_bytes)):
        g.add_node(
            ("tensor", tname),
            kind="tensor",
            role="output" if j == N_TENSORS - 1 else "input",
            bytes=nbytes,
        )
    last = len(f.loops) - 1
    for i, lp in enumerate(f.loops):
        node = ("loop", i)
        g.add_node(
            node,
            kind="loop",
            var=lp.var,
            step=lp.step,
            size=lp.size,
            tail=lp.tail,
            range=lp.range,
            depth=i,
            cursor=i == f.cursor,
            unroll=lp.unroll,
            vectorize=lp.vectorize,
            reduction=lp.reduction,
            innermost=i == last,
            innermost_of_var=lp.innermost_of_var,
            entered=lp.entered,
            working_set=sum(lp.footprints),
        )
        if i:
            g.add_edge(("loop", i - 1), node, kind="nest")
        for tname, stride, fp in zip(f.tensors, lp.strides, lp.footprints):
            g.add_edge(
                node,
                ("tensor", tname),
                kind="access",
                stride=stride,
                footprint=fp,
                reuse=stride == 0,
            )
    return g


def _cache_ratio(log2_bytes: float, log2_cache: float) -> float:
    return min(16.0, max(-16.0, log2_bytes - log2_cache)) / 16.0


def _row(lp: LoopFacts, i: int, last: int, max_loops: int) -> list[float]:
    ws = math.log2(max(sum(lp.footprints), 1))
    row = [
        1.0,
        0.0,
        math.log2(max(lp.size, 1)) / 24,
        math.log2(lp.tail + 1) / 24,
        math.log2(lp.step) / 24,
        math.log2(max(lp.range, 1)) / 24,
        i / max(max_loops - 1, 1),
        float(lp.reduction),
        float(i == last),
        float(lp.innermost_of_var),
        float(lp.unroll),
        float(lp.vectorize),
        ws / 40,
        _cache_ratio(ws, _LOG2_L1),
        _cache_ratio(ws, _LOG2_L2),
        math.log2(lp.entered) / 48,
    ]
    for stride, fp in zip(lp.strides, lp.footprints):
        hist = [0.0] * N_BUCKETS
        s = abs(stride)
        hist[min(s.bit_length(), N_BUCKETS - 1)] = 1.0
        lfp = math.log2(max(fp, 1))
        row += hist
        row += [float(s == 0), lfp / 40, _cache_ratio(lfp, _LOG2_L1), _cache_ratio(lfp, _LOG2_L2)]
    return row


def features(
    facts: NestFacts, max_loops: int = _core.DEFAULT_MAX_LOOPS, cursor: bool = True
) -> np.ndarray:
    """The (max_loops, FEATURES_PER_LOOP) float32 matrix of ``facts`` (see the module doc).

    With ``cursor=False`` the cursor column is left zero (the rest does not depend on it).
    """
    n = len(facts.loops)
    if n > max_loops:
        raise ValueError(f"the tree has {n} loops, more than max_loops={max_loops}")
    out = np.zeros((max_loops, FEATURES_PER_LOOP), dtype=np.float32)
    if n:
        rows = [_row(lp, i, n - 1, max_loops) for i, lp in enumerate(facts.loops)]
        out[:n] = np.clip(np.asarray(rows, dtype=np.float32), -1.0, 1.0)
        if cursor and 0 <= facts.cursor < n:
            out[facts.cursor, CURSOR_COLUMN] = 1.0
    return out


def observation(tree: _core.LoopTree, max_loops: int = _core.DEFAULT_MAX_LOOPS) -> np.ndarray:
    """Flat float32 features of ``tree``, shape ``(max_loops * FEATURES_PER_LOOP,)``, in [-1, 1]."""
    if not isinstance(max_loops, int) or max_loops < 1:
        raise ValueError(f"max_loops must be a positive int, got {max_loops!r}")
    return features(nest_facts(tree), max_loops).reshape(-1)


__all__ = [
    "FEATURES_PER_LOOP",
    "L1_BYTES",
    "L2_BYTES",
    "LOOP_FEATURES",
    "TENSOR_FEATURES",
    "LoopFacts",
    "NestFacts",
    "features",
    "loop_graph",
    "nest_facts",
    "observation",
]
