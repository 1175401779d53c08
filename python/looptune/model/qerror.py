"""What quantization costs in accuracy: a quantized model against its float32 original, beside
PyTorch's own quantized model on the same inputs.

    >>> import torch, looptune
    >>> from looptune.model import zoo
    >>> from looptune.model.qerror import quantization_report
    >>> model, x = zoo.bert_layer().eval(), torch.randn(1, 128, 768)
    >>> q = looptune.compile(model, x, quantize="dynamic")        # doctest: +SKIP
    >>> print(quantization_report(model, q, x))                    # doctest: +SKIP
    looptune int8 (dynamic): max rel. error 0.0031, mean 0.0012; torch.ao quantize_dynamic: ...

Errors are relative to the float32 output's magnitude (norm-wise, so a near-zero element does
not blow up the figure): ``max = max|q - f| / max|f|`` and ``mean = mean|q - f| / mean|f|``.

PyTorch's quantized model: ``"dynamic"`` is ``torch.ao.quantization.quantize_dynamic(model,
{nn.Linear}, dtype=torch.qint8)`` (per-tensor weights, 7-bit activations on x86: its
``reduce_range``); ``"static"`` is torch.ao's FX graph mode flow (``prepare_fx`` with the
``"x86"`` default qconfig mapping: per-channel weights, histogram-observed activations,
``convert_fx``), calibrated on the same batch as looptune's.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class QuantError:
    """Norm-wise relative errors of one quantized output against the float32 one."""

    max: float
    mean: float


@dataclass(frozen=True)
class QuantReport:
    """looptune's quantized model and PyTorch's, each against the float32 model."""

    mode: str
    looptune: QuantError
    torch: QuantError | None
    torch_reference: str

    @property
    def within_torch(self) -> bool:
        """looptune's max and mean errors are no larger than PyTorch's (True when PyTorch's
        quantized model could not be built)."""
        t = self.torch
        return t is None or (self.looptune.max <= t.max and self.looptune.mean <= t.mean)

    def as_dict(self) -> dict:
        return {**asdict(self), "within_torch": self.within_torch}

    def __str__(self) -> str:
        lt = self.looptune
        text = f"looptune int8 ({self.mode}): max rel. error {lt.max:.4g}, mean {lt.mean:.4g}"
        if self.torch is not None:
            text += (f"; {self.torch_reference}: max {self.torch.max:.4g}, "
                     f"mean {self.torch.mean:.4g}")
        return text


def relative_error(got: torch.Tensor, want: torch.Tensor) -> QuantError:
    """``max|got - want| / max|want|`` and ``mean|got - want| / mean|want|`` (float64)."""
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: {tuple(got.shape)} vs {tuple(want.shape)}")
    g, w = got.detach().double(), want.detach().double()
    d = (g - w).abs()
    big, avg = float(w.abs().max()), float(w.abs().mean())
    return QuantError(float(d.max()) / big if big > 0 else float(d.max()),
                      float(d.mean()) / avg if avg > 0 else float(d.mean()))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao's deprecation warnings silenced (it still works in this torch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


@contextlib.contextmanager
def _nondeterministic_ok() -> Iterator[None]:
    """PyTorch's quantized kernels (``quantized_resize_cpu_``...) have no deterministic
    implementation: with ``torch.use_deterministic_algorithms(True)`` set by the caller (RLlib's
    seeding does it) building or running the reference would raise. It is turned off while the
    reference runs and restored after."""
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if det:
        torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        if det:
            torch.use_deterministic_algorithms(True, warn_only=warn_only)


def torch_dynamic(model: nn.Module) -> nn.Module:
    """PyTorch's dynamically quantized copy of ``model`` (its ``nn.Linear`` layers, qint8)."""
    from torch.ao.quantization import quantize_dynamic

    with _quiet():
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def torch_static(model: nn.Module, calibration: tuple) -> nn.Module:
    """PyTorch's statically quantized copy of ``model`` by the FX graph mode flow (x86
    qconfig), calibrated on ``calibration`` (a tuple of the forward's inputs)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with _quiet():
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                              calibration)
        with torch.no_grad():
            prepared(*calibration)
        return convert_fx(prepared)


TORCH_REFERENCE = {
    "dynamic": "torch.ao quantize_dynamic (nn.Linear, qint8)",
    "static": "torch.ao FX static (prepare_fx/convert_fx, x86 qconfig)",
}


def quantization_report(model: nn.Module, quantized: nn.Module, inputs: torch.Tensor | tuple,
                        mode: str | None = None, calibration: torch.Tensor | tuple | None = None,
                        torch_model: nn.Module | None = None) -> QuantReport:
    """Errors of ``quantized`` (a ``looptune.compile(..., quantize=...)`` model) and of
    PyTorch's quantized ``model`` against ``model`` in float32, on ``inputs``.

    ``mode`` defaults to the compiled model's; ``calibration`` (static only) to the compiled
    model's calibration batch; ``torch_model`` replaces PyTorch's quantized model (built here
    otherwise; if torch.ao cannot build it, the report says so and has no torch errors)."""
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    mode = mode or getattr(quantized, "quantize", None)
    if mode not in TORCH_REFERENCE:
        raise ValueError(f"mode must be 'dynamic' or 'static', got {mode!r}")
    reference = TORCH_REFERENCE[mode]
    with torch.no_grad():
        want = model(*args)
        mine = relative_error(quantized(*args), want)
    with torch.no_grad(), _nondeterministic_ok():
        if torch_model is None:
            try:
                if mode == "dynamic":
                    torch_model = torch_dynamic(model)
                else:
                    cal = calibration if calibration is not None else getattr(
                        quantized, "calibration", None)
                    if cal is None:
                        raise ValueError("static mode needs calibration inputs")
                    torch_model = torch_static(model, cal if isinstance(cal, tuple) else (cal,))
            except Exception as exc:  # noqa: BLE001 - a torch build without quantized engines
                return QuantReport(mode, mine, None, f"{reference} unavailable: {exc}")
        theirs = relative_error(torch_model(*args), want)
    return QuantReport(mode, mine, theirs, reference)


__all__ = [
    "TORCH_REFERENCE",
    "QuantError",
    "QuantReport",
    "quantization_report",
    "relative_error",
    "torch_dynamic",
    "torch_static",
]
