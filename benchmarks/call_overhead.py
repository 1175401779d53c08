"""Per-call overhead of a looptune kernel called from Python, on tiny kernels.

Times each kernel as a user calls it, ``kernel(a, b, out=c)`` and ``kernel(a, b)`` (the output
allocated), against the kernel alone timed in C++ (``kernel.benchmark()``, the engine's own
aligned buffers), and ``np.matmul(a, b, out=c)`` / ``torch.matmul(a, b, out=c)`` in the same
loop, all on one thread (threadpoolctl limits numpy's BLAS, ``torch.set_num_threads(1)``).
The inputs are ordinary numpy arrays (``astype(float32)``: 16-byte aligned, as numpy gives
them); ``--aligned`` adds rows on 64-byte-aligned arrays, which shows how much of a kernel's
time as called is the alignment of its operands rather than the call.

Each callable is timed in batches of ~1 ms, the callables interleaved round by round; a row
reports the best batch (microseconds per call) and, in the JSON, the median too. Overhead is
the call's time less the C++-timed kernel. Which timing each column reports is in its name.

    flock /tmp/looptune-bench.lock python benchmarks/call_overhead.py [--label after]

writes ``benchmarks/results/call_overhead.json``: one run per ``--label`` (a run of another
label is kept when it was measured on the same CPU signature), each with the CPU name and
signature, host ISA, measured peak, library versions and the command. OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are unset (the script re-executes itself without them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import RESULTS, strip_openblas_env

strip_openblas_env()

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

import looptune

try:
    from looptune.space.schedules import tilings
except ImportError:  # the package layout before the restructure
    from looptune.schedules import tilings  # type: ignore[no-redef]


def best_schedule(comp: looptune.Computation, isa: str) -> looptune.Kernel:
    """The fastest (C++-timed) of the default schedule and the hand tilings."""
    best, best_t = None, float("inf")
    for tree in [comp.default_schedule(), *tilings(comp, isa)[:24]]:
        kernel = tree.compile(isa)
        t = kernel.benchmark(min_time=0.02).min_seconds
        if t < best_t:
            best, best_t = kernel, t
    return best


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    buf = np.empty(n + 16, np.float32)
    start = (-buf.ctypes.data % 64) // 4
    return buf[start : start + n].reshape(shape)


def per_call(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict]:
    """Best and median seconds per call of each callable, batches of ~1 ms interleaved."""
    calls = {}
    for name, fn in fns.items():
        fn()  # warm-up
        calls[name] = max(1, int(1e-3 / max(per_call(fn, 20), 1e-8)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(per_call(fn, calls[name]))
    return {
        name: {
            "best_us": min(s) * 1e6,
            "median_us": statistics.median(s) * 1e6,
            "calls_per_batch": calls[name],
        }
        for name, s in samples.items()
    }


def matmul_case(m: int, k: int, n: int, isa: str, aligned: bool, rounds: int) -> dict:
    comp = looptune.matmul(m, k, n, layout="plain")
    kernel = best_schedule(comp, isa)
    rng = np.random.default_rng(0)
    if aligned:
        a, b, c = aligned_empty((m, k)), aligned_empty((k, n)), aligned_empty((m, n))
        a[...] = rng.standard_normal((m, k))
        b[...] = rng.standard_normal((k, n))
    else:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
    ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    kernel(a, b, out=c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4 * k**0.5)
    fns = {
        "looptune(a, b, out=c)": lambda: kernel(a, b, out=c),
        "looptune(a, b)": lambda: kernel(a, b),
        "np.matmul(a, b, out=c)": lambda: np.matmul(a, b, out=c),
        "torch.matmul(a, b, out=c)": lambda: torch.matmul(ta, tb, out=tc),
        # torch tensors through looptune (interop: tensors in, the tensor out back)
        "looptune(ta, tb, out=tc)": lambda: kernel(ta, tb, out=tc),
    }
    name = f"matmul {m}x{k}x{n}" + (" (64-byte aligned)" if aligned else "")
    return finish(name, comp, kernel, fns, rounds, a, prepacked=False)


def conv_case(args: tuple[int, ...], isa: str, rounds: int) -> dict:
    n, c_, h, w, k, r, s, stride, pad = args
    comp = looptune.conv2d(n, c_, h, w, k, r, s, stride=stride, pad=pad, layout="plain")
    kernel = best_schedule(comp, isa)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(comp.inputs[0].shape).astype(np.float32)
    wt = rng.standard_normal(comp.inputs[1].shape).astype(np.float32)
    out = np.empty(comp.output.shape, np.float32)
    tx, tw = torch.from_numpy(x), torch.from_numpy(wt)
    ref = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad).numpy()
    np.testing.assert_allclose(kernel(x, wt, out=out), ref, rtol=1e-4, atol=1e-3)
    kernel.set_constant(wt)
    fns = {
        "looptune(a, b, out=c)": lambda: kernel(x, wt, out=out),
        "looptune(a, b)": lambda: kernel(x, wt),
        "looptune(a, out=c) constant b": lambda: kernel(x, out=out),
        # torch's conv2d has no out=: it allocates its output every call
        "torch conv2d (allocates)": lambda: torch.nn.functional.conv2d(
            tx, tw, stride=stride, padding=pad
        ),
    }
    return finish(f"conv2d {comp.name}", comp, kernel, fns, rounds, x, prepacked=False)


def finish(name, comp, kernel, fns, rounds, a, prepacked) -> dict:
    cpp = kernel.benchmark(min_time=0.2, min_runs=20, prepacked=prepacked)
    timed = time_interleaved(fns, rounds)
    kernel_us = cpp.min_seconds * 1e6
    row = {
        "case": name,
        "computation": comp.header(),
        "schedule": kernel.tree.dump(),
        "isa": kernel.isa,
        "zero_init": kernel.facts["zero_init"],
        "a_address_mod_64": int(a.ctypes.data % 64),
        "kernel_cpp_us": kernel_us,
        "kernel_cpp_median_us": cpp.median_seconds * 1e6,
        "calls": timed,
    }
    for call in ("looptune(a, b, out=c)", "looptune(a, b)"):
        row["calls"][call]["overhead_us"] = timed[call]["best_us"] - kernel_us
    return row


def print_table(rows: list[dict]) -> None:
    cols = [
        ("C++ kernel", lambda r: r["kernel_cpp_us"]),
        ("lt(a,b,out=c)", lambda r: r["calls"]["looptune(a, b, out=c)"]["best_us"]),
        ("lt(a,b)", lambda r: r["calls"]["looptune(a, b)"]["best_us"]),
        ("overhead out=", lambda r: r["calls"]["looptune(a, b, out=c)"]["overhead_us"]),
        ("np out=", lambda r: r["calls"].get("np.matmul(a, b, out=c)", {}).get("best_us")),
        ("torch out=", lambda r: r["calls"].get("torch.matmul(a, b, out=c)", {}).get("best_us")),
        ("lt torch out=", lambda r: r["calls"].get("looptune(ta, tb, out=tc)", {}).get("best_us")),
        (
            "np/lt",
            lambda r: (
                (r["calls"].get("np.matmul(a, b, out=c)", {}).get("best_us") or float("nan"))
                / r["calls"]["looptune(a, b, out=c)"]["best_us"]
            ),
        ),
    ]
    print("microseconds per call, best ~1 ms batch; np/lt > 1: looptune faster as called")
    print(f"{'case':<36}" + "".join(f"{c:>15}" for c, _ in cols))
    for r in rows:
        cells = []
        for _, f in cols:
            v = f(r)
            cells.append(f"{v:>15.3f}" if v is not None else f"{'-':>15}")
        print(f"{r['case']:<36}" + "".join(cells))
    for r in rows:
        extra = {
            k: v["best_us"]
            for k, v in r["calls"].items()
            if k.startswith(("looptune(a, out", "torch conv"))
        }
        if extra:
            print(f"  {r['case']}: " + ", ".join(f"{k} {v:.3f}" for k, v in extra.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", default="branch", help="name of this run in the results file")
    p.add_argument("--rounds", type=int, default=30, help="interleaved rounds of ~1 ms batches")
    p.add_argument("--aligned", action="store_true", help="add rows on 64-byte-aligned arrays")
    p.add_argument("--output", type=Path, default=RESULTS / "call_overhead.json")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    torch.set_num_threads(1)
    isa = looptune.host_isa()
    rows = []
    with threadpool_limits(limits=1):
        for m, k, n in [(1, 1, 1), (4, 4, 4), (16, 16, 16), (64, 64, 64)]:
            rows.append(matmul_case(m, k, n, isa, False, args.rounds))
            if args.aligned and m >= 16:
                rows.append(matmul_case(m, k, n, isa, True, args.rounds))
        rows.append(conv_case((1, 3, 8, 8, 8, 3, 3, 1, 1), isa, args.rounds))
        blas = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for d in threadpool_info()
        ]
    print_table(rows)
    run = {
        "cpu_name": looptune.cpu_name(),
        "cpu_signature": looptune.cpu_signature(),
        "host_isa": isa,
        "peak_gflops": looptune.measure_peak_gflops(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "blas": blas,
        "threads": 1,
        "looptune_package": str(Path(looptune.__file__).parent),
        "engine": looptune._core.__file__,
        "looptune_git": _git_revision(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "unset_env": os.environ.get("LOOPTUNE_BENCH_UNSET", ""),
        "timing": "Python: best of --rounds interleaved ~1 ms batches (perf_counter); "
        "kernel_cpp: Kernel.benchmark() min (C++, the engine's aligned buffers)",
        "rows": rows,
    }
    data = {"runs": {}}
    if args.output.exists():
        old = json.loads(args.output.read_text())
        data["runs"] = {
            k: v
            for k, v in old.get("runs", {}).items()
            if v.get("cpu_signature") == run["cpu_signature"]
        }
    data["runs"][args.label] = run
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.output} (run {args.label!r})")


def _git_revision() -> str | None:
    """looptune's git revision (the shared result-file metadata of issue 22)."""
    try:
        from looptune.measure.harness import git_revision
    except ImportError:  # an engine before the harness
        return None
    return git_revision()


if __name__ == "__main__":
    main()
