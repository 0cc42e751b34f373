"""Score formula version 2 from hand-built typed metrics: each case of issue 11 gets the grade it must.

Every case starts from a run that earns every point (:func:`healthy`) and changes only what the case is
about, so a grade here is caused by the one figure the test names. The exit status comes from the same
function `popbench run` calls (harness.report.score.exit_status).
"""

from __future__ import annotations

import dataclasses

import pytest
from msgspec.structs import replace

from harness.kinds import ChildKind, FaultKind
from harness.load.records import ProofRecord
from harness.load.workload import Expect
from harness.metrics.results import (
    BlockInterval,
    CommitSource,
    Connectivity,
    Consensus,
    GeneratorLateness,
    InvalidProofs,
    LatencySummary,
    Metrics,
    PowMining,
    Propagation,
    PropagationShare,
    Resources,
    Service,
    Stability,
    Stall,
    Throughput,
    UssSummary,
    Work,
)
from harness.metrics.service import find_stalls, pending_since
from harness.metrics.throughput import SteadyWindow
from harness.procs.supervisor import Crash
from harness.profile import Fault, Profile, load_profile
from harness.report.schema import Grade, GradeReason, InvalidReason, Score
from harness.report.score import GRADE_CAP, SCORE_VERSION, ExitStatus, RunOutcome, exit_status, linear, score
from harness.run.safety import SafetyCheck

L_MS = 1000.0  # the smoke profile's slo.latency_ms


def smoke() -> Profile:
    profile = load_profile("smoke")
    assert profile.slo.latency_ms == L_MS and profile.slo.within_share == 0.99
    return profile


def service(**changes: object) -> Service:
    """200 items/s for 7 s, every one committed within 120 ms, no stall, every link up."""
    base = Service(
        steady_start_s=2.0, steady_end_s=9.0, latency_target_ms=L_MS, due=1400, committed=1400,
        committed_within_target=1400, within_target_share=1.0, p99_all_ms=120.0, p99_unbounded=False,
        committed_in_window=1400, delivery=1.0, commits_seen=1400, commit_source=CommitSource.RECORDS,
        stall_threshold_s=2.0, stalls=[], stalled_s=0.0, stalled_share=0.0, least_links_share=1.0,
        least_links_at_s=2.1, light_load=False, light_load_below_per_s=170.0,
    )  # fmt: skip
    return replace(base, **changes)


def healthy(**service_changes: object) -> Metrics:
    latency = LatencySummary(count=1400, p50_ms=50.0, p95_ms=90.0, p99_ms=120.0, max_ms=150.0, mean_ms=55.0)
    lateness = GeneratorLateness(send_late_p50_ms=0.1, send_late_p99_ms=1.0, send_late_max_ms=2.0, fell_behind=False)
    return Metrics(
        connectivity=Connectivity(intended_links=6, links_up=6, links_ratio=1.0, time_to_connected_s=1.0,
                                  time_to_connected_from_fork_s=0.1, handshake_failures=0, handshake_failures_by_reason={},
                                  graph_connected=True, diameter_hops=1),
        service=service(**service_changes),
        throughput=Throughput(steady_window_s=7.0, offered_per_s=200.0, submitted_per_s=200.0, admitted_per_s=200.0,
                              rejected_per_s=0.0, committed_per_s=200.0, valid_submitted=1400, valid_committed=1400,
                              delivery_ratio=1.0, commit_latency=latency, ceiling_per_s=8500.0, fraction_of_ceiling=0.024,
                              generator=lateness, plan_exhausted=True, valid_rejected_by_reason={}, expected_commit_delay_ms=None),
        invalid_proofs=InvalidProofs(sent=0, by_kind={}, answers={}, committed=0, accepted=0),
        consensus=Consensus(height=50, blocks_in_steady_window=40, block_interval_s=0.05, round_time_mean_s=0.06, round_time_max_s=0.1),
        work=Work(proofs_committed=1400, frames_total=7000, bytes_total=127_000, verifications_total=5200,
                  frames_per_proof=5.0, bytes_per_proof=90.7, verifications_per_proof=3.7),
        stability=Stability(nodes_reporting_at_end=4, nodes=4, uptime_mean=1.0, crashes=[], unplanned_crashes=0,
                            view_changes_max=0, view_changes_total=0, protocol_errors=0, equivocations_seen=0,
                            consensus_success_rate=1.0, safety=SafetyCheck(nodes_checked=4, heights_checked=50, agree=True)),
        resources=Resources(uss_per_node_mib=UssSummary(median=7.5, max=7.6, nodes_measured=4), cpu_per_node_percent_mean=7.0,
                            open_files_per_node_max=34, context_switches_per_s_per_node_mean=270.0, harness_cpu_s=2.0,
                            supervisor_cpu_percent_in_window=0.5, harness_cpu_share=0.09),
        mining=None,
    )  # fmt: skip


