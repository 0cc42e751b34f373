"""The PBFT engine under Byzantine voters and view changes, on a hand-scheduled in-memory network.

Each test replays one schedule against real engines (tests/memory_network.py): which votes a lock may
hold, what a leader must re-propose, what a NEW-VIEW lets a locked replica prepare, and that one
voter's two votes never count twice.
"""

from __future__ import annotations

from pathlib import Path

from popbench import crypto
from popbench.model.block import Block, vote_message
from popbench.pop.pbft_round import VoteBook, decode_votes, list_lock_check, prepared_block_of, view_change_message
from popbench.wire import BlockResponse, Commit, NewView, Prepare, PrePrepare, ViewChange
from tests.memory_network import Envelope, MemoryNetwork, leader_of

L0, L1 = leader_of(0), leader_of(1)  # leaders of views 0 and 1 at height 1
OTHERS = [node for node in range(4) if node not in (L0, L1)]


def is_commit(envelope: Envelope) -> bool:
    return type(envelope.message) is Commit


def sent_of(net: MemoryNetwork, kind: type, sender: int) -> list:  # type: ignore[type-arg]
    """What ``sender`` sent of ``kind``, each message once however many peers it went to."""
    messages = {id(e.message): e.message for e in net.sent if type(e.message) is kind and e.sender == sender}
    return list(messages.values())


def assert_agreement(net: MemoryNetwork, honest: list[int]) -> None:
    chains = net.committed_hashes()
    for height in {h for node in honest for h in chains[node]}:
        hashes = {chains[node][height] for node in honest if height in chains[node]}
        assert len(hashes) == 1, f"honest nodes disagree at height {height}: {chains}"


def test_a_bad_signature_prepare_never_enters_a_lock_or_a_view_change(tmp_path: Path) -> None:
    byzantine, victim, other = OTHERS[0], OTHERS[1], L1
    net = MemoryNetwork(tmp_path, faulty={byzantine: "bad-signature-votes"})
    net.give_items(8)
    net.start()

    def held(e: Envelope) -> bool:
        return is_commit(e) or (type(e.message) is Prepare and e.sender == other and e.receiver == victim)

    net.deliver(hold=held)
    assert net.engines[victim].prepared is None, "own, leader's and a bad-signature PREPARE are not a quorum"
    assert net.hosts[victim].counters.protocol_errors == 1
    net.deliver(hold=is_commit)
    lock = net.engines[victim].prepared
    assert lock is not None and set(lock.votes) == {L0, victim, other}
    net.clock.advance(1.0)  # commits are still held: every node times out and asks for view 1
    check = list_lock_check(net.genesis.chain_id, net.genesis.public_keys, net.genesis.quorum, crypto.verify)
    for node in (L0, victim, other):
        vc = sent_of(net, ViewChange, node)[0]
        assert byzantine not in decode_votes(vc.prepared_votes)
        assert prepared_block_of(vc, check) is not None
        from_the_future = ViewChange(vc.prepared_view, 1, node, vc.prepared_view, vc.prepared_block, vc.prepared_votes, vc.signature)
        assert prepared_block_of(from_the_future, check) is None


def test_a_locked_leader_re_proposes_its_lock_byte_for_byte(tmp_path: Path) -> None:
    net = MemoryNetwork(tmp_path)
    net.give_items(8)
    net.start()
    # view 0: only the next leader sees the PREPAREs, so it alone locks; no COMMIT gets anywhere
    net.deliver(keep=lambda e: not is_commit(e) and (type(e.message) is not Prepare or e.receiver == L1))
    original = net.engines[L1].prepared
    assert original is not None and all(net.engines[n].prepared is None for n in range(4) if n != L1)
    net.clock.advance(1.0)
    net.deliver()
    reproposed = {m.block for m in sent_of(net, PrePrepare, L1) if m.view == 1}
    assert reproposed == {original.proposal.raw}
    assert all(host.ledger.head_hash == original.proposal.block.hash for host in net.hosts.values())


