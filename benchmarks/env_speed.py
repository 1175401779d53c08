"""Speed, memory and fault tolerance of the LoopTune environment and measurement pipeline.

    flock /tmp/looptune-bench.lock python benchmarks/env_speed.py [--steps 1000]
        [--memory-steps 100000] [--records 10000] [--fault-steps 1000]

Sections (one table each, all in benchmarks/results/env_speed.json):

* speed: a masked random policy plays episodes of 10 steps on the mm64_256_16 test split at
  the default budget (0.002 s / 3 runs). "fresh": a Measurer with its own empty cache (every
  new schedule is JIT-compiled and timed); "cached": the same actions replayed (every schedule
  a cache hit). "before" is the previous committed run of this file (same host class).
* memory: RSS growth over ``--memory-steps`` env steps of random masked play (budget 0 s / 1
  run so the run stays short; the cache and feature cache are bounded LRUs).
* isolation: ms per fresh measurement in-process vs in a worker process (IsolatedRunner).
* records: JSON Lines append and read-back throughput (records/s).
* faults: 10% of measurements fail (compile error, runtime error, timeout, injected by
  FaultyRunner) during a random search, a greedy search, an eval over 10 benchmarks and
  ``--fault-steps`` env steps. Checks: everything completes, every injected failure is in the
  records with its outcome, and per episode the rewards sum to (final - base) / peak, i.e. no
  reward is paid twice or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, cpp_timing, environment, strip_openblas_env, write_json  # noqa: E402

strip_openblas_env()

import numpy as np  # noqa: E402

import looptune  # noqa: E402
from looptune import datasets  # noqa: E402
from looptune import search as searches  # noqa: E402
from looptune.envs.looptune_env import LoopTuneEnv  # noqa: E402
from looptune.measure import (  # noqa: E402
    FaultyRunner,
    KernelRunner,
    Measurer,
    RecordStore,
    peak_gflops,
)
from looptune.measure.isolate import IsolatedRunner  # noqa: E402
from looptune.report.tables import format_table as table  # noqa: E402
from looptune.search.evaluate import run_eval  # noqa: E402

BUDGET = (0.002, 3)  # the env's default measurement budget


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def plan(n_steps: int, seed: int, env: LoopTuneEnv) -> list[tuple[str, list[int]]]:
    """Episodes of legal random actions (found by playing them), as (benchmark, actions)."""
    rng = np.random.default_rng(seed)
    episodes, steps = [], 0
    while steps < n_steps:
        _, info = env.reset(seed=int(rng.integers(1 << 30)))
        acts = []
        for _ in range(10):
            acts.append(int(rng.choice(np.flatnonzero(env.action_masks()))))
            env.step(acts[-1])
        episodes.append((info["benchmark"], acts))
        steps += len(acts)
    return episodes


def play(env: LoopTuneEnv, episodes) -> float:
    """Replay episodes; returns env steps per second (resets excluded)."""
    n, seconds = 0, 0.0
    for name, acts in episodes:
        env.reset(options={"benchmark": name})
        t0 = time.perf_counter()
        for a in acts:
            env.step(a)
        seconds += time.perf_counter() - t0
        n += len(acts)
    return n / seconds


def speed(steps: int, seed: int, peak: float) -> dict:
    quick = Measurer(None, 0.0, 1, 1, cache={})
    planner = LoopTuneEnv(split="test", measurer=quick, peak_gflops=peak)
    episodes = plan(steps, seed, planner)
    env = LoopTuneEnv(split="test", measurer=Measurer(None, *BUDGET, cache={}), peak_gflops=peak)
    fresh = play(env, episodes)
    st = env.measurer.stats
    cached = max(play(env, episodes) for _ in range(3))
    return {
        "steps": sum(len(a) for _, a in episodes),
        "fresh_steps_per_s": fresh,
        "cached_steps_per_s": cached,
        "ms_per_measurement": 1e3 * (st.compile_seconds + st.timing_seconds) / st.measured,
        "measured": st.measured,
    }


def memory(steps: int, seed: int, peak: float) -> dict:
    env = LoopTuneEnv(split="all", measurer=Measurer(None, 0.0, 1, 1), peak_gflops=peak)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    before = rss_mb()
    t0 = time.perf_counter()
    for i in range(steps):
        if i % 10 == 0:
            env.reset()
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    return {
        "steps": steps,
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - before,
        "seconds": time.perf_counter() - t0,
        "measured": env.measurer.stats.measured,
    }


def isolation(n: int = 60) -> dict:
    trees = [looptune.matmul(64, 64, 64).default_schedule()]
    rng = np.random.default_rng(0)
    env = LoopTuneEnv(split="test", measurer=Measurer(None, 0.0, 1, 1, cache={}), peak_gflops=100.0)
    env.reset(seed=0)
    while len(trees) < n:
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        if env.tree.hash() not in {t.hash() for t in trees}:
            trees.append(env.tree)
        if env.steps % 10 == 0:
            env.reset()
    out = {}
    for name, runner in (("in_process", KernelRunner()), ("worker", IsolatedRunner())):
        best = float("inf")
        for _ in range(3):
            m = Measurer(None, *BUDGET, runner=runner, cache={})
            m.measure(trees[0])  # warm the worker
            t0 = time.perf_counter()
            for t in trees[1:]:
                m.measure(t)
            best = min(best, (time.perf_counter() - t0) / (len(trees) - 1))
        out[f"{name}_ms"] = 1e3 * best
    out["overhead_ms"] = out["worker_ms"] - out["in_process_ms"]
    out["measurements"] = len(trees) - 1
    return out


def records_speed(n: int, tmp: Path) -> dict:
    tree = looptune.matmul(64, 64, 64).default_schedule()
    rec = json.loads(
        json.dumps({"computation": tree.computation.header(), "schedule": tree.dump(),
                    "hash": f"{tree.hash():016x}", "outcome": "ok", "gflops": 1.0,
                    "facts": dict(tree.compile().facts), "cpu": looptune.cpu_name(),
                    "isa": looptune.host_isa(), "min_time": 0.002, "min_runs": 3,
                    "max_runs": 200})
    )  # fmt: skip
    store = RecordStore(tmp / "speed.jsonl")
    t0 = time.perf_counter()
    for _ in range(n):
        store.append(rec)
    write = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    read = sum(1 for _ in store)
    read_rate = read / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    warmed = Measurer(None, 0.002, 3, 200, cache={}).warm(store)
    return {
        "records": n,
        "append_per_s": write,
        "read_per_s": read_rate,
        "warm_per_s": warmed / (time.perf_counter() - t0),
        "bytes_per_record": (tmp / "speed.jsonl").stat().st_size / n,
    }


def faults(env_steps: int, seed: int, peak: float, tmp: Path) -> dict:
    path = tmp / "faults.jsonl"
    injected: Counter = Counter()
    runners = []

    def faulty(budget=(0.0, 1, 1)) -> Measurer:
        r = FaultyRunner(KernelRunner(), rate=0.1, seed=len(runners))
        runners.append(r)
        return Measurer(None, *budget, runner=r, cache={}, records=path)

    tree = looptune.matmul(96, 128, 80).default_schedule()
    out: dict = {}
    rs = searches.get("random")(tree, faulty(), time_budget=None, measure_budget=150, seed=seed)
    gs = searches.get("greedy1")(tree, faulty(), time_budget=None, measure_budget=150)
    out["random"] = {"measurements": rs.measurements, "failures": len(rs.failures)}
    out["greedy1"] = {"measurements": gs.measurements, "failures": len(gs.failures)}
    benches = [(b.name, b.computation()) for b in datasets.get("mm64_256_16", "test")[:10]]
    rows = run_eval(benches, ["random", "greedy1"], time_budget=None, measure_budget=20,
                    numpy_min_time=0.01, final_min_time=0.002, progress=False,
                    make_measurer=faulty)  # fmt: skip
    out["eval"] = {
        "rows": len(rows),
        "failures": sum(r.get("failures", 0) for r in rows),
    }
    env = LoopTuneEnv(split="test", measurer=faulty(), peak_gflops=peak)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    worst, episodes, env_failures, total = 0.0, 0, 0, 0.0
    for i in range(env_steps):
        _, r, *_, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        total += r
        env_failures += info["outcome"] != "ok"
        if (i + 1) % 10 == 0:
            expected = (env.gflops - env.base_gflops) / env.peak
            worst = max(worst, abs(total - expected))
            episodes += 1
            env.reset()
            total = 0.0
    out["env"] = {
        "steps": env_steps,
        "episodes": episodes,
        "failed_steps": env_failures,
        "max_return_mismatch": worst,
    }
    for r in runners:
        injected.update({k.value: v for k, v in r.injected.items()})
    recorded = Counter(rec["outcome"] for rec in RecordStore(path))
    out["injected"] = dict(injected)
    out["recorded"] = dict(recorded)
    out["every_failure_recorded"] = all(recorded[k] >= v for k, v in injected.items())
    out["no_reward_paid_twice"] = worst < 1e-9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--memory-steps", type=int, default=100_000)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--fault-steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    before_path = RESULTS / "env_speed.json"
    before = json.loads(before_path.read_text()) if before_path.is_file() else {}
    peak = peak_gflops()
    tmp = Path(tempfile.mkdtemp(prefix="looptune-bench-"))
    why = "environment step and measurement throughput, no entrant comparison"
    result = {"environment": environment(timing=cpp_timing(why)), "peak_gflops": peak}
    result["speed"] = speed(args.steps, args.seed, peak)
    result["speed"]["before"] = _before(before)
    result["memory"] = memory(args.memory_steps, args.seed, peak)
    result["isolation"] = isolation()
    result["records"] = records_speed(args.records, tmp)
    result["faults"] = faults(args.fault_steps, args.seed, peak, tmp)
    result["targets"] = {"fresh_steps_per_s": 700, "cached_steps_per_s": 50_000,
                         "rss_growth_mb": 300}  # fmt: skip
    s, b = result["speed"], result["speed"]["before"]
    print(f"{looptune.cpu_name()} ({looptune.host_isa()}), peak {peak:.0f} GFLOP/s")
    print(table(
        [{"what": "fresh steps/s", "before": b.get("fresh"), "after": s["fresh_steps_per_s"]},
         {"what": "cached steps/s", "before": b.get("cached"), "after": s["cached_steps_per_s"]},
         {"what": "ms/measurement", "before": None, "after": s["ms_per_measurement"]},
         {"what": f"RSS growth MB / {args.memory_steps} steps", "before": None,
          "after": result["memory"]["rss_growth_mb"]},
         {"what": "isolation overhead ms/measurement", "before": None,
          "after": result["isolation"]["overhead_ms"]},
         {"what": "records append/s", "before": None,
          "after": result["records"]["append_per_s"]},
         {"what": "records read/s", "before": None, "after": result["records"]["read_per_s"]}],
        [("what", "", "s"), ("before", "before", ".1f"), ("after", "after", ".1f")],
    ))  # fmt: skip
    f = result["faults"]
    print(
        f"faults: injected {f['injected']}, recorded {f['recorded']}, every failure "
        f"recorded: {f['every_failure_recorded']}, no reward paid twice: "
        f"{f['no_reward_paid_twice']} (env: {f['env']['failed_steps']} failed steps)"
    )
    print(f"wrote {write_json('env_speed', result)}")
    for p in tmp.iterdir():
        p.unlink()
    os.rmdir(tmp)


def _before(doc: dict) -> dict:
    """The previous committed run's figures at the default budget, if it has them."""
    if "speed" in doc:
        return {"fresh": doc["speed"]["fresh_steps_per_s"],
                "cached": doc["speed"]["cached_steps_per_s"], "from": "previous run"}  # fmt: skip
    for b in doc.get("budgets", []):
        if (b["budget"]["min_time"], b["budget"]["min_runs"]) == BUDGET:
            return {"fresh": b["fresh"]["steps_per_s"], "cached": b["cached"]["steps_per_s"],
                    "from": "previous run (before the measure/space rewrite)"}  # fmt: skip
    return {}


if __name__ == "__main__":
    main()
