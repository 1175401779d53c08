"""numpy references for looptune computations: inputs, expected outputs, correctness checks
and single-threaded numpy GFLOP/s measured in the same process (the yardstick of the CLI and
of the benchmarks).

Convolution uses im2col + matmul, the usual way to run a conv2d on a BLAS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from looptune._core import Computation, Kernel, LoopTree


@dataclass(frozen=True)
class Check:
    """Result of comparing a kernel's output with numpy's."""

    ok: bool
    max_abs_error: float
    tolerance: float

    def __str__(self) -> str:
        verdict = "matches numpy" if self.ok else "DOES NOT match numpy"
        return f"{verdict} (max abs error {self.max_abs_error:.2e}, tolerance {self.tolerance:.2e})"


def reduction_length(comp: Computation) -> int:
    """Number of products summed into each output element."""
    return int(np.prod([v.extent for v in comp.vars if v.reduction], dtype=np.int64))


def random_inputs(comp: Computation, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 inputs in the computation's user-facing shapes, uniform in [-1, 1] (int8
    computations: u8 and s8 over their ranges, ``looptune.measure.int8``)."""
    if getattr(comp, "dtype", "float32") == "int8":
        from looptune.measure import int8

        return int8.random_inputs(comp, seed)
    rng = np.random.default_rng(seed)
    a, b = (rng.uniform(-1, 1, t.shape).astype(np.float32) for t in comp.inputs)
    return a, b


def conv_params(comp: Computation) -> tuple[int, int]:
    """(stride, pad) of a conv2d computation."""
    x, w = comp.inputs
    pad = (x.alloc_shape[2] - x.shape[2]) // 2
    match = re.search(r"stride\s*[=:]?\s*(\d+)", comp.header())
    if match:
        return int(match.group(1)), pad
    # Fall back on the output size (exact whenever the output has more than one row).
    h, r, oh = x.shape[2] + 2 * pad, w.shape[2], comp.output.shape[2]
    stride = 1 if oh == 1 else (h - r) // (oh - 1)
    return stride, pad


def _im2col_conv(comp: Computation) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    stride, pad = conv_params(comp)
    k, c, r, s = comp.inputs[1].shape  # c: input channels per group
    n, _, oh, ow = comp.output.shape
    g = comp.groups

    def run(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
        win = np.lib.stride_tricks.sliding_window_view(xp, (r, s), axis=(2, 3))
        win = win[:, :, ::stride, ::stride][:, :, :oh, :ow]  # n c oh ow r s
        cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n, oh * ow, -1)
        if g == 1:
            out = np.matmul(cols, w.reshape(k, c * r * s).T)  # n (oh ow) k
        else:  # grouped: each group's output channels see their group's input channels
            cols = cols.reshape(n, oh * ow, g, c * r * s)
            out = np.einsum("npgx,gkx->npgk", cols, w.reshape(g, k // g, c * r * s))
            out = out.reshape(n, oh * ow, k)
        return np.ascontiguousarray(out.transpose(0, 2, 1)).reshape(n, k, oh, ow)

    return run


def numpy_fn(comp: Computation) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The fastest plain-numpy way to compute ``comp`` (what a numpy user would write)."""
    if comp.kind == "conv2d":
        return _im2col_conv(comp)
    if comp.kind in ("matmul", "batch_matmul"):
        return np.matmul
    spec = comp.spec
    return lambda a, b: np.einsum(spec, a, b, optimize=True)


def epilogue_inputs(comp: Computation, seed: int = 0) -> dict[str, np.ndarray]:
    """The keyword arguments ``comp``'s epilogue needs (``bias``, ``residual``), float32
    uniform in [-1, 1]; empty when it has none (int8: ``scale`` too)."""
    if getattr(comp, "dtype", "float32") == "int8":
        from looptune.measure import int8

        return int8.epilogue_inputs(comp, seed)
    rng = np.random.default_rng(seed + 7919)
    terms = comp.epilogue.split("+") if comp.epilogue else []
    out = {}
    if "bias" in terms:
        out["bias"] = rng.uniform(-1, 1, tuple(comp.bias_shape)).astype(np.float32)
    if "add" in terms:
        out["residual"] = rng.uniform(-1, 1, tuple(comp.output.shape)).astype(np.float32)
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), in float64."""
    from math import erf

    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[np.float64])(x / np.sqrt(2.0)))


