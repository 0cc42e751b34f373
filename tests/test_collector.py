"""The collector keeps its schedule whatever the nodes do (harness/observe/collect.py).

Issue 17 saw the STATUS samples of a 4-node run stop for 6 s after one node was killed, and a 100-node
run print its status line 43 s apart: each sample waited for every node, and a killed node's listening
socket (kept open for its restart) accepted the dial into the kernel's backlog, where it sat until the
handshake timed out. Here a real network of four nodes, its sockets held by the test as the supervisor
holds them, and fakes for what a real node cannot be made to do on cue (hang, answer late).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.observe.collect import Boundary, Collector, Sample, Schedule, next_tick, sample_deadline_s
from popbench.client import NodeClient
from popbench.errors import ClientError
from popbench.wire.status import AnyStatus
from tests.cluster import LocalCluster
from tests.test_cost import status

pytestmark = pytest.mark.timeout(120)
DEADLINE_S = 0.5
KILLED = 2


def test_a_killed_node_delays_no_sample_of_the_others(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 4)
    cluster.start()
    try:
        asyncio.run(cluster.wait_connected())
        pids = {node: proc.pid for node, proc in cluster.procs.items()}
        took, answered = asyncio.run(_sample_around_a_kill(cluster, pids))
    finally:
        cluster.stop(check=False)
    assert answered[0] == {0, 1, 2, 3}
    assert all(nodes == {0, 1, 3} for nodes in answered[1:]), answered
    # each sample ends when the three live nodes have answered: never the 5 s handshake timeout of a dial
    # into the dead node's socket, nor even the deadline
    assert max(took) < DEADLINE_S, took


async def _sample_around_a_kill(cluster: LocalCluster, pids: dict[int, int]) -> tuple[list[float], list[set[int]]]:
    collector = Collector({n: cluster.address(n) for n in range(4)}, cluster.chain_id, pids, deadline_s=DEADLINE_S)
    samples = [await collector.sample()]
    cluster.kill(KILLED)
    samples += [await collector.sample() for _ in range(3)]
    collector.close()
    return [s.took_s or 0.0 for s in samples], [set(s.statuses) for s in samples]


class FakeClient:
    """A node connection whose STATUS answers after ``delay_s`` (None: never)."""

    def __init__(self, status: AnyStatus, delay_s: float | None) -> None:
        self.answer, self.delay_s = status, delay_s
        self.requests = 0
        self.closed = False
        self.conn = self  # what the collector checks: an open connection

    @property
    def is_open(self) -> bool:
        return not self.closed

    async def status(self, timeout_s: float) -> AnyStatus:
        self.requests += 1
        if self.delay_s is None:
            await asyncio.sleep(timeout_s)
            raise ClientError("no Status")
        await asyncio.sleep(self.delay_s)
        return self.answer

    def close(self) -> None:
        self.closed = True


def _collector(delays: dict[int, float | None], dial_hangs: frozenset[int] = frozenset()) -> tuple[Collector, dict[int, FakeClient]]:
    """A collector of fake nodes (the port stands for the node id), each alive as the test's own process."""
    clients = {node: FakeClient(status(node, 0, 0, {}), delay) for node, delay in delays.items()}

    async def dial(host: str, port: int, chain_id: bytes) -> NodeClient:
        if port in dial_hangs:
            await asyncio.sleep(60)  # a socket nobody accepts on: the dial waits in the backlog
        return clients[port]  # type: ignore[return-value]

    pids = dict.fromkeys(delays, os.getpid())
    return Collector({node: ("127.0.0.1", node) for node in delays}, b"c" * 32, pids, deadline_s=DEADLINE_S, dial=dial), clients


def test_a_node_that_never_answers_costs_one_deadline_and_is_not_asked_again_meanwhile() -> None:
    async def body() -> tuple[list[Sample], dict[int, FakeClient]]:
        collector, clients = _collector({0: 0.0, 1: 0.0, 2: None})
        samples = [await collector.sample() for _ in range(3)]
        collector.close()
        return samples, clients

    samples, clients = asyncio.run(body())
    assert [set(s.statuses) for s in samples] == [{0, 1}] * 3
    assert all((s.took_s or 0.0) < DEADLINE_S + 0.3 for s in samples)
    assert clients[2].requests == 1  # its one request stays in flight: a starved node is not asked three times
    assert clients[0].requests == 3


def test_a_late_answer_is_dropped_and_a_hanging_dial_delays_nobody() -> None:
    async def body() -> list[Sample]:
        collector, _ = _collector({0: 0.0, 1: DEADLINE_S * 1.5, 2: 0.0}, dial_hangs=frozenset({2}))
        first = await collector.sample()
        await asyncio.sleep(DEADLINE_S)  # node 1's answer arrives now, after its sample's deadline
        second = await collector.sample()
        collector.close()
        return [first, second]

    first, second = asyncio.run(body())
    assert set(first.statuses) == {0}  # node 1 answered late, node 2 never got connected
    assert set(second.statuses) == {0}  # the late answer is stale: a fresh request went out, late again
    assert all(len(s.processes) == 3 for s in (first, second))  # all three are alive as processes


