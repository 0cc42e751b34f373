"""Deterministic simulation of the real PBFT engine under a seeded adversary (package tests/sim).

The default run is 2,500 schedules on the all-to-all vote path (honest 600, byzantine 1,200, ledger
200, node-faults 300, mixed 200; ``Family`` in tests/sim/runner.py says what each runs) and 1,250 of
the same families on the collector path (half as many each; its byzantine menus add the collectors'
lies), in about two minutes on one core. Longer explorations (each family test runs its seeds one
after another, so split a long run over cores by seed range):

    POPBENCH_SIM_SCHEDULES=100000 .venv/bin/python -m pytest tests/test_simulation.py -m simulation -q -s
    POPBENCH_SIM_SCHEDULES=50000 POPBENCH_SIM_SEED_BASE=50000 .venv/bin/python -m pytest tests/test_simulation.py -k byzantine_replicas -q -s

``POPBENCH_SIM_SCHEDULES`` is the number of schedules per family and vote path and
``POPBENCH_SIM_SEED_BASE`` the first seed (0 by default). A failing family lists its failing seeds and
the first one's report; any seed replays alone, with the trace of its last events:

    POPBENCH_SIM_SEED=1234 POPBENCH_SIM_FAMILY=byzantine POPBENCH_SIM_VOTES=collector .venv/bin/python -m pytest tests/test_simulation.py -k replay -q
"""

from __future__ import annotations

import os
import random
import time

import pytest

from popbench.model.block import Block, CommitCertificate, vote_message
from popbench.pop.ledger import GENESIS_HASH, CommittedBlock
from popbench.wire import Commit, Message, Prepare, PrePrepare
from tests.sim.byzantine import Behaviour, ByzantineHost
from tests.sim.invariants import Checker, InvariantViolation
from tests.sim.network import NS_PER_S, EventQueue
from tests.sim.runner import (
    FAMILIES,
    VOTES,
    SimulationFailure,
    World,
    check_liveness,
    item_ids,
    run_schedule,
    run_world,
    sim_genesis,
    workload,
)
from tests.sim.scheduler import NS_PER_MS, ScriptedAdversary

LONG_RUN = "POPBENCH_SIM_SCHEDULES" in os.environ
pytestmark = [pytest.mark.simulation, pytest.mark.timeout(0 if LONG_RUN else 600)]  # a long exploration has no deadline

SCHEDULES = {"honest": 600, "byzantine": 1200, "ledger": 200, "node-faults": 300, "mixed": 200}  # ~1 minute in all
COLLECTOR_SHARE = 2  # the collector path runs 1 / COLLECTOR_SHARE as many of each (~1 minute more)
SEED_BASE = int(os.environ.get("POPBENCH_SIM_SEED_BASE", "0"))
FAILURES_LISTED = 20


def schedule_count(family: str, votes: str = "all-to-all") -> int:
    default = SCHEDULES[family] // (COLLECTOR_SHARE if votes == "collector" else 1)
    return int(os.environ.get("POPBENCH_SIM_SCHEDULES", default))


def explore(family: str, votes: str = "all-to-all") -> None:
    """Run this family's seeds; fail with the count, the failing seeds and the first one's full report."""
    count = schedule_count(family, votes)
    failures: list[tuple[int, SimulationFailure]] = []
    started = time.perf_counter()
    for seed in range(SEED_BASE, SEED_BASE + count):
        try:
            run_schedule(seed, family, votes)
        except SimulationFailure as failure:
            failures.append((seed, failure))
    elapsed_s = time.perf_counter() - started
    print(f"{family} ({votes}): {count} schedules in {elapsed_s:.1f} s ({count / elapsed_s:.0f}/s), {len(failures)} failed")
    if failures:
        seeds = ", ".join(str(seed) for seed, _ in failures[:FAILURES_LISTED])
        raise AssertionError(f"{len(failures)} of {count} {family} {votes} schedules failed (seeds {seeds}); the first:\n{failures[0][1]}")


# -- the random schedules, on both vote paths --------------------------------------------------------------
@pytest.mark.parametrize("votes", VOTES)
def test_schedules_with_an_unreliable_network_and_restarts_keep_agreement_validity_and_liveness(votes: str) -> None:
    explore("honest", votes)


@pytest.mark.parametrize("votes", VOTES)
def test_schedules_with_byzantine_replicas_keep_agreement_validity_and_liveness(votes: str) -> None:
    explore("byzantine", votes)


@pytest.mark.parametrize("votes", VOTES)
def test_schedules_with_a_leader_that_lists_an_item_twice_commit_only_valid_blocks(votes: str) -> None:
    explore("ledger", votes)


@pytest.mark.parametrize("votes", VOTES)
def test_schedules_with_the_node_faults_a_profile_can_select_keep_agreement_validity_and_liveness(votes: str) -> None:
    explore("node-faults", votes)


