"""Whole models: eager PyTorch, torch.compile (Inductor) and looptune.compile, end to end.

ResNet-18, MobileNetV2 and a BERT-base encoder layer (seq 128; ``--models`` adds
``torch_encoder``, the same layer as ``nn.TransformerEncoderLayer``), batch 1 and 8, random
weights (``looptune.model.zoo``), at each thread count of ``--threads`` (default 1; e.g.
``--threads 1 2``): torch (``torch.set_num_threads``), Inductor and looptune
(``looptune.compile(threads=)``, its kernels tuned and run at that count) all at the same count.
Per model, batch and thread count:

- ``eager``: the model under ``torch.no_grad()``;
- ``inductor``: ``torch.compile(model)`` (its compile time: the first call, less one eager call,
  with Inductor's on-disk caches off, so it is a cold compile as looptune's cold one is);
- ``looptune``: ``looptune.compile(model, x)`` with fresh records (cold: the whole compile and
  the tuning in it), then again with those records (warm: nothing is measured);
- ``no fusion``: bias / residual / activation applied by torch after each kernel (in place;
  layout propagation on);
- ``no layouts``: layout propagation off (``compile(layouts=False)``; fusion on): every padded
  conv copies its input into a zero-padded (for a depthwise conv: channel-blocked) buffer, as
  without ``looptune.model.layout``;
- ``plain layout``: conv2d kernels in the plain NCHW layout instead of the engine's blocked
  output layout; ``relayout_ms`` estimates what the relayout copies that remain in the
  ``looptune`` configuration cost: the input copies of padded convs that do not read their
  producer's buffer, plus the blocked-output copies of kernels that neither store NCHW
  (transposed store) nor write into a buffer view, each timed as a torch copy of the same
  size.

Latency: best of ``--runs`` calls (at least ``--min-time`` seconds) after two warm-up calls;
eager is timed first and last (the better of the two).
Speedups are over eager; the geomeans are over the models (``report.tables.geomean``).

    flock /tmp/looptune-bench.lock python benchmarks/models.py

writes ``benchmarks/results/models.json`` (rows + run metadata) and ``models.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import RESULTS, environment, strip_openblas_env, write_json

strip_openblas_env()

import os  # noqa: E402

# Inductor's compile time is reported cold: without its on-disk caches (a warm Inductor cache
# would be the counterpart of looptune's warm compile, which is reported separately)
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import looptune  # noqa: E402
import looptune.model  # noqa: E402
from looptune.model import zoo  # noqa: E402
from looptune.model.runtime import LoopOp  # noqa: E402
from looptune.report.tables import format_table, geomean  # noqa: E402

MODELS = {
    "resnet18": (zoo.resnet18, (3, 224, 224)),
    "mobilenet_v2": (zoo.mobilenet_v2, (3, 224, 224)),
    "bert": (zoo.bert_layer, (128, 768)),
    "torch_encoder": (zoo.torch_encoder_layer, (128, 768)),
}
GEOMEAN_MODELS = ("resnet18", "mobilenet_v2", "bert")


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"thread counts are integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"thread counts are >= 1, got {text!r}")
    return counts


def best_ms(fn, x, runs: int, min_time: float) -> float:
    with torch.no_grad():
        fn(x)
        fn(x)
        best, n, t_start = math.inf, 0, time.perf_counter()
        while n < runs or time.perf_counter() - t_start < min_time:
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
            n += 1
            if n >= 10 * runs:
                break
    return best * 1e3


def relayout_ms(compiled: looptune.model.CompiledModel, runs: int) -> float:
    """Estimated cost of the engine's remaining relayout copies in one call (module doc)."""
    total = 0.0
    for op in compiled.graph_module.modules():
        if not isinstance(op, LoopOp) or op.kind != "conv2d":
            continue
        comp = op.kernel.tree.computation
        views = getattr(op.kernel, "views", {"in0": None, "out": None})
        if comp.conv_pad > 0 and views["in0"] is None:
            x = torch.randn(op.a_shape)
            p = comp.conv_pad
            total += best_ms(lambda t, p=p: F.pad(t, (p, p, p, p)), x, runs, 0.0)
        if (comp.block > 0 and not op.kernel.facts.get("out_transposed")
                and views["out"] is None):
            y = torch.randn(op.out_shape)
            total += best_ms(lambda t: t.clone(), y, runs, 0.0)
    return total


