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
``looptune.model.quantize``'s; an int8 kernel's store dequantizes and finishes the chain
(``scale+bias[+add][+act]``: ``act(acc * scale[c] + bias[c] + residual)``, the activation's
zero point folded into the bias). In static mode, a layer whose value only quantized layers
read (a conv feeding the next conv) stores it as their u8 input, requantized by its kernel's
epilogue (``...+requant``, :func:`u8_handoffs`), instead of float32 they would quantize again.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import fx, nn

import looptune
from looptune import _core
from looptune.model.lower import Layer, Lowering, merge_siblings
from looptune.model.quantize import (
    ActQuant,
    CalibrationError,
    QuantizationUnavailableError,
    act_qparams,
    dequant_params,
    quantize_weight,
)

QUANTIZED_KINDS = {"dynamic": ("linear",), "static": ("linear", "conv2d")}
# static mode: a quantized layer whose value only quantized layers read stores it as their u8
# input (the kernel's requantizing epilogue) instead of float32 they would quantize again
U8_HANDOFF = True


def int8_support(isa: str | None = None) -> str:
    """How this engine build and ``isa`` (default the host's) compute int8: ``"vnni"`` or
    ``"exact"`` (the exact non-VNNI path); raises :class:`QuantizationUnavailableError` when
    there is no int8 path at all."""
    try:
        looptune.matmul(4, 8, 4, dtype="int8")
    except TypeError as exc:
        raise QuantizationUnavailableError(
            "this looptune engine has no int8 computations; compile without quantize=") from exc
    if not hasattr(_core, "quantize_u8"):
        raise QuantizationUnavailableError("this looptune engine has no quantize_u8")
    facts = _core.isa_facts(isa)
    path = facts.get("int8_path", "none")
    if path == "none" or not facts.get("supported", True):
        raise QuantizationUnavailableError(
            f"the ISA {facts.get('isa')!r} has no int8 path on this CPU (int8_path "
            f"{path!r}); compile without quantize=")
    return "vnni" if path.startswith("vnni") else "exact"


def requant_available() -> bool:
    """Whether the engine has the requantizing int8 epilogue (``...+requant``: u8 out)."""
    try:
        looptune.matmul(4, 8, 4, dtype="int8", epilogue="scale+requant")
    except (TypeError, ValueError):
        return False
    return True


def u8_handoffs(layers: list[Layer], quant: list[bool], acts: list[ActQuant | None]
                ) -> dict[int, ActQuant]:
    """Static mode: the layers (by index) whose value is read only as the input of quantized
    layers (the anchors of their chains: no residual, no view, not a graph output), mapped to
    those readers' activation parameters (one value: one observed range), which the producer's
    kernel requantizes its output with (``+requant``): they then read it as their u8 input."""
    if not U8_HANDOFF or not requant_available():
        return {}
    readers: dict[Any, list[int]] = {}
    for j, (la, q, act) in enumerate(zip(layers, quant, acts)):
        if q and act is not None:
            readers.setdefault(la.x, []).append(j)
    out = {}
    for i, (la, q, act) in enumerate(zip(layers, quant, acts)):
        if not q or act is None or la.parts or la.act in TORCH_ACTS:
            continue
        end = la.nodes[-1]
        js = readers.get(end, [])
        if js and set(end.users) == {layers[j].nodes[0] for j in js}:
            out[i] = acts[js[0]]
    return out


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


def outer_pad(layer: Layer, act: ActQuant | None) -> int:
    """The padding a quantized conv's input gets outside the kernel: the engine pads an int8
    input with byte 0, the real value 0 only when the zero point is 0; with another (static)
    zero point the quantized input is padded with it and the kernel has no padding."""
    if layer.kind != "conv2d" or act is None or act.zero_point == 0:
        return 0
    return layer.dims["pad"]


def computation(layer: Layer, epilogue: str, pad_outside: int = 0) -> looptune.Computation:
    """The int8 computation of a quantized ``layer`` (dequantizing ``epilogue``; a conv's
    input padded by ``pad_outside`` before the kernel, see :func:`outer_pad`)."""
    d = layer.dims
    if layer.kind == "conv2d":
        p = pad_outside
        return looptune.conv2d(d["n"], d["c"], d["h"] + 2 * p, d["w"] + 2 * p, d["k"], d["r"],
                               d["s"], stride=d["stride"], pad=d["pad"] - p, dtype="int8",
                               epilogue=epilogue)
    return looptune.matmul(d["m"], d["k"], d["n"], dtype="int8", epilogue=epilogue)


# Activations applied by a pass after the int8 kernel (the engine's ``_core.gelu``) instead of
# the kernel's store: measured on the BERT-base
# FFN (128 x 3072 outputs, Zen 4, one thread, the same schedule), the fused GELU made the int8
# kernel 1.47 ms against 1.33 ms without it, the pass 0.13 ms.
TORCH_ACTS = ("gelu",)


