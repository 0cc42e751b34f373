"""The collector vote path, scripted in the deterministic simulation (tests/sim): lying and silent
collectors, a poisoned share, a lock carried by VIEW-CHANGE as one aggregate, and the checker.

n = 4, equal stakes: the leader of view v at height 1 is node (v + 1) % 4, and the view's collectors
(``collectors`` = 2) are its leader and the next: nodes 1 and 2 for view 0, nodes 2 and 3 for view 1.
The random families of tests/test_simulation.py run on this path too; these pin the cases down.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from popbench import bls
from popbench.model.block import AggregateCertificate, Block, vote_message
from popbench.pop.ledger import GENESIS_HASH, CommittedBlock
from popbench.wire import CommitAggregate, CommitShare, Message, PrepareAggregate, PrepareShare, PrePrepare, ViewChange
from tests.sim.byzantine import COLLECTOR_BEHAVIOURS, Behaviour, ByzantineHost
from tests.sim.invariants import Checker, InvariantViolation
from tests.sim.network import NS_PER_S, EventQueue
from tests.sim.runner import World, item_ids, run_world, sim_genesis, workload
from tests.sim.scheduler import NS_PER_MS, LinkRule, ScriptedAdversary

VOTES = "collector"
HEIGHTS = 3


def _world(rule: LinkRule, byzantine: dict[int, tuple[str, ...]] | None = None) -> World:
    genesis, keys = sim_genesis(4, VOTES)
    events = EventQueue()
    adversary = ScriptedAdversary(rule, lambda: events.now_ns)
    return World(genesis, keys, events, adversary, byzantine or {}, random.Random(16), item_ids(workload(4, votes=VOTES)))


def _everything(now_ns: int, src: int, dst: int, message: Message) -> bool:
    return True


def _run(world: World, until_ns: int, then: Callable[[], None], heights: int = HEIGHTS) -> None:
    """Give every node the items of ``heights`` blocks, start them, run until every honest node has them,
    then check ``then`` (before the databases close)."""
    genesis = world.network.genesis
    items = workload(4, votes=VOTES)[: heights * genesis.params.batch_size]

    def body() -> None:
        for host in world.hosts:
            for item in items:
                host.admission.admit(*item, relay=False)
        for host in world.hosts:
            host.start()
        if not world.run_until(until_ns, lambda: min(world.honest_heights().values()) >= heights):
            raise InvariantViolation(f"LIVENESS: heights {world.honest_heights()} by {until_ns / NS_PER_S:.1f} s")
        then()

    run_world(world, "schedule: a scripted collector-path test\nreplay: -k test_collector_votes", body)


def test_honest_collectors_commit_with_certificates_and_no_fallback() -> None:
    world = _world(_everything)

    def check() -> None:
        for host in world.hosts:
            assert host.engine.collector_fallbacks == 0
            certificate = CommittedBlock.decode(host.ledger.committed_records(1, 1)[0]).certificate
            assert isinstance(certificate, AggregateCertificate)  # the ledger keeps one aggregate per block
            assert host.counters.protocol_errors == 0

    _run(world, 2 * NS_PER_S, check)


def test_collectors_that_send_nothing_make_the_view_fall_back_to_all_to_all_and_commit_in_it() -> None:
    """Node 2 (a collector of view 0) is silent and node 1's certificates are lost: no certificate
    reaches anyone, so each replica's collector timer (100 ms here, the view timer 400 ms) makes it vote
    all-to-all, and height 1 commits in view 0 without a view change."""

    def node_1s_certificates_lost(now_ns: int, src: int, dst: int, message: Message) -> bool:
        return not (src == 1 and isinstance(message, PrepareAggregate))

    world = _world(node_1s_certificates_lost, {2: ("silent-collector",)})

    def check() -> None:
        for node in world.honest:
            engine = world.hosts[node].engine
            assert engine.collector_fallbacks >= 1, node
            assert engine.host.counters.view_changes == 0, node
            assert CommittedBlock.decode(world.hosts[node].ledger.committed_records(1, 1)[0]).certificate.view == 0

    _run(world, 2 * NS_PER_S, check, heights=1)


@pytest.mark.parametrize("behaviour", sorted(set(COLLECTOR_BEHAVIOURS) - {"silent-collector"}))
def test_a_lying_collector_is_caught_by_one_verify_and_the_honest_collector_carries_the_view(behaviour: str) -> None:
    """Node 2 collects in views 0 and 1 at every height: whatever it sends (a forged bitmap, a bad
    aggregate, a quorum short, certificates for another block or of the other kind) is refused by one
    aggregate check, counted as a protocol error, and the chain goes on with the honest collector's."""
    world = _world(_everything, {2: (behaviour,)})

    def check() -> None:
        assert sum(world.hosts[node].counters.protocol_errors for node in world.honest) >= 1

    _run(world, 5 * NS_PER_S, check)


