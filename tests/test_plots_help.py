"""PNG plots of evaluation results, and the CLI's help texts."""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import pytest

from looptune.cli import build_parser

pytest.importorskip("matplotlib")
from looptune.report.plots import plot_eval  # noqa: E402

ROWS = [
    {"benchmark": b, "search": s, "gflops": g, "seconds": t}
    for b in ("mm64_64_64", "mm128_64_32")
    for s, g, t in (("numpy", 80.0, None), ("base", 40.0, 0.002), ("greedy1", 70.0, 0.3))
]
SUMMARY = [
    {"search": "numpy", "geomean_gflops": 80.0, "mean_seconds": None},
    {"search": "base", "geomean_gflops": 40.0, "mean_seconds": 0.002},
    {"search": "greedy1", "geomean_gflops": 70.0, "mean_seconds": 0.3},
    {"search": "best", "geomean_gflops": 71.0, "mean_seconds": float("nan")},
]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_plot_eval_writes_two_pngs(tmp_path: Path) -> None:
    paths = plot_eval(ROWS, SUMMARY, tmp_path / "plots", prefix="run_")
    assert [p.name for p in paths] == ["run_gflops_per_benchmark.png", "run_quality_vs_time.png"]
    width, height = _png_size(paths[1])
    assert 6.4 * 110 <= width <= 9.5 * 110 and 4 * 110 <= height <= 4.6 * 110  # legend outside
    assert _png_size(paths[0])[0] >= 5 * 110  # cropped to its content (bbox_inches="tight")


def _actions(parser: argparse.ArgumentParser, path: str = "looptune"):
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")


def test_every_argument_has_help_and_defaults_are_shown() -> None:
    missing = [
        f"{path}: {a.dest}" for path, a in _actions(build_parser()) if not (a.help or "").strip()
    ]
    assert missing == []
    text = build_parser()._subparsers._group_actions[0].choices["eval"].format_help()
    assert "(default: 60.0)" in text and "(default: mm64_256_16)" in text


def test_eval_plot_writes_pngs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from looptune.cli import main

    argv = ["eval", "--searches", "base,greedy1", "--limit", "2", "--time-budget", "0.2"]
    assert main([*argv, "--measure-budget", "5", "--plot", str(tmp_path), "-q"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["gflops_per_benchmark.png", "quality_vs_time.png"]
    assert f"wrote {tmp_path / 'quality_vs_time.png'}" in capsys.readouterr().err


def test_eval_plot_without_matplotlib_fails_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from looptune.cli import main
    from looptune.search import evaluate

    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    monkeypatch.setattr(evaluate, "run_eval", lambda *a, **k: pytest.fail("ran the searches"))
    assert main(["eval", "--searches", "base", "--limit", "1", "--plot", str(tmp_path)]) == 1
    assert "plots need matplotlib: pip install 'looptune[bench]'" in capsys.readouterr().err
