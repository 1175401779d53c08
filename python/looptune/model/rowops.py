"""Row operations in the engine: LayerNorm, softmax and GELU between the kernels.

After the kernels are matched (``looptune.model.lower``), a transformer still has ops that
are not contractions: the layer norms, the attention's softmax (usually after a division of
the scores by a constant, ``/ sqrt(head_dim)``), and a GELU the matcher could not fuse.
:func:`lower_rowops` runs them as the engine's vectorized row functions (``_core.layer_norm``,
``_core.softmax``, ``_core.gelu``) on the engine's thread pool, at the kernels' thread count,
instead of torch ops (which a compiled model runs on one thread when its kernels use more,
``looptune.model.serial_torch_ops``):

* ``nn.LayerNorm`` / ``F.layer_norm`` over the last dimension (weight and bias constants or
  absent);
* ``softmax`` over the last dimension (``torch.softmax``, ``F.softmax``, ``Tensor.softmax``,
  ``nn.Softmax``), with a multiplication or division by a constant number just before it
  (and used only by it) folded in: ``softmax(x * c)`` is one pass;
* exact GELU (``nn.GELU()``, ``F.gelu``) not fused into a kernel's store.

Each becomes a :class:`RowOp` whose output is a pool buffer (``runtime.plan_buffers``); an
input that turns out not to be float32 at run time goes to the torch op it replaced.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from looptune import _core
from looptune.model.capture import finish_rewrite, shape_of, swap_in
from looptune.model.lower import _GELU_FNS, Lowering, _arg

_SOFTMAX_FNS = {torch.softmax, F.softmax}
_LAYER_NORM_FNS = {F.layer_norm, torch.layer_norm}
_MUL_FNS = {operator.mul, torch.mul}
_DIV_FNS = {operator.truediv, torch.div, torch.true_divide}

KINDS = ("layer_norm", "softmax", "gelu")


def available() -> bool:
    """Whether this engine build has the row functions."""
    return all(hasattr(_core, name) for name in KINDS)


class RowOp(nn.Module):
    """One row operation: ``forward(x)`` -> a new float32 tensor (``out``, a pool buffer when
    ``plan_buffers`` gave one). ``kind``: ``"layer_norm"`` (``weight``, ``bias``, ``eps``),
    ``"softmax"`` (``scale``: softmax(x * scale)) or ``"gelu"``; ``fallback(x)`` computes the
    same with torch (used for inputs that are not float32)."""

    def __init__(self, kind: str, out_shape: tuple[int, ...], fallback: Callable, *,
                 weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 eps: float = 1e-5, scale: float = 1.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown row op {kind!r}; expected one of {KINDS}")
        self.kind, self.out_shape, self.fallback = kind, tuple(out_shape), fallback
        self.eps, self.scale = float(eps), float(scale)
        self._w = None if weight is None else weight.detach().float().contiguous().numpy()
        self._b = None if bias is None else bias.detach().float().contiguous().numpy()
        self.out: torch.Tensor | None = None  # a pool buffer (plan_buffers), else per call
        self.layout = None  # plain (plan_buffers pools it with the plain values)

    def extra_repr(self) -> str:
        if self.kind == "softmax":
            return f"softmax, scale={self.scale:.6g}"
        if self.kind == "layer_norm":
            return f"layer_norm, eps={self.eps:g}, affine={self._w is not None}"
        return self.kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or tuple(x.shape) != self.out_shape:
            return self.fallback(x)
        a = x.contiguous().numpy()
        out = self.out if self.out is not None else torch.empty(self.out_shape)
        o = out.numpy()
        if self.kind == "softmax":
            _core.softmax(a, scale=self.scale, out=o)
        elif self.kind == "layer_norm":
            _core.layer_norm(a, self._w, self._b, eps=self.eps, out=o)
        else:
            _core.gelu(a, out=o)
        return out


class _Matcher(Lowering):
    """The row operations' patterns (``module`` / ``const``: :class:`Lowering`'s)."""

    @staticmethod
    def _last_dim(dim: Any, ndim: int) -> bool:
        return isinstance(dim, int) and ndim >= 1 and dim in (-1, ndim - 1)

    def layer_norm(self, node: fx.Node) -> dict | None:
        m = self.module(node)
        if m is not None:
            if type(m) is not nn.LayerNorm or len(m.normalized_shape) != 1:
                return None
            return dict(x=node.args[0], d=m.normalized_shape[0], weight=m.weight, bias=m.bias,
                        eps=m.eps)
        if node.op != "call_function" or node.target not in _LAYER_NORM_FNS:
            return None
        shape, w, b = _arg(node, 1, "normalized_shape"), _arg(node, 2, "weight"), _arg(
            node, 3, "bias")
        eps = _arg(node, 4, "eps", 1e-5)
        if not isinstance(shape, (list, tuple)) or len(shape) != 1 or not isinstance(
                shape[0], int) or not isinstance(eps, (int, float)):
            return None
        weight, bias = self.const(w), self.const(b)
        if (w is not None and weight is None) or (b is not None and bias is None):
            return None
        return dict(x=node.args[0], d=shape[0], weight=weight, bias=bias, eps=float(eps))

    def softmax(self, node: fx.Node) -> dict | None:
        m = self.module(node)
        if m is not None:
            if type(m) is not nn.Softmax:
                return None
            x, dim, dtype = node.args[0], m.dim, None
        elif node.op == "call_function" and node.target in _SOFTMAX_FNS:
            # F.softmax(input, dim, _stacklevel, dtype); torch.softmax(input, dim, dtype)
            x, dim = node.args[0], _arg(node, 1, "dim")
            dtype = _arg(node, 3 if node.target is F.softmax else 2, "dtype")
        elif node.op == "call_method" and node.target == "softmax":
            x, dim, dtype = node.args[0], _arg(node, 1, "dim"), _arg(node, 2, "dtype")
        else:
            return None
        xs = shape_of(x) if isinstance(x, fx.Node) else None
        if xs is None or dtype not in (None, torch.float32) or not self._last_dim(dim, len(xs)):
            return None
        return dict(x=x, scale=1.0)

    def scaled(self, node: fx.Node) -> tuple[fx.Node, float] | None:
        """(a, c) when ``node`` is ``a * c``, ``c * a`` or ``a / c`` with a finite, nonzero
        number ``c`` (as the multiplier ``c`` or ``1 / c``) and has one user."""
        if len(node.users) != 1 or node.kwargs:
            return None
        fn = node.target
        if node.op == "call_method":
            fn = {"mul": operator.mul, "div": operator.truediv}.get(str(node.target))
        elif node.op != "call_function":
            return None
        if len(node.args) != 2:
            return None
        a, c = node.args
        if fn in _MUL_FNS and isinstance(a, (int, float)) and isinstance(c, fx.Node):
            a, c = c, a
        if not isinstance(a, fx.Node) or isinstance(c, bool) or not isinstance(c, (int, float)):
            return None
        if not math.isfinite(c) or c == 0:
            return None
        if fn in _MUL_FNS:
            return a, float(c)
        if fn in _DIV_FNS:
            return a, 1.0 / float(c)
        return None

    def gelu(self, node: fx.Node) -> dict | None:
        m = self.module(node)
        if m is not None:
            if type(m) is nn.GELU and m.approximate == "none":
                return dict(x=node.args[0])
            return None
        if node.op == "call_function" and node.target in _GELU_FNS and _arg(
                node, 1, "approximate", "none") == "none":
            return dict(x=node.args[0])
        return None


def _fallback(kind: str, spec: dict) -> Callable:
    if kind == "layer_norm":
        d, w, b, eps = spec["d"], spec["weight"], spec["bias"], spec["eps"]
        return lambda x: F.layer_norm(x, (d,), w, b, eps)
    if kind == "softmax":
        scale = spec["scale"]
        return lambda x: torch.softmax(x * scale if scale != 1.0 else x, -1)
    return F.gelu


def lower_rowops(gm: fx.GraphModule, constants: dict | None = None) -> list[fx.Node]:
    """Replaces the row operations of ``gm`` (see the module doc) by :class:`RowOp` calls;
    returns the new nodes (``gm`` is recompiled). Nothing changes on an engine without the
    row functions."""
    if not available():
        return []
    match = _Matcher(gm, constants)
    new = []
    for node in list(gm.graph.nodes):
        for kind in KINDS:
            spec = getattr(match, kind)(node)
            if spec is not None:
                break
        else:
            continue
        x, out_shape = spec["x"], shape_of(node)
        if not isinstance(x, fx.Node) or out_shape is None or shape_of(x) != out_shape:
            continue
        if kind == "layer_norm" and (not out_shape or out_shape[-1] != spec["d"]):
            continue
        erase = []  # the scaling folded into a softmax, used by it alone
        if kind == "softmax" and x.op in ("call_function", "call_method"):
            sc = match.scaled(x)
            if sc is not None and shape_of(sc[0]) == out_shape:
                x, spec["scale"] = sc[0], sc[1]
                erase.append(spec["x"])
        op = RowOp(kind, out_shape, _fallback(kind, spec), weight=spec.get("weight"),
                   bias=spec.get("bias"), eps=spec.get("eps", 1e-5),
                   scale=spec.get("scale", 1.0))
        new.append(swap_in(gm, node, f"looptune_row_{len(new)}", op, (x,), tuple(erase)))
    finish_rewrite(gm, bool(new))
    return new


__all__ = ["KINDS", "RowOp", "available", "lower_rowops"]
