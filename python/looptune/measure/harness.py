"""One timing harness for every entrant: looptune kernels, numpy, PyTorch and plain Python
callables are all timed the same way, as a user calls them from Python.

Every entrant gets, for one computation:

- inputs from :func:`looptune.measure.reference.random_inputs` and an output buffer allocated
  once, before timing (``out=``); an entrant that cannot write into it says so in its
  ``note`` (PyTorch's ``conv2d`` and ``einsum`` have no ``out=``; they allocate every call);
- the same warm-up (:data:`WARMUP_CALLS` calls), the same batch size rule (calls per batch so a
  batch lasts about :data:`BATCH_SECONDS`, so the timer's own cost does not count), the same
  best-of rule (best batch of at least ``min_runs`` batches and ``min_time`` seconds);
- the same thread count, one by default (``threads=T``: numpy's BLAS limited to T threads
  through threadpoolctl, ``torch.set_num_threads(T)``, looptune kernels called with
  ``looptune.set_num_threads(T)``; only a kernel with a parallel loop uses more than one);
- ``allocations`` fresh input/output allocations, best of them, the same for every entrant
  (:data:`ALLOCATIONS`): allocation ``i`` puts the inputs and the output ``ALIGN_OFFSETS[i]``
  bytes past a 64-byte boundary, since both PyTorch's and looptune's kernels run slower on
  inputs that straddle cache lines (a looptune base schedule of a 64x64x96 matmul: 94
  GFLOP/s 64-byte aligned, 64 at 16 bytes past); ``Timing.allocation_gflops`` keeps each.

A looptune kernel is timed through ``kernel(a, b, out=c)``, so its figure includes the binding's
argument checks, exactly what a user pays per call. The in-C++ timing (``Kernel.benchmark``,
used by :class:`looptune.measure.Measurer`) stays for the tuners' own fast decisions; a result
says which it reports (:data:`TIMING`, :data:`CPP_TIMING`).

An entrant is a *factory*: ``factory(a, b, out) -> call`` where ``call()`` does one call on
those buffers (see :func:`numpy_entrant`, :func:`torch_entrant`, :func:`kernel_entrant`,
:func:`callable_entrant`).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from looptune._core import Computation, Kernel, LoopTree

#: What a figure timed by this harness is called in result files.
TIMING = "python-call harness (looptune.measure.harness: kernel(a, b, out=c) from Python)"
#: What a figure timed inside the engine is called in result files.
CPP_TIMING = "in-C++ (Kernel.benchmark: the kernel alone, no Python call)"

WARMUP_CALLS = 2  # calls before any timing (page faults, code and data caches, lazy setup)
BATCH_SECONDS = 1e-3  # a timed batch lasts about this long
MIN_TIME = 0.1  # seconds of timed batches per allocation
MIN_RUNS = 5  # timed batches per allocation, at least
THREADS = 1
ALIGN_OFFSETS = (0, 16, 32)  # bytes past a 64-byte boundary, allocation by allocation
ALLOCATIONS = len(ALIGN_OFFSETS)  # every entrant: best of these (alignment moves speeds)
TORCH_ALLOCATIONS = ALLOCATIONS  # the old name

#: ``factory(a, b, out) -> call``: the entrant set up on preallocated buffers.
Factory = Callable[[np.ndarray, np.ndarray, np.ndarray], Callable[[], object]]


@dataclass(frozen=True)
class Timing:
    """One entrant's timing on one computation (seconds per call, GFLOP/s from them)."""

    entrant: str
    seconds: float  # best batch's mean seconds per call, best over allocations
    median_seconds: float  # median batch of the best allocation
    gflops: float
    median_gflops: float
    runs: int  # timed batches, all allocations
    calls_per_batch: int
    allocations: int
    allocation_gflops: list[float] = field(default_factory=list)
    max_abs_error: float = math.nan  # of the first allocation's output against numpy (float64)
    tolerance: float = math.nan
    ok: bool = True  # output matched the reference (True when not checked)
    note: str = ""
    threads: int = THREADS
    timing: str = TIMING

    def as_dict(self) -> dict:
        return asdict(self)


