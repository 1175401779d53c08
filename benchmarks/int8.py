"""int8 kernels and quantized models (issue 25): looptune int8 against looptune float32,
``torch._int_mm`` and PyTorch's quantized Linear / conv, at 1 and 2 threads.

    flock /tmp/looptune-bench.lock python benchmarks/int8.py [--quick] [--threads 1,2]

Suites (``--suites``):

* ``bert``: BERT-base's GEMMs at 128 tokens (QKV / output 128x768x768, FFN 128x768x3072 and
  128x3072x768) and at 1024 tokens (batch 8);
* ``matmul``: the large square matmuls 1024^3 and 2048^3;
* ``resnet18``: every distinct ResNet-18 conv at batch 1;
* ``model``: a BERT-base encoder layer (``looptune.model.zoo.bert_layer``, sequence 128,
  batch 1) end to end.

Per GEMM at T threads (``looptune.set_num_threads`` / ``torch.set_num_threads``, numpy's BLAS
by threadpoolctl: ``looptune.measure.harness.thread_limit``), each timed the one way
(``looptune.measure.harness.time_call``: warm-up, ~1 ms batches, best batch, best of the
harness's ``ALLOCATIONS`` fresh buffer sets placed at its ``ALIGN_OFFSETS``):

* ``lt_int8``: the shipped agent's int8 schedule (tuned at T threads), ``kernel(a_u8,
  out=c_i32)`` after ``set_constant(b_s8)`` (weights packed once); checked exactly against a
  numpy int64 product first;
* ``lt_f32``: the agent's float32 schedule of the same matmul, ``kernel(a, out=c)`` after
  ``set_constant(b)``;
* ``int_mm``: ``torch._int_mm(a_s8, b_s8)`` (s8 x s8 -> int32);
* ``lt_qlinear`` / ``torch_qlinear``: a whole dynamically quantized ``nn.Linear`` (float32 in
  and out, bias, the activation quantized every call): looptune's (``looptune.model.qruntime``:
  ``quantize_u8`` + the int8 kernel with the dequantizing ``scale+bias`` store) against
  ``torch.ao.quantization.quantize_dynamic``'s.

Per conv: ``lt_int8`` (u8 NCHW input, s8 weights, the dequantizing store: float32 out),
``lt_f32`` (the agent's float32 conv), ``torch_qconv`` (``torch.ao.nn.quantized.Conv2d`` on a
quint8 input: quint8 out) and ``torch_f32`` (``F.conv2d``). Figures are GOP/s (2 x MACs per
second; for float32, GFLOP/s).

The model row: eager float32, looptune float32 (``looptune.compile``), PyTorch's dynamically
quantized layer and ``looptune.compile(..., quantize="dynamic")`` (also with ``rowops=False``:
LayerNorm, softmax and GELU as torch ops instead of the engine's row functions): best of
``--runs`` calls,
and the accuracy report (``looptune.model.qerror.quantization_report``: max and mean relative
error of both quantized layers against float32 on the same input).

Targets (on a VNNI host): big GEMMs (>= 1 GOP) >= 3.5x looptune f32 and >= 1.0x
``torch._int_mm``; the quantized BERT layer >= 1.1x PyTorch's, with no larger error.

Writes benchmarks/results/int8.json, int8.md (the tables) and int8.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import RESNET18, RESULTS, environment, strip_openblas_env, write_json

strip_openblas_env()

import argparse
import math
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import looptune
from looptune.measure import Measurer, harness
from looptune.model import zoo
from looptune.model.lower import Layer
from looptune.model.qerror import quantization_report, torch_dynamic
from looptune.model.qruntime import QuantOp
from looptune.report.tables import geomean as _geomean
from looptune.search.agent import agent_search

GEMMS = [
    ("bert", "qkv/out 128x768x768", (128, 768, 768)),
    ("bert", "ffn1 128x768x3072", (128, 768, 3072)),
    ("bert", "ffn2 128x3072x768", (128, 3072, 768)),
    ("bert", "qkv/out 1024x768x768", (1024, 768, 768)),
    ("bert", "ffn1 1024x768x3072", (1024, 768, 3072)),
    ("bert", "ffn2 1024x3072x768", (1024, 3072, 768)),
    ("matmul", "mm1024", (1024, 1024, 1024)),
    ("matmul", "mm2048", (2048, 2048, 2048)),
]
QUICK = {"qkv/out 128x768x768", "ffn1 1024x768x3072", "mm1024", "3x3@56", "3x3@14"}
BIG_OPS = 1e9
SUITES = ("bert", "matmul", "resnet18", "model")


def geomean(values: list[float]) -> float:
    return float(_geomean(values))


def ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b and math.isfinite(a) and math.isfinite(b) else math.nan


def best_seconds(make, threads: int, min_time: float) -> float:
    """Best seconds per call of ``make(offset, seed)()`` over the harness's allocations."""
    best = math.inf
    with harness.thread_limit(threads), torch.no_grad():
        for i in range(harness.ALLOCATIONS):
            call = make(harness.ALIGN_OFFSETS[i % len(harness.ALIGN_OFFSETS)], i)
            best = min(best, harness.time_call(call, min_time, harness.MIN_RUNS)[0])
    return best


