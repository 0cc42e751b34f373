"""Flooding consensus messages over a bounded mesh: sign once at the origin, verify once, pass on once.

On a full mesh every validator hears a broadcast from its origin, over a link whose handshake proved
who is at the other end, and the engine trusts ``sender`` for that. On a bounded mesh (a random regular
graph of degree about 8) a broadcast reaches most validators through others, so the origin signs the
message it floods (RELAYED, docs/protocol.md section 15) and every receiver checks that signature before
it believes the origin, delivers the inner message to its engine as if the origin had sent it, and
forwards the envelope unchanged to its other mesh neighbours. A receiver keeps the digests of the
envelopes it has seen, so each one is verified, delivered and forwarded at most once per node.

Messages for one validator (shares to the view's collectors, items for a coming leader) travel hop by
hop instead (ROUTED, popbench/pop/routing.py); requests and their answers over a direct link opened on
demand (popbench/net/ondemand.py).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Mapping

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ProtocolError
from popbench.model.hashing import sha256
from popbench.wire import (
    CONSENSUS_MESSAGES,
    Gossip,
    Message,
    Relayed,
    decode_message,
    encode_frame,
)

RELAY_DOMAIN = b"popbench/relay/v1/"
SEEN_LIMIT = 1 << 16  # envelopes remembered; a height's floods are a few per validator, so this spans many heights
# every broadcast the engine makes, and a proposal's items flooded just before it (popbench/pop/forwarding.py)
FLOODED_TYPES = frozenset(kind.TYPE for kind in CONSENSUS_MESSAGES) | {Gossip.TYPE}
_ORIGIN = struct.Struct(">IB")


def relay_signed_bytes(chain_id: bytes, inner_type: int, inner: bytes) -> bytes:
    """What an origin signs for a RELAYED envelope: domain, chain, inner type and inner body."""
    return RELAY_DOMAIN + chain_id + bytes((inner_type,)) + inner


def envelope_digest(origin: int, inner_type: int, inner: bytes) -> bytes:
    """An envelope's identity for dedup: its origin and content, not its signature (ECDSA signatures
    of one message differ, so a Byzantine origin could otherwise flood one message many times)."""
    return sha256(_ORIGIN.pack(origin, inner_type) + inner)


class MeshFlood:
    """One node's side of the flood: wraps what it broadcasts, checks and dedups what reaches it."""

    def __init__(self, node_id: int, key: crypto.SigningKey, chain_id: bytes, public_keys: Mapping[int, bytes],
                 counters: NodeCounters) -> None:  # fmt: skip
        self.node_id = node_id
        self.key = key
        self.chain_id = chain_id
        self.public_keys = public_keys
        self.counters = counters
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def wrap(self, message: Message) -> bytes:
        """The RELAYED frame that floods ``message`` from this node (remembered, so its echoes stop here)."""
        inner = message.encode_body()
        self._remember(envelope_digest(self.node_id, message.TYPE, inner))
        signature = self.key.sign(relay_signed_bytes(self.chain_id, message.TYPE, inner))
        return encode_frame(Relayed(self.node_id, signature, message.TYPE, inner))

    def receive(self, envelope: Relayed) -> Message | None:
        """The inner message of a first-seen, correctly signed envelope; None for an echo (counted as a
        duplicate) or a bad one (counted as a protocol error: the forwarder may be honest, so the link stays)."""
        digest = envelope_digest(envelope.origin, envelope.inner_type, envelope.inner)
        if digest in self._seen:
            self.counters.relay_duplicates += 1
            return None
        key = self.public_keys.get(envelope.origin)
        if key is None or envelope.inner_type not in FLOODED_TYPES or envelope.origin == self.node_id:
            self.counters.protocol_errors += 1
            return None
        self.counters.signature_verifications += 1
        if not crypto.verify(key, relay_signed_bytes(self.chain_id, envelope.inner_type, envelope.inner), envelope.signature):
            self.counters.protocol_errors += 1
            return None
        try:
            inner = decode_message(envelope.inner_type, envelope.inner)
        except ProtocolError:
            self.counters.protocol_errors += 1  # signed garbage: its origin is at fault; remembered, not re-checked
            inner = None
        self._remember(digest)
        return inner

    def _remember(self, digest: bytes) -> None:
        self._seen[digest] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
