"""Jepsen's accounting (harness/run/accounting.py): each verdict is tested with the case that must fail."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.load.records import NO_ANSWER, ProofRecord, write_records
from harness.run.accounting import account, account_run
from popbench.model.block import Block, CommitCertificate
from popbench.pop.ledger import GENESIS_HASH, CommittedBlock
from popbench.store import Store, node_database
from popbench.wire import RejectReason


def item(n: int) -> bytes:
    return n.to_bytes(32, "big")


def acked(n: int) -> ProofRecord:
    return ProofRecord(n, item(n), 0, 0, reason=RejectReason.ACCEPTED)


def refused(n: int) -> ProofRecord:
    return ProofRecord(n, item(n), 1, 0, reason=RejectReason.BAD_SIGNATURE)


def test_every_acknowledged_item_committed_once_passes() -> None:
    result = account([acked(1), acked(2), refused(3)], [item(9)], Counter({item(1): 1, item(2): 1, item(9): 1}), drained=True)
    assert result.ok and (result.acknowledged, result.committed, result.lost, result.unexpected) == (3, 3, 0, 0)


def test_an_acknowledged_item_missing_from_the_chain_is_lost_and_fails() -> None:
    result = account([acked(1), acked(2)], [], Counter({item(1): 1}), drained=True)
    assert not result.ok and result.lost == 1 and result.lost_ids == [item(2).hex()]


def test_in_an_interrupted_run_a_missing_item_is_unresolved_not_lost() -> None:
    result = account([acked(1), acked(2)], [], Counter({item(1): 1}), drained=False)
    assert result.ok and result.unresolved == 1 and result.lost == 0


def test_an_item_nobody_submitted_is_unexpected_and_fails() -> None:
    result = account([acked(1)], [], Counter({item(1): 1, item(7): 1}), drained=True)
    assert not result.ok and result.unexpected == 1 and result.unexpected_ids == [item(7).hex()]


def test_an_item_committed_twice_fails() -> None:
    result = account([acked(1)], [], Counter({item(1): 2}), drained=True)
    assert not result.ok and result.duplicated == 1


def test_a_refused_or_unanswered_item_promises_nothing() -> None:
    unanswered = ProofRecord(4, item(4), 0, 0, reason=NO_ANSWER)
    assert account([refused(3), unanswered], [], Counter(), drained=True).ok


def test_the_chain_is_read_back_from_the_highest_node_database(tmp_path: Path) -> None:
    prev = GENESIS_HASH
    with Store(node_database(tmp_path, 2)) as store:
        for height, ids in ((1, [item(1), item(2)]), (2, [item(3)])):
            block = Block(height, 0, prev, 0, 0, Block.items_root_of(ids, []), bytes(32), ids, [])
            record = CommittedBlock(block, CommitCertificate(0, []), [], [])
            store.save_committed(height, block.hash, 0, record.encode(), ids, [], bytes(32))
            prev = block.hash
    records = tmp_path / "records-0.bin"
    write_records(records, [acked(1), acked(2), acked(3), acked(4)])
    result = account_run(tmp_path, {2: 2, 0: 1}, [records], [], drained=True)
    assert (result.chain_node, result.chain_height, result.committed) == (2, 2, 3)
    assert result.lost == 1 and result.lost_ids == [item(4).hex()]
