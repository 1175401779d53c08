"""Sample efficiency of the cost-model tuners (issue 11): random search, the TVM-style P-only
XGBoost tuner, P+V and ML² (P+V+A) on held-out computations, several seeds, one process.

    flock /tmp/looptune-bench.lock python benchmarks/sample_efficiency.py [--budget 96 --seeds 5]

Per tuner: measurements to reach 95% of the best GFLOP/s any tuner found on that computation
(runs that never reach it count as budget + 1 and are listed as censored), invalid measurements
attempted, points caught at compile time without a measurement (ML² only), wall time. Model
accuracy on held-out configurations: a random sample of each space is evaluated, the models are
trained on one half and scored on the other (Spearman for P and A on the valid points; precision
and recall of V for the invalid class at threshold 0.5). Also: the invalid fraction of random
points per computation and its dominant class, answers of a sample of valid points checked
against numpy, and the cost of compile-then-predict against one measurement.
Writes benchmarks/results/sample_efficiency.json and .png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import strip_openblas_env  # noqa: E402

strip_openblas_env()

import argparse  # noqa: E402
import collections  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _bench import RESULTS, cpp_timing, environment, write_json  # noqa: E402

import looptune  # noqa: E402
from looptune.costmodel import ConfigSpace, Evaluator, Outcome, spearman  # noqa: E402
from looptune.costmodel.models import Classifier, Regressor  # noqa: E402
from looptune.measure import Measurer  # noqa: E402
from looptune.measure.reference import check_tree  # noqa: E402
from looptune.report.tables import format_table  # noqa: E402
from looptune.search.model_guided import Tuner  # noqa: E402

TUNERS = ("random", "xgb", "pv", "ml2")
LABELS = {"random": "random", "xgb": "P only (TVM-style)", "pv": "P+V", "ml2": "P+V+A (ML2)"}


def computations() -> list:
    return [
        looptune.matmul(192, 320, 256),
        looptune.matmul(300, 200, 180),  # off-grid: no size a power of two
        looptune.matmul(96, 512, 384),
        looptune.conv2d(1, 32, 28, 28, 64, 3, 3, 1, 1),
        looptune.conv2d(1, 48, 14, 14, 40, 3, 3, 1, 1),
    ]


def held_out(space: ConfigSpace, ev: Evaluator, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    seen, rows = set(), []
    valid = 0
    while (len(rows) < n or valid < n // 3) and len(rows) < 4 * n:
        p = space.sample(rng)
        if p in seen:
            continue
        seen.add(p)
        g, outcome, _ = ev.measure(p)
        h = ev.hidden(p)
        rows.append({"point": p, "gflops": g, "outcome": outcome, "vis": ev.visible(p), "hid": h})
        valid += outcome == Outcome.OK
    return rows


def accuracy(rows: list[dict]) -> dict:
    train, test = rows[::2], rows[1::2]

    def xy(rs, with_hidden):
        ok = [r for r in rs if r["outcome"] == Outcome.OK and r["hid"] is not None]
        if not ok:
            return np.zeros((0, 1)), np.zeros(0)
        x = [np.concatenate([r["vis"], r["hid"]]) if with_hidden else r["vis"] for r in ok]
        return np.stack(x), np.array([r["gflops"] for r in ok])

    out = {}
    for name, hid in (("P", False), ("A", True)):
        xtr, ytr = xy(train, hid)
        xte, yte = xy(test, hid)
        if len(ytr) == 0 or len(yte) < 2:
            out[f"spearman_{name}"] = float("nan")
            continue
        model = Regressor().fit(xtr, ytr)
        out[f"spearman_{name}"] = spearman(model.predict(xte), yte)
    v = Classifier().fit(
        np.stack([r["vis"] for r in train]), np.array([r["outcome"] == Outcome.OK for r in train])
    )
    pv = v.predict_valid(np.stack([r["vis"] for r in test]))
    invalid = np.array([r["outcome"] != Outcome.OK for r in test])
    flagged = pv < 0.5
    tp = int(np.sum(flagged & invalid))
    out["V_precision_invalid"] = tp / max(int(flagged.sum()), 1)
    out["V_recall_invalid"] = tp / max(int(invalid.sum()), 1)
    out["train_valid"] = int(sum(r["outcome"] == Outcome.OK for r in train))
    out["test_valid"] = int(sum(r["outcome"] == Outcome.OK for r in test))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=96)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--held-out", type=int, default=160)
    ap.add_argument("--min-time", type=float, default=0.001)
    args = ap.parse_args()
    isa = looptune.host_isa()
    measurer = Measurer(isa=isa, min_time=args.min_time, verify=True, timeout_factor=10.0)
    runs, per_comp = [], {}
    t_start = time.perf_counter()
    for comp in computations():
        space = ConfigSpace(comp, isa)
        comp_runs = []
        for seed in range(args.seeds):
            for kind in TUNERS:
                ev = Evaluator(space, measurer)
                res = Tuner(ev, kind, seed=seed).run(args.budget)
                d = res.to_dict()
                d.update(computation=comp.name, seed=seed)
                d["outcomes"] = dict(collections.Counter(t.outcome.name for t in res.trials))
                comp_runs.append(d)
                print(
                    f"{comp.name} seed {seed} {kind:6s} best {res.best_gflops:6.1f} "
                    f"invalid {res.invalid_measurements:3d} caught {res.caught:3d} "
                    f"{res.seconds:5.1f} s",
                    flush=True,
                )
        best = max(r["best_gflops"] for r in comp_runs)
        for r in comp_runs:
            hit = next((i + 1 for i, g in enumerate(r["curve"]) if g >= 0.95 * best), None)
            r["to95"] = hit
        # held-out configurations, timed with the cut-off at 10x the best run found
        ev = Evaluator(space, measurer)
        ev.best_gflops = best  # the measurer's cut-off knows the best run from the tuning
        t0 = time.perf_counter()
        rows = held_out(space, ev, args.held_out, seed=1000)
        held_seconds = time.perf_counter() - t0
        counts = collections.Counter(r["outcome"].name for r in rows)
        invalid = {k: v for k, v in counts.items() if k != Outcome.OK.name}
        valid_trees = [space.instantiate(r["point"]) for r in rows if r["outcome"] == Outcome.OK]
        wrong = sum(not check_tree(t, isa=isa).ok for t in valid_trees[:20])
        # compile-then-predict vs one measurement
        pts = [r["point"] for r in rows if r["outcome"] == Outcome.OK][:20]
        fresh = Evaluator(space, measurer)
        t0 = time.perf_counter()
        feats = [np.concatenate([fresh.visible(p), fresh.hidden(p)]) for p in pts]
        t1 = time.perf_counter()
        model = Regressor(min_rows=1).fit(np.stack(feats), np.arange(len(feats)) + 1.0)
        t2 = time.perf_counter()
        model.predict(np.stack(feats))
        t3 = time.perf_counter()
        features_cost = (t1 - t0) / max(len(pts), 1)  # instantiate + compile + features
        predict_cost = (t3 - t2) / max(len(pts), 1)  # one batched prediction, per point
        fit_seconds = t2 - t1
        m2 = Measurer(isa=isa, min_time=args.min_time, cache={})
        t0 = time.perf_counter()
        for p in pts:
            m2.measure(space.instantiate(p))
        measure_cost = (time.perf_counter() - t0) / max(len(pts), 1)
        per_comp[comp.name] = {
            "best_gflops": best,
            "space_size": len(space),
            "held_out": len(rows),
            "held_out_seconds": held_seconds,
            "outcomes": dict(counts),
            "invalid_fraction": sum(invalid.values()) / len(rows),
            "dominant_invalid": max(invalid, key=invalid.get) if invalid else None,
            "checked_against_numpy": min(20, len(valid_trees)),
            "wrong_answers": wrong,
            "compile_features_seconds": features_cost,
            "predict_seconds": predict_cost,
            "compile_predict_seconds": features_cost + predict_cost,
            "fit_seconds_20_rows": fit_seconds,
            "measure_seconds": measure_cost,
            **accuracy(rows),
        }
        runs += comp_runs
        print(comp.name, per_comp[comp.name], flush=True)
    summary = summarize(runs, args.budget)
    data = {
        "environment": environment(timing=cpp_timing(
            "searches are compared by the measurer they tune with")),
        "args": vars(args),
        "total_seconds": time.perf_counter() - t_start,
        "summary": summary,
        "computations": per_comp,
        "runs": runs,
    }
    write_json("sample_efficiency", data)
    plot(runs, per_comp, RESULTS / "sample_efficiency.png")
    rows = [{"tuner": LABELS[k], **summary["tuners"][k]} for k in TUNERS]
    cols = [
        ("tuner", "tuner", "s"),
        ("to95_mean", "meas. to 95%", ".1f"),
        ("censored", "never", "d"),
        ("invalid_total", "invalid meas.", "d"),
        ("caught_total", "caught at compile", "d"),
        ("seconds_mean", "wall s/run", ".1f"),
    ]
    print(format_table(rows, cols))
    print({k: v for k, v in summary.items() if k != "tuners"})


def summarize(runs: list[dict], budget: int) -> dict:
    tuners = {}
    for k in TUNERS:
        rs = [r for r in runs if r["tuner"] == k]
        to95 = [r["to95"] if r["to95"] is not None else budget + 1 for r in rs]
        tuners[k] = {
            "to95_mean": statistics.mean(to95),
            "to95_median": statistics.median(to95),
            "censored": sum(r["to95"] is None for r in rs),
            "invalid_total": sum(r["invalid_measurements"] for r in rs),
            "caught_total": sum(r["caught_at_compile"] for r in rs),
            "seconds_mean": statistics.mean(r["seconds"] for r in rs),
            "runs": len(rs),
        }
    t = tuners
    return {
        "tuners": t,
        "ml2_to95_over_random": t["ml2"]["to95_mean"] / t["random"]["to95_mean"],
        "ml2_to95_over_xgb": t["ml2"]["to95_mean"] / t["xgb"]["to95_mean"],
        "invalid_reduction_vs_xgb": 1
        - t["ml2"]["invalid_total"] / max(t["xgb"]["invalid_total"], 1),
        "note": "to95 counts a run that never reaches 95% of the best as budget + 1",
    }


def plot(runs: list[dict], per_comp: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_comp)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for k in TUNERS:
            curves = [r["curve"] for r in runs if r["computation"] == name and r["tuner"] == k]
            n = min(len(c) for c in curves)
            mean = np.mean([c[:n] for c in curves], axis=0)
            ax.plot(np.arange(1, n + 1), mean, label=LABELS[k])
        ax.axhline(0.95 * per_comp[name]["best_gflops"], color="gray", ls=":", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("measurements")
    axes[0][0].set_ylabel("best-so-far GFLOP/s (mean over seeds)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
