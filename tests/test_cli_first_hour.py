"""A newcomer's first hour with the CLI: help texts that say what a default is, the agent
without torch and its fallback note, the command's own wall time, progress bars only on a
terminal, a warning for a corrupt records file, the leaderboard's --quick and plots, and
`looptune train`'s short summary."""

from __future__ import annotations

import argparse
import io
import json
import warnings
from pathlib import Path

import pytest

import looptune
from looptune.cli import build_parser, main
from looptune.measure.store import CorruptRecordWarning, RecordStore


def _parsers(parser: argparse.ArgumentParser, path: str = "looptune"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_no_help_text_shows_default_none():
    shown = {path: p.format_help() for path, p in _parsers(build_parser())}
    assert len(shown) >= 8
    for path, text in shown.items():
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "(default: False)" not in flat, path
    tune = " ".join(shown["looptune tune matmul"].split())
    assert "search to run (default: the shipped agent" in tune
    assert "greedy2 if its policy cannot be loaded" in tune
    assert "(default: 10.0)" in tune and "(default: unlimited)" in tune


def test_tune_prints_its_wall_time_beside_the_tuning_time(capsys):
    args = ["tune", "matmul", "32", "48", "32", "--search", "base"]
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tuning time"))
    tuning = float(line.split("tuning time: ")[1].split()[0])
    wall = float(line.split("command wall time ")[1].split()[0])
    assert 0 <= tuning < wall
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["wall_seconds"] > report["tuning_seconds"] >= 0


def test_missing_policy_falls_back_with_a_note_naming_looptune_train(capsys, monkeypatch, tmp_path):
    from looptune.agent import policy

    missing = tmp_path / "policy_avx2.safetensors"
    monkeypatch.setattr(policy, "default_policy_path", lambda isa=None: missing)
    assert main(["tune", "matmul", "32", "32", "32", "--measure-budget", "4"]) == 0
    captured = capsys.readouterr()
    assert "search: greedy2" in captured.out
    assert f"train one with `looptune train --save {missing}`" in captured.err
    assert "using greedy2 instead" in captured.err


def test_training_without_the_rl_extra_names_it(capsys, monkeypatch):
    import sys

    for name in ("looptune.agent.train", "looptune.agent.train_callbacks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    blocked = ("stable_baselines3", "sb3_contrib")  # and every submodule already imported
    for name in [m for m in sys.modules if m.split(".")[0] in blocked] + list(blocked):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["train", "--timesteps", "10"]) == 1
    assert "pip install 'looptune[rl]'" in capsys.readouterr().err


def test_progress_bars_are_off_when_stderr_is_not_a_terminal(monkeypatch):
    from looptune.report import progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress.enabled() and progress.bar(10).disable
    monkeypatch.setattr("sys.stderr", Tty())
    assert progress.enabled() and not progress.bar(10).disable
    assert not progress.enabled(quiet=True) and progress.bar(10, quiet=True).disable


def test_leaderboard_progress_bar_is_not_drawn_into_a_file(monkeypatch):
    from looptune.leaderboard import run, suite
    from looptune.leaderboard.entrants import Budget, NumpyEntrant

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    entries = suite.select(["mm_test"], quick=True)[:1]
    doc = run.run_leaderboard(entries, [NumpyEntrant()], Budget(0.1), progress=True,
                              machine={"cpu": "test"})
    assert len(doc["rows"]) == 1 and doc["rows"][0]["status"] == "ok"
    assert err.getvalue() == ""


def test_leaderboard_quick_defaults():
    from looptune.leaderboard.cli import apply_defaults

    parser = build_parser()
    quick = apply_defaults(parser.parse_args(["leaderboard", "--quick"]))
    assert (quick.budget, quick.searches) == (1.0, "base,greedy2,agent")
    full = apply_defaults(parser.parse_args(["leaderboard"]))
    assert (full.budget, full.searches) == (10.0, None)
    given = apply_defaults(parser.parse_args(["leaderboard", "--quick", "--budget", "3",
                                              "--searches", "random"]))
    assert (given.budget, given.searches) == (3.0, "random")


def test_goals_heading_names_what_is_measured():
    from looptune.leaderboard.targets import targets_markdown

    text = targets_markdown([])
    assert "issue 15" not in text
    assert "### Goals: looptune against numpy, PyTorch and MetaSchedule" in text


def _record(tree: looptune.LoopTree) -> dict:
    return {"computation": tree.computation.header(), "schedule": tree.dump(), "gflops": 1.0,
            "outcome": "ok", "hash": f"{tree.hash():016x}"}


def test_a_corrupt_records_line_is_skipped_with_one_warning(tmp_path):
    tree = looptune.matmul(16, 16, 16).default_schedule()
    path = tmp_path / "records.jsonl"
    good = json.dumps(_record(tree))
    path.write_text(f"{good}\n{good[:40]}\n\n{good}\n[1, 2]\n{good}\n")
    with pytest.warns(CorruptRecordWarning, match=r"line 2 and 1 more") as caught:
        records = list(RecordStore(path))
    assert len(records) == 3 and len(caught) == 1
    assert str(path) in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(RecordStore(path))) == 3  # the same file again: no second warning
    clean = tmp_path / "clean.jsonl"
    clean.write_text(f"{good}\n{good}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(RecordStore(clean))) == 2


def test_train_prints_a_summary_not_json():
    pytest.importorskip("stable_baselines3")
    from looptune.agent.train import summary

    meta = {
        "algo": "maskable_ppo", "timesteps": 2048, "wall_seconds": 12.34,
        "steps_per_second": 165.9,
        "final_eval": {"n": 12, "geomean_agent_gflops": 96.5, "geomean_speedup": 2.03,
                       "rows": [{"tree": "for m in 64\n" * 5}] * 12},
        "best_eval": {"geomean_agent_gflops": 97.1, "timesteps": 1024},
    }
    text = summary(meta, Path("runs/x/policy.safetensors"))
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0] == "trained maskable_ppo for 2048 timesteps in 12.3 s (166 steps/s)"
    assert "12 benchmarks" in lines[1] and "96.5 GFLOP/s" in lines[1] and "2.03x" in lines[1]
    assert "97.1 GFLOP/s at 1024 timesteps" in lines[2]
    assert "runs/x/policy.json" in lines[3] and "--verbose" in lines[3]
    parser_help = __import__("looptune.agent.train", fromlist=["parse_args"])
    assert parser_help.parse_args(["--verbose"]).verbose


