"""`popbench join`: stake check, verified snapshot sync from a running network, then following it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from popbench.errors import SyncError
from popbench.model.block import CommitCertificate
from popbench.pop import sync
from popbench.pop.ledger import CommittedBlock
from popbench.wire.status import AnyStatus
from tests.cluster import POPBENCH, LocalCluster, _listening_socket
from tests.test_pbft_network import TIMEOUT_S, all_committed, make_proofs, submit_all

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def network(tmp_path: Path):  # type: ignore[no-untyped-def]
    cluster = LocalCluster(tmp_path, 4)
    cluster.start()

    async def warm_up() -> None:
        await cluster.wait_connected()
        client = await cluster.client(0)
        await submit_all(client, make_proofs(cluster, 60))
        await cluster.wait_until(all_committed(60), TIMEOUT_S, what="first proofs committed")
        client.close()

    asyncio.run(warm_up())
    yield cluster
    cluster.stop()


def join_args(cluster: LocalCluster, tmp_path: Path, stake: int) -> list[str]:
    return [POPBENCH, "join", "--node-id", "100", "--stake", str(stake), "--genesis", str(cluster.genesis_path),
            "--bootstrap", f"127.0.0.1:{cluster.ports[0]}", "--data-dir", str(tmp_path / "joined"),
            "--save-config", str(tmp_path / "joined.json")]  # fmt: skip


def test_join_refuses_a_stake_under_the_minimum(network: LocalCluster, tmp_path: Path) -> None:
    done = subprocess.run(join_args(network, tmp_path, 999), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "below the network's minimum stake 1000" in done.stderr


def test_join_syncs_a_verified_snapshot_and_follows_new_blocks(network: LocalCluster, tmp_path: Path) -> None:
    done = subprocess.run(join_args(network, tmp_path, 5000), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "synced snapshot at height" in done.stdout
    sock = _listening_socket()
    follower = subprocess.Popen([POPBENCH, "node", "--config", str(tmp_path / "joined.json"), "--listen-fd", str(sock.fileno())],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(sock.fileno(),))  # fmt: skip
    try:
        asyncio.run(_follow(network, sock.getsockname()[1]))
    finally:
        follower.terminate()
        follower.wait(timeout=15)
        sock.close()


async def _follow(cluster: LocalCluster, follower_port: int) -> None:
    client = await cluster.client(1)
    await submit_all(client, make_proofs(cluster, 60, start=60))
    statuses = await cluster.wait_until(all_committed(120), TIMEOUT_S, what="second batch committed")
    target = max(s.height for s in statuses.values() if s)
    client.close()
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        status = await _status_at(cluster, follower_port)
        if status and status.height >= target:
            assert status.role == "follower"
            return
        assert asyncio.get_running_loop().time() < deadline, f"follower stuck at {status and status.height}, target {target}"
        await asyncio.sleep(0.1)  # polling period of a condition with a deadline


async def _status_at(cluster: LocalCluster, port: int) -> AnyStatus | None:
    original = cluster.ports
    try:
        cluster.ports = [port]
        return await cluster.status(0)
    finally:
        cluster.ports = original


def test_a_tampered_snapshot_or_certificate_is_refused(network: LocalCluster) -> None:
    async def fetch() -> tuple[int, bytes, bytes]:
        client = await network.client(2)
        height, data = await sync._fetch_chunks(client)  # type: ignore[misc]
        raw = await sync._fetch_committed(client, height)
        client.close()
        return height, data, raw

    height, data, raw = asyncio.run(fetch())
    genesis = network.genesis
    assert sync.verify_snapshot(genesis, height, data, raw).height == height
    tampered = bytearray(data)
    tampered[27] ^= 0x01  # a balance byte of the first account
    with pytest.raises(SyncError, match="state root"):
        sync.verify_snapshot(genesis, height, bytes(tampered), raw)
    record = CommittedBlock.decode(raw)
    voter, _signature = record.certificate.votes[0]
    record.certificate = CommitCertificate(record.certificate.view, [(voter, bytes(64)), *record.certificate.votes[1:]])
    with pytest.raises(SyncError, match="not certified"):
        sync.verify_snapshot(genesis, height, data, record.encode())