@pytest.mark.parametrize("votes", VOTES)
def test_schedules_with_a_byzantine_replica_and_a_restarted_one_keep_agreement_validity_and_liveness(votes: str) -> None:
    explore("mixed", votes)


@pytest.mark.skipif("POPBENCH_SIM_SEED" not in os.environ, reason="set POPBENCH_SIM_SEED (and POPBENCH_SIM_FAMILY) to replay one schedule")
def test_replay_one_seed() -> None:
    family = os.environ.get("POPBENCH_SIM_FAMILY", "byzantine")
    votes = os.environ.get("POPBENCH_SIM_VOTES", "all-to-all")
    assert family in FAMILIES, f"POPBENCH_SIM_FAMILY must be one of {FAMILIES}"
    assert votes in VOTES, f"POPBENCH_SIM_VOTES must be one of {VOTES}"
    outcome = run_schedule(int(os.environ["POPBENCH_SIM_SEED"]), family, votes)
    print(f"passed: {outcome}")


@pytest.mark.parametrize("votes", VOTES)
def test_the_same_seed_runs_the_same_schedule(votes: str) -> None:
    """Same seed, same run: the event count, the virtual time and every honest head."""
    for seed in (3, 17, 42):
        first, second = run_schedule(seed, "byzantine", votes), run_schedule(seed, "byzantine", votes)
        assert first == second


def test_a_failure_report_names_the_seed_the_command_to_rerun_and_the_last_events() -> None:
    world = _item1_world()

    def explode() -> None:
        raise RuntimeError("boom")

    def body() -> None:
        for host in world.hosts:
            host.start()
        world.network.events.after_ns(NS_PER_MS, explode)
        world.run_until(10 * NS_PER_MS)

    with pytest.raises(SimulationFailure) as failure:
        run_world(world, "seed: 99\nreplay: the command", body)
    report = str(failure.value)
    assert "CRASH: RuntimeError: boom" in report and "seed: 99" in report and "replay: the command" in report
    assert "last " in report and "events:" in report


# -- the checker catches what it must -----------------------------------------------------------------------
def _committed(height: int, view: int, prev_hash: bytes, stamp: int, signers: int) -> CommittedBlock:
    """A block of no items led by the view's leader, with COMMIT signatures of the first ``signers`` validators."""
    genesis, keys = sim_genesis(4)
    proposer = genesis.leader_for_view(view + height)
    block = Block(height, view, prev_hash, proposer, stamp, Block.items_root_of([], []), bytes(32), [], [])
    message = vote_message("commit", genesis.chain_id, view, height, block.hash)
    return CommittedBlock(block, CommitCertificate(view, [(v, keys[v].sign(message)) for v in range(signers)]), [], [])


def _checker_that_saw(*records: CommittedBlock) -> Checker:
    genesis, _ = sim_genesis(4)
    checker = Checker(genesis, range(4), [])
    for record in records:
        block = record.block
        checker.saw_sent(block.proposer, 0, PrePrepare(block.view, block.height, block.encode()))
    return checker


def test_the_checker_reports_two_blocks_committed_at_one_height() -> None:
    first, second = _committed(1, 0, GENESIS_HASH, 1, 3), _committed(1, 1, GENESIS_HASH, 2, 3)
    checker = _checker_that_saw(first, second)
    checker.saw_commit(0, first)
    checker.saw_commit(1, first)
    with pytest.raises(InvariantViolation, match=r"AGREEMENT: node 2 committed block .* at height 1"):
        checker.saw_commit(2, second)


def test_the_checker_reports_a_certificate_short_of_a_quorum() -> None:
    record = _committed(1, 0, GENESIS_HASH, 1, 2)
    with pytest.raises(InvariantViolation, match=r"CERTIFICATE: node 0 .* 2 signatures, quorum is 3"):
        _checker_that_saw(record).saw_commit(0, record)


def test_the_checker_reports_a_block_no_leader_proposed_or_off_the_chain() -> None:
    unproposed = _committed(1, 0, GENESIS_HASH, 1, 3)
    with pytest.raises(InvariantViolation, match="that no leader proposed"):
        _checker_that_saw().saw_commit(0, unproposed)
    orphan = _committed(2, 0, bytes(range(32)), 1, 3)
    with pytest.raises(InvariantViolation, match="does not extend the agreed block at height 1"):
        _checker_that_saw(orphan).saw_commit(0, orphan)


# -- issue 9, item 1, scripted exactly ---------------------------------------------------------------------
# n = 4, equal stakes: the leader of view v at height 1 is node (v + 1) % 4. Node 1 leads view 0 and
# node 2 view 1; node 3 is Byzantine.
PHASE_B_NS = 100 * NS_PER_MS  # node 1 has committed B by then; from now on it is cut off
HEAL_NS = 2000 * NS_PER_MS


