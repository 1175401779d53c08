"""The shared reporting helpers: geomean, the table formatter, NaN-free JSON."""

from __future__ import annotations

import json
import math

import numpy as np

from looptune.report.tables import dumps, format_table, geomean, jsonable

COLS = [("name", "name", ""), ("g", "GFLOP/s", ".1f"), ("x", "speedup", lambda v: f"{v:.2f}x")]
ROWS = [{"name": "mm64", "g": 97.123, "x": 1.5}, {"name": "conv1", "g": math.nan}]


def test_geomean_counts_failures_instead_of_dropping_them() -> None:
    g = geomean([2.0, 8.0, 0.0, math.nan, -1.0, None])
    assert math.isclose(g, 4.0)  # over the good values
    assert (g.n, g.failed, g.ok) == (6, 4, 2)  # the failures are counted, not averaged away
    assert str(g) == "4.0 (n=6, 4 failed)"
    assert geomean([3.0, 3.0]).describe(".2f") == "3.00 (n=2)"
    empty = geomean([])
    assert math.isnan(empty) and (empty.n, empty.failed) == (0, 0)
    assert str(geomean([0.0])) == "- (n=1, 1 failed)"
    assert json.loads(dumps({"g": g})) == {"g": 4.0}
    assert math.isclose(geomean(iter([1.0, 10.0, 100.0])), 10.0)


def test_plain_table_is_aligned() -> None:
    assert format_table(ROWS, COLS).splitlines() == [
        "name   GFLOP/s  speedup",
        "-----  -------  -------",
        "mm64      97.1    1.50x",
        "conv1        -        -",
    ]


def test_markdown_table() -> None:
    assert format_table(ROWS, COLS, markdown=True).splitlines() == [
        "| name | GFLOP/s | speedup |",
        "|---|---|---|",
        "| mm64 | 97.1 | 1.50x |",
        "| conv1 | - | - |",
    ]


def test_json_writes_nan_as_null_and_numpy_as_python() -> None:
    doc = {"a": [1.0, math.nan, math.inf], "b": np.float32(2.5), "c": np.arange(2), "d": "x"}
    assert jsonable(doc) == {"a": [1.0, None, None], "b": 2.5, "c": [0, 1], "d": "x"}
    assert json.loads(dumps(doc)) == {"a": [1.0, None, None], "b": 2.5, "c": [0, 1], "d": "x"}
