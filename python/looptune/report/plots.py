"""PNG plots of evaluation results (matplotlib, Agg backend; the ``bench`` extra).

- ``gflops_per_benchmark``: grouped bars, GFLOP/s of every search on every benchmark.
- ``quality_vs_time``: each search's geomean GFLOP/s against its mean tuning time (log axes),
  numpy and the best any search found as horizontal lines.

``plot_eval(rows, summary, folder)`` writes both from the rows and summary of
``looptune.search.evaluate``
(the JSON of ``looptune eval --out`` and ``benchmarks/paper_table.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REFERENCE_ROWS = ("numpy", "best")  # summary rows without a tuning time


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; a clear ``ModuleNotFoundError`` without it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ModuleNotFoundError(
            "plots need matplotlib: pip install 'looptune[bench]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def gflops_per_benchmark(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str = "GFLOP/s per benchmark",
    series: str = "search",
    width: float | None = None,
) -> Path:
    """Grouped bars: one group per benchmark, one bar per ``series`` value (a search, or a
    leaderboard entrant; first-seen order). The legend sits outside the axes, right of them, so
    it never covers a bar. ``width``: figure width in inches (default from the bar count)."""
    plt = _pyplot()
    benches = list(dict.fromkeys(r["benchmark"] for r in rows))
    names = list(dict.fromkeys(r[series] for r in rows))
    value = {(r["benchmark"], r[series]): r["gflops"] for r in rows}
    bar = 0.8 / max(len(names), 1)
    if width is None:
        width = min(14.0, max(6.0, 0.05 * len(benches) * len(names)))
    fig, ax = plt.subplots(figsize=(width, 4.8))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for j, name in enumerate(names):
        xs = [i + (j - (len(names) - 1) / 2) * bar for i in range(len(benches))]
        ys = [value.get((b, name)) or 0.0 for b in benches]
        ys = [y if _finite(y) else 0.0 for y in ys]
        ax.bar(xs, ys, bar, label=name, color=cmap(j % 20))
    ax.set_xticks(range(len(benches)), benches, rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(benches) - 0.4)
    ax.set_ylabel("GFLOP/s (float32, one core)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


MARKERS = "osD^vP*Xh<>pd"


def labelled_points(ax: Any, points: Sequence[tuple[str, float, float]]) -> None:
    """``(label, x, y)`` points, each with its own colour and marker, named in a legend outside
    the axes (right of them) instead of text beside the point: labels never overlap, however
    close the points are."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(points) <= 10 else "tab20")
    for i, (label, x, y) in enumerate(points):
        ax.scatter([x], [y], color=cmap(i % 20), marker=MARKERS[i % len(MARKERS)], s=45,
                   zorder=3, label=label, edgecolors="black", linewidths=0.4)


def outside_legend(ax: Any) -> None:
    """The axes' legend right of them (``_save`` keeps it inside the PNG)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def quality_vs_time(
    summary: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str = "Tuning quality against tuning time",
) -> Path:
    """One point per search: geomean GFLOP/s against mean tuning seconds, both axes log; the
    searches are named in the legend (no text on the plot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    timed = [s for s in summary if s["search"] not in REFERENCE_ROWS]
    timed = [s for s in timed if _finite(s["mean_seconds"]) and _finite(s["geomean_gflops"])]
    labelled_points(ax, [(s["search"], s["mean_seconds"], s["geomean_gflops"]) for s in timed])
    styles = {"numpy": ("tab:red", "--"), "best": ("tab:green", ":")}
    for s in summary:
        if s["search"] in styles and _finite(s["geomean_gflops"]):
            color, dash = styles[s["search"]]
            label = "numpy (1 thread)" if s["search"] == "numpy" else "best of all searches"
            ax.axhline(s["geomean_gflops"], color=color, linestyle=dash, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    for axis in (ax.yaxis,):  # plain numbers on the (narrow) GFLOP/s range, not 9x10^1
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("mean tuning time per benchmark (s)")
    ax.set_ylabel("geomean GFLOP/s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    outside_legend(ax)
    return _save(fig, path)


def plot_eval(
    rows: Sequence[Mapping[str, Any]],
    summary: Sequence[Mapping[str, Any]],
    folder: str | Path,
    prefix: str = "",
) -> list[Path]:
    """Write ``<prefix>gflops_per_benchmark.png`` and ``<prefix>quality_vs_time.png``."""
    folder = Path(folder)
    return [
        gflops_per_benchmark(rows, folder / f"{prefix}gflops_per_benchmark.png"),
        quality_vs_time(summary, folder / f"{prefix}quality_vs_time.png"),
    ]


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps a legend outside the axes
    _pyplot().close(fig)
    return path
