"""The capacity search against a fake network whose capacity is known: capacity(N) = 4000 / N proofs/s."""

from __future__ import annotations

import pytest

from harness.capacity.points import Slo
from harness.capacity.search import (
    Budget,
    CapacitySearch,
    Findings,
    MemoryRunLog,
    Progress,
    SearchPlan,
    SizeStatus,
    expected_runs,
    format_duration,
)
from harness.kinds import WorkloadMode
from popbench.errors import ConfigError
from tests.capacity_fake import FakeNetwork

NOISE = 0.02
ROUNDING = 0.005  # candidate rates carry 3 significant digits


def search(fake: FakeNetwork, plan: SearchPlan, budget: Budget | None = None, progress: list[Progress] | None = None) -> Findings:
    reporter = progress.append if progress is not None else None
    return CapacitySearch(plan, Slo(), fake, MemoryRunLog(), budget, clock=fake.clock, progress=reporter).run()


@pytest.mark.parametrize("sizes", [[4, 16, 40, 100], [7, 150]])
def test_search_finds_the_knee_within_tolerance_at_every_size(sizes: list[int]) -> None:
    fake = FakeNetwork(noise=NOISE)
    plan = SearchPlan(sizes=sizes, tolerance=0.10)
    findings = search(fake, plan)
    assert [c.nodes for c in findings.capacities] == sizes
    for capacity in findings.capacities:
        knee = fake.capacity(capacity.nodes)
        assert capacity.status is SizeStatus.FOUND, capacity
        assert capacity.sustained_rate_per_s is not None and capacity.failed_rate_per_s is not None
        # the knee lies in the bracket (up to the per-run noise), and the bracket is within the tolerance
        assert capacity.sustained_rate_per_s <= knee * (1 + NOISE + ROUNDING), capacity
        assert capacity.failed_rate_per_s >= knee * (1 - NOISE - ROUNDING), capacity
        assert capacity.failed_rate_per_s <= capacity.sustained_rate_per_s * (1 + plan.tolerance + ROUNDING), capacity
        assert capacity.p99_ms_at_sustained is not None and capacity.p99_ms_at_sustained <= Slo().p99_target_ms
        assert any(why.startswith("latency") for why in capacity.why_not_above), capacity.why_not_above
    assert findings.stopped is None


def test_a_tighter_tolerance_narrows_the_bracket_with_more_runs() -> None:
    loose, tight = FakeNetwork(noise=0.0), FakeNetwork(noise=0.0)
    coarse = search(loose, SearchPlan(sizes=[10], tolerance=0.10)).capacities[0]
    fine = search(tight, SearchPlan(sizes=[10], tolerance=0.02, max_points_per_size=12)).capacities[0]
    assert fine.failed_rate_per_s is not None and fine.sustained_rate_per_s is not None
    assert fine.failed_rate_per_s / fine.sustained_rate_per_s <= 1.02 + ROUNDING
    assert fine.sustained_rate_per_s <= 400 < fine.failed_rate_per_s
    assert len(tight.calls) > len(loose.calls)
    assert coarse.status is fine.status is SizeStatus.FOUND


def test_the_search_starts_with_a_closed_loop_probe_then_runs_open_loop() -> None:
    fake = FakeNetwork()
    search(fake, SearchPlan(sizes=[20]))
    assert fake.calls[0].mode is WorkloadMode.CLOSED
    assert all(key.mode is WorkloadMode.OPEN for key in fake.calls[1:])
    assert fake.calls[1].rate_per_s == pytest.approx(0.7 * 4000 / 20, rel=NOISE + ROUNDING)


def test_the_largest_size_sustaining_a_rate_is_found() -> None:
    fake = FakeNetwork(noise=NOISE)
    findings = search(fake, SearchPlan(sizes=[4, 8, 16, 32, 50, 64, 100, 150], target_rate_per_s=90.0))
    largest = findings.largest
    assert largest is not None and largest.complete
    assert largest.nodes == 32  # 4000 / 32 = 125/s sustains 90/s; 4000 / 50 = 80/s does not
    assert largest.smallest_failing == 50
    assert any(why.startswith("backlog") for why in largest.why_not_above)
    assert largest.non_monotone == []
    assert "monotone" in largest.assumption


def test_no_size_sustaining_the_rate_is_reported_as_none() -> None:
    largest = search(FakeNetwork(), SearchPlan(sizes=[10, 20], target_rate_per_s=5000.0)).largest
    assert largest is not None and largest.nodes is None and largest.smallest_failing == 10


def test_a_capacity_that_rises_with_size_is_flagged_non_monotone() -> None:
    fake = FakeNetwork(capacity_override={16: 1000.0})  # N=8 carries 500/s, N=16 twice that
    findings = search(fake, SearchPlan(sizes=[4, 8, 16, 32], target_rate_per_s=300.0))
    assert findings.largest is not None
    notes = findings.largest.non_monotone
    assert any("N=16" in note and "N=8" in note for note in notes), notes


def test_a_budget_of_runs_stops_the_search_and_says_so() -> None:
    fake = FakeNetwork()
    findings = search(fake, SearchPlan(sizes=[4, 16, 64], target_rate_per_s=50.0), Budget(max_runs=7))
    assert len(fake.calls) == 7
    assert findings.stopped is not None and "budget" in findings.stopped and "7 runs" in findings.stopped
    statuses = [c.status for c in findings.capacities]
    assert statuses[0] is SizeStatus.FOUND and statuses[-1] is SizeStatus.BUDGET
    assert findings.largest is not None and not findings.largest.complete