def tuned(comp: looptune.Computation, threads: int) -> tuple[looptune.LoopTree, float]:
    measurer = Measurer(min_time=0.005, min_runs=1, threads=threads, cache={})
    t0 = time.perf_counter()
    result = agent_search(comp.default_schedule(), measurer)
    return result.best_tree, time.perf_counter() - t0


def _u8(rng, shape, off):
    return harness.at_offset(rng.integers(0, 256, shape, dtype=np.uint8), off)


def _s8(rng, shape, off):
    return harness.at_offset(rng.integers(-128, 128, shape, dtype=np.int8), off)


def _f32(rng, shape, off):
    return harness.at_offset(rng.uniform(-1, 1, shape).astype(np.float32), off)


def gemm_row(shape: tuple[int, int, int], threads: int, min_time: float) -> dict:
    m, k, n = shape
    ops = 2.0 * m * n * k
    i8 = looptune.matmul(m, k, n, dtype="int8")
    f32 = looptune.matmul(m, k, n)
    t_i8, tune_i8 = tuned(i8, threads)
    t_f32, tune_f32 = tuned(f32, threads)
    k_i8, k_f32 = t_i8.compile(), t_f32.compile()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (m, k), dtype=np.uint8), rng.integers(-128, 128, (k, n),
                                                                       dtype=np.int8)
    k_i8.set_constant(b)
    exact = bool(np.array_equal(k_i8(a), a.astype(np.int64) @ b.astype(np.int64)))

    def lt_int8(off, seed):
        r = np.random.default_rng(seed)
        a, b, c = _u8(r, (m, k), off), _s8(r, (k, n), off), harness.at_offset(
            np.zeros((m, n), np.int32), off)
        k_i8.set_constant(b)
        return lambda: k_i8(a, out=c)

    def lt_f32(off, seed):
        r = np.random.default_rng(seed)
        a, b, c = _f32(r, (m, k), off), _f32(r, (k, n), off), harness.at_offset(
            np.zeros((m, n), np.float32), off)
        k_f32.set_constant(b)
        return lambda: k_f32(a, out=c)

    def int_mm(off, seed):
        r = np.random.default_rng(seed)
        a, b = torch.from_numpy(_s8(r, (m, k), off)), torch.from_numpy(_s8(r, (k, n), off))
        return lambda: torch._int_mm(a, b)

    lin = nn.Linear(k, n).eval()
    tq = torch_dynamic(nn.Sequential(lin)).eval()
    q_comp = looptune.matmul(m, k, n, dtype="int8", epilogue="scale+bias")
    q_tree, _ = tuned(q_comp, threads)
    layer = Layer("linear", None, weight=lin.weight.detach(), bias=lin.bias.detach(),
                  dims={"m": m, "k": k, "n": n}, in_shape=(m, k), out_shape=(m, n))
    qop = QuantOp(layer, q_tree.compile(), None)

    def lt_qlinear(off, seed):
        x = torch.from_numpy(_f32(np.random.default_rng(seed), (m, k), off))
        return lambda: qop(x)

    def torch_qlinear(off, seed):
        x = torch.from_numpy(_f32(np.random.default_rng(seed), (m, k), off))
        return lambda: tq(x)

    row = {"ops": ops, "exact": exact, "tuning_s": {"int8": tune_i8, "f32": tune_f32},
           "schedule_int8": t_i8.dump(), "schedule_f32": t_f32.dump()}
    for name, make in (("lt_int8", lt_int8), ("lt_f32", lt_f32), ("int_mm", int_mm),
                       ("lt_qlinear", lt_qlinear), ("torch_qlinear", torch_qlinear)):
        row[name] = ops / best_seconds(make, threads, min_time) / 1e9
    return row