def bench(name: str, batch: int, threads: int, args: argparse.Namespace) -> dict:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(batch, *shape)
    torch.set_num_threads(threads)
    if hasattr(looptune, "set_num_threads"):
        looptune.set_num_threads(threads)
    row: dict = {"model": name, "batch": batch, "threads": threads}
    row["eager_ms"] = best_ms(model, x, args.runs, args.min_time)
    with torch.no_grad():
        ref = model(x)
        t0 = time.perf_counter()
        eager_once = (model(x), time.perf_counter() - t0)[1]
        if not args.no_inductor:
            torch._dynamo.reset()
            ind = torch.compile(model)
            t0 = time.perf_counter()
            ind(x)
            row["inductor_compile_s"] = time.perf_counter() - t0 - eager_once
            row["inductor_ms"] = best_ms(ind, x, args.runs, args.min_time)
            del ind
            torch._dynamo.reset()
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "records.jsonl"
        kw = dict(records=rec, search=args.search, quiet=args.quiet, threads=threads)
        t0 = time.perf_counter()
        cold = looptune.compile(model, x, **kw)
        row["cold_compile_s"] = time.perf_counter() - t0
        row["cold_tuning_s"] = cold.plan.tune_stats.seconds
        row["cold_measured"] = cold.plan.tune_stats.measured
        row["layers"] = cold.plan.tune_stats.layers
        del cold
        t0 = time.perf_counter()
        warm = looptune.compile(model, x, **kw)
        row["warm_compile_s"] = time.perf_counter() - t0
        row["warm_tuning_s"] = warm.plan.tune_stats.seconds
        row["warm_measured"] = warm.plan.tune_stats.measured
        row["summary"] = warm.summary
        row["fused"] = warm.plan.fused
        row["pool"] = warm.plan.pool
        row["layouts"] = warm.plan.layouts
        with torch.no_grad():
            row["max_abs_error"] = float((warm(x) - ref).abs().max())
        row["looptune_ms"] = best_ms(warm, x, args.runs, args.min_time)
        row["relayout_ms"] = relayout_ms(warm, 5)
        del warm
        off = looptune.compile(model, x, fuse=False, **kw)
        row["nofusion_ms"] = best_ms(off, x, args.runs, args.min_time)
        del off
        nolay = looptune.compile(model, x, layouts=False, **kw)
        row["nolayouts_ms"] = best_ms(nolay, x, args.runs, args.min_time)
        del nolay
        plain = looptune.compile(model, x, layout="plain", **kw)
        row["plain_ms"] = best_ms(plain, x, args.runs, args.min_time)
        del plain
    # eager again at the end: the best of both, so the order of the runs favours nobody
    row["eager_ms"] = min(row["eager_ms"], best_ms(model, x, args.runs, args.min_time))
    for key in ("inductor", "looptune", "nofusion", "nolayouts", "plain"):
        if f"{key}_ms" in row:
            row[f"{key}_speedup"] = row["eager_ms"] / row[f"{key}_ms"]
    if "inductor_ms" in row:
        row["looptune_vs_inductor"] = row["inductor_ms"] / row["looptune_ms"]
    return row


COLUMNS = [
    ("model", "model", ""), ("batch", "batch", "d"), ("threads", "threads", "d"),
    ("eager_ms", "eager ms", ".2f"),
    ("inductor_ms", "inductor ms", ".2f"), ("looptune_ms", "looptune ms", ".2f"),
    ("nofusion_ms", "no fusion ms", ".2f"), ("nolayouts_ms", "no layouts ms", ".2f"),
    ("plain_ms", "plain layout ms", ".2f"),
    ("relayout_ms", "relayout ms (est.)", ".2f"), ("looptune_speedup", "x eager", ".2f"),
    ("looptune_vs_inductor", "x inductor", ".2f"),
    ("inductor_compile_s", "inductor compile s", ".1f"),
    ("cold_compile_s", "looptune cold s", ".1f"), ("cold_tuning_s", "cold tuning s", ".1f"),
    ("warm_compile_s", "warm s", ".2f"), ("warm_tuning_s", "warm tuning s", ".3f"),
    ("warm_measured", "warm measured", "d"),
]


def summary(rows: list[dict]) -> dict:
    """Geomeans per batch (and thread count: keys ``threads{t}_batch{b}_...``; at one thread
    also under the historical ``batch{b}_...`` keys)."""
    out = {}
    for threads in sorted({r["threads"] for r in rows}):
        for batch in sorted({r["batch"] for r in rows}):
            sel = [r for r in rows if r["batch"] == batch and r["threads"] == threads
                   and r["model"] in GEOMEAN_MODELS]
            prefixes = [f"threads{threads}_batch{batch}"] + (
                [f"batch{batch}"] if threads == 1 else [])
            for pre in prefixes:
                for key in ("looptune_speedup", "looptune_vs_inductor", "inductor_speedup",
                            "nofusion_speedup", "nolayouts_speedup", "plain_speedup"):
                    g = geomean(r.get(key) for r in sel)
                    out[f"{pre}_{key}_geomean"] = float(g)
                    out[f"{pre}_{key}_n"] = g.n
                out[f"{pre}_slower_than_eager"] = [
                    r["model"] for r in sel if r.get("looptune_speedup", 0) < 1.0]
    return out


def plot(rows: list[dict], path: Path) -> None:
    from looptune.report.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    keys = [("inductor_speedup", "Inductor"), ("looptune_speedup", "looptune"),
            ("nofusion_speedup", "looptune, no fusion"),
            ("nolayouts_speedup", "looptune, no layouts"), ("plain_speedup", "looptune, plain")]
    labels = [f"{r['model']}\nbatch {r['batch']}, {r.get('threads', 1)}t" for r in rows]
    width = 0.8 / len(keys)
    for i, (k, lab) in enumerate(keys):
        ax.bar([j + i * width for j in range(len(rows))],
               [r.get(k) or 0 for r in rows], width, label=lab)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], labels, fontsize=8)
    ax.set_ylabel("speedup over eager (same thread count)")
    ax.legend(fontsize=8)
    _save(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(GEOMEAN_MODELS), choices=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", nargs="+", type=_thread_counts, default=[[1]],
                   help="thread counts, e.g. '--threads 1 2' or '--threads 1,2' (default 1)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--search", default="agent")
    p.add_argument("--no-inductor", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "models"))
    args = p.parse_args()
    thread_counts = sorted({t for ts in args.threads for t in ts})
    rows = []
    for threads in thread_counts:
        for name in args.models:
            for batch in args.batches:
                row = bench(name, batch, threads, args)
                rows.append(row)
                print(format_table([row], COLUMNS), flush=True)
    print()
    print(format_table(rows, COLUMNS))
    summ = summary(rows)
    for k, v in summ.items():
        print(f"{k}: {v}")
    out = Path(args.out)
    meta = environment()
    meta["threads"] = thread_counts
    meta["engine_features"] = looptune.model.engine_features()
    write_json(out.name, {"metadata": meta, "rows": rows, "summary": summ}, out.parent)
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
