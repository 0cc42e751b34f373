"""What a live watcher derives from the collector's samples (harness/observe/live.py, health.py): the
health rule, latency measurements, throughput, stalls and findings, on samples with known answers."""

from __future__ import annotations

import pytest

from harness.observe.collect import ProcessSample, Sample
from harness.observe.health import Health, HealthInputs, judge
from harness.observe.live import LiveState
from harness.observe.service_live import ServiceLive
from popbench.wire.status import CounterTotals, PopStatus, Summary

S = 1_000_000_000


def pop(node: int, height: int, *, rounds: int = 0, round_s: float = 0.0, proofs: int = 0, views: int = 0, mempool: int = 0,
        pid: int = 0, uptime_s: float = 1.0, peer_ids: list[int] | None = None) -> PopStatus:  # fmt: skip
    counters = CounterTotals(proofs_committed=proofs, blocks_committed=height, view_changes=views)
    return PopStatus(
        node_id=node, role="validator", pid=pid or 100 + node, uptime_s=uptime_s, height=height, head_hash="00", view=views,
        leader=0, peers=3, peer_ids=peer_ids or [], clients=0, mempool=mempool, crypto_backend="coincurve",
        round_time_s=Summary(rounds, round_s, round_s), last_commit_ns=0, proposals_refused={}, blocks_fetched=0,
        sync_failures=0, counters=counters,
    )  # fmt: skip


def sample(at_s: float, statuses: list[PopStatus], alive: list[int] | None = None, rss: dict[int, int] | None = None) -> Sample:
    alive = [s.node_id for s in statuses] if alive is None else alive
    rss = rss or {}
    processes = {n: ProcessSample(cpu_s=at_s / 2, uss_bytes=None, open_files=9, ctx_switches=0, rss_bytes=rss.get(n, 50 << 20))
                 for n in alive}  # fmt: skip
    return Sample(int(at_s * S), {s.node_id: s for s in statuses}, processes, 0.0)


def four(at_s: float, height: int, up: tuple[int, ...] = (0, 1, 2, 3), **fields: int | float) -> Sample:
    statuses = [pop(n, height, uptime_s=at_s, **fields) for n in up]  # type: ignore[arg-type]
    return sample(at_s, statuses)


@pytest.mark.parametrize(("down", "stalled", "views", "expected"), [
    (0, False, 0, Health.HEALTHY), (1, False, 0, Health.DEGRADED), (0, False, 2, Health.DEGRADED),
    (2, False, 0, Health.CRITICAL), (0, True, 0, Health.CRITICAL), (4, False, 0, Health.CRITICAL),
])  # fmt: skip
def test_the_health_rule_of_four_validators(down: int, stalled: bool, views: int, expected: Health) -> None:
    health, reasons = judge(HealthInputs(nodes=4, down=down, f=1, stalled=stalled, recent_view_changes=views, tips_split=False))
    assert health is expected
    assert bool(reasons) == (expected is not Health.HEALTHY)


def test_one_node_down_of_four_is_degraded_and_said_once() -> None:
    live = LiveState(range(4), "pbft", 1.0, f=1, processes_known={0, 1, 2, 3})
    live.observe(four(1.0, 5))
    found = live.observe(sample(2.0, [pop(n, 6, uptime_s=2.0) for n in (0, 1, 2)], alive=[0, 1, 2]))
    assert [(f.kind, f.message) for f in found] == [("node-down", "node 3 down: its process is gone")]
    assert live.health() == (Health.DEGRADED, ["1 node down <= f = 1"])
    assert live.nodes[3].state == "down" and live.nodes[3].status is not None  # it keeps its last answer
    assert live.observe(sample(3.0, [pop(n, 7, uptime_s=3.0) for n in (0, 1, 2)], alive=[0, 1, 2])) == []
    back = live.observe(four(4.0, 8))
    assert [f.kind for f in back] == ["node-back"] and live.health()[0] is Health.HEALTHY


def test_latency_is_the_mean_round_time_of_the_rounds_committed_since_the_previous_answer() -> None:
    live = LiveState(range(2), "pbft", 1.0, f=0)
    live.observe(sample(1.0, [pop(0, 10, rounds=10, round_s=1.0, uptime_s=1), pop(1, 10, rounds=10, round_s=1.0, uptime_s=1)]))
    live.observe(sample(2.0, [pop(0, 20, rounds=20, round_s=3.0, uptime_s=2), pop(1, 20, rounds=20, round_s=2.0, uptime_s=2)]))
    assert list(live.latency_s) == [pytest.approx(3.0 / 20)]  # (2.0 + 1.0) s over 20 rounds
    live.observe(sample(3.0, [pop(0, 20, rounds=20, round_s=3.0, uptime_s=3), pop(1, 20, rounds=20, round_s=2.0, uptime_s=3)]))
    assert len(live.latency_s) == 1  # nothing committed: no measurement


def test_a_restarted_node_is_not_differenced_against_its_previous_process() -> None:
    live = LiveState([0], "pbft", 1.0, f=0)
    live.observe(sample(1.0, [pop(0, 50, rounds=50, round_s=5.0, views=3, uptime_s=30)]))
    found = live.observe(sample(2.0, [pop(0, 50, rounds=2, round_s=0.1, views=0, pid=999, uptime_s=0.5)]))
    assert not live.latency_s and not [f for f in found if f.kind == "view-change"]


