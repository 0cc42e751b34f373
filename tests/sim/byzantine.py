"""Byzantine replicas: a real engine whose outgoing messages a behaviour tampers with, plus its own moves.

A faulty node runs the honest ``PbftEngine`` (so it takes part, and its lies are plausible) and each
of its behaviours may rewrite, multiply or swallow every message it sends, per destination, and act
on its own every so often (``act``). It can sign anything with its own key and nothing with anyone
else's: links are authenticated, so it cannot speak for another validator.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from popbench import bls, crypto
from popbench.model.block import AggregateCertificate, Block
from popbench.pop.pbft_round import VOTE_ENTRY, view_change_message
from popbench.wire import (
    Commit,
    CommitAggregate,
    CommitShare,
    Message,
    NewView,
    Prepare,
    PrepareAggregate,
    PrepareShare,
    PrePrepare,
    ViewChange,
)
from tests.sim.network import NS_PER_S, SimHost, SimNetwork

ACT_INTERVAL_NS = (NS_PER_S // 20, NS_PER_S // 3)  # a behaviour's own moves come this often
SENT_KEPT = 200  # messages kept for replays


class ByzantineHost(SimHost):
    """A validator whose messages pass through its behaviours before they reach the network."""

    def __init__(self, network: SimNetwork, key: crypto.SigningKey, node_id: int, kinds: tuple[str, ...], rng: random.Random) -> None:
        super().__init__(network, key, node_id)
        self.rng = rng
        self.kinds = kinds
        self.behaviours = [BEHAVIOURS[kind](self) for kind in kinds]
        self.sent: list[tuple[int, Message]] = []
        self.proposals: dict[int, list[bytes]] = {}  # height -> encoded blocks seen proposed
        self.view_changes: dict[tuple[int, int], dict[int, ViewChange]] = {}  # (height, view) -> voter -> vc

    # -- sending through the behaviours ----------------------------------------------------------------
    def send_to(self, node_id: int, message: Message) -> None:
        outgoing = [message]
        for behaviour in self.behaviours:
            outgoing = [changed for original in outgoing for changed in behaviour.rewrite(node_id, original)]
        for changed in outgoing:
            self.send_raw(node_id, changed)

    def send_raw(self, node_id: int, message: Message) -> None:
        self.sent = [*self.sent[-SENT_KEPT:], (node_id, message)]
        self.network.send(self.node_id, node_id, message)

    def send_raw_to_all(self, message: Message) -> None:
        for peer in self.network.node_ids:
            if peer != self.node_id:
                self.send_raw(peer, message)

    # -- what it learns --------------------------------------------------------------------------------
    def receive(self, src: int, message: Message) -> None:
        if isinstance(message, PrePrepare):
            self.proposals.setdefault(message.height, []).append(message.block)
        elif isinstance(message, ViewChange):
            self.view_changes.setdefault((message.height, message.new_view), {})[message.voter] = message
        for behaviour in self.behaviours:
            behaviour.observe(src, message)
        super().receive(src, message)

    def start(self) -> None:
        super().start()
        self._schedule_act()

    def _schedule_act(self) -> None:
        self.network.events.after_ns(self.rng.randint(*ACT_INTERVAL_NS), self._act)

    def _act(self) -> None:
        for behaviour in self.behaviours:
            behaviour.act()
        self._schedule_act()

    # -- forging helpers -------------------------------------------------------------------------------
    def signed_vote(self, kind: type[Prepare], view: int, height: int, block_hash: bytes) -> Prepare:
        """A vote of ``kind`` (Prepare or Commit, or the share types) on the chain's vote path, validly signed."""
        is_commit = kind in (Commit, CommitShare)
        signature = self.engine._vote_signature("commit" if is_commit else "prepare", view, height, block_hash)
        return self.engine.vote_types[is_commit](view, height, block_hash, self.node_id, signature)

    def signed_view_change(self, new_view: int, height: int, prepared_view: int, block: bytes, votes: bytes) -> ViewChange:
        vc = ViewChange(new_view, height, self.node_id, prepared_view, block, votes, bytes(64))
        vc.signature = self.key.sign(view_change_message(self.genesis.chain_id, vc))
        return vc

    def other_block_hash(self, height: int, not_this: bytes) -> bytes:
        """A block hash other than ``not_this``: another proposal seen at ``height``, or one that does not exist."""
        others = [Block.decode(raw).hash for raw in self.proposals.get(height, [])]
        others = [h for h in others if h != not_this]
        return self.rng.choice(others) if others and self.rng.random() < 0.5 else self.rng.randbytes(32)


def corrupt(signature: bytes) -> bytes:
    """The same signature with one bit flipped: well formed, and it no longer verifies."""
    return signature[:10] + bytes([signature[10] ^ 1]) + signature[11:]


