"""Profiles are validated at the edge; the score follows its published formula (docs/scoring.md)."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec.structs import replace

from harness.metrics.results import (
    Connectivity,
    Consensus,
    GeneratorLateness,
    InvalidProofs,
    LatencySummary,
    Metrics,
    Resources,
    Stability,
    Throughput,
    UssSummary,
    Work,
)
from harness.metrics.safety import SafetyCheck
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


def _metrics() -> Metrics:
    """A run that earns every point: all links up at once, fast commits, nothing crashed, chains agree."""
    latency = LatencySummary(count=100, p50_ms=50.0, p95_ms=90.0, p99_ms=100.0, max_ms=120.0, mean_ms=55.0)
    lateness = GeneratorLateness(send_late_p50_ms=0.1, send_late_p99_ms=1.0, send_late_max_ms=2.0, fell_behind=False)
    return Metrics(
        connectivity=Connectivity(intended_links=6, links_up=6, links_ratio=1.0, time_to_connected_s=1.0,
                                  time_to_connected_from_fork_s=0.1, handshake_failures=0, handshake_failures_by_reason={},
                                  graph_connected=True, diameter_hops=1),
        throughput=Throughput(steady_window_s=7.0, offered_per_s=200.0, submitted_per_s=200.0, admitted_per_s=200.0,
                              rejected_per_s=0.0, committed_per_s=200.0, valid_submitted=100, valid_committed=100,
                              delivery_ratio=1.0, commit_latency=latency, ceiling_per_s=400.0, fraction_of_ceiling=0.5,
                              generator=lateness, plan_exhausted=True, valid_rejected_by_reason={}, expected_commit_delay_ms=None),
        invalid_proofs=InvalidProofs(sent=0, by_kind={}, answers={}, committed=0, accepted=0),
        consensus=Consensus(height=50, blocks_in_steady_window=40, block_interval_s=0.05, round_time_mean_s=0.06, round_time_max_s=0.1),
        work=Work(proofs_committed=100, frames_total=700, bytes_total=127_000, verifications_total=520,
                  frames_per_proof=7.0, bytes_per_proof=1270.0, verifications_per_proof=5.2),
        stability=Stability(nodes_reporting_at_end=4, nodes=4, uptime_mean=1.0, crashes=[], unplanned_crashes=0,
                            view_changes_max=0, view_changes_total=0, protocol_errors=0, equivocations_seen=0,
                            consensus_success_rate=1.0, safety=SafetyCheck(nodes_checked=4, heights_checked=50, agree=True)),
        resources=Resources(uss_per_node_mib=UssSummary(median=7.5, max=7.6, nodes_measured=4), cpu_per_node_percent_mean=7.0,
                            open_files_per_node_max=34, context_switches_per_s_per_node_mean=270.0, harness_cpu_s=2.0,
                            supervisor_cpu_percent_in_window=0.5, harness_cpu_share=0.09),
        mining=None,
    )  # fmt: skip


def test_a_perfect_run_scores_100_with_mining_left_out_and_rescaled() -> None:
    result = score(_metrics(), nodes=4)
    assert result.version == SCORE_VERSION and result.total == 100.0 and result.grade == "A"
    assert [p.name for p in result.parts if not p.exercised] == ["mining"]


def test_a_safety_violation_fails_the_run_whatever_the_rest() -> None:
    perfect = _metrics()
    stability = replace(perfect.stability, safety=SafetyCheck(nodes_checked=4, heights_checked=50, agree=False))
    result = score(replace(perfect, stability=stability), nodes=4)
    assert result.total == 0.0 and result.grade == "F" and not result.passed_safety


def test_slower_commits_and_crashes_lower_the_score() -> None:
    perfect = _metrics()
    base = score(perfect, nodes=4).total
    assert perfect.throughput is not None
    slower_latency = replace(perfect.throughput.commit_latency, p99_ms=5000.0)
    slow = replace(perfect, throughput=replace(perfect.throughput, commit_latency=slower_latency))
    crashed = replace(perfect, stability=replace(perfect.stability, unplanned_crashes=1))
    assert score(slow, nodes=4).total < base and score(crashed, nodes=4).total < base


def test_curves_and_grades_follow_their_thresholds() -> None:
    assert linear(0.0, good=0.0, bad=1.0) == 1.0 and linear(0.5, good=0.0, bad=1.0) == 0.5 and linear(2.0, 0.0, 1.0) == 0.0
    assert log_scaled(500.0, 500.0, 10_000.0) == 1.0 and log_scaled(10_000.0, 500.0, 10_000.0) == 0.0
    assert [grade(t) for t in (95.0, 85.0, 75.0, 65.0, 10.0)] == ["A", "B", "C", "D", "F"]
