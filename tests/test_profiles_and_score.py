"""Profiles are validated at the edge; the score follows its published formula (docs/scoring.md)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.profile import apply_overrides, list_profiles, load_profile, profile_from_dict
from harness.report.score import SCORE_VERSION, grade, linear, log_scaled, score
from popbench.errors import ConfigError


@pytest.mark.parametrize("name", [name for name, _ in list_profiles()])
def test_every_shipped_profile_loads_and_describes_itself(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name and profile.description


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"network": {"nodez": 4}}, "network.nodez"),
        ({"netwrok": {}}, "netwrok"),
        ({"workload": {"rate": "fast"}}, "workload.rate"),
        ({"network": {"topology": "star"}}, "network.topology"),
        ({"workload": {"mode": "closed", "rate": 0.0}}, "workload.rate"),
        ({"run": {"duration_s": 2.0, "warmup_s": 1.0, "cooldown_s": 1.0}}, "run.warmup_s"),
        ({"faults": [{"at_s": 1.0, "kind": "explode", "node": 0}]}, "faults[0].kind"),
        ({"faults": [{"kind": "kill", "node": 0}]}, "faults[0].at_s"),
        ({"network": {"regions": ["a", "b"], "latency_ms": {"a": {"c": 5}}}}, "network.latency_ms.a.c"),
    ],
)
def test_bad_profile_input_is_refused_with_the_key_and_the_file(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        profile_from_dict(data, "bad.toml")
    assert caught.value.key == key and "bad.toml" in str(caught.value)


def test_command_line_overrides_are_validated_like_the_file() -> None:
    profile = apply_overrides(load_profile("smoke"), nodes=7, rate=50.0)
    assert profile.network.nodes == 7 and profile.workload.rate == 50.0
    with pytest.raises(ConfigError):
        apply_overrides(load_profile("smoke"), nodes=0)


def _metrics(**changes: Any) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "connectivity": {"links_ratio": 1.0, "graph_connected": True, "time_to_connected_s": 1.0},
        "throughput": {"valid_submitted": 100, "delivery_ratio": 1.0, "commit_latency": {"p99_ms": 100.0},
                       "fraction_of_ceiling": 0.5, "generator": {"fell_behind": False}},
        "mining": None,
        "stability": {"consensus_success_rate": 1.0, "uptime_mean": 1.0, "unplanned_crashes": 0,
                      "protocol_errors": 0, "safety": {"agree": True}},
    }  # fmt: skip
    metrics.update(changes)
    return metrics


def test_a_perfect_run_scores_100_with_mining_left_out_and_rescaled() -> None:
    result = score(_metrics(), nodes=4)
    assert result.version == SCORE_VERSION and result.total == 100.0 and result.grade == "A"
    assert [p.name for p in result.parts if not p.exercised] == ["mining"]


def test_a_safety_violation_fails_the_run_whatever_the_rest() -> None:
    stability = {**_metrics()["stability"], "safety": {"agree": False}}
    result = score(_metrics(stability=stability), nodes=4)
    assert result.total == 0.0 and result.grade == "F" and not result.passed_safety


def test_slower_commits_and_crashes_lower_the_score() -> None:
    base = score(_metrics(), nodes=4).total
    slow = _metrics()
    slow["throughput"]["commit_latency"]["p99_ms"] = 5000.0
    crashed = _metrics()
    crashed["stability"]["unplanned_crashes"] = 1
    assert score(slow, nodes=4).total < base and score(crashed, nodes=4).total < base


def test_curves_and_grades_follow_their_thresholds() -> None:
    assert linear(0.0, good=0.0, bad=1.0) == 1.0 and linear(0.5, good=0.0, bad=1.0) == 0.5 and linear(2.0, 0.0, 1.0) == 0.0
    assert log_scaled(500.0, 500.0, 10_000.0) == 1.0 and log_scaled(10_000.0, 500.0, 10_000.0) == 0.0
    assert [grade(t) for t in (95.0, 85.0, 75.0, 65.0, 10.0)] == ["A", "B", "C", "D", "F"]
