"""Faulty validators for fault-injection runs and tests: each overrides how it leads.

- ``silent``: never proposes when it is the leader (the view must time out).
- ``equivocate``: sends every peer a different block for the same (view, height) and votes for none.
- ``invalid-proofs``: proposes a block naming proofs with bad signatures, and serves those proofs when
  peers ask for them; honest validators refuse them, so the proposal can never be prepared.
As replicas they behave honestly: a Byzantine leader is what these faults exercise.
"""

from __future__ import annotations

from popbench.pop.pbft import PbftEngine, PbftHost
from popbench.errors import ConfigError
from popbench.mempool import PoolItem
from popbench.mining import grind
from popbench.model.proof import Proof
from popbench.wire import Gossip, ItemKind, Message, PrePrepare, Role

BYZANTINE_KINDS = ("silent", "equivocate", "invalid-proofs")


class SilentLeader(PbftEngine):
    def propose(self) -> None:
        return None


class EquivocatingLeader(PbftEngine):
    def propose(self) -> None:
        items = self.host.mempool.oldest(self.batch_size)
        for offset, link in enumerate(self.host.peers.validator_links()):  # type: ignore[attr-defined]
            block, _ = self.host.ledger.build_block(self.view, self.host.node_id, items[offset % 2 :])
            link.send(PrePrepare(self.view, self.height, block.encode()))


class InvalidProofLeader(PbftEngine):
    """Corrupts the payload of real proofs, which breaks their signatures but keeps them well formed.

    It gossips the forged proofs first, so honest validators see them, verify them and refuse them.
    """

    def propose(self) -> None:
        forged = [_forge(item) for item in self.host.mempool.oldest(self.batch_size)]
        block, _ = self.host.ledger.build_block(self.view, self.host.node_id, forged)
        self.host.broadcast(Gossip(ItemKind.PROOF, [item.raw for item in forged]))
        self.host.broadcast(PrePrepare(self.view, self.height, block.encode()))


def _forge(item: PoolItem) -> PoolItem:
    """The same proof with its payload inverted: well formed, new id, the old signature no longer fits."""
    proof: Proof = item.obj
    payload = bytes(b ^ 0xFF for b in proof.payload) or b"\x00"
    forged = Proof(proof.chain_id, proof.owner, proof.work_bits, proof.run_tag, proof.submitted_ns,
                   payload, proof.nonce, proof.signature)  # fmt: skip
    forged.nonce = grind(forged.work_prefix(), proof.work_bits) or 0  # real work: only the signature is wrong
    return PoolItem(forged.id, ItemKind.PROOF, forged, forged.encode())


ENGINES: dict[str | None, type[PbftEngine]] = {
    None: PbftEngine,
    "silent": SilentLeader,
    "equivocate": EquivocatingLeader,
    "invalid-proofs": InvalidProofLeader,
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
        return ENGINES[kind](host)
    except KeyError as err:
        raise ConfigError(f"unknown Byzantine behaviour {kind!r}; known: {', '.join(BYZANTINE_KINDS)}", key="byzantine") from err