def time_call(
    fn: Callable[[], object], min_time: float = MIN_TIME, min_runs: int = MIN_RUNS
) -> tuple[float, float, int, int]:
    """(best, median seconds per call, batches, calls per batch) of ``fn()``: after
    :data:`WARMUP_CALLS` warm-up calls, calls are timed in batches of about
    :data:`BATCH_SECONDS`, at least ``min_runs`` batches and ``min_time`` seconds."""
    if min_time < 0 or min_runs < 1:
        raise ValueError(f"need min_time >= 0 and min_runs >= 1, got {min_time}, {min_runs}")
    for _ in range(WARMUP_CALLS - 1):
        fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(BATCH_SECONDS / max(time.perf_counter() - t0, 1e-7)))
    per_call: list[float] = []
    start = time.perf_counter()
    while len(per_call) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        per_call.append((time.perf_counter() - t0) / inner)
    return min(per_call), statistics.median(per_call), len(per_call), inner


def best_seconds(fn: Callable[[], object], min_time: float = MIN_TIME, min_runs: int = MIN_RUNS
                 ) -> float:
    """Best per-call wall time of ``fn()`` (see :func:`time_call`)."""
    return time_call(fn, min_time, min_runs)[0]


@contextlib.contextmanager
def thread_limit(threads: int = THREADS) -> Iterator[None]:
    """numpy's BLAS, PyTorch (if imported) and looptune's kernels limited to ``threads``
    threads for the block (each restored after it)."""
    from threadpoolctl import threadpool_limits

    from looptune import _core
    from looptune.threads import resolve_threads

    threads = resolve_threads(threads, warn=False)
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    old_lt = _core.get_num_threads()
    try:
        if torch is not None:
            torch.set_num_threads(threads)
        _core.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            yield
    finally:
        _core.set_num_threads(old_lt)
        if torch is not None and old is not None:
            torch.set_num_threads(old)


def single_thread() -> contextlib.AbstractContextManager[None]:
    """numpy's BLAS, PyTorch (if imported) and looptune limited to one thread."""
    return thread_limit(1)


