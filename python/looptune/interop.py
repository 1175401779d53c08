"""Kernels in real code: torch CPU tensors as inputs and outputs, and pickling.

Installed on ``looptune.Kernel`` at import (``install()``), so every kernel gets both:

- ``kernel(a, b, out=None, *, bias=None, residual=None)`` also takes contiguous float32 torch
  CPU tensors (and mixes of torch and numpy). A tensor is handed to the engine as a numpy view
  of its memory (no copy); when any argument is a tensor the result is a tensor (``out``
  itself when given, else a new tensor that shares the result's memory). Tensors that need
  grad, live on another device or have another dtype raise ``TypeError``; non-contiguous ones
  ``ValueError`` (call ``.contiguous()``), except for an argument the kernel was compiled with
  strides for (``compile(strides=...)``; ``residual`` follows ``out``): its view is passed
  as it is, and the engine checks its strides.
  ``Kernel.__call__`` stays the engine's own: numpy arrays never pass through Python code here.
  The engine hands any call with an argument that is not a numpy array to
  ``Kernel._call_fallback`` (``kernel_call`` below), which converts the tensors and calls the
  engine again (a second fallback from there raises the engine's typed error).
- ``pickle.dumps(kernel)`` stores the schedule text (the computation header and the loops, as
  ``LoopTree.dump()``), the ISA and any strides it was compiled with; unpickling recompiles
  it (tens of microseconds). On a CPU without that ISA it compiles for the host ISA instead,
  with a ``RuntimeWarning``.
"""

from __future__ import annotations

import copyreg
import sys
import warnings
from typing import Any

from looptune._core import Kernel, LoopTree, host_isa, isa_supported

_native_call = Kernel.__call__


def _torch_tensor_type() -> type | None:
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    return getattr(torch, "Tensor", None) if torch is not None else None


def _as_array(x: Any, what: str, tensor_type: type, strided: bool = False) -> Any:
    if not isinstance(x, tensor_type):
        return x
    # is_cpu and the dtype's identity: ~0.5 us cheaper a tensor than x.device.type / str(dtype)
    if not x.is_cpu:
        raise TypeError(f"{what} must be a CPU tensor, got one on {x.device}")
    if x.requires_grad:
        raise TypeError(f"{what} requires grad; pass {what}.detach() (kernels do not record grad)")
    if x.dtype is not sys.modules["torch"].float32:
        raise TypeError(f"{what} must have dtype torch.float32, got {x.dtype}")
    if not strided and not x.is_contiguous():
        raise ValueError(f"{what} must be contiguous (use .contiguous())")
    return x.numpy()  # shares the tensor's memory


def kernel_call(
    self: Kernel,
    a: Any,
    b: Any = None,
    out: Any = None,
    *,
    bias: Any = None,
    residual: Any = None,
) -> Any:
    """``C = kernel(A, B)`` (``kernel(A)`` when B was set with ``set_constant``), with the
    epilogue's ``bias`` / ``residual`` when it names them: numpy arrays or torch CPU tensors
    (see the module docstring). Installed as ``Kernel._call_fallback``: the engine calls it for
    arguments that are not numpy arrays."""
    tensor = _torch_tensor_type()
    extra = {}
    if tensor is None or not any(isinstance(x, tensor) for x in (a, b, out, bias, residual)):
        if bias is not None:
            extra["bias"] = bias
        if residual is not None:
            extra["residual"] = residual
        return _native_call(self, a, b, out, **extra)
    strides = self.strides  # the tensors compiled with strides are passed as views
    if bias is not None:
        extra["bias"] = _as_array(bias, "bias", tensor)
    if residual is not None:
        extra["residual"] = _as_array(residual, "residual", tensor, strides["out"] is not None)
    result = _native_call(
        self,
        _as_array(a, "a", tensor, strides["in0"] is not None),
        _as_array(b, "b", tensor, strides["in1"] is not None),
        None if out is None else _as_array(out, "out", tensor, strides["out"] is not None),
        **extra,
    )
    if out is not None and isinstance(out, tensor):
        return out
    return sys.modules["torch"].from_numpy(result)


def _rebuild_kernel(schedule: str, isa: str, strides: dict | None = None) -> Kernel:
    tree = LoopTree.parse(schedule)
    if not isa_supported(isa):
        host = host_isa()
        warnings.warn(
            f"unpickled a {isa} kernel on a CPU without {isa}; compiled it for {host}",
            RuntimeWarning,
            stacklevel=2,
        )
        isa = host
    return tree.compile(isa, strides=strides)


def _reduce_kernel(kernel: Kernel) -> tuple:
    strides = {k: v for k, v in kernel.strides.items() if v is not None}
    if strides:
        return _rebuild_kernel, (kernel.tree.dump(), kernel.isa, strides)
    return _rebuild_kernel, (kernel.tree.dump(), kernel.isa)


def install() -> None:
    """Give ``Kernel`` torch-aware calls and pickling (idempotent)."""
    Kernel._call_fallback = kernel_call
    copyreg.pickle(Kernel, _reduce_kernel)
