"""numpy references of int8 computations (u8 activations x s8 weights summed in int32): the
inputs, the exact expected output, the epilogue's operands, and a reference to time against
(``torch._int_mm``). ``looptune.measure.reference`` and the harness hand int8 computations here.

    >>> import looptune
    >>> from looptune.measure import int8
    >>> comp = looptune.matmul(64, 128, 32, dtype="int8")  # doctest: +SKIP
    >>> a, b = int8.random_inputs(comp)                     # doctest: +SKIP
    >>> (a.dtype, b.dtype, int8.expected(comp, a, b).dtype)  # doctest: +SKIP
    (dtype('uint8'), dtype('int8'), dtype('int64'))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from looptune._core import Computation


def is_int8(comp: Computation) -> bool:
    return getattr(comp, "dtype", "float32") == "int8"


def out_dtype(comp: Computation) -> type:
    """The kernel's output element type: int32 without an epilogue, uint8 with one ending in
    'requant', else float32."""
    if is_int8(comp) and comp.epilogue.endswith("requant"):
        return np.uint8
    return np.int32 if is_int8(comp) and not comp.epilogue else np.float32


def random_inputs(comp: Computation, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """u8 activations and s8 weights over their whole ranges (0..255, -128..127), in the
    computation's user-facing shapes; the extremes are always present."""
    rng = np.random.default_rng(seed)
    a_shape, b_shape = (tuple(t.shape) for t in comp.inputs)
    a = rng.integers(0, 256, a_shape, dtype=np.uint8)
    b = rng.integers(-128, 128, b_shape, dtype=np.int8)
    a.reshape(-1)[:2] = (0, 255)
    b.reshape(-1)[:2] = (-128, 127)
    return a, b


def epilogue_inputs(comp: Computation, seed: int = 0) -> dict[str, Any]:
    """The epilogue's operands: ``scale`` (positive, sized so outputs are about 1), ``bias``
    and ``residual`` (uniform in [-1, 1]), as the epilogue names them; 'requant':
    ``out_scale`` 4 / 255 and ``out_zero_point`` 128 (outputs in about [-2, 2] fill 0..255)."""
    from looptune.measure.reference import reduction_length

    rng = np.random.default_rng(seed + 7919)
    terms = comp.epilogue.split("+") if comp.epilogue else []
    out = {}
    if "scale" in terms:
        top = 1.0 / (128.0 * 255.0 * np.sqrt(reduction_length(comp)))
        out["scale"] = rng.uniform(0.5 * top, top, tuple(comp.bias_shape)).astype(np.float32)
    if "bias" in terms:
        out["bias"] = rng.uniform(-1, 1, tuple(comp.bias_shape)).astype(np.float32)
    if "add" in terms:
        out["residual"] = rng.uniform(-1, 1, tuple(comp.output.shape)).astype(np.float32)
    if "requant" in terms:
        out["out_scale"], out["out_zero_point"] = 4.0 / 255.0, 128
    return out


def accumulate(comp: Computation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact int64 sums of ``comp`` (no epilogue): matmul / batched matmul, or conv2d
    (NCHW x KCRS, stride, zero padding, groups) as an int64 im2col product."""
    a64, b64 = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
    if comp.kind in ("matmul", "batch_matmul"):
        return np.matmul(a64, b64)
    if comp.kind != "conv2d":
        raise ValueError(f"int8 computations are matmul, batch_matmul or conv2d, not {comp.kind}")
    stride, pad, g = comp.conv_stride, comp.conv_pad, comp.groups
    k, c, r, s = b64.shape  # c: input channels per group
    n, _, oh, ow = comp.output.shape
    xp = np.pad(a64, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (r, s), axis=(2, 3))
    win = win[:, :, ::stride, ::stride][:, :, :oh, :ow]  # n C oh ow r s
    win = win.reshape(n, g, c, oh, ow, r, s)
    out = np.einsum("ngcpqrs,gkcrs->ngkpq", win, b64.reshape(g, k // g, c, r, s),
                    optimize=True)
    return out.reshape(n, k, oh, ow)


def expected(comp: Computation, a: np.ndarray, b: np.ndarray,
             **epilogue: np.ndarray) -> np.ndarray:
    """The reference output: the exact int64 sums, or with an epilogue ``act(acc * scale +
    bias + residual)`` in float64 ('requant': that quantized, clip(rint(y / out_scale) +
    out_zero_point, 0, 255), within one step of the kernel's float32 rounding)."""
    from looptune.measure.reference import apply_epilogue

    acc = accumulate(comp, a, b)
    if not comp.epilogue:
        return acc
    scale = epilogue.pop("scale")
    shape = [1] * acc.ndim
    shape[1 if comp.kind == "conv2d" else acc.ndim - 1] = -1
    out_scale = epilogue.pop("out_scale", None)
    zero_point = epilogue.pop("out_zero_point", None)
    out = acc.astype(np.float64) * np.asarray(scale, np.float64).reshape(shape)
    y = apply_epilogue(comp, out, **epilogue)
    if not comp.epilogue.endswith("requant"):
        return y
    return np.clip(np.rint(y / float(np.float32(out_scale))) + zero_point, 0, 255)


def tolerance(comp: Computation) -> float:
    """0 for int32 outputs (exact); float32 rounding of the dequantized value otherwise (one
    step of a requantized uint8 output)."""
    if comp.epilogue.endswith("requant"):
        return 1.0
    return 0.0 if not comp.epilogue else 1e-5


def int_mm_entrant(comp: Computation) -> tuple[Callable, str]:
    """``torch._int_mm`` (s8 x s8 -> int32) on a matmul of ``comp``'s shape: the activations
    reinterpreted as s8 (the same bytes), no ``out=`` (it allocates). Raises ImportError
    without torch, ValueError for other kinds."""
    import torch

    if comp.kind != "matmul" or comp.block:
        raise ValueError("torch._int_mm runs plain matmuls only")

    def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
        ta = torch.from_numpy(a.view(np.int8))
        tb = torch.from_numpy(np.ascontiguousarray(b))
        return lambda: torch._int_mm(ta, tb)

    return factory, "torch._int_mm (s8 x s8 -> int32; allocates its output)"


__all__ = ["accumulate", "epilogue_inputs", "expected", "int_mm_entrant", "is_int8",
           "out_dtype", "random_inputs", "tolerance"]
