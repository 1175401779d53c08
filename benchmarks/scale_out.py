"""Scale-out on Ray: measured throughput with 1 and 2 workers against the serial path, and a
throughput model for larger clusters from the driver's measured costs.

    flock /tmp/looptune-bench.lock python benchmarks/scale_out.py [--steps 400]
        [--records 400] [--rllib-steps 400]        # needs the ray extra

Sections (one table each, all in benchmarks/results/scale_out.json):

* env: measured env steps/s (random actions on the mm64_256_16 train split, each step a fresh
  JIT + 2 ms timing unless the schedule repeats) in this process, and on 1 and 2 pool workers
  (each on its own core; ``n`` steps split into episodes dealt out to the workers).
* records: tuning records filled per second (distinct schedules of mm64_256_16 computations,
  measured and appended to a JSON Lines file): a serial ``Measurer(records=...)`` against
  ``RayRunner(pool, records=...).run_batch`` with 1 and 2 workers.
* overhead: Ray's cost per measurement, from a runner that spins exactly 2 ms per call:
  (wall time per measurement and worker) - (the same runner's time per call in this process,
  measured in the same run), as a share of 2 ms; "batch" is ``run_batch`` (chunks of up to 16
  per Ray task), "one at a time" is the ``Runner.run`` protocol, one Ray round trip each.
* rllib: RLlib PPO env sampling throughput (``EnvRunner.sample`` on every remote env runner
  at once, measured env) with 1 and 2 env runners.
* model: records/s at 8, 64 and 512 workers = min(W / (t_item + o_worker), 1 / c_driver),
  with t_item the mean measured time per record on a worker, o_worker Ray's overhead per item,
  and c_driver the driver's cost per record (scheduling, measured with no-op items, plus
  writing the record). The driver saturates at W* = (t_item + o_worker) / c_driver workers.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import environment, strip_openblas_env, write_json

strip_openblas_env()

import looptune
from looptune.measure import Budget, Measurer, MeasureResult, Outcome
from looptune.report.tables import format_table

SPIN = 0.002  # the "typical measurement" of the overhead section


class Spin:
    """A runner that busy-waits exactly ``seconds`` per measurement (no JIT, no timing)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, tree, isa, budget, cap) -> MeasureResult:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return MeasureResult(Outcome.OK, 1.0, 1.0, 1, seconds=self.seconds)


def episodes(worker, seed: int, steps: int) -> int:
    """Play ``steps`` random env steps (fresh private cache per call); returns steps done."""
    import gymnasium as gym

    env = gym.make("LoopTune-v0", measurer=Measurer(cache={}))
    rng = random.Random(seed)
    env.reset(seed=seed)
    for _ in range(steps):
        *_, term, trunc, _ = env.step(rng.randrange(env.action_space.n))
        if term or trunc:
            env.reset(seed=rng.randrange(1 << 30))
    return steps


def warm(worker) -> float:
    from looptune.measure import peak_gflops

    return peak_gflops()  # measured once per process, on the worker's core


def distinct_trees(n: int, seed: int = 0) -> list:
    from looptune import datasets

    rng = random.Random(seed)
    comps = [b.computation() for b in datasets.get("mm64_256_16", "train")]
    out, seen = [], set()
    while len(out) < n:
        t = rng.choice(comps).default_schedule()
        for _ in range(rng.randrange(1, 6)):
            t = t.try_apply(rng.choice(("down", "split_4", "split_8", "split_16", "swap_up")))\
                or t
        if t.hash() not in seen:
            seen.add(t.hash())
            out.append(t)
    return out


