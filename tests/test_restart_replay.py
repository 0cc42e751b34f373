"""Restart after a block holding a transfer the state skipped, in a real 4-validator network.

Admission accepts a transfer whose account nonce leaves a gap; execution skips it. The validator killed
after that block must come back with the state root its certified head claims: it commits again (its own
proposals are accepted), and a joiner accepts the snapshot it serves.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from popbench.client import NodeClient
from popbench.model.transfer import Transfer
from popbench.pop.ledger import CommittedBlock
from popbench.store import Store
from popbench.wire import ItemKind, RejectReason
from tests.cluster import POPBENCH, LocalCluster, chains_agree, node_db
from tests.test_pbft_network import TIMEOUT_S, make_proofs, submit_all

pytestmark = pytest.mark.timeout(400)
RESTARTED = 3
BATCHES_AFTER_RESTART = 10  # blocks enough for the leader rotation to reach the restarted node twice


def proofs_committed(count: int, nodes: list[int]):  # type: ignore[no-untyped-def]
    def check(statuses) -> bool:  # type: ignore[no-untyped-def]
        return all(statuses.get(n) is not None and statuses[n].counters.proofs_committed >= count for n in nodes)

    return check


def every_node_at(height: int):  # type: ignore[no-untyped-def]
    """Heights, not counters: a restarted node's counters start again from zero."""

    def check(statuses) -> bool:  # type: ignore[no-untyped-def]
        return all(statuses.get(n) is not None and statuses[n].height >= height for n in range(4))

    return check


async def submit_transfer(client: NodeClient, transfer: Transfer) -> RejectReason:
    done: asyncio.Future[RejectReason] = asyncio.get_running_loop().create_future()
    client.on_result = lambda result: done.done() or done.set_result(result.reason)
    client.submit(0, ItemKind.TRANSFER, transfer.encode())
    return await asyncio.wait_for(done, TIMEOUT_S)


async def commit_a_skipped_transfer(cluster: LocalCluster) -> Transfer:
    """A gapped-nonce transfer, then proofs behind it, committed everywhere; returns the transfer."""
    await cluster.wait_connected()
    gapped = Transfer.create(cluster.keys[1], cluster.chain_id, b"\x42" * 20, 5, 1, account_nonce=3)
    client = await cluster.client(0)
    assert await submit_transfer(client, gapped) == RejectReason.ACCEPTED
    await submit_all(client, make_proofs(cluster, 20))
    await cluster.wait_until(proofs_committed(20, list(range(4))), TIMEOUT_S, what="the block after the transfer")
    client.close()
    return gapped


async def commit_after_restart(cluster: LocalCluster) -> None:
    """Batches of proofs, each committed by every node, the restarted one included."""
    await cluster.wait_connected()
    client = await cluster.client(1)
    for batch in range(BATCHES_AFTER_RESTART):
        statuses = await cluster.statuses()
        target = 1 + max(s.height for s in statuses.values() if s is not None)
        results = await submit_all(client, make_proofs(cluster, 5, start=1000 + 5 * batch))
        assert set(results.values()) == {RejectReason.ACCEPTED}, results
        await cluster.wait_until(every_node_at(target), TIMEOUT_S,
                                 what=f"batch {batch} committed by every node, node {RESTARTED} included")  # fmt: skip
    client.close()


def join_from(cluster: LocalCluster, node: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
    args = [POPBENCH, "join", "--node-id", "100", "--stake", "5000", "--genesis", str(cluster.genesis_path),
            "--bootstrap", f"127.0.0.1:{cluster.ports[node]}", "--data-dir", str(data_dir)]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def stored_blocks(path: Path) -> list[CommittedBlock]:
    with Store(path) as store:
        return [CommittedBlock.decode(raw) for raw in store.committed_range(1, 1_000_000)]


def test_a_validator_restarted_after_a_skipped_transfer_commits_again_and_serves_a_joiner(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 4)
    cluster.start()
    try:
        gapped = asyncio.run(commit_a_skipped_transfer(cluster))
        cluster.kill(RESTARTED)
        restart_height = stored_blocks(node_db(tmp_path, RESTARTED))[-1].block.height
        cluster.start(RESTARTED)
        joined = join_from(cluster, RESTARTED, tmp_path / "joined")
        assert joined.returncode == 0, f"{joined.stdout}\n{joined.stderr}\n{cluster.log(RESTARTED)[-3000:]}"
        assert "synced snapshot at height" in joined.stdout
        asyncio.run(commit_after_restart(cluster))
    finally:
        cluster.stop()
    blocks = stored_blocks(node_db(tmp_path, RESTARTED))
    assert any(gapped.id in record.block.transfer_ids for record in blocks), "the gapped transfer was never committed"
    assert any(r.block.proposer == RESTARTED and r.block.height > restart_height for r in blocks), (
        f"no block proposed by node {RESTARTED} committed after its restart at height {restart_height}"
    )
    agree, _ = chains_agree([node_db(tmp_path, n) for n in range(4)])
    assert agree
