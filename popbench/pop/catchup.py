"""Catch-up and snapshots: a node behind its peers fetches committed blocks; joiners fetch state.

A committed block travels with its commit certificate and its items, so the receiver checks the
certificate (2f+1 valid COMMIT signatures) and the state root before it applies anything.
"""

from __future__ import annotations

import time
from typing import Protocol

from popbench.errors import ConsensusError, StorageError, SyncError
from popbench.net.connection import Connection
from popbench.pop.ledger import CommittedBlock, Ledger
from popbench.wire import BlockRequest, BlockResponse, Message, SnapshotChunk, SnapshotRequest
from popbench.wire.framing import MAX_FRAME_BYTES

BLOCKS_PER_REQUEST = 32
REQUEST_TIMEOUT_NS = 2_000_000_000  # a request with no answer by then no longer blocks a new one
SNAPSHOT_CHUNK_BYTES = 1 << 20
RESPONSE_BUDGET_BYTES = MAX_FRAME_BYTES // 2


def blocks_answer(ledger: Ledger, from_height: int, count: int) -> list[bytes]:
    """Committed blocks from ``from_height`` for a BlockResponse: at most BLOCKS_PER_REQUEST, and no more
    than fit RESPONSE_BUDGET_BYTES (always at least one, so a large block still travels)."""
    budget = RESPONSE_BUDGET_BYTES
    chosen: list[bytes] = []
    for record in ledger.committed_records(from_height, min(count, BLOCKS_PER_REQUEST)):
        budget -= len(record) + 4
        if budget < 0 and chosen:
            break
        chosen.append(record)
    return chosen


class CaughtUpListener(Protocol):
    """The consensus engine, told when blocks from a peer moved the head (popbench.pop.pbft.PbftEngine)."""

    def caught_up(self, committed_view: int) -> None: ...


class CatchUpHost(Protocol):
    """What catch-up needs of its node (popbench.pop.node.Node): the ledger, a way to ask one peer, the
    engine to tell, and the node's own bookkeeping for each block applied."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def engine(self) -> CaughtUpListener: ...

    def send_to(self, node_id: int, message: Message) -> None: ...

    def block_committed(self, record: CommittedBlock, view: int, round_s: float | None) -> None: ...


class CatchUp:
    """Serves and requests committed blocks and state snapshots for one node."""

    def __init__(self, node: CatchUpHost) -> None:
        self.node = node
        self._in_flight_since_ns = 0
        self._snapshot: tuple[int, list[bytes]] | None = None
        self.blocks_fetched = 0
        self.sync_failures = 0

    # -- asking ------------------------------------------------------------------------------------
    def request(self, node_id: int) -> None:
        now = time.monotonic_ns()
        if now - self._in_flight_since_ns < REQUEST_TIMEOUT_NS:
            return
        self._in_flight_since_ns = now
        self.node.send_to(node_id, BlockRequest(self.node.ledger.height + 1, BLOCKS_PER_REQUEST))

    def on_block_response(self, conn: Connection, message: BlockResponse) -> None:
        self._in_flight_since_ns = 0
        ledger = self.node.ledger
        applied_view = None
        for data in message.blocks:
            try:
                record = ledger.apply_committed(data)
            except (SyncError, ConsensusError, StorageError):  # a failing disk: try again on a later answer
                self.sync_failures += 1
                break
            self.blocks_fetched += 1
            applied_view = record.certificate.view
            self.node.block_committed(record, record.certificate.view, None)
        if applied_view is not None:
            self.node.engine.caught_up(applied_view)
            # Ask again until an answer brings nothing new: a reply to the one-block probe a new link
            # sends, or one cut by the size budget, says nothing about how far behind this node still is,
            # and an idle network sends no later traffic that would tell it.
            self.request(conn.peer_id)

    # -- serving -----------------------------------------------------------------------------------
    def on_block_request(self, conn: Connection, message: BlockRequest) -> None:
        conn.send(BlockResponse(blocks_answer(self.node.ledger, message.from_height, message.count)))

    def on_snapshot_request(self, conn: Connection, message: SnapshotRequest) -> None:
        height, chunks = self._snapshot_for(message.height)
        index = min(message.chunk, len(chunks) - 1)
        conn.send(SnapshotChunk(height, index, len(chunks), chunks[index]))

    def _snapshot_for(self, height: int) -> tuple[int, list[bytes]]:
        """Chunks of the state at the head; kept while asked for, so a joiner sees one consistent state.

        ``height`` 0 asks for the latest state: the kept snapshot answers it only while it is still at the
        head. (A kept height-0 snapshot once answered it after later commits too, since 0 is also its
        height: the opening state, and ``popbench join`` then found block 1 where it asked for block 0.)
        """
        cached = self._snapshot
        head = self.node.ledger.height
        if cached is not None and (cached[0] == head if height == 0 else height == cached[0]):
            return cached
        data = self.node.ledger.state.encode_snapshot()
        chunks = [data[i : i + SNAPSHOT_CHUNK_BYTES] for i in range(0, len(data), SNAPSHOT_CHUNK_BYTES)] or [b""]
        self._snapshot = (self.node.ledger.height, chunks)
        return self._snapshot