def apply_epilogue(comp: Computation, out: np.ndarray, bias: np.ndarray | None = None,
                   residual: np.ndarray | None = None) -> np.ndarray:
    """``comp``'s epilogue applied to a reference output (float64)."""
    terms = comp.epilogue.split("+") if comp.epilogue else []
    out = np.asarray(out, dtype=np.float64)
    if "bias" in terms:
        shape = [1] * out.ndim
        dim = 1 if comp.kind == "conv2d" else out.ndim - 1
        shape[dim] = -1
        out = out + np.asarray(bias, dtype=np.float64).reshape(shape)
    if "add" in terms:
        out = out + np.asarray(residual, dtype=np.float64)
    if "relu" in terms:
        out = np.maximum(out, 0.0)
    elif "relu6" in terms:
        out = np.clip(out, 0.0, 6.0)
    elif "gelu" in terms:
        out = gelu(out)
    return out


def expected(comp: Computation, a: np.ndarray, b: np.ndarray,
             **epilogue: np.ndarray) -> np.ndarray:
    """Reference output computed in float64 (``bias`` / ``residual``: the epilogue's, if it
    names them; :func:`epilogue_inputs` makes random ones). int8: exact int64 sums, or the
    dequantizing epilogue's output (``looptune.measure.int8.expected``)."""
    if getattr(comp, "dtype", "float32") == "int8":
        from looptune.measure import int8

        return int8.expected(comp, a, b, **epilogue)
    out = numpy_fn(comp)(a.astype(np.float64), b.astype(np.float64))
    return apply_epilogue(comp, out, **epilogue) if comp.epilogue else out


def check_tree(tree: LoopTree, seed: int = 0, isa: str | None = None) -> Check:
    """Compile ``tree`` and compare its output with numpy on random inputs.

    The tolerance grows with the reduction length (float32 sums of that many products).
    """
    return check_kernel(tree.compile(isa), seed)


def check_kernel(kernel: Kernel, seed: int = 0) -> Check:
    """Compare a compiled kernel's output with numpy on random inputs (see :func:`check_tree`)."""
    comp = kernel.tree.computation
    a, b = random_inputs(comp, seed)
    extra = epilogue_inputs(comp, seed)
    got = np.asarray(kernel(a, b, **extra), dtype=np.float64)
    want = expected(comp, a, b, **extra)
    tol = tolerance(comp)
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    ok = got.shape == want.shape and bool(np.all(np.isfinite(got))) and err <= tol
    return Check(ok, err, tol)


def tolerance(comp: Computation) -> float:
    """The largest absolute error a correct kernel of ``comp`` may have on
    :func:`random_inputs`: float32 sums of the reduction's products (int8: 0, exact; with a
    dequantizing epilogue, float32 rounding)."""
    if getattr(comp, "dtype", "float32") == "int8":
        from looptune.measure import int8

        return int8.tolerance(comp)
    return 1e-5 + 2e-6 * reduction_length(comp)


def best_seconds(fn: Callable[[], object], min_time: float = 0.1, min_runs: int = 5) -> float:
    """Best per-call wall time of ``fn()``, timed by the one harness
    (:func:`looptune.measure.harness.best_seconds`: warm-up, ~1 ms batches, best batch)."""
    from looptune.measure.harness import best_seconds as _best

    return _best(fn, min_time, min_runs)


def numpy_gflops(comp: Computation, min_time: float = 0.1, seed: int = 0,
                 threads: int = 1) -> float:
    """numpy's GFLOP/s on ``comp`` with ``threads`` BLAS threads (default 1), timed by the
    harness
    (:func:`looptune.measure.harness.time_numpy`: preallocated output, best batch)."""
    from looptune.measure.harness import numpy_entrant, time_entrant

    factory, note = numpy_entrant(comp)
    return time_entrant(comp, factory, "numpy", min_time=min_time, check=False, note=note,
                        seed=seed, threads=threads).gflops


def torch_gflops(comp: Computation, min_time: float = 0.1, tries: int = 3) -> float | None:
    """PyTorch's GFLOP/s on ``comp`` with one thread, timed by the harness
    (:func:`looptune.measure.harness.time_torch`): the best of ``tries`` fresh allocations,
    since their alignment changes PyTorch's speed. ``None`` when torch is not installed."""
    from looptune.measure.harness import time_torch

    try:
        return time_torch(comp, min_time, allocations=tries, check=False).gflops
    except ImportError:
        return None


def blas_info() -> dict:
    """The BLAS numpy uses (threadpoolctl's report), e.g. OpenBLAS and its kernel architecture."""
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            keys = ("internal_api", "version", "architecture", "num_threads", "filepath")
            return {k: lib.get(k) for k in keys}
    return {}