class Behaviour:
    """One way to misbehave: ``rewrite`` what the node sends, ``observe`` what it receives (before its
    engine does), ``act`` on its own now and then."""

    def __init__(self, host: ByzantineHost) -> None:
        self.host = host
        self.rng = host.rng

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        return [message]

    def observe(self, src: int, message: Message) -> None:
        return None

    def act(self) -> None:
        return None


class BadSignatureVotes(Behaviour):
    """PREPAREs and COMMITs with a broken signature to some peers (mostly the same ones), valid ones to the others."""

    def __init__(self, host: ByzantineHost) -> None:
        super().__init__(host)
        peers = [node for node in sorted(host.genesis.public_keys) if node != host.node_id]
        self.victims = frozenset(self.rng.sample(peers, self.rng.randint(1, len(peers) - 1)))

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if isinstance(message, Prepare) and self.rng.random() < (0.9 if dst in self.victims else 0.1):
            return [type(message)(message.view, message.height, message.block_hash, message.voter, corrupt(message.signature))]
        return [message]


class EquivocatingVotes(Behaviour):
    """Validly signed votes for a different block to some peers (another proposal, or none at all)."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if isinstance(message, Prepare) and self.rng.random() < 0.5:
            other = self.host.other_block_hash(message.height, message.block_hash)
            return [self.host.signed_vote(type(message), message.view, message.height, other)]
        return [message]


class PhantomVotes(Behaviour):
    """Validly signed PREPAREs and COMMITs for blocks that do not exist, beside its real votes."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if isinstance(message, Prepare) and self.rng.random() < 0.3:
            return [message, self.host.signed_vote(type(message), message.view, message.height, self.rng.randbytes(32))]
        return [message]

    def act(self) -> None:
        engine = self.host.engine
        phantom = self.rng.randbytes(32)
        for kind in engine.vote_types:
            self.host.send_raw_to_all(self.host.signed_vote(kind, engine.view + self.rng.randint(0, 1), engine.height, phantom))


class Amnesia(Behaviour):
    """Forgets its lock: its VIEW-CHANGEs claim nothing prepared, and it votes for whatever is proposed."""

    def observe(self, src: int, message: Message) -> None:
        if isinstance(message, (PrePrepare, NewView)):
            self.host.engine.prepared = None

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if isinstance(message, ViewChange) and message.prepared_block:
            return [self.host.signed_view_change(message.new_view, message.height, 0, b"", b"")]
        return [message]


class Withholding(Behaviour):
    """Swallows some kinds of message (chosen per node) to some or all peers."""

    KINDS: tuple[type[Message], ...] = (PrePrepare, Prepare, Commit, ViewChange, NewView, PrepareShare, CommitShare)

    def __init__(self, host: ByzantineHost) -> None:
        super().__init__(host)
        self.withheld = tuple(kind for kind in self.KINDS if self.rng.random() < 0.5) or (Prepare,)
        self.chance = self.rng.choice((0.5, 1.0))

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if type(message) in self.withheld and self.rng.random() < self.chance:
            return []
        return [message]


class EquivocatingProposals(Behaviour):
    """As leader, sends some peers a different (equally valid) block for the same view and height."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, PrePrepare) or self.rng.random() < 0.4:
            return [message]
        block = Block.decode(message.block)
        block.timestamp_ns += 1 + dst  # another header, another hash; items and state root still hold
        block._hash = None
        return [PrePrepare(message.view, message.height, block.encode())]


class DuplicateItems(Behaviour):
    """As leader, proposes a block that lists one of its items twice, with the state root to match."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, PrePrepare):
            return [message]
        block = Block.decode(message.block)
        items = [self.host.mempool.get(item_id) for item_id in [*block.proof_ids, *block.transfer_ids]]
        if block.proposer != self.host.node_id or not items or any(item is None for item in items):
            return [message]
        ledger = self.host.ledger
        if block.height != ledger.height + 1:
            return [message]
        doubled = [*items, items[0]]
        forged, _ = ledger.build_block(block.view, self.host.node_id, doubled)  # type: ignore[arg-type]
        forged.timestamp_ns = block.timestamp_ns  # the same block to every peer
        forged._hash = None
        return [PrePrepare(message.view, message.height, forged.encode())]


