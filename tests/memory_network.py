"""Real ``PbftEngine`` instances on an in-memory network the test schedules by hand.

Each validator gets a real Ledger (SQLite in the test's directory), a Mempool and an engine; messages
wait in one queue until the test delivers them, drops them or lets them all through, and timers fire
only when the test advances the manual clock. That is enough to replay a chosen schedule exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ConsensusError, SyncError
from popbench.genesis import ChainParams, Genesis, make_genesis
from popbench.kinds import ByzantineBehaviour
from popbench.mempool import Mempool, PoolItem
from popbench.model.proof import Proof
from popbench.pop.byzantine import ENGINES
from popbench.pop.ledger import CommittedBlock, Ledger
from popbench.pop.pbft import PbftEngine
from popbench.store import Store
from popbench.wire import BlockResponse, ItemKind, Message

OWNER = crypto.derive_key("memory-network-owner", 0)
PARAMS = replace(ChainParams(), batch_size=8, batch_interval_ms=1, view_timeout_ms=1000)


class ManualTimer:
    def __init__(self, due_ns: int, callback: Callable[[], None]) -> None:
        self.due_ns = due_ns
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Virtual time: timers fire only in ``advance``."""

    def __init__(self) -> None:
        self.now = 0
        self.timers: list[ManualTimer] = []

    def now_ns(self) -> int:
        return self.now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self.now + int(delay_s * 1e9), callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)
        while due := [t for t in self.timers if not t.cancelled and t.due_ns <= self.now]:
            timer = min(due, key=lambda t: t.due_ns)
            self.timers.remove(timer)
            timer.callback()


@dataclass
class Envelope:
    sender: int
    receiver: int
    message: Message


class MemoryHost:
    """A PbftHost on the memory network: items requested from a peer come from that peer's mempool."""

    def __init__(self, net: MemoryNetwork, node_id: int, key: crypto.SigningKey, path: Path) -> None:
        self.net = net
        self.genesis: Genesis = net.genesis
        self.key = key
        self.node_id = node_id
        self.ledger = Ledger(net.genesis, Store(path))
        self.mempool = Mempool(10_000)
        self.counters = NodeCounters()
        self.committed: list[CommittedBlock] = []
        self.catch_up_requests: list[int] = []
        self.item_requests: list[tuple[int, list[bytes]]] = []

    def broadcast(self, message: Message) -> None:
        for peer in self.net.hosts:
            if peer != self.node_id:
                self.net.send(self.node_id, peer, message)

    def send_to(self, node_id: int, message: Message) -> None:
        self.net.send(self.node_id, node_id, message)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        self.counters.signature_verifications += 1
        return crypto.verify(public_key, message, signature)

    def block_committed(self, record: CommittedBlock, view: int, round_s: float) -> None:
        self.committed.append(record)
        self.mempool.remove([*record.block.proof_ids, *record.block.transfer_ids])

    def request_items(self, node_id: int, kind: ItemKind, ids: list[bytes]) -> None:
        self.item_requests.append((node_id, ids))
        peer = self.net.hosts[node_id].mempool
        found = [item for item in (peer.get(i) for i in ids) if item is not None]
        for item in found:
            self.mempool.add(item)
        if found:
            self.net.engines[self.node_id].work_arrived()

    def request_catch_up(self, node_id: int) -> None:
        self.catch_up_requests.append(node_id)


class MemoryNetwork:
    """n validators whose messages the test delivers; ``faulty`` maps a node to a Byzantine kind."""

    def __init__(self, root: Path, n: int = 4, faulty: dict[int, str] | None = None, params: ChainParams = PARAMS) -> None:
        self.genesis, self.keys = make_genesis(n, seed="memory-network", params=params)
        self.clock = ManualClock()
        self.queue: list[Envelope] = []
        self.sent: list[Envelope] = []
        self.hosts: dict[int, MemoryHost] = {}
        self.engines: dict[int, PbftEngine] = {}
        for node in range(n):
            self.hosts[node] = MemoryHost(self, node, self.keys[node], root / f"node-{node}.sqlite")
        for node in range(n):
            kind = (faulty or {}).get(node)
            engine_class = ENGINES[ByzantineBehaviour(kind) if kind else None]
            self.engines[node] = engine_class(self.hosts[node], self.clock)

    def send(self, sender: int, receiver: int, message: Message) -> None:
        envelope = Envelope(sender, receiver, message)
        self.queue.append(envelope)
        self.sent.append(envelope)

    def leader(self, view: int, height: int = 1) -> int:
        return self.genesis.leader_for_view(view + height)

    def give_items(self, count: int, nodes: list[int] | None = None) -> list[PoolItem]:
        """The same ``count`` fresh proofs in the mempools of ``nodes`` (all by default)."""
        bits = self.genesis.params.min_work_bits
        items = []
        for index in range(count):
            proof = Proof.create(OWNER, self.genesis.chain_id, index.to_bytes(8, "big"), bits, 7, time.time_ns())
            items.append(PoolItem(proof.id, ItemKind.PROOF, proof, proof.encode()))
        for node in self.hosts if nodes is None else nodes:
            for item in items:
                self.hosts[node].mempool.add(item)
        return items

    def start(self) -> None:
        for engine in self.engines.values():
            engine.start()

    def deliver(self, keep: Callable[[Envelope], bool] = lambda e: True, hold: Callable[[Envelope], bool] = lambda e: False) -> int:
        """Deliver queued messages in order until none is left; ``keep`` False drops one, ``hold`` True leaves it queued."""
        delivered = 0
        while True:
            ready = [e for e in self.queue if not hold(e)]
            if not ready:
                return delivered
            envelope = ready[0]
            self.queue.remove(envelope)
            if keep(envelope):
                self._receive(envelope)
                delivered += 1

    def _receive(self, envelope: Envelope) -> None:
        message = envelope.message
        if isinstance(message, BlockResponse):  # catch-up: what popbench.pop.catchup does with it
            host, engine = self.hosts[envelope.receiver], self.engines[envelope.receiver]
            for data in message.blocks:
                try:
                    record = host.ledger.apply_committed(data)
                except (ConsensusError, SyncError):
                    return  # already applied (another peer's answer came first), as catch-up drops it
                host.block_committed(record, record.certificate.view, 0.0)
                engine.caught_up(record.certificate.view)
            return
        self.engines[envelope.receiver].on_message(envelope.sender, message)

    def heights(self) -> dict[int, int]:
        return {node: host.ledger.height for node, host in self.hosts.items()}

    def committed_hashes(self) -> dict[int, dict[int, bytes]]:
        return {node: {r.block.height: r.block.hash for r in host.committed} for node, host in self.hosts.items()}


def leader_of(view: int, height: int = 1, n: int = 4) -> int:
    """Who leads (view, height) on the memory network's genesis, known before the network is built."""
    genesis, _ = make_genesis(n, seed="memory-network", params=PARAMS)
    return genesis.leader_for_view(view + height)