@pytest.mark.parametrize("kind", ["withhold-certificates", "bad-aggregate", "forged-bitmap"])
def test_a_real_engines_collector_fault_is_refused_and_the_view_commits_by_falling_back(kind: str) -> None:
    """Node 2 runs the collector fault a profile selects (popbench/pop/byzantine.py) and node 1's
    certificates are lost, so node 2's are the only ones nodes 0 and 3 see: each refuses every lying
    certificate (a protocol error), or hears none, and commits height 1 in view 0 by falling back."""

    def node_1s_certificates_lost(now_ns: int, src: int, dst: int, message: Message) -> bool:
        return not (src == 1 and isinstance(message, PrepareAggregate))

    world = _world(node_1s_certificates_lost, {2: ("node:" + kind,)})
    assert world.hosts[0].engine.collectors(0) == (1, 2)

    def check() -> None:
        for node in (0, 3):
            engine = world.hosts[node].engine
            assert engine.collector_fallbacks >= 1 and engine.host.counters.view_changes == 0, node
            lied = kind != "withhold-certificates"
            assert (engine.host.counters.protocol_errors >= 1) == lied, (node, engine.host.counters.protocol_errors)

    _run(world, 2 * NS_PER_S, check, heights=1)


class PoisonedShares(Behaviour):
    """Every share node 3 sends carries a corrupted signature (a valid encoding of the wrong point, or no point)."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if isinstance(message, PrepareShare):
            share = self.host.engine.bls_key.sign(b"not the vote") if self.rng.random() < 0.5 else bytes(96)
            return [type(message)(message.view, message.height, message.block_hash, message.voter, share)]
        return [message]


def test_a_bad_share_fails_the_sum_and_is_found_dropped_and_counted_by_the_collector() -> None:
    """Node 3's shares are poisoned and node 0's first ones lost, so the collectors' first n - f shares
    include node 3's: their sum fails, the collector checks each share alone, drops node 3's (a protocol
    error) and certifies once node 0, its collector timer fired, sends its share to all. No honest
    collector's certificate names node 3."""

    def node_0s_first_shares_lost(now_ns: int, src: int, dst: int, message: Message) -> bool:
        return not (src == 0 and isinstance(message, PrepareShare) and now_ns < 50 * NS_PER_MS)

    world = _world(node_0s_first_shares_lost, {3: ()})
    byzantine = world.hosts[3]
    assert isinstance(byzantine, ByzantineHost)
    byzantine.behaviours.append(PoisonedShares(byzantine))
    genesis = world.network.genesis

    def check() -> None:
        assert sum(world.hosts[node].counters.protocol_errors for node in (1, 2)) >= 1
        for node in world.honest:  # height 1's collectors, 1 and 2, are honest (node 3 collects at heights 2 and 3)
            certificate = CommittedBlock.decode(world.hosts[node].ledger.committed_records(1, 1)[0]).certificate
            assert isinstance(certificate, AggregateCertificate) and 3 not in certificate.signer_ids(genesis)

    _run(world, 5 * NS_PER_S, check, heights=1)