def conv_row(spec: tuple, threads: int, min_time: float) -> dict:
    c, hw, k, r, st, pd = spec
    i8 = looptune.conv2d(1, c, hw, hw, k, r, r, stride=st, pad=pd, dtype="int8",
                         epilogue="scale+bias")
    f32 = looptune.conv2d(1, c, hw, hw, k, r, r, stride=st, pad=pd)
    ops = float(f32.flops)
    t_i8, tune_i8 = tuned(i8, threads)
    t_f32, tune_f32 = tuned(f32, threads)
    k_i8, k_f32 = t_i8.compile(), t_f32.compile()
    out_shape = tuple(f32.output.shape)
    scale, bias = np.full(k, 1e-3, np.float32), np.zeros(k, np.float32)

    def lt_int8(off, seed):
        rr = np.random.default_rng(seed)
        x, w = _u8(rr, (1, c, hw, hw), off), _s8(rr, (k, c, r, r), off)
        o = harness.at_offset(np.zeros(out_shape, np.float32), off)
        k_i8.set_constant(w)
        return lambda: k_i8(x, out=o, scale=scale, bias=bias)

    def lt_f32(off, seed):
        rr = np.random.default_rng(seed)
        x, w = _f32(rr, (1, c, hw, hw), off), _f32(rr, (k, c, r, r), off)
        o = harness.at_offset(np.zeros(out_shape, np.float32), off)
        k_f32.set_constant(w)
        return lambda: k_f32(x, out=o)

    def torch_f32(off, seed):
        rr = np.random.default_rng(seed)
        x, w = (torch.from_numpy(_f32(rr, s, off)) for s in ((1, c, hw, hw), (k, c, r, r)))
        return lambda: F.conv2d(x, w, stride=st, padding=pd)

    def torch_qconv(off, seed):
        from torch.ao.nn.quantized import Conv2d as QConv2d

        rr = np.random.default_rng(seed)
        qc = QConv2d(c, k, r, stride=st, padding=pd)
        w = torch.from_numpy(_f32(rr, (k, c, r, r), off))
        qc.set_weight_bias(torch.quantize_per_channel(
            w, torch.full((k,), 1 / 127), torch.zeros(k, dtype=torch.long), 0, torch.qint8), None)
        qc.scale, qc.zero_point = 0.05, 0
        x = torch.quantize_per_tensor(torch.from_numpy(_f32(rr, (1, c, hw, hw), off)), 0.01,
                                      128, torch.quint8)
        return lambda: qc(x)

    row = {"ops": ops, "tuning_s": {"int8": tune_i8, "f32": tune_f32},
           "schedule_int8": t_i8.dump(), "schedule_f32": t_f32.dump()}
    for name, make in (("lt_int8", lt_int8), ("lt_f32", lt_f32), ("torch_qconv", torch_qconv),
                       ("torch_f32", torch_f32)):
        try:
            row[name] = ops / best_seconds(make, threads, min_time) / 1e9
        except Exception as exc:  # noqa: BLE001 - a baseline this torch build cannot run
            row[name], row[f"{name}_error"] = math.nan, f"{type(exc).__name__}: {exc}"
    return row


def best_ms(fn, x, runs: int, min_time: float) -> float:
    with torch.no_grad():
        fn(x)
        fn(x)
        best, n, start = math.inf, 0, time.perf_counter()
        while n < runs or time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
            n += 1
    return best * 1e3


