"""TVM side of the TVM entrant: runs in a separate interpreter that has apache-tvm installed.

This file imports neither looptune nor anything outside TVM's virtualenv, so it can run as a
plain script under another Python (``LOOPTUNE_TVM_PYTHON``)::

    /work/tvm-venv/bin/python tvm_worker.py < job.json > result.json

The job (JSON on stdin) names the computation (``kind`` and ``spec``/``sizes``, plus
``stride``/``pad`` for conv2d), a directory holding ``a.npy``, ``b.npy`` (inputs in looptune's
user-facing shapes), the MetaSchedule trial budget and a work directory for its database. The
worker prints one JSON object: per mode ("default", "metaschedule") GFLOP/s, tuning seconds and
the output checked against ``expected.npy``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _einsum_te(spec: str, sizes: dict):
    from tvm import te

    ins, out = spec.replace(" ", "").split("->")
    sa, sb = ins.split(",")
    a = te.placeholder(tuple(sizes[c] for c in sa), name="A", dtype="float32")
    b = te.placeholder(tuple(sizes[c] for c in sb), name="B", dtype="float32")
    red = [c for c in dict.fromkeys(sa + sb) if c not in out]
    axes = {c: te.reduce_axis((0, sizes[c]), name=c) for c in red}

    def body(*idx):
        env = dict(zip(out, idx))
        env.update(axes)
        prod = a[tuple(env[c] for c in sa)] * b[tuple(env[c] for c in sb)]
        return te.sum(prod, axis=list(axes.values())) if axes else prod

    c = te.compute(tuple(sizes[c] for c in out), body, name="C")
    return [a, b, c]


def _conv2d_te(shape_x, shape_w, stride: int, pad: int):
    from tvm import te, tirx

    n, ch, h, w = shape_x
    k, _, r, s = shape_w
    oh, ow = (h + 2 * pad - r) // stride + 1, (w + 2 * pad - s) // stride + 1
    x = te.placeholder(shape_x, name="X", dtype="float32")
    wt = te.placeholder(shape_w, name="W", dtype="float32")
    if pad:
        xp = te.compute(
            (n, ch, h + 2 * pad, w + 2 * pad),
            lambda i, c, y, z: tirx.if_then_else(
                tirx.all(y >= pad, y < h + pad, z >= pad, z < w + pad),
                x[i, c, y - pad, z - pad],
                tirx.const(0.0, "float32"),
            ),
            name="Xpad",
        )
    else:
        xp = x
    rc, rr, rs = (te.reduce_axis((0, e), name=nm) for e, nm in ((ch, "rc"), (r, "rr"), (s, "rs")))
    out = te.compute(
        (n, k, oh, ow),
        lambda i, f, y, z: te.sum(
            xp[i, rc, y * stride + rr, z * stride + rs] * wt[f, rc, rr, rs], axis=[rc, rr, rs]
        ),
        name="Y",
    )
    return [x, wt, out]


def build_func(job: dict):
    """The computation as a TIR PrimFunc (from TE)."""
    from tvm import te

    if job["kind"] == "conv2d":
        args = _conv2d_te(tuple(job["shape_a"]), tuple(job["shape_b"]), job["stride"], job["pad"])
    else:
        args = _einsum_te(job["spec"], job["sizes"])
    return te.create_prim_func(args).with_attr("global_symbol", "main")


def _time(lib, arrays, dev, flops: float, min_time: float, rule: dict | None = None) -> float:
    """GFLOP/s of ``main(*arrays)`` called from Python (output preallocated in ``arrays``), by
    the rule of looptune's harness (looptune.measure.harness, passed in the job as ``rule``:
    warm-up calls, batches of about ``batch_seconds``, best batch of at least ``min_runs``
    batches and ``min_time`` seconds): TVM is timed as the other entrants are, not by its
    in-C++ time_evaluator."""
    rule = rule or {"warmup": 2, "batch_seconds": 1e-3, "min_runs": 5}
    mod = lib.jit() if hasattr(lib, "jit") else lib
    fn = mod["main"]
    for _ in range(int(rule["warmup"]) - 1):
        fn(*arrays)
    t0 = time.perf_counter()
    fn(*arrays)
    inner = max(1, int(rule["batch_seconds"] / max(time.perf_counter() - t0, 1e-7)))
    best, runs, start = float("inf"), 0, time.perf_counter()
    while runs < int(rule["min_runs"]) or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(*arrays)
        best = min(best, (time.perf_counter() - t0) / inner)
        runs += 1
    return flops / best / 1e9


def run(job: dict) -> dict:
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    data = job["data_dir"]
    a, b, want = (np.load(os.path.join(data, f)) for f in ("a.npy", "b.npy", "expected.npy"))
    mcpu = job.get("mcpu") or tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 1})
    dev = tvm.cpu(0)
    func = build_func(job)
    result = {"tvm_version": tvm.__version__, "mcpu": mcpu, "modes": {}}
    for mode in job["modes"]:
        t0 = time.perf_counter()
        entry: dict = {"trials": 0, "tuned": False}
        try:
            if mode == "default":
                lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
            else:
                workdir = job["work_dir"]
                db_file = os.path.join(workdir, "database_tuning_record.json")
                have = os.path.exists(db_file) and os.path.getsize(db_file) > 0
                if have and not job.get("retune"):
                    database = ms.database.JSONDatabase(work_dir=workdir)
                else:
                    database = ms.tune_tir(
                        func,
                        target,
                        work_dir=workdir,
                        max_trials_global=job["trials"],
                        num_trials_per_iter=min(64, job["trials"]),
                        cost_model="xgb",
                        num_tuning_cores=1,
                        seed=job.get("seed", 0),
                    )
                    entry["tuned"] = True
                sch = ms.tir_integration.compile_tir(database, func, target)
                if sch is None:
                    raise RuntimeError("MetaSchedule found no valid schedule")
                lib = tvm.compile(sch.mod, target=target)
                entry["trials"] = job["trials"]
                entry["schedule"] = str(sch.trace)[:20000]
            build_s = time.perf_counter() - t0
            arrays = [tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev)]
            arrays.append(tvm.runtime.tensor(np.zeros(want.shape, "float32"), dev))
            lib["main"](*arrays)
            got = arrays[2].numpy().astype("float64")
            err = float(np.max(np.abs(got - want))) if got.size else 0.0
            entry.update(
                ok=bool(err <= job["tolerance"] and np.all(np.isfinite(got))),
                max_abs_error=err,
                seconds=build_s,
                gflops=_time(lib, arrays, dev, job["flops"], job.get("min_time", 0.2),
                             job.get("timing_rule")),
            )
        except Exception as exc:  # reported to the parent as this mode's failure
            entry.update(error=f"{type(exc).__name__}: {exc}"[:2000])
            entry["seconds"] = time.perf_counter() - t0
        result["modes"][mode] = entry
    return result


def main() -> int:
    job = json.load(sys.stdin)
    out = run(job)
    sys.stdout.write("\n@@LOOPTUNE-TVM@@" + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
