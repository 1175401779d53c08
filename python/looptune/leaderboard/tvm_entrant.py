"""TVM as a leaderboard entrant: its default schedule and MetaSchedule (an optional extra).

TVM runs in a subprocess under its own interpreter (``--tvm-python`` or ``LOOPTUNE_TVM_PYTHON``,
e.g. a virtualenv with ``apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 xgboost
cloudpickle tornado``), so it never shares a process or a virtualenv with looptune and a hang
or crash becomes a "timeout"/"failed" row. The worker is ``tvm_worker.py``.

MetaSchedule (``tune_tir``, XGBoost cost model, ``trials`` trials, one thread, llvm target for
the host's CPU) is slow to tune, so its results are kept: a records file (JSON lines) holds one
record per (computation, CPU signature, ISA, trials) with the tuning time, and a work directory per
record holds MetaSchedule's database. A rerun rebuilds the best schedule from the database and
re-times it without tuning again (the row keeps the original tuning time, ``cached: true``).
TVM's functions are timed as the other entrants are: called from Python by the harness's rule
(``looptune.measure.harness``), outputs preallocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from looptune._core import cpu_signature, host_isa
from looptune.leaderboard.entrants import Budget, Entrant, failure_row, make_row
from looptune.leaderboard.suite import Entry
from looptune.measure import harness
from looptune.measure.reference import expected, random_inputs, reduction_length

WORKER = Path(__file__).with_name("tvm_worker.py")
DEFAULT_RECORDS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "looptune-tvm"
MARK = "@@LOOPTUNE-TVM@@"


def math_key(entry: Entry) -> str:
    """What TVM computes for ``entry``, independent of looptune's internal layouts (a blocked
    conv header says ``block=16``; TVM gets the same NCHW arrays either way), so records
    survive a change of looptune's default layout."""
    comp = entry.computation()
    shapes = " ".join("x".join(map(str, t.shape)) for t in comp.inputs)
    conv = f" stride={comp.conv_stride} pad={comp.conv_pad}" if comp.kind == "conv2d" else ""
    return f"{comp.kind} {comp.spec.replace(' ', '')} {shapes}{conv}"


def tvm_python(explicit: str | None = None) -> str | None:
    """The interpreter that has TVM: the explicit one, else ``LOOPTUNE_TVM_PYTHON``."""
    return explicit or os.environ.get("LOOPTUNE_TVM_PYTHON") or None