def test_a_locked_replica_prepares_the_fresh_block_of_a_new_view_without_certificate(tmp_path: Path) -> None:
    locked = OTHERS[0]
    net = MemoryNetwork(tmp_path)
    net.give_items(8)
    net.start()
    net.deliver(keep=lambda e: not is_commit(e) and (type(e.message) is not Prepare or e.receiver == locked))
    stale = net.engines[locked].prepared
    assert stale is not None
    net.clock.advance(1.0)
    # the next leader builds its NEW-VIEW from the three view changes that carry no certificate
    net.deliver(keep=lambda e: not (type(e.message) is ViewChange and e.sender == locked and e.receiver == L1))
    new_views = {m.new_view for m in sent_of(net, NewView, L1)}
    fresh = {m.block for m in sent_of(net, PrePrepare, L1) if m.view == 1}
    assert new_views == {1} and len(fresh) == 1 and stale.proposal.raw not in fresh
    committed = net.hosts[locked].ledger.head_hash
    assert committed != stale.proposal.block.hash and committed != bytes(32)
    assert any(m.view == 1 and m.block_hash == committed for m in sent_of(net, Prepare, locked))
    assert "conflicts-with-lock" not in net.engines[locked].proposals_refused
    assert_agreement(net, list(range(4)))


def test_equivocating_votes_count_once_and_honest_nodes_commit_one_block(tmp_path: Path) -> None:
    byzantine = OTHERS[0]
    net = MemoryNetwork(tmp_path, faulty={byzantine: "equivocate-votes"})
    net.give_items(8)
    net.start()
    net.deliver()
    honest = [node for node in range(4) if node != byzantine]
    assert all(net.hosts[node].ledger.height == 1 for node in honest), (
        net.heights(),
        {n: (e.view, e.prepared and e.prepared.view, e.proposals_refused) for n, e in net.engines.items()},
    )
    assert_agreement(net, honest)
    assert sum(net.hosts[node].counters.equivocations_seen for node in honest) >= 1  # the peer that got both


def test_a_vote_book_keeps_one_vote_per_voter_and_forgets_a_bad_signature(tmp_path: Path) -> None:
    key = crypto.derive_key("vote-book", 0)
    keys = {0: key.public_key}
    real, phantom, chain = b"R" * 32, b"P" * 32, b"C" * 32
    message = vote_message("prepare", chain, 0, 1, real)
    book = VoteBook()
    assert book.add(real, 0, bytes(64))  # a bad signature arrives first
    assert not book.add(phantom, 0, key.sign(vote_message("prepare", chain, 0, 1, phantom)))
    assert book.count(phantom) == 0
    votes, dropped = book.verified(real, message, keys, crypto.verify)
    assert votes == {} and dropped == 1
    assert book.add(real, 0, key.sign(message))  # the forgotten voter may vote again, validly
    assert book.verified(real, message, keys, crypto.verify) == ({0: key.sign(message)}, 0)


def test_a_node_that_asked_for_a_later_view_ignores_the_new_view_of_an_earlier_one(tmp_path: Path) -> None:
    late = OTHERS[0]
    net = MemoryNetwork(tmp_path)
    net.give_items(8)
    net.start()
    net.deliver(keep=lambda e: type(e.message) is not Prepare)  # view 0 cannot prepare
    net.clock.advance(1.0)
    # the others move to view 1 and commit there; the late node sees only their VIEW-CHANGEs
    net.deliver(hold=lambda e: e.receiver == late and type(e.message) is not ViewChange)
    assert all(net.hosts[n].ledger.height == 1 for n in range(4) if n != late)
    net.clock.advance(2.0)  # its second timeout: a quorum asked for view 1, so it asks for view 2
    assert [vc.new_view for vc in sent_of(net, ViewChange, late)] == [1, 2]
    net.deliver()
    assert not [m for m in sent_of(net, Prepare, late) if m.view == 1], "it prepared in a view below one it asked for"
    assert net.hosts[late].catch_up_requests, "a commit certificate it could not follow sends it to catch up"


