"""`popbench join`: stake check, verified snapshot sync from a running network, then following it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from popbench.errors import SyncError
from popbench.genesis import ChainParams, make_genesis
from popbench.model.block import CommitCertificate
from popbench.pop import sync
from popbench.pop.catchup import CatchUp
from popbench.pop.ledger import CommittedBlock, genesis_state
from popbench.wire import SnapshotChunk, SnapshotRequest
from popbench.wire.status import AnyStatus
from tests.chain_builder import NodeChain, proof_item
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


def test_a_network_that_has_committed_nothing_can_be_joined(tmp_path: Path) -> None:
    """The README's network by hand, joined before any load: the node serves its opening state at height
    0, which no block certifies. `popbench join` failed with 'the node did not serve its committed block
    at height 0' (issue 17, item 7); the opening state is checked against the genesis instead."""
    cluster = LocalCluster(tmp_path, 4)
    cluster.start()
    sock = _listening_socket()
    follower: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(cluster.wait_connected())
        done = subprocess.run(join_args(cluster, tmp_path, 5000), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "synced the opening state at height 0" in done.stdout, done.stdout
        follower = subprocess.Popen([POPBENCH, "node", "--config", str(tmp_path / "joined.json"), "--listen-fd", str(sock.fileno())],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(sock.fileno(),))  # fmt: skip
        asyncio.run(_follow(cluster, sock.getsockname()[1], first=0, total=60))
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(timeout=15)
        sock.close()
        cluster.stop()


def test_an_opening_state_other_than_the_genesis_is_refused() -> None:
    genesis, _ = make_genesis(4, seed="join-opening")
    other, _ = make_genesis(4, seed="join-opening-other")
    assert sync.verify_opening_state(genesis, genesis_state(genesis).encode_snapshot()).record is None
    with pytest.raises(SyncError, match="opening state"):
        sync.verify_opening_state(genesis, genesis_state(other).encode_snapshot())


async def _follow(cluster: LocalCluster, follower_port: int, first: int = 60, total: int = 120) -> None:
    client = await cluster.client(1)
    await submit_all(client, make_proofs(cluster, 60, start=first))
    statuses = await cluster.wait_until(all_committed(total), TIMEOUT_S, what="second batch committed")
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


def test_a_snapshot_request_for_the_latest_state_follows_the_head_after_height_0_was_served(tmp_path: Path) -> None:
    """SNAPSHOT_REQUEST(0, ...) asks for the latest state. A node that had served its opening state at
    height 0 kept answering from it after later commits, so `popbench join` got height 0, asked for the
    block at height 0 and was given block 1 ("asked for the block at height 0, got 1")."""
    genesis, keys = make_genesis(4, seed="snapshot-cache", params=ChainParams(min_work_bits=0))
    chain = NodeChain(genesis, keys, tmp_path, 0)
    answers: list[SnapshotChunk] = []
    catchup = CatchUp(SimpleNamespace(ledger=chain.ledger))  # type: ignore[arg-type]
    conn = SimpleNamespace(send=answers.append)

    def ask(height: int) -> SnapshotChunk:
        catchup.on_snapshot_request(conn, SnapshotRequest(height, 0))  # type: ignore[arg-type]
        return answers[-1]

    try:
        assert ask(0).height == 0, "nothing committed: the opening state"
        record = chain.commit_items([proof_item(keys[1], genesis, 1)], proposer=1)
        latest = ask(0)
        assert latest.height == 1 and latest.data == chain.ledger.state.encode_snapshot()
        assert sync.verify_snapshot(genesis, 1, latest.data, record.encode()).height == 1, "what join then accepts"
        chain.commit_items([proof_item(keys[2], genesis, 2)], proposer=2)
        assert ask(1).height == 1, "a joiner's further chunks still come from the snapshot it started on"
        assert ask(0).height == 2
    finally:
        chain.store.close()