class TVMEntrant(Entrant):
    """Two rows per benchmark: ``tvm-default`` and ``tvm-ms<trials>``."""

    kind = "tvm"

    def __init__(
        self,
        python: str,
        trials: int = 64,
        records: str | Path | None = None,
        timeout: float = 1800.0,
        min_time: float = 0.2,
        cached_only: bool = False,
    ) -> None:
        if trials < 1:
            raise ValueError(f"TVM trials must be >= 1, got {trials}")
        self.python, self.trials, self.timeout, self.min_time = python, trials, timeout, min_time
        self.cached_only = cached_only  # never tune: MetaSchedule only where records exist
        self.records = Path(records) if records else DEFAULT_RECORDS
        self.name = f"tvm-ms{trials}"

    def _key(self, entry: Entry) -> tuple[str, str, str, int]:
        """(computation, CPU signature (vendor/family/model: the microarchitecture, not the
        brand string shared by Zen 1 and Zen 4), ISA, trials): one host's tuned schedules
        never pre-load another's."""
        return (math_key(entry), cpu_signature(), host_isa(), self.trials)

    def _record(self, key: tuple) -> dict | None:
        """The last record of ``key`` (an old record keyed by a brand string matches no CPU:
        the brand does not name a microarchitecture)."""
        path = self.records / "records.jsonl"
        if not path.exists():
            return None
        found = None
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if tuple(rec["key"]) == tuple(key):
                found = rec
        return found

    def _save(self, key: tuple, rec: dict) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        with open(self.records / "records.jsonl", "a") as f:
            f.write(json.dumps({"key": list(key), **rec}) + "\n")

    def job(
        self, entry: Entry, data_dir: str, work_dir: str, modes: tuple[str, ...] = ("default",
                                                                                 "metaschedule")
    ) -> dict:
        comp = entry.computation()
        job = {
            "kind": comp.kind,
            "spec": comp.spec,
            "sizes": {v.name: v.extent for v in comp.vars},
            "shape_a": list(comp.inputs[0].shape),
            "shape_b": list(comp.inputs[1].shape),
            "stride": comp.conv_stride,
            "pad": comp.conv_pad,
            "flops": comp.flops,
            "tolerance": 1e-5 + 2e-6 * reduction_length(comp),
            "trials": self.trials,
            "data_dir": data_dir,
            "work_dir": work_dir,
            "modes": list(modes),
            "min_time": self.min_time,
            "timing_rule": {"warmup": harness.WARMUP_CALLS,
                            "batch_seconds": harness.BATCH_SECONDS,
                            "min_runs": harness.MIN_RUNS},
        }
        a, b = random_inputs(comp)
        for name, arr in (("a", a), ("b", b), ("expected", expected(comp, a, b))):
            np.save(os.path.join(data_dir, f"{name}.npy"), arr)
        return job

    def run(self, entry: Entry, budget: Budget) -> list[dict]:
        names = {"default": "tvm-default", "metaschedule": self.name}
        key = self._key(entry)
        digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
        work_dir = self.records / "ms" / digest
        record = self._record(key)
        skipped = []
        if self.cached_only and record is None:
            names.pop("metaschedule")
            why = "not in the TVM records and --tvm-cached-only: not tuned"
            skipped.append(make_row(entry, self.name, self.kind, status="not run", error=why))
        try:
            with tempfile.TemporaryDirectory(prefix="looptune-tvm-") as tmp:
                job = self.job(entry, tmp, str(work_dir), tuple(names))
                out = self._call(job)
        except subprocess.TimeoutExpired as exc:
            rows = [failure_row(entry, n, self.kind, exc, status="timeout") for n in names.values()]
            return rows + skipped
        except Exception as exc:
            return [failure_row(entry, n, self.kind, exc) for n in names.values()] + skipped
        rows = []
        for mode, name in names.items():
            e = out["modes"].get(mode, {"error": "no result"})
            extra = {"trials": e.get("trials", 0), "library_version": out.get("tvm_version")}
            if mode == "metaschedule":
                if e.get("tuned") and "error" not in e:
                    record = {"tuning_seconds": e["seconds"], "when": time.time()}
                    self._save(key, record)
                extra["cached"] = not e.get("tuned", False)
                extra["tvm_schedule"] = e.get("schedule")
                seconds = (record or {}).get("tuning_seconds", e.get("seconds", math.nan))
            else:
                seconds = e.get("seconds", math.nan)
            if "error" in e:
                rows.append(failure_row(entry, name, self.kind, RuntimeError(e["error"]), **extra))
                continue
            rows.append(
                make_row(
                    entry,
                    name,
                    self.kind,
                    status="ok" if e["ok"] else "wrong",
                    gflops=e["gflops"] if e["ok"] else math.nan,
                    measured_gflops=e["gflops"],
                    timing=harness.TIMING,
                    tuning_seconds=seconds,
                    max_abs_error=e["max_abs_error"],
                    **extra,
                )
            )
        return rows + skipped

    def _call(self, job: dict) -> dict:
        env = {**os.environ, "TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            [self.python, str(WORKER)],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=self.timeout,
            env=env,
        )
        for line in proc.stdout.splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        tail = (proc.stderr or proc.stdout)[-1500:]
        raise RuntimeError(f"TVM worker exited with status {proc.returncode}: {tail}")


def check_python(python: str) -> str:
    """The TVM version under ``python``; raises RuntimeError if TVM cannot be imported there."""
    proc = subprocess.run(
        [python, "-c", "import tvm; print(tvm.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"no usable TVM under {python}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


__all__ = ["TVMEntrant", "check_python", "tvm_python"]
