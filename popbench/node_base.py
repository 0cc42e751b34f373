"""What the PoP validator and the PoW node share: message dispatch, liveness, STATUS, readiness.

Each node builds its own handler table; this base dispatches by message type, refuses anything a node
has no handler for (DISCONNECT UNEXPECTED_MESSAGE), and reports "connected" once its intended links
are up, which the harness waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ConfigError
from popbench.faults import LEAK_TICK_S, NodeFaults, faults_path
from popbench.loop_exceptions import unexpected_exceptions
from popbench.net.connection import Connection, Identity
from popbench.net.discovery import PeerDiscovery
from popbench.net.peers import PeerManager, bind_listener
from popbench.node_config import NodeConfig, Reporter
from popbench.store import Store, node_database
from popbench.wire import DisconnectReason, Message, Ping, Pong, Status, StatusRequest
from popbench.wire.status import AnyStatus, CounterTotals, SharedStatusFields, status_to_json_object

Handler = Callable[[Connection, Any], None]


class NodeBase:
    config: NodeConfig
    identity: Identity
    peers: PeerManager
    discovery: PeerDiscovery
    report: Reporter
    store: Store
    last_commit_ns: int  # wall clock of the last commit (0: none yet), for STATUS
    _tasks: list[asyncio.Task[None]]
    _handlers: dict[type[Message], Handler]
    _connected_reported: bool = False
    _leak_timer: asyncio.TimerHandle | None = None

    def _init_common(self, config: NodeConfig, report: Reporter | None) -> None:
        """Identity, counters, database, peer manager and discovery: the same for both node kinds."""
        self.config = config
        self.genesis = config.genesis
        self.key = config.key
        self.node_id = config.node_id
        self.counters = NodeCounters()
        self.started_ns = time.time_ns()
        self.report = report or (lambda event, fields: None)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(node_database(config.data_dir, config.node_id))
        self.faults = NodeFaults()  # what the harness asks this node to emulate (popbench/faults.py)
        self.store.before_write = self.faults.disk.before_write
        with contextlib.suppress(ConfigError):  # a node restarted during a fault suffers it from the start
            self.faults.load(faults_path(config.data_dir, config.node_id))
        self.identity = Identity(self.genesis.chain_id, config.node_id, config.role, config.key,
                                 self.genesis.public_keys, *config.listen)  # fmt: skip
        self.validator_ids = frozenset(self.genesis.public_keys)
        self.peers = PeerManager(self, config.delay_to, self.faults.links)
        self.discovery = PeerDiscovery(self)

    async def _listen_and_dial(self) -> None:
        """Serve on the pre-bound (or a fresh) socket, say so, dial the given peers, start discovery."""
        sock = self.config.listen_socket or bind_listener(self.config.listen)
        self.identity.listen_host, self.identity.listen_port = sock.getsockname()[:2]
        self._follow_leak()  # a node restarted during a leak fault leaks again from its start
        await self.peers.listen(sock)
        self.report("listening", {"host": self.identity.listen_host, "port": self.identity.listen_port})
        for node_id, address in self.config.dial:
            self.peers.dial(address, node_id)
        if self.config.discover:
            self._tasks.append(asyncio.get_running_loop().create_task(self.discovery.run()))

    async def _close_network_and_store(self) -> None:
        if self._leak_timer is not None:
            self._leak_timer.cancel()
        for task in self._tasks:
            task.cancel()
        await self.peers.close()
        self.store.close()

    def status(self) -> AnyStatus:
        """This node's STATUS; building it reads the node and changes nothing."""
        raise NotImplementedError

    def reload_faults(self) -> None:
        """SIGUSR1: read the faults the harness wrote for this node (popbench/faults.py) and apply them."""
        try:
            self.faults.load(faults_path(self.config.data_dir, self.node_id))
        except ConfigError as err:
            self.report("faults-refused", {"error": str(err)})
            return
        self.peers.faults_changed()
        self.faults_changed()
        self._follow_leak()
        self.report("faults-loaded", self.faults.describe())

    def _follow_leak(self) -> None:
        """While the harness asks for a leak, top the held memory up every LEAK_TICK_S (popbench/faults.py)."""
        if self.faults.leak.active and self._leak_timer is None:
            self._leak_timer = asyncio.get_running_loop().call_later(LEAK_TICK_S, self._leak_tick)

    def _leak_tick(self) -> None:
        self._leak_timer = None
        self.faults.leak.top_up()
        self._follow_leak()

    def faults_changed(self) -> None:
        """A node kind applies what its own parts read (the PoP validator: its engine's clock, its ledger's)."""
        return None

    def shared_status_fields(self) -> SharedStatusFields:
        """The STATUS fields both node kinds fill the same way (popbench.wire.status.NodeStatus)."""
        return SharedStatusFields(
            node_id=self.node_id, role=self.config.role.name.lower(), pid=os.getpid(),
            uptime_s=(time.time_ns() - self.started_ns) / 1e9,
            peers=len(self.peers.links), peer_ids=sorted(self.peers.links), clients=len(self.peers.clients),
            crypto_backend=crypto.backend_name(),
            last_commit_ns=self.last_commit_ns,
            counters=msgspec.convert(self.counters.as_dict(), CounterTotals),
            unexpected_exceptions=unexpected_exceptions(),
        )  # fmt: skip

    def connection_established(self, conn: Connection) -> bool:
        """ConnectionHost: register an authenticated link; False refuses it (each node kind decides)."""
        raise NotImplementedError

    def connection_closed(self, conn: Connection) -> None:
        raise NotImplementedError

    def message_from(self, conn: Connection, message: Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            conn.disconnect(DisconnectReason.UNEXPECTED_MESSAGE, type(message).__name__)
            return
        handler(conn, message)

    def _on_status_request(self, conn: Connection, message: StatusRequest) -> None:
        conn.send(Status(status_to_json_object(self.status())))

    def _on_ping(self, conn: Connection, message: Ping) -> None:
        conn.send(Pong(message.nonce, message.sent_ns))

    def _intended_links(self) -> list[Connection]:
        """The links that count towards "connected" (a PoP node on a bounded mesh: its mesh links only)."""
        return self.peers.validator_links()

    def _links_changed(self) -> None:
        links = len(self._intended_links())
        expected = self.config.expected_links
        if expected is not None and links >= expected and not self._connected_reported:
            self._connected_reported = True
            self.report("connected", {"peers": links})
