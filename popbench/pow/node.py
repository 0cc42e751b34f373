"""The PoW (Antimony) node: the composition root that wires store, block tree, miner and relay together.

Like the PoP node it is one OS process on its own uvloop loop, reusing the same connections, peer
manager and SQLite store. It serves SUBMIT (transfers into the mempool), STATUS and SUBSCRIBE, mines on
its tip (``NodeConfig.mine``), relays blocks (:mod:`popbench.pow.relay`), persists every block it
accepts and, for every block, when it first saw it (``pow_arrivals``), for the harness's propagation
times. Spec: docs/pow.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from popbench.errors import ProtocolError
from popbench.mempool import Mempool
from popbench.model.transfer import Transfer
from popbench.net.connection import Connection
from popbench.node_base import NodeBase
from popbench.node_config import NodeConfig, Reporter
from popbench.pow.block import PowBlock
from popbench.pow.chain import BlockTree, Reorg, transfers_to_return
from popbench.pow.miner import Miner
from popbench.pow.pool import TransferPool
from popbench.pow.relay import BlockRelay
from popbench.pow.rules import CONFIRMATIONS, InvalidBlock
from popbench.pow.status import pow_node_status
from popbench.wire import (
    TOPIC_BLOCKS,
    TOPIC_COMMITS,
    Committed,
    Gossip,
    ItemKind,
    ItemsRequest,
    Message,
    Peers,
    PeersRequest,
    Ping,
    PowAnnounce,
    PowChain,
    PowGetBlock,
    PowGetChain,
    RejectReason,
    Role,
    StatusRequest,
    Submit,
    SubmitResult,
    Subscribe,
    encode_frame,
)
from popbench.wire import PowBlock as PowBlockMessage
from popbench.wire.status import PowStatus, SeriesTally


class PowNode(NodeBase):
    """One proof-of-work node: implements the hosts its connections, relay and miner talk to."""

    def __init__(self, config: NodeConfig, report: Reporter | None = None) -> None:
        self._init_common(config, report)
        chain_id, params = self.genesis.chain_id, self.genesis.params
        self.tree = BlockTree(chain_id, params, check_transfer=self._verify_transfer)
        self.pool = TransferPool(Mempool(params.mempool_limit), self.tree, chain_id, self.counters)
        self.relay = BlockRelay(self)
        self.miner = Miner(self)
        self.subscribers: dict[Connection, int] = {}  # connection -> topic bits
        self.blocks_refused: Counter[str] = Counter()
        self.reorgs = 0
        self.deepest_reorg = 0
        self.confirmations = CONFIRMATIONS
        self.confirmed_height = 0
        self.confirmed_intervals = SeriesTally()
        self.last_commit_ns = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers = self._build_handlers()
        self._load_chain()

    # -- lifecycle ---------------------------------------------------------------------------------
    def _load_chain(self) -> None:
        """Rebuild the tree from disk (every block is validated again) before any peer is heard."""
        for _, _, _, _, encoded in self.store.load_pow_blocks():
            try:
                self.tree.add(PowBlock.decode(encoded))
            except (InvalidBlock, ProtocolError) as err:
                self.report("stored_block_refused", {"error": str(err)})
        self.confirmed_height = max(0, self.tree.tip.height - CONFIRMATIONS)  # confirmed in an earlier life

    async def start(self) -> None:
        await self._listen_and_dial()
        if self.config.mine and self.config.role == Role.VALIDATOR:
            self.miner.start()

    async def stop(self) -> None:
        self.miner.stop()
        await self._close_network_and_store()

    def status(self) -> PowStatus:
        return pow_node_status(self)

    # -- ConnectionHost ----------------------------------------------------------------------------
    def connection_established(self, conn: Connection) -> bool:
        if not self.peers.register(conn):
            return False
        if conn.peer_role in (Role.VALIDATOR, Role.FOLLOWER):
            self._links_changed()
            self.relay.greet(conn)
        return True

    def connection_closed(self, conn: Connection) -> None:
        self.peers.unregister(conn)
        self.subscribers.pop(conn, None)
        self.relay.link_closed(conn)

    def _build_handlers(self) -> dict[type[Message], Callable[[Connection, Any], None]]:
        relay = self.relay
        return {
            Submit: self._on_submit, Gossip: self._on_gossip, ItemsRequest: self._on_items_request,
            Subscribe: self._on_subscribe, StatusRequest: self._on_status_request, Ping: self._on_ping,
            PeersRequest: self.discovery.on_peers_request, Peers: self.discovery.on_peers,
            PowAnnounce: relay.on_announce, PowGetBlock: relay.on_get_block, PowBlockMessage: relay.on_block,
            PowGetChain: relay.on_get_chain, PowChain: relay.on_chain,
        }  # fmt: skip

    # -- clients -------------------------------------------------------------------------------------
    def _on_submit(self, conn: Connection, message: Submit) -> None:
        if message.kind != ItemKind.TRANSFER:
            conn.send(SubmitResult(message.request_id, bytes(32), RejectReason.MALFORMED))  # no proofs on this chain
            return
        reason, item_id = self.pool.admit(message.item)
        conn.send(SubmitResult(message.request_id, item_id, reason))
        if reason == RejectReason.ACCEPTED:
            self.peers.broadcast(Gossip(ItemKind.TRANSFER, [message.item]), self.peers.peer_links())

    def _on_gossip(self, conn: Connection, message: Gossip) -> None:
        """Admit gossiped transfers and pass the new ones on to every other peer (flooding): on a graph
        that is not a full mesh, one hop would leave most miners without the transfer."""
        if message.kind != ItemKind.TRANSFER:
            return
        fresh = [raw for raw in message.items if self.pool.admit(raw)[0] == RejectReason.ACCEPTED]
        if fresh:
            self.peers.broadcast(Gossip(ItemKind.TRANSFER, fresh), self._links_except(conn))

    def _on_items_request(self, conn: Connection, message: ItemsRequest) -> None:
        found = [item.raw for item in (self.pool.mempool.get(i) for i in message.ids) if item is not None]
        if found:
            conn.send(Gossip(ItemKind.TRANSFER, found))

    def _on_subscribe(self, conn: Connection, message: Subscribe) -> None:
        self.subscribers[conn] = message.topics

    # -- blocks: MinerHost and RelayHost -------------------------------------------------------------
    def block_template(self) -> PowBlock | None:
        tip = self.tree.tip
        timestamp_ms = max(time.time_ns() // 1_000_000, tip.block.timestamp_ms)
        transfers = self.pool.oldest(self.genesis.params.batch_size)
        return PowBlock(tip.hash, tip.height + 1, timestamp_ms, self.tree.expected_bits(tip), self.node_id, transfers)

    def block_mined(self, block: PowBlock) -> None:
        self.accept_block(block, None)

    def accept_block(self, block: PowBlock, source: Connection | None) -> int:
        """Add a block from a peer (``source``) or the miner (None); returns how many blocks became known."""
        seen_ns = time.time_ns()
        try:
            result = self.tree.add(block)
        except InvalidBlock as err:
            self.blocks_refused[err.reason.name] += 1
            return 0
        for rejection in result.rejected:
            self.blocks_refused[rejection.reason.name] += 1
        if result.missing_parent is not None and source is not None:
            self.relay.fetch_chain(source)
        for added in result.added:
            self._persist(added, seen_ns)
        if result.reorg is not None:
            self._tip_moved(result.reorg, source)
        return len(result.added)

    def broadcast(self, message: PowAnnounce) -> None:
        self.peers.broadcast(message, self.peers.peer_links())  # validators and followers
        self._notify(TOPIC_BLOCKS, message)

    def push_block(self, message: PowBlockMessage, source: Connection | None) -> None:
        self.peers.broadcast(message, self._links_except(source))

    def _links_except(self, source: Connection | None) -> list[Connection]:
        return [conn for conn in self.peers.peer_links() if conn is not source]

    def _persist(self, block: PowBlock, seen_ns: int) -> None:
        entry = self.tree.entry(block.hash)
        assert entry is not None
        self.store.save_pow_block(block.hash, block.prev_hash, block.height, entry.total_work, block.encode())
        self.store.save_pow_arrival(block.hash, block.height, block.miner, seen_ns)

    def _tip_moved(self, reorg: Reorg, source: Connection | None) -> None:
        self.pool.blocks_attached(reorg.attached)
        if reorg.depth:
            self.reorgs += 1
            self.deepest_reorg = max(self.deepest_reorg, reorg.depth)
            self.pool.return_transfers(transfers_to_return(reorg))
        self.miner.tip_changed()
        self.relay.announce_tip(source)
        self._confirm()

    def _verify_transfer(self, transfer: Transfer) -> None:
        self.pool.verify(transfer)

    # -- confirmations and subscribers -----------------------------------------------------------------
    def _confirm(self) -> None:
        """Count blocks that became CONFIRMATIONS deep on the main chain and tell subscribers."""
        while self.confirmed_height < self.tree.tip.height - CONFIRMATIONS:
            self.confirmed_height += 1
            block = self.tree.get(self.tree.main_hash_at(self.confirmed_height) or b"")
            assert block is not None
            self._count_confirmed(block)

    def _count_confirmed(self, block: PowBlock) -> None:
        now_ns = time.time_ns()
        parent = self.tree.get(block.prev_hash)
        if parent is not None and parent.height > 0:
            self.confirmed_intervals.add((block.timestamp_ms - parent.timestamp_ms) / 1000)
        self.counters.blocks_committed += 1
        self.counters.transfers_committed += len(block.encoded_transfers)
        self.last_commit_ns = now_ns
        self._notify(TOPIC_COMMITS, Committed(block.height, block.hash, 0, now_ns, [], block.transfer_ids))

    def _notify(self, topic: int, message: Message) -> None:
        targets = [conn for conn, topics in self.subscribers.items() if topics & topic]
        if not targets:
            return
        frame = encode_frame(message)
        for conn in targets:
            conn.send_encoded(frame, type(message).__name__)

    # -- peers -----------------------------------------------------------------------------------------
