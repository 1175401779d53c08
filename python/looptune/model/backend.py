"""The ``torch.compile`` backend: ``torch.compile(model, backend="looptune")``.

Registered the two ways PyTorch documents for custom backends: the ``torch_dynamo_backends``
entry point of the installed package (``pyproject.toml`` -> ``looptune.torch_backend``; dynamo
finds it by name, nothing needs importing), and ``torch._dynamo.register_backend`` by
:func:`register`, which ``import looptune.model`` calls (a source checkout without the
package's metadata).

Dynamo hands over a ``GraphModule`` of torch functions whose parameters and buffers are
placeholders (graph inputs). Those placeholders are taken as the constants they are at compile
time: the weights are folded and packed then, and every call checks that the same tensors come
in unchanged (identity and version counter); if a weight was replaced or modified in place, the
call runs the original graph instead (with a ``RuntimeWarning``), never stale weights.

Documented fallbacks (the graph then runs as dynamo captured it, i.e. eager torch):
- grad mode with inputs or weights that require grad (training; autograd needs torch's ops);
- non-float32 or non-CPU tensors;
- dynamic (symbolic) shapes, which dynamo may pass after a shape change: layers whose shapes
  are not concrete stay torch ops; and a call whose input shapes differ from the compiled
  ones runs the original graph (dynamo normally recompiles before that could happen).
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import torch
from torch import fx, nn

from looptune import _core

BACKEND_NAME = "looptune"


def _is_constant(node: fx.Node, value: Any) -> bool:
    if isinstance(value, nn.Parameter):
        return True
    arg = node.meta.get("grapharg")
    src = getattr(arg, "source", None)
    if src is None:
        return False
    try:
        name = src.name() if callable(getattr(src, "name", None)) else str(src)
    except Exception:
        name = str(src)
    return "_buffers" in name or "_parameters" in name


def looptune_backend(gm: fx.GraphModule, example_inputs: list, **options: Any) -> Any:
    """The backend function: returns a callable computing ``gm`` with looptune kernels.
    ``options`` (``torch.compile(..., options={...})``) go to ``looptune.model.lower_graph``
    (``records``, ``search``, ``fuse``, ``layout``, ``layer_budget``, ``quiet``, ``layouts``,
    ``rowops``, ``quantize``)."""
    import copy

    from looptune.model import lower_graph
    from looptune.model.capture import propagate_shapes
    from looptune.model.tune import default_records

    eager = gm.forward
    tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
    if torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        warnings.warn("looptune backend: grad mode with tensors that require grad; the graph "
                      "runs in torch (compile under torch.no_grad() for looptune kernels)",
                      RuntimeWarning, stacklevel=2)
        return eager
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        return eager
    activations = [x for n, x in zip(placeholders, example_inputs)
                   if isinstance(x, torch.Tensor) and x.dim() > 0 and not _is_constant(n, x)]
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in activations):
        warnings.warn("looptune backend: non-float32 or non-CPU inputs; the graph runs in "
                      "torch", RuntimeWarning, stacklevel=2)
        return eager
    original = copy.deepcopy(gm)  # parameters are placeholders: no weights are copied
    constants: dict[fx.Node, torch.Tensor] = {}
    guards: list[tuple[int, torch.Tensor, int]] = []
    for i, (node, value) in enumerate(zip(placeholders, example_inputs)):
        if isinstance(value, torch.Tensor) and _is_constant(node, value):
            constants[node] = value.detach()
            guards.append((i, value, value._version))
    symbolic = any(isinstance(x, torch.SymInt) for x in example_inputs) or any(
        isinstance(d, torch.SymInt)
        for n in placeholders
        for d in getattr(n.meta.get("example_value"), "shape", ())
    )
    if not symbolic:  # dynamic shapes: only dynamo's (symbolic) metadata, so nothing lowers
        try:
            propagate_shapes(gm, tuple(example_inputs))
        except Exception:  # ops that cannot run on the examples: dynamo's metadata
            pass
    shapes = [(i, tuple(x.shape)) for i, x in enumerate(example_inputs)
              if isinstance(x, torch.Tensor) and not any(i == g[0] for g in guards)]
    options = {**(options.pop("options", None) or {}), **options}  # torch.compile(options=)
    opts = {"records": default_records(), "quiet": False, **options}
    plan = lower_graph(gm, constants, **opts)
    lowered = gm.forward
    lock = threading.Lock()  # the pool buffers serve one call at a time
    looptune_backend.last_plan = plan  # the summary of the most recent compile

    def run(*args: Any) -> Any:
        for i, shape in shapes:  # kernels are compiled for these shapes only
            if tuple(args[i].shape) != shape:
                warnings.warn("looptune backend: an input shape changed; running the graph "
                              "in torch", RuntimeWarning, stacklevel=2)
                return original.forward(*args)
        for i, value, version in guards:
            if args[i] is not value or value._version != version:
                warnings.warn("looptune backend: a weight changed since compilation; running "
                              "the graph in torch", RuntimeWarning, stacklevel=2)
                return original.forward(*args)
        from looptune.model import serial_torch_ops

        with lock, torch.no_grad(), serial_torch_ops(_core.get_num_threads()):
            return lowered(*args)

    run.plan = plan
    return run


looptune_backend.last_plan = None


def register() -> None:
    """Register the backend with dynamo under ``"looptune"`` unless dynamo knows the name
    already (from the installed package's entry point, or an earlier call)."""
    import torch._dynamo

    if BACKEND_NAME not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(looptune_backend, name=BACKEND_NAME)
