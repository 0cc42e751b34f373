"""An interrupted run is reported over what ran and not graded (docs/metrics.md, "An interrupted run";
docs/scoring.md, "An interrupted run").

Issue 17: Ctrl-C 5 s into a 16-node run gave `0.0 / 100 grade F` and "no load window" although 34
blocks had committed; Ctrl-C 16 s in gave a C with "p99 over all due items unbounded", because the items
in flight at the stop counted as never committed (the real p99 was 197 ms).
"""

from __future__ import annotations

from pathlib import Path

from msgspec.structs import replace

from harness.kinds import RunPhase
from harness.load.records import NO_ANSWER, ProofRecord
from harness.load.workload import Expect
from harness.metrics.assemble import steady_window
from harness.metrics.service import ServiceInputs, links_share_at, service
from harness.metrics.throughput import SteadyWindow, in_flight_at_stop, throughput
from harness.observe.collect import Sample
from harness.report.schema import Grade, GradeReason
from harness.report.score import RunOutcome, score
from harness.run.phases import RunData
from popbench.wire import RejectReason
from popbench.wire.status import PopStatus
from tests.test_cost import status
from tests.test_score_v2 import healthy, smoke

S = 1_000_000_000
ORIGIN = 1000 * S
L_MS = 1000.0
STOP = ORIGIN + 16 * S


def record(index: int, due_s: float, latency_s: float | None, reason: int = RejectReason.ACCEPTED) -> ProofRecord:
    due = ORIGIN + int(due_s * S)
    commit = due + int(latency_s * S) if latency_s is not None else 0
    return ProofRecord(
        index, index.to_bytes(32, "big"), int(Expect.COMMIT), due, sent_ns=due, answer_ns=due, reason=reason, commit_ns=commit
    )


def inputs(stopped_ns: int | None) -> ServiceInputs:
    return ServiceInputs(origin_ns=ORIGIN, steady=SteadyWindow(ORIGIN + 5 * S, STOP), latency_target_ms=L_MS, stall_threshold_s=2.0,
                         expected_commit_s=0.0, intended_edges=[], down_spans={}, light_load_below_per_s=None, has_load=True,
                         stopped_ns=stopped_ns)  # fmt: skip


def stopped_run_records() -> list[ProofRecord]:
    """98 items committed in 0.2 s; at the stop, one due 0.1 s before it is still in flight (accepted, or
    not answered yet), one that waited 3 s (over L) is a miss, one refused is a miss."""
    committed = [record(i, 5.0 + i * 0.1, 0.2) for i in range(98)]
    return [*committed, record(100, 15.9, None), record(101, 15.95, None, NO_ANSWER), record(102, 13.0, None),
            record(103, 14.0, None, RejectReason.BUSY)]  # fmt: skip


def test_items_in_flight_at_the_stop_are_left_out_not_lost() -> None:
    result = service(stopped_run_records(), [], inputs(stopped_ns=STOP))
    assert result.in_flight_at_stop == 2 and result.interrupted_at_s == 16.0
    assert result.due == 100 and result.committed == 98  # the two misses stay: one waited past L, one was refused
    assert result.p99_unbounded  # rank 99 of 100 falls on a miss
    bounded = service([r for r in stopped_run_records() if r.index < 102], [], inputs(stopped_ns=STOP))
    assert not bounded.p99_unbounded and bounded.p99_all_ms == 200.0 and bounded.delivery == 1.0
    complete = service([r for r in stopped_run_records() if r.index < 102], [], inputs(stopped_ns=None))
    assert complete.p99_unbounded and complete.in_flight_at_stop == 0  # a run that ended: nothing is in flight


def test_throughput_delivery_leaves_out_the_same_items() -> None:
    records = [r for r in stopped_run_records() if r.index < 102]
    figures = throughput(records, SteadyWindow(ORIGIN + 5 * S, STOP), 1000.0, None, in_flight=in_flight_at_stop(STOP, int(L_MS * 1e6)))
    assert figures.valid_submitted == 98 and figures.delivery_ratio == 1.0


def run_data(tmp_path: Path, stop_s: float | None, interrupted: bool) -> RunData:
    profile = smoke()  # warm-up 2 s, 10 s window
    data = RunData("run", tmp_path, profile, ORIGIN - 5 * S, window=(ORIGIN, ORIGIN + 10 * S))
    if stop_s is not None:
        data.phases[RunPhase.STOPPING] = ORIGIN + int(stop_s * S)
    data.interrupted = "interrupted by SIGINT" if interrupted else None
    return data


def test_a_run_stopped_in_its_warm_up_is_measured_over_the_warm_up_that_ran(tmp_path: Path) -> None:
    assert steady_window(run_data(tmp_path, 1.5, interrupted=True)) == SteadyWindow(ORIGIN, ORIGIN + int(1.5 * S))
    assert steady_window(run_data(tmp_path, 6.0, interrupted=True)) == SteadyWindow(ORIGIN + 2 * S, ORIGIN + 6 * S)
    assert steady_window(run_data(tmp_path, -0.5, interrupted=True)) is None  # stopped before the window began
    assert steady_window(run_data(tmp_path, None, interrupted=False)) == SteadyWindow(ORIGIN + 2 * S, ORIGIN + 9 * S)


def test_an_interrupted_run_gets_no_grade_only_a_provisional_one() -> None:
    result = score(healthy(interrupted_at_s=6.0), smoke(), RunOutcome(ended_early="interrupted by SIGINT"))
    assert result.grade is None and result.provisional_grade == Grade.A and result.total == 100.0
    assert GradeReason.ENDED_EARLY not in {c.reason for c in result.conditions}  # no B for being stopped
    assert result.arithmetic[-1].startswith("provisional: total 100.0, grade A") and "no grade" in result.arithmetic[-1]
    nothing = score(healthy(due=0, interrupted_at_s=0.3), smoke(), RunOutcome(ended_early="interrupted by SIGINT"))
    assert GradeReason.NOTHING_DUE not in {c.reason for c in nothing.conditions}  # stopped before anything was due: no F
    complete = score(healthy(), smoke())
    assert complete.grade == Grade.A and complete.provisional_grade is None


def test_a_link_neither_of_whose_ends_answered_is_unknown_not_down() -> None:
    everyone = {n: replace_peers(status(n, 0, 0, {}), [p for p in range(4) if p != n]) for n in range(4)}
    late = Sample(ORIGIN, {n: everyone[n] for n in (0, 1)}, {}, 0.0)  # nodes 2 and 3 missed the deadline
    full_mesh = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    assert links_share_at(late, full_mesh, {}) == 1.0  # (2, 3) is left out: nobody who answered could see it
    assert links_share_at(Sample(ORIGIN, {}, {}, 0.0), full_mesh, {}) is None


def replace_peers(node_status: PopStatus, peers: list[int]) -> PopStatus:
    return replace(node_status, peer_ids=peers)
