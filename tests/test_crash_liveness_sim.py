"""Liveness with a validator down, scripted in the deterministic simulation (issue 20).

On the 2-core host, 4 validators at 200 proofs/s with node 2 killed stopped committing for 14 s: two
live nodes timed out and asked for view v+1; the third, whose timer fires a few milliseconds later
(its process runs late), joined them on their f+1 VIEW-CHANGEs, and then its own old timer fired.
It took that as "a quorum asked for v+1 and still no NEW-VIEW", asked for v+2 and ignored the NEW-VIEW
for v+1 that arrived a millisecond later; view v+1 was one vote short of every quorum, and the timers
backed off 2, 4, 8 s. The schedule below is that run: node 1's timers fire 5 ms late, messages take
2 ms, node 2 is down from the start. Then the same with f = 2 of 7 down: with leader reputation
(popbench/pop/leaders.py) a crashed validator is left out of the rotation after its first missed turn
and retried rarely, on a short probation timeout, so after a settling time no gap between commits
comes near a view timeout.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from popbench.events import MemoryEvents
from popbench.wire import Message
from tests.sim.invariants import InvariantViolation
from tests.sim.network import NS_PER_S, EventQueue
from tests.sim.runner import World, item_ids, run_world, sim_genesis, workload
from tests.sim.scheduler import NS_PER_MS, ScriptedAdversary

LATE_NODE, LATE_BY_NS = 1, 5 * NS_PER_MS
RUN_NS = 20 * NS_PER_S
SETTLED_NS = 5 * NS_PER_S  # by then each crashed validator has missed its turn and been left out
# Once settled, a gap is at most the client's interval between items (100 ms) plus a probation retry of
# a crashed validator (a quarter of the view timeout): under 3/4 of a timeout, where plain rotation
# costs a whole timeout at every turn of a crashed validator.


class LateTimers(ScriptedAdversary):
    """Every message arrives in 2 ms; one node's timers fire 5 ms after they are due."""

    def timer_delay_ns(self, node: int, delay_s: float) -> int:
        return round(delay_s * 1e9) + (LATE_BY_NS if node == LATE_NODE else 0)


def _world(n: int, crashed: tuple[int, ...]) -> tuple[World, dict[int, MemoryEvents]]:
    genesis, keys = sim_genesis(n)
    events = EventQueue()
    adversary = LateTimers(lambda now, src, dst, message: True, lambda: events.now_ns)
    world = World(genesis, keys, events, adversary, {}, random.Random(20), item_ids(workload(n)))
    world.honest = [node for node in world.honest if node not in crashed]
    logs = {}
    for host in world.hosts:
        logs[host.node_id] = host.engine.events = MemoryEvents(lambda: events.now_ns)
    return world, logs


def _commit_times_ns(world: World) -> list[int]:
    """Run the schedule in 10 ms slices; the virtual times at which every live node had committed one more block."""
    commits_at: list[int] = []
    height = 0
    now = 0
    while now < RUN_NS:
        now += 10 * NS_PER_MS
        world.run_until(now)
        lowest = min(world.honest_heights().values())
        if lowest > height:
            height = lowest
            commits_at.append(now)
    return commits_at