def serial_env(steps: int) -> dict:
    from looptune.distributed.cores import claim_core

    claim_core()  # the serial path on one core too
    t0 = time.perf_counter()
    per = 25
    for i in range(steps // per):
        episodes(None, 1000 + i, per)
    wall = time.perf_counter() - t0
    from looptune.distributed.cores import release_core

    release_core()
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {"path": "serial", "workers": 1, "steps": steps, "seconds": wall,
            "per_second": steps / wall}


def pool_env(workers: int, steps: int) -> dict:
    from looptune.distributed.pool import WorkerPool

    per = 25
    with WorkerPool(workers=workers) as pool:
        pool.map(warm, [()] * workers, chunk=1)
        t0 = time.perf_counter()
        pool.map(episodes, [(1000 + i, per) for i in range(steps // per)], chunk=1)
        wall = time.perf_counter() - t0
    return {"path": "ray", "workers": workers, "steps": steps, "seconds": wall,
            "per_second": steps / wall}


def serial_records(trees: list, path: Path) -> dict:
    m = Measurer(records=path, cache={})
    t0 = time.perf_counter()
    for t in trees:
        m.measure(t)
    wall = time.perf_counter() - t0
    return {"path": "serial", "workers": 1, "records": len(trees), "seconds": wall,
            "per_second": len(trees) / wall, "per_record_ms": 1e3 * wall / len(trees)}


def pool_records(workers: int, trees: list, path: Path) -> dict:
    from looptune.distributed.pool import WorkerPool
    from looptune.distributed.runner import RayRunner

    with WorkerPool(workers=workers) as pool:
        runner = RayRunner(pool, records=path)
        runner.run_batch(trees[:4], looptune.host_isa(), Budget())  # warm-up (not counted)
        t0 = time.perf_counter()
        res = runner.run_batch(trees, looptune.host_isa(), Budget())
        wall = time.perf_counter() - t0
    busy = sum(r.compile_seconds + r.timing_seconds for r in res)
    return {"path": "ray", "workers": workers, "records": len(trees), "seconds": wall,
            "per_second": len(trees) / wall, "per_record_ms": 1e3 * busy / len(trees)}


def overhead(n: int) -> list[dict]:
    from looptune.distributed.pool import WorkerPool
    from looptune.distributed.runner import RayRunner

    trees = distinct_trees(n, seed=7)
    spin, isa = Spin(SPIN), looptune.host_isa()
    t0 = time.perf_counter()
    for t in trees:  # the same measurements in this process: the reference of this run
        spin.run(t, isa, Budget(), None)
    local = (time.perf_counter() - t0) / n
    out = [{"workers": 0, "mode": "in process", "measurements": n,
            "ms_per_measurement": 1e3 * local, "overhead_ms": 0.0, "overhead_share": 0.0}]
    for workers in (1, 2):
        with WorkerPool(workers=workers, payload=Spin(SPIN)) as pool:
            runner = RayRunner(pool)
            runner.run_batch(trees[:8], looptune.host_isa(), Budget())
            for label, batch in (("batch", True), ("one at a time", False)):
                t0 = time.perf_counter()
                if batch:
                    runner.run_batch(trees, looptune.host_isa(), Budget())
                else:
                    for t in trees[: n // 4]:
                        runner.run(t, looptune.host_isa(), Budget(), None)
                count = n if batch else n // 4
                per = (time.perf_counter() - t0) / count * (workers if batch else 1)
                ms = 1e3 * (per - local)
                out.append({"workers": workers, "mode": label, "measurements": count,
                            "ms_per_measurement": 1e3 * per, "overhead_ms": ms,
                            "overhead_share": ms / (1e3 * SPIN)})
    return out


def driver_costs(n: int, path: Path) -> dict:
    """The driver's cost per item: scheduling (no-op items through the pool, chunked as
    RayRunner does) and writing one record (node_record + RecordStore.append)."""
    from looptune.distributed.pool import WorkerPool
    from looptune.distributed.runner import node_record
    from looptune.measure import RecordStore

    def noop(worker, x):
        return x

    with WorkerPool(workers=2) as pool:
        info = pool.workers()[0]
        pool.map(noop, [(i,) for i in range(64)])
        t0 = time.perf_counter()
        pool.map(noop, [(i,) for i in range(n)])
        sched = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        pool.map(noop, [(i,) for i in range(n // 4)], chunk=1)
        sched1 = (time.perf_counter() - t0) / (n // 4)
    store = RecordStore(path)
    tree = looptune.matmul(64, 64, 64).default_schedule()
    r = MeasureResult(Outcome.OK, 90.0, 88.0, 40, 1e-4, 2e-3, dict(tree.compile().facts))
    from looptune.distributed.runner import FLUSH

    t0 = time.perf_counter()
    for _ in range(n // FLUSH):  # as RayRunner writes: node_record each, one append per FLUSH
        store.extend([node_record(tree, r, info, looptune.host_isa(), Budget())
                      for _ in range(FLUSH)])
    write = (time.perf_counter() - t0) / (n // FLUSH * FLUSH)
    return {"schedule_ms": 1e3 * sched, "schedule_unchunked_ms": 1e3 * sched1,
            "write_ms": 1e3 * write, "driver_ms": 1e3 * (sched + write)}


def rllib_sampling(runners: int, steps: int) -> dict:
    import ray

    from looptune.distributed import rllib

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rllib.register()
        cfg = rllib.build_config(
            "ppo", {"env_id": "LoopTune-v0", "env_kwargs": {}, "pin": True}, runners,
            (64, 64), 3e-4, 0.99, 0, 100)
        algo = cfg.build_algo()
        per = steps // runners
        def sample(r):
            return sum(len(e) for e in r.sample(num_timesteps=per))

        algo.env_runner_group.foreach_env_runner(
            lambda r: sum(len(e) for e in r.sample(num_timesteps=20)), local_env_runner=False)
        t0 = time.perf_counter()
        done = algo.env_runner_group.foreach_env_runner(sample, local_env_runner=False)
        wall = time.perf_counter() - t0
        algo.stop()
    finally:
        ray.shutdown()
    n = int(sum(done))
    return {"env_runners": runners, "steps": n, "seconds": wall, "per_second": n / wall}


def model(records: list[dict], over: list[dict], costs: dict) -> list[dict]:
    one = next(r for r in records if r["path"] == "ray" and r["workers"] == 1)
    t_item = one["per_record_ms"]  # mean busy time per record on a worker
    o = max(0.0, next(o for o in over if o["workers"] == 1 and o["mode"] == "batch")[
        "overhead_ms"])  # o_worker: Ray's cost per measurement on a worker
    c = costs["driver_ms"]
    saturate = (t_item + o) / c
    rows = []
    for w in (1, 2, 8, 64, 512):
        workers_rate = w / ((t_item + o) / 1e3)
        driver_rate = 1e3 / c
        rows.append({"workers": w, "worker_bound_per_s": workers_rate,
                     "driver_bound_per_s": driver_rate,
                     "predicted_per_s": min(workers_rate, driver_rate),
                     "bottleneck": "driver" if w > saturate else "workers",
                     "saturation_workers": saturate})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1200, help="env steps per configuration")
    p.add_argument("--overhead", type=int, default=800, help="spin measurements per row")
    p.add_argument("--records", type=int, default=400, help="records per configuration")
    p.add_argument("--rllib-steps", type=int, default=400, help="RLlib sampled env steps")
    p.add_argument("--out", default="scale_out")
    args = p.parse_args()
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="looptune-scale-out-"))
    trees = distinct_trees(args.records + 8)
    env_rows = [serial_env(args.steps)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        env_rows += [pool_env(w, args.steps) for w in (1, 2)]
        rec_rows = [serial_records(trees[8:], tmp / "serial.jsonl")]
        rec_rows += [pool_records(w, trees[8:], tmp / f"ray{w}.jsonl") for w in (1, 2)]
        over = overhead(args.overhead)
        costs = driver_costs(2000, tmp / "write.jsonl")
    finally:
        ray.shutdown()
    rl_rows = [rllib_sampling(r, args.rllib_steps) for r in (1, 2)]
    for rows in (env_rows, rec_rows):
        base = next(r["per_second"] for r in rows if r["path"] == "ray" and r["workers"] == 1)
        serial = rows[0]["per_second"]
        for r in rows:
            r["vs_one_worker"] = r["per_second"] / base
            r["vs_serial"] = r["per_second"] / serial
    rl_rows[1]["vs_one_runner"] = rl_rows[1]["per_second"] / rl_rows[0]["per_second"]
    rl_rows[0]["vs_one_runner"] = 1.0
    mod = model(rec_rows, over, costs)
    f = ".2f"
    print("env steps/s (measured)")
    print(format_table(env_rows, [("path", "path", ""), ("workers", "workers", "d"),
                                  ("per_second", "steps/s", ".1f"), ("vs_serial", "vs serial", f),
                                  ("vs_one_worker", "vs 1 worker", f)]))
    print("\nrecords filled per second")
    print(format_table(rec_rows, [("path", "path", ""), ("workers", "workers", "d"),
                                  ("per_second", "records/s", ".1f"),
                                  ("per_record_ms", "busy ms/record", ".2f"),
                                  ("vs_serial", "vs serial", f),
                                  ("vs_one_worker", "vs 1 worker", f)]))
    print(f"\nRay overhead per measurement (a runner spinning {1e3 * SPIN:g} ms)")
    print(format_table(over, [("workers", "workers", "d"), ("mode", "mode", ""),
                              ("ms_per_measurement", "ms/measurement", ".3f"),
                              ("overhead_ms", "overhead ms", ".3f"),
                              ("overhead_share", "of 2 ms", ".1%")]))
    print(f"\ndriver per record: scheduling {costs['schedule_ms']:.3f} ms (unchunked "
          f"{costs['schedule_unchunked_ms']:.3f}), writing {costs['write_ms']:.3f} ms")
    print("\nRLlib PPO sampling (measured env)")
    print(format_table(rl_rows, [("env_runners", "env runners", "d"),
                                 ("per_second", "steps/s", ".1f"),
                                 ("vs_one_runner", "vs 1 runner", f)]))
    print("\nthroughput model (records/s)")
    print(format_table(mod, [("workers", "workers", "d"),
                             ("worker_bound_per_s", "workers can", ".0f"),
                             ("driver_bound_per_s", "driver can", ".0f"),
                             ("predicted_per_s", "predicted", ".0f"),
                             ("bottleneck", "bound by", "")]))
    print(f"the driver saturates at about {mod[0]['saturation_workers']:.0f} workers")
    path = write_json(args.out, {"environment": environment(), "config": vars(args),
                                 "env": env_rows, "records": rec_rows, "overhead": over,
                                 "driver": costs, "rllib": rl_rows, "model": mod})
    print(f"\nresults: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
