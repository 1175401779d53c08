"""Max pooling between looptune layers: ``nn.MaxPool2d`` / ``F.max_pool2d`` as a separable max
over strided views of a bordered buffer.

PyTorch's eager CPU max_pool2d on NCHW is slow (ResNet-18's 3x3 / 2 pool of 8x64x112x112
takes ~49 ms on one Zen 4 core, more than any of its convolutions); the same pool as a maximum
over the window's rows, then over its columns, each a few ``torch.maximum`` calls on strided
views, takes ~8 ms. The padding is a border of the input buffer: ``-inf`` in a buffer of the
op's own (the input copied in), or, when the input is a looptune conv whose activation is ReLU
or ReLU6 (every value >= 0, so a zero border pools like ``-inf``), the producer's own
zero-bordered buffer (layout propagation, ``looptune.model.layout``), read without a copy. The
result is exact (a max of the same elements) and can itself be written into the bordered
buffer the next conv reads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

_POOL_FNS = {F.max_pool2d, torch.max_pool2d}


def _pair(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, (tuple, list)) and len(v) == 2 and v[0] == v[1] and isinstance(v[0], int):
        return int(v[0])
    return None


class MaxPoolOp(nn.Module):
    """A 2-D max pool (square window ``k``, stride ``s``, padding ``p``, no dilation / ceil)
    of an NCHW input of ``in_shape``. Attributes as :class:`runtime.LoopOp`'s the pool and the
    layout planner use: ``out_shape``, ``out`` (a plain pool buffer), ``layout`` / ``out_buf``
    (its output inside a bordered buffer), ``in_src`` (read the producer's buffer)."""

    kind = "maxpool2d"
    has_residual = False
    fused = False
    act = ""

    def __init__(self, in_shape: tuple[int, ...], k: int, s: int, p: int) -> None:
        super().__init__()
        n, c, h, w = in_shape
        self.in_shape, self.k, self.s, self.p = tuple(in_shape), k, s, p
        self.out_shape = (n, c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        self.out: torch.Tensor | None = None
        self.layout = None
        self.out_buf: torch.Tensor | None = None
        self.in_src = None
        self._padded: torch.Tensor | None = None  # -inf bordered copy of a torch input
        self._rows: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"k={self.k}, s={self.s}, p={self.p}, in_src={self.in_src is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = self.in_shape
        if self.in_src is not None:
            buf, halo = self.in_src.out_buf, self.in_src.layout.halo
        else:
            halo = self.p
            if self._padded is None:
                n, c = self.in_shape[:2]
                self._padded = torch.full((n, c, h + 2 * halo, w + 2 * halo), -math.inf)
            buf = self._padded
            buf[:, :, halo:halo + h, halo:halo + w].copy_(x)
        if self.layout is not None:
            out = self.layout.interior(self.out_buf)
        else:
            out = self.out if self.out is not None else torch.empty(self.out_shape)
        oh, ow = self.out_shape[2:]
        d, k, s = halo - self.p, self.k, self.s
        if self._rows is None or self._rows.shape[-1] != buf.shape[-1]:
            self._rows = torch.empty(*self.out_shape[:3], buf.shape[-1])
        rows = self._rows
        span_h, span_w = s * (oh - 1) + 1, s * (ow - 1) + 1
        if k == 1:
            rows.copy_(buf[:, :, d:d + span_h:s, :])
        else:
            torch.maximum(buf[:, :, d:d + span_h:s, :], buf[:, :, d + 1:d + 1 + span_h:s, :],
                          out=rows)
        for i in range(2, k):
            torch.maximum(rows, buf[:, :, d + i:d + i + span_h:s, :], out=rows)
        if k == 1:
            out.copy_(rows[..., d:d + span_w:s])
        else:
            torch.maximum(rows[..., d:d + span_w:s], rows[..., d + 1:d + 1 + span_w:s], out=out)
        for j in range(2, k):
            torch.maximum(out, rows[..., d + j:d + j + span_w:s], out=out)
        return out


def _pool_args(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, int, int, int] | None:
    """(input, k, s, p) of a max pool the op computes, else None."""
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if type(m) is not nn.MaxPool2d or m.ceil_mode or m.return_indices:
            return None
        k, s, p, dil = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)
        x = node.args[0] if node.args else None
    elif node.op == "call_function" and node.target in _POOL_FNS:
        args = list(node.args) + [None] * (7 - len(node.args))
        kw = node.kwargs

        def get(i, name, default):
            v = kw.get(name, args[i])
            return default if v is None else v

        x = args[0] if node.args else kw.get("input")
        k = _pair(get(1, "kernel_size", None))
        st = get(2, "stride", None)
        s = k if st in (None, [], ()) else _pair(st)
        p, dil = _pair(get(3, "padding", 0)), _pair(get(4, "dilation", 1))
        if get(5, "ceil_mode", False) or get(6, "return_indices", False):
            return None
    else:
        return None
    if not isinstance(x, fx.Node) or None in (k, s, p) or dil != 1 or k < 1 or s < 1:
        return None
    if 2 * p > k:  # (torch refuses it; a window entirely in the padding)
        return None
    return x, k, s, p


def lower_pools(gm: fx.GraphModule) -> list[fx.Node]:
    """Replaces every max pool of a 4-D float input (shapes propagated) by a
    :class:`MaxPoolOp`; returns the new nodes. ``gm`` is recompiled."""
    from looptune.model.capture import finish_rewrite, shape_of, swap_in

    g, new = gm.graph, []
    for node in list(g.nodes):
        got = _pool_args(gm, node)
        if got is None:
            continue
        x, k, s, p = got
        xs, os_ = shape_of(x), shape_of(node)
        if xs is None or len(xs) != 4 or os_ is None:
            continue
        op = MaxPoolOp(tuple(xs), k, s, p)
        if op.out_shape != tuple(os_):
            continue
        new.append(swap_in(gm, node, f"looptune_pool_{len(new)}", op, (x,)))
    finish_rewrite(gm, bool(new))
    return new