@pytest.mark.parametrize(("n", "crashed"), [(4, (2,)), (7, (2, 5))], ids=["1-of-4", "2-of-7"])
def test_f_crashed_validators_cost_one_view_timeout_each_then_no_gap_near_a_timeout(n: int, crashed: tuple[int, ...]) -> None:
    world, logs = _world(n, crashed)
    timeout_ns = world.hosts[0].genesis.params.view_timeout_ms * NS_PER_MS
    times: list[int] = []

    def script() -> None:
        for node in crashed:
            world.hosts[node].crash()
        world.keep_submitting(0, list(workload(n)))
        for host in world.hosts:
            if host.up:
                host.start()
        times.extend(_commit_times_ns(world))
        if len(times) < 20:
            raise InvariantViolation(f"LIVENESS: only {len(times)} commits in {RUN_NS / NS_PER_S:.0f} virtual s")
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        settled = [later - earlier for earlier, later in itertools.pairwise(t for t in times if t >= SETTLED_NS)]
        asked = [row for node in world.honest for row in logs[node].rows if row["event"] == "view-change-sent"]
        if max(gaps) > timeout_ns * 3 // 2 or max(settled) > timeout_ns * 3 // 4:
            raise InvariantViolation(
                f"LIVENESS: with {list(crashed)} down the longest gap between commits is {max(gaps) / 1e6:.0f} ms "
                f"({max(settled) / 1e6:.0f} ms once settled; view timeout {timeout_ns / 1e6:.0f} ms); "
                f"view changes asked: {asked[:12]}"
            )

    run_world(world, f"schedule: {list(crashed)} of {n} down, node 1's timers 5 ms late\nreplay: -k crashed_validators", script)
    assert len(times) >= 20


# -- f validators paused for a long stretch, then resumed -------------------------------------------------
PAUSE_FROM_NS, PAUSE_UNTIL_NS = 2 * NS_PER_S, 9 * NS_PER_S


class Paused(LateTimers):
    """As SIGSTOP does: nothing reaches the paused nodes' processes and none of their timers fires until they
    resume; what was sent to them waits in the kernel and arrives when they do."""

    def __init__(self, paused: tuple[int, ...], now_ns: Callable[[], int]) -> None:
        super().__init__(lambda now, src, dst, message: True, now_ns)
        self.paused = paused

    def _held_ns(self, node: int, delay_ns: int) -> int:
        due = self.now_ns() + delay_ns
        return PAUSE_UNTIL_NS - self.now_ns() + 1 if node in self.paused and PAUSE_FROM_NS <= due < PAUSE_UNTIL_NS else delay_ns

    def delivery_delays_ns(self, src: int, dst: int, message: Message) -> list[int]:
        return [self._held_ns(dst, delay) for delay in super().delivery_delays_ns(src, dst, message)]

    def timer_delay_ns(self, node: int, delay_s: float) -> int:
        return self._held_ns(node, super().timer_delay_ns(node, delay_s))


@pytest.mark.parametrize(("n", "paused"), [(4, (1,)), (7, (1, 4))], ids=["1-of-4", "2-of-7"])
def test_f_paused_validators_cost_a_view_timeout_each_and_catch_up_when_resumed(n: int, paused: tuple[int, ...]) -> None:
    genesis, keys = sim_genesis(n)
    events = EventQueue()
    world = World(genesis, keys, events, Paused(paused, lambda: events.now_ns), {}, random.Random(21), item_ids(workload(n)))
    timeout_ns = genesis.params.view_timeout_ms * NS_PER_MS
    live = [node for node in range(n) if node not in paused]

    def script() -> None:
        world.honest = live  # the clients and the gap figure count the nodes that run throughout
        world.keep_submitting(0, list(workload(n)))
        for host in world.hosts:
            host.start()
        times = _commit_times_ns(world)
        during = [b - a for a, b in itertools.pairwise(t for t in times if PAUSE_FROM_NS <= t < PAUSE_UNTIL_NS)]
        if not during or max(during) > timeout_ns * 3 // 2 * len(paused):
            raise InvariantViolation(f"LIVENESS: while {list(paused)} were paused the gaps between commits were {during[:20]}")
        world.honest = list(range(n))
        heights = world.honest_heights()
        if min(heights.values()) < max(heights.values()) - 1:
            raise InvariantViolation(f"LIVENESS: {RUN_NS / 1e9:.0f} s in, {RUN_NS / 1e9 - 9:.0f} s after the resume, heights {heights}")

    run_world(world, f"schedule: {list(paused)} of {n} paused 2-9 s\nreplay: -k paused_validators", script)
