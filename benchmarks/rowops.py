"""The engine's row-wise ops against PyTorch's, at 1 and 2 threads.

What a quantized BERT-base encoder layer runs outside its GEMMs (issue 25): GELU on 128x3072,
softmax over 12x128x128 after a division by 8 (ours: ``softmax(x, scale=0.125)``; PyTorch:
``torch.softmax(t / 8, -1)``, the two ops the model ran), layer norm over 128x768, and the u8
quantization of the GEMMs' activations (128x768, 128x3072; PyTorch:
``torch.quantize_per_tensor_dynamic``), each with two invented shapes besides. Ours write into a
preallocated ``out`` (GELU: PyTorch's ``gelu(t, out=o)`` likewise); ours run on the host's best
ISA and, as a second row, forced to AVX2. Thread counts are set on both sides
(``looptune.set_num_threads``, ``torch.set_num_threads``).

Each callable is timed in batches of ~2 ms, the callables of a row interleaved round by round;
a cell is the best batch (microseconds per call), the JSON has the medians too.

    flock /tmp/looptune-bench.lock python benchmarks/rowops.py [--rounds 7]

writes ``benchmarks/results/rowops.json`` (the CPU name and signature, host ISA, versions,
command) and ``rowops.md``. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset (the script
re-executes itself without them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import RESULTS, environment, strip_openblas_env, write_json

strip_openblas_env()

import numpy as np
import torch

import looptune
from looptune import _core
from looptune.report.tables import format_table

warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")

# (op, shape, what it is)
CASES = [
    ("gelu", (128, 3072), "BERT-base FFN"),
    ("gelu", (50, 4099), "invented"),
    ("gelu", (7, 33, 129), "invented"),
    ("softmax", (12, 128, 128), "BERT-base attention, scale 1/8"),
    ("softmax", (8, 64, 77), "invented, scale 1/8"),
    ("softmax", (3, 500, 1001), "invented, scale 1/8"),
    ("layer_norm", (128, 768), "BERT-base"),
    ("layer_norm", (256, 1023), "invented"),
    ("layer_norm", (1000, 64), "invented"),
    ("quantize_u8", (128, 768), "BERT-base GEMM input"),
    ("quantize_u8", (128, 3072), "BERT-base FFN2 input"),
    ("quantize_u8", (37, 5000), "invented"),
    ("quantize_u8", (200, 999), "invented"),
]


def callables(op: str, shape: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32) * 2
    y = np.empty_like(x)
    t = torch.from_numpy(x.copy())
    o = torch.empty_like(t)
    ours = {}
    isas = [looptune.host_isa()] + (["avx2"] if looptune.host_isa() != "avx2" else [])
    if op == "gelu":
        for isa in isas:
            ours[isa] = lambda isa=isa: _core.gelu(x, out=y, isa=isa)
        def theirs():
            return torch._C._nn.gelu(t, out=o)
    elif op == "softmax":
        for isa in isas:
            ours[isa] = lambda isa=isa: _core.softmax(x, 0.125, out=y, isa=isa)
        def theirs():
            return torch.softmax(t / 8, -1)
    elif op == "layer_norm":
        d = shape[-1]
        w, b = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
        tw, tb = torch.from_numpy(w), torch.from_numpy(b)
        for isa in isas:
            ours[isa] = lambda isa=isa: _core.layer_norm(x, w, b, 1e-12, out=y, isa=isa)
        def theirs():
            return torch.nn.functional.layer_norm(t, (d,), tw, tb, 1e-12)
    else:
        q = np.empty(shape, np.uint8)
        for isa in isas:
            ours[isa] = lambda isa=isa: _core.quantize_u8(x, out=q, isa=isa)
        def theirs():
            return torch.quantize_per_tensor_dynamic(t, torch.quint8, False)
    return {**{f"looptune_{k}": f for k, f in ours.items()}, "torch": theirs}


def time_row(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, float]]:
    """Best and median microseconds per call, in ~2 ms batches interleaved round by round."""
    reps = {}
    for name, f in fns.items():
        f()
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < 0.002:
            f()
            n += 1
        reps[name] = max(1, n)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                f()
            samples[name].append((time.perf_counter() - t0) / reps[name] * 1e6)
    return {k: {"best_us": min(v), "median_us": statistics.median(v)} for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="rowops")
    args = ap.parse_args()
    host = looptune.host_isa()
    rows = []
    for op, shape, what in CASES:
        fns = callables(op, shape)
        for threads in args.threads:
            looptune.set_num_threads(threads)
            torch.set_num_threads(threads)
            r = time_row(fns, args.rounds)
            row = {
                "op": op,
                "shape": "x".join(map(str, shape)),
                "what": what,
                "threads": threads,
                "times": r,
                "ours_us": r[f"looptune_{host}"]["best_us"],
                "avx2_us": r["looptune_avx2"]["best_us"] if "looptune_avx2" in r else None,
                "torch_us": r["torch"]["best_us"],
            }
            row["speedup"] = row["torch_us"] / row["ours_us"]
            rows.append(row)
            print(
                f"  {op} {row['shape']} @{threads}: {row['ours_us']:.1f} us "
                f"(torch {row['torch_us']:.1f})",
                file=sys.stderr,
                flush=True,
            )
    looptune.set_num_threads(1)
    columns = [
        ("op", "op", ""),
        ("shape", "shape", ""),
        ("threads", "threads", "d"),
        ("ours_us", f"looptune {host} us", ".1f"),
        ("avx2_us", "looptune avx2 us", ".1f"),
        ("torch_us", "torch us", ".1f"),
        ("speedup", "torch / looptune", ".2f"),
    ]
    text = format_table(rows, columns, markdown=True, align="llrrrrr")
    env = environment(peak=False)
    header = (
        f"Row ops vs PyTorch on {env['cpu']} ({host}); best of {args.rounds} batches of ~2 ms, "
        f"microseconds per call. torch: gelu(t, out=o); softmax(t / 8, -1); layer_norm; "
        f"quantize_per_tensor_dynamic(t, quint8).\n\n"
    )
    print(header + text)
    doc = {"environment": env, "config": vars(args), "rows": rows}
    path = write_json(args.out, doc)
    (RESULTS / f"{args.out}.md").write_text(header + text + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