def epilogue_of(layer: Layer) -> str:
    """What the int8 kernel's store does: dequantize (``scale``) with the folded bias, then the
    chain's residual add and activation: ``act(acc * scale + bias' + residual)`` (an
    activation of :data:`TORCH_ACTS` is applied by a pass after the kernel)."""
    act = [layer.act] if layer.act and layer.act not in TORCH_ACTS else []
    return "+".join(["scale", "bias"] + (["add"] if layer.residual is not None else []) + act)


class QuantOp(nn.Module):
    """One quantized layer: ``forward(x[, residual])`` quantizes ``x`` to u8
    (``looptune.quantize_u8``), runs the int8 kernel (s8 weights packed once) whose store
    dequantizes and applies the chain's residual and activation, and returns float32.

    ``act``: the static activation parameters (the kernel's scale and folded bias are then
    constants too); None: dynamic, observed on every call's input."""

    def __init__(self, layer: Layer, kernel: Any, act: ActQuant | None,
                 requant: ActQuant | None = None) -> None:
        super().__init__()
        d = layer.dims
        self.kind, self.kernel, self.static = layer.kind, kernel, act
        self.torch_act = layer.act if layer.act in TORCH_ACTS else ""
        self.has_residual = layer.residual is not None
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
        self.pad = outer_pad(layer, act)
        if act is None:
            kernel.set_constant(packed)
            # the per-call (scale, bias'): dequant_params' arithmetic in these buffers
            n = len(self.w_scale)
            self._ws = np.asarray(self.w_scale, np.float32)
            self._cs = np.asarray(self.colsum, np.float32)
            self._b = np.zeros(n, np.float32) if self.bias is None else np.asarray(
                self.bias, np.float32)
            self._scale, self._shift, self._bias = (np.empty(n, np.float32) for _ in range(3))
        else:
            scale, bias = dequant_params(act, self.w_scale, self.colsum, self.bias)
            extra = {} if requant is None else dict(out_scale=requant.scale,
                                                    out_zero_point=requant.zero_point)
            kernel.set_constant(packed, scale=scale, bias=bias, **extra)
        self.out: torch.Tensor | None = None  # a pool buffer (plan_buffers), else per call
        # u8_handoffs: the output stored as the readers' u8 input, in a buffer of its own (its
        # readers are quantized layers of the same call, so it never leaves the graph)
        self.requant = requant
        self.out_u8 = None if requant is None else torch.empty(self.out_shape, dtype=torch.uint8)
        # Quantized layers reading the same value (a transformer's Q, K and V projections)
        # quantize it once per call: the first in graph order stores (x, xq, params) here, the
        # next ones reuse them when they get the same tensor at the same version.
        self.shared: dict | None = None
        self.leader = True

    def extra_repr(self) -> str:
        how = "dynamic" if self.static is None else (
            f"static scale={self.static.scale:.4g} zero_point={self.static.zero_point}")
        if self.requant is not None:
            how += f", u8 out scale={self.requant.scale:.4g} " \
                   f"zero_point={self.requant.zero_point}"
        return f"{self.kernel.tree.computation.name}, {how}"

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        a = x.contiguous().numpy().reshape(self.a_shape)
        out = self.out_u8 if self.out_u8 is not None else self.out if self.out is not None \
            else torch.empty(self.out_shape)
        kw: dict[str, np.ndarray] = {}
        if self.has_residual:
            kw["residual"] = rest[-1].contiguous().numpy().reshape(self.k_out)
        xq, q = self._quantized(x, a)
        if self.static is None:
            kw["scale"], kw["bias"] = self._dequant_params(q)
        o = out.numpy().reshape(self.k_out)
        self.kernel(xq, out=o, **kw)
        if self.torch_act == "gelu":
            _core.gelu(o, out=o)
        return out

    def _dequant_params(self, q: ActQuant) -> tuple[np.ndarray, np.ndarray]:
        """:func:`dequant_params` (the same float32 operations in the same order, so the same
        bits) into buffers allocated once: ``scale = s_x * s_w``, ``bias' = bias - scale * z_x
        * colsum``."""
        scale, shift = self._scale, self._shift
        np.multiply(self._ws, np.float32(q.scale), out=scale)
        np.multiply(scale, np.float32(q.zero_point), out=shift)
        np.multiply(shift, self._cs, out=shift)
        np.subtract(self._b, shift, out=self._bias)
        return scale, self._bias

    def _quantized(self, x: torch.Tensor, a: np.ndarray) -> tuple[np.ndarray, ActQuant]:
        sh = self.shared
        key = (x.data_ptr(), x._version, tuple(x.shape))
        if sh is not None and not self.leader and sh.get("key") == key:
            return sh["xq"], sh["q"]
        if self.static is None:
            xq, scale, zp = _core.quantize_u8(a)
            q = ActQuant(float(scale), int(zp))
        else:  # a u8 input is its producer's output, already quantized with our parameters
            q = self.static
            xq = a if a.dtype == np.uint8 else _core.quantize_u8(a, q.scale, q.zero_point)[0]
            if self.pad:
                p = self.pad
                xq = np.pad(xq, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=q.zero_point)
        if sh is not None:
            sh.update(key=key, xq=xq, q=q)
        return xq, q


