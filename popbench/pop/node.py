"""The PoP validator node: the composition root that wires store, ledger, network and PBFT together.

A node is one OS process on its own uvloop loop. It serves clients (SUBMIT, SUBSCRIBE, STATUS), speaks
PBFT with the other validators over authenticated links, catches up from peers, and serves snapshots to
joining nodes. ``run_node`` is the one entry point, used by ``popbench node`` and by the harness.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from popbench import crypto
from popbench.errors import ProtocolError
from popbench.events import EventLog, events_path
from popbench.mempool import Mempool
from popbench.model.block import Block
from popbench.net.connection import Connection
from popbench.net.ondemand import OnDemandLinks
from popbench.node_base import NodeBase
from popbench.node_config import NodeConfig, Reporter
from popbench.pop.admission import Admission, gossip_batches
from popbench.pop.byzantine import engine_for
from popbench.pop.catchup import CatchUp
from popbench.pop.clock import LoopClock
from popbench.pop.forwarding import LEADERS_AHEAD, LeaderForwarding
from popbench.pop.ledger import CommittedBlock, Ledger
from popbench.pop.mesh import MeshFlood
from popbench.pop.routing import ROUTED_TYPES, MeshRoutes
from popbench.pop.status import pop_node_status
from popbench.wire import (
    CONSENSUS_MESSAGES,
    TOPIC_COMMITS,
    BlockRequest,
    BlockResponse,
    Committed,
    DisconnectReason,
    Gossip,
    ItemKind,
    ItemsRequest,
    Message,
    Peers,
    PeersRequest,
    Ping,
    PrePrepare,
    RejectReason,
    Relayed,
    Role,
    Routed,
    SnapshotRequest,
    StatusRequest,
    Submit,
    SubmitResult,
    Subscribe,
    encode_frame,
)
from popbench.wire.status import PopStatus, SeriesTally


class Node(NodeBase):
    """One validator (or follower): implements the hosts the connections and the engine talk to."""

    def __init__(self, config: NodeConfig, report: Reporter | None = None) -> None:
        self._init_common(config, report)
        self.ledger = Ledger(self.genesis, self.store)
        self.mempool = Mempool(self.genesis.params.mempool_limit)
        self.mesh = config.mesh  # None: a full mesh, where every broadcast goes straight to every validator
        self.peers.addresses.update(config.address_book)
        self.flood = MeshFlood(self.node_id, self.key, self.genesis.chain_id, self.genesis.public_keys, self.counters)
        self.routes = MeshRoutes(self.node_id, self.key, self.genesis.chain_id, self.genesis.public_keys,
                                 config.mesh_graph, self.counters)  # fmt: skip
        self.direct = OnDemandLinks(self.peers, self.mesh or frozenset())
        self.admission = Admission(self.ledger, self.mempool, self.counters, self._gossip)
        self.engine = engine_for(config.byzantine, self, config.role)
        self.forwarding = LeaderForwarding(self._send_over_mesh, self._coming_leaders, self.genesis.params.mempool_limit)
        self.events = EventLog(events_path(config.data_dir, config.node_id))
        self.engine.events = self.events
        if self.faults.active:  # restarted while a fault of the harness's lasts
            self.faults_changed()
        self.catchup = CatchUp(self)
        self.subscribers: set[Connection] = set()
        self.round_times = SeriesTally()
        self.last_commit_ns = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers = self._build_handlers()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._listen_and_dial()
        self.engine.start()

    async def stop(self) -> None:
        self.engine.stop()
        await self._close_network_and_store()
        self.events.close()

    # -- ConnectionHost ----------------------------------------------------------------------------
    def connection_established(self, conn: Connection) -> bool:
        if not self.peers.register(conn):
            return False
        if conn.peer_role == Role.VALIDATOR and self._is_mesh_link(conn):
            self._links_changed()
            conn.send(BlockRequest(self.ledger.height + 1, 1))  # a restarted node learns if it is behind
            self._sync_mempool(conn)
            if self.config.role == Role.FOLLOWER:
                conn.send(Subscribe(TOPIC_COMMITS))  # a follower learns of new blocks by notification
        return True

    def _is_mesh_link(self, conn: Connection) -> bool:
        """A link to a mesh neighbour (every validator link on a full mesh), not one opened on demand."""
        return self.mesh is None or conn.peer_id in self.mesh

    def _mesh_links(self) -> list[Connection]:
        links = self.peers.validator_links()
        return links if self.mesh is None else [conn for conn in links if conn.peer_id in self.mesh]

    def _intended_links(self) -> list[Connection]:
        return self._mesh_links()

    def _sync_mempool(self, conn: Connection) -> None:
        """A new validator link starts with every item this node holds uncommitted (as CometBFT's mempool
        reactor walks its mempool for each new peer): an item whose gossip died with a closed link, or a
        peer that restarted with an empty mempool, still reaches every validator (docs/protocol.md,
        section 6, "mempool sync")."""
        for kind in (ItemKind.PROOF, ItemKind.TRANSFER):
            for batch in gossip_batches(kind, [item.raw for item in self.mempool if item.kind is kind]):
                conn.send(batch)

    def connection_closed(self, conn: Connection) -> None:
        self.peers.unregister(conn)
        self.subscribers.discard(conn)

    def _build_handlers(self) -> dict[type[Message], Callable[[Connection, Any], None]]:
        handlers: dict[type[Message], Callable[[Connection, Any], None]] = {
            Submit: self._on_submit, Gossip: self._on_gossip, ItemsRequest: self._on_items_request,
            Subscribe: self._on_subscribe, StatusRequest: self._on_status_request, Ping: self._on_ping,
            PeersRequest: self.discovery.on_peers_request, Peers: self.discovery.on_peers, Relayed: self._on_relayed,
            Routed: self._on_routed,
            BlockRequest: self.catchup.on_block_request, BlockResponse: self.catchup.on_block_response,
            SnapshotRequest: self.catchup.on_snapshot_request, Committed: self._on_committed_notice,
        }  # fmt: skip
        for kind in CONSENSUS_MESSAGES:
            handlers[kind] = self._on_consensus
        return handlers

    # -- clients -------------------------------------------------------------------------------------
    def _on_submit(self, conn: Connection, message: Submit) -> None:
        if self.config.role != Role.VALIDATOR:
            conn.send(SubmitResult(message.request_id, bytes(32), RejectReason.NOT_A_VALIDATOR))
            return
        reason, item_id = self.admission.admit(message.kind, message.item, relay=self.mesh is None)
        result = SubmitResult(message.request_id, item_id, reason)
        if reason != 0:
            conn.send(result)
            return
        if self.mesh is None:
            self.admission.after_gossip(lambda: conn.send(result))
        else:  # to the coming leaders (popbench/pop/forwarding.py): written to their links, then promised
            self.forwarding.submitted(message.kind, item_id, message.item)
            conn.send(result)
        self.engine.work_arrived()

    def _on_subscribe(self, conn: Connection, message: Subscribe) -> None:
        if message.topics & TOPIC_COMMITS:
            self.subscribers.add(conn)

    def status(self) -> PopStatus:
        return pop_node_status(self)

    def faults_changed(self) -> None:
        clock = self.faults.clock
        self.ledger.wall_ns = clock.wall_ns
        if isinstance(self.engine.clock, LoopClock):
            self.engine.clock.set_drift(clock.drift_ppm)
        self.events.emit("faults-loaded", blocked=sorted(self.faults.links.blocked), shaped=len(self.faults.links.shapes),
                         clock_offset_ms=clock.offset_ms, drift_ppm=clock.drift_ppm, disk=self.faults.disk.mode)  # fmt: skip

    # -- validators ----------------------------------------------------------------------------------
    def _on_committed_notice(self, conn: Connection, message: Committed) -> None:
        if message.height > self.ledger.height:
            self.catchup.request(conn.peer_id)

    def _gossip(self, message: Gossip) -> None:
        """Item gossip goes to the mesh neighbours (every validator on a full mesh)."""
        self.peers.broadcast(message, self._mesh_links())

    def _on_gossip(self, conn: Connection, message: Gossip) -> None:
        self._admit_items(message)

    def _admit_items(self, message: Gossip) -> None:
        """Items from a peer, never passed on: on a full mesh their origin sent them to everyone, on a
        bounded mesh they came to a leader or with a proposal (popbench/pop/forwarding.py)."""
        admitted = 0
        for raw in message.items:
            reason, _ = self.admission.admit(message.kind, raw, relay=False)
            admitted += reason == 0
        if admitted:
            self.engine.work_arrived()

    def _on_items_request(self, conn: Connection, message: ItemsRequest) -> None:
        found = self.admission.lookup(message.ids)
        if found:
            conn.send(Gossip(message.kind, found))

    def _on_consensus(self, conn: Connection, message: Message) -> None:
        if not conn.is_validator_link:
            conn.disconnect(DisconnectReason.UNEXPECTED_MESSAGE, "consensus messages are for validators")
            return
        self.engine.on_message(conn.peer_id, message)

    def _on_relayed(self, conn: Connection, envelope: Relayed) -> None:
        """A flooded consensus message: check it once, pass it on to the other neighbours, then deliver it
        as if its origin had sent it over a link (popbench/pop/mesh.py)."""
        if not conn.is_validator_link:
            conn.disconnect(DisconnectReason.UNEXPECTED_MESSAGE, "relayed consensus messages are for validators")
            return
        inner = self.flood.receive(envelope)
        if inner is None:
            return
        self.admission.flush_gossip()  # items a proposal names travel ahead of it, hop by hop
        frame = encode_frame(envelope)
        for link in self._mesh_links():
            if link is not conn and link.peer_id != envelope.origin:
                link.send_encoded(frame, "Relayed")
        if isinstance(inner, Gossip):  # a leader's proposal items: admitted even to a full mempool
            self.admission.expect([self.admission.id_of(inner.kind, raw) for raw in inner.items])
        self._deliver(envelope.origin, inner)

    def _deliver(self, origin: int, inner: Message) -> None:
        """What came over the mesh from ``origin``: items (a proposal's, or sent to this leader: those
        within the mempool's bound, like any GOSSIP), or a consensus message for the engine."""
        if isinstance(inner, Gossip):
            self._admit_items(inner)
        else:
            self.engine.on_message(origin, inner)

    def _on_routed(self, conn: Connection, envelope: Routed) -> None:
        """A consensus message for one validator: delivered here if it is for this node, else passed to the
        neighbour one hop nearer its destination (popbench/pop/routing.py)."""
        if not conn.is_validator_link:
            conn.disconnect(DisconnectReason.UNEXPECTED_MESSAGE, "routed consensus messages are for validators")
            return
        if envelope.destination != self.node_id:
            self._pass_on(envelope.destination, encode_frame(envelope))
            return
        inner = self.routes.receive(envelope)
        if inner is not None:
            self._deliver(envelope.origin, inner)

    def _pass_on(self, destination: int, frame: bytes) -> None:
        hop = self.routes.next_hop(destination)
        if hop is None:
            self.counters.protocol_errors += 1  # not a validator of the graph: its sender's fault
            return
        link = self.peers.links.get(hop)
        if link is None or not link.is_open:
            self.counters.routed_dropped += 1  # the neighbour is down: the share costs its view a timeout
            return
        link.send_encoded(frame, "Routed")

    # -- PbftHost ------------------------------------------------------------------------------------
    def broadcast(self, message: Message) -> None:
        self.admission.flush_gossip()  # a proposal's items must reach peers before the proposal does
        if self.mesh is None:
            self.peers.broadcast(message)
            return
        if isinstance(message, PrePrepare):
            self._flood_items_of(message)
        self._flood(message)

    def _flood(self, message: Message) -> None:
        frame = self.flood.wrap(message)
        for link in self._mesh_links():
            link.send_encoded(frame, "Relayed")

    def _flood_items_of(self, proposal: PrePrepare) -> None:
        """A leader on a bounded mesh floods its proposal's items just before the proposal: over every
        link they arrive first, so every validator holds them when it prepares the block."""
        try:
            block = Block.decode(proposal.block)
        except ProtocolError:
            return  # a faulty leader's own garbage: nothing to send with it
        for kind, ids in ((ItemKind.PROOF, block.proof_ids), (ItemKind.TRANSFER, block.transfer_ids)):
            for batch in gossip_batches(kind, self.admission.lookup(ids)):
                self._flood(batch)

    def _coming_leaders(self) -> list[int]:
        engine, leaders = self.engine, self.ledger.leaders
        chosen = [leaders.leader(engine.view, engine.height + ahead) for ahead in range(LEADERS_AHEAD)]
        return [leader for leader in chosen if leader != self.node_id]

    def send_to(self, node_id: int, message: Message) -> None:
        if self.mesh is not None:
            self._send_over_mesh(node_id, message)
            return
        link = self.peers.links.get(node_id)
        if link is not None:
            link.send(message)

    def _send_over_mesh(self, node_id: int, message: Message) -> None:
        """A consensus message goes over a link up to its addressee, else hop by hop (ROUTED); a request
        or an answer (items, blocks) over a direct link, dialled on demand."""
        link = self.peers.links.get(node_id)
        if link is not None and link.is_open:
            link.send(message)
        elif message.TYPE in ROUTED_TYPES:
            self._pass_on(node_id, self.routes.wrap(node_id, message))
        else:
            self.direct.send(node_id, message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        self.counters.signature_verifications += 1
        return crypto.verify(public_key, message, signature)

    def request_items(self, node_id: int, kind: ItemKind, ids: list[bytes]) -> None:
        self.admission.expect(ids)  # a proposal names them: the answer is admitted even to a full mempool
        self.send_to(node_id, ItemsRequest(kind, ids))

    def request_catch_up(self, node_id: int) -> None:
        self.catchup.request(self._catch_up_peer(node_id))

    def _catch_up_peer(self, node_id: int) -> int:
        """Whom to ask for the blocks ``node_id`` is ahead by: on a bounded mesh the neighbour one hop nearer
        it, over a link that is up. Asking ``node_id`` itself dialled it, and at every height change most of
        1000 validators hear the next leader's proposal before the last commit: a thousand handshakes into
        the one process that had to lead (measured at N = 1000: its prepare phase took 12 s, not 3)."""
        if self.mesh is None or node_id in self.mesh:
            return node_id
        hop = self.routes.next_hop(node_id)
        return node_id if hop is None else hop

    def block_committed(self, record: CommittedBlock, view: int, round_s: float | None) -> None:
        block = record.block
        self.mempool.remove(block.proof_ids)
        self.mempool.remove(block.transfer_ids)
        self.admission.height_resolved()
        counters = self.counters
        counters.blocks_committed += 1
        counters.proofs_committed += len(block.proof_ids)
        counters.transfers_committed += len(block.transfer_ids)
        if round_s is not None:
            self.round_times.add(round_s)
        self.last_commit_ns = time.time_ns()
        self._notify_subscribers(record, view)
        if self.mesh is not None:
            self.forwarding.committed(block.proof_ids)
            self.forwarding.committed(block.transfer_ids)
            asyncio.get_running_loop().call_soon(self.forwarding.resend)  # once the engine is at the next height

    def _notify_subscribers(self, record: CommittedBlock, view: int) -> None:
        if not self.subscribers:
            return
        block = record.block
        note = Committed(block.height, block.hash, view, time.time_ns(), block.proof_ids, block.transfer_ids)
        frame = encode_frame(note)
        for conn in self.subscribers:
            conn.send_encoded(frame, "Committed")

    # -- peers and discovery -------------------------------------------------------------------------


async def serve(config: NodeConfig, stop: asyncio.Event, report: Reporter | None = None) -> Node:
    """Run a node until ``stop`` is set; returns the stopped node (its counters stay readable)."""
    node = Node(config, report)
    try:
        await node.start()
        await stop.wait()
    finally:
        await node.stop()
    return node