def test_throughput_now_and_on_average() -> None:
    live = LiveState(range(4), "pbft", 1.0, f=1)
    live.observe(four(1.0, 1, proofs=0))
    live.observe(four(2.0, 2, proofs=300))
    live.observe(four(3.0, 3, proofs=400))
    assert live.throughput_now == pytest.approx(100.0)
    assert live.throughput_avg == pytest.approx(200.0)


def test_a_stall_needs_more_than_two_intervals_without_a_block_and_items_waiting() -> None:
    live = LiveState(range(4), "pbft", 1.0, f=1)
    live.observe(four(1.0, 5, mempool=0))
    assert live.observe(four(5.0, 5, mempool=0)) == []  # idle: nothing to commit is not a stall
    live.observe(four(6.0, 6, mempool=40))
    assert live.observe(four(8.0, 6, mempool=40)) == []  # two intervals: not yet
    found = live.observe(four(8.5, 6, mempool=40))
    assert [f.kind for f in found] == ["stall"] and live.health()[0] is Health.CRITICAL
    assert [f.kind for f in live.observe(four(9.5, 7, mempool=1))] == ["stall-over"]


def test_a_view_change_is_a_finding_and_degrades_for_two_intervals() -> None:
    live = LiveState(range(4), "pbft", 1.0, f=1)
    live.observe(four(1.0, 5, views=0))
    found = live.observe(four(2.0, 6, views=1))
    assert [f.message for f in found] == ["4 view changes: now view 1"]
    assert live.health()[0] is Health.DEGRADED
    live.observe(four(3.0, 7, views=1))
    live.observe(four(4.0, 8, views=1))
    live.observe(four(5.0, 9, views=1))
    assert live.health()[0] is Health.HEALTHY


def mesh(at_s: float, height: int, cut: tuple[int, int] | None = None, **fields: int | float) -> Sample:
    """Four nodes in a full mesh, with one link ``cut`` (both ends say so)."""

    def peers(n: int) -> list[int]:
        return [p for p in range(4) if p != n and (cut is None or {n, p} != set(cut))]

    return sample(at_s, [pop(n, height, uptime_s=at_s, peer_ids=peers(n), **fields) for n in range(4)])  # type: ignore[arg-type]


def test_a_link_lost_between_two_live_nodes_is_a_finding_and_the_least_share_says_so() -> None:
    live = LiveState(range(4), "pbft", 1.0, f=1, intended_links=dict.fromkeys(range(4), 3))
    live.observe(mesh(1.0, 5))
    assert live.links_share == 1.0
    found = live.observe(mesh(2.0, 6, cut=(1, 3)))
    assert [(f.kind, f.message) for f in found] == [("link-lost", "link lost: 1-3")]
    assert live.links_share == pytest.approx(2 / 3)
    service = live.service_now()
    assert service.holds is False and "links least 67 % < 100 %" in service.parts
    assert live.observe(mesh(3.0, 7, cut=(1, 3))) == []  # said once


def test_a_node_down_explains_its_links_no_link_finding_for_them() -> None:
    live = LiveState(range(4), "pbft", 1.0, f=1, processes_known={0, 1, 2, 3})
    live.observe(mesh(1.0, 5))
    after = sample(2.0, [pop(n, 6, uptime_s=2.0, peer_ids=[p for p in range(3) if p != n]) for n in range(3)], alive=[0, 1, 2])
    assert [f.kind for f in live.observe(after)] == ["node-down"]


def test_memory_growth_over_a_minute_is_a_finding_and_flat_memory_is_not() -> None:
    live = LiveState(range(2), "pbft", 1.0, f=0)
    mib = 2**20
    for second in range(40, 170, 10):  # node 0 flat at 50 MiB; node 1 grows 0.5 MiB/s (30 MiB a minute)
        rss = {0: 50 * mib, 1: int((50 + 0.5 * (second - 40)) * mib)}
        found = live.observe(sample(second, [pop(n, second, uptime_s=second) for n in range(2)], rss=rss))
        grown = [f.message for f in found if f.kind == "memory-growth"]
        if second in (100, 160):
            assert grown == [f"memory growth in 60 s (RSS): node 1 {50 + 0.5 * (second - 100):.0f} -> {50 + 0.5 * (second - 40):.0f} MiB"]
        else:
            assert grown == [], second


def test_the_service_level_uses_the_runs_drivers_when_they_report() -> None:
    live = LiveState(range(4), "pbft", 1.0, f=1, intended_links=dict.fromkeys(range(4), 3))
    live.observe(mesh(1.0, 5, rounds=5, round_s=0.25))
    live.observe(mesh(2.0, 6, rounds=6, round_s=0.30))
    default = live.service_now()  # no drivers: consensus latency against the default L
    assert default.holds is True and default.parts == ["round 50 ms <= L 2,000 ms", "links least 100 % >= 100 %", "no stall"]
    slo = {"latency_target_ms": 500.0, "within_share": 0.99, "min_delivery": 0.95, "min_links_share": 1.0}
    live.drivers_said(ServiceLive(at_ns=1 * S, drivers=1, p99_ms=300.0, sent=1000, committed=900, outstanding=100, **slo))
    live.drivers_said(ServiceLive(at_ns=2 * S, drivers=1, p99_ms=650.0, sent=1200, committed=1080, outstanding=120, **slo))
    run = live.service_now()
    assert run.holds is False
    assert run.parts == ["p99 650 ms > L 500 ms", "delivery 90.0 % < 95 %", "links least 100 % >= 100 %", "no stall"]
