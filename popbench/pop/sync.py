"""Joining a running network: find peers, download a state snapshot, verify it, install it.

The snapshot is taken at a committed height H. It is accepted only if the committed block at H carries
a valid commit certificate (2f+1 genesis validators' COMMIT signatures) and the snapshot's state root
equals that block's state root. Anything else is refused with :class:`SyncError` and nothing is written.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from popbench import crypto
from popbench.client import NodeClient
from popbench.errors import ConfigError, ConsensusError, ProtocolError, SyncError
from popbench.genesis import Genesis
from popbench.net.peers import Address
from popbench.pop.ledger import CommittedBlock, genesis_state
from popbench.pop.state import State
from popbench.store import Store, node_database
from popbench.wire import BlockRequest, BlockResponse, Peers, PeersRequest, Role, SnapshotChunk, SnapshotRequest

MAX_SNAPSHOT_ATTEMPTS = 5


@dataclass
class Snapshot:
    """A verified snapshot: the committed block at its height and the state after it."""

    height: int
    record: CommittedBlock | None  # None at height 0: the opening state, checked against the genesis instead
    raw_record: bytes
    state: State


def check_stake(genesis: Genesis, stake: int) -> None:
    minimum = genesis.params.min_stake
    if stake < minimum:
        raise ConfigError(f"stake {stake} is below the network's minimum stake {minimum}", key="--stake")


async def discover_peers(client: NodeClient) -> dict[int, Address]:
    """Validator addresses the bootstrap node knows (its own included)."""
    answer = await client.request(PeersRequest())
    assert isinstance(answer, Peers)
    return {entry.node_id: (socket.inet_ntoa(entry.host), entry.port) for entry in answer.peers}


async def fetch_snapshot(client: NodeClient, genesis: Genesis) -> Snapshot:
    """Download and verify the latest snapshot; retries if the node moved on between chunks."""
    for _ in range(MAX_SNAPSHOT_ATTEMPTS):
        chunks = await _fetch_chunks(client)
        if chunks is None:
            continue
        height, data = chunks
        if height == 0:
            return verify_opening_state(genesis, data)
        raw = await _fetch_committed(client, height)
        return verify_snapshot(genesis, height, data, raw)
    raise SyncError(f"the snapshot kept changing height over {MAX_SNAPSHOT_ATTEMPTS} attempts")


async def _fetch_chunks(client: NodeClient) -> tuple[int, bytes] | None:
    first = await client.request(SnapshotRequest(0, 0))
    assert isinstance(first, SnapshotChunk)
    parts = [first.data]
    for index in range(1, first.chunk_count):
        chunk = await client.request(SnapshotRequest(first.height, index))
        assert isinstance(chunk, SnapshotChunk)
        if chunk.height != first.height:
            return None
        parts.append(chunk.data)
    return first.height, b"".join(parts)


async def _fetch_committed(client: NodeClient, height: int) -> bytes:
    answer = await client.request(BlockRequest(height, 1))
    assert isinstance(answer, BlockResponse)
    if not answer.blocks:
        raise SyncError(f"the node did not serve its committed block at height {height}")
    return answer.blocks[0]


def verify_snapshot(genesis: Genesis, height: int, data: bytes, raw_record: bytes) -> Snapshot:
    """Refuse a snapshot unless a certified block at ``height`` commits to its exact state root."""
    try:
        record = CommittedBlock.decode(raw_record)
    except ProtocolError as err:
        raise SyncError(f"malformed committed block at height {height}: {err}") from err
    block = record.block
    if block.height != height:
        raise SyncError(f"asked for the block at height {height}, got {block.height}")
    try:
        record.certificate.check(genesis, block.height, block.hash)
    except ConsensusError as err:
        raise SyncError(f"snapshot refused: the block at height {height} is not certified: {err}") from err
    state = State.decode_snapshot(data)
    if state.root() != block.state_root:
        raise SyncError(f"snapshot refused: its state root does not match the certified block at height {height}")
    return Snapshot(height, record, raw_record, state)


def verify_opening_state(genesis: Genesis, data: bytes) -> Snapshot:
    """A network that has committed nothing serves its opening state (docs/protocol.md, section 9). No
    block certifies it, and none needs to: the joiner computes the same state from the genesis it holds,
    so the served one must match that root exactly. Joining it then means following from height 0."""
    state = State.decode_snapshot(data)
    if state.root() != genesis_state(genesis).root():
        raise SyncError("snapshot refused: the node served height 0 with a state other than this genesis's opening state")
    return Snapshot(0, None, b"", state)


def install_snapshot(store: Store, snapshot: Snapshot) -> None:
    if snapshot.record is None:
        store.clear_chain()  # height 0: an empty database is the opening state, which a node computes at start
        return
    block = snapshot.record.block
    store.replace_state(snapshot.height, block.hash, snapshot.raw_record, snapshot.state.rows(), block.state_root)


async def join(
    genesis: Genesis, key: crypto.SigningKey, node_id: int, stake: int, bootstrap: Address, data_dir: Path
) -> tuple[Snapshot, dict[int, Address]]:
    """Check the stake, sync a verified snapshot from ``bootstrap`` into ``data_dir``, return it and the peers."""
    check_stake(genesis, stake)
    client = await NodeClient.connect(*bootstrap, chain_id=genesis.chain_id, validators=genesis.public_keys,
                                      role=Role.FOLLOWER, key=key, node_id=node_id)  # fmt: skip
    try:
        peers = await discover_peers(client)
        snapshot = await fetch_snapshot(client, genesis)
    finally:
        client.close()
    data_dir.mkdir(parents=True, exist_ok=True)
    with Store(node_database(data_dir, node_id)) as store:
        install_snapshot(store, snapshot)
    return snapshot, peers
