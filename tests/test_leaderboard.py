"""The leaderboard: suite, plug-ins, failure rows, JSON, tables, merge, validation, TVM records.

Fake entrants and a tiny suite keep these fast and deterministic; nothing here asserts a timing.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import pytest

import looptune
from looptune.cli import main
from looptune.leaderboard import replay, report, run, suite, tvm_entrant
from looptune.leaderboard.entrants import (
    Budget,
    Entrant,
    PluginEntrant,
    PluginError,
    load_plugin,
    make_row,
)

TINY = [
    suite.Entry("mm_test", "matmul", (16, 24, 32), "tiny"),
    suite.Entry("conv", "conv2d", (1, 3, 9, 9, 8, 3, 3, 2, 1), "tiny conv"),
]


class Fixed(Entrant):
    """Reports a fixed GFLOP/s per benchmark name (or fails where the figure is None)."""

    def __init__(self, name: str, kind: str, figures: dict[str, float | None]) -> None:
        self.name, self.kind, self.figures = name, kind, figures

    def run(self, entry: suite.Entry, budget: Budget) -> list[dict]:
        g = self.figures[entry.name]
        if g is None:
            raise RuntimeError("boom")
        return [make_row(entry, self.name, self.kind, gflops=g, tuning_seconds=budget.seconds)]


def fake_doc(figures: dict[str, dict[str, float | None]], peak: float = 100.0) -> dict:
    names = [e.name for e in TINY]
    entrants = [
        Fixed(n, "looptune" if n.startswith("lt") else n, dict(zip(names, f)))
        for n, f in figures.items()
    ]
    machine = {"cpu": "fake", "isa": "avx2", "peak_gflops": peak}
    return run.run_leaderboard(TINY, entrants, Budget(1.0), progress=False, machine=machine)


FIGS = {"numpy": (10.0, 40.0), "pytorch": (20.0, 20.0), "lt1": (20.0, 10.0), "lt2": (5.0, None)}


# --- the suite ---------------------------------------------------------------------------------


def test_suite_is_versioned_and_selectable():
    all_entries = suite.select()
    assert suite.VERSION.startswith("lb-")
    assert {e.part for e in all_entries} == set(suite.PARTS)
    assert len({e.name for e in all_entries}) == len(all_entries)
    conv = suite.select(["conv"])
    assert conv and all(e.part == "conv" for e in conv)
    quick = suite.select(quick=True)
    assert 0 < len(quick) < len(all_entries) and all(e.quick for e in quick)
    assert {e.part for e in quick} == set(suite.PARTS)
    e = conv[0]
    assert e.to_dict()["flops"] == e.computation().flops == e.flops
    assert e.to_dict()["header"] == e.computation().header()
    with pytest.raises(ValueError, match="unknown suite part 'gemm'"):
        suite.select(["gemm"])


def test_suite_mm_test_part_comes_from_the_test_split():
    from looptune import datasets

    test = {b.name for b in datasets.get("mm64_256_16", split="test")}
    names = [e.name for e in suite.select(["mm_test"])]
    assert names and set(names) <= test


# --- plug-ins ----------------------------------------------------------------------------------

PLUGIN = """
import looptune

def tune(computation, budget):
    # split the first loop below the outermost with 8 iterations or more by 8: a matmul's k,
    # a conv's k, or ki of a conv blocked by 8 lanes (ko is then a single block)
    tree = computation.default_schedule().down()
    while tree.loops[tree.cursor].size < 8:
        tree = tree.down()
    return tree.split(8)

class Tuner:
    name = "my-class-tuner"
    def tune(self, computation, budget):
        return computation.default_schedule()

def bad_type(computation, budget):
    return "not a tree"

def other_comp(computation, budget):
    return looptune.matmul(8, 8, 8).default_schedule()

def raises(computation, budget):
    raise ZeroDivisionError("plugin bug")

NOT_CALLABLE = 3
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "lb_plugin_mod.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lb_plugin_mod"
    sys.modules.pop("lb_plugin_mod", None)


def test_plugin_function_runs_and_is_checked(plugin):
    entrant = PluginEntrant(f"{plugin}:tune")
    assert entrant.name == f"{plugin}:tune"
    (row,) = entrant.run(TINY[0], Budget(1.0))
    want = TINY[0].computation().default_schedule().down().split(8)
    assert row["status"] == "ok" and row["kind"] == "plugin"
    assert row["schedule"] == want.dump()
    assert row["header"] == "matmul m=16 k=24 n=32"
    assert row["gflops"] > 0 and row["max_abs_error"] <= row["tolerance"]


