"""Lowering: find the layers looptune runs in an FX graph and what their kernels fuse.

An *anchor* is a conv2d (``nn.Conv2d`` or ``F.conv2d``), a linear (``nn.Linear`` /
``F.linear``) or a matmul / bmm of two activations (attention). From the anchor the matcher
follows single-user chains: an eval-mode BatchNorm after a conv is folded into its weights;
then a residual ``add`` of a tensor of the same shape; then ReLU / ReLU6 / exact GELU. The
chain becomes one :class:`Layer` (epilogue: ``act(acc + bias + residual)``). Anything else stays
a torch op. Both FX forms are understood: ``call_module`` (``symbolic_trace``) and
``call_function`` with weights as constants (dynamo, whose weights arrive as placeholders).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from looptune.model.capture import shape_of
from looptune.model.fold import fold_bn

_CONV_FNS = {torch.conv2d, F.conv2d}
_LINEAR_FNS = {F.linear, torch._C._nn.linear}
_MATMUL_FNS = {torch.matmul, operator.matmul, torch.bmm}
_ADD_FNS = {operator.add, operator.iadd, torch.add}
_RELU_FNS = {F.relu, torch.relu, torch.relu_}
_GELU_FNS = {F.gelu, torch._C._nn.gelu}
MAX_BATCH_DIMS = 6  # a bmm with more batch dims runs them as one (their product)


@dataclass
class Layer:
    """One looptune kernel: ``out = act(anchor(x[, y]) + bias + residual)``."""

    kind: str  # "conv2d" | "linear" | "matmul" | "bmm"
    x: fx.Node
    y: fx.Node | None = None  # the second activation of a matmul / bmm
    residual: fx.Node | None = None
    weight: torch.Tensor | None = None  # conv [K, C/g, R, S] (BN folded); linear [N, K]
    bias: torch.Tensor | None = None
    act: str = ""  # "" | "relu" | "relu6" | "gelu"
    dims: dict[str, int] = field(default_factory=dict)
    in_shape: tuple[int, ...] = ()
    y_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    bn_folded: bool = False
    nodes: list[fx.Node] = field(default_factory=list)  # the chain it replaces, in order
    # linears merged into this one (merge_siblings): each part's chain end and its columns
    parts: list[tuple[fx.Node, int, int]] = field(default_factory=list)

    @property
    def epilogue(self) -> str:
        terms = (["bias"] if self.bias is not None else []) + (["add"] if self.residual else [])
        return "+".join(terms + ([self.act] if self.act else []))

    @property
    def reduction(self) -> int:
        d = self.dims
        return d["c"] // d["groups"] * d["r"] * d["s"] if self.kind == "conv2d" else d["k"]

    @property
    def op_name(self) -> str:
        return "conv2d" if self.kind == "conv2d" else self.kind

    @property
    def batch_dims(self) -> tuple[int, ...]:
        """A bmm's batch dims as its kernel sees them: one (their product) when at most one
        of them is not 1, else each of those (up to :data:`MAX_BATCH_DIMS`; the kernel is then
        a contraction over each, so views of them, e.g. the [batch][heads] of a head split,
        are read in place)."""
        lead = tuple(d for d in self.in_shape[:-2] if d != 1)
        return lead if 1 < len(lead) <= MAX_BATCH_DIMS else (self.dims["b"],)

    @property
    def count(self) -> int:
        """How many of the model's layers this kernel computes (merged siblings: several)."""
        return max(1, len(self.parts))


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