def test_leaderboard_plot_legends_sit_outside_the_axes(tmp_path):
    pytest.importorskip("matplotlib")
    from looptune.leaderboard import report

    rows = [
        {"benchmark": b, "part": "p", "entrant": e, "kind": k, "status": "ok", "gflops": g,
         "tuning_seconds": t}
        for b in ("mm1", "mm2", "mm3")
        for e, k, g, t in (("numpy", "reference", 90.0, 0.0), ("base", "looptune", 50.0, 0.01),
                           ("greedy2", "looptune", 100.0, 1.0),
                           ("beam4bfs", "looptune", 100.5, 1.05))
    ]
    doc = {"rows": rows, "suite_version": "t", "machine": {"cpu": "cpu", "peak_gflops": 120.0}}
    import matplotlib.pyplot as plt

    made = []
    from looptune.report import plots

    original = plots._save

    def keep(fig, path):
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        made.append((legend.get_window_extent().x0, ax.get_window_extent().x1,
                     [t.get_text() for t in legend.get_texts()], len(ax.texts)))
        return original(fig, path)

    plots._save = keep
    try:
        paths = report.plot(doc, tmp_path)
    finally:
        plots._save = original
        plt.close("all")
    assert [p.name for p in paths] == ["leaderboard_gflops.png", "leaderboard_time.png"]
    for legend_x0, axes_x1, labels, texts in made:
        assert legend_x0 >= axes_x1  # the legend starts right of the plotting area
        assert texts == 0  # no free text on the axes to collide
    assert made[0][2] == ["numpy", "base", "greedy2", "beam4bfs"]
    assert any(label.startswith("greedy2 (3): ") for label in made[1][2])
