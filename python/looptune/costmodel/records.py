"""Tuning records on disk (JSON lines) and pre-training rows built from them.

One record per line: ``{"computation": header, "isa": ..., "config": {knob: value},
"outcome": "OK" | "NOT_INSTANTIABLE" | ..., "gflops": ...}`` (the outcome is the name of a
:class:`looptune.measure.Outcome`; reading accepts its value, "ok", too). Knob values (not
indices) are stored, so records of one computation pre-train the models of another of the
same kind: features are computed in the record's own space, and they are sizes and ratios,
comparable across shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from looptune._core import parse_computation
from looptune.costmodel.configspace import ConfigSpace
from looptune.costmodel.features import hidden, visible
from looptune.measure.build import build
from looptune.measure.result import Outcome


@dataclass(frozen=True)
class Record:
    computation: str  # Computation.header()
    isa: str
    config: dict
    outcome: Outcome
    gflops: float

    def to_json(self) -> dict:
        """The record's line: the outcome by name ("OK", "COMPILE_REJECTED", ...), as ever."""
        return {**self.__dict__, "outcome": Outcome.parse(self.outcome).name}


def records_from(space: ConfigSpace, result: object) -> list[Record]:
    """Records of every trial of a :class:`TuneResult` on ``space``."""
    header = space.comp.header()
    return [
        Record(header, space.isa, space.values(t.point), t.outcome, float(t.gflops))
        for t in result.trials
    ]


def save_records(path: str | Path, records: list[Record]) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), sort_keys=True) + "\n")


def load_records(path: str | Path) -> list[Record]:
    """Every record in a JSONL file (ValueError naming the line if one is malformed)."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append(
                    Record(d["computation"], d["isa"], dict(d["config"]),
                           Outcome.parse(d["outcome"]), float(d["gflops"]))
                )
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a tuning record ({exc})") from exc
    return out


def point_of(space: ConfigSpace, config: dict) -> tuple[int, ...]:
    """The point of ``space`` with the knob values ``config`` (ValueError if one is absent)."""
    config = {"layout": space.knobs[-1].values[0], **config}  # records from before the knob
    try:
        return tuple(k.values.index(config[k.name]) for k in space.knobs)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"config {config} is not a point of this space") from exc


def pretrain_rows(
    records: list[Record], kind: str | None = None
) -> list[tuple[np.ndarray, np.ndarray | None, str, float]]:
    """``(visible, hidden, outcome, gflops)`` rows for :class:`Tuner`'s ``pretrain`` from the
    records of computations of ``kind`` (all kinds if None); hidden features are recomputed by
    compiling the record's tree (None for invalid configurations)."""
    spaces: dict[tuple[str, str], ConfigSpace] = {}
    rows = []
    for r in records:
        comp = parse_computation(r.computation)
        if kind is not None and comp.kind != kind:
            continue
        space = spaces.setdefault((r.computation, r.isa), ConfigSpace(comp, r.isa))
        point = point_of(space, r.config)
        hid = None
        outcome = Outcome.parse(r.outcome)
        if outcome is Outcome.OK:
            tree, _ = space.try_instantiate(point)
            built = build(tree, r.isa) if tree is not None else None
            hid = hidden(built.facts, r.isa, tree) if built is not None and built.ok else None
        rows.append((visible(space, point), hid, outcome, r.gflops))
    return rows