def model_row(threads: int, runs: int, min_time: float) -> dict:
    import tempfile

    torch.manual_seed(0)
    model = zoo.bert_layer().eval()
    x = torch.randn(1, 128, 768)
    tq = torch_dynamic(model).eval()
    row: dict = {}
    with harness.thread_limit(threads), tempfile.TemporaryDirectory() as tmp:
        kw = {"records": Path(tmp) / "records.jsonl", "quiet": True, "threads": threads}
        t0 = time.perf_counter()
        q = looptune.compile(model, x, quantize="dynamic", **kw)
        row["compile_s"] = time.perf_counter() - t0
        q_torch_rows = looptune.compile(model, x, quantize="dynamic", rowops=False, **kw)
        f = looptune.compile(model, x, **kw)
        row["summary"] = q.summary
        rep = quantization_report(model, q, x, torch_model=tq)
        row["error"] = rep.as_dict()
        for name, fn in (("eager_f32", model), ("lt_f32", f), ("torch_dynamic", tq),
                         ("lt_dynamic", q), ("lt_dynamic_torch_rows", q_torch_rows)):
            row[f"{name}_ms"] = best_ms(fn, x, runs, min_time)
        # eager again (its first timing came first, while the process was coldest), at the
        # same thread count: outside thread_limit torch would run on every core
        row["eager_f32_ms"] = min(row["eager_f32_ms"], best_ms(model, x, runs, min_time))
    row["vs_torch_dynamic"] = row["torch_dynamic_ms"] / row["lt_dynamic_ms"]
    return row


