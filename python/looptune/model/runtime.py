"""Running a lowered graph: one module per looptune kernel, and one buffer pool.

:class:`LoopOp` holds a compiled kernel whose weights (and bias) were packed once at compile
time (``Kernel.set_constant``). With the engine's epilogue (``fused``) the kernel's store adds
the bias and the residual and applies the activation; otherwise (``fused=False``, the "fusion
off" configuration, and the path of an engine without epilogues) torch applies them in place
on the kernel's output right after the call.

:func:`plan_buffers` gives every looptune output that does not leave the graph a preallocated
buffer, shared between layers whose values are never alive at the same time. A value stays
alive until the last use of anything computed from it by torch ops (a view, a reshape or an
in-place op may share its memory), so a reused buffer is never read after it is overwritten.

A matmul / bmm of two activations (attention) reads its inputs where they are: torch views
(a head split ``view(...).transpose(1, 2)``, a ``k.transpose(-2, -1)``) go to a kernel compiled
for their strides (``LoopTree.compile(strides=)``: read in place, or packed by the kernel when
the vectorized dimension is strided), one kernel per stride pattern met. When the output's only
use is a transpose / permute (the heads merged back), :func:`choose_output_orders` makes the
kernel write it in that order, so the permuted value is contiguous and the reshape after it
is free.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import fx, nn

from looptune import CompileError
from looptune.model.lower import Layer


class LoopOp(nn.Module):
    """One looptune layer: ``forward(x[, y][, residual])``."""

    def __init__(self, layer: Layer, kernel, fused: bool) -> None:
        super().__init__()
        d = layer.dims
        self.kind, self.act, self.fused = layer.kind, layer.act, fused
        self.kernel = kernel
        self.has_y, self.has_residual = layer.y is not None, layer.residual is not None
        self.epilogue = layer.epilogue
        self.out_shape = tuple(layer.out_shape)
        if layer.kind == "conv2d":
            self.a_shape = tuple(layer.in_shape)
            self.k_out = self.out_shape
            bias_shape = (1, d["k"], 1, 1)
            b = layer.weight.float().contiguous().numpy()
        elif layer.kind == "linear":
            self.a_shape, self.k_out = (d["m"], d["k"]), (d["m"], d["n"])
            bias_shape = (d["n"],)
            b = layer.weight.float().t().contiguous().numpy()  # [K, N]
        else:
            lead = layer.batch_dims if layer.kind == "bmm" else ()
            self.a_shape, self.y_shape = (*lead, d["m"], d["k"]), (*lead, d["k"], d["n"])
            self.k_out = (*lead, d["m"], d["n"])
            bias_shape, b = (d["n"],), None
        self.bias = None if layer.bias is None else layer.bias.float().reshape(bias_shape)
        self._bias_np = None if self.bias is None else np.ascontiguousarray(
            layer.bias.float().numpy())
        self._b_np = b
        self.use_kernel(kernel)
        self.out: torch.Tensor | None = None  # a pool buffer (plan_buffers), else per call
        # matmul / bmm of activations: kernels for the input / output strides met
        self.strided = layer.kind in ("matmul", "bmm")
        self._by_strides: dict[tuple, object] = {}
        self.out_perm: tuple[int, ...] | None = None  # output stored permuted (see below)
        # layout propagation (looptune.model.layout): the output's layout when it is not the
        # plain NCHW tensor, the whole buffer holding it, and where the inputs come from
        self.layout = None  # a layout.Layout, or None (plain)
        self.out_buf: torch.Tensor | None = None  # the buffer of `layout` (a pool buffer)
        self.in_src: LoopOp | None = None  # read x as the kernel's in_view of its out_buf
        self.res_src: LoopOp | None = None  # the residual is in_src-like: its out_buf
        self.stage: torch.Tensor | None = None  # a buffer of `layout` the residual is copied to

    def use_kernel(self, kernel) -> None:
        """Makes ``kernel`` (this layer's schedule, possibly compiled with buffer views) the
        one called, its constant weights (and bias) packed."""
        self.kernel = kernel
        if self._b_np is not None:
            if self.fused and self._bias_np is not None:
                kernel.set_constant(self._b_np, bias=self._bias_np)
            else:
                kernel.set_constant(self._b_np)

    def extra_repr(self) -> str:
        return f"{self.kernel.tree.computation.name}, epilogue={self.epilogue!r}, " \
               f"fused={self.fused}"

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        if self.layout is not None or self.in_src is not None:
            return self._forward_layout(x, *rest)
        if self.strided and self.fused and x.dtype == torch.float32:
            out = self._forward_strided(x, *rest)
            if out is not None:
                return out
        a = x.contiguous().numpy().reshape(self.a_shape)
        y = rest[0].contiguous().numpy().reshape(self.y_shape) if self.has_y else None
        r = rest[-1] if self.has_residual else None
        out = self.out if self.out is not None else torch.empty(self.out_shape)
        o = out.numpy().reshape(self.k_out)
        if self.fused:
            kw = {}
            if r is not None:
                kw["residual"] = r.contiguous().numpy().reshape(self.k_out)
            if y is not None and self._bias_np is not None:
                kw["bias"] = self._bias_np
            self.kernel(a, y, o, **kw)
            return out
        self.kernel(a, y, o)
        if self.bias is not None:
            out.add_(self.bias)
        self._finish_unfused(out, r)
        return out

    def _finish_unfused(self, t: torch.Tensor, r: torch.Tensor | None) -> None:
        """Without fusion, after the kernel (and the bias): ``t = act(t + r)`` in place."""
        if r is not None:
            t.add_(r)
        if self.act == "relu":
            t.relu_()
        elif self.act == "relu6":
            t.clamp_(0.0, 6.0)
        elif self.act == "gelu":
            torch.ops.aten.gelu_(t)


    def output_tensor(self) -> torch.Tensor:
        """This call's output (``out_shape``): the pool buffer, or a fresh tensor; stored in
        the order ``out_perm`` (a permuted view of a contiguous buffer) when set."""
        if self.out_perm is None:
            return self.out if self.out is not None else torch.empty(self.out_shape)
        stored = tuple(self.out_shape[d] for d in self.out_perm)
        buf = self.out.view(-1).view(stored) if self.out is not None else torch.empty(stored)
        inverse = sorted(range(len(self.out_perm)), key=self.out_perm.__getitem__)
        return buf.permute(*inverse)

    def _forward_strided(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor | None:
        """A matmul / bmm on its inputs' strides (no copies) and ``output_tensor()``'s; None
        when a value cannot be viewed at the kernel's shape (the caller copies then)."""
        y = rest[0]
        r = rest[-1] if self.has_residual else None
        out = self.output_tensor()
        try:
            views = [x.view(self.a_shape), y.view(self.y_shape), out.view(self.k_out)]
            if r is not None:
                views.append(r.view(self.k_out))
        except RuntimeError:  # not viewable at that shape
            return None
        if y.dtype != torch.float32 or (r is not None and r.stride() != out.stride()):
            return None
        key = tuple(v.stride() for v in views[:3])
        if key not in self._by_strides:
            strides = {name: st for name, st, v in zip(("in0", "in1", "out"), key, views)
                       if not v.is_contiguous()}
            try:
                self._by_strides[key] = self.kernel if not strides else \
                    self.kernel.tree.compile(self.kernel.isa, strides=strides)
            except (ValueError, CompileError):  # e.g. an expanded (stride 0) operand
                self._by_strides[key] = None
        kernel = self._by_strides[key]
        if kernel is None:
            return None
        kw = {}
        if r is not None:
            kw["residual"] = views[3].numpy()
        if self._bias_np is not None:
            kw["bias"] = self._bias_np
        kernel(views[0].numpy(), views[1].numpy(), views[2].numpy(), **kw)
        return out

    def _forward_layout(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        """A conv2d whose input is its producer's buffer (``in_src``, read in the kernel's
        layout) and / or whose output is written into the interior of ``out_buf``."""
        a = self.in_src.out_buf.numpy() if self.in_src is not None else \
            x.contiguous().numpy().reshape(self.a_shape)
        lay = self.layout
        if lay is None:
            out = self.out if self.out is not None else torch.empty(self.out_shape)
            o, ret = out.numpy(), out
        else:
            o, ret = self.out_buf.numpy(), lay.interior(self.out_buf)
        r = rest[-1] if self.has_residual else None
        if self.fused:
            kw = {}
            if r is not None:
                if lay is None:
                    kw["residual"] = r.contiguous().numpy()
                elif self.res_src is not None:
                    kw["residual"] = self.res_src.out_buf.numpy()
                else:  # the residual arrives in another layout: staged in this one
                    lay.interior(self.stage).copy_(r)
                    kw["residual"] = self.stage.numpy()
            self.kernel(a, None, o, **kw)
            return ret
        self.kernel(a, None, o)
        inner = ret
        if lay is not None and lay.block:  # [N][K/L][H][W][L]: the bias runs along K/L, L
            inner = lay.interior(self.out_buf)
            if self.bias is not None:
                inner.add_(self.bias.reshape(-1, lay.block)[None, :, None, None, :])
        elif self.bias is not None:
            inner.add_(self.bias)
        self._finish_unfused(inner, r)
        return ret


def _rewrite_merged(gm: fx.GraphModule, layer: Layer, name: str, args: tuple, order: dict,
                    replaced: dict) -> fx.Node:
    """``rewrite`` of merged siblings (``lower.merge_siblings``): the op runs where the first
    of them ran, each part's value becomes a column slice of its output."""
    g = gm.graph
    first = min(layer.nodes, key=order.__getitem__)
    with g.inserting_before(first):
        node = g.call_module(name, args)
    node.meta["val"] = torch.empty(layer.out_shape, device="meta")
    prev = node
    for end, a, b in layer.parts:
        with g.inserting_after(prev):
            part = g.call_function(operator.getitem, (node, (Ellipsis, slice(a, b))))
        part.meta.update(end.meta)
        end.replace_all_uses_with(part)
        replaced[end] = part
        prev = part
    for old in sorted(layer.nodes, key=order.__getitem__, reverse=True):
        g.erase_node(old)
    return node


def escapes(node: fx.Node, loop_set: set) -> tuple[bool, int, dict]:
    """Whether ``node``'s value (or anything torch ops compute from it: a view, a reshape or
    an in-place op may share its memory) leaves the graph; the graph order of its last use
    (while it does not); the graph order."""
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    last, stack, seen = order[node], list(node.users), set()
    while stack:
        u = stack.pop()
        if u in seen:
            continue
        seen.add(u)
        if u.op == "output":
            return True, last, order
        last = max(last, order[u])
        if u not in loop_set:
            stack.extend(u.users)
    return False, last, order


def rewrite(gm: fx.GraphModule, layers: list[Layer], ops: list[LoopOp]) -> list[fx.Node]:
    """Replaces each layer's chain of nodes by a call of its ``LoopOp``; returns the new
    nodes. ``gm`` is recompiled."""
    g = gm.graph
    replaced: dict[fx.Node, fx.Node] = {}
    new_nodes = []
    order = {n: i for i, n in enumerate(g.nodes)}
    for i, (layer, op) in enumerate(zip(layers, ops)):
        name = f"looptune_{i}"
        gm.add_submodule(name, op)
        args = [replaced.get(layer.x, layer.x)]
        if layer.y is not None:
            args.append(replaced.get(layer.y, layer.y))
        if layer.residual is not None:
            args.append(replaced.get(layer.residual, layer.residual))
        if layer.parts:
            new_nodes.append(_rewrite_merged(gm, layer, name, tuple(args), order, replaced))
            continue
        last = layer.nodes[-1]
        with g.inserting_after(last):
            node = g.call_module(name, tuple(args))
        node.meta.update(last.meta)  # (its shape: the chain's result's)
        last.replace_all_uses_with(node)
        for old in reversed(layer.nodes):
            g.erase_node(old)
        replaced[last] = node
        new_nodes.append(node)
    g.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return new_nodes


_PERMUTES = {torch.transpose, torch.permute, torch.swapaxes, torch.swapdims}


def _permutation(node: fx.Node, ndim: int) -> tuple[int, ...] | None:
    """The dims order of ``node`` when it is a transpose / permute of its first argument."""
    name = node.target if node.op == "call_method" else None
    if node.op == "call_function" and node.target in _PERMUTES:
        name = node.target.__name__
    if name is None or node.kwargs:
        return None
    args = node.args[1:]
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    if not all(isinstance(a, int) and -ndim <= a < ndim for a in args):
        return None
    args = tuple(a % ndim for a in args)
    if name in ("transpose", "swapaxes", "swapdims") and len(args) == 2:
        perm = list(range(ndim))
        perm[args[0]], perm[args[1]] = perm[args[1]], perm[args[0]]
        return tuple(perm)
    if name == "permute" and sorted(args) == list(range(ndim)):
        return args
    return None


def choose_output_orders(gm: fx.GraphModule, loop_nodes: list[fx.Node]) -> int:
    """Sets ``out_perm`` of each matmul / bmm ``LoopOp`` whose value is used once, by a
    transpose / permute: the kernel stores it in that order (the permuted value contiguous),
    when its output can still be viewed at the kernel's shape. Returns how many."""
    n = 0
    for node in loop_nodes:
        op = gm.get_submodule(str(node.target))
        if not isinstance(op, LoopOp) or not op.strided or not op.fused or op.has_residual:
            continue
        if len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.args[:1] != (node,):
            continue
        perm = _permutation(user, len(op.out_shape))
        if perm is None or perm == tuple(range(len(perm))):
            continue
        op.out_perm = perm
        try:
            op.output_tensor().view(op.k_out)
        except RuntimeError:
            op.out_perm = None
            continue
        n += 1
    return n


def plan_buffers(gm: fx.GraphModule, loop_nodes: list[fx.Node]) -> dict:
    """Assigns pool buffers to the outputs of ``loop_nodes`` (their ``LoopOp.out``); returns
    ``{"buffers": n, "pooled": n, "bytes": pool bytes, "unpooled_bytes": without sharing}``."""
    loop_set = set(loop_nodes)
    intervals = []
    for node in loop_nodes:
        leaves, last, order = escapes(node, loop_set)
        if not leaves:
            intervals.append((order[node], last, node))
    slots: list[list] = []  # [end, numel, [nodes], layout or None]
    for start, end, node in sorted(intervals, key=lambda t: t[0]):
        op = gm.get_submodule(str(node.target))
        geo = getattr(op, "layout", None)  # None: plain (int8 ops have no layout)
        numel = math.prod(op.out_shape if geo is None else geo.buf_shape)
        # a laid-out buffer (a zero border the kernels never write) is shared only with values
        # of the same layout (not merely the same buffer shape), so its border stays zero
        free = [s for s in slots if s[0] < start and s[3] == geo]
        # reuse the free slot closest in size (growing it if needed)
        best = min(free, key=lambda s: abs(s[1] - numel), default=None)
        if best is None:
            best = [end, numel, [], geo]
            slots.append(best)
        best[0], best[1] = end, max(best[1], numel)
        best[2].append(node)
    total = 0
    for _, numel, nodes, geo in slots:
        storage = torch.empty(numel) if geo is None else torch.zeros(geo.buf_shape)
        total += numel * 4
        for node in nodes:
            op = gm.get_submodule(str(node.target))
            if geo is None:
                op.out = storage.view(-1)[: math.prod(op.out_shape)].view(op.out_shape)
            else:
                op.out_buf = storage
    unpooled = sum(4 * math.prod(_buf_shape(gm.get_submodule(str(n.target))))
                   for _, _, n in intervals)
    return {"buffers": len(slots), "pooled": len(intervals), "bytes": total,
            "unpooled_bytes": unpooled}


def _buf_shape(op: LoopOp) -> tuple[int, ...]:
    lay = getattr(op, "layout", None)
    return op.out_shape if lay is None else lay.buf_shape
