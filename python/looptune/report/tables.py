"""Reporting helpers shared by the CLI, ``looptune.search.evaluate``, ``benchmarks/`` and
``agents/``:
the geometric mean, one table formatter (plain text or Markdown) and JSON that writes NaN as null.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: A column: (key of the row, header, format spec such as ".1f" or a function of the value).
Column = tuple[str, str, "str | Callable[[Any], str]"]


class Geomean(float):
    """A geometric mean that remembers the set it was taken over: ``n`` values in the set,
    ``failed`` of them not positive and finite (None, NaN, inf, zero or negative: a failure,
    counted, never averaged away). Behaves as the float of the geomean of the ``n - failed``
    good values (NaN when none is good); ``str()`` says all of it, e.g.
    ``"97.5 (n=25, 1 failed)"``."""

    n: int
    failed: int

    def __new__(cls, value: float, n: int, failed: int) -> Geomean:
        obj = super().__new__(cls, value)
        obj.n, obj.failed = n, failed
        return obj

    @property
    def ok(self) -> int:
        """Values the geomean is taken over."""
        return self.n - self.failed

    def describe(self, fmt: str = ".1f") -> str:
        """The value with its count, e.g. ``"97.5 (n=25, 1 failed)"`` or ``"97.5 (n=25)"``."""
        value = "-" if math.isnan(self) else format(float(self), fmt)
        return f"{value} (n={self.n}" + (f", {self.failed} failed)" if self.failed else ")")

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"Geomean({float(self)!r}, n={self.n}, failed={self.failed})"

    def __reduce__(self):  # pickles (and deep-copies) with its counts
        return (Geomean, (float(self), self.n, self.failed))


def geomean(values: Iterable[float | None]) -> Geomean:
    """Geometric mean over a fixed set of values: the positive finite ones are averaged, the
    others (None, NaN, inf, zero, negative: failures) are counted in ``.failed``, never
    silently dropped; NaN when no value is good. See :class:`Geomean`."""
    vals = [None if v is None else float(v) for v in values]
    good = [v for v in vals if v is not None and v > 0 and math.isfinite(v)]
    value = statistics.geometric_mean(good) if good else math.nan
    return Geomean(value, len(vals), len(vals) - len(good))


def geomean_fields(g: Geomean, key: str) -> dict:
    """``{key: value, key_n: n, key_failed: failed}`` for a result row or JSON summary."""
    return {key: float(g), f"{key}_n": g.n, f"{key}_failed": g.failed}


def cell(value: Any, fmt: str | Callable[[Any], str] = "") -> str:
    """One cell: ``-`` for a missing or NaN value, else the value formatted by ``fmt``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt(value) if callable(fmt) else format(value, fmt)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    markdown: bool = False,
    align: str | None = None,
) -> str:
    """A table of ``rows`` (dicts): aligned plain text (first column left, the rest right), or
    GitHub Markdown with ``markdown=True`` (``align``: one ``l`` or ``r`` per column for the
    Markdown alignment row; default none)."""
    header = [h for _, h, _ in columns]
    body = [[cell(r.get(k), f) for k, _, f in columns] for r in rows]
    if markdown:
        if align is not None and (len(align) != len(columns) or set(align) - {"l", "r"}):
            raise ValueError(f"align needs one 'l' or 'r' per column, got {align!r}")
        rule = "".join("---:|" if a == "r" else "---|" for a in align or "l" * len(columns))
        lines = ["| " + " | ".join(header) + " |", "|" + rule]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def jsonable(x: Any) -> Any:
    """``x`` with NaN/inf floats as None (JSON has no NaN) and numpy scalars/arrays as Python."""
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy arrays and scalars
        x = x.tolist()
    if isinstance(x, float):  # a Geomean too: its counts go in fields of their own
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def dumps(x: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON of ``x`` (NaN as null)."""
    return json.dumps(jsonable(x), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(path: str | Path, x: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``x`` as strict JSON (NaN as null) to ``path`` atomically, creating its folder."""
    from looptune.util.fileio import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps(x, indent, sort_keys) + "\n")  # readers never see half a file
    return path