def test_a_lock_travels_in_view_change_as_one_aggregate_and_the_next_view_commits_that_block() -> None:
    """Every node locks on view 0's block (PREPARE certificates delivered), but no COMMIT share or
    certificate of view 0 is: the view times out, the VIEW-CHANGEs carry the lock as a PREPARE aggregate certificate, and view
    1's leader must re-propose exactly that block, which commits."""
    view_changes: list[ViewChange] = []

    def commit_certificates_of_view_0_lost(now_ns: int, src: int, dst: int, message: Message) -> bool:
        if isinstance(message, ViewChange):
            view_changes.append(message)
        return not (isinstance(message, (CommitShare, CommitAggregate)) and message.view == 0)

    world = _world(commit_certificates_of_view_0_lost)
    proposed: list[bytes] = []
    original = world.network.observer.saw_sent

    def watch(src: int, dst: int, message: Message) -> None:
        if isinstance(message, PrePrepare) and message.view == 0 and message.height == 1:
            proposed.append(Block.decode(message.block).hash)
        original(src, dst, message)

    world.network.observer.saw_sent = watch  # type: ignore[method-assign]
    genesis = world.network.genesis

    def check() -> None:
        locked = [vc for vc in view_changes if vc.height == 1 and vc.prepared_block]
        assert locked, "nobody locked in view 0"
        for vc in locked:
            certificate = AggregateCertificate.decode(vc.prepared_votes)
            assert certificate.valid(genesis, 1, Block.decode(vc.prepared_block).hash, "prepare")
        for node in world.honest:
            record = CommittedBlock.decode(world.hosts[node].ledger.committed_records(1, 1)[0])
            assert record.block.hash == proposed[0] and record.certificate.view >= 1

    _run(world, 5 * NS_PER_S, check, heights=1)


# -- the checker judges aggregate certificates ----------------------------------------------------------------
def _aggregate_record(signers: list[int]) -> CommittedBlock:
    genesis, keys = sim_genesis(4, VOTES)
    proposer = genesis.leader_for_view(1)
    block = Block(1, 0, GENESIS_HASH, proposer, 1, Block.items_root_of([], []), bytes(32), [], [])
    message = vote_message("commit", genesis.chain_id, 0, 1, block.hash)
    total = bls.aggregate(bls.bls_key_from_secret(keys[i].secret).sign(message) for i in signers)
    assert total is not None
    return CommittedBlock(block, AggregateCertificate(0, bls.signers_bitmap(signers, 4), total), [], [])


def test_the_checker_refuses_an_aggregate_certificate_short_of_a_quorum_or_with_a_forged_bitmap() -> None:
    genesis, _ = sim_genesis(4, VOTES)
    for record, reason in (
        (_aggregate_record([0, 1]), "2 signers, quorum is 3"),
        (_forged(_aggregate_record([0, 1, 2])), "does not verify"),
    ):
        checker = Checker(genesis, range(4), [])
        checker.saw_sent(record.block.proposer, 0, PrePrepare(0, 1, record.block.encode()))
        with pytest.raises(InvariantViolation, match=f"CERTIFICATE: .*{reason}"):
            checker.saw_commit(0, record)
    good = _aggregate_record([0, 1, 3])
    checker = Checker(genesis, range(4), [])
    checker.saw_sent(good.block.proposer, 0, PrePrepare(0, 1, good.block.encode()))
    checker.saw_commit(0, good)


def _forged(record: CommittedBlock) -> CommittedBlock:
    certificate = record.certificate
    assert isinstance(certificate, AggregateCertificate)
    claimed = AggregateCertificate(certificate.view, bls.signers_bitmap([0, 1, 2, 3], 4), certificate.aggregate)
    return CommittedBlock(record.block, claimed, [], [])


def test_the_collector_path_costs_each_replica_two_aggregate_checks_per_block() -> None:
    """With honest collectors a replica that is not a collector verifies one PREPARE and one COMMIT
    aggregate per block, and no single share: the point of the path."""
    world = _world(_everything)

    def check() -> None:
        counters = world.hosts[0].counters
        items = sum(counters.items_admitted.values())  # each item's signature, at admission
        assert counters.signature_verifications == items + 2  # and the PREPARE and COMMIT certificates

    assert set(world.hosts[0].engine.collectors(0)) == {1, 2}
    _run(world, 2 * NS_PER_S, check, heights=1)
