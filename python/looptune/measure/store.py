"""Tuning records (JSON Lines) and the bounded in-memory cache of measurements.

One record per line::

    {"computation": "<header>", "name": "mm64_64_64", "schedule": "<dump>", "hash": "0123...",
     "outcome": "ok", "gflops": 91.2, "median_gflops": 88.0, "runs": 40, "facts": {...},
     "error": "", "cpu": "<brand string>", "cpu_signature": "GenuineIntel family 6 model 85",
     "isa": "avx512", "min_time": 0.002, "min_runs": 3, "max_runs": 200, "threads": 1,
     "looptune": "0.1.0", "time": 1763895600.0}

Records are keyed by ``cpu_signature`` (vendor, family and model from CPUID: the
microarchitecture) and ``isa``; the brand string ``cpu`` is kept for people. A record written
before ``cpu_signature`` existed is nobody's (a brand string such as "AMD EPYC" names Zen 1 and
Zen 4 alike): :func:`migrate` tags such a file with the signature of the CPU that measured it.
``threads`` is the thread count of the timing (absent in records written before threads
existed: 1).

Appends are one ``write`` of one line on a file opened with ``O_APPEND`` under an exclusive
``fcntl`` lock, so two processes appending to the same file never interleave lines. Reading
skips a torn or malformed line instead of failing, with one ``CorruptRecordWarning`` naming
its line number.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from looptune import _core
from looptune.measure.result import MeasureResult, Outcome


def _version() -> str:
    import looptune

    return getattr(looptune, "__version__", "unknown")


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    return x


def host_cpu() -> tuple[str, str]:
    """``(cpu_signature, brand string)`` of this CPU."""
    return _core.cpu_signature(), _core.cpu_name()


def same_cpu(rec: dict, signature: str, brand: str = "") -> bool:
    """True when ``rec`` was measured on a CPU with ``signature``. A record without one (written
    before signatures existed) never matches: its brand string does not name a
    microarchitecture (see :func:`migrate`). ``brand`` is unused, kept for callers."""
    del brand
    return rec.get("cpu_signature") == signature


def migrate(path: str | os.PathLike, signature: str) -> int:
    """Tag every record of ``path`` that has no ``cpu_signature`` with ``signature`` (the CPUID
    signature of the CPU that measured them, e.g. ``"AuthenticAMD family 25 model 17"``), in
    place and atomically. Returns how many records were tagged; malformed lines are kept."""
    from looptune.util.fileio import atomic_write_text

    if not isinstance(signature, str) or " family " not in signature:
        raise ValueError(f"expected a CPU signature like 'AuthenticAMD family 25 model 17', "
                         f"got {signature!r}")
    lines, n = [], 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                lines.append(line.rstrip("\n"))
                continue
            if isinstance(rec, dict) and "cpu_signature" not in rec:
                rec["cpu_signature"], n = signature, n + 1
            lines.append(json.dumps(rec))
    atomic_write_text(path, "".join(x + "\n" for x in lines))
    return n


def make_record(
    tree: _core.LoopTree,
    result: MeasureResult,
    cpu: str,
    isa: str,
    budget: Any,
    signature: str | None = None,
) -> dict:
    """The record of one measurement (see the module doc for the fields); ``cpu`` is the
    brand string, ``signature`` the CPUID signature (default this host's)."""
    comp = tree.computation
    return _clean(
        {
            "computation": comp.header(),
            "name": comp.name,
            "schedule": tree.dump(),
            "hash": f"{tree.hash():016x}",
            "outcome": result.outcome.value,
            "gflops": result.gflops,
            "median_gflops": result.median_gflops,
            "runs": result.runs,
            "facts": result.facts,
            "error": result.error,
            "cpu": cpu,
            "cpu_signature": _core.cpu_signature() if signature is None else signature,
            "isa": isa,
            "min_time": budget.min_time,
            "min_runs": budget.min_runs,
            "max_runs": budget.max_runs,
            "threads": getattr(budget, "threads", 1),
            "looptune": _version(),
            "time": time.time(),
        }
    )


def record_result(rec: dict) -> MeasureResult:
    """The MeasureResult a record stands for (``UNKNOWN`` for an outcome this version lacks)."""
    outcome = Outcome.parse(rec.get("outcome"))
    return MeasureResult(
        outcome,
        float(rec.get("gflops") or 0.0),
        float(rec.get("median_gflops") or 0.0),
        int(rec.get("runs") or 0),
        facts=dict(rec.get("facts") or {}),
        error=str(rec.get("error") or ""),
    )


class CorruptRecordWarning(UserWarning):
    """A records file has lines that are not records (they are skipped)."""


_WARNED: set[tuple[str, int, int]] = set()


def _warn_skipped(path: Path, lines: list[int]) -> None:
    """Warn once per file and set of bad lines (reading the file again does not repeat it)."""
    key = (str(path.resolve()), lines[0], len(lines))
    if key in _WARNED:
        return
    _WARNED.add(key)
    more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
    warnings.warn(
        f"{path}: skipped line {lines[0]}{more}: not a JSON tuning record (a torn write or "
        f"an edit?); the other records are used",
        CorruptRecordWarning,
        stacklevel=3,
    )


class RecordStore:
    """An append-only JSON Lines file of measurements, safe for concurrent appenders."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RecordStore({str(self.path)!r})"

    def append(self, record: dict) -> None:
        self.extend([record])

    def extend(self, records: list[dict]) -> None:
        """Append records atomically: one locked ``O_APPEND`` write for the whole batch."""
        if not records:
            return
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)  # closing releases the lock

    def __iter__(self) -> Iterator[dict]:
        if not self.path.is_file():
            return
        bad: list[int] = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if line.strip():
                        bad.append(number)  # e.g. a torn last line from a killed writer
                    continue
                if isinstance(rec, dict) and "schedule" in rec and "computation" in rec:
                    yield rec
                else:
                    bad.append(number)
        if bad:
            _warn_skipped(self.path, bad)

    def best(
        self, computation: _core.Computation, cpu: str | None = None, isa: str | None = None
    ) -> dict | None:
        """The fastest OK record of ``computation`` on ``cpu`` / ``isa`` (default: this host's
        CPU and best ISA), or None. ``cpu`` is a CPU signature (``_core.cpu_signature()``) or,
        for old records, a brand string."""
        header = computation.header()
        sig, brand = host_cpu()
        if cpu is not None:
            sig = brand = cpu
        isa = _core.host_isa() if isa is None else isa
        best = None
        for rec in self:
            if (
                rec.get("computation") == header
                and rec.get("outcome") == Outcome.OK.value
                and same_cpu(rec, sig, brand)
                and rec.get("isa") == isa
                and (best is None or (rec.get("gflops") or 0) > (best.get("gflops") or 0))
            ):
                best = rec
        return best


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class LRUCache:
    """A bounded least-recently-used map (``maxsize`` entries)."""

    def __init__(self, maxsize: int = 16384) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable) -> Any:
        value = self._data.get(key)
        if value is None:
            self.stats.misses += 1
            return None
        self._data.move_to_end(key)
        self.stats.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
            self.stats.evictions += 1

    def clear(self) -> None:
        self._data.clear()


__all__ = [
    "CacheStats",
    "CorruptRecordWarning",
    "LRUCache",
    "RecordStore",
    "host_cpu",
    "make_record",
    "migrate",
    "record_result",
    "same_cpu",
]
