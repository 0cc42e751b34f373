"""Transfers waiting for a PoW block: admission into the mempool, and their return after a reorg.

The PoW chain orders transfers; it does not execute them (no balances: see docs/pow.md, "Limits"), so
admission checks the encoding, the chain id, the signature and replays against the main chain and the
mempool.
"""

from __future__ import annotations

from collections.abc import Iterable

from popbench.counters import NodeCounters
from popbench.errors import InvalidProof, ProtocolError
from popbench.mempool import Mempool, PoolItem
from popbench.model.hashing import sha256
from popbench.model.transfer import Transfer, check_transfer_signature
from popbench.pow.block import PowBlock
from popbench.pow.chain import BlockTree
from popbench.wire import ItemKind, RejectReason


class TransferPool:
    """The node's mempool of transfers, kept consistent with the main chain of its block tree."""

    def __init__(self, mempool: Mempool, tree: BlockTree, chain_id: bytes, counters: NodeCounters) -> None:
        self.mempool = mempool
        self.tree = tree
        self.chain_id = chain_id
        self.counters = counters
        self.returned = 0  # transfers put back by reorgs

    def __len__(self) -> int:
        return len(self.mempool)

    def __contains__(self, transfer_id: object) -> bool:
        return transfer_id in self.mempool

    def admit(self, raw: bytes) -> tuple[RejectReason, bytes]:
        """Admit one encoded transfer; returns ACCEPTED or why not, and the transfer's id."""
        try:
            transfer = Transfer.decode(raw)
        except ProtocolError:
            return self._rejected(RejectReason.MALFORMED, sha256(raw))
        if transfer.id in self.mempool or self.tree.transfer_height(transfer.id) is not None:
            return self._rejected(RejectReason.REPLAY, transfer.id)
        if self.mempool.full:
            return self._rejected(RejectReason.BUSY, transfer.id)
        try:
            self.verify(transfer)
        except InvalidProof as err:
            return self._rejected(err.reason, transfer.id)  # type: ignore[arg-type]
        self.mempool.add(PoolItem(transfer.id, ItemKind.TRANSFER, transfer, raw))
        self.counters.items_admitted[ItemKind.TRANSFER.name] += 1
        return RejectReason.ACCEPTED, transfer.id

    def verify(self, transfer: Transfer) -> None:
        """The block tree's transfer check too, so the counters see every signature verification."""
        if transfer.chain_id == self.chain_id:
            self.counters.signature_verifications += 1
        check_transfer_signature(transfer, self.chain_id)

    def oldest(self, max_count: int) -> list[bytes]:
        return [item.raw for item in self.mempool.oldest(max_count)]

    def blocks_attached(self, blocks: Iterable[PowBlock]) -> None:
        for block in blocks:
            self.mempool.remove(block.transfer_ids)

    def return_transfers(self, transfers: Iterable[Transfer]) -> None:
        items = [PoolItem(t.id, ItemKind.TRANSFER, t, t.encode()) for t in transfers]
        self.mempool.readd(items)
        self.returned += len(items)

    def _rejected(self, reason: RejectReason, item_id: bytes) -> tuple[RejectReason, bytes]:
        self.counters.items_rejected[reason.name] += 1
        return reason, item_id
