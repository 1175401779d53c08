"""Running quantized layers: ``looptune.compile(model, x, quantize="dynamic" | "static")``.

:func:`lower_quantized` is ``looptune.model.lower_graph`` for a quantized compile: the same
matcher (``looptune.model.lower.Lowering``), tuning, rewrite and buffer pool, but the layers
torch.ao would quantize run as int8 kernels (:class:`QuantOp`):

* ``"dynamic"``: every ``nn.Linear`` (and ``F.linear`` with a constant weight), as
  ``torch.ao.quantization.quantize_dynamic`` does: weights per output channel at compile time,
  the activation's scale and zero point from each call's input;
* ``"static"``: linears and convolutions (groups 1), each activation's scale and zero point
  observed once on the calibration batch.

Matmuls / bmms of two activations (attention) and grouped convolutions stay float32 looptune
kernels, everything else stays the torch op it was. The arithmetic is
``looptune.model.quantize``'s; an int8 kernel's store dequantizes (``scale+bias[+relu]``:
``act(acc * scale[c] + bias[c])``, the zero point folded into the bias); a residual add and a
GELU of the chain are applied by torch on the float32 output, in place.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import fx, nn

import looptune
from looptune.model.lower import Layer, Lowering
from looptune.model.quantize import (
    ActQuant,
    CalibrationError,
    QuantizationUnavailableError,
    act_qparams,
    dequant_params,
    quantize_weight,
)

QUANTIZED_KINDS = {"dynamic": ("linear",), "static": ("linear", "conv2d")}


def int8_support(isa: str | None = None) -> str:
    """How this engine build and ``isa`` (default the host's) compute int8: ``"vnni"`` or
    ``"exact"`` (the exact non-VNNI path); raises :class:`QuantizationUnavailableError` when
    there is no int8 path at all."""
    from looptune import _core

    try:
        looptune.matmul(4, 8, 4, dtype="int8")
    except TypeError as exc:
        raise QuantizationUnavailableError(
            "this looptune engine has no int8 computations; compile without quantize=") from exc
    if not hasattr(looptune, "quantize_u8"):
        raise QuantizationUnavailableError("this looptune engine has no quantize_u8")
    facts = _core.isa_facts(isa)
    if not facts.get("int8", True) or not facts.get("supported", True):
        raise QuantizationUnavailableError(
            f"the ISA {facts.get('isa')!r} has no int8 path; compile without quantize=")
    return "vnni" if facts.get("vnni") else "exact"


def quantizable(layer: Layer, mode: str) -> bool:
    """Whether ``layer`` runs as an int8 kernel in ``mode``."""
    if layer.kind not in QUANTIZED_KINDS[mode] or layer.weight is None:
        return False
    return layer.kind != "conv2d" or layer.dims["groups"] == 1


def observe_ranges(gm: fx.GraphModule, nodes: set[fx.Node], calibration: tuple
                   ) -> dict[fx.Node, tuple[float, float]]:
    """The (min, max) of each of ``nodes``' values when ``gm`` runs on ``calibration``."""
    seen: dict[fx.Node, tuple[float, float]] = {}

    class Observer(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if n in nodes and isinstance(out, torch.Tensor):
                lo, hi = torch.aminmax(out.detach().float())
                seen[n] = (float(lo), float(hi))
            return out

    with torch.no_grad():
        Observer(gm).run(*calibration)
    bad = [n.name for n in nodes if n not in seen or not all(map(math.isfinite, seen[n]))]
    if bad:
        raise CalibrationError(f"calibration gave no finite range for {', '.join(bad)}")
    return seen


def computation(layer: Layer, epilogue: str) -> looptune.Computation:
    """The int8 computation of a quantized ``layer`` (dequantizing ``epilogue``)."""
    d = layer.dims
    if layer.kind == "conv2d":
        return looptune.conv2d(d["n"], d["c"], d["h"], d["w"], d["k"], d["r"], d["s"],
                               stride=d["stride"], pad=d["pad"], dtype="int8", epilogue=epilogue)
    return looptune.matmul(d["m"], d["k"], d["n"], dtype="int8", epilogue=epilogue)


def epilogue_of(layer: Layer) -> str:
    """What the int8 kernel's store does: always dequantize with the folded bias, plus a ReLU
    when the chain ends in one and has no residual (the residual comes before it)."""
    return "scale+bias+relu" if layer.act == "relu" and layer.residual is None else "scale+bias"


class QuantOp(nn.Module):
    """One quantized layer: ``forward(x[, residual])`` quantizes ``x`` to u8, runs the int8
    kernel (s8 weights packed once) and returns float32."""

    def __init__(self, layer: Layer, kernel: Any, act: ActQuant | None) -> None:
        super().__init__()
        d = layer.dims
        self.kind, self.act = layer.kind, layer.act
        self.kernel, self.static = kernel, act
        self.has_residual = layer.residual is not None
        self.fused_relu = kernel.tree.computation.epilogue.endswith("relu")
        self.out_shape = tuple(layer.out_shape)
        wq, self.w_scale = quantize_weight(layer.weight.float().numpy())
        if layer.kind == "conv2d":
            self.a_shape, self.k_out = tuple(layer.in_shape), self.out_shape
            packed = wq
        else:
            self.a_shape, self.k_out = (d["m"], d["k"]), (d["m"], d["n"])
            packed = np.ascontiguousarray(wq.T)  # [K, N]
        self.colsum = wq.astype(np.int64).reshape(wq.shape[0], -1).sum(axis=1)
        self.bias = None if layer.bias is None else layer.bias.float().numpy().copy()
        kernel.set_constant(packed)
        self._fixed = None if act is None else dequant_params(act, self.w_scale, self.colsum,
                                                              self.bias)
        self.out: torch.Tensor | None = None

    def extra_repr(self) -> str:
        how = "dynamic" if self.static is None else (
            f"static scale={self.static.scale:.4g} zero_point={self.static.zero_point}")
        return f"{self.kernel.tree.computation.name}, {how}"

    def quantize_input(self, x: torch.Tensor) -> tuple[np.ndarray, ActQuant]:
        a = x.contiguous().numpy().reshape(self.a_shape)
        q = self.static
        if q is None:
            lo, hi = torch.aminmax(x)
            q = act_qparams(float(lo), float(hi))
        return looptune.quantize_u8(a, q.scale, q.zero_point), q

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        xq, q = self.quantize_input(x)
        scale, bias = self._fixed if self._fixed is not None else dequant_params(
            q, self.w_scale, self.colsum, self.bias)
        out = self.out if self.out is not None else torch.empty(self.out_shape)
        self.kernel(xq, out=out.numpy().reshape(self.k_out), scale=scale, bias=bias)
        if self.has_residual:
            out.add_(rest[-1])
        if self.act == "relu" and not self.fused_relu:
            out.relu_()
        elif self.act == "relu6":
            out.clamp_(0.0, 6.0)
        elif self.act == "gelu":
            torch.ops.aten.gelu_(out)
        return out


def lower_quantized(gm: fx.GraphModule, constants: dict | None = None, *, quantize: str,
                    calibration: tuple | None = None, records: Any = None,
                    search: str = "agent", fuse: bool = True, layout: str = "auto",
                    layer_budget: float = 2.0, quiet: bool = False) -> Any:
    """``lower_graph`` with the quantizable layers as int8 kernels (see the module doc)."""
    from looptune.model import Plan, engine_features, summarize
    from looptune.model import computation as f32_computation
    from looptune.model.runtime import LoopOp, plan_buffers, rewrite
    from looptune.model.tune import tune

    t0 = time.perf_counter()
    int8_support()
    feats = engine_features()
    fused = fuse and feats["epilogue"]
    layers = Lowering(gm, constants, groups_ok=feats["groups"]).layers()
    quant = [quantizable(la, quantize) for la in layers]
    ranges: dict = {}
    if quantize == "static":
        if calibration is None:
            raise CalibrationError('quantize="static" needs calibration= inputs')
        ranges = observe_ranges(gm, {la.x for la, q in zip(layers, quant) if q}, calibration)
    comps = [computation(la, epilogue_of(la)) if q
             else f32_computation(la, layout, la.epilogue if fused else "")
             for la, q in zip(layers, quant)]
    trees, stats = tune(comps, records, search, layer_budget, quiet)
    kernels: dict[str, Any] = {}
    ops: list[nn.Module] = []
    for layer, comp, q in zip(layers, comps, quant):
        h = comp.header()
        if h not in kernels:
            kernels[h] = trees[h].compile()
        if q:
            act = act_qparams(*ranges[layer.x]) if quantize == "static" else None
            ops.append(QuantOp(layer, trees[h].compile(), act))
        else:
            kernel = kernels[h] if layer.kind in ("matmul", "bmm") else trees[h].compile()
            ops.append(LoopOp(layer, kernel, fused))
    nodes = rewrite(gm, layers, ops)
    pool = plan_buffers(gm, nodes)
    summary, torch_ops = summarize(gm, layers, fused)
    n_q = sum(quant)
    summary = summary.replace("looptune: ", f"looptune: {n_q} int8 ({quantize}) of ", 1)
    return Plan(layers, stats, pool, summary, fused, time.perf_counter() - t0, torch_ops)


__all__ = ["QUANTIZED_KINDS", "QuantOp", "computation", "epilogue_of", "int8_support",
           "lower_quantized", "observe_ranges", "quantizable"]
