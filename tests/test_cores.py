"""looptune.distributed.cores: one measuring process per core (no ray needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PYTHON_DIR = str(Path(__file__).resolve().parents[1] / "python")
HOLD = (
    "import time\n"
    "from looptune.distributed.cores import claim_core\n"
    "print(claim_core(wait=0), flush=True)\n"
    "time.sleep(60)\n"
)
CLAIM = (
    "import os, sys\n"
    "from looptune.distributed import NoCoreError\n"
    "from looptune.distributed.cores import claim_core, claimed_core\n"
    "try:\n"
    "    core = claim_core(wait=float(sys.argv[1]))\n"
    "except NoCoreError as exc:\n"
    "    print('none', exc)\n"
    "else:\n"
    "    assert claim_core() == claimed_core() == core  # idempotent\n"
    "    print(core, sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'])\n"
)


def test_processes_claim_distinct_cores_and_a_dead_ones_core_comes_free(tmp_path):
    env = {**os.environ, "PYTHONPATH": PYTHON_DIR, "LOOPTUNE_CORE_LOCKS": str(tmp_path)}
    allowed = sorted(os.sched_getaffinity(0))

    def claim(wait: float) -> str:
        out = subprocess.run([sys.executable, "-c", CLAIM, str(wait)], capture_output=True,
                             text=True, env=env, timeout=60, check=True)
        return out.stdout.strip()

    holders = [subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                                env=env) for _ in allowed]
    try:
        cores = [int(p.stdout.readline()) for p in holders]
        assert sorted(cores) == allowed  # every process its own core
        assert claim(0).startswith("none all")  # a typed NoCoreError, with the reason
        holders[0].kill()
        holders[0].wait()
        got = claim(10).split(maxsplit=1)
        assert int(got[0]) == cores[0]  # the killed holder's core came free
        assert got[1] == f"[{cores[0]}] 1"  # pinned to it alone, one BLAS/OpenMP thread
    finally:
        for p in holders:
            p.kill()
            p.wait()
