"""The `looptune` command line, run in-process (plus one run of the console script)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import looptune
from looptune.cli import main
from looptune.report.tables import geomean

QUICK = ["--search", "greedy1", "--measure-budget", "12"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tune_matmul_prints_every_section(capsys):
    code, out, err = run(capsys, "tune", "matmul", "64", "80", "48", *QUICK)
    assert code == 0, err
    for section in (
        "computation: matmul m=64 k=80 n=48",
        "search: greedy1",
        "base schedule:",
        "tuned schedule:",
        "correctness: tuned kernel matches numpy",
        "GFLOP/s: base",
        "numpy (1 thread)",
        "speedup over base:",
        "tuning time:",
    ):
        assert section in out
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "op",
    [
        ["conv2d", "1", "4", "9", "9", "8", "3", "3", "--pad", "1", "--stride", "2"],
        ["bmm", "2", "16", "24", "32"],
        ["einsum", "bik,kj->bij", "b=2", "i=8", "k=16", "j=24"],
    ],
)
def test_tune_other_ops_json(capsys, op):
    code, out, err = run(capsys, "tune", *op, *QUICK, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["check"]["ok"] is True
    assert report["tuned"]["gflops"] > 0 and report["numpy_gflops"] > 0
    # never a slowdown: the tuned figure is at least the base's (else the base is kept)
    assert report["speedup"] >= 1.0 and report["tuned"]["gflops"] >= report["base"]["gflops"]
    if report["kept_base"]:
        assert report["tuned"]["schedule"] == report["base"]["schedule"]
    tuned = looptune.LoopTree.parse(report["tuned"]["schedule"])
    assert tuned.computation.header() == report["computation"]


@pytest.mark.parametrize(
    "layout, block",
    [("plain", 0), ("blocked8", 8), ("blocked", looptune._core.isa_facts()["lanes"])],
)
def test_tune_layout_option_reaches_the_computation(capsys, layout, block):
    argv = ["conv2d", "1", "3", "11", "9", "20", "3", "3", "--pad", "2", "--layout", layout]
    code, out, err = run(capsys, "tune", *argv, *QUICK, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["check"]["ok"] is True
    comp = looptune.LoopTree.parse(report["tuned"]["schedule"]).computation
    assert comp.block == block
    assert comp.header() == report["computation"]


def test_save_then_show_round_trips(capsys, tmp_path):
    path = tmp_path / "mm.lt"
    code, out, err = run(
        capsys, "tune", "matmul", "64", "64", "64", *QUICK, "--json", "--save", str(path)
    )
    assert code == 0, err
    tuned = json.loads(out)["tuned"]["schedule"]
    assert looptune.LoopTree.parse(path.read_text()) == looptune.LoopTree.parse(tuned)
    code, out, err = run(capsys, "show", str(path), "--benchmark")
    assert code == 0, err
    assert "computation: matmul m=64 k=64 n=64" in out
    assert tuned.rstrip() in out
    assert "matches numpy" in out and "GFLOP/s:" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tune", "matmul", "0", "64", "64"], "positive integer"),
        (["tune", "matmul", "64", "64"], "required"),
        (["tune", "matmul", "64", "64", "x"], "positive integer"),
        (["tune", "matmul", "8", "8", "8", "--search", "annealing"], "invalid choice"),
        (["tune", "matmul", "8", "8", "8", "--time-budget", "-1"], ">= 0"),
        (["tune", "conv2d", "1", "4", "8", "8", "4", "3", "3", "--pad", "-1"], "pad"),
        (["tune", "conv2d", "1", "4", "2", "2", "4", "3", "3"], "error"),
        (["tune", "einsum", "mk,kn->mn", "m=8", "k=8"], "error"),
        (["tune", "einsum", "mk,kn->mn", "m8"], "NAME=SIZE"),
        (["tune", "frobnicate", "3"], "invalid choice"),
        (["tune", "matmul", "8", "8", "8", "--layout", "diagonal"], "layout must be"),
        (["tune", "conv2d", "1", "4", "8", "8", "4", "3", "3", "--layout", "blocked0"], "layout"),
        (["show", "/nonexistent/schedule.lt"], "No such file"),
        (["eval", "--searches", "base,annealing", "--limit", "1"], "unknown search"),
        (["eval", "--dataset", "imagenet", "--limit", "1"], "imagenet"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_show_rejects_a_file_that_is_not_a_schedule(capsys, tmp_path):
    path = tmp_path / "junk.lt"
    path.write_text("for i in 3\n")
    code, _, err = run(capsys, "show", str(path))
    assert code == 2 and "not a looptune schedule" in err


def test_eval_writes_json_and_csv(capsys, tmp_path):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    code, out, err = run(
        capsys,
        "eval",
        "--limit",
        "2",
        "--searches",
        "base,greedy1",
        "--measure-budget",
        "8",
        "--no-progress",
        "--out",
        str(out_json),
        "--csv",
        str(out_csv),
    )
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    by_search = {s["search"]: s for s in doc["summary"]}
    assert set(by_search) == {"numpy", "base", "greedy1", "best"}
    # the base search reports the default schedule of each benchmark, untouched
    for r in doc["rows"]:
        if r["search"] == "base":
            comp = looptune.LoopTree.parse(r["schedule"]).computation
            assert r["schedule"] == comp.default_schedule().dump()
    assert by_search["greedy1"]["benchmarks"] == 2 and len(doc["rows"]) == 6
    assert all(r["ok"] for r in doc["rows"])  # every reported schedule was checked
    # "best" is, per benchmark, the fastest row of any search (recomputed from the rows)
    fastest: dict = {}
    for r in doc["rows"]:
        if r["search"] != "numpy":
            fastest[r["benchmark"]] = max(fastest.get(r["benchmark"], 0.0), r["gflops"])
    assert by_search["best"]["geomean_gflops"] == pytest.approx(geomean(fastest.values()))
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["search"] for r in rows] == ["numpy", "base", "greedy1", "best"]
    assert "geomean GF/s" in out


@pytest.mark.parametrize("slower", [True, False])
def test_tune_keeps_the_base_when_the_tuned_schedule_is_slower_on_re_timing(
    capsys, monkeypatch, slower
):
    """kept_base: the re-timed figures decide. The search is replaced by one that returns
    another schedule than the base, the harness by a fake that times the base at 50 GFLOP/s
    and anything else at 40 (slower) or 60 (faster)."""
    from types import SimpleNamespace

    from looptune.cli import commands
    from looptune.measure import harness

    comp = looptune.matmul(64, 64, 64)
    base_hash = comp.default_schedule().hash()
    other = comp.default_schedule().toggle_unroll()
    assert other.hash() != base_hash
    real = harness.time_kernel

    def search(tree, measurer, **kwargs):
        return SimpleNamespace(best_tree=other, seconds=0.0, measurements=0)

    monkeypatch.setattr(commands, "resolve_search", lambda name: ("fake", search))

    def fake(tree, *args, **kwargs):
        t = real(tree, *args, **{**kwargs, "min_time": 0.0, "min_runs": 1})
        g = 50.0 if tree.hash() == base_hash else (40.0 if slower else 60.0)
        return type(t)(**{**t.as_dict(), "gflops": g})

    monkeypatch.setattr(commands.harness, "time_kernel", fake)
    code, out, err = run(capsys, "tune", "matmul", "64", "64", "64", *QUICK, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert looptune.LoopTree.parse(report["base"]["schedule"]).hash() == base_hash
    assert report["kept_base"] is slower
    if slower:
        assert report["tuned"] == report["base"] and report["speedup"] == 1.0
    else:
        assert report["tuned"]["schedule"] == other.dump()
        assert report["tuned"]["gflops"] == 60.0


def test_tune_compare_torch_puts_pytorch_beside_numpy(capsys):
    pytest.importorskip("torch")
    argv = ["conv2d", "1", "4", "9", "9", "8", "3", "3", "--pad", "1", *QUICK]
    code, out, err = run(capsys, "tune", *argv, "--compare", "numpy,torch")
    assert code == 0, err
    assert "numpy (1 thread)" in out and "PyTorch (1 thread)" in out and "tuned / torch" in out
    assert "im2col GEMM" in out  # numpy's conv figure is said to be a GEMM
    code, out, err = run(capsys, "tune", *argv, "--compare", "torch", "--json")
    report = json.loads(out)
    assert set(report["references"]) == {"torch"} and report["numpy_gflops"] is None
    assert report["references"]["torch"]["gflops"] > 0


def test_default_search_falls_back_when_the_agent_is_unavailable(capsys, monkeypatch):
    from looptune import search

    def unavailable() -> None:
        raise search.SearchUnavailableError("the trained agent is unavailable: no policy")

    monkeypatch.setattr(search, "_agent", unavailable)
    code, out, err = run(capsys, "tune", "matmul", "32", "32", "32", "--measure-budget", "6")
    assert code == 0, err
    assert "no policy; using greedy2 instead" in err and "search: greedy2" in out
    code, _, err = run(capsys, "tune", "matmul", "32", "32", "32", "--search", "agent")
    assert code == 1 and "unavailable" in err


def test_eval_names_the_unavailable_agent(capsys, monkeypatch):
    from looptune import search

    def unavailable() -> None:
        raise search.SearchUnavailableError("the trained agent is unavailable: no policy")

    monkeypatch.setattr(search, "_agent", unavailable)
    code, _, err = run(capsys, "eval", "--limit", "1", "--searches", "base,agent")
    assert code == 1 and "--skip-unavailable" in err


def test_train_wraps_the_training_script(capfd):
    code = main(["train", "--help"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "--algo" in out


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and looptune.__version__ in out


def separate_process_commands() -> list:
    """How a user starts the command line, found from the running interpreter (not PATH, which
    `make test` leaves alone): the environment's `looptune` console script when it belongs to
    this interpreter's environment, and always `python -m looptune`. A script whose first lines
    name another environment's python (a copied virtualenv) would run another checkout's code,
    so it is left out rather than trusted."""
    commands = []
    bin_dir = Path(sys.executable).parent
    script = bin_dir / "looptune"
    if script.is_file():
        head = script.read_text(errors="replace").splitlines()[:2]  # '#!python' or sh + exec
        if any(f"{bin_dir}/python" in line for line in head):
            commands.append(pytest.param([str(script)], id="console-script"))
    commands.append(pytest.param([sys.executable, "-m", "looptune"], id="python-m"))
    return commands


@pytest.mark.parametrize("command", separate_process_commands())
def test_console_script(command):
    ok = subprocess.run(
        [*command, "tune", "matmul", "32", "32", "32", *QUICK],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "tuned schedule:" in ok.stdout
    bad = subprocess.run(
        [*command, "tune", "matmul", "-5", "3", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_tune_records_are_reused_and_extended(capsys, tmp_path):
    from looptune.measure import RecordStore, best_tree

    path = tmp_path / "tuning.jsonl"
    args = ["tune", "matmul", "48", "64", "32", "--search", "greedy1", "--measure-budget", "400"]
    code, out, err = run(capsys, *args, "--records", str(path), "--json")
    assert code == 0, err
    first, first_out = list(RecordStore(path)), out
    comp = looptune.matmul(48, 64, 32)
    assert first and all(r["computation"] == comp.header() for r in first)
    assert {r["outcome"] for r in first} == {"ok"}
    code, out, err = run(capsys, *args, "--records", str(path), "--json")
    assert code == 0, err
    second = json.loads(out)
    # greedy1 ran to convergence: the same walk again costs nothing and appends nothing
    assert json.loads(first_out)["measurements"] == len(first) < 400
    assert second["measurements"] == 0 and len(list(RecordStore(path))) == len(first)
    assert best_tree(comp, path).dump() == RecordStore(path).best(comp)["schedule"]
