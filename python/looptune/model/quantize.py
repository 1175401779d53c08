"""Quantization arithmetic of ``looptune.compile(model, ..., quantize="dynamic" | "static")``.

The scheme is torch.ao's affine one, with the two choices the VNNI instruction allows:

* **weights**: signed 8-bit, symmetric, one scale per output channel, fixed at compile time:
  ``s_w[c] = max|w[c]| / 127``, ``w_q = round(w * (1 / s_w[c]))`` in -127..127 (zero point
  0);
* **activations**: unsigned 8-bit, affine, one scale and zero point for the whole tensor:
  ``lo = min(x.min(), 0)``, ``hi = max(x.max(), 0)``, ``s_x = (hi - lo) / 255``,
  ``z_x = round(-lo / s_x)``, ``x_q = clamp(round(x * (1 / s_x)) + z_x, 0, 255)``. ``"dynamic"``
  observes the range of every call's input; ``"static"`` the range over a calibration batch,
  once. Unlike fbgemm's dynamic Linear (which keeps activations to 7 bits, ``reduce_range``,
  because AVX2's ``vpmaddubsw`` saturates), the full 0..255 is used: ``vpdpbusd`` (and the
  engine's exact non-VNNI path) never saturate;
* **accumulation**: ``acc[m, c] = sum_k x_q[m, k] * w_q[k, c]`` exactly in int32;
* **dequantization**, in the kernel's store: ``y = act(acc * scale[c] + bias'[c])`` with
  ``scale[c] = s_x * s_w[c]`` and the zero point folded into the bias:
  ``bias'[c] = bias[c] - scale[c] * z_x * colsum[c]``, ``colsum[c] = sum_k w_q[k, c]``.

This module holds that arithmetic (numpy, the reference the tests compare kernels against) and
the checks; ``looptune.model.qruntime`` runs it with the engine's int8 kernels and
``looptune.model.qerror`` reports what it costs in accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from looptune.errors import LoopTuneError

MODES = ("dynamic", "static")
W_MAX = 127  # weights in -W_MAX..W_MAX (symmetric: no -128, so -w_q is always representable)


class QuantizationUnavailableError(LoopTuneError, RuntimeError):
    """No int8 path on this CPU or in this engine build: a quantized model cannot be compiled
    (compile it without ``quantize=``, in float32)."""


class CalibrationError(LoopTuneError, ValueError):
    """``quantize="static"`` without usable calibration inputs (missing, wrong shapes or
    dtype, or not finite)."""


@dataclass(frozen=True)
class ActQuant:
    """Per-tensor u8 activation parameters: ``x_q = clamp(round(x / scale) + zero_point)``."""

    scale: float
    zero_point: int


def check_mode(quantize: object) -> str | None:
    """``quantize`` validated: None / "dynamic" / "static" (TypeError / ValueError if not)."""
    if quantize is None or quantize is False:
        return None
    if not isinstance(quantize, str):
        raise TypeError(f"quantize must be None, 'dynamic' or 'static', got "
                        f"{type(quantize).__name__}")
    if quantize not in MODES:
        raise ValueError(f"unknown quantize mode {quantize!r}; choose from {list(MODES)}")
    return quantize


def act_qparams(lo: float, hi: float) -> ActQuant:
    """The u8 scale and zero point of a tensor whose values lie in [lo, hi] (the range is
    widened to hold 0, so that 0 is exact; a range of width 0 gets scale 1). Computed in
    float32 as ``looptune.quantize_u8`` computes them: ``scale = (hi - lo) / 255``,
    ``zero_point = clamp(round_half_even(-lo / scale), 0, 255)``."""
    lo32, hi32 = np.float32(min(float(lo), 0.0)), np.float32(max(float(hi), 0.0))
    if not (np.isfinite(lo32) and np.isfinite(hi32)):
        raise ValueError(f"activation range [{lo}, {hi}] is not finite")
    scale = np.float32((hi32 - lo32) / np.float32(255.0))
    if not (scale > 0 and np.isfinite(scale)):
        scale = np.float32(1.0)
    zp = int(np.clip(np.rint(-lo32 / scale), 0, 255))
    return ActQuant(float(scale), zp)


def quantize_act(x: np.ndarray, q: ActQuant) -> np.ndarray:
    """Reference u8 quantization of ``x`` (float32) with ``q``, as ``looptune.quantize_u8``
    does it: round half to even of ``x * (1 / scale)`` in float32, plus the zero point,
    clamped to 0..255."""
    x = np.asarray(x, np.float32)
    inv = np.float32(1.0) / np.float32(q.scale)
    v = np.rint(x * inv) + np.float32(q.zero_point)
    return np.clip(v, 0, 255).astype(np.uint8)


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric s8 quantization of ``w`` (channel = axis 0: a linear's
    ``[N, K]`` or a conv's ``[K, C, R, S]``): ``(w_q int8 of w's shape, scales float32 [N])``.
    A channel of zeros gets scale 1."""
    w = np.asarray(w, np.float32)
    if w.ndim < 2:
        raise ValueError(f"expected a weight of 2 or more dimensions, got shape {w.shape}")
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(W_MAX), np.float32(1.0)).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    inv = (np.float32(1.0) / scale).reshape(shape)  # as looptune.quantize_per_channel_s8
    q = np.clip(np.rint(w * inv), -W_MAX, W_MAX).astype(np.int8)
    return q, scale