class Lowering:
    """Matches layers in ``gm``; ``constants`` maps placeholder nodes to the tensors they
    always hold (dynamo's lifted parameters and buffers)."""

    def __init__(self, gm: fx.GraphModule, constants: dict[fx.Node, torch.Tensor] | None = None,
                 groups_ok: bool = False) -> None:
        self.gm = gm
        self.constants = constants or {}
        self.groups_ok = groups_ok  # the engine computes grouped convolutions
        self._order: dict[fx.Node, int] = {}

    # --- node classification -----------------------------------------------------------
    def module(self, node: fx.Node) -> nn.Module | None:
        if node.op != "call_module":
            return None
        return self.gm.get_submodule(str(node.target))

    def const(self, x: Any) -> torch.Tensor | None:
        if not isinstance(x, fx.Node):
            return None
        if x.op == "get_attr":
            obj: Any = self.gm
            for part in str(x.target).split("."):
                obj = getattr(obj, part)
            return obj if isinstance(obj, torch.Tensor) else None
        return self.constants.get(x)

    def act_of(self, node: fx.Node) -> tuple[str, fx.Node] | None:
        m = self.module(node)
        if m is not None:
            if type(m) is nn.ReLU:
                return "relu", node.args[0]
            if type(m) is nn.ReLU6:
                return "relu6", node.args[0]
            if type(m) is nn.GELU and m.approximate == "none":
                return "gelu", node.args[0]
            if type(m) is nn.Hardtanh and (m.min_val, m.max_val) == (0.0, 6.0):
                return "relu6", node.args[0]
            return None
        if node.op == "call_function":
            if node.target in _RELU_FNS:
                return "relu", node.args[0]
            if node.target is F.relu6:
                return "relu6", node.args[0]
            if node.target is F.hardtanh and (_arg(node, 1, "min_val", -1.0),
                                              _arg(node, 2, "max_val", 1.0)) == (0.0, 6.0):
                return "relu6", node.args[0]
            if node.target in _GELU_FNS and _arg(node, 1, "approximate", "none") == "none":
                return "gelu", node.args[0]
        if node.op == "call_method" and node.target in ("relu", "relu_") and not node.kwargs:
            return "relu", node.args[0]
        return None

    def add_of(self, node: fx.Node) -> tuple[Any, Any] | None:
        if node.op == "call_function" and node.target in _ADD_FNS:
            if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
                return None
            if set(node.kwargs) - {"alpha"}:
                return None
            return node.args[0], node.args[1]
        if node.op == "call_method" and node.target in ("add", "add_") and len(node.args) == 2:
            if node.kwargs:
                return None
            return node.args[0], node.args[1]
        return None

    def bn_of(self, node: fx.Node) -> tuple | None:
        """(input, mean, var, gamma, beta, eps) of an eval-mode BatchNorm2d."""
        m = self.module(node)
        if isinstance(m, nn.BatchNorm2d):
            if m.training or m.running_mean is None:
                return None
            return node.args[0], m.running_mean, m.running_var, m.weight, m.bias, m.eps
        if node.op == "call_function" and node.target is F.batch_norm:
            if _arg(node, 5, "training", False):
                return None
            mean, var = self.const(_arg(node, 1, "running_mean")), self.const(
                _arg(node, 2, "running_var"))
            w, b = _arg(node, 3, "weight"), _arg(node, 4, "bias")
            gamma, beta = self.const(w), self.const(b)
            if mean is None or var is None or (w is not None and gamma is None) or (
                    b is not None and beta is None):
                return None
            eps = _arg(node, 7, "eps", 1e-5)
            if not isinstance(eps, (int, float)):  # a tensor input (dynamic shapes)
                return None
            return node.args[0], mean, var, gamma, beta, float(eps)
        return None

    def anchor(self, node: fx.Node) -> Layer | None:
        m = self.module(node)
        if isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward:
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                return None
            return self._conv(node, node.args[0], m.weight, m.bias, m.stride, m.padding,
                              m.dilation, m.groups)
        if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
            return self._linear(node, node.args[0], m.weight, m.bias)
        if node.op == "call_function" and node.target in _CONV_FNS:
            w, b = self.const(_arg(node, 1, "weight")), _arg(node, 2, "bias")
            bias = self.const(b)
            if w is None or (b is not None and bias is None):
                return None
            pad = _arg(node, 4, "padding", 0)
            if isinstance(pad, str):
                return None
            return self._conv(node, node.args[0], w, bias, _arg(node, 3, "stride", 1), pad,
                              _arg(node, 5, "dilation", 1), _arg(node, 6, "groups", 1))
        if node.op == "call_function" and node.target in _LINEAR_FNS:
            w, b = self.const(_arg(node, 1, "weight")), _arg(node, 2, "bias")
            bias = self.const(b)
            if w is None or (b is not None and bias is None):
                return None
            return self._linear(node, node.args[0], w, bias)
        is_mm = (node.op == "call_function" and node.target in _MATMUL_FNS) or (
            node.op == "call_method" and node.target in ("matmul", "bmm"))
        if is_mm and len(node.args) == 2 and not node.kwargs:
            return self._matmul(node, *node.args)
        return None

    # --- anchors -----------------------------------------------------------------------
    @staticmethod
    def _pair(v: Any) -> tuple[int, int] | None:
        if isinstance(v, int):
            return v, v
        if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
            return int(v[0]), int(v[1])
        return None

    def _conv(self, node: fx.Node, x: Any, w: torch.Tensor, b: torch.Tensor | None,
              stride: Any, pad: Any, dilation: Any, groups: Any) -> Layer | None:
        st, pd, dl = self._pair(stride), self._pair(pad), self._pair(dilation)
        if st is None or pd is None or dl != (1, 1) or st[0] != st[1] or pd[0] != pd[1]:
            return None
        if not isinstance(groups, int) or (groups != 1 and not self.groups_ok):
            return None
        xs, os_ = shape_of(x) if isinstance(x, fx.Node) else None, shape_of(node)
        if xs is None or os_ is None or len(xs) != 4 or w.dim() != 4:
            return None
        n, c, h, wd = xs
        k, _, r, s = w.shape
        dims = dict(n=n, c=c, h=h, w=wd, k=int(k), r=int(r), s=int(s), stride=st[0],
                    pad=pd[0], groups=groups)
        return Layer("conv2d", x, weight=w.detach(), bias=None if b is None else b.detach(),
                     dims=dims, in_shape=xs, out_shape=os_, nodes=[node])

    def _linear(self, node: fx.Node, x: Any, w: torch.Tensor,
                b: torch.Tensor | None) -> Layer | None:
        xs, os_ = shape_of(x) if isinstance(x, fx.Node) else None, shape_of(node)
        if xs is None or os_ is None or len(xs) < 2 or w.dim() != 2:
            return None
        dims = dict(m=math.prod(xs[:-1]), k=xs[-1], n=int(w.shape[0]))
        return Layer("linear", x, weight=w.detach(), bias=None if b is None else b.detach(),
                     dims=dims, in_shape=xs, out_shape=os_, nodes=[node])

    def _matmul(self, node: fx.Node, x: Any, y: Any) -> Layer | None:
        if not (isinstance(x, fx.Node) and isinstance(y, fx.Node)):
            return None
        if self.const(x) is not None or self.const(y) is not None:
            return None
        xs, ys, os_ = shape_of(x), shape_of(y), shape_of(node)
        if xs is None or ys is None or os_ is None or len(xs) != len(ys) or len(xs) < 2:
            return None
        if xs[:-2] != ys[:-2] or xs[-1] != ys[-2]:
            return None  # broadcasting matmuls stay in torch
        batch = math.prod(xs[:-2])
        dims = dict(b=batch, m=xs[-2], k=xs[-1], n=ys[-1])
        kind = "matmul" if len(xs) == 2 else "bmm"
        return Layer(kind, x, y=y, dims=dims, in_shape=xs, y_shape=ys, out_shape=os_,
                     nodes=[node])

    # --- chains ------------------------------------------------------------------------
    @staticmethod
    def _sole_user(node: fx.Node) -> fx.Node | None:
        return next(iter(node.users)) if len(node.users) == 1 else None

    def match(self, node: fx.Node) -> Layer | None:
        layer = self.anchor(node)
        if layer is None:
            return None
        cur = node
        nxt = self._sole_user(cur)
        if layer.kind == "conv2d" and nxt is not None:
            bn = self.bn_of(nxt)
            if bn is not None and bn[0] is cur and bn[1].shape[0] == layer.dims["k"]:
                layer.weight, layer.bias = fold_bn(layer.weight, layer.bias, *bn[1:])
                layer.bn_folded = True
                layer.nodes.append(nxt)
                cur = nxt
        nxt = self._sole_user(cur)
        if nxt is not None:
            add = self.add_of(nxt)
            if add is not None and cur in add and add[0] is not add[1]:
                other = add[1] if add[0] is cur else add[0]
                inplace_other = (nxt.op == "call_method" and nxt.target == "add_") or (
                    nxt.target is operator.iadd)
                # the residual must exist before the anchor runs (the skip path), so in a
                # block whose two branches meet, the branch computed last takes the add
                if (isinstance(other, fx.Node) and shape_of(other) == layer.out_shape
                        and self._order.get(other, -1) < self._order.get(node, -1)
                        and not (inplace_other and add[0] is not cur)):
                    layer.residual = other
                    layer.nodes.append(nxt)
                    cur = nxt
        nxt = self._sole_user(cur)
        if nxt is not None:
            act = self.act_of(nxt)
            if act is not None and act[1] is cur:
                layer.act = act[0]
                layer.nodes.append(nxt)
        return layer

    def layers(self) -> list[Layer]:
        """Every layer of the graph, in graph order (chains never overlap)."""
        out, taken = [], set()
        self._order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        for node in list(self.gm.graph.nodes):
            if node in taken:
                continue
            layer = self.match(node)
            if layer is not None and not taken.intersection(layer.nodes):
                out.append(layer)
                taken.update(layer.nodes)
        return out


