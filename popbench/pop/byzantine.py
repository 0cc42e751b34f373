"""Faulty validators for fault-injection runs and tests: each overrides how it leads or how it votes.

Leader faults (as a replica the node behaves honestly):

- ``silent``: never proposes when it is the leader (the view must time out).
- ``equivocate``: sends every peer a different block for the same (view, height) and votes for none.
- ``invalid-proofs``: proposes a block naming proofs with bad signatures, and serves those proofs when
  peers ask for them; honest validators refuse them, so the proposal can never be prepared.

Voter faults (as a leader the node proposes honestly):

- ``bad-signature-votes``: every PREPARE and COMMIT it sends carries a corrupted signature.
- ``equivocate-votes``: at each (view, height) it votes for the real block to some peers and, validly
  signed, for a hash that names no block to the others; one peer gets both.
- ``withhold-votes``: never sends a PREPARE or COMMIT.

Honest validators must stay safe and, with at most f such nodes, keep committing (docs/consensus.md).
"""

from __future__ import annotations

from popbench.errors import ConfigError
from popbench.kinds import ByzantineBehaviour, values
from popbench.mempool import PoolItem
from popbench.mining import grind
from popbench.model.hashing import sha256
from popbench.model.proof import Proof
from popbench.pop.pbft import PbftEngine, PbftHost
from popbench.wire import Commit, CommitShare, Gossip, ItemKind, Message, Prepare, PrePrepare, Role


class SilentLeader(PbftEngine):
    def propose(self) -> None:
        return None


class EquivocatingLeader(PbftEngine):
    def propose(self) -> None:
        items = self.host.mempool.oldest(self.batch_size)
        peers = [node for node in sorted(self.keys) if node != self.host.node_id]
        for offset, peer in enumerate(peers):
            block, _ = self.host.ledger.build_block(self.view, self.host.node_id, items[offset % 2 :])
            self.host.send_to(peer, PrePrepare(self.view, self.height, block.encode()))


class InvalidProofLeader(PbftEngine):
    """Corrupts the payload of real proofs, which breaks their signatures but keeps them well formed.

    It gossips the forged proofs first, so honest validators see them, verify them and refuse them.
    Transfers go into the block unchanged (with no proof in the pool, the block is simply valid).
    """

    def propose(self) -> None:
        items = [_forge(item) if item.kind == ItemKind.PROOF else item for item in self.host.mempool.oldest(self.batch_size)]
        block, _ = self.host.ledger.build_block(self.view, self.host.node_id, items)
        forged = [item.raw for item in items if item.kind == ItemKind.PROOF]
        if forged:
            self.host.broadcast(Gossip(ItemKind.PROOF, forged))
        self.host.broadcast(PrePrepare(self.view, self.height, block.encode()))


def _forge(item: PoolItem) -> PoolItem:
    """The same proof with its payload inverted: well formed, new id, the old signature no longer fits."""
    proof: Proof = item.obj
    payload = bytes(b ^ 0xFF for b in proof.payload) or b"\x00"
    forged = Proof(proof.chain_id, proof.owner, proof.work_bits, proof.run_tag, proof.submitted_ns,
                   payload, proof.nonce, proof.signature)  # fmt: skip
    forged.nonce = grind(forged.work_prefix(), proof.work_bits) or 0  # real work: only the signature is wrong
    return PoolItem(forged.id, ItemKind.PROOF, forged, forged.encode())


class BadSignatureVoter(PbftEngine):
    """Votes from the right link, well formed, with a signature that never verifies."""

    def _broadcast_vote(self, vote: Prepare) -> None:
        vote.signature = bytes([vote.signature[0] ^ 0xFF]) + vote.signature[1:]
        super()._broadcast_vote(vote)


class EquivocatingVoter(PbftEngine):
    """Votes for the real block to even-numbered peers and for a phantom hash to the odd ones.

    The phantom vote is validly signed, so only the one-vote-per-voter rule stops it; the first odd
    peer also gets the real vote after the phantom, so equivocation is seen (and refused) somewhere.
    """

    def _broadcast_vote(self, vote: Prepare) -> None:
        phantom = self._phantom_vote(vote)
        peers = [node for node in sorted(self.keys) if node != self.host.node_id]
        for index, peer in enumerate(peers):
            if index % 2 == 0:
                self.host.send_to(peer, vote)
                continue
            self.host.send_to(peer, phantom)
            if index == 1:
                self.host.send_to(peer, vote)

    def _phantom_vote(self, vote: Prepare) -> Prepare:
        label = "commit" if isinstance(vote, (Commit, CommitShare)) else "prepare"
        phantom_hash = sha256(b"phantom" + vote.block_hash)  # names no block anyone proposed
        signature = self._vote_signature(label, vote.view, vote.height, phantom_hash)
        return type(vote)(vote.view, vote.height, phantom_hash, vote.voter, signature)


class WithholdingVoter(PbftEngine):
    """Never sends a PREPARE or COMMIT (it still proposes, and asks for view changes)."""

    def _broadcast_vote(self, vote: Prepare) -> None:
        return None


ENGINES: dict[ByzantineBehaviour | None, type[PbftEngine]] = {
    None: PbftEngine,
    ByzantineBehaviour.SILENT: SilentLeader,
    ByzantineBehaviour.EQUIVOCATE: EquivocatingLeader,
    ByzantineBehaviour.INVALID_PROOFS: InvalidProofLeader,
    ByzantineBehaviour.BAD_SIGNATURE_VOTES: BadSignatureVoter,
    ByzantineBehaviour.EQUIVOCATE_VOTES: EquivocatingVoter,
    ByzantineBehaviour.WITHHOLD_VOTES: WithholdingVoter,
}


class FollowerEngine(PbftEngine):
    """A follower (a joined node that is not a validator yet) takes no part: it only catches up."""

    def work_arrived(self) -> None:
        return None

    def on_message(self, sender: int, message: Message) -> None:
        return None

    def propose(self) -> None:
        return None


def engine_for(kind: str | None, host: PbftHost, role: Role = Role.VALIDATOR) -> PbftEngine:
    """The engine of a validator (honest or with the named fault), or a follower's."""
    if role != Role.VALIDATOR:
        return FollowerEngine(host)
    try:
        behaviour = ByzantineBehaviour(kind) if kind is not None else None
    except ValueError as err:
        known = ", ".join(values(ByzantineBehaviour))
        raise ConfigError(f"unknown Byzantine behaviour {kind!r}; known: {known}", key="byzantine") from err
    return ENGINES[behaviour](host)
