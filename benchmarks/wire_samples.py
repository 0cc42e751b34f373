"""One representative message of every wire type, sized like the traffic of a real run.

Shared by the wire benchmarks so they measure the same messages. Sizes follow the model: a proof is
152 bytes plus its payload, a transfer 174 bytes, a vote 148 bytes of body.
"""

from __future__ import annotations

from typing import Any

from popbench.wire import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    BlockRequest,
    BlockResponse,
    Commit,
    Committed,
    Disconnect,
    DisconnectReason,
    Gossip,
    Hello,
    HelloAck,
    ItemKind,
    ItemsRequest,
    Message,
    NewView,
    PeerAddress,
    Peers,
    PeersRequest,
    Ping,
    Pong,
    PowAnnounce,
    PowBlock,
    PowChain,
    PowGetBlock,
    PowGetChain,
    Prepare,
    PrePrepare,
    RejectReason,
    Role,
    SnapshotChunk,
    SnapshotRequest,
    Status,
    StatusRequest,
    Submit,
    SubmitResult,
    Subscribe,
    ViewChange,
)

PROOF_BYTES = 152 + 64  # fixed part of a proof plus a 64-byte payload
BLOCK_BYTES = 136 + 100 * 32  # block header plus 100 item ids
GOSSIP_BATCH_ITEMS = 64
SNAPSHOT_CHUNK_BYTES = 256 * 1024
VOTE_BYTES = 4 + 64  # (u32 voter, signature) in a VIEW_CHANGE
COMMITTEE = 7  # 2f+1 for f = 3, the size of a certificate or a NEW_VIEW quorum


def hash_of(seed: int) -> bytes:
    return bytes([seed % 256]) * 32


def small_status() -> dict[str, Any]:
    """A compact STATUS payload (what a monitor polls often)."""
    return {"node_id": 3, "role": "validator", "height": 12345, "view": 2, "leader": 1, "peers": 6,
            "mempool": 812, "last_commit_ns": 1_700_000_000_123_456_789}  # fmt: skip


def full_status() -> dict[str, Any]:
    """A STATUS payload shaped like popbench.pop.status.node_status, counters included."""
    counters = {name: {"Prepare": 9000, "Commit": 9000, "Gossip": 400} for name in ("frames_in", "frames_out")}
    return {**small_status(), "pid": 4242, "uptime_s": 61.5, "head_hash": hash_of(7).hex(),
            "peer_ids": list(range(7)), "clients": 2, "crypto_backend": "coincurve",
            "round_time_s": {"count": 300, "sum": 42.0, "max": 0.9}, "proposals_refused": {},
            "blocks_fetched": 0, "sync_failures": 0, "counters": counters}  # fmt: skip


def _view_change() -> ViewChange:
    votes = b"".join(index.to_bytes(4, "big") + bytes(64) for index in range(COMMITTEE))
    return ViewChange(5, 100, 2, 4, bytes(BLOCK_BYTES), votes, bytes(64))


SAMPLES: dict[type[Message], Message] = {
    Hello: Hello(PROTOCOL_VERSION, hash_of(1), 3, Role.VALIDATOR, bytes(33), bytes(32), 40003, "127.0.0.1"),
    HelloAck: HelloAck(bytes(64)),
    Ping: Ping(1, 1_700_000_000_000_000_000),
    Pong: Pong(1, 1_700_000_000_000_000_000),
    Disconnect: Disconnect(DisconnectReason.SHUTDOWN, "node stopping"),
    Submit: Submit(17, ItemKind.PROOF, bytes(PROOF_BYTES)),
    SubmitResult: SubmitResult(17, hash_of(2), RejectReason.ACCEPTED),
    Subscribe: Subscribe(1),
    Committed: Committed(100, hash_of(3), 4, 1_700_000_000_000_000_000, [hash_of(i) for i in range(100)], []),
    Gossip: Gossip(ItemKind.PROOF, [bytes(PROOF_BYTES)] * GOSSIP_BATCH_ITEMS),
    ItemsRequest: ItemsRequest(ItemKind.PROOF, [hash_of(i) for i in range(16)]),
    PrePrepare: PrePrepare(4, 100, bytes(BLOCK_BYTES)),
    Prepare: Prepare(4, 100, hash_of(4), 2, bytes(64)),
    Commit: Commit(4, 100, hash_of(4), 2, bytes(64)),
    ViewChange: _view_change(),
    NewView: NewView(5, 100, [_view_change().encode_body()] * COMMITTEE),
    BlockRequest: BlockRequest(100, 64),
    BlockResponse: BlockResponse([bytes(BLOCK_BYTES + COMMITTEE * VOTE_BYTES)] * 8),
    SnapshotRequest: SnapshotRequest(0, 3),
    SnapshotChunk: SnapshotChunk(100, 3, 10, bytes(SNAPSHOT_CHUNK_BYTES)),
    StatusRequest: StatusRequest(),
    Status: Status(full_status()),
    PeersRequest: PeersRequest(),
    Peers: Peers([PeerAddress(i, Role.VALIDATOR, bytes([127, 0, 0, 1]), 40000 + i) for i in range(32)]),
    PowAnnounce: PowAnnounce(hash_of(5), 100, 2**70 + 12345),
    PowGetBlock: PowGetBlock(hash_of(5)),
    PowBlock: PowBlock(bytes(BLOCK_BYTES)),
    PowGetChain: PowGetChain([hash_of(i) for i in range(12)], 500),
    PowChain: PowChain([bytes(BLOCK_BYTES)] * 8),
}

missing = set(MESSAGE_TYPES) - set(SAMPLES)
if missing:  # a new message type must get a sample, or its cost goes unmeasured
    raise RuntimeError(f"no benchmark sample for {sorted(cls.__name__ for cls in missing)}")
