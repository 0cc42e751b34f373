"""The verdict of real small runs: a dead network fails with its stall named, a healthy one passes, and
the timeline stored beside the report adds up to the service figures.

Each test runs the real `popbench run` (real supervisor, nodes and drivers) with a tiny profile; nothing
asserts a speed, only what the report says happened and the exit status it led to.
"""

from __future__ import annotations

from pathlib import Path

from harness.metrics.timeline import load_timeline
from harness.report.build import load_report
from harness.report.schema import Grade, GradeReason, Score
from tests.test_harness_run import assert_passed, finish, read_report, start_run, write_profile

# two of four validators killed one second into the window: no quorum of 3 remains, nothing can commit
TWO_OF_FOUR_KILLED = """
[[faults]]
at_s = 1.0
kind = "kill"
node = 2

[[faults]]
at_s = 1.0
kind = "kill"
node = 3
"""


def test_a_dead_network_grades_f_names_its_stall_and_exits_1(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, output = finish(start_run(write_profile(tmp_path, name="dead", duration=6.0, extra=TWO_OF_FOUR_KILLED), run_dir))
    assert code == 1, output
    report = load_report(run_dir)
    assert isinstance(report.score, Score) and report.score.grade == Grade.F and report.score.total <= 49.9
    reasons = {c.reason for c in report.score.conditions}
    assert GradeReason.STALLED in reasons, report.score.conditions
    assert not report.score.hard_gate, report.score.conditions  # planned kills are not crashes, and are not expected to report
    service = report.metrics.service
    assert service is not None and service.stalls and service.stalled_share is not None and service.stalled_share > 0.5
    stalls = [f for f in report.issues if f.kind == "stall"]
    assert stalls and stalls[0].at_s is not None and stalls[0].figures["length_s"] > service.stall_threshold_s
    assert "stall" in (run_dir / "summary.md").read_text() and "stall" in output
    assert "grade F" in output


def test_a_healthy_small_run_passes_and_its_timeline_adds_up(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, output = finish(start_run(write_profile(tmp_path, name="healthy", duration=5.0), run_dir))
    assert_passed(code, run_dir, output)
    report = load_report(run_dir)
    assert isinstance(report.score, Score) and report.score.grade in (Grade.A, Grade.B), report.score.arithmetic
    assert not [c for c in report.score.conditions if c.grade in (Grade.C, Grade.F)]
    service = report.metrics.service
    assert service is not None and service.due > 0 and not service.stalls and service.delivery is not None

    assert report.files.timeline == "timeline.jsonl"
    timeline = load_timeline(run_dir)
    rows = timeline.seconds
    assert rows[0].t_s == 0.0 and all(0 < row.length_s <= 1.0 for row in rows)
    assert [round(a.t_s + a.length_s, 6) for a in rows[:-1]] == [round(b.t_s, 6) for b in rows[1:]]  # contiguous
    assert rows[-1].t_s + rows[-1].length_s >= timeline.header.steady_end_s  # through the drain
    steady = [row for row in rows if row.steady]
    assert round(sum(row.length_s for row in steady), 6) == round(timeline.header.steady_end_s - timeline.header.steady_start_s, 6)
    assert sum(row.committed for row in steady) == service.commits_seen > 0
    assert sum(row.offered for row in steady) == round(report.metrics.throughput.offered_per_s * report.metrics.throughput.steady_window_s)  # type: ignore[union-attr]
    assert timeline.samples and all(sample.nodes.nodes_up == 4 for sample in timeline.samples)
    assert read_report(run_dir)["metrics"]["resources"]["uss_samples_in_window"] >= 2  # short window: USS on every sample