def reasons(result: Score) -> set[GradeReason]:
    return {c.reason for c in result.conditions}


def assert_adds_up(result: Score) -> None:
    """The items make the total shown: their sum, the scale, the cap, each visible in the arithmetic."""
    assert result.earned == pytest.approx(sum(i.points for i in result.items))
    assert result.possible == pytest.approx(sum(i.max_points for i in result.items))
    assert result.scaled == round(result.earned * result.scale, 1)
    assert result.total == min(result.scaled, GRADE_CAP[result.grade])
    assert (result.cap is not None) == (result.total < result.scaled)
    assert result.arithmetic[-1].startswith(f"total {result.total:.1f}, grade {result.grade}")
    if result.cap is not None:
        assert any(line.startswith(f"capped at {result.cap:g}") for line in result.arithmetic)


# -- the cases of the issue ----------------------------------------------------------------------------
def test_all_fine_earns_every_point_and_an_a() -> None:
    result = score(healthy(), smoke())
    assert result.version == SCORE_VERSION == 2
    assert result.total == 100.0 and result.grade == Grade.A and not result.conditions
    assert [i.name for i in result.items] == ["pace", "latency", "within", "stability", "links"]
    assert result.valid_measurement and not result.hard_gate
    assert exit_status(result, min_score=0.0, interrupted=False) == (ExitStatus.PASS, None)
    assert_adds_up(result)


def test_a_dead_network_that_commits_nothing_fails_with_the_stall_named() -> None:
    """4 nodes, 2 killed at 1 s by plan: no quorum, nothing commits in the steady window."""
    kills = [Fault(at_s=1.0, kind=FaultKind.KILL, target="node:2"), Fault(at_s=1.0, kind=FaultKind.KILL, target="node:3")]
    profile = dataclasses.replace(smoke(), faults=kills)
    metrics = healthy(committed=0, committed_within_target=0, within_target_share=0.0, p99_all_ms=None, p99_unbounded=True,
                      committed_in_window=0, delivery=0.0, commits_seen=0, stalls=[Stall(start_s=2.0, length_s=7.0)],
                      stalled_s=7.0, stalled_share=1.0)  # fmt: skip
    metrics = replace(metrics, stability=replace(metrics.stability, nodes_reporting_at_end=2, nodes_down_by_plan_at_end=2))
    result = score(metrics, profile)
    assert result.grade == Grade.F and result.total <= 49.9
    assert {GradeReason.STALLED, GradeReason.FELL_BEHIND, GradeReason.P99_OVER_TARGET} <= reasons(result)
    assert GradeReason.NODE_NOT_REPORTING not in reasons(result)  # the two planned kills are not expected to report
    assert not result.hard_gate
    assert "stalled" in next(c.message for c in result.conditions if c.reason == GradeReason.STALLED)
    assert exit_status(result, min_score=0.0, interrupted=False)[0] == ExitStatus.FAILED
    assert_adds_up(result)


