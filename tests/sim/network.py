"""Virtual time, the event queue, and in-memory validators around the real ``PbftEngine`` and ``Ledger``.

A message is encoded when sent and decoded when delivered, as on a real link, so no two nodes ever
share a message object. Delivery time, loss and timer skew are the adversary's decisions
(tests/sim/scheduler.py); the network only carries them out and writes the trace.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, cast

from popbench import bls, crypto
from popbench.counters import NodeCounters
from popbench.genesis import Genesis
from popbench.mempool import Mempool
from popbench.model.block import AggregateCertificate, Block, vote_message
from popbench.net.connection import Connection
from popbench.pop import catchup as catchup_module
from popbench.pop import ledger as ledger_module
from popbench.pop.admission import Admission
from popbench.pop.catchup import CatchUp
from popbench.pop.ledger import CommittedBlock, Ledger
from popbench.pop.pbft import PbftEngine
from popbench.store import Store
from popbench.wire import (
    CONSENSUS_MESSAGES,
    BlockRequest,
    BlockResponse,
    Gossip,
    ItemKind,
    ItemsRequest,
    Message,
    NewView,
    Prepare,
    PrepareAggregate,
    PrepareShare,
    PrePrepare,
    RejectReason,
    ViewChange,
    decode_message,
)

NS_PER_S = 1_000_000_000
TRACE_EVENTS = 80  # events kept for the failure report


class Timer:
    """A virtual-time timer; cancelling it makes the queue skip it."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventQueue:
    """Actions by virtual time; actions due at the same nanosecond run in the order they were queued."""

    def __init__(self) -> None:
        self.now_ns = 0
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0

    def at(self, time_ns: int, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(time_ns, self.now_ns), self._seq, action))
        self._seq += 1

    def after_ns(self, delay_ns: int, action: Callable[[], None]) -> None:
        self.at(self.now_ns + delay_ns, action)

    def next_time_ns(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> Callable[[], None]:
        time_ns, _, action = heapq.heappop(self._heap)
        self.now_ns = time_ns
        return action


class Adversary(Protocol):
    """What the network asks of the scheduler: when (if ever) a message arrives, when a timer fires."""

    def delivery_delays_ns(self, src: int, dst: int, message: Message) -> list[int]:
        """One delay per copy to deliver: [] drops the message, two entries duplicate it."""
        ...

    def link_up(self, src: int, dst: int) -> bool: ...

    def timer_delay_ns(self, node: int, delay_s: float) -> int: ...

    def reconnect_delay_ns(self) -> int | None:
        """How long a broken link takes to come back; None: it never does (a scripted loss)."""
        ...

    def node_committed(self, node: int) -> None:
        """A node committed a block (the adversary may react, as a nemesis does)."""
        ...


class Observer(Protocol):
    """The invariant checker's view of the network: every message sent and every commit."""

    def saw_sent(self, src: int, dst: int, message: Message) -> None: ...

    def saw_commit(self, node: int, record: CommittedBlock) -> None: ...


class Trace:
    """The last events of a schedule; rendered only when a failure is reported."""

    def __init__(self, events: EventQueue, keep: int = TRACE_EVENTS) -> None:
        self.events = events
        self.entries: deque[tuple[int, str, int, int, Message | str]] = deque(maxlen=keep)

    def add(self, what: str, src: int, dst: int, detail: Message | str) -> None:
        self.entries.append((self.events.now_ns, what, src, dst, detail))

    def render(self, genesis: Genesis) -> str:
        return "\n".join(_render_entry(entry, genesis) for entry in self.entries)


def _render_entry(entry: tuple[int, str, int, int, Message | str], genesis: Genesis) -> str:
    time_ns, what, src, dst, detail = entry
    text = detail if isinstance(detail, str) else describe(detail, genesis)
    who = f"{src}->{dst}" if dst >= 0 else f"node {src}" if src >= 0 else "network"
    return f"  {time_ns / NS_PER_S:10.6f}s  {what:<9} {who:<8} {text}"


def describe(message: Message, genesis: Genesis) -> str:
    """One line a person can read: kind, view, height, block and whether a vote's signature holds."""
    if isinstance(message, PrePrepare):
        block = Block.decode(message.block)
        return f"PRE-PREPARE v{message.view} h{message.height} block {short(block.hash)} (header view {block.view}, proposer {block.proposer}, {len(block.proof_ids) + len(block.transfer_ids)} items)"
    if isinstance(message, PrepareShare):  # COMMIT_SHARE too
        label = "prepare" if type(message) is PrepareShare else "commit"
        signed = vote_message(label, genesis.chain_id, message.view, message.height, message.block_hash)
        index = genesis.index_of.get(message.voter, -1)
        good = "valid share" if genesis.bls_keys.verify_share(index, signed, message.signature) else "BAD SHARE"
        return f"{label.upper()}-SHARE v{message.view} h{message.height} block {short(message.block_hash)} voter {message.voter} {good}"
    if isinstance(message, Prepare):  # COMMIT too: it subclasses PREPARE
        label = "prepare" if type(message) is Prepare else "commit"
        signed = vote_message(label, genesis.chain_id, message.view, message.height, message.block_hash)
        key = genesis.public_keys.get(message.voter, b"")
        good = "valid sig" if crypto.verify(key, signed, message.signature) else "BAD SIG"
        return f"{label.upper()} v{message.view} h{message.height} block {short(message.block_hash)} voter {message.voter} {good}"
    if isinstance(message, PrepareAggregate):  # COMMIT_AGGREGATE too
        label = "prepare" if type(message) is PrepareAggregate else "commit"
        certificate = AggregateCertificate(message.view, message.signers, message.aggregate)
        good = "valid" if certificate.valid(genesis, message.height, message.block_hash, label) else "INVALID"
        return f"{label.upper()}-AGGREGATE v{message.view} h{message.height} block {short(message.block_hash)} bitmap {message.signers.hex()} {good}"
    if isinstance(message, ViewChange):
        prepared = (
            f"prepared v{message.prepared_view} block {short(Block.decode(message.prepared_block).hash)} with {len(message.prepared_votes) // 68} votes"
            if message.prepared_block
            else "nothing prepared"
        )
        return f"VIEW-CHANGE to v{message.new_view} h{message.height} voter {message.voter}, {prepared}"
    if isinstance(message, NewView):
        return f"NEW-VIEW v{message.new_view} h{message.height} with {len(message.view_changes)} view changes"
    if isinstance(message, Gossip):
        return f"GOSSIP {message.kind.name} x{len(message.items)}"
    if isinstance(message, ItemsRequest):
        return f"ITEMS-REQUEST {message.kind.name} x{len(message.ids)}"
    if isinstance(message, BlockRequest):
        return f"BLOCK-REQUEST from h{message.from_height} x{message.count}"
    if isinstance(message, BlockResponse):
        return f"BLOCK-RESPONSE x{len(message.blocks)}"
    return type(message).__name__


def short(digest: bytes) -> str:
    return digest[:4].hex()


@contextmanager
def virtual_wall_clock(events: EventQueue) -> Iterator[None]:
    """Make the ledger's and catch-up's clocks virtual, so block hashes (and traces) repeat exactly per seed.

    The ledger stamps proposals with ``time.time_ns()`` and catch-up paces its requests with
    ``time.monotonic_ns()``; nothing else in a node's consensus path reads the wall clock (the engine's
    own time comes through its ``Clock``).
    """
    patched = [vars(ledger_module), vars(catchup_module)]
    real = [namespace["time"] for namespace in patched]
    for namespace in patched:
        namespace["time"] = _VirtualTime(events)
    try:
        yield
    finally:
        for namespace, module in zip(patched, real, strict=True):
            namespace["time"] = module


class _VirtualTime:
    """Stands in for the ``time`` module inside popbench.pop.ledger and popbench.pop.catchup."""

    EPOCH_NS = 1_700_000_000 * NS_PER_S  # far from zero, as real clocks are (catch-up compares with 0)

    def __init__(self, events: EventQueue) -> None:
        self.events = events

    def time_ns(self) -> int:
        return self.EPOCH_NS + self.events.now_ns

    def monotonic_ns(self) -> int:
        return self.EPOCH_NS + self.events.now_ns


class PeerLink:
    """What catch-up needs of a connection: the peer's id and a way to answer it."""

    def __init__(self, host: SimHost, peer_id: int) -> None:
        self.host = host
        self.peer_id = peer_id

    def send(self, message: Message) -> None:
        self.host.send_to(self.peer_id, message)


class NodeClock:
    """The engine's ``Clock`` for one node: virtual now, timers through the adversary."""

    def __init__(self, network: SimNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id

    def now_ns(self) -> int:
        return self.network.events.now_ns

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        return self.network.start_timer(self.node_id, delay_s, callback)


class Peers:
    """What popbench.pop.byzantine's equivocating leader asks of a node's peer table: its validator links."""

    def __init__(self, host: SimHost) -> None:
        self.host = host

    def validator_links(self) -> list[PeerLink]:
        return [PeerLink(self.host, peer) for peer in sorted(self.host.genesis.public_keys) if peer != self.host.node_id]


class RememberingKeyTable(bls.BlsKeyTable):
    """``BlsKeyTable`` whose answers are remembered: every replica checks the same certificates and a
    pairing costs ~2 ms, so the collector-path schedules would otherwise take minutes. Exact: the same
    question always has the same answer."""

    def __init__(self, public_keys: list[bytes]) -> None:
        super().__init__(public_keys)
        self._known: dict[tuple[object, ...], bool] = {}

    def verify_share(self, index: int, message: bytes, share: bytes) -> bool:
        key = ("share", index, message, share)
        if key not in self._known:
            self._known[key] = super().verify_share(index, message, share)
        return self._known[key]

    def verify_aggregate(self, indices: Sequence[int], message: bytes, signature: bytes) -> bool:
        key = ("aggregate", tuple(indices), message, signature)
        if key not in self._known:
            self._known[key] = super().verify_aggregate(indices, message, signature)
        return self._known[key]


def remember_bls_checks(genesis: Genesis) -> None:
    """Give a collector-path genesis a ``RememberingKeyTable`` (the genesis caches its table per object)."""
    if genesis.params.votes and not isinstance(genesis.__dict__.get("bls_keys"), RememberingKeyTable):
        genesis.__dict__["bls_keys"] = RememberingKeyTable([v.bls_public_key for v in genesis.validators])


class SimHost:
    """One validator: implements ``PbftHost`` with a real engine, ledger, mempool, admission and catch-up."""

    def __init__(self, network: SimNetwork, key: crypto.SigningKey, node_id: int, engine: type[PbftEngine] = PbftEngine) -> None:
        self.network = network
        self.genesis = network.genesis
        self.key = key
        self.node_id = node_id
        self.counters = NodeCounters()
        self.store = Store(Path(":memory:"))
        self.ledger = Ledger(self.genesis, self.store)
        self.mempool = Mempool(self.genesis.params.mempool_limit)
        self.admission = Admission(self.ledger, self.mempool, self.counters, self.broadcast)
        self.engine = engine(self, NodeClock(network, node_id))
        self.catchup = CatchUp(self)
        self.peers = Peers(self)
        self.up = True
        self.incarnation = 0  # a message sent to an earlier incarnation is lost with its connection

    def crash(self) -> None:
        """The process dies: everything but the database is gone; messages to it are lost."""
        self.engine.stop()
        self.up = False
        self.incarnation += 1
        self.network.trace.add("CRASH", self.node_id, -1, f"at height {self.ledger.height}")

    def restart(self) -> None:
        """A new process on the same database: ledger, mempool, engine and catch-up start afresh."""
        self.ledger = Ledger(self.genesis, self.store)
        self.mempool = Mempool(self.genesis.params.mempool_limit)
        self.admission = Admission(self.ledger, self.mempool, self.counters, self.broadcast)
        self.engine = type(self.engine)(self, NodeClock(self.network, self.node_id))
        self.catchup = CatchUp(self)
        self.up = True
        self.network.trace.add("RESTART", self.node_id, -1, f"from its database at height {self.ledger.height}")
        self.engine.start()
        for peer in self.network.node_ids:
            if peer != self.node_id and self.network.hosts[peer].up:
                self.link_established(peer)
                self.network.hosts[peer].link_established(self.node_id)

    def link_established(self, peer: int) -> None:
        """As popbench.pop.node on a new validator link: ask the peer whether this node is behind."""
        self.send_to(peer, BlockRequest(self.ledger.height + 1, 1))

    # -- PbftHost ------------------------------------------------------------------------------------
    def broadcast(self, message: Message) -> None:
        for peer in self.network.node_ids:
            if peer != self.node_id:
                self.send_to(peer, message)

    def send_to(self, node_id: int, message: Message) -> None:
        self.network.send(self.node_id, node_id, message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        self.counters.signature_verifications += 1
        return self.network.verify(public_key, message, signature)

    def block_committed(self, record: CommittedBlock, view: int, round_s: float | None) -> None:
        self.mempool.remove(record.block.proof_ids)
        self.mempool.remove(record.block.transfer_ids)
        self.counters.blocks_committed += 1
        self.network.committed(self.node_id, record, view)

    def request_items(self, node_id: int, kind: ItemKind, ids: list[bytes]) -> None:
        self.send_to(node_id, ItemsRequest(kind, ids))

    def request_catch_up(self, node_id: int) -> None:
        self.catchup.request(node_id)

    # -- inputs --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.engine.start()

    def submit(self, kind: ItemKind, raw: bytes) -> None:
        """A client's SUBMIT: admit, pass it on to every peer, tell the engine."""
        reason, _ = self.admission.admit(kind, raw, relay=False)
        if reason == RejectReason.ACCEPTED:
            self.broadcast(Gossip(kind, [raw]))
            self.engine.work_arrived()

    def receive(self, src: int, message: Message) -> None:
        if isinstance(message, CONSENSUS_MESSAGES):
            self.engine.on_message(src, message)
        elif isinstance(message, Gossip):
            self._on_gossip(message)
        elif isinstance(message, ItemsRequest):
            found = self.admission.lookup(message.ids)
            if found:
                self.send_to(src, Gossip(message.kind, found))
        elif isinstance(message, BlockRequest):
            self.catchup.on_block_request(self._link(src), message)
        elif isinstance(message, BlockResponse):
            self.catchup.on_block_response(self._link(src), message)

    def _on_gossip(self, message: Gossip) -> None:
        admitted = [self.admission.admit(message.kind, raw, relay=False)[0] == RejectReason.ACCEPTED for raw in message.items]
        if any(admitted):
            self.engine.work_arrived()

    def _link(self, peer: int) -> Connection:
        return cast(Connection, PeerLink(self, peer))  # catch-up uses only peer_id and send

    def close(self) -> None:
        self.engine.stop()
        self.store.close()


class SimNetwork:
    """Every node's links: messages and timers become events, the adversary decides their timing."""

    def __init__(self, genesis: Genesis, events: EventQueue, adversary: Adversary, observer: Observer) -> None:
        self.genesis = genesis
        self.events = events
        self.adversary = adversary
        self.observer = observer
        self.trace = Trace(self.events)
        self.hosts: list[SimHost] = []
        self.node_ids: list[int] = []
        self.steps = 0
        self._reconnecting: set[tuple[int, int]] = set()
        self._verified: dict[tuple[bytes, bytes, bytes], bool] = {}

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """``crypto.verify``, remembered: every replica checks the same votes, often more than once."""
        key = (public_key, message, signature)
        known = self._verified.get(key)
        if known is None:
            known = self._verified[key] = crypto.verify(public_key, message, signature)
        return known

    def add_host(self, host: SimHost) -> None:
        self.hosts.append(host)
        self.node_ids.append(host.node_id)

    def send(self, src: int, dst: int, message: Message) -> None:
        self.observer.saw_sent(src, dst, message)
        delays = self.adversary.delivery_delays_ns(src, dst, message)
        if not delays:
            self.trace.add("dropped", src, dst, message)
            self._link_broke(src, dst)
            return
        body, message_type, incarnation = message.encode_body(), message.TYPE, self.hosts[dst].incarnation

        def deliver() -> None:
            self._deliver(src, dst, message_type, body, incarnation)

        for delay_ns in delays:
            self.events.after_ns(delay_ns, deliver)

    def _deliver(self, src: int, dst: int, message_type: int, body: bytes, incarnation: int) -> None:
        message = decode_message(message_type, body)
        host = self.hosts[dst]
        if not host.up or host.incarnation != incarnation:
            self.trace.add("lost", src, dst, message)  # its connection died with the process
            return
        if not self.adversary.link_up(src, dst):
            self.trace.add("lost", src, dst, message)
            self._link_broke(src, dst)
            return
        self.trace.add("delivered", src, dst, message)
        host.receive(src, message)

    def _link_broke(self, src: int, dst: int) -> None:
        """A lost message means a broken connection (TCP loses nothing else): it reconnects later."""
        pair = (min(src, dst), max(src, dst))
        delay_ns = self.adversary.reconnect_delay_ns()
        if pair in self._reconnecting or delay_ns is None:
            return
        self._reconnecting.add(pair)
        self.events.after_ns(delay_ns, lambda: self._reconnect(pair))

    def _reconnect(self, pair: tuple[int, int]) -> None:
        low, high = pair
        if not (self.adversary.link_up(low, high) and self.adversary.link_up(high, low) and self.hosts[low].up and self.hosts[high].up):
            self.events.after_ns(self.adversary.reconnect_delay_ns() or 0, lambda: self._reconnect(pair))
            return
        self._reconnecting.discard(pair)
        self.trace.add("reconnect", low, high, "link re-established")
        self.hosts[low].link_established(high)
        self.hosts[high].link_established(low)

    def start_timer(self, node: int, delay_s: float, callback: Callable[[], None]) -> Timer:
        timer = Timer()
        name = getattr(callback, "__name__", "timer")
        delay_ns = self.adversary.timer_delay_ns(node, delay_s)

        def fire() -> None:
            if not timer.cancelled:
                self.trace.add("timer", node, -1, f"{name} (asked {delay_s:.3f}s, fired after {delay_ns / NS_PER_S:.3f}s)")
                callback()

        self.events.after_ns(delay_ns, fire)
        return timer

    def committed(self, node: int, record: CommittedBlock, view: int) -> None:
        block = record.block
        self.trace.add("COMMIT", node, -1, f"h{block.height} block {short(block.hash)} in view {view}")
        self.observer.saw_commit(node, record)
        self.adversary.node_committed(node)

    def step(self) -> bool:
        """Run the next event; False when none is left."""
        if self.events.next_time_ns() is None:
            return False
        self.events.pop()()
        self.steps += 1
        return True

    def close(self) -> None:
        for host in self.hosts:
            host.close()
