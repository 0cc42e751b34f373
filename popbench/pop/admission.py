"""Admission of proofs and transfers: decode, refuse replays, verify, bound the mempool, batch gossip.

Every validator runs every item it admits through here, whether it came from a client's SUBMIT or a
peer's GOSSIP: that verification is the cost the benchmark exists to show. Items this node asked a
peer for because a pending proposal names them are verified the same way but admitted even when the
mempool is at its bound: refusing them would leave the node unable ever to prepare that block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from popbench.counters import NodeCounters
from popbench.errors import InvalidProof, ProtocolError
from popbench.mempool import Mempool, PoolItem
from popbench.model.hashing import sha256
from popbench.model.proof import Proof, check_proof
from popbench.model.transfer import Transfer, check_transfer_signature
from popbench.pop.ledger import Ledger
from popbench.wire import Gossip, ItemKind, RejectReason
from popbench.wire.messages import SIGNATURE_BYTES

GOSSIP_FLUSH_S = 0.005  # proofs admitted within this window travel to peers in one GOSSIP frame
GOSSIP_MAX_ITEMS = 512


def gossip_batches(kind: ItemKind, raws: list[bytes]) -> Iterator[Gossip]:
    """``raws`` as GOSSIP frames of at most GOSSIP_MAX_ITEMS items each, in order."""
    for start in range(0, len(raws), GOSSIP_MAX_ITEMS):
        yield Gossip(kind, raws[start : start + GOSSIP_MAX_ITEMS])


class Admission:
    """Checks items into the mempool and batches the ones clients submitted for gossip."""

    def __init__(self, ledger: Ledger, mempool: Mempool, counters: NodeCounters, broadcast: Callable[[Gossip], None]) -> None:
        self.ledger = ledger
        self.mempool = mempool
        self.counters = counters
        self.chain_id = ledger.genesis.chain_id
        self.min_work_bits = ledger.genesis.params.min_work_bits
        self._broadcast = broadcast
        self._outgoing: dict[ItemKind, list[bytes]] = {ItemKind.PROOF: [], ItemKind.TRANSFER: []}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._after_flush: list[Callable[[], None]] = []  # acknowledgements owed once the gossip is on its way
        self._expected: set[bytes] = set()  # ids fetched for a pending proposal at the current height

    def admit(self, kind: ItemKind, raw: bytes, relay: bool) -> tuple[RejectReason, bytes]:
        """Admit one encoded item; returns ACCEPTED or the reason, and the item's id."""
        known_id = self._known_id(kind, raw)
        if known_id is not None:
            return self._rejected(RejectReason.REPLAY, known_id)
        try:
            item = self._decode(kind, raw)
        except ProtocolError:
            return self._rejected(RejectReason.MALFORMED, sha256(raw))
        item_id = item.item_id
        expected = item_id in self._expected
        if self.mempool.full and not expected:
            return self._rejected(RejectReason.BUSY, item_id)
        try:
            self._verify(item)
        except InvalidProof as err:
            return self._rejected(err.reason, item_id)  # type: ignore[arg-type]
        self.mempool.add(item, beyond_limit=expected)
        self._expected.discard(item_id)
        self.counters.items_admitted[kind.name] += 1
        if relay:
            self._queue_gossip(kind, raw)
        return RejectReason.ACCEPTED, item_id

    def expect(self, ids: list[bytes]) -> None:
        """``ids`` were requested for a pending proposal: admit them even beyond the mempool's bound."""
        self._expected.update(ids)

    def height_resolved(self) -> None:
        """A block committed: what was fetched for this height's proposals is no longer owed a place."""
        self._expected.clear()

    def lookup(self, ids: list[bytes]) -> list[bytes]:
        """Raw bytes of the requested items this node holds, for a peer's ITEMS_REQUEST."""
        found = (self.mempool.get(item_id) for item_id in ids)
        return [item.raw for item in found if item is not None]

    @staticmethod
    def id_of(kind: ItemKind, raw: bytes) -> bytes:
        """An encoded item's id, read off its bytes without decoding them (what ITEMS_REQUEST names)."""
        return (Proof if kind == ItemKind.PROOF else Transfer).id_of_encoded(raw)

    def _known_id(self, kind: ItemKind, raw: bytes) -> bytes | None:
        """The id of an item this node already holds or committed, read off its bytes without decoding
        them, else None. On a bounded mesh every item reaches a node once over each of its links, so most
        arrivals are repeats: a hash and a lookup each, not a decode (docs/protocol.md, section 7)."""
        if len(raw) <= SIGNATURE_BYTES:
            return None
        item_id = self.id_of(kind, raw)
        return item_id if item_id in self.mempool or item_id in self.ledger.committed_ids else None

    def _decode(self, kind: ItemKind, raw: bytes) -> PoolItem:
        obj = Proof.decode(raw) if kind == ItemKind.PROOF else Transfer.decode(raw)
        return PoolItem(obj.id, kind, obj, raw)

    def _verify(self, item: PoolItem) -> None:
        try:
            if item.kind == ItemKind.PROOF:
                check_proof(item.obj, self.chain_id, self.min_work_bits)
            else:
                check_transfer_signature(item.obj, self.chain_id)
                self.ledger.state.check_transfer(item.obj)
        except InvalidProof as err:
            # the signature is checked last, so only a signature failure has cost a verification
            if err.reason == RejectReason.BAD_SIGNATURE:
                self.counters.signature_verifications += 1
            raise
        self.counters.signature_verifications += 1

    def _rejected(self, reason: RejectReason, item_id: bytes) -> tuple[RejectReason, bytes]:
        self.counters.items_rejected[reason.name] += 1
        return reason, item_id

    # -- gossip batching ---------------------------------------------------------------------------
    def _queue_gossip(self, kind: ItemKind, raw: bytes) -> None:
        queue = self._outgoing[kind]
        queue.append(raw)
        if len(queue) >= GOSSIP_MAX_ITEMS:
            self.flush_gossip()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(GOSSIP_FLUSH_S, self.flush_gossip)

    def after_gossip(self, acknowledge: Callable[[], None]) -> None:
        """Run ``acknowledge`` once the items queued so far have been handed to every peer's link.

        A node acknowledges a client's item only after its gossip is written: a node killed in between
        has not promised it, and one killed after leaves it in the kernel's send buffers, which still
        deliver it (docs/protocol.md, section 6, SUBMIT). Before, an item acknowledged in the 5 ms before a
        kill lived in that node's memory alone and was lost with it."""
        self._after_flush.append(acknowledge)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(GOSSIP_FLUSH_S, self.flush_gossip)

    def flush_gossip(self) -> None:
        """Send what is queued now (also called before a PRE-PREPARE, so its items travel first), then the
        acknowledgements that waited for it."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for kind, queue in self._outgoing.items():
            if queue:
                self._outgoing[kind] = []
                self._broadcast(Gossip(kind, queue))
        acknowledgements, self._after_flush = self._after_flush, []
        for acknowledge in acknowledgements:
            acknowledge()
