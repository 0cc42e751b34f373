"""Block propagation and catch-up between PoW nodes: announce, fetch, serve.

- A node pushes every new tip block to its peers (POW_BLOCK, unasked) but the one it came from, then
  announces it (POW_ANNOUNCE: hash, height, cumulative work): one one-way delay per hop, not the three
  of announce, fetch and answer.
- A peer that lacks an announced block with more work than its tip fetches it: POW_GET_BLOCK when it is
  one block ahead, POW_GET_CHAIN with a locator otherwise, or when a fetched block turns out an orphan.
- POW_GET_CHAIN is answered with main-chain blocks after the first locator hash the server knows; the
  client asks again while the answers bring new blocks and the peer has announced more work.
- On every new link both sides announce their tip and ask for the chain after their locator, which is
  how a restarted node catches up.
"""

from __future__ import annotations

import time
from typing import Protocol

from popbench.counters import NodeCounters
from popbench.errors import ProtocolError
from popbench.net.connection import Connection
from popbench.pow.block import PowBlock
from popbench.pow.chain import BlockTree
from popbench.wire import DisconnectReason, PowAnnounce, PowChain, PowGetBlock, PowGetChain
from popbench.wire import PowBlock as PowBlockMessage

MAX_CHAIN_BLOCKS = 500  # blocks per POW_CHAIN answer
MAX_CHAIN_BYTES = 4 * 1024 * 1024  # an answer stays well under the frame limit
REQUEST_RETRY_S = 2.0  # a block asked for and not received may be asked for again after this


class RelayHost(Protocol):
    tree: BlockTree
    counters: NodeCounters

    def accept_block(self, block: PowBlock, source: Connection | None) -> int:
        """Add a block; returns how many blocks became known (0: duplicate, orphan or invalid)."""

    def broadcast(self, message: PowAnnounce) -> None: ...

    def push_block(self, message: PowBlockMessage, source: Connection | None) -> None:
        """Send a block to every peer link but ``source`` (the link it came from; None: mined here)."""


class BlockRelay:
    """The propagation half of a PoW node; the node owns the tree and the links."""

    def __init__(self, host: RelayHost) -> None:
        self.host = host
        self.blocks_fetched = 0
        self.chain_requests = 0
        self._requested: dict[bytes, float] = {}  # block hash -> monotonic time asked
        # Per-link state is keyed by the connection itself, never by the id a peer claims: a follower
        # may claim any id, and must not be able to touch the state of the link that really has it.
        self._chain_pending: set[Connection] = set()  # links with an unanswered POW_GET_CHAIN
        self._peer_work: dict[Connection, int] = {}  # the most work each link has announced

    # -- outgoing ----------------------------------------------------------------------------------
    def announce_tip(self, source: Connection | None = None) -> None:
        """A new tip: push its block to every peer but ``source``, then announce it. A peer that already
        holds the block ignores both; the announce keeps telling each peer how much work we hold."""
        self.host.push_block(PowBlockMessage(self.host.tree.tip.block.encode()), source)
        self.host.broadcast(self._tip_announce())

    def greet(self, conn: Connection) -> None:
        """A new link: tell the peer our tip and ask for what it has beyond our locator."""
        conn.send(self._tip_announce())
        self.fetch_chain(conn)

    def fetch_chain(self, conn: Connection) -> None:
        if conn in self._chain_pending:
            return
        self._chain_pending.add(conn)
        self.chain_requests += 1
        conn.send(PowGetChain(self.host.tree.locator(), MAX_CHAIN_BLOCKS))

    def link_closed(self, conn: Connection) -> None:
        self._chain_pending.discard(conn)
        self._peer_work.pop(conn, None)

    def _tip_announce(self) -> PowAnnounce:
        tip = self.host.tree.tip
        return PowAnnounce(tip.hash, tip.height, tip.total_work)

    # -- incoming ----------------------------------------------------------------------------------
    def on_announce(self, conn: Connection, message: PowAnnounce) -> None:
        tree = self.host.tree
        self._peer_work[conn] = max(message.total_work, self._peer_work.get(conn, 0))
        if message.block_hash in tree or message.total_work <= tree.tip.total_work:
            return
        if message.height == tree.tip.height + 1 and not tree.is_orphan(message.block_hash):
            self._fetch_block(conn, message.block_hash)
        else:
            self.fetch_chain(conn)

    def _fetch_block(self, conn: Connection, block_hash: bytes) -> None:
        now = time.monotonic()
        if now - self._requested.get(block_hash, -REQUEST_RETRY_S) < REQUEST_RETRY_S:
            return  # already asked another peer; it will arrive or the request expires
        self._requested[block_hash] = now
        conn.send(PowGetBlock(block_hash))

    def on_block(self, conn: Connection, message: PowBlockMessage) -> None:
        block = self._decode(conn, message.block)
        if block is None:
            return
        self._requested.pop(block.hash, None)
        self.blocks_fetched += self.host.accept_block(block, conn)

    def on_chain(self, conn: Connection, message: PowChain) -> None:
        self._chain_pending.discard(conn)
        added = 0
        for raw in message.blocks:
            block = self._decode(conn, raw)
            if block is None:
                return
            added += self.host.accept_block(block, conn)
        self.blocks_fetched += added
        if added and self._peer_work.get(conn, 0) > self.host.tree.tip.total_work:
            self.fetch_chain(conn)  # the answer was capped: there is more

    def on_get_block(self, conn: Connection, message: PowGetBlock) -> None:
        block = self.host.tree.get(message.block_hash)
        if block is not None:
            conn.send(PowBlockMessage(block.encode()))

    def on_get_chain(self, conn: Connection, message: PowGetChain) -> None:
        blocks = self.host.tree.main_chain_after(message.locator, min(message.max_count, MAX_CHAIN_BLOCKS))
        encoded: list[bytes] = []
        size = 0
        for block in blocks:
            raw = block.encode()
            size += len(raw)
            if encoded and size > MAX_CHAIN_BYTES:
                break
            encoded.append(raw)
        conn.send(PowChain(encoded))

    def _decode(self, conn: Connection, raw: bytes) -> PowBlock | None:
        try:
            return PowBlock.decode(raw)
        except ProtocolError as err:
            self.host.counters.protocol_errors += 1
            conn.disconnect(DisconnectReason.PROTOCOL_ERROR, str(err))
            return None
