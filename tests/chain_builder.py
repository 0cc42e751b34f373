"""Real PoP chains on real SQLite stores for tests: blocks built by the ledger, certificates signed by
the genesis validators' keys, so anything that verifies a chain is given the real thing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from popbench import crypto
from popbench.genesis import Genesis
from popbench.mempool import PoolItem
from popbench.model.block import Block, CommitCertificate, vote_message
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer, TransferKind
from popbench.pop.ledger import CommittedBlock, Ledger
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
