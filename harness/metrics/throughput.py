"""Throughput and latency from the drivers' per-proof records (docs/metrics.md, "Throughput").

The steady window is the load window without its warm-up and cool-down. A proof belongs to it when it
was *due* (scheduled) inside it. Rates divide by the steady window's length. Latency is commit seen by
the driver minus due time, so a generator that sent late is charged to the network's latency too
(open-loop, no coordinated omission); the generator's own lateness is reported beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.load.records import NO_ANSWER, ProofRecord, read_records
from harness.load.workload import Expect
from harness.metrics.results import GeneratorLateness, InvalidProofs, LatencySummary, Throughput
from harness.stats import percentile
from popbench.wire import RejectReason

NOT_REFUSED = frozenset({RejectReason.ACCEPTED, NO_ANSWER})  # answered ACCEPTED, or not answered (yet)
GENERATOR_LATE_MIN_MS = 50.0  # the generator fell behind: p99 send lateness above this ...
GENERATOR_LATE_SHARE_OF_TARGET = 0.10  # ... and above this share of the service level's latency target


@dataclass(frozen=True)
class SteadyWindow:
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return max(1e-9, (self.end_ns - self.start_ns) / 1e9)

    def holds(self, at_ns: int) -> bool:
        return self.start_ns <= at_ns < self.end_ns


def load_records(paths: Iterable[Path]) -> list[ProofRecord]:
    records: list[ProofRecord] = []
    for path in paths:
        if path.exists():
            records.extend(read_records(path))
    return records


InFlight = Callable[[ProofRecord], bool]


def _never(record: ProofRecord) -> bool:
    return False


def in_flight_at_stop(stopped_ns: int | None, latency_target_ns: int) -> InFlight:
    """An interrupted run's items still in flight when it was stopped: valid, not committed, not refused,
    and due less than L before the stop, so they could still have met the service level. Nothing can be
    said of them, so they are left out (counted apart) rather than judged as never committed; an item
    that had already waited longer than L missed its target whatever came after, and stays a miss.
    ``stopped_ns`` None (the run ran to the end): nothing is in flight, every due item is judged."""
    if stopped_ns is None:
        return _never
    since_ns = stopped_ns - latency_target_ns

    def in_flight(r: ProofRecord) -> bool:
        return r.expect == Expect.COMMIT and not r.commit_ns and r.due_ns > since_ns and r.reason in NOT_REFUSED

    return in_flight


def outstanding_at(records: Iterable[ProofRecord], at_ns: int) -> int:
    """The backlog at ``at_ns``: valid items sent before it, not refused, and not seen committed before it."""
    return sum(1 for r in records if r.expect == Expect.COMMIT and 0 < r.sent_ns < at_ns and r.reason in NOT_REFUSED
               and not 0 < r.commit_ns < at_ns)  # fmt: skip


def throughput(records: list[ProofRecord], steady: SteadyWindow, ceiling_per_s: float, expected_commit_delay_ms: float | None,
               late_limit_ms: float = GENERATOR_LATE_MIN_MS, in_flight: InFlight = _never) -> Throughput:  # fmt: skip
    due = [r for r in records if steady.holds(r.due_ns)]
    sent = [r for r in due if r.sent_ns]
    valid = [r for r in sent if r.expect == Expect.COMMIT and not in_flight(r)]
    committed_in_window = sum(1 for r in records if r.expect == Expect.COMMIT and r.commit_ns and steady.holds(r.commit_ns))
    committed_of_due = [r for r in valid if r.commit_ns]
    per_s = committed_in_window / steady.seconds
    return Throughput(
        steady_window_s=steady.seconds,
        offered_per_s=len(due) / steady.seconds,
        submitted_per_s=len(sent) / steady.seconds,
        admitted_per_s=sum(1 for r in sent if r.reason == RejectReason.ACCEPTED) / steady.seconds,
        rejected_per_s=sum(1 for r in sent if r.reason not in (RejectReason.ACCEPTED, NO_ANSWER)) / steady.seconds,
        committed_per_s=per_s,
        valid_submitted=len(valid),
        valid_committed=len(committed_of_due),
        delivery_ratio=len(committed_of_due) / len(valid) if valid else None,
        commit_latency=latency_summary_ms([r.commit_ns - r.due_ns for r in committed_of_due]),
        ceiling_per_s=ceiling_per_s,
        fraction_of_ceiling=per_s / ceiling_per_s if ceiling_per_s else None,
        generator=generator_lateness(sent, late_limit_ms),
        plan_exhausted=bool(records) and all(r.sent_ns for r in records),  # closed loop: the pool ran dry
        valid_rejected_by_reason=rejections(records),
        expected_commit_delay_ms=expected_commit_delay_ms,
        valid_offered_per_s=sum(1 for r in due if r.expect == Expect.COMMIT) / steady.seconds,
        backlog_at_start=outstanding_at(records, steady.start_ns), backlog_at_end=outstanding_at(records, steady.end_ns),
    )  # fmt: skip


def latency_summary_ms(latencies_ns: list[int]) -> LatencySummary:
    """Nearest-rank order statistics of latencies given in nanoseconds, in milliseconds."""
    values = sorted(latencies_ns)
    as_ms = [v / 1e6 for v in values]
    return LatencySummary(
        count=len(values),
        p50_ms=percentile(as_ms, 0.50), p95_ms=percentile(as_ms, 0.95),
        p99_ms=percentile(as_ms, 0.99), max_ms=as_ms[-1] if as_ms else None,
        mean_ms=sum(as_ms) / len(as_ms) if as_ms else None,
    )  # fmt: skip


def generator_late_limit_ms(latency_target_ms: float) -> float:
    """How late the generator may send (p99) before the run stops being a valid measurement.

    Latency is measured from each item's due time, so lateness never hides queueing; what lateness
    changes is the shape of the offered load. Against a 4 s service level, sends 60 ms late on a busy
    host still offer the planned load; against a 500 ms one they would not.
    """
    return max(GENERATOR_LATE_MIN_MS, GENERATOR_LATE_SHARE_OF_TARGET * latency_target_ms)


def generator_lateness(sent: list[ProofRecord], late_limit_ms: float = GENERATOR_LATE_MIN_MS) -> GeneratorLateness:
    late_ms = sorted((r.sent_ns - r.due_ns) / 1e6 for r in sent)
    p99 = percentile(late_ms, 0.99)
    return GeneratorLateness(send_late_p50_ms=percentile(late_ms, 0.5), send_late_p99_ms=p99,
                             send_late_max_ms=late_ms[-1] if late_ms else None,
                             fell_behind=p99 is not None and p99 > late_limit_ms)  # fmt: skip


def invalid_outcomes(records: list[ProofRecord]) -> InvalidProofs:
    """Every planned invalid proof: how the network answered, and whether any was ever committed."""
    invalid = [r for r in records if r.expect != Expect.COMMIT and r.sent_ns]
    return InvalidProofs(
        sent=len(invalid),
        by_kind=dict(Counter(Expect(r.expect).name.lower() for r in invalid)),
        answers=dict(Counter(_reason_name(r.reason) for r in invalid)),
        committed=sum(1 for r in invalid if r.commit_ns),
        accepted=sum(1 for r in invalid if r.reason == RejectReason.ACCEPTED),
    )


def rejections(records: list[ProofRecord]) -> dict[str, int]:
    """Why valid proofs were refused (BUSY under overload, for instance); invalid ones are counted apart."""
    counts = Counter(_reason_name(r.reason) for r in records if r.expect == Expect.COMMIT and r.sent_ns)
    counts.pop("accepted", None)
    return dict(counts)


def _reason_name(reason: int) -> str:
    return "no_answer" if reason == NO_ANSWER else RejectReason(reason).name.lower()
