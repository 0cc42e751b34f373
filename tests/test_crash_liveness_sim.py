"""Liveness with a validator down, scripted in the deterministic simulation (issue 20).

On the 2-core host, 4 validators at 200 proofs/s with node 2 killed stopped committing for 14 s: two
live nodes timed out and asked for view v+1; the third, whose timer fires a few milliseconds later
(its process runs late), joined them on their f+1 VIEW-CHANGEs, and then its own old timer fired.
It took that as "a quorum asked for v+1 and still no NEW-VIEW", asked for v+2 and ignored the NEW-VIEW
for v+1 that arrived a millisecond later; view v+1 was one vote short of every quorum, and the timers
backed off 2, 4, 8 s. The schedule below is that run: node 1's timers fire 5 ms late, messages take
2 ms, node 2 is down from the start.
"""

from __future__ import annotations

import itertools
import random

from popbench.events import MemoryEvents
from tests.sim.invariants import InvariantViolation
from tests.sim.network import NS_PER_S, EventQueue
from tests.sim.runner import World, item_ids, run_world, sim_genesis, workload
from tests.sim.scheduler import NS_PER_MS, ScriptedAdversary

LATE_NODE, LATE_BY_NS = 1, 5 * NS_PER_MS
CRASHED = 2
RUN_NS = 20 * NS_PER_S


class LateTimers(ScriptedAdversary):
    """Every message arrives in 2 ms; one node's timers fire 5 ms after they are due."""

    def timer_delay_ns(self, node: int, delay_s: float) -> int:
        return round(delay_s * 1e9) + (LATE_BY_NS if node == LATE_NODE else 0)


def _world() -> tuple[World, dict[int, MemoryEvents]]:
    genesis, keys = sim_genesis(4)
    events = EventQueue()
    adversary = LateTimers(lambda now, src, dst, message: True, lambda: events.now_ns)
    world = World(genesis, keys, events, adversary, {}, random.Random(20), item_ids(workload(4)))
    world.honest = [node for node in world.honest if node != CRASHED]
    logs = {}
    for host in world.hosts:
        logs[host.node_id] = host.engine.events = MemoryEvents(lambda: events.now_ns)
    return world, logs


def _commit_gaps_ns(world: World) -> list[int]:
    """Run the schedule in 10 ms slices; the virtual times between successive commits at the live nodes."""
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
    return [later - earlier for earlier, later in itertools.pairwise(commits_at)]


def test_one_crashed_validator_of_four_costs_at_most_one_view_timeout_per_missed_turn() -> None:
    world, logs = _world()
    timeout_ns = world.hosts[0].genesis.params.view_timeout_ms * NS_PER_MS
    gaps: list[int] = []

    def script() -> None:
        world.hosts[CRASHED].crash()
        world.keep_submitting(0, list(workload(4)))
        for host in world.hosts:
            if host.up:
                host.start()
        gaps.extend(_commit_gaps_ns(world))
        if len(gaps) < 20:
            raise InvariantViolation(f"LIVENESS: only {len(gaps) + 1} commits in {RUN_NS / NS_PER_S:.0f} virtual s")
        worst = max(gaps)
        if worst > timeout_ns * 3 // 2:
            asked = [row for node in (0, 1, 3) for row in logs[node].rows if row["event"] == "view-change-sent"]
            raise InvariantViolation(
                f"LIVENESS: a gap of {worst / 1e6:.0f} ms between commits with one validator down "
                f"(view timeout {timeout_ns / 1e6:.0f} ms); view changes asked: {asked[:12]}"
            )

    run_world(world, "schedule: node 2 down, node 1's timers 5 ms late\nreplay: -k one_crashed_validator", script)
    assert max(gaps) > 0