class Item1Voter(Behaviour):
    """Node 3: a PREPARE with a bad signature to nodes 0 and 2, a valid one to node 1, with a COMMIT
    for the same block to node 1 although it never prepared it."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if type(message) is not Prepare or message.view != 0:
            return [message]
        if dst == 1:
            return [message, self.host.signed_vote(Commit, message.view, message.height, message.block_hash)]
        return [Prepare(message.view, message.height, message.block_hash, message.voter, _corrupt(message.signature))]


def _corrupt(signature: bytes) -> bytes:
    return signature[:10] + bytes([signature[10] ^ 1]) + signature[11:]


def _item1_links(now_ns: int, src: int, dst: int, message: Message) -> bool:
    """Which messages the script lets through (the rest are lost for good)."""
    if now_ns >= HEAL_NS:
        return True
    if now_ns >= PHASE_B_NS:
        return 1 not in (src, dst)  # node 1, having committed B, is cut off while the others move on
    kind = type(message)
    if kind is Commit:
        return dst == 1  # only node 1 collects COMMITs for B
    if kind is Prepare:
        if dst == 0:
            return src == 1  # node 0 sees too few PREPAREs to lock
        if dst == 2:
            return src != 0  # node 2 locks on {1, 2, 3}, node 3's signature bad
        if dst == 3:
            return False  # node 3's engine never locks (it lies about B's COMMIT instead)
    return True


def _item1_world() -> World:
    genesis, keys = sim_genesis(4)
    items = workload(4)
    events = EventQueue()
    world = World(genesis, keys, events, ScriptedAdversary(_item1_links, lambda: events.now_ns), {3: ()}, random.Random(9), item_ids(items))
    byzantine = world.hosts[3]
    assert isinstance(byzantine, ByzantineHost)
    byzantine.behaviours.append(Item1Voter(byzantine))
    return world


def test_byzantine_bad_signature_prepare_does_not_split_chain() -> None:
    """Issue 9, item 1: node 1 commits B in view 0 with node 3's valid votes; nodes 0 and 2 time out;
    node 2 leads view 1 with view changes from 0, 2, 3 whose only certificate (node 2's) holds node 3's
    bad PREPARE signature. Whatever the engine does, honest chains must agree (checked at every commit,
    and at the end in the three honest databases) and keep growing."""
    genesis, _ = sim_genesis(4)
    assert [genesis.leader_for_view(v + 1) for v in (0, 1)] == [1, 2]
    world = _item1_world()
    items = workload(4)
    batch, load = items[: genesis.params.batch_size], list(items[genesis.params.batch_size :])

    def script() -> None:
        for node in range(4):
            for item in batch:
                world.hosts[node].admission.admit(*item, relay=False)
        for host in world.hosts:
            host.start()
        world.run_until(HEAL_NS)
        check_liveness(world, HEAL_NS, tuple(load))
        stored = {node: dict(world.hosts[node].store.block_hashes()) for node in (0, 1, 2)}
        shared = set.intersection(*(set(chain) for chain in stored.values()))
        assert shared and all(len({chain[h] for chain in stored.values()}) == 1 for h in shared), stored

    identity = "schedule: issue 9 item 1, scripted\nreplay: .venv/bin/python -m pytest tests/test_simulation.py -k bad_signature_prepare -q"
    run_world(world, identity, script)


# -- catching up after the load stops ---------------------------------------------------------------------
CUT_OFF_UNTIL_NS = 3000 * NS_PER_MS


def _node_3_cut_off(now_ns: int, src: int, dst: int, message: Message) -> bool:
    return now_ns >= CUT_OFF_UNTIL_NS or 3 not in (src, dst)


def test_a_node_cut_off_for_several_blocks_catches_up_after_the_load_stops() -> None:
    """Node 3 is cut off while the others commit three blocks, then its links come back (as node.py
    reconnects, asking each peer for the next block) and no client submits anything more: it must still
    reach the others' height."""
    genesis, keys = sim_genesis(4)
    items = workload(4)
    events = EventQueue()
    adversary = ScriptedAdversary(_node_3_cut_off, lambda: events.now_ns, reconnect_ns=100 * NS_PER_MS)
    world = World(genesis, keys, events, adversary, {}, random.Random(4), item_ids(items))

    def caught_up() -> bool:
        heights = world.honest_heights().values()
        return min(heights) == max(heights) >= 3

    def script() -> None:
        for host in world.hosts[:3]:
            for item in items[: 3 * genesis.params.batch_size]:
                host.submit(*item)
        for host in world.hosts:
            host.start()
        world.run_until(CUT_OFF_UNTIL_NS)
        assert min(world.honest_heights()[n] for n in (0, 1, 2)) >= 3, world.honest_heights()
        if not world.run_until(CUT_OFF_UNTIL_NS + 30 * NS_PER_S, caught_up):
            raise InvariantViolation(f"LIVENESS: 30 s after its links came back, heights are {world.honest_heights()}")

    run_world(world, "schedule: node 3 cut off for three blocks, then no load\nreplay: -k catches_up_after_the_load_stops", script)
