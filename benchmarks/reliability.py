"""The reliability check of issue 13: fuzz the engine, try every bad input, load a crafted policy.

    nice -n 19 python benchmarks/reliability.py --minutes 6 --seed 1

Not a timing benchmark (no bench lock needed). Prints a table and writes
``benchmarks/results/reliability.json``: schedules fuzzed (total and per minute), wrong results,
exceptions, crashes and hangs (``looptune.fuzz``); the bad inputs of the table in
``tests/test_bad_inputs.py`` tried and handled (the expected exception type with the expected
phrase); and a crafted SB3 policy whose pickle writes a file, loaded through every public entry
point (``tests/test_policy_safety.py``), with whether any code ran.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"


def bad_inputs() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_bad_inputs import CASES

    rows = []
    for what, fn, exc, phrase in CASES:
        try:
            fn()
            got, ok = "no error", False
        except Exception as e:  # noqa: BLE001  (classifying every outcome is the point)
            got = f"{type(e).__name__}: {str(e)[:120]}"
            ok = isinstance(e, exc) and phrase in str(e)
        rows.append({"input": what, "expected": exc.__name__, "got": got, "handled": ok})
    return {"tried": len(rows), "handled": sum(r["handled"] for r in rows), "rows": rows}


def crafted_policy() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "agents"))
    import evaluate
    from test_policy_safety import craft

    import looptune
    from looptune import cli, search
    from looptune.agent.policy import load_policy
    from looptune.search.agent import tune

    tree = looptune.matmul(32, 32, 32).default_schedule()
    with tempfile.TemporaryDirectory() as tmp:
        path, marker = craft(Path(tmp))
        entries = {
            "load_policy": lambda: load_policy(path),
            "policy.tune": lambda: tune(tree, policy=str(path)),
            "search agent": lambda: search.get("agent")(tree, policy=str(path)),
            "looptune tune --policy": lambda: cli.main(
                ["tune", "matmul", "32", "32", "32", "--policy", str(path)]
            ),
            "agents/evaluate.py --policy": lambda: evaluate.main(
                ["--policy", str(path), "--limit", "1", "--quiet"]
            ),
        }
        rows = []
        for name, fn in entries.items():
            try:
                res = fn()
                outcome = f"returned {res!r}"[:80]
            except Exception as e:  # noqa: BLE001
                outcome = f"{type(e).__name__}: {str(e)[:100]}"
            rows.append({"entry": name, "outcome": outcome, "code_ran": marker.exists()})
        return {"entry_points": rows, "code_ran": any(r["code_ran"] for r in rows)}


def _environment() -> dict:
    """The shared result-file metadata (benchmarks/_bench.py); no speed is reported here."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _bench import environment

    return environment(timing="none: correctness and robustness only, no speed reported")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--schedules", type=int, default=20)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    from dataclasses import asdict

    import looptune
    from looptune import fuzz
    from looptune.util.fileio import atomic_write_text

    report = fuzz.fuzz(args.minutes, args.seed, args.schedules, progress=True)
    bad = bad_inputs()
    policy = crafted_policy()
    doc = {
        "command": "nice -n 19 python benchmarks/reliability.py " + " ".join(argv or sys.argv[1:]),
        "host": {"cpu": looptune.cpu_name(), "isa": looptune.host_isa(), "node": platform.node()},
        "environment": _environment(),
        "fuzz": asdict(report),
        "bad_inputs": bad,
        "crafted_policy": policy,
    }
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    f = report
    print(f"{'item':<34} {'value':>12}")
    for k, v in [
        ("schedules fuzzed", f.schedules),
        ("kernels run (both ISAs)", f.kernels),
        ("schedules per minute", f.schedules_per_minute),
        ("wrong results", f.wrong),
        ("exceptions on legal schedules", f.exceptions),
        ("crashes", f.crashes),
        ("hangs", f.hangs),
        ("bad inputs tried", bad["tried"]),
        ("bad inputs handled", bad["handled"]),
        ("crafted policy entry points", len(policy["entry_points"])),
        ("crafted policy ran code", policy["code_ran"]),
    ]:
        print(f"{k:<34} {v!s:>12}")
    clean = f.wrong == f.exceptions == f.crashes == f.hangs == 0
    return 0 if clean and bad["handled"] == bad["tried"] and not policy["code_ran"] else 1


if __name__ == "__main__":
    sys.exit(main())