def test_a_budget_of_minutes_stops_before_a_run_that_would_overrun_it() -> None:
    fake = FakeNetwork(run_s=60.0)
    findings = search(fake, SearchPlan(sizes=[4, 16, 64]), Budget(max_minutes=10.0))
    assert len(fake.calls) == 10  # ten one-minute runs; an eleventh would end after the tenth minute
    assert fake.clock.now_s == 600.0
    assert findings.stopped is not None and "10 minutes" in findings.stopped
    budget_stopped = [c for c in findings.capacities if c.status is SizeStatus.BUDGET]
    assert budget_stopped and all("budget" in c.note for c in budget_stopped)


def test_a_failed_probe_says_why() -> None:
    findings = search(FakeNetwork(broken_from_nodes=100), SearchPlan(sizes=[10, 100]))
    failed = findings.capacities[1]
    assert failed.status is SizeStatus.PROBE_FAILED
    assert failed.why_not_above == ["failed: nodes never came up"]
    assert findings.capacities[0].status is SizeStatus.FOUND


def test_a_probe_that_committed_nothing_hands_over_to_open_loop_runs_from_the_smaller_size() -> None:
    """The real sweep of issue 13: at N = 150 and 200 the closed loop's 2,400 items in flight starved the
    nodes into committing nothing; lower open-loop rates decide, starting where N = 100 was sustained."""
    fake = FakeNetwork(noise=0.0, silent_probe_from_nodes=100)
    findings = search(fake, SearchPlan(sizes=[40, 100]))
    smaller, larger = findings.capacities
    assert smaller.status is larger.status is SizeStatus.FOUND
    assert larger.sustained_rate_per_s is not None and larger.failed_rate_per_s is not None
    assert larger.sustained_rate_per_s <= fake.capacity(100) * (1 + ROUNDING) < larger.failed_rate_per_s * (1 + ROUNDING)
    first_open = next(key for key in fake.calls if key.nodes == 100 and key.mode is WorkloadMode.OPEN)
    assert first_open.rate_per_s == smaller.sustained_rate_per_s
    assert "the probe committed nothing, so the open-loop runs started at" in larger.note and "N = 40" in larger.note


def test_a_probe_that_stalled_but_committed_lets_the_open_loop_runs_decide() -> None:
    capacity = search(FakeNetwork(stalling_probe=True), SearchPlan(sizes=[10])).capacities[0]
    assert capacity.status is SizeStatus.FOUND
    assert capacity.sustained_rate_per_s is not None and capacity.sustained_rate_per_s <= 400 * (1 + NOISE + ROUNDING)
    assert capacity.note.startswith("probe: stall: no commit for 50% of the window")


def test_repeats_count_as_sustained_only_when_enough_of_them_sustain() -> None:
    # repeat 1 always crashes a node: with every repeat required nothing is sustained, with 2 of 3 the knee is found
    strict = search(FakeNetwork(crashing_repeat=1), SearchPlan(sizes=[10], repeats=3, min_rate_per_s=50.0)).capacities[0]
    assert strict.status is SizeStatus.NONE_SUSTAINED
    assert any("crashed" in why for why in strict.why_not_above)
    lenient_fake = FakeNetwork(crashing_repeat=1)
    lenient = search(lenient_fake, SearchPlan(sizes=[10], repeats=3, min_sustained_repeats=2)).capacities[0]
    assert lenient.status is SizeStatus.FOUND
    assert lenient.sustained_rate_per_s is not None and lenient.sustained_rate_per_s <= 400 * (1 + NOISE + ROUNDING)
    assert {key.repeat for key in lenient_fake.calls} == {0, 1, 2}


def test_progress_is_reported_after_every_run_with_an_eta() -> None:
    fake = FakeNetwork(run_s=30.0)
    reports: list[Progress] = []
    search(fake, SearchPlan(sizes=[4, 16], target_rate_per_s=100.0), progress=reports)
    assert len(reports) == len(fake.calls)
    assert [r.runs_finished for r in reports] == list(range(1, len(reports) + 1))
    assert all(r.eta_s is not None and r.eta_s >= 0 for r in reports)
    assert reports[0].eta_s == pytest.approx((reports[0].runs_expected - 1) * 30.0)
    assert reports[-1].eta_s is not None and reports[-1].eta_s <= 60.0
    assert "N=4 closed" in reports[0].line() and "ETA" in reports[0].line()


def test_expected_runs_estimates_a_typical_search() -> None:
    fake = FakeNetwork()
    plan = SearchPlan(sizes=[4, 16, 64], target_rate_per_s=50.0)
    search(fake, plan)
    assert abs(expected_runs(plan) - len(fake.calls)) <= 4


@pytest.mark.parametrize(
    ("field", "value"),
    [("sizes", []), ("step_factor", 1.0), ("tolerance", 0.6), ("repeats", 0), ("min_sustained_repeats", 4), ("start_fraction", 0.0)],
)
def test_a_bad_plan_is_refused_naming_the_key(field: str, value: object) -> None:
    settings: dict[str, object] = {"sizes": [4], "repeats": 3, field: value}
    with pytest.raises(ConfigError, match=f"sweep.{field}"):
        SearchPlan(**settings)  # type: ignore[arg-type]


def test_durations_read_as_minutes_and_hours() -> None:
    assert [format_duration(s) for s in (42, 185, 4320)] == ["42s", "3m05s", "1h12m"]
