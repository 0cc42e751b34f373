"""`popbench compare`: regressions beyond tolerance are flagged in the right direction, gaps skipped."""

from __future__ import annotations

import copy
from typing import Any

from harness.report.compare import compare, mismatches, safety_regressed

BASELINE: dict[str, Any] = {
    "profile": {"name": "ci"}, "deployment": {"nodes": 8, "consensus": "pbft"},
    "environment": {"cpu_model": "x", "cores_logical": 2},
    "metrics": {"throughput": {"committed_per_s": 300.0, "commit_latency": {"p50_ms": 40.0, "p99_ms": 80.0}},
                "work": {"frames_per_proof": 15.0, "bytes_per_proof": 2800.0, "verifications_per_proof": 11.0},
                "connectivity": {"time_to_connected_s": 0.7}, "mining": None},
    "score": {"total": 96.0, "passed_safety": True},
}  # fmt: skip


def changed(**edits: float) -> dict[str, Any]:
    report = copy.deepcopy(BASELINE)
    for dotted, value in edits.items():
        target = report
        *parents, leaf = dotted.split("__")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return report


def verdicts(current: dict[str, Any]) -> dict[str, bool]:
    return {c.label: c.regression for c in compare(BASELINE, current)}


def test_identical_reports_have_no_regression_and_skip_absent_figures() -> None:
    result = verdicts(copy.deepcopy(BASELINE))
    assert not any(result.values()) and "hash efficiency" not in result


def test_lower_throughput_and_higher_latency_are_regressions_beyond_tolerance() -> None:
    assert verdicts(changed(metrics__throughput__committed_per_s=250.0))["committed proofs/s"]
    assert not verdicts(changed(metrics__throughput__committed_per_s=290.0))["committed proofs/s"]
    assert not verdicts(changed(metrics__throughput__committed_per_s=400.0))["committed proofs/s"]
    assert verdicts(changed(metrics__work__frames_per_proof=16.5))["frames per proof"]


def test_tolerance_scale_and_safety_and_mismatches() -> None:
    slower = changed(metrics__throughput__committed_per_s=250.0)
    assert not [c for c in compare(BASELINE, slower, scale=2.0) if c.regression]
    unsafe = copy.deepcopy(BASELINE)
    unsafe["score"]["passed_safety"] = False
    assert safety_regressed(unsafe) and not safety_regressed(BASELINE)
    other = copy.deepcopy(BASELINE)
    other["deployment"]["nodes"] = 16
    assert mismatches(BASELINE, other) == ["nodes differs: 8 vs 16"]