def test_plugin_class_is_instantiated_and_named(plugin):
    entrant = PluginEntrant(f"{plugin}:Tuner")
    assert entrant.name == "my-class-tuner"
    (row,) = entrant.run(TINY[1], Budget(1.0))
    assert row["schedule"] == TINY[1].computation().default_schedule().dump()


@pytest.mark.parametrize(
    "attr, status, error",
    [
        ("bad_type", "failed", "TypeError: entrant returned str, expected a LoopTree"),
        ("other_comp", "failed", "ValueError: entrant returned a schedule of a different"),
        ("raises", "failed", "ZeroDivisionError: plugin bug"),
    ],
)
def test_plugin_failures_become_rows(plugin, attr, status, error):
    (row,) = PluginEntrant(f"{plugin}:{attr}").run(TINY[0], Budget(1.0))
    assert row["status"] == status
    assert row["error"].startswith(error)
    assert math.isnan(row["gflops"]) and row["schedule"] is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "expects MODULE:ATTRIBUTE"),
        (":tune", "expects MODULE:ATTRIBUTE"),
        ("lb_no_such_module_xyz:tune", "cannot import entrant module"),
        ("{mod}:missing", "has no attribute 'missing'"),
        ("{mod}:NOT_CALLABLE", "is not callable"),
    ],
)
def test_plugin_spec_errors(plugin, spec, message):
    with pytest.raises(PluginError, match=message):
        load_plugin(spec.format(mod=plugin))


