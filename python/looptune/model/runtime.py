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
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import fx, nn

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
            lead = (d["b"],) if layer.kind == "bmm" else ()
            self.a_shape, self.y_shape = (*lead, d["m"], d["k"]), (*lead, d["k"], d["n"])
            self.k_out = (*lead, d["m"], d["n"])
            bias_shape, b = (d["n"],), None
        self.bias = None if layer.bias is None else layer.bias.float().reshape(bias_shape)
        self._bias_np = None if self.bias is None else np.ascontiguousarray(
            layer.bias.float().numpy())
        if b is not None:
            if fused and self._bias_np is not None:
                kernel.set_constant(b, bias=self._bias_np)
            else:
                kernel.set_constant(b)
        self.out: torch.Tensor | None = None  # a pool buffer (plan_buffers), else per call

    def extra_repr(self) -> str:
        return f"{self.kernel.tree.computation.name}, epilogue={self.epilogue!r}, " \
               f"fused={self.fused}"

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
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
        if r is not None:
            out.add_(r)
        if self.act == "relu":
            out.relu_()
        elif self.act == "relu6":
            out.clamp_(0.0, 6.0)
        elif self.act == "gelu":
            torch.ops.aten.gelu_(out)
        return out


def rewrite(gm: fx.GraphModule, layers: list[Layer], ops: list[LoopOp]) -> list[fx.Node]:
    """Replaces each layer's chain of nodes by a call of its ``LoopOp``; returns the new
    nodes. ``gm`` is recompiled."""
    g = gm.graph
    replaced: dict[fx.Node, fx.Node] = {}
    new_nodes = []
    for i, (layer, op) in enumerate(zip(layers, ops)):
        name = f"looptune_{i}"
        gm.add_submodule(name, op)
        args = [replaced.get(layer.x, layer.x)]
        if layer.y is not None:
            args.append(replaced.get(layer.y, layer.y))
        if layer.residual is not None:
            args.append(replaced.get(layer.residual, layer.residual))
        last = layer.nodes[-1]
        with g.inserting_after(last):
            node = g.call_module(name, tuple(args))
        last.replace_all_uses_with(node)
        for old in reversed(layer.nodes):
            g.erase_node(old)
        replaced[last] = node
        new_nodes.append(node)
    g.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return new_nodes


def plan_buffers(gm: fx.GraphModule, loop_nodes: list[fx.Node]) -> dict:
    """Assigns pool buffers to the outputs of ``loop_nodes`` (their ``LoopOp.out``); returns
    ``{"buffers": n, "pooled": n, "bytes": pool bytes, "unpooled_bytes": without sharing}``."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    loop_set = set(loop_nodes)
    intervals = []
    for node in loop_nodes:
        last, escapes = order[node], False
        stack, seen = list(node.users), set()
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u.op == "output":
                escapes = True
                break
            last = max(last, order[u])
            if u not in loop_set:  # a torch op: its result may alias (a view, in place)
                stack.extend(u.users)
        if not escapes:
            intervals.append((order[node], last, node))
    slots: list[list] = []  # [end, numel, [nodes]]
    for start, end, node in sorted(intervals, key=lambda t: t[0]):
        op = gm.get_submodule(str(node.target))
        numel = math.prod(op.out_shape)
        free = [s for s in slots if s[0] < start]
        # reuse the free slot closest in size (growing it if needed)
        best = min(free, key=lambda s: abs(s[1] - numel), default=None)
        if best is None:
            best = [end, numel, []]
            slots.append(best)
        best[0], best[1] = end, max(best[1], numel)
        best[2].append(node)
    total = 0
    for _, numel, nodes in slots:
        storage = torch.empty(numel)
        total += numel * 4
        for node in nodes:
            op = gm.get_submodule(str(node.target))
            op.out = storage[: math.prod(op.out_shape)].view(op.out_shape)
    unpooled = sum(4 * math.prod(gm.get_submodule(str(n.target)).out_shape)
                   for _, _, n in intervals)
    return {"buffers": len(slots), "pooled": len(intervals), "bytes": total,
            "unpooled_bytes": unpooled}
