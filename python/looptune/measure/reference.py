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
    """Two float32 inputs in the computation's user-facing shapes, uniform in [-1, 1]."""
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
    k, c, r, s = comp.inputs[1].shape
    n, _, oh, ow = comp.output.shape

    def run(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
        win = np.lib.stride_tricks.sliding_window_view(xp, (r, s), axis=(2, 3))
        win = win[:, :, ::stride, ::stride][:, :, :oh, :ow]  # n c oh ow r s
        cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n, oh * ow, -1)
        out = np.matmul(cols, w.reshape(k, c * r * s).T)  # n (oh ow) k
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


def expected(comp: Computation, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference output computed in float64."""
    return numpy_fn(comp)(a.astype(np.float64), b.astype(np.float64))


def check_tree(tree: LoopTree, seed: int = 0, isa: str | None = None) -> Check:
    """Compile ``tree`` and compare its output with numpy on random inputs.

    The tolerance grows with the reduction length (float32 sums of that many products).
    """
    return check_kernel(tree.compile(isa), seed)


def check_kernel(kernel: Kernel, seed: int = 0) -> Check:
    """Compare a compiled kernel's output with numpy on random inputs (see :func:`check_tree`)."""
    comp = kernel.tree.computation
    a, b = random_inputs(comp, seed)
    got = np.asarray(kernel(a, b), dtype=np.float64)
    want = expected(comp, a, b)
    tol = 1e-5 + 2e-6 * reduction_length(comp)
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    ok = got.shape == want.shape and bool(np.all(np.isfinite(got))) and err <= tol
    return Check(ok, err, tol)


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
