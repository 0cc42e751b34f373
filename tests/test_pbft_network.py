"""The PoP network end to end: real validator processes on loopback TCP, real PBFT, real SQLite."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from popbench import crypto
from popbench.client import NodeClient
from popbench.genesis import ChainParams, make_genesis
from popbench.model.proof import Proof
from popbench.wire import TOPIC_COMMITS, ItemKind, RejectReason
from tests.cluster import LocalCluster, chains_agree, node_db

pytestmark = pytest.mark.timeout(300)
OWNER = crypto.derive_key("test-owner", 0)
TIMEOUT_S = 120.0


def make_proofs(cluster: LocalCluster, count: int, start: int = 0) -> list[Proof]:
    bits = cluster.genesis.params.min_work_bits
    return [Proof.create(OWNER, cluster.chain_id, i.to_bytes(8, "big"), bits, 7, time.time_ns()) for i in range(start, start + count)]


async def submit_all(client: NodeClient, proofs: list[Proof]) -> dict[int, RejectReason]:
    """Submit and collect every SUBMIT_RESULT (request id = position in ``proofs``)."""
    results: dict[int, RejectReason] = {}
    done = asyncio.get_running_loop().create_future()

    def on_result(result) -> None:  # type: ignore[no-untyped-def]
        results[result.request_id] = result.reason
        if len(results) == len(proofs) and not done.done():
            done.set_result(None)

    client.on_result = on_result
    for index, proof in enumerate(proofs):
        client.submit(index, ItemKind.PROOF, proof.encode())
    await asyncio.wait_for(done, TIMEOUT_S)
    return results


def all_committed(count: int, nodes: list[int] | None = None):  # type: ignore[no-untyped-def]
    def check(statuses) -> bool:  # type: ignore[no-untyped-def]
        chosen = statuses if nodes is None else {n: statuses.get(n) for n in nodes}
        return all(s is not None and s.counters.proofs_committed >= count for s in chosen.values())

    return check


@pytest.fixture
def cluster_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[LocalCluster] = []

    def make(n: int = 4, **kwargs) -> LocalCluster:  # type: ignore[no-untyped-def]
        root = tmp_path / f"cluster-{len(made)}"
        root.mkdir()
        cluster = LocalCluster(root, n, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def test_four_validators_commit_submitted_proofs_and_hold_identical_chains(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(4)
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_connected()
        proofs = make_proofs(cluster, 300)
        client = await cluster.client(1)
        results = await submit_all(client, proofs)
        assert set(results.values()) == {RejectReason.ACCEPTED}
        await cluster.wait_until(all_committed(300), TIMEOUT_S, what="300 proofs committed everywhere")
        client.close()

    asyncio.run(scenario())
    cluster.stop()
    agree, height = chains_agree([node_db(cluster.root, n) for n in range(4)])
    assert agree and height >= 1


def test_a_killed_validator_restarts_from_disk_and_catches_up(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(4)
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_connected()
        client = await cluster.client(0)
        await submit_all(client, make_proofs(cluster, 100))
        await cluster.wait_until(all_committed(100), TIMEOUT_S, what="first batch committed")
        cluster.kill(3)
        await submit_all(client, make_proofs(cluster, 100, start=100))
        await cluster.wait_until(all_committed(200, [0, 1, 2]), TIMEOUT_S, [0, 1, 2], "commits continue without node 3")
        before = (await cluster.statuses([0]))[0]
        cluster.start(3)
        await cluster.wait_until(
            lambda s: s[3] is not None and before is not None and s[3].height >= before.height, TIMEOUT_S, [3], "node 3 caught up"
        )
        client.close()

    asyncio.run(scenario())
    cluster.stop()
    agree, _ = chains_agree([node_db(cluster.root, n) for n in range(4)])
    assert agree


@pytest.mark.parametrize("fault", ["silent", "equivocate", "invalid-proofs"])
def test_a_byzantine_leader_causes_a_view_change_and_no_conflicting_commits(cluster_factory, fault: str) -> None:  # type: ignore[no-untyped-def]
    params = replace(ChainParams(), view_timeout_ms=1000)
    first_leader = make_genesis(4, seed="test-cluster", params=params)[0].leader_for_view(0 + 1)  # view 0, height 1
    cluster = cluster_factory(4, params=params, byzantine={first_leader: fault})
    honest = [n for n in range(4) if n != first_leader]
    cluster.start()

    async def scenario() -> None:
        await cluster.wait_connected()
        client = await cluster.client(honest[0])
        await submit_all(client, make_proofs(cluster, 50))
        statuses = await cluster.wait_until(all_committed(50, honest), TIMEOUT_S, honest, "honest nodes commit after the fault")
        # The view had to change for anything to commit. A commit needs n - f = 3 COMMITs, so at least two
        # honest nodes entered the new view; the third may have received those COMMITs before the NEW-VIEW
        # and caught up on the committed block instead of entering the view itself.
        changed = {n: statuses[n].counters.view_changes for n in honest}  # type: ignore[union-attr]
        assert sum(1 for count in changed.values() if count >= 1) >= 2, f"view changes per honest node: {changed}"
        if fault == "invalid-proofs":
            assert any(statuses[n].counters.items_rejected.get("BAD_SIGNATURE", 0) > 0 for n in honest)  # type: ignore[union-attr]
        client.close()

    asyncio.run(scenario())
    cluster.stop()
    agree, height = chains_agree([node_db(cluster.root, n) for n in range(4)])
    assert agree and height >= 1


def test_invalid_proofs_are_refused_with_their_reason_and_never_committed(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(4)
    cluster.start()
    bits = cluster.genesis.params.min_work_bits
    good = make_proofs(cluster, 20)
    bad_signature = Proof.decode(good[0].encode())
    bad_signature.signature = bytes([bad_signature.signature[0] ^ 1]) + bad_signature.signature[1:]
    low_work = Proof.create(OWNER, cluster.chain_id, b"low", 0, 7, time.time_ns())
    while low_work.work_digest()[0] == 0:  # make sure it really misses the network minimum
        low_work = Proof.create(OWNER, cluster.chain_id, low_work.payload + b"x", 0, 7, time.time_ns())
    wrong_chain = Proof.create(OWNER, bytes(32), b"other", bits, 7, time.time_ns())
    cases = [(bad_signature, RejectReason.BAD_SIGNATURE), (low_work, RejectReason.LOW_WORK),
             (wrong_chain, RejectReason.WRONG_CHAIN), (good[1], RejectReason.REPLAY)]  # fmt: skip

    async def scenario() -> dict:  # type: ignore[type-arg]
        await cluster.wait_connected()
        client = await cluster.client(2)
        client.subscribe(TOPIC_COMMITS)
        committed: set[bytes] = set()
        client.on_committed = lambda note: committed.update(note.proof_ids)
        results = await submit_all(client, good[1:])
        assert set(results.values()) == {RejectReason.ACCEPTED}
        results = await submit_all(client, [proof for proof, _ in cases])
        assert [results[i] for i in range(len(cases))] == [reason for _, reason in cases]
        await cluster.wait_until(all_committed(len(good) - 1), TIMEOUT_S, what="the valid proofs committed")
        client.close()
        assert not committed & {bad_signature.id, low_work.id, wrong_chain.id}
        return (await cluster.statuses([2]))[2]  # type: ignore[return-value]

    status = asyncio.run(scenario())
    rejected = status.counters.items_rejected
    for reason in ("BAD_SIGNATURE", "LOW_WORK", "WRONG_CHAIN", "REPLAY"):
        assert rejected.get(reason, 0) >= 1
