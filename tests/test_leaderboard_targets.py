"""The TVM comparison table and the issue's targets, computed from fixed rows."""

from __future__ import annotations

from looptune.leaderboard import report, suite, targets
from looptune.leaderboard.entrants import make_row

A = suite.Entry("mm_test", "matmul", (16, 24, 32), "tiny")
B = suite.Entry("mm_test", "matmul", (8, 8, 40), "tiny")
C = suite.Entry("conv", "conv2d", (1, 3, 9, 9, 8, 3, 3, 2, 1), "tiny conv")


def _row(entry, entrant, kind, g, s=0.0, status="ok"):
    return make_row(entry, entrant, kind, gflops=g, tuning_seconds=s, status=status)


def _rows(agent_b=100.0, agent_s=0.5, beam_s=5.0, ms_b=(100.0, 200.0)):
    rows = []
    for e, np_g, pt_g in ((A, 50.0, 40.0), (B, 80.0, 100.0), (C, 30.0, 60.0)):
        rows += [_row(e, "numpy", "numpy", np_g), _row(e, "pytorch", "pytorch", pt_g)]
    rows += [
        _row(A, "agent", "looptune", 100.0, agent_s),
        _row(B, "agent", "looptune", agent_b, agent_s),
        _row(A, "beam4bfs", "looptune", 120.0, beam_s),
        _row(B, "beam4bfs", "looptune", 90.0, beam_s),
        _row(A, "base", "looptune", 200.0), _row(B, "base", "looptune", 200.0),
        _row(C, "agent", "looptune", 20.0, 1.0),
        _row(C, "beam4bfs", "looptune", 70.0, 1.0, status="timeout"),
        _row(A, "tvm-ms64", "tvm", ms_b[0], 100.0), _row(B, "tvm-ms64", "tvm", ms_b[1], 300.0),
        _row(C, "tvm-ms64", "tvm", 10.0, 50.0, status="failed"),
    ]
    return report.with_best(rows)


def test_part_targets_need_one_entrant_correct_on_the_whole_part():
    lines = targets.part_targets(_rows())
    # mm_test: base 200 beats numpy geomean sqrt(50*80)=63.2 and PyTorch sqrt(40*100)=63.2
    assert lines[0].startswith("- mm_test (2 benchmarks): best looptune entrant base 200.0")
    assert lines[0].endswith("**met**")
    # conv: beam4bfs timed out, so only the agent (20) counts, below numpy 30: not met
    assert lines[1] == (
        "- conv (1 benchmark): best looptune entrant agent 20.0 GFLOP/s vs numpy 30.0 "
        "(0.67x), PyTorch 60.0 (0.33x): **not met**"
    )


def test_agent_target_within_five_percent_and_a_hundredth_of_the_time():
    # MetaSchedule: geomean sqrt(100*200)=141.4 over A and B (C failed: not counted), 400 s;
    # the agent: sqrt(100*181)=134.5 = 0.951x, in 2*1.99 s < 4 s
    met = targets.tvm_targets(_rows(agent_b=181.0, agent_s=1.99))
    assert "on the 2 benchmarks where tvm-ms64 ran (141.4 GFLOP/s, 400 s)" in met[0]
    assert "agent 134.5 GFLOP/s (0.951x) in 3.98 s" in met[0] and met[0].endswith("**met**")
    slow = targets.tvm_targets(_rows(agent_b=200.0, agent_s=2.0))  # 4.0 s: not < 400/100
    assert slow[0].endswith("**not met**")
    weak = targets.tvm_targets(_rows(agent_b=0.9 * 200.0, agent_s=0.1))
    assert "134.2 GFLOP/s (0.949x)" in weak[0] and weak[0].endswith("**not met**")


def test_tuner_target_excludes_base_and_needs_a_tenth_of_the_time():
    lines = targets.tvm_targets(_rows(agent_b=100.0, beam_s=19.0))  # beam: 38 s < 40 s
    # beam4bfs geomean sqrt(120*90)=103.9 is the best within the time, below 141.4: not met
    assert "best within the time beam4bfs 103.9 GFLOP/s" in lines[1]
    assert lines[1].endswith("**not met**")
    lines = targets.tvm_targets(_rows(ms_b=(50.0, 80.0), beam_s=19.0))
    assert "best within the time beam4bfs 103.9" in lines[1] and lines[1].endswith("**met**")
    lines = targets.tvm_targets(_rows(ms_b=(50.0, 80.0), beam_s=25.0, agent_b=1.0))
    assert "best within the time agent" in lines[1]  # beam's 50 s is over 1/10 of 400 s


def test_tvm_table_and_no_metaschedule():
    text = targets.tvm_table(_rows())
    lines = text.splitlines()
    assert lines[0] == ("| benchmark | numpy | pytorch | agent (s) | best looptune (s) "
                        "| tvm-default | tvm-ms64 (s) |")
    want = f"| {A.name} | 50.0 | 40.0 | 100.0 (0.5) | 200.0 base (5.5) | - | 100.0 (100) |"
    assert lines[2] == want
    assert len(lines) == 5 and lines[4].startswith("| geomean | 63.2 | 63.2 |")
    no_tvm = [r for r in _rows() if not r["entrant"].startswith("tvm")]
    assert targets.tvm_table(no_tvm) == "No MetaSchedule result in this run."
    assert "**not measured**" in targets.tvm_targets(no_tvm)[0]