def test_a_25_second_stall_fails_even_when_the_backlog_cleared() -> None:
    metrics = healthy(stalls=[Stall(start_s=20.0, length_s=25.0)], stalled_s=25.0, stalled_share=25.0 / 56.0, delivery=0.97)
    result = score(metrics, smoke())
    assert result.grade == Grade.F and reasons(result) >= {GradeReason.STALLED}
    assert next(i for i in result.items if i.name == "stability").points == 0.0  # stalled share 0.45 > 0.25
    assert exit_status(result, min_score=0.0, interrupted=False)[0] == ExitStatus.FAILED
    assert_adds_up(result)


def test_a_network_that_fell_behind_fails() -> None:
    result = score(healthy(delivery=0.3, committed_in_window=420), smoke())
    assert result.grade == Grade.F and GradeReason.FELL_BEHIND in reasons(result)
    assert next(i for i in result.items if i.name == "pace").points == 0.0  # below the bad end, 0.5
    assert_adds_up(result)


def test_a_service_level_breach_without_a_stall_is_a_c() -> None:
    result = score(healthy(p99_all_ms=2 * L_MS, within_target_share=0.95, committed_within_target=1330), smoke())
    assert result.grade == Grade.C and reasons(result) == {GradeReason.P99_OVER_TARGET, GradeReason.WITHIN_SHARE_SHORT}
    latency = next(i for i in result.items if i.name == "latency")
    assert latency.value == 2.0 and latency.points == pytest.approx(25 * linear(2.0, 1.0, 4.0))
    assert 50.0 <= result.total <= 79.9
    assert exit_status(result, min_score=0.0, interrupted=False)[0] == ExitStatus.PASS
    assert_adds_up(result)


def test_an_idle_run_is_light_load_and_cannot_earn_an_a() -> None:
    """4 nodes at 1 item/s: everything commits at once, but the load is far below what the host carries."""
    metrics = healthy(due=7, committed=7, committed_within_target=7, committed_in_window=7, commits_seen=7, light_load=True)
    result = score(metrics, smoke())
    assert result.grade == Grade.B and reasons(result) == {GradeReason.LIGHT_LOAD}
    assert result.scaled == 100.0 and result.total == 89.9 and result.cap == 89.9
    assert any("light load" in c.message for c in result.conditions)
    assert_adds_up(result)


def test_an_overloaded_network_has_an_unbounded_p99_and_no_latency_points() -> None:
    metrics = healthy(p99_all_ms=None, p99_unbounded=True, delivery=0.97, within_target_share=0.96, committed=1358)
    result = score(metrics, smoke())
    latency = next(i for i in result.items if i.name == "latency")
    assert latency.value is None and latency.points == 0.0
    assert result.grade == Grade.C and GradeReason.P99_OVER_TARGET in reasons(result)
    assert "unbounded" in " ".join(result.arithmetic)
    assert_adds_up(result)


def test_a_hard_gate_fails_and_exits_1_whatever_the_min_score() -> None:
    metrics = healthy()
    crash = Crash(name="node-2", kind=ChildKind.NODE, index=2, pid=1234, at_ns=0, exit="killed by SIGKILL", stderr_tail="")
    metrics = replace(metrics, stability=replace(metrics.stability, crashes=[crash], unplanned_crashes=1, nodes_reporting_at_end=3))
    result = score(metrics, smoke())
    assert result.grade == Grade.F and result.hard_gate and result.total <= 49.9
    assert {GradeReason.UNPLANNED_CRASH, GradeReason.NODE_NOT_REPORTING} <= reasons(result)
    assert exit_status(result, min_score=-1000.0, interrupted=False)[0] == ExitStatus.FAILED
    assert exit_status(result, min_score=0.0, interrupted=True)[0] == ExitStatus.INTERRUPTED  # 130 still wins