def test_issue_9_schedule_a_poisoned_prepare_cannot_split_honest_chains(tmp_path: Path) -> None:
    """Item 1 of issue 9, replayed: Byzantine Z's valid votes let the view-0 leader commit B while Z's
    bad-signature PREPARE poisons the next leader's lock; the next NEW-VIEW then carries no usable
    certificate, the next leader proposes B', and Z votes for it too. The old engine committed B and B'."""
    committer, byzantine, unlocked = L0, OTHERS[1], OTHERS[0]
    net = MemoryNetwork(tmp_path)
    net.give_items(8)
    net.start()
    scripted: list[object] = []  # Z's engine is muted: it says only what this test scripts

    def say(receivers: list[int], message: object) -> None:
        scripted.append(message)
        for receiver in receivers:
            net.send(byzantine, receiver, message)  # type: ignore[arg-type]

    def vote(kind: type, view: int, block_hash: bytes, valid: bool = True) -> Prepare:
        label = "commit" if kind is Commit else "prepare"
        signature = net.keys[byzantine].sign(vote_message(label, net.genesis.chain_id, view, 1, block_hash))
        signature = signature if valid else bytes([signature[0] ^ 0xFF]) + signature[1:]
        return kind(view, 1, block_hash, byzantine, signature)  # type: ignore[no-any-return]

    def phase_one(e: Envelope) -> bool:
        if e.sender == byzantine:
            return any(e.message is m for m in scripted)
        # the third honest replica takes no part in view 0's votes: it neither sends nor receives any
        return type(e.message) not in (Prepare, Commit) or unlocked not in (e.sender, e.receiver)

    block_b = net.engines[L0].round(0).proposal.block.hash  # type: ignore[union-attr]
    say([committer], vote(Prepare, 0, block_b))
    say([L1], vote(Prepare, 0, block_b, valid=False))
    say([committer], vote(Commit, 0, block_b))
    net.deliver(keep=phase_one)
    net.clock.advance(1.0)  # view 0 times out where it did not commit
    unsigned = ViewChange(1, 1, byzantine, 0, b"", b"", bytes(64))
    unsigned.signature = net.keys[byzantine].sign(view_change_message(net.genesis.chain_id, unsigned))
    say([L1], unsigned)
    net.deliver(keep=lambda e: phase_one(e) if e.sender == byzantine else not (type(e.message) is ViewChange and e.sender == committer))
    net.clock.advance(0.0)  # the view-1 leader's batch timer
    fresh = {m.block for m in sent_of(net, PrePrepare, L1) if m.view == 1}
    assert len(fresh) == 1
    block_b2 = Block.decode(next(iter(fresh))).hash
    say([n for n in range(4) if n != byzantine], vote(Prepare, 1, block_b2))
    say([n for n in range(4) if n != byzantine], vote(Commit, 1, block_b2))
    net.deliver(keep=lambda e: e.sender != byzantine or any(e.message is m for m in scripted))
    honest = [node for node in range(4) if node != byzantine]
    assert_agreement(net, honest)
    assert all(net.hosts[node].ledger.height == 1 for node in honest), net.heights()


def test_a_view_whose_commits_arrived_before_its_new_view_commits_once(tmp_path: Path) -> None:
    """Found by the simulation (byzantine seed 24): entering the view committed the block, and the
    engine then advanced the finished round again and committed the same height a second time."""
    late = OTHERS[0]
    net = MemoryNetwork(tmp_path)
    net.give_items(8)
    net.start()
    net.deliver(keep=lambda e: type(e.message) is not Prepare)  # view 0 cannot prepare
    net.clock.advance(1.0)
    net.deliver(hold=lambda e: e.receiver == late)  # the others move to view 1 and commit there
    assert all(net.hosts[n].ledger.height == 1 for n in range(4) if n != late)
    net.deliver(hold=lambda e: type(e.message) is NewView)  # the proposal and the COMMITs come first
    assert net.hosts[late].ledger.height == 0
    net.deliver()
    assert net.hosts[late].ledger.height == 1 and len(net.hosts[late].committed) == 1
    assert_agreement(net, list(range(4)))


def test_a_leader_re_proposing_a_block_it_never_saw_fetches_its_items_from_the_certificate(tmp_path: Path) -> None:
    net = MemoryNetwork(tmp_path)
    net.give_items(8, nodes=[n for n in range(4) if n != L1])
    net.start()
    # view 0: the next leader hears nothing of it; the other three prepare (and lock) but no COMMIT flows
    net.deliver(keep=lambda e: L1 not in (e.sender, e.receiver) and not is_commit(e))
    locked = net.engines[L0].prepared
    assert locked is not None and len(net.hosts[L1].mempool) == 0
    net.clock.advance(1.0)
    net.deliver()
    asked = {node for node, _ in net.hosts[L1].item_requests}
    assert asked and asked <= set(locked.votes) - {L1}
    assert net.hosts[L1].ledger.head_hash == locked.proposal.block.hash
    assert_agreement(net, list(range(4)))


