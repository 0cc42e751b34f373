"""harness/metrics/cost.py on samples with known answers: exact window edges, the fallback to the nearest
periodic samples, a restarted node left out, the harness's own STATUS traffic left out of messages."""

from __future__ import annotations

import pytest

from harness.metrics.cost import cost, window_edges
from harness.metrics.throughput import SteadyWindow
from harness.observe.collect import Boundary, ProcessSample, Sample
from popbench.wire.status import CounterTotals, PopStatus, Summary

S = 1_000_000_000  # ns
STEADY = SteadyWindow(10 * S, 20 * S)


def status(node: int, proofs: int, blocks: int, frames: dict[str, int], pid: int = 0) -> PopStatus:
    counters = CounterTotals(proofs_committed=proofs, blocks_committed=blocks, frames_out=frames)
    return PopStatus(
        node_id=node, role="validator", pid=pid or 100 + node, uptime_s=1.0, height=blocks, head_hash="00", view=0, leader=0,
        peers=3, peer_ids=[], clients=0, mempool=0, crypto_backend="coincurve", round_time_s=Summary(), last_commit_ns=0,
        proposals_refused={}, blocks_fetched=0, sync_failures=0, counters=counters,
    )  # fmt: skip


def sample(at_s: float, cpu_s: dict[int, float], proofs: int, blocks: int, frames: dict[str, int], supervisor_s: float,
           driver_s: float, boundary: Boundary | None = None, pids: dict[int, int] | None = None) -> Sample:  # fmt: skip
    pids = pids or {}
    return Sample(
        at_ns=int(at_s * S), statuses={n: status(n, proofs, blocks, frames, pids.get(n, 0)) for n in cpu_s},
        processes={n: ProcessSample(cpu_s=c, uss_bytes=None, open_files=10, ctx_switches=0) for n, c in cpu_s.items()},
        supervisor_cpu_s=supervisor_s, boundary=boundary, harness_cpu_s={"driver-0": driver_s},
    )  # fmt: skip


def test_marked_edges_are_differenced_exactly_and_status_answers_are_not_messages() -> None:
    samples = [
        sample(8.0, {0: 0.5, 1: 0.5}, 100, 5, {"Prepare": 10, "Status": 3}, 1.0, 2.0),
        sample(10.01, {0: 1.0, 1: 2.0}, 150, 10, {"Prepare": 20, "Status": 4}, 1.5, 3.0, Boundary.STEADY_START),
        sample(12.0, {0: 5.0, 1: 5.0}, 900, 40, {"Prepare": 70, "Status": 5}, 2.0, 3.5),  # periodic: ignored
        sample(20.01, {0: 3.0, 1: 4.0}, 1150, 60, {"Prepare": 220, "Status": 9}, 2.5, 4.0, Boundary.STEADY_END),
        sample(22.0, {0: 9.0, 1: 9.0}, 1300, 70, {"Prepare": 300, "Status": 12}, 3.0, 5.0),
    ]
    result = cost(samples, STEADY, window_start_ns=6 * S)
    assert result is not None and result.exact_edges
    assert result.window_start_s == pytest.approx(4.01) and result.window_span_s == pytest.approx(10.0)
    assert result.nodes_measured == 2 and result.node_cpu_s == pytest.approx(4.0)  # (3 - 1) + (4 - 2)
    assert result.proofs_committed == 1000 and result.blocks_committed == 50
    assert result.node_cpu_ms_per_proof == pytest.approx(4.0)  # 4000 ms / 1000 proofs
    assert result.node_cpu_ms_per_block == pytest.approx(80.0)
    assert result.supervisor_cpu_s == pytest.approx(1.0) and result.load_cpu_s == pytest.approx(1.0)
    assert result.harness_cpu_ms_per_proof == pytest.approx(2.0)
    assert result.messages_sent == 400  # 2 nodes x 200 Prepare; the 2 x 5 Status answers to the collector left out
    assert result.messages_per_block == pytest.approx(8.0) and result.messages_per_block_by_type == {"Prepare": 8.0}


def test_without_marked_edges_the_nearest_samples_outside_the_window_are_used() -> None:
    samples = [
        sample(8.0, {0: 1.0}, 100, 10, {}, 1.0, 1.0),
        sample(9.5, {0: 2.0}, 200, 20, {}, 1.0, 1.0),  # the last at or before the start
        sample(15.0, {0: 3.0}, 300, 30, {}, 1.0, 1.0),
        sample(20.5, {0: 4.0}, 400, 40, {}, 1.0, 1.0),  # the first at or after the end
        sample(21.0, {0: 9.0}, 900, 90, {}, 1.0, 1.0),
    ]
    edges = window_edges(samples, STEADY)
    assert edges is not None and [s.at_ns for s in edges[:2]] == [int(9.5 * S), int(20.5 * S)] and edges[2] is False
    result = cost(samples, STEADY, 0)
    assert result is not None and result.node_cpu_ms_per_proof == pytest.approx(2000 / 200)
    assert result.blocks_committed == 20 and result.messages_per_block == 0.0  # blocks, but no frames counted at all


def test_a_node_restarted_inside_the_window_is_left_out_and_no_bracket_gives_none() -> None:
    samples = [
        sample(10.0, {0: 1.0, 1: 1.0}, 100, 10, {}, 1.0, 1.0, Boundary.STEADY_START),
        sample(20.0, {0: 2.0, 1: 0.2}, 200, 20, {}, 1.0, 1.0, Boundary.STEADY_END, pids={1: 999}),  # node 1: a new process
    ]
    result = cost(samples, STEADY, 0)
    assert result is not None and result.nodes_measured == 1 and result.node_cpu_s == pytest.approx(1.0)
    assert cost(samples[:1], STEADY, 0) is None  # nothing at or after the end
    assert cost(samples, None, 0) is None  # no steady window at all
    nothing_committed = [sample(10.0, {0: 1.0}, 5, 1, {}, 1.0, 1.0), sample(20.0, {0: 2.0}, 5, 1, {}, 1.0, 1.0)]
    idle = cost(nothing_committed, STEADY, 0)
    assert idle is not None and idle.node_cpu_ms_per_proof is None and idle.messages_per_block_by_type == {}
