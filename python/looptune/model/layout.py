"""Layout propagation: consecutive looptune conv2d layers exchange activations in the layout
the next kernel reads, so no relayout copy runs between them.

A padded conv2d reads its input from a buffer with a zero border of its padding (a depthwise
conv from a channel-blocked one, ``[N][C/L][H+2p][W+2p][L]``); by default the engine copies
every input into such a buffer first. Here the *producer* of an activation writes it straight
into the interior of that buffer (the engine's buffer views, ``LoopTree.compile(in_view=,
out_view=)``), and the consumer reads the buffer as it is:

- an activation whose consumers are all depthwise convs of one channel block L, produced by a
  blocked conv with full blocks, is kept blocked (``Layout.block``): the producer stores its
  blocked accumulators without the transposition to NCHW, the consumer reads them without the
  copy back;
- an activation read by other convs is kept NCHW with a zero border (``Layout.halo``) as wide
  as the widest padding among them (a consumer with less padding reads the same buffer at an
  offset; a 1x1 conv at offset ``halo``);
- a residual add fused into a kernel reads its operand at the output's offsets, so the two
  share one layout: residual groups are unified to the widest border; a residual arriving in
  another layout (a torch op's output) is staged into a buffer of the kernel's layout.

An activation that leaves the graph or that any torch op (or a linear / matmul) reads stays
plain; so does one whose producer's schedule cannot store the layout (the kernel is then
compiled without views and its consumers copy, as without propagation). Laid-out buffers come
from the pool (``runtime.plan_buffers``), zeroed once and shared only between activations of
the same layout, and kernels only ever write their interior, so the borders stay zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from looptune.errors import CompileError
from looptune.model.pool import MaxPoolOp
from looptune.model.runtime import LoopOp, escapes


@dataclass(frozen=True)
class Layout:
    """An NCHW activation of ``shape`` held with a zero border of ``halo`` in H and W, channel
    blocked by ``block`` (``[N][C/L][H+2h][W+2h][L]``) when ``block`` > 0."""

    shape: tuple[int, int, int, int]
    halo: int = 0
    block: int = 0

    @property
    def buf_shape(self) -> tuple[int, ...]:
        n, c, h, w = self.shape
        hp, wp = h + 2 * self.halo, w + 2 * self.halo
        return (n, c // self.block, hp, wp, self.block) if self.block else (n, c, hp, wp)

    def offset(self, pad: int = 0) -> tuple[int, ...]:
        """Where a kernel buffer with conv padding ``pad`` starts in this layout's buffer."""
        d = self.halo - pad
        return (0, 0, d, d, 0) if self.block else (0, 0, d, d)

    def interior(self, buf: torch.Tensor) -> torch.Tensor:
        """The activation inside ``buf`` (NCHW: a strided view of the logical tensor)."""
        _, _, h, w = self.shape
        q = self.halo
        return buf[:, :, q:q + h, q:q + w]


def _conv(op) -> bool:
    """A float32 conv2d LoopOp (an int8 kernel, when the engine has them, keeps its copies)."""
    return (isinstance(op, LoopOp) and op.kind == "conv2d"
            and getattr(op.kernel.tree.computation, "dtype", "float32") == "float32")


def _producer(op) -> bool:
    """An op that can write its NCHW output into a bordered buffer and read its input from
    one: a conv2d, or a max pool (``pool.MaxPoolOp``)."""
    return _conv(op) or isinstance(op, MaxPoolOp)


def _blocked_input(op: LoopOp) -> bool:
    """The kernel reads a channel-blocked input (a depthwise conv with blocks)."""
    return len(op.kernel.tree.computation.inputs[0].alloc_shape) == 5


def _desired(node: fx.Node, op: LoopOp, ops: dict, loop_set: set) -> Layout | None:
    """The layout ``node``'s consumers would read without a copy (None: plain)."""
    if escapes(node, loop_set)[0]:
        return None
    pads, blocks, residual_of = [], set(), False
    for u in node.users:
        uop = ops.get(u)
        if isinstance(uop, MaxPoolOp):
            # a zero border pools like -inf only under values >= 0
            if op.act not in ("relu", "relu6"):
                return None
            pads.append(uop.p)
            blocks.add(0)
            continue
        if not _conv(uop):
            return None  # a torch op or a linear reads it: a plain tensor
        if uop.has_residual and u.args[-1] is node:
            residual_of = True
            if u.args[0] is node:
                return None
            continue
        comp = uop.kernel.tree.computation
        pads.append(int(comp.conv_pad))
        blocks.add(int(comp.block) if _blocked_input(uop) else 0)
    k = op.out_shape[1]
    if blocks and blocks != {0}:  # depthwise consumers: blocked, if all of them are
        (L,) = blocks if len(blocks) == 1 else (0,)
        if (L and _conv(op) and not residual_of and not op.has_residual
                and op.kernel.tree.computation.block == L and k % L == 0):
            return Layout(op.out_shape, max(pads), L)
        return None
    halo = max(pads, default=0)
    return Layout(op.out_shape, halo) if (halo or residual_of or op.has_residual) else None