def test_a_view_change_nobody_joins_is_sent_again_rather_than_run_ahead(tmp_path: Path) -> None:
    """A node alone in asking for a view repeats the request instead of asking for the next view,
    which the others (who never go back) might reach only after it had moved on again."""
    alone = OTHERS[0]
    net = MemoryNetwork(tmp_path)
    net.give_items(8, nodes=[alone])  # only it has work, so only its timer runs
    net.start()
    net.deliver(keep=lambda e: type(e.message) is not Prepare)
    for seconds in (1.0, 2.0, 4.0):
        net.clock.advance(seconds)
        net.deliver(keep=lambda e: e.sender == alone)
    asked = [m.new_view for m in sent_of(net, ViewChange, alone)]
    assert asked == [1], asked  # one message, sent three times
    assert sum(1 for e in net.sent if e.sender == alone and type(e.message) is ViewChange) == 3 * 3


def test_a_validator_still_changing_view_at_a_committed_height_is_sent_the_blocks(tmp_path: Path) -> None:
    late = OTHERS[0]
    net = MemoryNetwork(tmp_path)
    net.give_items(8)
    net.start()
    net.deliver(keep=lambda e: e.receiver != late)  # it hears nothing of height 1 being decided
    assert net.hosts[late].ledger.height == 0 and all(net.hosts[n].ledger.height == 1 for n in range(4) if n != late)
    net.clock.advance(1.0)  # its timer: a VIEW-CHANGE at height 1, which the others have left
    net.deliver()
    assert net.hosts[late].ledger.height == 1
    assert_agreement(net, list(range(4)))
    pushes = [e for e in net.sent if type(e.message) is BlockResponse]
    assert len(pushes) == 3  # each peer answered once
    net.engines[L0].on_message(late, sent_of(net, ViewChange, late)[0])  # the same again, at once
    assert len([e for e in net.sent if type(e.message) is BlockResponse]) == 3, "at most one push per view timeout"


def test_a_fresh_block_must_name_its_leader_as_proposer_and_its_view(tmp_path: Path) -> None:
    net = MemoryNetwork(tmp_path)
    items = net.give_items(8)
    ledger = net.hosts[L0].ledger
    for view, proposer, reason in ((0, OTHERS[0], "wrong-proposer"), (3, L0, "wrong-view")):
        block, _ = ledger.build_block(view, proposer, items)
        net.engines[L1].on_message(L0, PrePrepare(0, 1, block.encode()))
        assert net.engines[L1].proposals_refused == {reason: 1}, reason
        net.engines[L1].proposals_refused.clear()
    assert not sent_of(net, Prepare, L1)


def test_a_leader_that_ignores_its_new_views_certificate_is_refused(tmp_path: Path) -> None:
    net = MemoryNetwork(tmp_path)
    items = net.give_items(8)
    net.start()
    # view 0: everyone but the next leader locks on B; no COMMIT flows
    net.deliver(keep=lambda e: not is_commit(e) and (type(e.message) is not Prepare or e.receiver != L1))
    certified = net.engines[L0].prepared
    assert certified is not None
    net.clock.advance(1.0)
    net.deliver(keep=lambda e: not (type(e.message) is PrePrepare and e.sender == L1))  # its honest re-proposal is lost
    fresh, _ = net.hosts[L1].ledger.build_block(1, L1, items[:4])  # a Byzantine leader's own choice instead
    for replica in (n for n in range(4) if n != L1):
        net.send(L1, replica, PrePrepare(1, 1, fresh.encode()))
    net.deliver()
    for replica in (n for n in range(4) if n != L1):
        assert net.engines[replica].proposals_refused == {"ignores-new-view": 1}
        assert net.hosts[replica].ledger.height == 0
    assert not [m for n in range(4) for m in sent_of(net, Prepare, n) if m.block_hash == fresh.hash]


def test_a_view_change_whose_prepared_block_does_not_decode_is_a_protocol_error(tmp_path: Path) -> None:
    """A Byzantine validator's malformed certificate is counted and dropped; it never raises in the engine."""
    net = MemoryNetwork(tmp_path)
    net.start()
    receiver, sender = OTHERS[0], OTHERS[1]
    garbage = ViewChange(1, 1, sender, 0, b"\x01not a block", b"", bytes(64))
    before = net.hosts[receiver].counters.protocol_errors
    net.engines[receiver].on_message(sender, garbage)
    assert net.hosts[receiver].counters.protocol_errors == before + 1
    assert sender not in net.engines[receiver].view_changes.get(1, {})
