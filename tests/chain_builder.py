"""Real PoP chains on real SQLite stores for tests: blocks built by the ledger, certificates signed by
the genesis validators' keys, so anything that verifies a chain is given the real thing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from popbench import crypto
from popbench.genesis import ChainParams, Genesis
from popbench.mempool import PoolItem
from popbench.mining import grind
from popbench.model.block import Block, CommitCertificate, vote_message
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer, TransferKind
from popbench.pop.ledger import CommittedBlock, Ledger
from popbench.pow.block import PowBlock
from popbench.pow.chain import BlockTree
from popbench.store import Store, node_database
from popbench.wire import ItemKind


def certify(genesis: Genesis, keys: Sequence[crypto.SigningKey], block: Block, view: int = 0,
            signers: Sequence[int] | None = None) -> CommitCertificate:  # fmt: skip
    """A commit certificate for ``block`` signed by ``signers`` (default: the first quorum of validators)."""
    chosen = list(range(genesis.quorum)) if signers is None else list(signers)
    message = vote_message("commit", genesis.chain_id, view, block.height, block.hash)
    return CommitCertificate(view, [(voter, keys[voter].sign(message)) for voter in chosen])


def proof_item(owner: crypto.SigningKey, genesis: Genesis, tag: int) -> PoolItem:
    proof = Proof.create(owner, genesis.chain_id, tag.to_bytes(8, "big"), genesis.params.min_work_bits, 1, tag)
    return PoolItem(proof.id, ItemKind.PROOF, proof, proof.encode())


def transfer_item(sender: crypto.SigningKey, genesis: Genesis, recipient: bytes, amount: int, nonce: int,
                  fee: int = 1, kind: TransferKind = TransferKind.PAY) -> PoolItem:  # fmt: skip
    transfer = Transfer.create(sender, genesis.chain_id, recipient, amount, fee, nonce, kind)
    return PoolItem(transfer.id, ItemKind.TRANSFER, transfer, transfer.encode())


class NodeChain:
    """One node's ledger on its own database under ``data_dir`` (where the harness looks for it)."""

    def __init__(self, genesis: Genesis, keys: Sequence[crypto.SigningKey], data_dir: Path, node_id: int) -> None:
        self.genesis = genesis
        self.keys = keys
        self.path = node_database(data_dir, node_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.path)
        self.ledger = Ledger(genesis, self.store)

    def commit_items(self, items: Sequence[PoolItem], proposer: int = 0, view: int = 0) -> CommittedBlock:
        """Build the next block from ``items`` as ``proposer`` would, certify it, commit it."""
        block, post = self.ledger.build_block(view, proposer, items)
        ordered = [*(i for i in items if i.kind == ItemKind.PROOF), *(i for i in items if i.kind == ItemKind.TRANSFER)]
        return self.ledger.commit(block, certify(self.genesis, self.keys, block, view), ordered, post)

    def apply(self, record: CommittedBlock) -> None:
        self.ledger.apply_committed(record.encode())

    def reopen(self) -> None:
        """Close the database and start a fresh ledger on it, as a restarted node does."""
        self.store.close()
        self.store = Store(self.path)
        self.ledger = Ledger(self.genesis, self.store)

    def close(self) -> None:
        self.store.close()


# -- proof of work -------------------------------------------------------------------------------------
def pow_params() -> ChainParams:
    """Easy work (a few hashes a block) and no retarget within a test's chain."""
    return ChainParams(pow_initial_work_bits=4, pow_retarget_blocks=10_000)


class PowNodeChain:
    """One PoW node's block tree, mined here with real work and persisted as the node persists it."""

    def __init__(self, genesis: Genesis, data_dir: Path, node_id: int) -> None:
        self.node_id = node_id
        self.path = node_database(data_dir, node_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.tree = BlockTree(genesis.chain_id, genesis.params, clock_ms=lambda: 1 << 60)
        self._seen_ns = 0

    def mine(self, parent: bytes | None = None, miner: int | None = None) -> PowBlock:
        """A new block on ``parent`` (default: the tip), valid for the tree, stored in the database."""
        entry = self.tree.entry(parent) if parent is not None else self.tree.tip
        assert entry is not None
        miner = self.node_id if miner is None else miner
        block = PowBlock(entry.hash, entry.height + 1, entry.block.timestamp_ms + 1000, self.tree.expected_bits(entry), miner, [])
        nonce = grind(block.header_prefix(), block.work_bits)
        assert nonce is not None
        block.nonce = nonce
        self.store_block(block)
        return block

    def store_block(self, block: PowBlock) -> None:
        self.tree.add(block)
        entry = self.tree.entry(block.hash)
        assert entry is not None
        self._seen_ns += 1
        with Store(self.path) as store:
            store.save_pow_block(block.hash, block.prev_hash, block.height, entry.total_work, block.encode())
            store.save_pow_arrival(block.hash, block.height, block.miner, self._seen_ns)

    def extend(self, count: int, miner: int | None = None) -> list[PowBlock]:
        return [self.mine(miner=miner) for _ in range(count)]

    def copy_from(self, other: PowNodeChain, blocks: Sequence[PowBlock]) -> None:
        """Receive ``blocks`` another node mined (in order), as relay would deliver them."""
        for block in blocks:
            self.store_block(PowBlock.decode(block.encode()))
