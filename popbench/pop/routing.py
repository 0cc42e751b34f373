"""Passing a consensus message to one validator over the bounded mesh, hop by hop (ROUTED).

A share for the view's collector used to open a direct link to it. At n = 1000 that is about a thousand
TCP connections and handshakes into one process at the start of every height (the collectors change
with the leader), while a thousand other processes share the same two cores: the phase outran its
collector timeout and the run committed nothing. A ROUTED envelope instead travels over links that are
already up. Every validator knows the mesh graph, so each hop sends the envelope to a neighbour that is
one hop nearer its destination: it arrives in at most the graph's diameter (5 at n = 1000, degree 8).

The origin signs the envelope once, and only the destination checks the signature: relays cannot be
believed about anything, so they need not check it. A Byzantine relay may drop or replay what it carries,
which costs the view its collector timeout or the engine a repeated share it ignores, never safety.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ProtocolError
from popbench.wire import CONSENSUS_MESSAGES, Gossip, Message, Routed, decode_message, encode_frame

ROUTE_DOMAIN = b"popbench/routed/v1/"
# what the engine sends to one validator, and items sent to the coming leaders (popbench/pop/forwarding.py)
ROUTED_TYPES = frozenset(kind.TYPE for kind in CONSENSUS_MESSAGES) | {Gossip.TYPE}
_DESTINATION = struct.Struct(">I")

Graph = Mapping[int, frozenset[int]]


def routed_signed_bytes(chain_id: bytes, destination: int, inner_type: int, inner: bytes) -> bytes:
    """What an origin signs for a ROUTED envelope: domain, chain, destination, inner type and inner body."""
    return ROUTE_DOMAIN + chain_id + _DESTINATION.pack(destination) + bytes((inner_type,)) + inner


def first_hops(graph: Graph, source: int) -> dict[int, int]:
    """For every node ``source`` can reach, the neighbour of ``source`` on a shortest path to it.

    One breadth-first search from ``source``. Each hop of a route is a neighbour one step nearer the
    destination in the graph's distance, so a route that every node takes from its own table still ends
    in as many hops as the distance: no loops while all nodes hold the same graph.
    """
    hops: dict[int, int] = {}
    queue: deque[int] = deque()
    for neighbour in sorted(graph.get(source, ())):
        if neighbour != source:
            hops[neighbour] = neighbour
            queue.append(neighbour)
    while queue:
        node = queue.popleft()
        for onward in graph.get(node, ()):
            if onward != source and onward not in hops:
                hops[onward] = hops[node]
                queue.append(onward)
    return hops


class MeshRoutes:
    """One node's side of routing: wraps what it sends to one validator, picks next hops, checks arrivals."""

    def __init__(self, node_id: int, key: crypto.SigningKey, chain_id: bytes, public_keys: Mapping[int, bytes],
                 graph: Graph, counters: NodeCounters) -> None:  # fmt: skip
        self.node_id = node_id
        self.key = key
        self.chain_id = chain_id
        self.public_keys = public_keys
        self.counters = counters
        # searched now, while the node starts, not at its first share; a full mesh has no graph and never routes
        self._hops = first_hops(graph, node_id) if graph else {}

    def wrap(self, destination: int, message: Message) -> bytes:
        """The ROUTED frame carrying ``message`` from this node to ``destination``."""
        inner = message.encode_body()
        signature = self.key.sign(routed_signed_bytes(self.chain_id, destination, message.TYPE, inner))
        return encode_frame(Routed(destination, self.node_id, signature, message.TYPE, inner))

    def next_hop(self, destination: int) -> int | None:
        """The neighbour to pass an envelope for ``destination`` to; None when the graph cannot reach it."""
        return self._hops.get(destination)

    def receive(self, envelope: Routed) -> Message | None:
        """The inner message of an envelope addressed to this node and signed by its origin; None (counted
        as a protocol error) for one that must not be believed. No dedup: a replayed share is the origin's
        own share again, which the engine's vote books already ignore."""
        key = self.public_keys.get(envelope.origin)
        if key is None or envelope.origin == self.node_id or envelope.inner_type not in ROUTED_TYPES:
            self.counters.protocol_errors += 1
            return None
        self.counters.signature_verifications += 1
        signed = routed_signed_bytes(self.chain_id, envelope.destination, envelope.inner_type, envelope.inner)
        if not crypto.verify(key, signed, envelope.signature):
            self.counters.protocol_errors += 1
            return None
        try:
            return decode_message(envelope.inner_type, envelope.inner)
        except ProtocolError:
            self.counters.protocol_errors += 1
            return None