def plan_layouts(gm: fx.GraphModule, loop_nodes: list[fx.Node], plain: set | None = None,
                 ) -> dict[fx.Node, Layout]:
    """The layout of every conv2d output that is not plain (``plain``: nodes kept plain)."""
    plain = plain or set()
    ops = {n: gm.get_submodule(str(n.target)) for n in loop_nodes}
    loop_set = set(loop_nodes)
    lay: dict[fx.Node, Layout] = {}
    for node in loop_nodes:
        if _producer(ops[node]) and node not in plain:
            want = _desired(node, ops[node], ops, loop_set)
            if want is not None:
                lay[node] = want
    # a fused residual is read at the output's offsets: the two share one NCHW layout
    parent = {n: n for n in lay}

    def find(n):
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for node in loop_nodes:
        op = ops[node]
        if not (_conv(op) and op.has_residual and op.fused and node in lay):
            continue
        r = node.args[-1]
        if r in lay and not lay[r].block and not lay[node].block and \
                lay[r].shape == lay[node].shape:
            parent[find(r)] = find(node)
    halo: dict[fx.Node, int] = {}
    for n, v in lay.items():
        if not v.block:
            root = find(n)
            halo[root] = max(halo.get(root, 0), v.halo)
    for n in list(lay):
        if not lay[n].block:
            lay[n] = Layout(lay[n].shape, halo[find(n)])
    # an NCHW layout without a border is the plain tensor (a fused residual in it too)
    for n in list(lay):
        if not lay[n].block and lay[n].halo == 0:
            del lay[n]
    return lay


def apply_layouts(gm: fx.GraphModule, loop_nodes: list[fx.Node]) -> dict:
    """Plans the layouts, compiles each conv's kernel with its buffer views and wires the
    ops (``LoopOp.layout / in_src / res_src / stage``; max pools' ``layout / in_src``); call
    before ``plan_buffers``. ``loop_nodes``: the LoopOp and MaxPoolOp nodes. Returns
    ``{"laid_out": activations not plain, "blocked": of them blocked, "direct_inputs": convs
    reading their input without a copy, "staged_residuals": residuals copied, "fallbacks":
    producers whose schedule could not store the layout}``."""
    ops = {n: gm.get_submodule(str(n.target)) for n in loop_nodes}
    plain: set = set()
    base = {n: ops[n].kernel for n in loop_nodes if isinstance(ops[n], LoopOp)}
    while True:
        lay = plan_layouts(gm, loop_nodes, plain)
        failed = None
        for node in loop_nodes:
            op = ops[node]
            if not _conv(op):
                continue
            comp = op.kernel.tree.computation
            x = node.args[0]
            in_view = None
            if x in lay:
                in_view = (lay[x].buf_shape, lay[x].offset(int(comp.conv_pad)))
            out_view = None
            if node in lay:
                out_view = (lay[node].buf_shape, lay[node].offset())
            if in_view is None and out_view is None:
                kernel = base[node]
            else:
                try:
                    kernel = base[node].tree.compile(base[node].isa, in_view=in_view,
                                                     out_view=out_view)
                except (CompileError, RuntimeError, ValueError):
                    failed = node if node in lay else x
                    break
            if kernel is not op.kernel:
                op.use_kernel(kernel)
        if failed is None:
            break
        plain.add(failed)  # that activation stays plain; plan again
    stats = {"laid_out": len(lay), "blocked": sum(1 for v in lay.values() if v.block),
             "direct_inputs": 0, "staged_residuals": 0, "fallbacks": len(plain)}
    stages: dict[tuple, torch.Tensor] = {}
    for node in loop_nodes:
        op = ops[node]
        op.layout = lay.get(node)
        x = node.args[0]
        if not _producer(op):
            continue
        op.in_src = ops[x] if x in lay and _producer(op) else None
        stats["direct_inputs"] += op.in_src is not None
        op.res_src, op.stage = None, None
        if op.layout is not None and op.has_residual and op.fused:
            r = node.args[-1]
            if lay.get(r) == op.layout:
                op.res_src = ops[r]
            else:  # border never read: the kernel reads the residual at output offsets
                key = op.layout.buf_shape
                if key not in stages:
                    stages[key] = torch.zeros(key)
                op.stage = stages[key]
                stats["staged_residuals"] += 1
    return stats
