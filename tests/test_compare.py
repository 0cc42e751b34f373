"""`popbench compare`: regressions beyond tolerance are flagged in the right direction, gaps skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msgspec.structs import replace

from harness.report.build import load_report
from harness.report.compare import compare, mismatches, safety_regressed
from harness.report.schema import Report

FIXTURE = Path(__file__).parent / "fixtures" / "report_v1_smoke.json"


def with_value(record: Any, path: list[str], value: object) -> Any:
    """``record`` with the field at ``path`` replaced (the report's types are frozen)."""
    head, *rest = path
    return replace(record, **{head: with_value(getattr(record, head), rest, value) if rest else value})


def changed(report: Report, **edits: object) -> Report:
    """``report`` with each ``section__field=value`` edit applied."""
    for dotted, value in edits.items():
        report = with_value(report, dotted.split("__"), value)
    return report


BASELINE = changed(
    load_report(FIXTURE), deployment__nodes=8,
    metrics__throughput__committed_per_s=300.0, metrics__throughput__commit_latency__p50_ms=40.0,
    metrics__throughput__commit_latency__p99_ms=80.0, metrics__work__frames_per_proof=15.0,
    metrics__work__bytes_per_proof=2800.0, metrics__work__verifications_per_proof=11.0,
    metrics__connectivity__time_to_connected_s=0.7, metrics__mining=None, score__total=96.0, score__passed_safety=True,
)  # fmt: skip


def verdicts(current: Report) -> dict[str, bool]:
    return {c.label: c.regression for c in compare(BASELINE, current)}


def test_identical_reports_have_no_regression_and_skip_absent_figures() -> None:
    result = verdicts(changed(BASELINE))
    assert not any(result.values()) and "hash efficiency" not in result


def test_lower_throughput_and_higher_latency_are_regressions_beyond_tolerance() -> None:
    assert verdicts(changed(BASELINE, metrics__throughput__committed_per_s=250.0))["committed proofs/s"]
    assert not verdicts(changed(BASELINE, metrics__throughput__committed_per_s=290.0))["committed proofs/s"]
    assert not verdicts(changed(BASELINE, metrics__throughput__committed_per_s=400.0))["committed proofs/s"]
    assert verdicts(changed(BASELINE, metrics__throughput__commit_latency__p99_ms=90.0))["commit latency p99 ms"]
    assert verdicts(changed(BASELINE, metrics__work__frames_per_proof=16.5))["frames per proof"]


def test_tolerance_scale_and_safety_and_mismatches() -> None:
    slower = changed(BASELINE, metrics__throughput__committed_per_s=250.0)
    assert not [c for c in compare(BASELINE, slower, scale=2.0) if c.regression]
    unsafe = changed(BASELINE, score__passed_safety=False)
    assert safety_regressed(unsafe) and not safety_regressed(BASELINE)
    other = changed(BASELINE, deployment__nodes=16)
    assert mismatches(BASELINE, other) == ["nodes differs: 8 vs 16"]
