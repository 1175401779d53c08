"""Shared plumbing of the benchmark scripts: a clean BLAS environment and the results folder.
Tables, geomeans and JSON come from ``looptune.report.tables``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
_STRIP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MARK = "LOOPTUNE_BENCH_UNSET"


def strip_openblas_env() -> None:
    """Re-execute this script without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (they make numpy pick
    a weaker kernel). Must run before numpy is imported; changes only this process."""
    if any(v in os.environ for v in _STRIP):
        env = {k: v for k, v in os.environ.items() if k not in _STRIP}
        env[_MARK] = ",".join(f"{v}={os.environ[v]}" for v in _STRIP if v in os.environ)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def environment(peak: bool = True, timing: str | None = None) -> dict:
    """What the run measured on, recorded by every benchmark's result file: CPU name, CPU
    signature (vendor/family/model), ISA, the peak measured in this run, library versions
    (numpy and its BLAS, PyTorch, looptune's git revision), the command line, the timing the
    harness reports (``looptune.measure.harness.run_metadata``), and the OpenBLAS variables
    unset for the run. ``timing`` says which timing the benchmark reports (default: the
    harness, ``looptune.measure.harness.TIMING``; a benchmark of the tuners' own in-C++
    timings passes ``CPP_TIMING``)."""
    from looptune.measure.harness import run_metadata

    meta = run_metadata(peak=peak)
    if timing is not None:
        meta["timing"] = timing
    return {**meta, "blas": _blas(), "unset_env": os.environ.get(_MARK, "")}


def cpp_timing(why: str) -> str:
    """The ``timing`` of a benchmark that reports the in-C++ timing, with the reason."""
    from looptune.measure.harness import CPP_TIMING

    return f"{CPP_TIMING}: {why}"


def _blas() -> dict:
    from looptune.measure.reference import blas_info

    return blas_info()


def host_results() -> Path:
    """``benchmarks/results/<isa>_<cpu tag>/``: results of a benchmark whose figures are kept
    per host (the host's ISA and microarchitecture, ``tiler_policy.signature_tag``)."""
    import looptune
    from looptune.agent.tiler_policy import signature_tag

    path = RESULTS / f"{looptune.host_isa()}_{signature_tag(looptune.cpu_signature())}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(name: str, data: dict, folder: Path = RESULTS) -> Path:
    """Write ``<folder>/<name>.json`` (default ``benchmarks/results``; NaN as null)."""
    from looptune.report.tables import write_json as _write

    return _write(folder / f"{name}.json", data, sort_keys=True)


# (name, cin, hw, cout, r, stride, pad): every distinct ResNet-18 conv at batch 1
RESNET18 = [
    ("stem7x7/2", 3, 224, 64, 7, 2, 3),
    ("3x3@56", 64, 56, 64, 3, 1, 1),
    ("3x3/2@56", 64, 56, 128, 3, 2, 1),
    ("1x1/2@56", 64, 56, 128, 1, 2, 0),
    ("3x3@28", 128, 28, 128, 3, 1, 1),
    ("3x3/2@28", 128, 28, 256, 3, 2, 1),
    ("1x1/2@28", 128, 28, 256, 1, 2, 0),
    ("3x3@14", 256, 14, 256, 3, 1, 1),
    ("3x3/2@14", 256, 14, 512, 3, 2, 1),
    ("1x1/2@14", 256, 14, 512, 1, 2, 0),
    ("3x3@7", 512, 7, 512, 3, 1, 1),
]
