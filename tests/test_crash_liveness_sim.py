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

import pytest

from popbench.events import MemoryEvents
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
