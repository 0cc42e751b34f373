"""When a late load generator makes a run invalid: judged against the service level's latency target."""

from __future__ import annotations

from harness.load.records import ProofRecord
from harness.load.workload import Expect
from harness.metrics.throughput import generator_late_limit_ms, generator_lateness

MS = 1_000_000


def sent_late_by(late_ms: float, count: int = 100) -> list[ProofRecord]:
    return [ProofRecord(i, bytes(32), Expect.COMMIT, i * MS, i * MS + int(late_ms * MS)) for i in range(count)]


def test_the_limit_is_a_tenth_of_the_latency_target_and_never_below_50_ms() -> None:
    assert generator_late_limit_ms(500.0) == 50.0
    assert generator_late_limit_ms(4000.0) == 400.0


def test_sends_60_ms_late_invalidate_a_500_ms_service_level_but_not_a_4_s_one() -> None:
    records = sent_late_by(60.0)
    assert generator_lateness(records, generator_late_limit_ms(500.0)).fell_behind
    assert not generator_lateness(records, generator_late_limit_ms(4000.0)).fell_behind


def test_a_generator_on_schedule_has_not_fallen_behind() -> None:
    lateness = generator_lateness(sent_late_by(1.0), generator_late_limit_ms(500.0))
    assert not lateness.fell_behind and lateness.send_late_p99_ms == 1.0