def dequant_params(act: ActQuant, w_scale: np.ndarray, colsum: np.ndarray,
                   bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The epilogue's per-channel ``(scale, bias')`` (float32): ``scale = s_x * s_w`` and
    ``bias' = bias - scale * z_x * colsum`` (the activation zero point folded in)."""
    scale = (np.float32(act.scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
    shift = scale * np.float32(act.zero_point) * np.asarray(colsum, np.float32)
    b = np.zeros_like(scale) if bias is None else np.asarray(bias, np.float32)
    return scale, (b - shift).astype(np.float32)


def reference_linear(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None,
                     act: ActQuant | None = None, relu: bool = False) -> np.ndarray:
    """The quantized ``x @ w.T + bias`` (``x`` [..., K] float32, ``w`` [N, K]) computed the
    way the compiled model does: ``act=None`` observes ``x``'s own range (dynamic)."""
    x = np.asarray(x, np.float32)
    act = act or act_qparams(x.min(initial=0.0), x.max(initial=0.0))
    xq = quantize_act(x, act).reshape(-1, x.shape[-1]).astype(np.int64)
    wq, ws = quantize_weight(w)
    acc = xq @ wq.T.astype(np.int64)  # exact
    scale, b = dequant_params(act, ws, wq.astype(np.int64).sum(axis=1), bias)
    y = acc.astype(np.float32) * scale + b
    if relu:
        y = np.maximum(y, np.float32(0.0))
    return y.reshape(*x.shape[:-1], w.shape[0])


def reference_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: int,
                   pad: int, act: ActQuant, relu: bool = False) -> np.ndarray:
    """The quantized conv2d (NCHW, ``w`` [K, C, R, S], groups 1) with static activation
    parameters ``act``; padding is the real 0, i.e. the zero point in the quantized input."""
    x = np.asarray(x, np.float32)
    h, wd = x.shape[2:]
    k, _, r, s = w.shape
    xq = quantize_act(x, act).astype(np.int64)
    xq = np.pad(xq, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=act.zero_point)
    win = np.lib.stride_tricks.sliding_window_view(xq, (r, s), axis=(2, 3))
    oh, ow = (h + 2 * pad - r) // stride + 1, (wd + 2 * pad - s) // stride + 1
    win = win[:, :, ::stride, ::stride][:, :, :oh, :ow]  # n c oh ow r s
    wq, ws = quantize_weight(w)
    acc = np.einsum("ncpqrs,kcrs->nkpq", win, wq.astype(np.int64), optimize=True)
    scale, b = dequant_params(act, ws, wq.astype(np.int64).reshape(k, -1).sum(axis=1), bias)
    y = acc.astype(np.float32) * scale.reshape(1, k, 1, 1) + b.reshape(1, k, 1, 1)
    return np.maximum(y, np.float32(0.0)) if relu else y


__all__ = ["MODES", "W_MAX", "ActQuant", "CalibrationError", "QuantizationUnavailableError",
           "act_qparams", "check_mode", "dequant_params", "quantize_act", "quantize_weight",
           "reference_conv", "reference_linear"]
