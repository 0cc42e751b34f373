"""Peer exchange: answer PEERS_REQUEST, and dial the lower validators learned from PEERS.

Both the PoP validator and the PoW node use it. A node dials only lower ids, so a full mesh has one
link per pair; starting from a bootstrap node's address, a node reaches every validator this way.
"""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Protocol

from popbench.net.connection import Connection, Identity
from popbench.net.peers import PeerManager
from popbench.wire import Peers, PeersRequest, Role
from popbench.wire.messages import PeerAddress

DISCOVERY_INTERVAL_S = 0.5


class DiscoveryHost(Protocol):
    identity: Identity
    peers: PeerManager
    validator_ids: frozenset[int]


class PeerDiscovery:
    """Learn every validator's address by asking linked peers, and keep links to the lower ones."""

    def __init__(self, host: DiscoveryHost) -> None:
        self.host = host

    def on_peers_request(self, conn: Connection, message: PeersRequest) -> None:
        """Itself first, then every validator address it knows; one PEERS cannot carry (not a dotted-quad
        IPv4 text, as a peer may announce in its HELLO) is left out rather than failing the answer."""
        me = self.host.identity
        known = [(me.node_id, me.role, me.listen_host, me.listen_port)]
        known += [(node_id, Role.VALIDATOR, host, port) for node_id, (host, port) in self.host.peers.addresses.items()]
        entries = []
        for node_id, role, host, port in known:
            packed = ipv4_bytes(host)
            if packed is not None:
                entries.append(PeerAddress(node_id, int(role), packed, port))
        conn.send(Peers(entries))

    def on_peers(self, conn: Connection, message: Peers) -> None:
        me = self.host.identity.node_id
        for entry in message.peers:
            if entry.node_id < me and entry.node_id in self.host.validator_ids:
                self.host.peers.dial((socket.inet_ntoa(entry.host), entry.port), entry.node_id)

    async def run(self) -> None:
        """Ask two random linked peers for addresses until linked to every lower validator."""
        me = self.host.identity.node_id
        lower = sum(1 for node_id in self.host.validator_ids if node_id < me)
        while sum(1 for node_id in self.host.peers.links if node_id < me) < lower:
            links = list(self.host.peers.links.values())
            for link in random.sample(links, min(2, len(links))):
                link.send(PeersRequest())
            await asyncio.sleep(DISCOVERY_INTERVAL_S)  # a polling period of peer exchange, not a sync wait


def ipv4_bytes(host: str) -> bytes | None:
    """The 4 bytes of a dotted-quad IPv4 address, or None for anything else (a name, IPv6, "")."""
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None