def gemm_table(rows: list[dict], threads: list[int]) -> str:
    head = ["suite", "layer", "T", "lt int8", "lt f32", "int_mm", "x f32", "x int_mm",
            "lt qlinear", "torch qlinear", "x torch", "exact"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for t in threads:
            a = r["at"][str(t)]
            lines.append("| " + " | ".join([
                r["suite"], r["name"], str(t), f"{a['lt_int8']:.0f}", f"{a['lt_f32']:.0f}",
                f"{a['int_mm']:.0f}", f"{ratio(a['lt_int8'], a['lt_f32']):.2f}",
                f"{ratio(a['lt_int8'], a['int_mm']):.2f}", f"{a['lt_qlinear']:.0f}",
                f"{a['torch_qlinear']:.0f}", f"{ratio(a['lt_qlinear'], a['torch_qlinear']):.2f}",
                str(a["exact"])]) + " |")
    return "\n".join(lines)


def conv_table(rows: list[dict], threads: list[int]) -> str:
    head = ["layer", "T", "lt int8", "lt f32", "torch qconv", "torch f32", "x lt f32",
            "x torch qconv"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        for t in threads:
            a = r["at"][str(t)]
            lines.append("| " + " | ".join([
                r["name"], str(t), f"{a['lt_int8']:.0f}", f"{a['lt_f32']:.0f}",
                f"{a['torch_qconv']:.0f}", f"{a['torch_f32']:.0f}",
                f"{ratio(a['lt_int8'], a['lt_f32']):.2f}",
                f"{ratio(a['lt_int8'], a['torch_qconv']):.2f}"]) + " |")
    return "\n".join(lines)


def summarize(gemms: list[dict], convs: list[dict], model: dict, threads: list[int]) -> dict:
    out: dict = {}
    for t in map(str, threads):
        big = [r["at"][t] for r in gemms if r["at"][t]["ops"] >= BIG_OPS]
        out[t] = {
            "big_gemms": len(big),
            "big_vs_f32_min": min((ratio(a["lt_int8"], a["lt_f32"]) for a in big),
                                  default=math.nan),
            "big_vs_f32_geomean": geomean([ratio(a["lt_int8"], a["lt_f32"]) for a in big]),
            "big_vs_int_mm_min": min((ratio(a["lt_int8"], a["int_mm"]) for a in big),
                                     default=math.nan),
            "big_vs_int_mm_geomean": geomean([ratio(a["lt_int8"], a["int_mm"]) for a in big]),
            "qlinear_vs_torch_geomean": geomean(
                [ratio(r["at"][t]["lt_qlinear"], r["at"][t]["torch_qlinear"]) for r in gemms]),
            "conv_vs_f32_geomean": geomean(
                [ratio(r["at"][t]["lt_int8"], r["at"][t]["lt_f32"]) for r in convs]),
            "conv_vs_torch_qconv_geomean": geomean(
                [ratio(r["at"][t]["lt_int8"], r["at"][t]["torch_qconv"]) for r in convs]),
        }
        if t in model:
            out[t]["bert_layer_vs_torch_dynamic"] = model[t]["vs_torch_dynamic"]
            out[t]["bert_layer_error_within_torch"] = model[t]["error"]["within_torch"]
    return out


def plot(gemms: list[dict], convs: list[dict], threads: list[int], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = gemms + convs
    t = str(threads[0])
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(rows)), 4))
    keys = [("lt_f32", "looptune f32"), ("int_mm", "torch._int_mm"),
            ("torch_qconv", "torch quantized conv")]
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        ax.bar([j + i * width for j in range(len(rows))],
               [ratio(r["at"][t]["lt_int8"], r["at"][t].get(key)) for r in rows], width,
               label=f"looptune int8 / {label}")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [r["name"] for r in rows],
                  rotation=75, fontsize=7)
    ax.set_ylabel(f"speedup ({t} thread{'s' if t != '1' else ''})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--suites", default=",".join(SUITES), help="subset of " + ",".join(SUITES))
    p.add_argument("--min-time", type=float, default=0.1, help="seconds of timed batches")
    p.add_argument("--runs", type=int, default=20, help="model calls timed (at least)")
    p.add_argument("--quick", action="store_true", help="a few layers, short timings")
    p.add_argument("--out", default="int8", help="result name under benchmarks/results")
    args = p.parse_args()
    threads = [int(x) for x in args.threads.split(",") if x.strip()]
    suites = [s for s in args.suites.split(",") if s]
    bad = set(suites) - set(SUITES)
    if bad or not threads or min(threads) < 1:
        raise SystemExit(f"bad --suites {sorted(bad)} or --threads {args.threads!r}")
    if args.quick:
        args.min_time, args.runs = min(args.min_time, 0.03), min(args.runs, 5)
    gemms, convs, model = [], [], {}
    for suite, name, shape in GEMMS:
        if suite in suites and (not args.quick or name in QUICK):
            row = {"suite": suite, "name": name, "shape": shape, "at": {}}
            for t in threads:
                row["at"][str(t)] = gemm_row(shape, t, args.min_time)
                a = row["at"][str(t)]
                print(f"  {name} T={t}: int8 {a['lt_int8']:.0f} GOP/s, f32 {a['lt_f32']:.0f}, "
                      f"int_mm {a['int_mm']:.0f}", file=sys.stderr, flush=True)
            gemms.append(row)
    if "resnet18" in suites:
        for name, *spec in RESNET18:
            if args.quick and name not in QUICK:
                continue
            row = {"suite": "resnet18", "name": name, "spec": spec, "at": {}}
            for t in threads:
                row["at"][str(t)] = conv_row(tuple(spec), t, args.min_time)
                a = row["at"][str(t)]
                print(f"  {name} T={t}: int8 {a['lt_int8']:.0f} GOP/s, f32 {a['lt_f32']:.0f}, "
                      f"torch qconv {a['torch_qconv']:.0f}", file=sys.stderr, flush=True)
            convs.append(row)
    if "model" in suites:
        for t in threads:
            model[str(t)] = model_row(t, args.runs, args.min_time)
            print(f"  bert layer T={t}: {model[str(t)]}", file=sys.stderr, flush=True)
    summary = summarize(gemms, convs, model, threads)
    text = [(f"GOP/s (int8: 2 x MACs per second; float32: GFLOP/s), 1-minute load average "
             f"{os.getloadavg()[0]:.2f} at the end"), ""]
    if gemms:
        text += [gemm_table(gemms, threads), ""]
    if convs:
        text += [conv_table(convs, threads), ""]
    for t, m in model.items():
        text.append(f"BERT-base layer, {t} thread(s): eager f32 {m['eager_f32_ms']:.2f} ms, "
                    f"looptune f32 {m['lt_f32_ms']:.2f} ms, torch dynamic int8 "
                    f"{m['torch_dynamic_ms']:.2f} ms, looptune dynamic int8 "
                    f"{m['lt_dynamic_ms']:.2f} ms ({m['vs_torch_dynamic']:.2f}x torch; "
                    f"{m['lt_dynamic_torch_rows_ms']:.2f} ms with LayerNorm / softmax / GELU "
                    f"as torch ops); "
                    f"error: looptune max {m['error']['looptune']['max']:.4f} mean "
                    f"{m['error']['looptune']['mean']:.4f}, torch max "
                    f"{m['error']['torch']['max']:.4f} mean {m['error']['torch']['mean']:.4f}")
    text += ["", "summary: " + str(summary)]
    print("\n".join(text))
    doc = {"environment": environment(), "config": vars(args), "summary": summary,
           "gemms": gemms, "convs": convs, "model": model}
    path = write_json(args.out, doc)
    (RESULTS / f"{args.out}.md").write_text("\n".join(text) + "\n")
    png = plot(gemms, convs, threads, RESULTS / f"{args.out}.png")
    print(f"wrote {path}" + (f", {png}" if png else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
