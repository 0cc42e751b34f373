"""A replica whose mempool is full still admits (after verifying) the items a pending proposal names."""

from __future__ import annotations

import time
from pathlib import Path

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.genesis import make_genesis
from popbench.mempool import Mempool
from popbench.model.proof import Proof
from popbench.pop.admission import Admission
from popbench.pop.ledger import Ledger
from popbench.store import Store
from popbench.wire import Gossip, ItemKind, RejectReason

OWNER = crypto.derive_key("admission-owner", 0)
LIMIT = 3


def make_admission(tmp_path: Path) -> tuple[Admission, Mempool, list[Proof]]:
    genesis, _ = make_genesis(4, seed="admission")
    mempool = Mempool(LIMIT)
    sent: list[Gossip] = []
    admission = Admission(Ledger(genesis, Store(tmp_path / "node.sqlite")), mempool, NodeCounters(), sent.append)
    bits = genesis.params.min_work_bits
    proofs = [Proof.create(OWNER, genesis.chain_id, i.to_bytes(8, "big"), bits, 7, time.time_ns()) for i in range(LIMIT + 3)]
    for proof in proofs[:LIMIT]:
        assert admission.admit(ItemKind.PROOF, proof.encode(), relay=False)[0] == RejectReason.ACCEPTED
    return admission, mempool, proofs


def test_a_full_mempool_refuses_an_item_nobody_asked_for(tmp_path: Path) -> None:
    admission, mempool, proofs = make_admission(tmp_path)
    assert admission.admit(ItemKind.PROOF, proofs[LIMIT].encode(), relay=False)[0] == RejectReason.BUSY
    assert len(mempool) == LIMIT


def test_items_fetched_for_a_proposal_are_admitted_beyond_the_bound(tmp_path: Path) -> None:
    admission, mempool, proofs = make_admission(tmp_path)
    wanted = proofs[LIMIT : LIMIT + 2]
    admission.expect([p.id for p in wanted])
    for proof in wanted:
        assert admission.admit(ItemKind.PROOF, proof.encode(), relay=False) == (RejectReason.ACCEPTED, proof.id)
    assert len(mempool) == LIMIT + 2 and all(p.id in mempool for p in wanted)
    unrelated = proofs[LIMIT + 2]
    assert admission.admit(ItemKind.PROOF, unrelated.encode(), relay=False)[0] == RejectReason.BUSY


def test_a_fetched_item_is_still_verified(tmp_path: Path) -> None:
    admission, mempool, proofs = make_admission(tmp_path)
    forged = Proof.decode(proofs[LIMIT].encode())
    forged.signature = bytes([forged.signature[0] ^ 1]) + forged.signature[1:]
    admission.expect([forged.id])
    assert admission.admit(ItemKind.PROOF, forged.encode(), relay=False)[0] == RejectReason.BAD_SIGNATURE
    assert forged.id not in mempool


def test_once_the_height_resolves_fetched_ids_lose_their_place(tmp_path: Path) -> None:
    admission, _, proofs = make_admission(tmp_path)
    admission.expect([proofs[LIMIT].id])
    admission.height_resolved()
    assert admission.admit(ItemKind.PROOF, proofs[LIMIT].encode(), relay=False)[0] == RejectReason.BUSY