def merge_siblings(layers: list[Layer]) -> list[Layer]:
    """Linears that read the same value with the same activation and no residual (a
    transformer's Q, K and V projections) become one wider linear: its weight rows and bias
    concatenated, each original output a column slice of the merged one (``Layer.parts``).
    One GEMM instead of several: the input is read (and, quantized, quantized) once, and
    one kernel call replaces several. The merged layer takes the place of the first."""
    groups: dict[tuple, list[Layer]] = {}
    for la in layers:
        if la.kind == "linear" and la.residual is None and la.weight is not None:
            groups.setdefault((la.x, la.act, la.in_shape, la.weight.dtype), []).append(la)
    merged: dict[int, Layer] = {}
    gone: set[int] = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        first = group[0]
        w = torch.cat([la.weight for la in group], 0)
        biases = [la.bias if la.bias is not None else torch.zeros(la.weight.shape[0],
                                                                  dtype=la.weight.dtype)
                  for la in group]
        any_bias = any(la.bias is not None for la in group)
        parts, start = [], 0
        for la in group:
            n = int(la.weight.shape[0])
            parts.append((la.nodes[-1], start, start + n))
            start += n
        dims = dict(first.dims, n=start)
        out_shape = (*first.out_shape[:-1], start)
        merged[id(first)] = Layer(
            "linear", first.x, weight=w, bias=torch.cat(biases) if any_bias else None,
            act=first.act, dims=dims, in_shape=first.in_shape, out_shape=out_shape,
            nodes=[n for la in group for n in la.nodes], parts=parts)
        gone.update(id(la) for la in group[1:])
    return [merged.get(id(la), la) for la in layers if id(la) not in gone]
