"""An acknowledged item outlives the node that acknowledged it (docs/protocol.md, section 6: SUBMIT and the mempool sync).

Two mechanisms: a node answers ACCEPTED only once the item's gossip is written to its peers' links (so a
kill right after the answer leaves it in the kernel's send buffers), and every new validator link starts
with the mempool (so an item whose gossip never arrived, or a peer that restarted empty, still meets it).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.genesis import make_genesis
from popbench.mempool import Mempool
from popbench.model.proof import Proof
from popbench.pop.admission import GOSSIP_MAX_ITEMS, Admission, gossip_batches
from popbench.pop.ledger import Ledger
from popbench.store import Store
from popbench.wire import Gossip, ItemKind, RejectReason, SubmitResult
from tests.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)
OWNER = crypto.derive_key("durability-owner", 0)
TIMEOUT_S = 45.0
ITEMS = 5


def test_a_client_is_answered_only_after_the_gossip_of_its_item_is_sent(tmp_path: Path) -> None:
    genesis, _ = make_genesis(4, seed="durability")
    happened: list[str] = []
    admission = Admission(Ledger(genesis, Store(tmp_path / "node.sqlite")), Mempool(100), NodeCounters(),
                          lambda gossip: happened.append(f"gossip {len(gossip.items)}"))  # fmt: skip
    proof = Proof.create(OWNER, genesis.chain_id, bytes(8), genesis.params.min_work_bits, 7, time.time_ns())

    async def scenario() -> None:
        answered = asyncio.Event()

        def answer() -> None:
            happened.append("answer")
            answered.set()

        assert admission.admit(ItemKind.PROOF, proof.encode(), relay=True)[0] == RejectReason.ACCEPTED
        admission.after_gossip(answer)
        assert happened == []  # neither the gossip nor the answer has gone yet: they leave together
        await asyncio.wait_for(answered.wait(), TIMEOUT_S)

    asyncio.run(scenario())
    assert happened == ["gossip 1", "answer"]


def test_a_validator_that_joins_later_receives_the_items_already_pending(tmp_path: Path) -> None:
    """Node 0 runs alone (no quorum, nothing commits) and accepts items it can gossip to nobody; node 1,
    started afterwards, must find them in its mempool by the sync its new link to node 0 starts with."""
    cluster = LocalCluster(tmp_path, 4)
    bits = cluster.genesis.params.min_work_bits
    proofs = [Proof.create(OWNER, cluster.chain_id, i.to_bytes(8, "big"), bits, 7, time.time_ns()) for i in range(ITEMS)]
    cluster.start(0)
    try:
        asyncio.run(_submit_all(cluster, proofs))
        cluster.start(1)  # node 1 dials node 0 (--peer of every lower id)
        statuses = asyncio.run(cluster.wait_until(
            lambda s: all(x is not None and x.mempool == ITEMS for x in s.values()), TIMEOUT_S, [0, 1],
            what=f"node 1's mempool holding the {ITEMS} items node 0 accepted before node 1 started"))  # fmt: skip
        admitted = statuses[1].counters.items_admitted if statuses[1] is not None else {}
        assert admitted.get("PROOF") == ITEMS, admitted
    finally:
        cluster.stop()


async def _submit_all(cluster: LocalCluster, proofs: list[Proof]) -> None:
    client = await cluster.client(0)
    answers: dict[int, RejectReason] = {}
    all_answered = asyncio.Event()

    def on_result(result: SubmitResult) -> None:
        answers[result.request_id] = result.reason
        if len(answers) == len(proofs):
            all_answered.set()

    client.on_result = on_result
    try:
        for request_id, proof in enumerate(proofs):
            client.submit(request_id, ItemKind.PROOF, proof.encode())
        await asyncio.wait_for(all_answered.wait(), TIMEOUT_S)
    finally:
        client.close()
    assert set(answers.values()) == {RejectReason.ACCEPTED}, answers


def test_gossip_batches_of_a_sync_are_bounded() -> None:
    """A mempool larger than one GOSSIP frame's worth goes in several frames of at most GOSSIP_MAX_ITEMS."""
    raws = [bytes([i % 256]) * 4 for i in range(GOSSIP_MAX_ITEMS * 2 + 3)]
    batches = list(gossip_batches(ItemKind.PROOF, raws))
    assert [len(b.items) for b in batches] == [GOSSIP_MAX_ITEMS, GOSSIP_MAX_ITEMS, 3]
    assert all(isinstance(b, Gossip) and b.kind is ItemKind.PROOF for b in batches)
    assert [raw for b in batches for raw in b.items] == raws
