"""Who may hold a validator's link slot, over real loopback TCP with real PeerManagers.

Only a peer that proved the genesis key of a validator id holds that id's slot; a follower claiming the
same id (any key, any listen address) is kept apart, keyed by its own proven key.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.net.connection import Connection, Identity
from popbench.net.discovery import PeerDiscovery
from popbench.net.peers import PeerManager, bind_listener
from popbench.wire import Message, Peers, PeersRequest, Role

pytestmark = pytest.mark.timeout(60)
CHAIN = bytes(range(32))
KEYS = [crypto.derive_key("peer-slots", i) for i in range(2)]
VALIDATORS = {i: key.public_key for i, key in enumerate(KEYS)}
DEADLINE_S = 20.0


class PeerHost:
    """A ConnectionHost that keeps its links in a real PeerManager, as both node kinds do."""

    def __init__(self, node_id: int, role: Role, key: crypto.SigningKey, listen_port: int = 0) -> None:
        self.identity = Identity(CHAIN, node_id, role, key, VALIDATORS, "127.0.0.1", listen_port)
        self.counters = NodeCounters()
        self.peers = PeerManager(self)
        self.changed = asyncio.Event()

    def connection_established(self, conn: Connection) -> bool:
        registered = self.peers.register(conn)
        self.changed.set()
        return registered

    def message_from(self, conn: Connection, message: Message) -> None:
        pass

    def connection_closed(self, conn: Connection) -> None:
        self.peers.unregister(conn)
        self.changed.set()

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {what}: links {self.peers.links}, followers {self.peers.followers}"
            self.changed.clear()
            with contextlib.suppress(TimeoutError):  # the loop re-checks and reports the deadline
                await asyncio.wait_for(self.changed.wait(), remaining)


async def connect_follower(port: int, claimed_id: int, key: crypto.SigningKey, listen_port: int) -> tuple[PeerHost, Connection]:
    """A follower with its own key that claims ``claimed_id`` and a listen address in its HELLO."""
    host = PeerHost(claimed_id, Role.FOLLOWER, key, listen_port)
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(host, outbound=True), "127.0.0.1", port)
    await asyncio.wait_for(conn.established, DEADLINE_S)
    return host, conn


async def scenario() -> None:
    node1 = PeerHost(1, Role.VALIDATOR, KEYS[1])
    sock = bind_listener(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await node1.peers.listen(sock)
    strangers = [crypto.derive_key("peer-slots-stranger", i) for i in range(2)]
    # An impostor arrives first, claiming validator 0's id and an address that would divert 0's traffic.
    _, first_impostor = await connect_follower(port, 0, strangers[0], 9)
    node0 = PeerHost(0, Role.VALIDATOR, KEYS[0], 7000)
    node0.peers.dial(("127.0.0.1", port), 1)
    await node1.wait_until(lambda: 0 in node1.peers.links, "validator 0's link at node 1")
    real_link = node1.peers.links[0]
    assert real_link.peer is not None and real_link.peer.pubkey == KEYS[0].public_key
    # Another impostor arrives after the real link is up.
    _, second_impostor = await connect_follower(port, 0, strangers[1], 9)
    await node1.wait_until(lambda: len(node1.peers.followers) == 2, "both followers registered")
    try:
        assert node1.peers.links[0] is real_link and real_link.is_open
        assert node1.peers.validator_links() == [real_link]
        assert node1.peers.addresses[0] == ("127.0.0.1", 7000)
        assert set(node1.peers.followers) == {strangers[0].public_key, strangers[1].public_key}
        assert not any(conn.is_validator_link for conn in node1.peers.followers.values())
        assert first_impostor.is_open and second_impostor.is_open
        assert not node0.counters.disconnects_received, node0.counters.disconnects_received
        assert 1 in node0.peers.links and node0.peers.links[1].is_open
    finally:
        await node0.peers.close()
        await node1.peers.close()
        first_impostor.close()
        second_impostor.close()


def test_a_follower_claiming_a_validators_id_cannot_displace_its_link() -> None:
    asyncio.run(scenario())


async def reconnecting_follower() -> None:
    node1 = PeerHost(1, Role.VALIDATOR, KEYS[1])
    sock = bind_listener(("127.0.0.1", 0))
    await node1.peers.listen(sock)
    port = sock.getsockname()[1]
    key = crypto.derive_key("peer-slots-follower", 0)
    follower, old = await connect_follower(port, 100, key, 0)
    _, new = await connect_follower(port, 100, key, 0)
    await follower.wait_until(lambda: not old.is_open, "the old link closed by the node")
    try:
        server_side = node1.peers.followers[key.public_key]
        assert server_side.is_open and new.is_open
        assert follower.counters.disconnects_received["DUPLICATE_PEER"] == 1
    finally:
        await node1.peers.close()
        new.close()


def test_a_follower_that_reconnects_with_its_key_replaces_its_own_link() -> None:
    asyncio.run(reconnecting_follower())


async def dialling_each_other_by_address() -> None:
    """Both validators were given the other's address only (``popbench node --peer``): one link stays,
    the one node 0 dialled, and node 1, whose dial of node 0 is refused as a duplicate, learns from that
    handshake who answers there and stands by instead of redialling every REDIAL_MAX_S."""
    hosts = []
    for node_id in range(2):
        sock = bind_listener(("127.0.0.1", 0))
        host = PeerHost(node_id, Role.VALIDATOR, KEYS[node_id], sock.getsockname()[1])
        await host.peers.listen(sock)
        hosts.append(host)
    node0, node1 = hosts
    node0.peers.dial(("127.0.0.1", node1.identity.listen_port))
    node1.peers.dial(("127.0.0.1", node0.identity.listen_port))
    try:
        await node1.wait_until(lambda: 0 in node1.peers.links and not node1.peers.links[0].outbound, "node 0's link at node 1")
        await node0.wait_until(lambda: 1 in node0.peers.links and node0.peers.links[1].outbound, "node 0's link to node 1")
        await asyncio.sleep(1.5)  # long enough for several redials at the backoff of 0.05 s doubling
        for host in hosts:
            assert host.counters.frames_out["Hello"] == 2, f"node {host.identity.node_id} redialled: {host.counters.frames_out}"
            assert len(host.peers.links) == 1 and next(iter(host.peers.links.values())).is_open
    finally:
        for host in hosts:
            await host.peers.close()


def test_two_validators_given_each_others_address_keep_one_link_and_stop_dialling() -> None:
    asyncio.run(dialling_each_other_by_address())


async def peers_answer_with_an_unlisted_address() -> None:
    """PEERS carries IPv4 addresses only: a validator that announced ``localhost`` in its HELLO is left out
    of the answer, which still lists the node itself and every other address (it used to raise)."""
    node1 = PeerHost(1, Role.VALIDATOR, KEYS[1], 7101)
    node1.peers.addresses.update({0: ("localhost", 7100), 2: ("127.0.0.1", 7102)})
    sent: list[Message] = []

    class Link:
        def send(self, message: Message) -> None:
            sent.append(message)

    host = SimpleNamespace(identity=node1.identity, peers=node1.peers, validator_ids=frozenset(VALIDATORS))
    PeerDiscovery(host).on_peers_request(Link(), PeersRequest())  # type: ignore[arg-type]
    (answer,) = sent
    assert isinstance(answer, Peers)
    listed = [(e.node_id, e.role, socket.inet_ntoa(e.host), e.port) for e in answer.peers]
    assert listed == [(1, int(Role.VALIDATOR), "127.0.0.1", 7101), (2, int(Role.VALIDATOR), "127.0.0.1", 7102)]


def test_a_peers_answer_leaves_out_an_address_it_cannot_carry() -> None:
    asyncio.run(peers_answer_with_an_unlisted_address())
