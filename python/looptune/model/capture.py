"""Capture: a model as a ``torch.fx.GraphModule`` with the shape of every value.

``looptune.compile`` traces a copy of the model with ``torch.fx.symbolic_trace``; modules that
cannot be traced symbolically are first replaced by traceable equivalents sharing their
weights (``nn.TransformerEncoderLayer``, whose fast path branches on tensor properties, becomes
:class:`EncoderLayer`: projections, softmax attention, FFN, LayerNorms). The torch.compile
backend gets its graph from dynamo instead. Either way :func:`propagate_shapes` records the
shape of every node from the example inputs.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import fx, nn
from torch.nn import functional as F


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (no masks) as plain ops: the same parameters."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        attn = layer.self_attn
        d = attn.embed_dim
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            raise NotImplementedError("only the standard self-attention is decomposed")
        self.heads, self.head_dim = attn.num_heads, d // attn.num_heads
        self.batch_first, self.norm_first = attn.batch_first, layer.norm_first
        w, b = attn.in_proj_weight.detach(), attn.in_proj_bias
        self.q, self.k, self.v = (nn.Linear(d, d, bias=b is not None) for _ in range(3))
        for i, lin in enumerate((self.q, self.k, self.v)):
            lin.weight.data = w[i * d : (i + 1) * d].clone()
            if b is not None:
                lin.bias.data = b.detach()[i * d : (i + 1) * d].clone()
        self.out = attn.out_proj
        self.linear1, self.linear2 = layer.linear1, layer.linear2
        self.norm1, self.norm2 = layer.norm1, layer.norm2
        act = layer.activation
        if act is F.gelu:
            act = nn.GELU()
        elif act is F.relu:
            act = nn.ReLU()
        if not isinstance(act, nn.Module):
            raise NotImplementedError(f"activation {act!r}")
        self.act = act

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (
            t.view(b, s, self.heads, self.head_dim).transpose(1, 2)
            for t in (self.q(x), self.k(x), self.v(x))
        )
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(ctx.transpose(1, 2).reshape(b, s, d))

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        x = src if self.batch_first else src.transpose(0, 1)
        if self.norm_first:
            x = x + self._attention(self.norm1(x))
            x = x + self.linear2(self.act(self.linear1(self.norm2(x))))
        else:
            x = self.norm1(x + self._attention(x))
            x = self.norm2(x + self.linear2(self.act(self.linear1(x))))
        return x if self.batch_first else x.transpose(0, 1)


def _decompose(model: nn.Module) -> nn.Module:
    if isinstance(model, nn.TransformerEncoderLayer):
        return EncoderLayer(model)
    for name, child in list(model.named_children()):
        new = _decompose(child)
        if new is not child:
            setattr(model, name, new)
    return model


def trace(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` (the model itself is left alone)."""
    return fx.symbolic_trace(_decompose(copy.deepcopy(model)))


def propagate_shapes(gm: fx.GraphModule, example_inputs: tuple) -> None:
    """Run ``gm`` once on the example inputs; every node's ``meta["tensor_meta"]`` is set."""
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    """The shape of a node's value (from shape propagation or dynamo's fake tensors)."""
    meta = node.meta.get("tensor_meta")
    if meta is not None and hasattr(meta, "shape"):
        return tuple(int(d) for d in meta.shape)
    val = node.meta.get("example_value", node.meta.get("val"))
    if isinstance(val, torch.Tensor):
        if any(not isinstance(d, int) for d in val.shape):  # symbolic sizes (SymInt)
            return None
        return tuple(val.shape)
    return None


def swap_in(gm: fx.GraphModule, node: fx.Node, name: str, module: torch.nn.Module,
            args: tuple, erase: tuple = ()) -> fx.Node:
    """Replaces ``node`` by a call of ``module`` (added to ``gm`` as ``name``) on ``args``,
    right where it was, with its metadata; ``node`` and the nodes of ``erase`` (each used only
    by what is erased before it) are erased. Call :func:`finish_rewrite` when done."""
    g = gm.graph
    gm.add_submodule(name, module)
    with g.inserting_after(node):
        new = g.call_module(name, args)
    new.meta.update(node.meta)
    node.replace_all_uses_with(new)
    for old in (node, *erase):
        g.erase_node(old)
    return new


def finish_rewrite(gm: fx.GraphModule, changed: bool) -> None:
    """Checks and recompiles ``gm`` after graph surgery (nothing when nothing ``changed``)."""
    if changed:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
