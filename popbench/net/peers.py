"""The peer manager: accept and dial connections, keep one link per peer, broadcast to validators.

Link rule: a validator dials peers with a *lower* node id and accepts the others, so a full mesh has
exactly one connection per pair. If two links to one peer still appear, both sides keep the same one
(docs/protocol.md, "Links between nodes"): of links dialled in opposite directions, the one the lower
node id dialled; of two dialled by the same side, the newer (so a restarted peer's fresh link replaces
a stale one). A dial task keeps one address linked and stands by while its validator has a link.

Slots: only a peer that proved, at the handshake, the key the genesis gives a validator id holds that
id's slot (``links``). Every other peer (a follower, whatever node id it claims) is keyed by the public
key it proved (``followers``), so it can neither replace a validator's link nor plant an address for one.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable

from popbench.faults import LinkFaults
from popbench.net import handshake
from popbench.net.connection import Connection, ConnectionHost
from popbench.wire import DisconnectReason, Message, Role, encode_frame

DIAL_TIMEOUT_S = 5.0
LISTEN_BACKLOG = 1024
REDIAL_MIN_S = 0.05
REDIAL_MAX_S = 2.0

Address = tuple[str, int]


class PeerManager:
    """Owns every connection of one node and the tasks that keep its outbound links up."""

    def __init__(self, host: ConnectionHost, delay_for: Callable[[int], float] | None = None,
                 faults: LinkFaults | None = None) -> None:  # fmt: skip
        self.host = host
        self.faults = faults  # partitions and shaped links the harness asked this node to emulate (popbench/faults.py)
        self.links: dict[int, Connection] = {}  # links to genesis validators, by the id their key proved
        self.followers: dict[bytes, Connection] = {}  # links to followers, by the public key they proved
        self.clients: set[Connection] = set()  # drivers, monitors, joiners in the handshake's CLIENT role
        self.addresses: dict[int, Address] = {}  # validators' listen addresses, from HELLO or configuration
        self._delay_for = delay_for or (lambda node_id: 0.0)
        self._dialing: dict[Address, asyncio.Task[None]] = {}
        self._link_closed: dict[int, asyncio.Event] = {}
        self._server: asyncio.Server | None = None
        self._all: set[Connection] = set()
        self._closing = False

    # -- listening and dialling --------------------------------------------------------------------
    async def listen(self, sock: socket.socket) -> None:
        """Serve on an already bound socket (the supervisor binds it before forking)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._track(Connection(self.host, False, faults=self.faults)), sock=sock)

    def dial(self, address: Address, node_id: int | None = None) -> None:
        """Keep a link to the node at ``address`` up: dial now, and again with backoff whenever it drops.

        ``node_id`` may be unknown (``popbench node --peer HOST:PORT``): the handshake tells it.
        """
        if node_id is not None:
            self.addresses[node_id] = address
        if address in self._dialing or self._closing:
            return
        self._dialing[address] = asyncio.get_running_loop().create_task(self._keep_dialled(address, node_id))

    async def _keep_dialled(self, address: Address, node_id: int | None) -> None:
        """While this node runs: dial ``address`` unless a link to its validator is up, then wait for that
        link (whoever dialled it) to close. Only the dialling side redials; a refused or failed dial backs off."""
        backoff = REDIAL_MIN_S
        while not self._closing:
            link = self.links.get(node_id) if node_id is not None else None
            if link is not None:
                await self._closed_event(link.peer_id).wait()
                continue
            conn, proven_id = await self._dial_once(address, node_id)
            if proven_id is not None:
                node_id = proven_id
            if conn is not None:
                backoff = REDIAL_MIN_S
                continue
            await asyncio.sleep(backoff)  # redial backoff after a refused or failed dial, not a sync wait
            backoff = min(backoff * 2, REDIAL_MAX_S)

    async def dial_once(self, address: Address, node_id: int) -> Connection | None:
        """One dial to validator ``node_id``, not kept up (popbench/net/ondemand.py): the link, or None."""
        if self._closing:
            return None
        self.addresses.setdefault(node_id, address)
        conn, _ = await self._dial_once(address, node_id)
        return conn

    async def _dial_once(self, address: Address, node_id: int | None) -> tuple[Connection | None, int | None]:
        """One dial: the established connection (or None) and the validator id the peer proved, if it did.

        A dial refused as DUPLICATE_PEER still proved who answers at ``address``. Learning the id there
        keeps a ``--peer`` address (dialled before its id is known) from being redialled every
        REDIAL_MAX_S for as long as the link the other side dialled is up, each time refused again.
        """
        delay_s = self._delay_for(node_id) if node_id is not None else 0.0
        try:
            _, conn = await asyncio.wait_for(
                self._connect(address, lambda: self._track(Connection(self.host, True, delay_s, self.faults))),
                DIAL_TIMEOUT_S,
            )
        except (OSError, ConnectionError, TimeoutError):
            return None, None
        try:
            await asyncio.wait_for(conn.established, DIAL_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            conn.close()  # a handshake that completes after the timeout would make a link nobody tracks
            return None, self._proven_id(conn)
        return conn, self._proven_id(conn)

    async def _connect(self, address: Address, factory: Callable[[], Connection]) -> tuple[asyncio.BaseTransport, Connection]:
        """A TCP connection to ``address``, from this node's own loopback address where it has one."""
        loop = asyncio.get_running_loop()
        source = dial_source(self.host.identity.listen_host, address)
        if source is None:
            return await loop.create_connection(factory, *address)
        sock = source_socket(source)
        try:
            await connect_numeric(sock, address)
            return await loop.create_connection(factory, sock=sock)
        except BaseException:  # refused, timed out or cancelled: the socket is still ours to close
            sock.close()
            raise

    def _proven_id(self, conn: Connection) -> int | None:
        """The genesis validator id ``conn``'s peer proved (its HELLO_ACK verified here), else None."""
        if not conn.peer_proven or not self.is_genesis_validator(conn):
            return None
        return conn.peer_id

    def _closed_event(self, node_id: int) -> asyncio.Event:
        event = self._link_closed.get(node_id)
        if event is None or event.is_set():
            event = self._link_closed[node_id] = asyncio.Event()
        return event

    def _track(self, conn: Connection) -> Connection:
        self._all.add(conn)
        return conn

    # -- registry (called by the node's ConnectionHost methods) ------------------------------------
    def register(self, conn: Connection) -> bool:
        """Record an established connection; False when it duplicates a link that wins the tie-break."""
        assert conn.peer is not None
        if conn.peer.role not in (Role.VALIDATOR, Role.FOLLOWER):
            self.clients.add(conn)
            return True
        if self.is_genesis_validator(conn):
            return self._register_validator(conn)
        self._register_follower(conn)
        return True

    def is_genesis_validator(self, conn: Connection) -> bool:
        """The peer says VALIDATOR and proved the key the genesis gives its node id (checked at HELLO and ACK)."""
        peer = conn.peer
        validators = self.host.identity.validators
        if peer is None or peer.role != Role.VALIDATOR or validators is None:
            return False
        return handshake.is_genesis_validator(peer, validators)

    def _register_validator(self, conn: Connection) -> bool:
        assert conn.peer is not None
        peer_id = conn.peer.node_id
        existing = self.links.get(peer_id)
        if existing is not None and existing.is_open and not self._prefer(conn, existing):
            return False
        self.links[peer_id] = conn
        if existing is not None and existing.is_open:
            detail = (
                "replaced by a newer link"
                if self._dialler(existing) == self._dialler(conn)
                else "replaced by the link the lower id dialled"
            )
            existing.disconnect(DisconnectReason.DUPLICATE_PEER, detail)
        if conn.peer.listen_port:
            self.addresses.setdefault(peer_id, (conn.peer.listen_host, conn.peer.listen_port))
        conn.delay_s = self._delay_for(peer_id)
        self._closed_event(peer_id)
        return True

    def _register_follower(self, conn: Connection) -> None:
        """A follower's slot is its proven key: only the holder of that key can replace its link."""
        assert conn.peer is not None
        existing = self.followers.get(conn.peer.pubkey)
        self.followers[conn.peer.pubkey] = conn
        if existing is not None and existing is not conn and existing.is_open:
            existing.disconnect(DisconnectReason.DUPLICATE_PEER, "replaced by a newer link of the same key")

    def _prefer(self, new: Connection, old: Connection) -> bool:
        """Whether ``new`` replaces ``old``: dialled by a lower id, or by the same side (the newer wins)."""
        return self._dialler(new) <= self._dialler(old)

    def _dialler(self, conn: Connection) -> int:
        return self.host.identity.node_id if conn.outbound else conn.peer_id

    def unregister(self, conn: Connection) -> None:
        self._all.discard(conn)
        self.clients.discard(conn)
        if conn.peer is not None and self.followers.get(conn.peer.pubkey) is conn:
            del self.followers[conn.peer.pubkey]
        peer_id = conn.peer_id
        if self.links.get(peer_id) is conn:
            del self.links[peer_id]
            event = self._link_closed.get(peer_id)
            if event is not None:
                event.set()

    # -- sending -------------------------------------------------------------------------------
    def broadcast(self, message: Message, to: Iterable[Connection] | None = None) -> None:
        """Encode once and send to every validator link (or to ``to``)."""
        frame = encode_frame(message)
        name = type(message).__name__
        for conn in self.validator_links() if to is None else to:
            conn.send_encoded(frame, name)

    def validator_links(self) -> list[Connection]:
        return list(self.links.values())

    def peer_links(self) -> list[Connection]:
        """Validator and follower links: every node-to-node connection (clients excluded)."""
        return [*self.links.values(), *self.followers.values()]

    def faults_changed(self) -> None:
        """The node's emulated faults changed: links a healed partition had cut off send and read what they held."""
        for conn in list(self._all):
            conn.faults_changed()

    # -- shutdown ------------------------------------------------------------------------------
    async def close(self) -> None:
        self._closing = True
        for task in self._dialing.values():
            task.cancel()
        for conn in list(self._all):
            conn.disconnect(DisconnectReason.SHUTDOWN)
        if self._server is not None:
            self._server.close()
            await asyncio.gather(*self._dialing.values(), return_exceptions=True)


def dial_source(own_host: str, address: Address) -> Address | None:
    """Where to dial ``address`` from: this node's own listen host (any port) when both are loopback
    addresses, else wherever the kernel routes from (None).

    With one loopback address per node (the harness's ``per-node`` plan), a dial from the default source
    127.0.0.1 would make every node look alike to the kernel; from its own address, an iptables or tc rule
    on a (source, destination) pair touches exactly that pair of nodes (docs/faults.md)."""
    return (own_host, 0) if _is_ipv4_loopback(own_host) and _is_ipv4_loopback(address[0]) else None


async def connect_numeric(sock: socket.socket, address: Address) -> None:
    """Connect a non-blocking socket to a numeric ``address`` on the running loop, with no name lookup.

    uvloop's ``sock_connect`` resolves even a numeric address through getaddrinfo on libuv's thread pool,
    which starts 4 threads in the node at its first dial; a node stays single-threaded (docs/supervisor.md,
    "Host checks"), so the connect is done here: ``connect_ex``, then wait until the socket is writable and
    read its error."""
    loop = asyncio.get_running_loop()
    code = sock.connect_ex(address)
    if code not in (0, errno.EINPROGRESS):
        raise OSError(code, f"connect to {address[0]}:{address[1]}: {os.strerror(code)}")
    if code == errno.EINPROGRESS:
        writable: asyncio.Future[None] = loop.create_future()
        loop.add_writer(sock.fileno(), _resolve, writable)
        try:
            await writable
        finally:
            loop.remove_writer(sock.fileno())
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, f"connect to {address[0]}:{address[1]}: {os.strerror(code)}")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def source_socket(source: Address) -> socket.socket:
    """A non-blocking TCP socket bound to ``source``'s host, its port left to connect().

    IP_BIND_ADDRESS_NO_PORT (Linux) defers the port to connect(), which needs only the whole 4-tuple
    to be unique, as an unbound dial does; a plain bind(host, 0) would reserve a port per connection
    and run out of ephemeral ports (about 28,000) on a large shared-address mesh."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if hasattr(socket, "IP_BIND_ADDRESS_NO_PORT"):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind(source)
    except OSError:
        sock.close()
        raise
    return sock


def _is_ipv4_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:  # a name, IPv6, or empty (not yet listening): let the kernel choose
        return False


def bind_listener(address: Address) -> socket.socket:
    """A listening TCP socket on ``address`` (port 0: the kernel picks); the harness binds before forking."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(LISTEN_BACKLOG)
    return sock