def test_a_gone_process_is_not_dialled() -> None:
    dialled: list[int] = []

    async def body() -> Sample:
        collector, _ = _collector({0: 0.0, 1: 0.0})
        gone = subprocess.Popen(["true"])
        gone.wait()
        collector.pids[1] = gone.pid
        original = collector.dial

        async def counting(host: str, port: int, chain_id: bytes) -> NodeClient:
            dialled.append(port)
            return await original(host, port, chain_id)

        collector.dial = counting
        sample = await collector.sample()
        collector.close()
        return sample

    sample = asyncio.run(body())
    assert set(sample.statuses) == {0} and set(sample.processes) == {0} and dialled == [0]


def test_periodic_samples_keep_their_grid_while_a_node_hangs() -> None:
    interval_s = 0.25

    async def body() -> list[float]:
        collector, _ = _collector({0: 0.0, 1: None})
        collector.deadline_s = sample_deadline_s(interval_s)
        stop = asyncio.Event()
        starts: list[float] = []
        asyncio.get_running_loop().call_later(2.0, stop.set)
        await collector.run(interval_s, stop, lambda sample: starts.append(time.monotonic()))
        collector.close()
        return starts

    starts = asyncio.run(body())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 7 and max(gaps) < interval_s * 1.6, gaps


@pytest.mark.parametrize(("now", "expected"), [(0.1, 1.0), (1.0, 2.0), (3.7, 4.0)])
def test_an_overrun_skips_the_ticks_it_missed(now: float, expected: float) -> None:
    assert next_tick(0.0, 1.0, now) == pytest.approx(expected)


def test_a_sample_waits_at_most_most_of_an_interval() -> None:
    assert sample_deadline_s(1.0) == pytest.approx(0.8)
    assert sample_deadline_s(60.0) == pytest.approx(5.0)


def test_a_boundary_replaces_the_grid_tick_beside_it_and_is_never_lost() -> None:
    schedule = Schedule(first=0.0, interval_s=1.0, boundaries=[(2.1, Boundary.STEADY_START), (4.5, Boundary.STEADY_END)], min_gap_s=0.2)
    assert schedule.next(0.0) == (1.0, None)
    assert schedule.next(1.0) == (2.1, Boundary.STEADY_START)  # the tick at 2.0 is dropped: the boundary stands for it
    assert schedule.next(2.1) == (3.0, None)
    assert schedule.room_after(3.0) == pytest.approx(1.0)
    assert schedule.room_after(4.0) == pytest.approx(0.5)  # a sample at 4.0 must end before the boundary at 4.5
    assert schedule.next(4.7) == (4.5, Boundary.STEADY_END)  # overran: sampled at once, late
    assert schedule.next(4.7) == (5.0, None)


def test_a_tick_overrun_by_a_little_is_sampled_late_not_skipped() -> None:
    """The 100-validator run: the steady-start sample at 10 s had room to the tick at 14 s and ended at
    14.18 s; skipping that tick left 9 s between lines at a 5 s interval."""
    schedule = Schedule(first=-1.0, interval_s=5.0, boundaries=[(10.0, Boundary.STEADY_START)], min_gap_s=1.0)
    assert schedule.next(-1.0) == (4.0, None)
    assert schedule.next(5.2) == (9.0, None)
    assert schedule.next(10.0) == (10.0, Boundary.STEADY_START)
    assert schedule.next(14.18) == (14.18, None)  # 0.18 s late: at once, not at 19
    assert schedule.next(14.3) == (19.0, None)  # that tick is taken: never twice
    assert schedule.next(25.5) == (29.0, None)  # 1.5 s late, more than the gap: skipped, not caught up


def test_boundary_samples_come_on_time_between_periodic_ones_and_are_heard() -> None:
    interval_s = 0.3

    async def body() -> tuple[list[Sample], int]:
        collector, _ = _collector({0: 0.0, 1: None})  # node 1 makes every sample wait its whole deadline
        collector.deadline_s = sample_deadline_s(interval_s)
        stop = asyncio.Event()
        heard: list[Sample] = []
        edge_ns = time.time_ns() + 700_000_000
        asyncio.get_running_loop().call_later(1.5, stop.set)
        await collector.run(interval_s, stop, heard.append, [(edge_ns, Boundary.STEADY_START)])
        collector.close()
        return heard, edge_ns

    heard, edge_ns = asyncio.run(body())
    marked = [s for s in heard if s.boundary is Boundary.STEADY_START]
    assert len(marked) == 1
    started_ns = marked[0].at_ns - int((marked[0].took_s or 0.0) * 1e9)
    assert abs(started_ns - edge_ns) < 100_000_000  # started on time: it did not wait for a periodic sample