class MisattributedProposal(Behaviour):
    """As leader, proposes its block under another validator's id (who then gets the block reward and fees)."""

    def __init__(self, host: ByzantineHost) -> None:
        super().__init__(host)
        self.forged: dict[bytes, bytes] = {}  # the block it built -> the one it sends instead, the same to all

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, PrePrepare):
            return [message]
        if message.block not in self.forged:
            self.forged[message.block] = self._forge(message.block) or message.block
        return [PrePrepare(message.view, message.height, self.forged[message.block])]

    def _forge(self, raw: bytes) -> bytes | None:
        block, ledger = Block.decode(raw), self.host.ledger
        items = [self.host.mempool.get(item_id) for item_id in [*block.proof_ids, *block.transfer_ids]]
        if block.proposer != self.host.node_id or block.height != ledger.height + 1 or any(item is None for item in items):
            return None
        other = self.rng.choice([node for node in sorted(self.host.genesis.public_keys) if node != self.host.node_id])
        forged, _ = ledger.build_block(block.view, other, items)  # type: ignore[arg-type]
        forged.timestamp_ns = block.timestamp_ns
        forged._hash = None
        return forged.encode()


class StaleViewChanges(Behaviour):
    """Replays its old VIEW-CHANGEs, asks for views already past, claims prepared blocks it cannot prove."""

    def act(self) -> None:
        host, engine = self.host, self.host.engine
        choice = self.rng.randrange(3)
        old = [m for _, m in host.sent if isinstance(m, ViewChange)]
        if choice == 0 and old:
            host.send_raw(self._peer(), self.rng.choice(old))
        elif choice == 1:
            host.send_raw_to_all(host.signed_view_change(max(0, engine.view - self.rng.randint(0, 2)), engine.height, 0, b"", b""))
        else:
            self._claim_unproven_prepare(engine.view + 1, engine.height)

    def _claim_unproven_prepare(self, new_view: int, height: int) -> None:
        host = self.host
        proposals = host.proposals.get(height)
        if not proposals:
            return
        block = self.rng.choice(proposals)
        voters = sorted(host.genesis.public_keys)[: host.genesis.quorum]
        votes = b"".join(VOTE_ENTRY.pack(voter, self.rng.randbytes(64)) for voter in voters)  # signatures it cannot make
        if host.engine.collector_path:  # an aggregate of its own share alone, claiming a quorum of signers
            own = host.engine.bls_key.sign(b"a lock it cannot prove")
            bitmap = bls.signers_bitmap(range(host.genesis.quorum), host.genesis.n)
            votes = AggregateCertificate(max(0, new_view - 1), bitmap, own).encode()
        host.send_raw_to_all(host.signed_view_change(new_view, height, max(0, new_view - 1), block, votes))

    def _peer(self) -> int:
        return self.rng.choice([n for n in self.host.network.node_ids if n != self.host.node_id])


class ForgedNewView(Behaviour):
    """NEW-VIEWs it has no right to send, and, as the rightful new leader, a cherry-picked quorum."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, NewView):
            return [message]
        known = self.host.view_changes.get((message.height, message.new_view), {})
        own = [vc for vc in (ViewChange.decode_body(b) for b in message.view_changes) if vc.voter == self.host.node_id]
        unlocked = [vc for vc in known.values() if not vc.prepared_block] + own
        quorum = self.host.genesis.quorum
        if len({vc.voter for vc in unlocked}) < quorum:
            return [message]
        bodies = {vc.voter: vc.encode_body() for vc in unlocked}
        return [NewView(message.new_view, message.height, list(bodies.values())[:quorum])]

    def act(self) -> None:
        engine = self.host.engine
        new_view = engine.view + self.rng.randint(1, 2)
        known = self.host.view_changes.get((engine.height, new_view), {})
        bodies = [vc.encode_body() for vc in known.values()]
        if self.rng.random() < 0.5:
            bodies = bodies * 2  # the same view changes counted twice
        self.host.send_raw_to_all(NewView(new_view, engine.height, bodies))


class EquivocatingNewView(ForgedNewView):
    """As the rightful new leader, the honest NEW-VIEW to some peers and a cherry-picked one to others,
    so they disagree on what the view must re-propose."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if isinstance(message, NewView) and self.rng.random() < 0.5:
            return [message]
        return super().rewrite(dst, message)


class Replays(Behaviour):
    """Sends one of its own earlier messages again, to a peer chosen at random."""

    def act(self) -> None:
        if self.host.sent:
            _, message = self.rng.choice(self.host.sent)
            peers = [n for n in self.host.network.node_ids if n != self.host.node_id]
            self.host.send_raw(self.rng.choice(peers), message)


# -- Byzantine collectors (the collector vote path) -----------------------------------------------------------
class SilentCollector(Behaviour):
    """Collects shares and never sends the certificates it forms (replicas must fall back in time)."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        return [] if isinstance(message, PrepareAggregate) else [message]


class ForgedBitmap(Behaviour):
    """Claims signers it does not have: sets every bit (or, half the time, swaps one signer for a non-signer)."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, PrepareAggregate):
            return [message]
        n = self.host.genesis.n
        signers = bls.bitmap_signers(message.signers, n)
        missing = [i for i in range(n) if i not in signers]
        swap = missing and self.rng.random() < 0.5  # as many bits as signed, not the ones that signed
        signers = [*signers[1:], self.rng.choice(missing)] if swap else list(range(n))
        return [type(message)(message.view, message.height, message.block_hash, bls.signers_bitmap(signers, n), message.aggregate)]


