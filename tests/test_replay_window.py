"""Replay protection with bounded memory (docs/consensus.md, "Replay protection"): a node keeps only the
last RECENT_BLOCKS blocks' item ids in memory, and an item replayed after it has left that window is still
refused, by admission and by execution (a Byzantine leader's block), before and after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ConsensusError
from popbench.genesis import make_genesis
from popbench.mempool import Mempool
from popbench.pop import ledger as ledger_module
from popbench.pop.admission import Admission
from popbench.wire import ItemKind, RejectReason
from tests.chain_builder import NodeChain, proof_item

GENESIS, KEYS = make_genesis(4, seed="test-replay-window")
OWNER = crypto.derive_key("test-replay-window-owner", 0)
WINDOW = 3


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ledger_module, "RECENT_BLOCKS", WINDOW)
    monkeypatch.setattr(ledger_module.CommittedIds.__init__, "__defaults__", (WINDOW,))
    chain = NodeChain(GENESIS, KEYS, tmp_path / "a", 0)
    yield chain
    chain.close()


def test_memory_holds_only_the_window_and_an_older_item_is_still_refused(node: NodeChain) -> None:
    old = proof_item(OWNER, GENESIS, 0)
    node.commit_items([old])
    for tag in range(1, 2 * WINDOW + 1):
        node.commit_items([proof_item(OWNER, GENESIS, 100 + tag), proof_item(OWNER, GENESIS, 200 + tag)])
    ids = node.ledger.committed_ids
    assert ids.in_memory() == 2 * WINDOW, "memory holds more than the last WINDOW blocks' ids"
    assert old.item_id in ids  # from the database
    admission = Admission(node.ledger, Mempool(100), NodeCounters(), lambda gossip: None)
    reason, item_id = admission.admit(ItemKind.PROOF, old.raw, relay=False)
    assert (reason, item_id) == (RejectReason.REPLAY, old.item_id)

    # a Byzantine leader proposes it again, beside a fresh item: refused by every honest replica
    fresh = proof_item(OWNER, GENESIS, 999)
    leader = NodeChain(GENESIS, KEYS, node.path.parent.parent / "byzantine", 1)
    try:
        block, _ = leader.ledger.build_block(0, 1, [old, fresh])
    finally:
        leader.close()
    with pytest.raises(ConsensusError, match="block includes 1 already committed items"):
        node.ledger.check_items(block, [old, fresh])  # execute, catch-up and replay all run this check


def test_after_a_restart_an_item_from_any_height_is_refused(node: NodeChain) -> None:
    first = proof_item(OWNER, GENESIS, 1)
    node.commit_items([first])
    for tag in range(WINDOW + 2):
        node.commit_items([proof_item(OWNER, GENESIS, 10 + tag)])
    last = proof_item(OWNER, GENESIS, 99)
    node.commit_items([last])
    node.reopen()
    ids = node.ledger.committed_ids
    assert ids.in_memory() == 0  # nothing loaded into memory at start
    assert first.item_id in ids and last.item_id in ids
    assert ids.among([proof_item(OWNER, GENESIS, 5000).item_id, first.item_id, last.item_id]) == [first.item_id, last.item_id]


def test_a_replay_from_genesis_counts_only_ids_at_or_below_the_replayed_height(node: NodeChain) -> None:
    """Rebuilding the state re-executes stored blocks whose ids the database already holds: an id committed
    at a later height must not make an earlier block look like a replay."""
    node.commit_items([proof_item(OWNER, GENESIS, 1)])
    node.commit_items([proof_item(OWNER, GENESIS, 2)])
    good = node.ledger.state.rows()
    node.store.replace_accounts([*good, (b"\x42" * 20, 0, 0, 0, 0)])  # force the replay from genesis
    node.reopen()
    assert node.ledger.height == 2 and node.ledger.state.rows() == good
