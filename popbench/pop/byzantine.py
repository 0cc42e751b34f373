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

Collector faults, on the collector vote path only (``engine_for`` refuses them on an all-to-all chain,
where the node would simply be honest); as a leader and a voter the node is honest, and it commits with
the certificates it forms itself:

- ``withhold-certificates``: collects shares and forms certificates but never sends one.
- ``bad-aggregate``: sends its certificates with the aggregate replaced, by its own BLS share on the
  block hash (a valid point that fails the check) or by 96 bytes that are no point.
- ``forged-bitmap``: sends its certificates with a bitmap the aggregate does not match: every validator,
  one real signer swapped for a non-signer, or (when everyone signed) one signer left out.

Honest validators must stay safe and, with at most f such nodes, keep committing (docs/consensus.md).
"""

from __future__ import annotations

from popbench import bls
from popbench.errors import ConfigError
from popbench.genesis import VOTES_COLLECTOR
from popbench.kinds import COLLECTOR_FAULTS, ByzantineBehaviour, values
from popbench.mempool import PoolItem
from popbench.mining import grind
from popbench.model.hashing import sha256
from popbench.model.proof import Proof
from popbench.pop.pbft import PbftEngine, PbftHost
from popbench.wire import (
    Commit,
    CommitAggregate,
    CommitShare,
    Gossip,
    ItemKind,
    Message,
    Prepare,
    PrepareAggregate,
    PrePrepare,
    Role,
)


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


# -- collector faults: the engine's one seam for a formed certificate, _send_certificate ----------------------
def _certificate_kind(message: PrepareAggregate) -> str:
    return "commit" if isinstance(message, CommitAggregate) else "prepare"


class WithholdingCollector(PbftEngine):
    """Forms certificates from the shares it receives (and commits with them) but never sends one: with no
    honest collector in the view, the replicas' collector timers make them vote all-to-all."""

    def _send_certificate(self, message: PrepareAggregate) -> None:
        self.events.emit("certificate-withheld", height=message.height, view=message.view, kind=_certificate_kind(message))


class LyingCollector(PbftEngine):
    """Sends a forgery of each certificate it forms; ``forge`` says what it changed. The forgery is logged
    (``certificate-forged``) so a test can match what was sent against what honest nodes refused."""

    def _send_certificate(self, message: PrepareAggregate) -> None:
        forged, how = self.forge(message)
        self.events.emit("certificate-forged", height=message.height, view=message.view,
                         kind=_certificate_kind(message), forgery=how)  # fmt: skip
        super()._send_certificate(forged)

    def forge(self, message: PrepareAggregate) -> tuple[PrepareAggregate, str]:
        raise NotImplementedError

    @staticmethod
    def _alternate(message: PrepareAggregate) -> bool:
        """Which of two forgeries: PREPARE and COMMIT of one height get different ones, heights alternate."""
        return (message.height + isinstance(message, CommitAggregate)) % 2 == 0


class BadAggregateCollector(LyingCollector):
    """The real bitmap with an aggregate that is not its signers': its own share over the block hash (a
    point on the curve, so only the pairing check catches it), or 96 zero bytes (no point at all)."""

    def forge(self, message: PrepareAggregate) -> tuple[PrepareAggregate, str]:
        if self._alternate(message):
            aggregate, how = self.bls_key.sign(message.block_hash), "own-share"
        else:
            aggregate, how = bytes(bls.SIGNATURE_BYTES), "no-point"
        return type(message)(message.view, message.height, message.block_hash, message.signers, aggregate), how


class ForgedBitmapCollector(LyingCollector):
    """The real aggregate under a bitmap claiming other signers: every validator, or as many as signed with
    one of them swapped for a validator that did not; one signer dropped when all signed."""

    def forge(self, message: PrepareAggregate) -> tuple[PrepareAggregate, str]:
        n = self.genesis.n
        signers = bls.bitmap_signers(message.signers, n)
        missing = [index for index in range(n) if index not in signers]
        if not missing:
            claimed, how = signers[1:], "signer-dropped"  # still a quorum (n - 1), not the aggregate's
        elif self._alternate(message):
            claimed, how = list(range(n)), "every-validator"
        else:
            claimed, how = [*signers[1:], missing[0]], "signer-swapped"
        bitmap = bls.signers_bitmap(claimed, n)
        return type(message)(message.view, message.height, message.block_hash, bitmap, message.aggregate), how


ENGINES: dict[ByzantineBehaviour | None, type[PbftEngine]] = {
    None: PbftEngine,
    ByzantineBehaviour.SILENT: SilentLeader,
    ByzantineBehaviour.EQUIVOCATE: EquivocatingLeader,
    ByzantineBehaviour.INVALID_PROOFS: InvalidProofLeader,
    ByzantineBehaviour.BAD_SIGNATURE_VOTES: BadSignatureVoter,
    ByzantineBehaviour.EQUIVOCATE_VOTES: EquivocatingVoter,
    ByzantineBehaviour.WITHHOLD_VOTES: WithholdingVoter,
    ByzantineBehaviour.WITHHOLD_CERTIFICATES: WithholdingCollector,
    ByzantineBehaviour.BAD_AGGREGATE: BadAggregateCollector,
    ByzantineBehaviour.FORGED_BITMAP: ForgedBitmapCollector,
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
    if behaviour in COLLECTOR_FAULTS and host.genesis.params.votes != VOTES_COLLECTOR:
        raise ConfigError(f"{kind!r} is a collector fault: the chain votes all-to-all (params.votes = 0)", key="byzantine")
    return ENGINES[behaviour](host)