def at_offset(x: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of ``x`` whose data start ``offset`` bytes past a 64-byte boundary."""
    buf = np.empty(x.nbytes + 64 + offset, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    y = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    y[...] = x
    return y


def time_entrant(
    comp: Computation,
    factory: Factory,
    name: str,
    *,
    allocations: int = ALLOCATIONS,
    min_time: float = MIN_TIME,
    min_runs: int = MIN_RUNS,
    check: bool = True,
    note: str = "",
    seed: int = 0,
    threads: int = THREADS,
) -> Timing:
    """Time ``factory``'s call on ``comp``: ``allocations`` fresh input and output buffers
    (inputs of seed ``seed + i``, placed ``ALIGN_OFFSETS[i % 3]`` bytes past a 64-byte
    boundary), each timed by :func:`time_call` under
    :func:`thread_limit` (``threads``); the best one counts.
    With ``check`` the first allocation's output is compared with numpy's (float64)."""
    from looptune.measure.reference import (
        epilogue_inputs,
        expected,
        random_inputs,
        tolerance,
    )

    if allocations < 1:
        raise ValueError(f"allocations must be >= 1, got {allocations}")
    best = (math.inf, math.inf)
    runs, inner, per_alloc = 0, 1, []
    err, tol, ok = math.nan, math.nan, True
    with thread_limit(threads):
        for i in range(allocations):
            off = ALIGN_OFFSETS[i % len(ALIGN_OFFSETS)]
            a, b = (at_offset(x, off) for x in random_inputs(comp, seed + i))
            out = at_offset(np.zeros(comp.output.shape, _out_dtype(comp)), off)
            call = factory(a, b, out)
            if check and i == 0:
                got = np.asarray(_result(call(), out), dtype=np.float64)
                # a looptune kernel applies the computation's epilogue (on its fixed
                # operands, epilogue_inputs(comp)); the baselines compute the plain op
                extra = epilogue_inputs(comp) if getattr(factory, "epilogue", False) else {}
                want = expected(comp, a, b, **extra) if extra else expected(
                    comp.with_epilogue(""), a, b)
                tol = tolerance(comp)
                same = got.shape == want.shape and bool(np.all(np.isfinite(got)))
                err = float(np.max(np.abs(got - want))) if same and got.size else math.inf
                ok = same and err <= tol
            s, med, n, inner = time_call(call, min_time, min_runs)
            runs += n
            per_alloc.append(comp.flops / s / 1e9)
            if s < best[0]:
                best = (s, med)
    return Timing(
        entrant=name,
        seconds=best[0],
        median_seconds=best[1],
        gflops=comp.flops / best[0] / 1e9,
        median_gflops=comp.flops / best[1] / 1e9,
        runs=runs,
        calls_per_batch=inner,
        allocations=allocations,
        allocation_gflops=per_alloc,
        max_abs_error=err,
        tolerance=tol,
        ok=ok,
        note=note,
        threads=threads,
    )


def _out_dtype(comp: Computation) -> type:
    """float32, or int32 for an int8 computation without an epilogue."""
    from looptune.measure.int8 import out_dtype

    return out_dtype(comp)


def _result(ret: object, out: np.ndarray) -> np.ndarray:
    """What a call produced: its return value if it is an array/tensor, else ``out``."""
    if ret is None:
        return out
    if hasattr(ret, "numpy") and not isinstance(ret, np.ndarray):
        return ret.detach().numpy()  # a torch tensor
    return np.asarray(ret)


# ---------------------------------------------------------------------------------- entrants


def kernel_entrant(kernel: Kernel, prepacked: bool = False) -> Factory:
    """A compiled looptune kernel, called as a user calls it: ``kernel(a, b, out=out)``; with
    ``prepacked`` the constant operand is set once (``kernel.set_constant(b)``, packed) and
    each call is ``kernel(a, out=out)``."""

    from looptune.measure.reference import epilogue_inputs

    comp = kernel.tree.computation
    extra = epilogue_inputs(comp)  # the epilogue's bias / residual (fixed random operands)

    def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
        if prepacked:
            kernel.set_constant(b)
            return lambda: kernel(a, out=out, **extra)
        return lambda: kernel(a, b, out=out, **extra)

    factory.epilogue = bool(comp.epilogue)  # type: ignore[attr-defined]
    return factory


def callable_entrant(fn: Callable[[np.ndarray, np.ndarray, np.ndarray], object]) -> Factory:
    """Any Python callable ``fn(a, b, out)`` that writes ``out`` (or returns the result)."""

    def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
        return lambda: fn(a, b, out)

    return factory


def numpy_entrant(comp: Computation) -> tuple[Factory, str]:
    """(factory, note) of numpy's way to compute ``comp``: ``np.matmul(a, b, out=out)`` for
    matmuls, an im2col GEMM for conv2d (windows copied into a preallocated column buffer,
    one ``np.matmul`` into a preallocated result, transposed into ``out``), ``np.einsum(...,
    out=out, optimize=True)`` for other contractions."""
    from looptune.measure.reference import conv_params

    if comp.kind in ("matmul", "batch_matmul"):
        def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
            return lambda: np.matmul(a, b, out=out)

        return factory, "np.matmul(out=)"
    if comp.kind == "conv2d" and comp.groups > 1:
        from looptune.measure.reference import numpy_fn

        grouped = numpy_fn(comp)

        def factory(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> Callable[[], object]:
            def run() -> None:
                out[...] = grouped(x, w)

            return run

        return factory, "grouped im2col (window copy + np.einsum per group)"
    if comp.kind == "conv2d":
        stride, pad = conv_params(comp)
        k, c, r, s = comp.inputs[1].shape
        n, _, oh, ow = comp.output.shape

        def factory(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> Callable[[], object]:
            wt = np.ascontiguousarray(w.reshape(k, c * r * s).T)  # weights prepared once
            xp = np.zeros((n, c, x.shape[2] + 2 * pad, x.shape[3] + 2 * pad), np.float32
                          ) if pad else x
            cols = np.empty((n, oh, ow, c, r, s), np.float32)
            res = np.empty((n, oh * ow, k), np.float32)
            inner = (slice(None), slice(None), slice(pad, pad + x.shape[2]),
                     slice(pad, pad + x.shape[3]))

            def run() -> None:
                if pad:
                    xp[inner] = x
                win = np.lib.stride_tricks.sliding_window_view(xp, (r, s), axis=(2, 3))
                cols[...] = win[:, :, ::stride, ::stride][:, :, :oh, :ow].transpose(
                    0, 2, 3, 1, 4, 5)
                np.matmul(cols.reshape(n, oh * ow, c * r * s), wt, out=res)
                out[...] = res.reshape(n, oh, ow, k).transpose(0, 3, 1, 2)

            return run

        return factory, "im2col GEMM (window copy + np.matmul(out=) + transpose into out)"
    spec = comp.spec

    def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
        path = np.einsum_path(spec, a, b, optimize="optimal")[0]
        return lambda: np.einsum(spec, a, b, out=out, optimize=path)

    return factory, "np.einsum(out=, optimize)"


def torch_entrant(comp: Computation) -> tuple[Factory, str]:
    """(factory, note) of PyTorch's way to compute ``comp``: ``torch.matmul(out=)`` for
    matmuls, ``torch.nn.functional.conv2d`` for conv2d and ``torch.einsum`` otherwise (neither
    has ``out=``: they allocate their output every call). Raises ImportError without torch."""
    import torch

    if comp.kind in ("matmul", "batch_matmul"):
        def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
            ta, tb, to = (torch.from_numpy(x) for x in (a, b, out))
            return lambda: torch.matmul(ta, tb, out=to)

        return factory, "torch.matmul(out=)"
    if comp.kind == "conv2d":
        stride, pad, groups = comp.conv_stride, comp.conv_pad, comp.groups
        conv = torch.nn.functional.conv2d

        def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            return lambda: conv(ta, tb, stride=stride, padding=pad, groups=groups)

        return factory, "torch.nn.functional.conv2d (no out=: allocates its output)"
    spec = comp.spec

    def factory(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> Callable[[], object]:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.einsum(spec, ta, tb)

    return factory, "torch.einsum (no out=: allocates its output)"


# ------------------------------------------------------------------------- the usual calls


def time_kernel(
    tree_or_kernel: LoopTree | Kernel,
    name: str = "looptune",
    isa: str | None = None,
    min_time: float = MIN_TIME,
    min_runs: int = MIN_RUNS,
    check: bool = True,
    prepacked: bool = False,
    threads: int = THREADS,
) -> Timing:
    """A looptune schedule (compiled for ``isa``) or kernel, timed as a user calls it
    (``prepacked``: the constant operand set once, see :func:`kernel_entrant`)."""
    kernel = tree_or_kernel.compile(isa) if isinstance(tree_or_kernel, LoopTree) else tree_or_kernel
    return time_entrant(kernel.tree.computation, kernel_entrant(kernel, prepacked), name,
                        min_time=min_time, min_runs=min_runs, check=check, threads=threads,
                        note="kernel(a, out=) after set_constant(b)" if prepacked
                        else "kernel(a, b, out=)")


def time_numpy(comp: Computation, min_time: float = MIN_TIME, min_runs: int = MIN_RUNS,
               check: bool = True, threads: int = THREADS) -> Timing:
    """numpy on ``comp`` (see :func:`numpy_entrant`), ``threads`` BLAS threads (default 1)."""
    factory, note = numpy_entrant(comp)
    return time_entrant(comp, factory, "numpy", min_time=min_time, min_runs=min_runs,
                        check=check, note=note, threads=threads)


def time_torch(comp: Computation, min_time: float = MIN_TIME, min_runs: int = MIN_RUNS,
               allocations: int = TORCH_ALLOCATIONS, check: bool = True,
               threads: int = THREADS) -> Timing:
    """PyTorch on ``comp`` (see :func:`torch_entrant`), ``threads`` threads (default 1), best
    of ``allocations`` fresh buffers. Raises ImportError without torch."""
    import torch

    factory, note = torch_entrant(comp)
    with torch.no_grad():
        t = time_entrant(comp, factory, "pytorch", allocations=allocations, min_time=min_time,
                         min_runs=min_runs, check=check, note=note, threads=threads)
    return t


def torch_available() -> bool:
    """Whether PyTorch can be imported (imports it: about 2 s the first time)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------ run metadata


def library_versions() -> dict:
    """numpy (and the BLAS it uses, via threadpoolctl), PyTorch if importable, looptune's
    version and git revision (of the checkout it runs from; None outside a git checkout)."""
    import importlib.metadata as md

    import looptune
    from looptune.measure.reference import blas_info

    out: dict = {"numpy": np.__version__, "blas": blas_info()}
    try:
        out["torch"] = md.version("torch")
    except md.PackageNotFoundError:
        out["torch"] = None
    out["looptune"] = getattr(looptune, "__version__", None)
    out["looptune_git"] = git_revision()
    return out


def git_revision() -> str | None:
    """``git describe --always --dirty`` of the checkout this looptune runs from, or None."""
    import subprocess
    from pathlib import Path

    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                             cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def run_metadata(peak: bool = True, isa: str | None = None) -> dict:
    """What every result file records about its run: CPU name, CPU signature (vendor, family,
    model: the microarchitecture), ISA, the measured peak in this run (``peak``), library
    versions, the command line and the timing this harness reports."""
    import os
    import platform

    import looptune

    isa = isa or looptune.host_isa()
    meta = {
        "cpu": looptune.cpu_name(),
        "cpu_signature": looptune.cpu_signature(),
        "isa": isa,
        "peak_gflops": looptune.measure_peak_gflops(isa) if peak else None,
        "python": platform.python_version(),
        "versions": library_versions(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "threads": THREADS,
        "timing": TIMING,
        "load_avg": list(os.getloadavg()),
    }
    return meta
