"""The block tree of one node: every valid block it knows, the heaviest chain, reorgs and orphans.

- Fork choice: the tip is the block with the most cumulative work (sum of ``2 ** work_bits`` from
  height 1); on a tie the tip already held stays (first seen wins).
- When the tip moves, :meth:`BlockTree.add` returns the :class:`Reorg`: blocks detached from the old
  main chain and attached from the new one, so the node can return detached transfers to its mempool.
- A block whose parent is unknown is an orphan: held (bounded) until the parent arrives, and reported
  as ``missing_parent`` so the node can fetch it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from popbench.genesis import ChainParams
from popbench.model.transfer import Transfer, check_transfer_signature
from popbench.pow import retarget, rules
from popbench.pow.block import PowBlock, genesis_block
from popbench.pow.rules import InvalidBlock

MAX_ORPHANS = 512
LOCATOR_DENSE = 10  # the locator lists the last blocks one by one, then doubles its steps


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Entry:
    """A block in the tree with what the tree derived: its parent and the work of its chain."""

    __slots__ = ("block", "hash", "height", "parent", "total_work")

    def __init__(self, block: PowBlock, parent: Entry | None) -> None:
        self.block = block
        self.hash = block.hash
        self.height = block.height
        self.parent = parent
        self.total_work: int = parent.total_work + block.work if parent is not None else 0


@dataclass(frozen=True)
class Reorg:
    """A move of the tip: blocks left behind and blocks now on the main chain, each lowest first."""

    detached: list[PowBlock]
    attached: list[PowBlock]

    @property
    def depth(self) -> int:
        return len(self.detached)


@dataclass
class AddResult:
    """What adding one block did."""

    added: list[PowBlock] = field(default_factory=list)  # stored now: the block, then orphans it connected
    reorg: Reorg | None = None  # set when the tip moved
    missing_parent: bytes | None = None  # the block is held as an orphan: fetch this parent
    duplicate: bool = False
    rejected: list[InvalidBlock] = field(default_factory=list)  # connected orphans that broke a rule


class BlockTree:
    """All blocks one node accepted, rooted at the chain's fixed genesis block."""

    def __init__(self, chain_id: bytes, params: ChainParams, clock_ms: Callable[[], int] = wall_clock_ms,
                 check_transfer: rules.TransferCheck | None = None) -> None:  # fmt: skip
        self.params = params
        self._clock_ms = clock_ms
        self._check_transfer = check_transfer or (lambda transfer: check_transfer_signature(transfer, chain_id))
        self.genesis = Entry(genesis_block(chain_id, params.pow_initial_work_bits), None)
        self._entries: dict[bytes, Entry] = {self.genesis.hash: self.genesis}
        self.tip = self.genesis
        self._main: list[bytes] = [self.genesis.hash]  # main-chain hash by height
        self._included: dict[bytes, int] = {}  # transfer id -> height, main chain only
        self._orphans: dict[bytes, PowBlock] = {}
        self._orphans_by_parent: dict[bytes, list[bytes]] = {}

    # -- queries -----------------------------------------------------------------------------------
    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, block_hash: bytes) -> PowBlock | None:
        entry = self._entries.get(block_hash)
        return entry.block if entry is not None else None

    def entry(self, block_hash: bytes) -> Entry | None:
        return self._entries.get(block_hash)

    def is_orphan(self, block_hash: bytes) -> bool:
        return block_hash in self._orphans

    @property
    def stale_blocks(self) -> int:
        """Known blocks that are not on the main chain."""
        return len(self._entries) - len(self._main)

    @property
    def orphans(self) -> int:
        return len(self._orphans)

    def on_main_chain(self, entry: Entry) -> bool:
        return entry.height < len(self._main) and self._main[entry.height] == entry.hash

    def main_hash_at(self, height: int) -> bytes | None:
        return self._main[height] if 0 <= height < len(self._main) else None

    def transfer_height(self, transfer_id: bytes) -> int | None:
        """Height of the main-chain block that holds the transfer, or None."""
        return self._included.get(transfer_id)

    def expected_bits(self, parent: Entry) -> int:
        """Work bits a child of ``parent`` must carry (the retarget rule)."""
        height = parent.height + 1
        k = self.params.pow_retarget_blocks
        if not retarget.is_retarget_height(height, k):
            return parent.block.work_bits
        start = self._ancestor(parent, retarget.window_start_height(height, k))
        window_ms = parent.block.timestamp_ms - start.block.timestamp_ms
        return retarget.next_work_bits(height, parent.block.work_bits, window_ms, k, self.params.pow_block_interval_ms)

    def _ancestor(self, entry: Entry, height: int) -> Entry:
        if self.on_main_chain(entry):
            return self._entries[self._main[height]]
        while entry.height > height:
            assert entry.parent is not None
            entry = entry.parent
        return entry

    # -- adding --------------------------------------------------------------------------------------
    def add(self, block: PowBlock) -> AddResult:
        """Validate and store ``block`` (raises InvalidBlock); connect orphans; apply fork choice."""
        result = AddResult()
        if block.hash in self._entries or block.hash in self._orphans:
            result.duplicate = True
            return result
        rules.check_header_alone(block)
        parent = self._entries.get(block.prev_hash)
        if parent is None:
            self._hold_orphan(block)
            result.missing_parent = block.prev_hash
            return result
        old_tip = self.tip
        result.added.append(self._attach(block, parent))
        self._connect_orphans(block.hash, result)
        self._choose_tip(old_tip, result)
        return result

    def _attach(self, block: PowBlock, parent: Entry) -> PowBlock:
        rules.check_against_parent(block, parent.block, self.expected_bits(parent), self._clock_ms())
        ids = rules.check_transfers(block, self.params.batch_size, self._check_transfer)
        rules.refuse_duplicates(ids, self._branch_membership(parent))
        self._entries[block.hash] = Entry(block, parent)
        return block

    def _branch_membership(self, parent: Entry) -> Callable[[bytes], bool]:
        """Whether a transfer id is already on the branch that ends at ``parent``."""
        side_ids: set[bytes] = set()
        entry = parent
        while not self.on_main_chain(entry):
            side_ids.update(entry.block.transfer_ids)
            assert entry.parent is not None
            entry = entry.parent
        fork_height = entry.height

        def contains(transfer_id: bytes) -> bool:
            height = self._included.get(transfer_id)
            return transfer_id in side_ids or (height is not None and height <= fork_height)

        return contains

    def _connect_orphans(self, parent_hash: bytes, result: AddResult) -> None:
        waiting = [parent_hash]
        while waiting:
            for child_hash in self._orphans_by_parent.pop(waiting.pop(), []):
                child = self._orphans.pop(child_hash, None)
                if child is None:
                    continue
                try:
                    result.added.append(self._attach(child, self._entries[child.prev_hash]))
                except InvalidBlock as err:
                    result.rejected.append(err)
                    continue
                waiting.append(child_hash)

    def _hold_orphan(self, block: PowBlock) -> None:
        if len(self._orphans) >= MAX_ORPHANS:
            oldest = next(iter(self._orphans))
            self._orphans.pop(oldest)  # its entry in _orphans_by_parent is skipped when met
        self._orphans[block.hash] = block
        self._orphans_by_parent.setdefault(block.prev_hash, []).append(block.hash)

    # -- fork choice and reorg -----------------------------------------------------------------------
    def _choose_tip(self, old_tip: Entry, result: AddResult) -> None:
        best = max((self._entries[block.hash] for block in result.added), key=lambda entry: entry.total_work)
        if best.total_work > old_tip.total_work:
            result.reorg = self._move_tip(best)

    def _move_tip(self, new_tip: Entry) -> Reorg:
        detached, attached = _paths_to_common_ancestor(self.tip, new_tip)
        for block in detached:
            for transfer_id in block.transfer_ids:
                self._included.pop(transfer_id, None)
        fork_height = new_tip.height - len(attached)
        del self._main[fork_height + 1 :]
        for block in attached:
            self._main.append(block.hash)
            for transfer_id in block.transfer_ids:
                self._included[transfer_id] = block.height
        self.tip = new_tip
        return Reorg(detached, attached)

    # -- serving peers ---------------------------------------------------------------------------------
    def locator(self) -> list[bytes]:
        """Main-chain hashes from the tip back to genesis: dense at first, then exponentially sparse."""
        hashes: list[bytes] = []
        height, step = self.tip.height, 1
        while height > 0:
            hashes.append(self._main[height])
            if len(hashes) >= LOCATOR_DENSE:
                step *= 2
            height -= step
        hashes.append(self.genesis.hash)
        return hashes

    def main_chain_after(self, locator: list[bytes], max_count: int) -> list[PowBlock]:
        """Main-chain blocks after the first locator hash on our main chain (genesis if none is)."""
        start = 0
        for block_hash in locator:
            entry = self._entries.get(block_hash)
            if entry is not None and self.on_main_chain(entry):
                start = entry.height
                break
        end = min(len(self._main), start + 1 + max_count)
        return [self._entries[self._main[height]].block for height in range(start + 1, end)]


def _paths_to_common_ancestor(old: Entry, new: Entry) -> tuple[list[PowBlock], list[PowBlock]]:
    detached: list[PowBlock] = []
    attached: list[PowBlock] = []
    while old is not new:
        if old.height >= new.height:
            detached.append(old.block)
            assert old.parent is not None
            old = old.parent
        else:
            attached.append(new.block)
            assert new.parent is not None
            new = new.parent
    detached.reverse()
    attached.reverse()
    return detached, attached


def transfers_to_return(reorg: Reorg) -> list[Transfer]:
    """Transfers of detached blocks that the attached blocks do not hold: back to the mempool with them."""
    attached_ids = {transfer_id for block in reorg.attached for transfer_id in block.transfer_ids}
    return [transfer for block in reorg.detached for transfer in block.transfers if transfer.id not in attached_ids]
