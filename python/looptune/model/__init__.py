"""Whole PyTorch models: ``looptune.compile(model, example_inputs)`` and the ``"looptune"``
``torch.compile`` backend.

    >>> import torch, looptune
    >>> from looptune.model.zoo import resnet18
    >>> model = resnet18().eval()
    >>> x = torch.randn(1, 3, 224, 224)
    >>> fast = looptune.compile(model, x)            # doctest: +SKIP
    >>> torch.testing.assert_close(fast(x), model(x), rtol=1e-3, atol=1e-3)  # doctest: +SKIP
    >>> print(fast.summary)                          # doctest: +SKIP
    looptune: 20 conv2d, 1 linear (fused: 12 bias+relu, 8 bias, ...); torch: 1 maxpool2d, ...

The pipeline: capture (``torch.fx``), BatchNorm folding, lowering of conv2d / linear /
matmul / bmm with their bias, residual add and ReLU / ReLU6 / GELU into the kernel's store
(the engine's epilogue), tuning of each distinct layer (``looptune.model.tune``; records make a
second compile measure nothing), weights packed once, one buffer pool for intermediates.
LayerNorm, softmax and GELU run as the engine's row functions (``looptune.model.rowops``);
everything else runs as the torch op it was. The compiled module is for inference: it runs
without autograd (see :class:`CompiledModel` for what it refuses and when it recompiles).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

import looptune
from looptune.errors import LoopTuneError
from looptune.measure import RecordStore
from looptune.model.capture import propagate_shapes, trace
from looptune.model.layout import apply_layouts
from looptune.model.lower import Layer, Lowering, merge_siblings
from looptune.model.pool import MaxPoolOp, lower_pools
from looptune.model.rowops import RowOp, lower_rowops
from looptune.model.runtime import LoopOp, choose_output_orders, plan_buffers, rewrite
from looptune.model.tune import DEFAULT_LAYER_BUDGET, TuneStats, default_records, tune


class ModelInputError(LoopTuneError, TypeError):
    """An input the compiled model does not take: not a tensor, not float32, not on the CPU,
    or requiring grad under grad mode."""


class TrainingModeError(LoopTuneError, RuntimeError):
    """A model in training mode (``model.eval()`` first: BatchNorm folding and every fused
    kernel assume inference)."""


def engine_features() -> dict[str, bool]:
    """What the engine build computes: ``epilogue`` (bias / residual / activation fused in the
    store) and ``groups`` (grouped and depthwise conv2d)."""
    feats = {}
    try:
        looptune.matmul(4, 4, 4, epilogue="bias+add+relu")
        feats["epilogue"] = True
    except TypeError:
        feats["epilogue"] = False
    try:
        looptune.conv2d(1, 4, 4, 4, 4, 1, 1, groups=2)
        feats["groups"] = True
    except TypeError:
        feats["groups"] = False
    return feats


def computation(layer: Layer, layout: str = "auto", epilogue: str = "") -> looptune.Computation:
    """The looptune computation of ``layer`` (with ``epilogue`` in its store when given)."""
    d = layer.dims
    kw: dict[str, Any] = {"epilogue": epilogue} if epilogue else {}
    if layer.kind == "conv2d":
        if d["groups"] != 1:
            kw["groups"] = d["groups"]
        return looptune.conv2d(d["n"], d["c"], d["h"], d["w"], d["k"], d["r"], d["s"],
                               stride=d["stride"], pad=d["pad"], layout=layout, **kw)
    if layer.kind in ("linear", "matmul"):
        return looptune.matmul(d["m"], d["k"], d["n"], **kw)
    lead = layer.batch_dims
    if len(lead) > 1:  # several batch dims: a contraction over each ("abmk,abkn->abmn")
        letters = "abcdef"[: len(lead)]
        sizes = dict(zip(letters, lead), m=d["m"], k=d["k"], n=d["n"])
        return looptune.contraction(f"{letters}mk,{letters}kn->{letters}mn", sizes, **kw)
    return looptune.batch_matmul(d["b"], d["m"], d["k"], d["n"], **kw)


@dataclass
class Plan:
    """What a compile did: the layers, the tuning, the pool, the summary line."""

    layers: list[Layer]
    tune_stats: TuneStats
    pool: dict
    summary: str
    fused: bool
    seconds: float = 0.0  # the whole compile
    torch_ops: Counter = field(default_factory=Counter)
    layouts: dict = field(default_factory=dict)  # layout propagation (layout.apply_layouts)


def _torch_op_name(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if node.op == "call_module":
        from looptune.model.qruntime import QuantOp

        mod = gm.get_submodule(str(node.target))
        ours = (LoopOp, MaxPoolOp, RowOp, QuantOp)
        return None if isinstance(mod, ours) else type(mod).__name__.lower()
    if node.op == "call_function":
        name = getattr(node.target, "__name__", str(node.target))
        return None if name in ("getitem", "getattr") else name
    if node.op == "call_method":
        return None if node.target in ("size", "dim") else str(node.target)
    return None


def summarize(gm: fx.GraphModule, layers: list[Layer], fused: bool,
              layouts: dict | None = None) -> tuple[str, Counter]:
    """The one-line summary: which ops ran where, what the kernels fused, and (``layouts``,
    from ``layout.apply_layouts``) which activations stayed in a kernel layout."""
    ops: Counter = Counter()
    for layer in layers:
        ops[layer.op_name] += layer.count
    ops.update(m.kind for m in gm.modules() if isinstance(m, (MaxPoolOp, RowOp)))
    epi = Counter(layer.epilogue for layer in layers if layer.epilogue)
    bn = sum(layer.bn_folded for layer in layers)
    torch_ops = Counter(n for n in (_torch_op_name(gm, node) for node in gm.graph.nodes) if n)
    lt = ", ".join(f"{v} {k}" for k, v in ops.items()) or "nothing"
    extras = [f"{v} {k}" for k, v in sorted(epi.items(), key=lambda kv: -kv[1])]
    how = "fused" if fused else "unfused, by torch"
    if extras:
        lt += f" ({how}: {', '.join(extras)}"
        lt += f"; {bn} batchnorm folded)" if bn else ")"
    elif bn:
        lt += f" ({bn} batchnorm folded)"
    merged = [layer.count for layer in layers if layer.parts]
    if merged:
        lt += f"; {sum(merged)} linears as {len(merged)} merged GEMMs"
    tt = ", ".join(f"{v} {k}" for k, v in torch_ops.most_common()) or "nothing"
    lay = ""
    if layouts and layouts.get("laid_out"):
        lay = (f"; layouts: {layouts['laid_out']} activations kept in kernel layout "
               f"({layouts['blocked']} blocked), {layouts['direct_inputs']} inputs read in place")
    return f"looptune: {lt}{lay}; torch: {tt}", torch_ops


def lower_graph(
    gm: fx.GraphModule,
    constants: dict | None = None,
    *,
    records: Any = None,
    search: str = "agent",
    fuse: bool = True,
    layout: str = "auto",
    layer_budget: float = DEFAULT_LAYER_BUDGET,
    quiet: bool = False,
    quantize: str | None = None,
    calibration: tuple | None = None,
    layouts: bool = True,
    rowops: bool = True,
) -> Plan:
    """Lowers ``gm`` (shapes propagated) in place: match, tune, pack, rewrite, pool
    (``quantize``: int8 layers, ``looptune.model.qruntime.lower_quantized``)."""
    if quantize:
        from looptune.model.qruntime import lower_quantized

        return lower_quantized(gm, constants, quantize=quantize, calibration=calibration,
                               records=records, search=search, fuse=fuse, layout=layout,
                               layer_budget=layer_budget, quiet=quiet, rowops=rowops)
    t0 = time.perf_counter()
    feats = engine_features()
    fused = fuse and feats["epilogue"]
    layers = Lowering(gm, constants, groups_ok=feats["groups"]).layers()
    if fuse:
        layers = merge_siblings(layers)
    comps = [computation(la, layout, la.epilogue if fused else "") for la in layers]
    trees, stats = tune(comps, records, search, layer_budget, quiet)
    kernels: dict[str, looptune.Kernel] = {}
    ops = []
    for layer, comp in zip(layers, comps):
        h = comp.header()
        if h not in kernels:
            kernels[h] = trees[h].compile()
        # a kernel holds one constant operand: layers of one shape share code, not weights
        kernel = kernels[h] if layer.kind in ("matmul", "bmm") else trees[h].compile()
        ops.append(LoopOp(layer, kernel, fused))
    nodes = rewrite(gm, layers, ops)
    pools = lower_pools(gm)
    rows = lower_rowops(gm, constants) if rowops else []
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    nodes = sorted(nodes + pools, key=order.__getitem__)
    lay = apply_layouts(gm, nodes) if layouts else {}
    choose_output_orders(gm, nodes)
    pool = plan_buffers(gm, sorted(nodes + rows, key=order.__getitem__))
    summary, torch_ops = summarize(gm, layers, fused, lay)
    return Plan(layers, stats, pool, summary, fused, time.perf_counter() - t0, torch_ops,
                layouts=lay)


def _kernel_threads(n: int) -> Any:
    """The engine's thread count set to ``n`` for a block (``looptune.num_threads``), or
    nothing to do for an engine without threads."""
    ctx = getattr(looptune, "num_threads", None)
    return contextlib.nullcontext() if ctx is None else ctx(n)


@contextlib.contextmanager
def serial_torch_ops(kernel_threads: int) -> Any:
    """Torch's ops on one thread for a block in which looptune kernels run on
    ``kernel_threads`` > 1: torch's OpenMP workers keep spinning for a while after each op,
    and on the cores the engine's pool wants they halve the kernels' speed (a BERT-base layer
    at 2 threads on 2 cores: 19.4 ms with torch's ops on 2 threads, 11.2 ms on one)."""
    if kernel_threads <= 1 or torch.get_num_threads() == 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_inputs(args: tuple) -> None:
    for i, x in enumerate(args):
        if not isinstance(x, torch.Tensor):
            raise ModelInputError(f"input {i} is a {type(x).__name__}, not a torch.Tensor")
        if x.device.type != "cpu":
            raise ModelInputError(f"input {i} is on {x.device}; looptune runs on the CPU")
        if x.dtype != torch.float32:
            raise ModelInputError(f"input {i} has dtype {x.dtype}; looptune computes float32")
        if x.requires_grad and torch.is_grad_enabled():
            raise ModelInputError(
                f"input {i} requires grad: the compiled model records no autograd graph; "
                "run it under torch.no_grad() / torch.inference_mode(), or detach the input")


class CompiledModel(nn.Module):
    """A model compiled by :func:`compile`: ``forward`` computes what the model computes.

    - Inputs must be float32 CPU tensors (else :class:`ModelInputError`); an input that
      requires grad under grad mode raises too (nothing is differentiated here).
    - The compiled model is an inference model: ``.train()`` makes calls raise
      :class:`TrainingModeError`.
    - A new input shape compiles the model again for it (with a ``RuntimeWarning``; the
      records make that cheap for layers seen before); each shape's graph is kept.
    - Calls from several threads are served one at a time (the intermediate buffers are
      shared); results are always fresh tensors, never a pool buffer.
    - With ``threads`` > 1 the torch ops between the kernels run on one thread during a call
      (:func:`serial_torch_ops`; torch's thread count is restored after it).
    """

    def __init__(self, model: nn.Module, example_inputs: tuple, options: dict,
                 threads: int = 1) -> None:
        super().__init__()
        self.threads = threads  # kernels are tuned and called at this count
        object.__setattr__(self, "_model", model)  # not a submodule: its weights are packed
        self._options = options
        self.quantize = options.get("quantize")  # None, "dynamic" or "static"
        self.calibration = options.get("calibration")
        self._graphs: dict[tuple, tuple[fx.GraphModule, Plan]] = {}
        self._lock = threading.Lock()  # the pool buffers serve one call at a time
        self.graph_module, self.plan = self._compile(example_inputs)
        self.eval()

    @staticmethod
    def _key(args: tuple) -> tuple:
        return tuple(tuple(x.shape) for x in args)

    def _compile(self, args: tuple) -> tuple[fx.GraphModule, Plan]:
        t0 = time.perf_counter()
        gm = trace(self._model)
        propagate_shapes(gm, args)
        with _kernel_threads(self.threads):
            plan = lower_graph(gm, **self._options)
        plan.seconds = time.perf_counter() - t0
        self._graphs[self._key(args)] = (gm, plan)
        return gm, plan

    @property
    def summary(self) -> str:
        return self.plan.summary

    def forward(self, *args: torch.Tensor) -> Any:
        if self.training:
            raise TrainingModeError("the compiled model is for inference; call .eval()")
        _check_inputs(args)
        key = self._key(args)
        entry = self._graphs.get(key)
        if entry is None:
            warnings.warn(f"looptune: new input shapes {key}: compiling the model for them",
                          RuntimeWarning, stacklevel=2)
            entry = self._compile(args)
        gm = entry[0]
        with self._lock, torch.no_grad(), _kernel_threads(self.threads), \
                serial_torch_ops(self.threads):
            return gm(*args)


def compile(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple,
    threads: int | None = None,
    records: str | os.PathLike | RecordStore | None = None,
    search: str = "agent",
    *,
    fuse: bool = True,
    layout: str = "auto",
    layer_budget: float = DEFAULT_LAYER_BUDGET,
    quiet: bool = False,
    quantize: str | None = None,
    calibration: torch.Tensor | tuple | None = None,
    layouts: bool = True,
    rowops: bool = True,
) -> CompiledModel:
    """Compile ``model`` (eval mode) for inputs shaped like ``example_inputs``.

    Args:
        model: an ``nn.Module`` in eval mode; it is traced with ``torch.fx.symbolic_trace``
            (``nn.TransformerEncoderLayer`` is decomposed first).
        example_inputs: a tensor or a tuple of the forward's tensor arguments.
        threads: threads of the kernels, tuned and called at that count (the engine's
            ``looptune.num_threads``); None = ``torch.get_num_threads()``. With an engine
            without threads the kernels run on one (``compiled.threads`` says which).
        records: the tuning records (a path or ``RecordStore``); None = the default file
            (``looptune.model.tune.default_records()``); ``False`` = none (tune every layer).
        search: the search that tunes each distinct layer (``looptune.search.get``).
        fuse: fuse bias / residual / activation into the kernels' store (off: torch applies
            them after each kernel, in place; the benchmark's "fusion off"), and compute
            linears that read the same value (Q, K, V) as one merged GEMM.
        layout: conv2d layout of the kernels ("auto": the engine's blocked layout, "plain").
        layer_budget: seconds of search per distinct layer.
        quiet: no progress bars.
        quantize: ``"dynamic"``: ``nn.Linear`` layers run as int8 kernels, weights quantized
            per output channel now, activations per call (as torch.ao's ``quantize_dynamic``);
            ``"static"``: linears and convolutions, activation ranges observed once on
            ``calibration`` (``looptune.model.quantize`` has the arithmetic,
            ``looptune.model.qerror.quantization_report`` its accuracy cost). Raises
            ``QuantizationUnavailableError`` on an engine or CPU without an int8 path.
        calibration: the inputs (a tensor or a tuple, like ``example_inputs``) whose
            activation ranges ``quantize="static"`` uses.
        layouts: layout propagation (``looptune.model.layout``): conv2d layers pass
            activations in the layout the next kernel reads (zero-bordered, channel-blocked)
            instead of copying each padded conv's input (off: the benchmark's "layouts off").
        rowops: LayerNorm, softmax (a constant scale before it folded in) and unfused GELU
            run as the engine's row functions on its thread pool (``looptune.model.rowops``;
            off: as torch ops).
    """
    from looptune.model.quantize import CalibrationError, check_mode

    quantize = check_mode(quantize)
    if calibration is not None and quantize != "static":
        raise ValueError('calibration= is for quantize="static" only')
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise TrainingModeError("compile a model in eval mode (call model.eval() first)")
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    with torch.no_grad():
        _check_inputs(args)
    if threads is None:
        threads = torch.get_num_threads()
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    if getattr(looptune, "num_threads", None) is None:
        threads = 1  # an engine without threads: its kernels run on one
    if records is None:
        records = default_records()
    elif records is False:
        records = None
    options = dict(records=records, search=search, fuse=fuse, layout=layout,
                   layer_budget=layer_budget, quiet=quiet, layouts=layouts, rowops=rowops)
    if quantize:
        cal = calibration if isinstance(calibration, tuple) or calibration is None else (
            calibration,)
        if quantize == "static":
            if cal is None:
                raise CalibrationError('quantize="static" needs calibration= inputs')
            try:
                with torch.no_grad():
                    _check_inputs(cal)
            except ModelInputError as exc:
                raise CalibrationError(f"calibration: {exc}") from exc
        options.update(quantize=quantize, calibration=cal)
    return CompiledModel(model, args, options, threads)


from looptune.model.backend import register as _register_backend  # noqa: E402

_register_backend()

__all__ = [
    "CompiledModel",
    "ModelInputError",
    "Plan",
    "TrainingModeError",
    "compile",
    "computation",
    "engine_features",
    "lower_graph",
]