class BadAggregate(Behaviour):
    """Sends certificates whose aggregate is not the signers': its own share alone, or bytes that are no point."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, PrepareAggregate):
            return [message]
        aggregate = self.host.engine.bls_key.sign(message.block_hash) if self.rng.random() < 0.5 else self.rng.randbytes(96)
        return [type(message)(message.view, message.height, message.block_hash, message.signers, aggregate)]


class ShortAggregate(Behaviour):
    """Sends, beside or instead of its real certificates, an honest aggregate of fewer than n - f shares:
    a correct bitmap of the few shares it has (its own among them), a quorum short."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, PrepareAggregate):
            return [message]
        engine, label = self.host.engine, "commit" if isinstance(message, CommitAggregate) else "prepare"
        current = engine.rounds.get(message.view)
        if current is None:
            return [message]
        book = current.commits if label == "commit" else current.prepares
        shares = dict(sorted(book.votes(message.block_hash).items())[: engine.quorum - 1])
        total = bls.aggregate(shares.values())
        if total is None:
            return [message]
        bitmap = bls.signers_bitmap([self.host.genesis.index_of[v] for v in shares], self.host.genesis.n)
        short = type(message)(message.view, message.height, message.block_hash, bitmap, total)
        return [short] if self.rng.random() < 0.5 else [short, message]


class EquivocatingCertificates(Behaviour):
    """Different certificates to different peers: the real one to some; to others the same aggregate
    claimed for another block (another proposal or none), or a PREPARE certificate passed off as COMMIT;
    and, now and then, valid certificates over different signer subsets."""

    def rewrite(self, dst: int, message: Message) -> list[Message]:
        if not isinstance(message, PrepareAggregate) or self.rng.random() < 0.4:
            return [message]
        choice = self.rng.randrange(3)
        if choice == 0:
            other = self.host.other_block_hash(message.height, message.block_hash)
            return [type(message)(message.view, message.height, other, message.signers, message.aggregate)]
        if choice == 1 and type(message) is PrepareAggregate:
            return [CommitAggregate(message.view, message.height, message.block_hash, message.signers, message.aggregate), message]
        return [self._subset(message) or message]

    def _subset(self, message: PrepareAggregate) -> PrepareAggregate | None:
        engine, genesis = self.host.engine, self.host.genesis
        current = engine.rounds.get(message.view)
        if current is None:
            return None
        book = current.commits if isinstance(message, CommitAggregate) else current.prepares
        votes = book.votes(message.block_hash)
        if len(votes) <= engine.quorum:
            return None
        chosen = sorted(self.rng.sample(sorted(votes), engine.quorum))
        total = bls.aggregate(votes[v] for v in chosen)
        if total is None:
            return None
        bitmap = bls.signers_bitmap([genesis.index_of[v] for v in chosen], genesis.n)
        return type(message)(message.view, message.height, message.block_hash, bitmap, total)


CONSENSUS_BEHAVIOURS: dict[str, Callable[[ByzantineHost], Behaviour]] = {
    "amnesia": Amnesia,
    "bad-signature-votes": BadSignatureVotes,
    "equivocate-votes": EquivocatingVotes,
    "phantom-votes": PhantomVotes,
    "withhold": Withholding,
    "equivocate-proposals": EquivocatingProposals,
    "stale-view-changes": StaleViewChanges,
    "forged-new-view": ForgedNewView,
    "replay": Replays,
}
LEDGER_BEHAVIOURS: dict[str, Callable[[ByzantineHost], Behaviour]] = {"duplicate-items": DuplicateItems}
# The collector path's lies: drawn only by its schedules, so the all-to-all seeds keep their meaning.
COLLECTOR_BEHAVIOURS: dict[str, Callable[[ByzantineHost], Behaviour]] = {
    "silent-collector": SilentCollector,
    "forged-bitmap": ForgedBitmap,
    "bad-aggregate": BadAggregate,
    "short-aggregate": ShortAggregate,
    "equivocate-certificates": EquivocatingCertificates,
}
# Added after the byzantine family's seeds were first reported: only the mixed family draws them, so
# those seeds keep replaying the same schedules.
LATER_BEHAVIOURS: dict[str, Callable[[ByzantineHost], Behaviour]] = {
    "equivocate-new-view": EquivocatingNewView,
    "misattributed-proposal": MisattributedProposal,
}
BEHAVIOURS = {**CONSENSUS_BEHAVIOURS, **LEDGER_BEHAVIOURS, **LATER_BEHAVIOURS, **COLLECTOR_BEHAVIOURS}