@pytest.mark.parametrize("gate", ["safety", "invalid"])
def test_safety_and_an_invalid_commit_are_hard_gates(gate: str) -> None:
    metrics = healthy()
    if gate == "safety":
        unsafe = SafetyCheck(nodes_checked=4, heights_checked=50, agree=False)
        metrics = replace(metrics, stability=replace(metrics.stability, safety=unsafe))
    else:
        metrics = replace(metrics, invalid_proofs=InvalidProofs(sent=5, by_kind={}, answers={}, committed=1, accepted=1))
    result = score(metrics, smoke())
    assert result.grade == Grade.F and result.hard_gate and result.passed_safety == (gate != "safety")


def test_a_generator_that_fell_behind_makes_the_run_not_valid_and_exits_3() -> None:
    metrics = healthy()
    assert metrics.throughput is not None
    late = replace(metrics.throughput.generator, send_late_p99_ms=400.0, fell_behind=True)
    result = score(replace(metrics, throughput=replace(metrics.throughput, generator=late)), smoke())
    assert not result.valid_measurement and [i.reason for i in result.invalid_because] == [InvalidReason.GENERATOR_FELL_BEHIND]
    assert result.grade == Grade.A  # the network was fine; the measurement is what cannot be trusted
    assert exit_status(result, min_score=0.0, interrupted=False)[0] == ExitStatus.NOT_VALID


def test_links_lost_fail_the_run() -> None:
    result = score(healthy(least_links_share=0.83), smoke())
    assert result.grade == Grade.F and GradeReason.LINKS_LOST in reasons(result)


def test_view_changes_without_a_planned_fault_cap_at_b() -> None:
    metrics = healthy()
    result = score(replace(metrics, stability=replace(metrics.stability, view_changes_total=4, view_changes_max=1)), smoke())
    assert result.grade == Grade.B and reasons(result) == {GradeReason.VIEW_CHANGES_UNPLANNED}


def test_a_run_without_load_scores_only_what_it_exercises_and_says_so() -> None:
    profile = dataclasses.replace(smoke(), workload=dataclasses.replace(smoke().workload, rate=0.0))
    metrics = healthy(due=0, committed=0, committed_within_target=0, within_target_share=None, p99_all_ms=None,
                      committed_in_window=0, delivery=None, commits_seen=0, commit_source=CommitSource.NONE, stalled_share=None,
                      light_load=None, light_load_below_per_s=None)  # fmt: skip
    result = score(replace(metrics, throughput=None), profile)
    assert [i.name for i in result.items] == ["links"] and result.possible == 15.0 and result.scaled == 100.0
    assert result.grade == Grade.B and reasons(result) == {GradeReason.NO_LOAD}
    assert any("not exercised" in why for why in result.left_out)
    assert any(line.startswith("scaled to 100") for line in result.arithmetic)
    assert_adds_up(result)


def test_a_pow_run_scores_its_block_interval_and_stale_rate() -> None:
    profile = load_profile("pow-antimony")
    share = PropagationShare(blocks_reached=10, p50_ms=20.0, p90_ms=40.0, mean_ms=25.0)
    mining = PowMining(hashes=10**7, grinding_s=20.0, hash_rate_per_grinding_s=5e5, hash_rate_per_miner={0: 5e5},
                       hash_efficiency=0.9, wall_hash_efficiency=0.4, blocks_mined=31, main_chain_height=30, stale_blocks=1,
                       stale_rate=1 / 31, stale_rate_predicted=0.01,
                       propagation=Propagation(blocks=31, p50_nodes=share, p90_nodes=share, all_nodes=share),
                       block_interval=BlockInterval(mean_s=3.0, stdev_s=2.0, target_s=2.0, gaps=29), blocks_won_per_miner={0: 30},
                       deepest_reorg=1, reorgs_total=1, distinct_tips_at_stop=1, tips_converged_after_window_s=0.5)  # fmt: skip
    metrics = replace(healthy(latency_target_ms=profile.slo.latency_ms, p99_all_ms=15_000.0, light_load=None), mining=mining)
    result = score(metrics, profile)
    by_name = {i.name: i for i in result.items}
    assert list(by_name) == ["pace", "latency", "within", "stability", "links", "block_interval", "stale_rate"]
    assert result.possible == 100.0
    assert by_name["block_interval"].value == pytest.approx(0.5)  # |3 - 2| / 2
    assert by_name["block_interval"].points == pytest.approx(10 * linear(0.5, 0.25, 1.0))
    assert by_name["stale_rate"].points == 10.0  # 3 % stale is under the good end, 5 %
    assert_adds_up(result)


