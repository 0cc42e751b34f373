"""The post-run safety checks, given real chains: SQLite stores written by the real ledger (PBFT) or
block tree (PoW), blocks and certificates signed with the genesis keys; then conflicts, missing and
unreadable databases, bad certificates, broken links and lagging nodes, each reported for what it is."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from harness.run import safety
from harness.run.pow_chains import read_chains
from harness.run.safety import SafetyCheck, check_pow_safety, check_safety
from popbench import crypto
from popbench.genesis import make_genesis
from popbench.model.block import Block
from popbench.pop.ledger import CommittedBlock
from popbench.pow.rules import CONFIRMATIONS
from popbench.store import Store, node_database
from tests.chain_builder import NodeChain, PowNodeChain, certify, pow_params, proof_item

GENESIS, KEYS = make_genesis(4, seed="test-safety")
POW_GENESIS, _ = make_genesis(3, seed="test-safety-pow", params=pow_params())
OWNER = crypto.derive_key("test-safety-owner", 0)


# -- PBFT ---------------------------------------------------------------------------------------------
def pbft_network(data_dir: Path, blocks: int, nodes: int = 4) -> list[NodeChain]:
    """``nodes`` databases holding the same ``blocks`` certified blocks, as a healthy run leaves them."""
    chains = [NodeChain(GENESIS, KEYS, data_dir, node) for node in range(nodes)]
    for height in range(1, blocks + 1):
        record = chains[0].commit_items([proof_item(OWNER, GENESIS, height)], proposer=height % 4)
        for other in chains[1:]:
            other.apply(record)
    return chains


def close_all(chains: list[NodeChain]) -> None:
    for chain in chains:
        chain.close()


def test_a_consistent_pbft_network_passes(tmp_path: Path) -> None:
    chains = pbft_network(tmp_path, 5)
    close_all(chains)
    result = check_safety(tmp_path, 4, GENESIS)
    assert result.agree and not result.conflicts and not result.unverified, result
    assert result.heights == {0: 5, 1: 5, 2: 5, 3: 5} and result.heights_checked == 5 and result.nodes_checked == 4


def test_nodes_at_different_heights_agree_on_what_they_share(tmp_path: Path) -> None:
    chains = pbft_network(tmp_path, 3)
    for height in (4, 5):  # node 3 crashed: the others went on
        record = chains[0].commit_items([proof_item(OWNER, GENESIS, 100 + height)], proposer=1)
        chains[1].apply(record)
        chains[2].apply(record)
    close_all(chains)
    result = check_safety(tmp_path, 4, GENESIS)
    assert result.agree and result.heights == {0: 5, 1: 5, 2: 5, 3: 3}


def test_two_certified_blocks_at_one_height_are_a_conflict_naming_the_nodes(tmp_path: Path) -> None:
    chains = pbft_network(tmp_path, 2)
    honest = chains[0].commit_items([proof_item(OWNER, GENESIS, 10)], proposer=3)
    chains[1].apply(honest)
    other = chains[2].commit_items([proof_item(OWNER, GENESIS, 11)], proposer=3, view=1)
    chains[3].apply(other)
    close_all(chains)
    result = check_safety(tmp_path, 4, GENESIS)
    assert not result.agree and not result.unverified
    assert result.conflicts_total == 1 and [c.height for c in result.conflicts] == [3]
    assert result.conflicts[0].hashes == {honest.block.hash.hex(): [0, 1], other.block.hash.hex(): [2, 3]}


def test_a_missing_database_fails_the_check(tmp_path: Path) -> None:
    close_all(pbft_network(tmp_path, 2, nodes=3))
    result = check_safety(tmp_path, 4, GENESIS)
    assert not result.agree and not result.conflicts
    assert [(u.node, u.height) for u in result.unverified] == [(3, None)]
    assert "missing" in result.unverified[0].reason
    assert not node_database(tmp_path, 3).exists()  # the check must not create it


def test_an_unreadable_database_fails_the_check(tmp_path: Path) -> None:
    close_all(pbft_network(tmp_path, 2, nodes=3))
    node_database(tmp_path, 3).write_bytes(b"this is not a database" * 100)
    result = check_safety(tmp_path, 4, GENESIS)
    assert not result.agree and [u.node for u in result.unverified] == [3]
    assert "unreadable" in result.unverified[0].reason


@pytest.mark.parametrize(("signers", "reason"), [
    ([0, 1], "certificate has 2 signatures, quorum is 3"),
    ([0, 1, 1], "repeated validator 1"),
    ([0, 1, 9], "unknown or repeated validator 9"),
], ids=["below-quorum", "repeated-voter", "unknown-voter"])  # fmt: skip
def test_a_block_whose_certificate_is_short_of_a_quorum_fails(tmp_path: Path, signers: list[int], reason: str) -> None:
    keys = [*KEYS, *[crypto.derive_key("not-a-validator", i) for i in range(6)]]
    chains = pbft_network(tmp_path, 2)
    block, post = chains[1].ledger.build_block(0, 3, [proof_item(OWNER, GENESIS, 20)])
    chains[1].ledger.commit(block, certify(GENESIS, keys, block, signers=signers), [proof_item(OWNER, GENESIS, 20)], post)
    close_all(chains)
    result = check_safety(tmp_path, 4, GENESIS)
    assert not result.agree
    assert [(u.node, u.height) for u in result.unverified] == [(1, 3)]
    assert reason in result.unverified[0].reason


def test_a_forged_signature_in_a_certificate_fails(tmp_path: Path) -> None:
    chains = pbft_network(tmp_path, 2)
    item = proof_item(OWNER, GENESIS, 21)
    block, post = chains[2].ledger.build_block(0, 3, [item])
    certificate = certify(GENESIS, KEYS, block)
    voter, _ = certificate.votes[2]
    certificate.votes[2] = (voter, KEYS[3].sign(b"something else"))  # signed by a validator, not this vote
    chains[2].ledger.commit(block, certificate, [item], post)
    close_all(chains)
    result = check_safety(tmp_path, 4, GENESIS)
    assert [(u.node, u.height) for u in result.unverified] == [(2, 3)]
    assert f"signature of validator {voter} does not verify" in result.unverified[0].reason


def test_a_certified_block_that_does_not_link_to_the_one_below_fails(tmp_path: Path) -> None:
    chains = pbft_network(tmp_path, 3)
    close_all(chains)
    with Store(node_database(tmp_path, 2)) as store:
        good = CommittedBlock.decode(store.committed_at(2) or b"")
        b = good.block
        forged = Block(4, 0, b.hash, b.proposer, b.timestamp_ns, b.items_root, b.state_root, b.proof_ids, b.transfer_ids)
        record = CommittedBlock(forged, certify(GENESIS, KEYS, forged), good.proofs, good.transfers)
        store.save_committed(4, forged.hash, 0, record.encode(), [], [], forged.state_root)  # links to 2, not 3
    result = check_safety(tmp_path, 4, GENESIS)
    assert not result.agree and [(u.node, u.height) for u in result.unverified] == [(2, 4)]
    assert "broken hash link" in result.unverified[0].reason
    assert result.heights[2] == 3  # verified up to the block below the break


def test_a_gap_in_the_heights_fails(tmp_path: Path) -> None:
    chains = pbft_network(tmp_path, 2)
    close_all(chains)
    with Store(node_database(tmp_path, 1)) as store:
        raw = store.committed_at(2) or b""
        store.replace_state(2, CommittedBlock.decode(raw).block.hash, raw, [], bytes(32))  # a snapshot: no block 1
    result = check_safety(tmp_path, 4, GENESIS)
    assert [(u.node, u.height) for u in result.unverified] == [(1, 2)]
    assert "not contiguous from genesis" in result.unverified[0].reason


def replace_certificate(data_dir: Path, node: int, height: int, signers: list[int], forge: int | None = None) -> None:
    """Store ``node``'s block at ``height`` under a certificate of ``signers`` (``forge``: that voter's
    signature is over other bytes), as a node that heard another quorum first keeps it."""
    with Store(node_database(data_dir, node)) as store:
        good = CommittedBlock.decode(store.committed_at(height) or b"")
        certificate = certify(GENESIS, KEYS, good.block, signers=signers)
        if forge is not None:
            certificate.votes = [(v, KEYS[v].sign(b"other bytes") if v == forge else s) for v, s in certificate.votes]
        record = CommittedBlock(good.block, certificate, good.proofs, good.transfers)
    with sqlite3.connect(node_database(data_dir, node)) as db:
        db.execute("UPDATE blocks SET committed = ? WHERE height = ?", (record.encode(), height))


def test_a_vote_shared_by_two_certificates_is_trusted_only_with_its_own_bytes(tmp_path: Path) -> None:
    close_all(pbft_network(tmp_path, 3))
    replace_certificate(tmp_path, 1, 2, [0, 1, 3])  # honest: another quorum of the same block
    replace_certificate(tmp_path, 2, 2, [0, 1, 3], forge=3)  # node 1's good votes 0 and 1, a forged 3
    result = check_safety(tmp_path, 4, GENESIS)
    assert [(u.node, u.height) for u in result.unverified] == [(2, 2)], result
    assert "signature of validator 3 does not verify" in result.unverified[0].reason
    assert result.heights == {0: 3, 1: 3, 2: 1, 3: 3}


def test_chains_longer_than_a_page_are_judged_on_every_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "BLOCKS_PER_READ", 2)  # 7 blocks: four pages, the last one short
    chains = pbft_network(tmp_path, 5)
    for node, tag in ((0, 30), (1, 30), (2, 31), (3, 31)):  # height 6: two certified blocks
        item = proof_item(OWNER, GENESIS, tag)
        block, post = chains[node].ledger.build_block(0, 2, [item])
        chains[node].ledger.commit(block, certify(GENESIS, KEYS, block), [item], post)
    close_all(chains)
    replace_certificate(tmp_path, 3, 4, [0, 1, 2], forge=2)
    result = check_safety(tmp_path, 4, GENESIS)
    assert [(u.node, u.height) for u in result.unverified] == [(3, 4)], result
    assert result.conflicts_total == 1 and [c.height for c in result.conflicts] == [6]
    assert result.heights == {0: 6, 1: 6, 2: 6, 3: 3} and result.heights_checked == 6


def test_the_result_keeps_its_public_fields_for_the_report(tmp_path: Path) -> None:
    close_all(pbft_network(tmp_path, 1))
    fields = check_safety(tmp_path, 4, GENESIS).as_dict()
    assert {"nodes_checked", "heights_checked", "agree", "conflicts", "heights"} <= set(fields)
    assert isinstance(check_safety(tmp_path, 4, GENESIS), SafetyCheck)


# -- PoW ----------------------------------------------------------------------------------------------
def pow_check(data_dir: Path, nodes: int = 3) -> SafetyCheck:
    return check_pow_safety(data_dir, nodes, POW_GENESIS, read_chains(data_dir, nodes))


def pow_network(data_dir: Path, shared: int) -> list[PowNodeChain]:
    """Three nodes that all hold the same ``shared`` blocks."""
    chains = [PowNodeChain(POW_GENESIS, data_dir, node) for node in range(3)]
    blocks = chains[0].extend(shared)
    for other in chains[1:]:
        other.copy_from(chains[0], blocks)
    return chains


def test_a_consistent_pow_network_passes(tmp_path: Path) -> None:
    pow_network(tmp_path, 12)
    result = pow_check(tmp_path)
    assert result.agree and result.heights == {0: 12, 1: 12, 2: 12}
    assert result.heights_checked == 12 - CONFIRMATIONS


def test_forks_above_the_confirmation_depth_are_not_conflicts(tmp_path: Path) -> None:
    chains = pow_network(tmp_path, 10)
    chains[0].extend(3, miner=0)
    chains[1].extend(3, miner=1)  # a different branch from height 11, not yet buried 6 deep
    result = pow_check(tmp_path)
    assert result.agree and result.heights == {0: 13, 1: 13, 2: 10}


def test_buried_conflicts_are_found_however_far_another_node_lags(tmp_path: Path) -> None:
    chains = pow_network(tmp_path, 2)  # node 2 stops here: nothing of it is buried 6 deep
    chains[0].extend(12, miner=0)
    chains[1].extend(12, miner=1)  # heights 3..14 differ between nodes 0 and 1
    result = pow_check(tmp_path)
    assert not result.agree and not result.unverified
    assert [c.height for c in result.conflicts] == list(range(3, 9)) and result.conflicts_total == 6
    assert sorted(ids for ids in result.conflicts[0].hashes.values()) == [[0], [1]]
    assert result.heights == {0: 14, 1: 14, 2: 2}


def test_a_lagging_node_whose_buried_blocks_differ_is_a_conflict(tmp_path: Path) -> None:
    chains = pow_network(tmp_path, 1)
    shared = chains[0].extend(20, miner=0)
    chains[1].copy_from(chains[0], shared)
    chains[2].extend(8, miner=2)  # lags at 9 with its own branch from height 2: heights 2..3 are buried
    result = pow_check(tmp_path)
    assert not result.agree
    assert [c.height for c in result.conflicts] == [2, 3]
    assert sorted(ids for ids in result.conflicts[0].hashes.values()) == [[0, 1], [2]]


def test_a_missing_pow_database_fails_the_check(tmp_path: Path) -> None:
    pow_network(tmp_path, 8)
    result = pow_check(tmp_path, nodes=4)
    assert not result.agree and [(u.node, u.height) for u in result.unverified] == [(3, None)]
    assert "missing" in result.unverified[0].reason


def test_an_unreadable_pow_database_fails_the_check(tmp_path: Path) -> None:
    pow_network(tmp_path, 8)
    node_database(tmp_path, 2).write_bytes(b"garbage" * 1000)
    result = pow_check(tmp_path)
    assert not result.agree and [u.node for u in result.unverified] == [2]
    assert "unreadable" in result.unverified[0].reason


def test_a_main_chain_that_does_not_reach_genesis_fails(tmp_path: Path) -> None:
    pow_network(tmp_path, 1)
    branch = PowNodeChain(POW_GENESIS, tmp_path / "elsewhere", 0).extend(9, miner=7)  # its own branch from genesis
    with Store(node_database(tmp_path, 2)) as store:  # node 2 holds blocks 2..9 of it, not its block 1
        for block in branch[1:]:
            store.save_pow_block(block.hash, block.prev_hash, block.height, block.height * 16, block.encode())
    result = pow_check(tmp_path)
    assert not result.agree and [(u.node, u.height) for u in result.unverified] == [(2, 2)]
    assert "height 2 where 1 was expected" in result.unverified[0].reason
