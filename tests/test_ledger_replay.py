"""Execution and replay: a restarted ledger holds exactly the state its certified head claims, whatever
the blocks skipped; a block that lists an item twice is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from popbench import crypto
from popbench.errors import ConsensusError, StorageError
from popbench.genesis import make_genesis
from popbench.mempool import PoolItem
from popbench.model.hashing import address_of
from popbench.model.transfer import TransferKind
from popbench.pop import sync
from popbench.pop.ledger import CommittedBlock
from tests.chain_builder import NodeChain, certify, proof_item, transfer_item

GENESIS, KEYS = make_genesis(4, seed="test-ledger-replay")
OWNER = crypto.derive_key("test-ledger-replay-owner", 0)
STRANGER = crypto.derive_key("test-ledger-replay-stranger", 0)  # holds no account
NEW_ADDRESS = b"\x42" * 20  # no account at genesis


def skipped_transfers() -> list[PoolItem]:
    """Transfers admission can accept or a leader can include that execution skips, and one that applies."""
    return [
        transfer_item(KEYS[1], GENESIS, NEW_ADDRESS, 5, nonce=3),  # gapped nonce (admission accepts it)
        transfer_item(KEYS[2], GENESIS, b"\x43" * 20, 10**12, nonce=0),  # more than the balance
        transfer_item(STRANGER, GENESIS, b"\x44" * 20, 1, nonce=0),  # sender without an account
        transfer_item(KEYS[3], GENESIS, b"\x45" * 20, 2000, nonce=0, kind=TransferKind.BOND),  # recipient unused
        transfer_item(KEYS[0], GENESIS, b"\x46" * 20, 7, nonce=0),  # applies
    ]


@pytest.fixture
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    chain = NodeChain(GENESIS, KEYS, tmp_path / "a", 0)
    yield chain
    chain.close()


def test_a_restart_after_skipped_transfers_holds_the_certified_state_root(node: NodeChain) -> None:
    record = node.commit_items([proof_item(OWNER, GENESIS, 1), *skipped_transfers()], proposer=1)
    before = node.ledger.state.rows()
    node.reopen()
    assert node.ledger.state.root() == record.block.state_root
    assert node.ledger.state.rows() == before
    for address in (NEW_ADDRESS, b"\x43" * 20, b"\x44" * 20, b"\x45" * 20, address_of(STRANGER.public_key)):
        assert not node.ledger.state.has_account(address), address.hex()
    assert node.ledger.state.has_account(b"\x46" * 20)


def test_a_joiner_accepts_the_snapshot_of_a_restarted_node(node: NodeChain) -> None:
    node.commit_items(skipped_transfers(), proposer=2)
    node.reopen()
    height = node.ledger.height
    raw = node.store.committed_at(height)
    assert raw is not None
    snapshot = sync.verify_snapshot(GENESIS, height, node.ledger.state.encode_snapshot(), raw)
    assert snapshot.state.root() == node.ledger.state.root()


def test_a_restarted_node_and_one_that_never_stopped_execute_the_next_blocks_alike(node: NodeChain, tmp_path: Path) -> None:
    other = NodeChain(GENESIS, KEYS, tmp_path / "b", 1)
    try:
        first = node.commit_items([proof_item(OWNER, GENESIS, 2), *skipped_transfers()], proposer=3)
        other.apply(first)
        node.reopen()
        # The restarted node proposes; the node that never stopped must accept its block, and back.
        second = node.commit_items([transfer_item(KEYS[1], GENESIS, NEW_ADDRESS, 5, nonce=0)], proposer=0)
        other.apply(second)
        third = other.commit_items([proof_item(OWNER, GENESIS, 3)], proposer=1)
        node.apply(third)
        assert node.ledger.state.root() == other.ledger.state.root() == third.block.state_root
    finally:
        other.close()


def test_stored_accounts_that_miss_the_head_root_are_rebuilt_by_replaying_the_blocks(node: NodeChain) -> None:
    """A database an older version wrote (a phantom zero account for a skipped transfer's recipient)."""
    record = node.commit_items(skipped_transfers(), proposer=1)
    node.commit_items([proof_item(OWNER, GENESIS, 4)], proposer=2)
    good = node.ledger.state.rows()
    node.store.replace_accounts([*good, (NEW_ADDRESS, 0, 0, 0, 0)])
    node.reopen()
    assert node.ledger.state.rows() == good and node.ledger.height == 2
    assert record.block.transfer_ids[0] in node.ledger.committed_ids
    assert sorted(node.store.load_accounts()) == good  # the account table was rewritten


def test_a_snapshot_database_whose_accounts_miss_the_root_refuses_to_start(node: NodeChain) -> None:
    """A joiner's database holds no blocks below its snapshot: nothing to replay from, so it must not start."""
    node.commit_items([proof_item(OWNER, GENESIS, 5)], proposer=1)
    record = node.commit_items([proof_item(OWNER, GENESIS, 9)], proposer=2)
    rows = [*node.ledger.state.rows(), (NEW_ADDRESS, 0, 0, 0, 0)]
    node.store.replace_state(2, record.block.hash, record.encode(), rows, record.block.state_root)
    with pytest.raises(StorageError, match="replay of block 1 failed: block height 2, expected 1"):
        node.reopen()


def test_a_block_listing_an_item_twice_is_refused_with_its_reason(node: NodeChain, tmp_path: Path) -> None:
    proof = proof_item(OWNER, GENESIS, 6)
    leader = NodeChain(GENESIS, KEYS, tmp_path / "byzantine", 2)
    try:
        block, _ = leader.ledger.build_block(0, 2, [proof, proof])  # a Byzantine leader's block
    finally:
        leader.close()
    assert block.proof_ids == [proof.item_id, proof.item_id]
    with pytest.raises(ConsensusError, match="more than once"):
        node.ledger.execute(block, [proof, proof])
    record = CommittedBlock(block, certify(GENESIS, KEYS, block), [proof.raw, proof.raw], [])
    with pytest.raises(ConsensusError, match="more than once"):
        node.ledger.apply_committed(record.encode())
    assert node.ledger.height == 0


def test_items_that_are_not_the_blocks_ids_in_order_are_refused(node: NodeChain) -> None:
    first, second = proof_item(OWNER, GENESIS, 7), proof_item(OWNER, GENESIS, 8)
    block, _ = node.ledger.build_block(0, 1, [first, second])
    with pytest.raises(ConsensusError, match="not its ids in order"):
        node.ledger.execute(block, [second, first])
    assert node.ledger.execute(block, [first, second]).root() == block.state_root