def test_cli_bad_entrant_exits_2(capsys, tmp_path):
    code = main(["leaderboard", "--entrant", "nocolon", "--no-tvm", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "expects MODULE:ATTRIBUTE" in capsys.readouterr().err


# --- runs, failures, JSON, tables ----------------------------------------------------------------


def test_failures_are_kept_as_rows_and_counted():
    doc = fake_doc(FIGS)
    assert len(doc["rows"]) == len(TINY) * len(FIGS)
    (bad,) = [r for r in doc["rows"] if r["status"] != "ok"]
    assert bad["entrant"] == "lt2" and bad["benchmark"] == TINY[1].name
    assert bad["error"] == "RuntimeError: boom"
    summary = {s["entrant"]: s for s in report.summarize(doc["rows"], 100.0)}
    assert summary["lt2"]["failures"] == {"failed": 1}
    assert summary["lt2"]["ok"] == 1 and summary["lt2"]["benchmarks"] == 2
    assert "| lt2 | looptune | 1/2 | 5.0 |" in report.markdown_table(summary.values())
    assert "1 failed |" in report.markdown_table(summary.values())


def test_summary_ratios_and_best_row():
    doc = fake_doc(FIGS)
    rows = report.with_best(doc["rows"])
    s = {x["entrant"]: x for x in report.summarize(rows, 100.0)}
    assert s["lt1"]["geomean_gflops"] == pytest.approx(math.sqrt(20.0 * 10.0))
    assert s["lt1"]["vs_numpy"] == pytest.approx(math.sqrt(2.0 * 0.25))
    assert s["lt1"]["vs_pytorch"] == pytest.approx(math.sqrt(1.0 * 0.5))
    assert s["lt1"]["vs_peak"] == pytest.approx(math.sqrt(200.0) / 100.0)
    assert s["lt2"]["vs_numpy"] == pytest.approx(0.5)  # only the benchmark where it succeeded
    best = s[report.BEST]
    assert best["geomean_gflops"] == pytest.approx(math.sqrt(20.0 * 10.0))  # lt1 wins both
    assert best["mean_tuning_seconds"] == pytest.approx((2.0 + 1.0) / 2)  # sum over entrants
    text = report.report_markdown(doc)
    assert f"suite {suite.VERSION}" in text
    assert "### mm_test (1 benchmark)" in text and "### conv (1 benchmark)" in text
    assert "| lt1 | looptune | 2/2 | 14.1 | 0.71 | 0.71 | 0.14 | 1.00 | 0 |" in text


def test_json_has_the_schema_fields_and_round_trips(tmp_path):
    doc = fake_doc(FIGS)
    path = run.write_json(doc, tmp_path / "sub" / "r.json")
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind
    raw = json.loads(path.read_text())
    for key in ("schema", "suite_version", "suite", "machine", "libraries", "git_revision",
                "created", "config", "rows"):
        assert key in raw
    assert raw["suite_version"] == suite.VERSION
    assert raw["libraries"]["numpy"] and "looptune" in raw["libraries"]
    assert raw["suite"][1]["header"] == TINY[1].computation().header()
    row = raw["rows"][-1]
    assert row["gflops"] is None  # NaN written as null
    for key in ("benchmark", "part", "header", "flops", "entrant", "kind", "status", "gflops",
                "tuning_seconds", "schedule", "error"):
        assert key in row
    back = run.load_json(path)
    assert math.isnan(back["rows"][-1]["gflops"])
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not a leaderboard result file"):
        run.load_json(tmp_path / "bad.json")


def test_merge_replaces_pairs_and_keeps_both_runs(tmp_path, capsys):
    a = fake_doc(FIGS)
    b = fake_doc({"numpy": (11.0, 41.0), "tvm-x": (30.0, 30.0)})
    merged = run.merge([a, b])
    pairs = {(r["benchmark"], r["entrant"]): r for r in merged["rows"]}
    assert len(pairs) == len(merged["rows"]) == 2 * 5
    assert pairs[(TINY[0].name, "numpy")]["gflops"] == 11.0  # the later run wins
    assert pairs[(TINY[0].name, "numpy")]["run"] == 1
    assert pairs[(TINY[0].name, "lt1")]["run"] == 0
    assert len(merged["runs"]) == 2
    pa, pb = run.write_json(a, tmp_path / "a.json"), run.write_json(b, tmp_path / "b.json")
    out = tmp_path / "m.json"
    assert main(["leaderboard", "--merge", str(pa), str(pb), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| tvm-x | tvm-x | 2/2 | 30.0 |" in text
    assert len(run.load_json(out)["rows"]) == 10
    with pytest.raises(ValueError, match="nothing to merge"):
        run.merge([])


# --- validation --------------------------------------------------------------------------------


@pytest.fixture
def replayable(plugin):
    doc = run.run_leaderboard(
        TINY, [PluginEntrant(f"{plugin}:tune")], Budget(1.0), progress=False,
        machine={"cpu": "x", "isa": "avx2", "peak_gflops": 1.0},
    )
    for r in doc["rows"]:
        r["gflops"] = 50.0  # a fixed figure; the fake re-timer below reports 50 too
    return doc


def fixed_retime(_tree: looptune.LoopTree) -> float:
    return 50.0


def test_validate_passes_an_honest_file(replayable):
    verdicts = replay.validate(replayable, 0.1, retime=fixed_retime)
    assert [v.ok for v in verdicts] == [True, True]
    assert "2 passed, 0 failed" in replay.format_verdicts(verdicts, 0.1)


def test_validate_catches_an_inflated_figure(replayable):
    replayable["rows"][0]["gflops"] = 56.0  # 12% above the replay, tolerance 10%
    v = replay.validate(replayable, 0.1, retime=fixed_retime)
    assert [x.ok for x in v] == [False, True]
    assert v[0].reason == "recorded 56.0 GFLOP/s not reproduced: replayed 50.0 (tolerance 10%)"
    replayable["rows"][0]["gflops"] = 54.0  # within tolerance
    assert replay.validate(replayable, 0.1, retime=fixed_retime)[0].ok


def test_validate_catches_tampered_schedules(replayable):
    rows = replayable["rows"]
    rows[0]["schedule"] = looptune.matmul(8, 8, 8).default_schedule().dump()
    rows[1]["schedule"] = "this is not a loop tree"
    v = replay.validate(replayable, 0.1, retime=fixed_retime)
    assert not v[0].ok and v[0].reason.startswith("schedule belongs to another computation")
    assert not v[1].ok and v[1].reason.startswith("schedule does not parse")
    with pytest.raises(ValueError, match="tolerance"):
        replay.validate(replayable, 1.5)


def test_cli_validate_exit_codes(replayable, tmp_path, capsys):
    path = run.write_json(replayable, tmp_path / "r.json")
    # real re-timing here: any kernel reproduces 1e-6 GFLOP/s, none reproduces 1e9
    for r in replayable["rows"]:
        r["gflops"] = 1e-6
    run.write_json(replayable, path)
    assert main(["leaderboard", "--validate", str(path)]) == 0
    replayable["rows"][1]["gflops"] = 1e9
    run.write_json(replayable, path)
    assert main(["leaderboard", "--validate", str(path)]) == 1
    assert "1 passed, 1 failed" in capsys.readouterr().out


# --- the TVM entrant's subprocess and records (with a fake worker) ------------------------------

FAKE_WORKER = """
import json, sys
job = json.load(sys.stdin)
modes = {
    "default": {"ok": True, "gflops": 2.0, "max_abs_error": 0.0, "seconds": 0.1},
    "metaschedule": {"ok": True, "gflops": 90.0, "max_abs_error": 0.0, "trials": job["trials"],
                     "tuned": True, "seconds": 40.0},
}
import os
db = os.path.join(job["work_dir"], "db")
if os.path.exists(db):
    modes["metaschedule"].update(tuned=False, seconds=0.5)
os.makedirs(job["work_dir"], exist_ok=True)
if "metaschedule" in job["modes"]:
    open(db, "w").close()
modes = {m: modes[m] for m in job["modes"]}
print("noise")
print("@@LOOPTUNE-TVM@@" + json.dumps({"tvm_version": "fake", "modes": modes}))
"""


def test_tvm_entrant_caches_tuning_records(tmp_path, monkeypatch):
    worker = tmp_path / "worker.py"
    worker.write_text(FAKE_WORKER)
    monkeypatch.setattr(tvm_entrant, "WORKER", worker)
    ent = tvm_entrant.TVMEntrant(sys.executable, trials=8, records=tmp_path / "rec")
    first = {r["entrant"]: r for r in ent.run(TINY[0], Budget(1.0))}
    assert set(first) == {"tvm-default", "tvm-ms8"}
    assert first["tvm-ms8"]["gflops"] == 90.0 and first["tvm-ms8"]["cached"] is False
    assert first["tvm-ms8"]["tuning_seconds"] == 40.0
    second = {r["entrant"]: r for r in ent.run(TINY[0], Budget(1.0))}
    assert second["tvm-ms8"]["cached"] is True
    assert second["tvm-ms8"]["tuning_seconds"] == 40.0  # the recorded tuning time, not 0.5
    lines = (tmp_path / "rec" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["key"][0] == "matmul mk,kn->mn 16x24 24x32"


def test_tvm_entrant_worker_crash_is_two_failed_rows(tmp_path, monkeypatch):
    worker = tmp_path / "worker.py"
    worker.write_text("import sys; sys.stderr.write('segfault-ish'); sys.exit(139)")
    monkeypatch.setattr(tvm_entrant, "WORKER", worker)
    rows = tvm_entrant.TVMEntrant(sys.executable, records=tmp_path).run(TINY[0], Budget(1.0))
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "exited with status 139: segfault-ish" in rows[0]["error"]
    with pytest.raises(ValueError, match="trials must be >= 1"):
        tvm_entrant.TVMEntrant(sys.executable, trials=0)


def test_tvm_job_describes_the_computation(tmp_path):
    ent = tvm_entrant.TVMEntrant(sys.executable, trials=4, records=tmp_path)
    job = ent.job(TINY[1], str(tmp_path), str(tmp_path / "w"))
    assert (job["kind"], job["stride"], job["pad"]) == ("conv2d", 2, 1)
    assert job["shape_a"] == [1, 3, 9, 9] and job["shape_b"] == [8, 3, 3, 3]
    assert job["flops"] == TINY[1].flops
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["a.npy", "b.npy", "expected.npy"]


def test_tvm_cached_only_never_tunes_and_shows_not_run(tmp_path, monkeypatch):
    worker = tmp_path / "worker.py"
    worker.write_text(FAKE_WORKER)
    monkeypatch.setattr(tvm_entrant, "WORKER", worker)
    rec = tmp_path / "rec"
    lazy = tvm_entrant.TVMEntrant(sys.executable, trials=8, records=rec, cached_only=True)
    rows = {r["entrant"]: r for r in lazy.run(TINY[0], Budget(1.0))}
    assert rows["tvm-default"]["status"] == "ok"
    assert rows["tvm-ms8"]["status"] == "not run"
    assert "--tvm-cached-only" in rows["tvm-ms8"]["error"]
    assert not (rec / "records.jsonl").exists()
    tvm_entrant.TVMEntrant(sys.executable, trials=8, records=rec).run(TINY[0], Budget(1.0))
    rows = {r["entrant"]: r for r in lazy.run(TINY[0], Budget(1.0))}
    assert rows["tvm-ms8"]["status"] == "ok" and rows["tvm-ms8"]["cached"] is True
    assert rows["tvm-ms8"]["tuning_seconds"] == 40.0


def test_tvm_records_are_keyed_by_microarchitecture_and_isa():
    entrant = tvm_entrant.TVMEntrant.__new__(tvm_entrant.TVMEntrant)
    entrant.trials = 64
    key = entrant._key(TINY[0])
    assert key == (tvm_entrant.math_key(TINY[0]), looptune.cpu_signature(), looptune.host_isa(),
                   64)
    assert looptune.cpu_signature() != looptune.cpu_name()  # not the brand string


def test_tvm_records_key_names_the_math_not_looptunes_layout():
    assert tvm_entrant.math_key(TINY[0]) == "matmul mk,kn->mn 16x24 24x32"
    assert tvm_entrant.math_key(TINY[1]) == "conv2d nchw,kcrs->nkhw 1x3x9x9 8x3x3x3 stride=2 pad=1"