def test_the_conditions_are_listed_worst_first() -> None:
    result = score(healthy(p99_all_ms=2 * L_MS, light_load=True, delivery=0.3), smoke())
    grades = [c.grade for c in result.conditions]
    assert grades[0] == Grade.F and grades == sorted(grades, key=[Grade.A, Grade.B, Grade.C, Grade.F].index, reverse=True)


def test_a_failed_run_is_a_hard_gate() -> None:
    result = score(healthy(), smoke(), RunOutcome(failed="node 3 never came up"))
    assert result.grade == Grade.F and result.hard_gate and GradeReason.RUN_FAILED in reasons(result)


# -- stalls from the records ---------------------------------------------------------------------------
def _record(due_s: float, commit_s: float | None) -> ProofRecord:
    return ProofRecord(index=0, proof_id=b"\0" * 32, expect=Expect.COMMIT, due_ns=int(due_s * 1e9), sent_ns=int(due_s * 1e9),
                       reason=0, commit_ns=int(commit_s * 1e9) if commit_s is not None else 0)  # fmt: skip


def test_a_gap_with_an_item_waiting_is_a_stall_and_an_idle_gap_is_not() -> None:
    window = SteadyWindow(0, int(20e9))
    idle = [_record(t, t + 0.05) for t in (0.0, 5.0, 10.0, 15.0)]  # one item every 5 s, each committed at once
    commits = sorted(r.commit_ns for r in idle)
    assert find_stalls(commits, window, 2.0, pending_since(idle)) == []
    assert len(find_stalls(commits, window, 2.0)) == 4  # timed without the records, every gap would be a stall
    stuck = [*idle, _record(6.0, 14.0)]  # due at 6 s, committed only at 14 s: 8 s waiting with no commit
    commits = sorted(r.commit_ns for r in stuck)
    assert find_stalls(commits, window, 2.0, pending_since(stuck)) == [(int(6e9), pytest.approx(4.05)), (int(10.05e9), pytest.approx(3.95))]


def test_a_pow_pipeline_still_filling_is_not_a_stall_but_a_stuck_one_is() -> None:
    """The CI failure of stop 14: 300 ms blocks, 6 confirmations, the steady window opening 1 s into the
    load; the first items (due from 0 s) were confirmed only at 4.4 s. Timed from the window's start that
    is a 3.4 s gap over a 3 s threshold; an item is not overdue before (k + 1) intervals = 2.1 s. (A dead
    network in a window this short is no stall then; its delivery of 0 grades it F, fell_behind.)"""
    window = SteadyWindow(int(1e9), int(4.5e9))
    filling = [_record(t / 20, 4.4 + t / 20) for t in range(40)]
    commits = sorted(r.commit_ns for r in filling if window.holds(r.commit_ns))
    assert find_stalls(commits, window, 3.0, pending_since(filling)) == [(int(1e9), pytest.approx(3.4))]
    assert find_stalls(commits, window, 3.0, pending_since(filling, int(2.1e9))) == []
    stuck = [_record(t / 20, None) for t in range(200)]  # nothing confirmed at all in a 10 s window
    assert find_stalls([], SteadyWindow(int(1e9), int(10e9)), 3.0, pending_since(stuck, int(2.1e9))) == [(int(2.1e9), pytest.approx(7.9))]


def test_nothing_committed_in_the_window_is_one_whole_stall() -> None:
    window = SteadyWindow(0, int(10e9))
    dead = [_record(t / 10, None) for t in range(100)]
    assert find_stalls([], window, 2.0, pending_since(dead)) == [(0, 10.0)]
