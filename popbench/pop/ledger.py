"""The committed chain of one PoP node: head, state, replay set, and its persistence.

The ledger executes blocks (applies their proofs and transfers to a copy of the state and checks the
state root the proposer claimed), commits them to SQLite in one transaction, and applies blocks that
arrive with a commit certificate during catch-up. One function, :meth:`Ledger.execute`, runs a block
whether it is proposed, voted on, caught up or replayed at start-up, and a commit persists exactly the
accounts that execution wrote, so a restarted node holds the state root its certified head claims
(docs/consensus.md, "Execution and replay").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from popbench.errors import ConsensusError, ProtocolError, StorageError, SyncError
from popbench.genesis import Genesis
from popbench.mempool import PoolItem
from popbench.model.block import AnyCertificate, Block, decode_certificate
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer
from popbench.pop.leaders import WINDOW, LeaderSchedule
from popbench.pop.state import RewardRules, State
from popbench.store import Store
from popbench.wire import ItemKind
from popbench.wire.codec import Reader, Writer

GENESIS_HASH = bytes(32)
REPLAY_PAGE_BLOCKS = 256  # blocks read from the database at a time when replaying from genesis
RECENT_BLOCKS = 64  # the blocks whose item ids stay in memory; older ids are looked up in the database


class CommittedIds:
    """Every item id committed at or below the head, to refuse replays; memory holds only recent ones.

    The whole set is the database's ``items`` table, written in the same transaction as the block (so it
    is exactly the committed chain's ids, after a crash too); memory keeps the last ``RECENT_BLOCKS``
    blocks' ids, where a replay or a late gossip copy usually hits, and anything older costs one primary-key
    lookup. A node's memory therefore does not grow with the chain, and a replay is refused at any age
    (docs/consensus.md, "Replay protection").
    """

    def __init__(self, store: Store, height: int, recent_blocks: int = RECENT_BLOCKS) -> None:
        self._store = store
        self._recent_blocks = recent_blocks
        self._blocks: deque[list[bytes]] = deque()
        self._recent: set[bytes] = set()
        self.height = height  # ids the store holds at heights above this do not count (a replay from genesis)

    def __contains__(self, item_id: object) -> bool:
        if item_id in self._recent:
            return True
        return isinstance(item_id, bytes) and self._store.item_committed(item_id, self.height)

    def among(self, ids: Iterable[bytes]) -> list[bytes]:
        """Those of ``ids`` already committed, in their order: memory first, one query for the rest."""
        ids = list(ids)
        unknown = [i for i in ids if i not in self._recent]
        older = self._store.items_committed(unknown, self.height) if unknown else set()
        return [i for i in ids if i in self._recent or i in older]

    def add_block(self, height: int, ids: Iterable[bytes]) -> None:
        block = list(ids)
        self._blocks.append(block)
        self._recent.update(block)
        while len(self._blocks) > self._recent_blocks:
            self._recent.difference_update(self._blocks.popleft())
        self.height = height

    def in_memory(self) -> int:
        """Ids held in memory (at most RECENT_BLOCKS blocks' worth)."""
        return len(self._recent)


class CommittedBlock:
    """A block, its commit certificate and the exact bytes of its items: what storage and catch-up carry."""

    __slots__ = ("block", "certificate", "proofs", "transfers")

    def __init__(self, block: Block, certificate: AnyCertificate, proofs: list[bytes], transfers: list[bytes]) -> None:
        self.block = block
        self.certificate = certificate
        self.proofs = proofs
        self.transfers = transfers

    def encode(self) -> bytes:
        writer = Writer().blob(self.block.encode()).blob(self.certificate.encode())
        return writer.blobs(self.proofs).blobs(self.transfers).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> CommittedBlock:
        reader = Reader(data)
        block = Block.decode(reader.blob())
        certificate = decode_certificate(reader.blob())
        proofs, transfers = reader.blobs(), reader.blobs()
        reader.finish()
        return cls(block, certificate, proofs, transfers)

    @staticmethod
    def decode_certified(data: bytes) -> tuple[Block, AnyCertificate]:
        """The block and its certificate, leaving the items' bytes undecoded: all a chain verifier reads."""
        reader = Reader(data)
        return Block.decode(reader.blob()), decode_certificate(reader.blob())


class Ledger:
    """Head, state and replay set of the committed chain, kept in step with the node's Store."""

    def __init__(self, genesis: Genesis, store: Store) -> None:
        self.genesis = genesis
        self.store = store
        self.rules = RewardRules(
            reward_per_proof=genesis.params.reward_per_proof,
            block_reward=genesis.params.block_reward,
            validator_reward=genesis.params.validator_reward,
        )
        self.validator_addresses = [v.address for v in genesis.validators]
        self.height = 0
        self.committed_ids = CommittedIds(store, 0)
        self.head_hash = GENESIS_HASH
        self.last_commit_ns = 0
        self.wall_ns: Callable[[], int] = time.time_ns  # block timestamps; a clock-skew fault shifts it
        self.leaders = LeaderSchedule(genesis, reputation=genesis.params.leader_reputation == 1)
        self._load()

    def _load(self) -> None:
        head = self.store.head()
        if head is None:
            self.state = self._genesis_state()
            return
        self.height, self.head_hash = head
        self.state = State.from_rows(self.store.load_accounts())
        self.committed_ids = CommittedIds(self.store, self.height)  # the store holds them all
        certified_root = self.store.state_root_at(self.height)
        if self.state.root() != certified_root:
            self._rebuild_by_replay(certified_root)
        else:
            self._restore_leaders()

    def _restore_leaders(self) -> None:
        """Who missed turns lately, from the last stored headers (a replay from genesis relearns it anyway)."""
        first = max(1, self.height - 2 * WINDOW + 1)
        self.leaders.restore(Block.decode(Reader(data).blob()) for data in self.store.committed_range(first, 2 * WINDOW))

    def _genesis_state(self) -> State:
        return genesis_state(self.genesis)

    def _rebuild_by_replay(self, certified_root: bytes | None) -> None:
        """The stored accounts disagree with the head's state root (a database an older version wrote):
        re-execute every stored block from genesis through :meth:`execute`, then rewrite the accounts."""
        head_height = self.height
        self.height, self.head_hash, self.state = 0, GENESIS_HASH, self._genesis_state()
        self.committed_ids = CommittedIds(self.store, 0)  # the stored ids above the replayed height do not count
        while self.height < head_height:
            page = self.store.committed_range(self.height + 1, REPLAY_PAGE_BLOCKS)
            if not page:
                raise StorageError(f"{self.store.path}: the stored state does not match the state root of height "
                                   f"{head_height}, and block {self.height + 1} is not stored to replay from")  # fmt: skip
            for data in page:
                self._replay_one(data)
        if self.state.root() != certified_root:
            raise StorageError(f"{self.store.path}: replaying the stored blocks does not reach the head's state root")
        self.store.replace_accounts(self.state.rows())

    def _replay_one(self, data: bytes) -> None:
        try:
            record = CommittedBlock.decode(data)
            items = items_of(record)
            post = self.execute(record.block, items)
        except (ProtocolError, SyncError, ConsensusError) as err:
            raise StorageError(f"{self.store.path}: replay of block {self.height + 1} failed: {err}") from err
        self._advance(record.block, post)

    # -- execution -------------------------------------------------------------------------------
    def build_block(self, view: int, proposer: int, items: Sequence[PoolItem]) -> tuple[Block, State]:
        """A proposal for the next height from mempool items, with the state root after applying them."""
        proofs, transfers = split_items(items)
        proof_ids = [item.item_id for item in items if item.kind == ItemKind.PROOF]
        transfer_ids = [item.item_id for item in items if item.kind == ItemKind.TRANSFER]
        post = self._apply(proofs, transfers, proposer)
        block = Block(
            height=self.height + 1, view=view, prev_hash=self.head_hash, proposer=proposer,
            timestamp_ns=self.wall_ns(), items_root=Block.items_root_of(proof_ids, transfer_ids),
            state_root=post.root(), proof_ids=proof_ids, transfer_ids=transfer_ids,
        )  # fmt: skip
        return block, post

    def execute(self, block: Block, items: Sequence[PoolItem]) -> State:
        """Check ``block`` against the head and its items; return the state after it.

        The one execution path: proposals, catch-up and start-up replay all run blocks through here.
        """
        self.check_links(block)
        self.check_items(block, items)
        proofs, transfers = split_items(items)
        post = self._apply(proofs, transfers, block.proposer)
        if post.root() != block.state_root:
            raise ConsensusError("state root after applying the block differs from the proposal")
        return post

    def check_items(self, block: Block, items: Sequence[PoolItem]) -> None:
        """The items are the block's ids in order, each once, none committed before."""
        ids = [*block.proof_ids, *block.transfer_ids]
        if len(set(ids)) != len(ids):
            repeated = next(i for i in ids if ids.count(i) > 1)
            raise ConsensusError(f"block lists item {repeated.hex()[:16]} more than once")
        if [item.item_id for item in items] != ids:
            raise ConsensusError(f"the items given for block {block.height} are not its ids in order")
        if block.items_root != Block.items_root_of(block.proof_ids, block.transfer_ids):
            raise ConsensusError("items root does not match the block's ids")
        replayed = self.committed_ids.among(ids)
        if replayed:
            raise ConsensusError(f"block includes {len(replayed)} already committed items")

    def check_links(self, block: Block) -> None:
        if block.height != self.height + 1:
            raise ConsensusError(f"block height {block.height}, expected {self.height + 1}")
        if block.prev_hash != self.head_hash:
            raise ConsensusError("block does not extend the committed head")
        if block.proposer not in self.genesis.public_keys:
            raise ConsensusError(f"proposer {block.proposer} is not a validator")

    def _apply(self, proofs: list[Proof], transfers: list[Transfer], proposer: int) -> State:
        post = self.state.copy()
        proposer_address = self.genesis.validator(proposer).address
        post.apply_block(proofs, transfers, proposer_address, self.validator_addresses, self.rules)
        return post

    # -- commit ----------------------------------------------------------------------------------
    def commit(self, block: Block, certificate: AnyCertificate, items: Sequence[PoolItem], post: State) -> CommittedBlock:
        """Persist ``block`` with its certificate and make ``post`` the state; one SQLite transaction."""
        record = CommittedBlock(
            block, certificate,
            [i.raw for i in items if i.kind == ItemKind.PROOF],
            [i.raw for i in items if i.kind == ItemKind.TRANSFER],
        )  # fmt: skip
        item_ids = [*block.proof_ids, *block.transfer_ids]
        rows = post.written_rows()  # exactly what execution wrote: replay and snapshots see the same accounts
        self.store.save_committed(block.height, block.hash, certificate.view, record.encode(), item_ids, rows, post.root())
        self._advance(block, post)
        self.last_commit_ns = time.time_ns()
        return record

    def _advance(self, block: Block, post: State) -> None:
        """Make ``block`` the head and ``post`` the state (after a commit or a replayed block)."""
        self.state = post
        self.height = block.height
        self.head_hash = block.hash
        self.leaders.advance(block)
        self.committed_ids.add_block(block.height, [*block.proof_ids, *block.transfer_ids])

    def apply_committed(self, data: bytes) -> CommittedBlock:
        """Catch-up: check a stored block's certificate and state root, then commit it.

        Its proofs are not re-verified: the certificate shows 2f+1 validators (at least f+1 honest)
        verified them before committing.
        """
        try:
            record = CommittedBlock.decode(data)
        except ProtocolError as err:
            raise SyncError(f"malformed committed block: {err}") from err
        block = record.block
        record.certificate.check(self.genesis, block.height, block.hash)
        items = items_of(record)
        post = self.execute(block, items)
        return self.commit(block, record.certificate, items, post)

    def committed_records(self, from_height: int, count: int) -> list[bytes]:
        return self.store.committed_range(from_height, count)


def split_items(items: Sequence[PoolItem]) -> tuple[list[Proof], list[Transfer]]:
    proofs = [item.obj for item in items if item.kind == ItemKind.PROOF]
    transfers = [item.obj for item in items if item.kind == ItemKind.TRANSFER]
    return proofs, transfers


def items_of(record: CommittedBlock) -> list[PoolItem]:
    """Decode the items a committed block carries, in the block's id order."""
    try:
        proofs = [Proof.decode(raw) for raw in record.proofs]
        transfers = [Transfer.decode(raw) for raw in record.transfers]
    except ProtocolError as err:
        raise SyncError(f"block {record.block.height} carries a malformed item: {err}") from err
    return [
        *(PoolItem(p.id, ItemKind.PROOF, p, raw) for p, raw in zip(proofs, record.proofs, strict=True)),
        *(PoolItem(t.id, ItemKind.TRANSFER, t, raw) for t, raw in zip(transfers, record.transfers, strict=True)),
    ]


def genesis_state(genesis: Genesis) -> State:
    """The opening state, before height 1: the genesis balances and every validator's stake (docs/genesis.md)."""
    stakes = {v.address: v.stake for v in genesis.validators}
    return State.from_genesis(dict(genesis.balances), stakes)