def _share_inputs(layers: list[Layer], ops: list[nn.Module]) -> None:
    """Quantized ops of one input value and the same quantization share its quantized copy
    (``QuantOp.shared``): Q, K and V quantize their input once."""
    groups: dict[tuple, list[QuantOp]] = {}
    for layer, op in zip(layers, ops):
        if isinstance(op, QuantOp) and not op.pad:
            groups.setdefault((layer.x, op.static, op.a_shape), []).append(op)
    for group in groups.values():
        if len(group) > 1:
            shared: dict = {}
            for i, op in enumerate(group):
                op.shared, op.leader = shared, i == 0


def lower_quantized(gm: fx.GraphModule, constants: dict | None = None, *, quantize: str,
                    calibration: tuple | None = None, records: Any = None,
                    search: str = "agent", fuse: bool = True, layout: str = "auto",
                    layer_budget: float = 2.0, quiet: bool = False,
                    rowops: bool = True) -> Any:
    """``lower_graph`` with the quantizable layers as int8 kernels (see the module doc)."""
    from looptune.model import Plan, engine_features, summarize
    from looptune.model import computation as f32_computation
    from looptune.model.rowops import lower_rowops
    from looptune.model.runtime import LoopOp, choose_output_orders, plan_buffers, rewrite
    from looptune.model.tune import tune

    t0 = time.perf_counter()
    int8_support()
    feats = engine_features()
    fused = fuse and feats["epilogue"]
    layers = Lowering(gm, constants, groups_ok=feats["groups"]).layers()
    if fuse:
        layers = merge_siblings(layers)
    quant = [quantizable(la, quantize) for la in layers]
    ranges: dict = {}
    if quantize == "static":
        if calibration is None:
            raise CalibrationError('quantize="static" needs calibration= inputs')
        ranges = observe_ranges(gm, {la.x for la, q in zip(layers, quant) if q}, calibration)
    acts = [act_qparams(*ranges[la.x]) if q and quantize == "static" else None
            for la, q in zip(layers, quant)]
    handoff = u8_handoffs(layers, quant, acts) if quantize == "static" else {}
    comps = [computation(la, epilogue_of(la) + ("+requant" if i in handoff else ""),
                         outer_pad(la, act)) if q
             else f32_computation(la, layout, la.epilogue if fused else "")
             for i, (la, q, act) in enumerate(zip(layers, quant, acts))]
    trees, stats = tune(comps, records, search, layer_budget, quiet)
    kernels: dict[str, Any] = {}
    ops: list[nn.Module] = []
    for i, (layer, comp, q, act) in enumerate(zip(layers, comps, quant, acts)):
        h = comp.header()
        if h not in kernels:
            kernels[h] = trees[h].compile()
        if q:  # a kernel holds one constant operand: each quantized layer its own
            ops.append(QuantOp(layer, trees[h].compile(), act, handoff.get(i)))
        else:
            kernel = kernels[h] if layer.kind in ("matmul", "bmm") else trees[h].compile()
            ops.append(LoopOp(layer, kernel, fused))
    _share_inputs(layers, ops)
    nodes = rewrite(gm, layers, ops)
    rows = lower_rowops(gm, constants) if rowops else []
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    choose_output_orders(gm, nodes)
    pooled = [n for n in nodes if getattr(gm.get_submodule(str(n.target)), "out_u8", None)
              is None]
    pool = plan_buffers(gm, sorted(pooled + rows, key=order.__getitem__))
    summary, torch_ops = summarize(gm, layers, fused)
    n_q = sum(la.count for la, q in zip(layers, quant) if q)
    summary = summary.replace("looptune: ", f"looptune: {n_q} int8 ({quantize}) of ", 1)
    if handoff:
        summary = summary.replace("; torch:", f"; {len(handoff)} int8 layers hand u8 to the "
                                  "next; torch:", 1)
    return Plan(layers, stats, pool, summary, fused, time.perf_counter() - t0, torch_ops)


__all__ = ["QUANTIZED_KINDS", "TORCH_ACTS", "QuantOp", "computation", "epilogue_of", "int8_support",
           "lower_quantized", "observe_ranges", "outer_pad", "quantizable", "requant_available",
           "u8_handoffs"]
