"""Findings name what happened, with its time and numbers, from hand-built metrics and timelines."""

from __future__ import annotations

from pathlib import Path

from msgspec.structs import replace

from harness.metrics.findings import findings
from harness.metrics.results import Finding, FindingKind, Severity, Stall
from harness.metrics.timeline import (
    NodeState,
    SampleRow,
    SecondRow,
    Timeline,
    TimelineHeader,
    load_timeline,
    sample_states,
    write_timeline,
)
from harness.observe.collect import Sample
from harness.run.phases import RunData
from popbench.wire.status import CounterTotals
from tests.test_cost import status
from tests.test_score_v2 import healthy, smoke

ORIGIN_NS = 1_000_000_000_000


def run_data() -> RunData:
    data = RunData(run_id="t", run_dir=Path("."), profile=smoke(), started_ns=ORIGIN_NS - int(5e9))
    data.window = (ORIGIN_NS, ORIGIN_NS + int(10e9))
    return data


def state(view_changes: int = 0, uss_mib: float | None = 8.0) -> NodeState:
    return NodeState(nodes_up=4, height=10, view_changes=view_changes, links_up=6, cpu_percent_mean=5.0, cpu_percent_max=6.0,
                     uss_mib_mean=uss_mib, uss_mib_max=uss_mib, mempool_mean=3.0, mempool_max=4)  # fmt: skip


def second(t_s: float, outstanding: int, offered: int = 10) -> SecondRow:
    return SecondRow(t_s=t_s, length_s=1.0, steady=2.0 <= t_s < 9.0, offered=offered, submitted=offered, committed=offered,
                     outstanding=outstanding, latency_p50_ms=40.0, latency_p99_ms=90.0, nodes=None)  # fmt: skip


def timeline(seconds: list[SecondRow], samples: list[SampleRow]) -> Timeline:
    header = TimelineHeader(version=1, origin_ns=ORIGIN_NS, steady_start_s=2.0, steady_end_s=9.0, end_s=11.0)
    return Timeline(header=header, seconds=seconds, samples=samples)


def kinds(found: list[Finding]) -> list[FindingKind]:
    return [f.kind for f in found]


def test_a_healthy_run_has_no_finding() -> None:
    quiet = timeline([second(t, 2) for t in range(11)], [SampleRow(t_s=t, nodes=state()) for t in range(11)])
    assert findings(run_data(), healthy(), quiet) == []


def test_a_stall_is_named_with_its_start_and_length_and_listed_first() -> None:
    metrics = healthy(stalls=[Stall(start_s=4.0, length_s=3.5)], stalled_s=3.5, stalled_share=0.5)
    rising = [SampleRow(t_s=t, nodes=state(view_changes=0 if t < 5 else 3)) for t in range(11)]
    found = findings(run_data(), metrics, timeline([second(t, 2) for t in range(11)], rising))
    assert kinds(found) == [FindingKind.STALL, FindingKind.VIEW_CHANGE]
    stall, view = found
    assert stall.severity == Severity.FAIL and stall.at_s == 4.0 and stall.figures == {"length_s": 3.5}
    assert "3.5 s" in stall.message and "t+4.0s" in stall.message
    assert view.at_s == 5.0 and view.figures["added"] == 3


def test_a_backlog_growing_over_the_steady_window_is_found() -> None:
    growing = [second(t, outstanding=2 + 40 * max(0, t - 2)) for t in range(11)]  # +40/s at 10 offered/s
    found = findings(run_data(), healthy(), timeline(growing, []))
    assert kinds(found) == [FindingKind.BACKLOG_GROWING]
    assert found[0].figures["start"] == 2 and found[0].figures["end"] == 2 + 40 * 6 and found[0].at_s == 2.0


def test_memory_growth_over_the_steady_window_is_found() -> None:
    samples = [SampleRow(t_s=t, nodes=state(uss_mib=8.0 + 4.0 * t)) for t in range(11)]  # 16 MiB at 2 s, 40 MiB at 8 s
    found = findings(run_data(), healthy(), timeline([second(t, 2) for t in range(11)], samples))
    assert kinds(found) == [FindingKind.MEMORY_GROWTH]
    assert found[0].figures["start_mib"] == 16.0 and found[0].figures["end_mib"] == 40.0


def test_a_saturated_generator_and_a_light_load_are_named() -> None:
    metrics = healthy(light_load=True)
    assert metrics.throughput is not None
    late = replace(metrics.throughput.generator, send_late_p99_ms=300.0, fell_behind=True)
    metrics = replace(metrics, throughput=replace(metrics.throughput, generator=late))
    found = findings(run_data(), metrics, None)
    assert kinds(found) == [FindingKind.GENERATOR_SATURATED, FindingKind.LIGHT_LOAD]
    assert found[0].severity == Severity.INVALID and "not valid as a measurement" in found[0].message


def test_a_timeline_survives_its_file(tmp_path: Path) -> None:
    stored = timeline([second(t, 2) for t in range(11)], [SampleRow(t_s=t + 0.5, nodes=state()) for t in range(11)])
    write_timeline(stored, tmp_path)
    assert load_timeline(tmp_path) == stored


def test_view_change_findings_add_up_to_the_count_the_grade_reads() -> None:
    """Issue 17: a grade line said 172 view changes and its findings added to 158. A node that misses a
    sample no longer makes the sum fall and rise again, and what the samples did not see is named too."""

    def views_sample(at_s: float, counts: dict[int, int]) -> Sample:
        statuses = {n: replace(status(n, 0, 0, {}), counters=CounterTotals(view_changes=c)) for n, c in counts.items()}
        return Sample(ORIGIN_NS + int(at_s * 1e9), statuses, {}, 0.0)

    samples = [views_sample(0.0, dict.fromkeys(range(4), 10)), views_sample(1.0, {0: 11, 1: 11, 2: 11}),  # node 3 late
               views_sample(2.0, dict.fromkeys(range(4), 12))]  # fmt: skip
    rows = sample_states(samples, ORIGIN_NS)
    assert [row.nodes.view_changes for row in rows] == [40, 43, 48]
    metrics = healthy()
    metrics = replace(metrics, stability=replace(metrics.stability, view_changes_total=50))  # 2 more by the final STATUS
    found = [f for f in findings(run_data(), metrics, timeline([], rows)) if f.kind == FindingKind.VIEW_CHANGE]
    assert sum(f.figures["added"] for f in found) == 50
    assert [f.figures["added"] for f in found] == [40, 3, 5, 2]
    assert "before the first status sample" in found[0].message and "after the last status sample" in found[-1].message
