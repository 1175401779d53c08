"""Training callbacks: evaluation by greedy tuning on held-out benchmarks, metadata output."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from looptune.util.fileio import atomic_write_text


def write_meta(policy_path: Path, meta: dict) -> None:
    """Write ``meta`` next to the policy (atomically), with the ISA and CPU it was trained on
    (the tilings a policy learns depend on the register file;
    ``looptune.agent.policy`` picks a policy
    by ISA)."""
    import looptune
    from looptune.agent.policy import meta_path
    from looptune.util.fileio import atomic_write_text

    meta = {"isa": looptune.host_isa(), "cpu": looptune.cpu_name(), **meta}
    atomic_write_text(meta_path(policy_path), json.dumps(meta, indent=1, sort_keys=True) + "\n")


def save_policy(model: Any, path: Path, meta: dict) -> Path:
    """Save ``model`` for tuning as ``PATH.safetensors`` + ``PATH.json`` (tensors only, no
    optimizer state, no pickle; written atomically). Returns the weights path.

    Resume training from the checkpoints instead (SB3 zips, which keep the optimizer state).
    """
    import looptune
    from looptune.agent.policy import save_policy as save_safe

    meta = {"isa": looptune.host_isa(), "cpu": looptune.cpu_name(), **meta}
    return save_safe(model, path, meta)


def held_out_trees(env_kwargs: dict, n: int) -> list:
    """Base schedules of the first ``n`` benchmarks (a fixed, spread-out subset) of a split."""
    from looptune import datasets

    benches = datasets.get(env_kwargs["dataset"], split=env_kwargs.get("split", "test"))
    stride = max(len(benches) // max(n, 1), 1)
    return [(b.name, b.default_schedule()) for b in benches[::stride][:n]]


def evaluate_trees(policy: Any, trees: list, measurer: Any = None) -> dict:
    """Greedy-tune each (name, tree); return mean/geomean figures and per-benchmark rows."""
    from looptune.measure import Measurer
    from looptune.search.agent import tune

    measurer = measurer or Measurer()
    rows = []
    for name, tree in trees:
        base = measurer.gflops(tree)
        res = tune(tree, measurer, policy=policy)
        rows.append(
            {
                "benchmark": name,
                "base_gflops": base,
                "agent_gflops": res.best_gflops,
                "seconds": res.seconds,
                "tree": res.best_tree.dump(),
            }
        )
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    from looptune.report.tables import geomean

    n = max(len(rows), 1)
    geo = geomean(r["agent_gflops"] for r in rows)
    speed = geomean(r["agent_gflops"] / r["base_gflops"] for r in rows)
    return {
        "n": len(rows),
        "mean_agent_gflops": sum(r["agent_gflops"] for r in rows) / n,
        "geomean_agent_gflops": geo,
        "geomean_speedup": speed,
        "mean_base_gflops": sum(r["base_gflops"] for r in rows) / n,
        "mean_seconds": sum(r["seconds"] for r in rows) / n,
        "rows": rows,
    }


class TuneEvalCallback(BaseCallback):
    """Every ``eval_freq`` calls, tune held-out benchmarks with the current policy greedily.

    Logs ``eval/geomean_gflops``, ``eval/geomean_speedup`` and ``eval/mean_seconds`` to
    TensorBoard and saves the best model so far as ``RUN_DIR/best_policy.safetensors`` (+ JSON).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict,
        n_benchmarks: int,
        eval_freq: int,
        run_dir: Path,
        meta: dict,
    ) -> None:
        super().__init__()
        self.env_id, self.env_kwargs = env_id, env_kwargs
        self.n_benchmarks, self.eval_freq = n_benchmarks, eval_freq
        self.run_dir, self.meta = Path(run_dir), meta
        self.best: dict | None = None
        self._trees: list | None = None
        self.history: list[dict] = []

    def evaluate(self, model: Any) -> dict:
        from looptune.agent.policy import wrap_model

        if self._trees is None:
            self._trees = held_out_trees(self.env_kwargs, self.n_benchmarks)
        policy = wrap_model(model, self.meta["algo"], self.env_id, self.meta["env_kwargs"])
        t0 = time.perf_counter()
        result = evaluate_trees(policy, self._trees)
        result["eval_seconds"] = time.perf_counter() - t0
        return result

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq != 0:
            return True
        result = self.evaluate(self.model)
        summary = {k: v for k, v in result.items() if k != "rows"}
        summary["timesteps"] = int(self.num_timesteps)
        self.history.append(summary)
        self.logger.record("eval/geomean_gflops", result["geomean_agent_gflops"])
        self.logger.record("eval/geomean_speedup", result["geomean_speedup"])
        self.logger.record("eval/mean_seconds", result["mean_seconds"])
        atomic_write_text(self.run_dir / "evaluations.json", json.dumps(self.history, indent=1))
        if self.best is None or summary["geomean_agent_gflops"] > self.best["geomean_agent_gflops"]:
            self.best = summary
            path = self.run_dir / "best_policy.safetensors"
            save_policy(
                self.model,
                path,
                {**self.meta, "timesteps": int(self.num_timesteps), "eval": summary},
            )
        print(
            f"[eval] t={self.num_timesteps} geomean {summary['geomean_agent_gflops']:.1f} "
            f"GFLOP/s, speedup {summary['geomean_speedup']:.2f}x",
            flush=True,
        )
        return True
