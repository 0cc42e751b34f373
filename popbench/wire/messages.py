"""Every message popbench speaks: one class per message, a type constant, encode/decode, a type map.

Hot messages (votes, pings, submit results) are one precompiled ``struct`` layout each; variable ones use
:mod:`popbench.wire.codec`; the rare rich STATUS carries orjson. Decoding any malformed body raises
:class:`~popbench.errors.ProtocolError` and nothing else. The byte layouts are specified in
``docs/protocol.md``; keep the two in step.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from popbench.errors import ProtocolError
from popbench.wire.codec import HASH_BYTES, MAX_TEXT_BYTES, Reader, Writer
from popbench.wire.enums import DisconnectReason, ItemKind, RejectReason, Role, parse_enum

PROTOCOL_VERSION = 1
PUBKEY_BYTES = 33  # compressed secp256k1 point
SIGNATURE_BYTES = 64  # compact r || s, low-s
BLS_SIGNATURE_BYTES = 96  # compressed BLS12-381 G2 point: a vote share or an aggregate (popbench/bls.py)
NONCE_BYTES = 32
WORK_BYTES = 16  # cumulative proof-of-work as an unsigned 128-bit integer

Body = bytes | bytearray | memoryview


class Message:
    """Base of every message. Subclasses set ``TYPE`` and implement the two codec methods."""

    __slots__ = ()
    TYPE: ClassVar[int] = -1
    FIELDS: ClassVar[tuple[str, ...]] = ()  # every slot, inherited ones too (Pong declares none of its own)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.FIELDS = cls.FIELDS + tuple(cls.__dict__.get("__slots__", ()))

    def encode_body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, body: Body) -> Message:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(getattr(self, name) == getattr(other, name) for name in self.FIELDS)

    def __hash__(self) -> int:
        return hash((type(self), *(repr(getattr(self, name)) for name in self.FIELDS)))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({fields})"


class StructMessage(Message):
    """A message whose body is exactly one fixed ``struct`` layout, fields in ``__slots__`` order."""

    __slots__ = ()
    LAYOUT: ClassVar[struct.Struct]
    _fields: ClassVar[Callable[[Any], tuple[Any, ...]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = cls.__dict__.get("__slots__", ())
        if not names:  # a subclass that only changes TYPE keeps its parent's layout and getter
            return
        getter = operator.attrgetter(*names)
        fields = getter if len(names) > 1 else (lambda message: (getter(message),))
        cls._fields = staticmethod(fields)

    def encode_body(self) -> bytes:
        try:
            return self.LAYOUT.pack(*type(self)._fields(self))
        except struct.error as err:
            raise ProtocolError(f"{type(self).__name__}: {err}") from err

    @classmethod
    def decode_body(cls, body: Body) -> Message:
        if len(body) != cls.LAYOUT.size:
            raise ProtocolError(f"{cls.__name__} body must be {cls.LAYOUT.size} bytes, got {len(body)}")
        message = cls(*cls.LAYOUT.unpack(body))
        message.check()
        return message

    def check(self) -> None:
        """Validate decoded fields beyond their layout (enum ranges); raise ProtocolError."""


class EmptyMessage(Message):
    """A message with no body."""

    __slots__ = ()

    def encode_body(self) -> bytes:
        return b""

    @classmethod
    def decode_body(cls, body: Body) -> Message:
        if len(body):
            raise ProtocolError(f"{cls.__name__} has no body, got {len(body)} bytes")
        return cls()


# --- handshake and liveness ------------------------------------------------------------------------


class Hello(Message):
    """First frame on every connection, both directions."""

    TYPE = 1
    __slots__ = ("version", "chain_id", "node_id", "role", "pubkey", "nonce", "listen_port", "listen_host")
    _HEAD = struct.Struct(f">H{HASH_BYTES}sIB{PUBKEY_BYTES}s{NONCE_BYTES}sH")

    def __init__(
        self,
        version: int,
        chain_id: bytes,
        node_id: int,
        role: Role,
        pubkey: bytes,
        nonce: bytes,
        listen_port: int,
        listen_host: str,
    ) -> None:
        self.version = version
        self.chain_id = chain_id
        self.node_id = node_id
        self.role = role
        self.pubkey = pubkey
        self.nonce = nonce
        self.listen_port = listen_port
        self.listen_host = listen_host

    def encode_body(self) -> bytes:
        head = (self.version, self.chain_id, self.node_id, self.role, self.pubkey, self.nonce, self.listen_port)
        _check_lengths(self, chain_id=HASH_BYTES, pubkey=PUBKEY_BYTES, nonce=NONCE_BYTES)
        return Writer().pack(self._HEAD, *head).text(self.listen_host).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> Hello:
        reader = Reader(body)
        version, chain_id, node_id, role, pubkey, nonce, port = reader.unpack(cls._HEAD)
        host = reader.text()
        reader.finish()
        return cls(version, chain_id, node_id, parse_enum(Role, role), pubkey, nonce, port, host)  # type: ignore[arg-type]


class HelloAck(StructMessage):
    """Answer to HELLO: the sender's signature over the peer's nonce (see docs/protocol.md)."""

    TYPE = 2
    __slots__ = ("signature",)
    LAYOUT = struct.Struct(f">{SIGNATURE_BYTES}s")

    def __init__(self, signature: bytes) -> None:
        self.signature = signature


class Ping(StructMessage):
    TYPE = 3
    __slots__ = ("nonce", "sent_ns")
    LAYOUT = struct.Struct(">QQ")

    def __init__(self, nonce: int, sent_ns: int) -> None:
        self.nonce = nonce
        self.sent_ns = sent_ns


class Pong(Ping):
    TYPE = 4
    __slots__ = ()


class Disconnect(Message):
    """Last frame before a deliberate close: a reason byte and a short human-readable detail."""

    TYPE = 5
    __slots__ = ("reason", "detail")

    def __init__(self, reason: DisconnectReason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail

    def encode_body(self) -> bytes:
        # Cut by bytes, not characters: 200 non-ASCII characters would overflow the u8-length text field.
        detail = self.detail.encode("utf-8", "replace")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
        return Writer().u8(self.reason).text(detail).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> Disconnect:
        reader = Reader(body)
        reason = parse_enum(DisconnectReason, reader.u8())
        detail = reader.text()
        reader.finish()
        return cls(reason, detail)  # type: ignore[arg-type]


# --- clients: submissions and commit notifications -------------------------------------------------


class Submit(Message):
    """A client hands one encoded proof or transfer to a node."""

    TYPE = 10
    __slots__ = ("request_id", "kind", "item")
    _HEAD = struct.Struct(">IB")

    def __init__(self, request_id: int, kind: ItemKind, item: bytes) -> None:
        self.request_id = request_id
        self.kind = kind
        self.item = item

    def encode_body(self) -> bytes:
        return self._HEAD.pack(self.request_id, self.kind) + self.item

    @classmethod
    def decode_body(cls, body: Body) -> Submit:
        if len(body) < cls._HEAD.size:
            raise ProtocolError("Submit body too short")
        request_id, kind = cls._HEAD.unpack_from(body)
        return cls(request_id, parse_enum(ItemKind, kind), bytes(body[cls._HEAD.size :]))  # type: ignore[arg-type]


class SubmitResult(StructMessage):
    """The node's answer to SUBMIT: the item's id and ACCEPTED or the rejection reason."""

    TYPE = 11
    __slots__ = ("request_id", "item_id", "reason")
    LAYOUT = struct.Struct(f">I{HASH_BYTES}sB")

    def __init__(self, request_id: int, item_id: bytes, reason: RejectReason) -> None:
        self.request_id = request_id
        self.item_id = item_id
        self.reason = reason

    def check(self) -> None:
        self.reason = parse_enum(RejectReason, self.reason)  # type: ignore[assignment]


TOPIC_COMMITS = 1
TOPIC_BLOCKS = 2


class Subscribe(StructMessage):
    """Ask a node to push COMMITTED (topic bit 1) and/or POW_ANNOUNCE (bit 2) on this connection."""

    TYPE = 12
    __slots__ = ("topics",)
    LAYOUT = struct.Struct(">B")

    def __init__(self, topics: int) -> None:
        self.topics = topics


class Committed(Message):
    """Pushed to subscribers when a block commits: which proofs and transfers, at which height."""

    TYPE = 13
    __slots__ = ("height", "block_hash", "view", "committed_ns", "proof_ids", "transfer_ids")
    _HEAD = struct.Struct(f">Q{HASH_BYTES}sQQ")

    def __init__(
        self,
        height: int,
        block_hash: bytes,
        view: int,
        committed_ns: int,
        proof_ids: list[bytes],
        transfer_ids: list[bytes],
    ) -> None:
        self.height = height
        self.block_hash = block_hash
        self.view = view
        self.committed_ns = committed_ns
        self.proof_ids = proof_ids
        self.transfer_ids = transfer_ids

    def encode_body(self) -> bytes:
        writer = Writer().pack(self._HEAD, self.height, self.block_hash, self.view, self.committed_ns)
        return writer.hashes(self.proof_ids).hashes(self.transfer_ids).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> Committed:
        reader = Reader(body)
        height, block_hash, view, committed_ns = reader.unpack(cls._HEAD)
        proof_ids, transfer_ids = reader.hashes(), reader.hashes()
        reader.finish()
        return cls(height, block_hash, view, committed_ns, proof_ids, transfer_ids)


class Gossip(Message):
    """A batch of encoded proofs or transfers relayed between validators."""

    TYPE = 14
    __slots__ = ("kind", "items")

    def __init__(self, kind: ItemKind, items: list[bytes]) -> None:
        self.kind = kind
        self.items = items

    def encode_body(self) -> bytes:
        return Writer().u8(self.kind).blobs(self.items).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> Gossip:
        reader = Reader(body)
        kind = parse_enum(ItemKind, reader.u8())
        items = reader.blobs()
        reader.finish()
        return cls(kind, items)  # type: ignore[arg-type]


class ItemsRequest(Message):
    """Ask a peer for proofs or transfers by id (a proposal named items this node has not seen)."""

    TYPE = 15
    __slots__ = ("kind", "ids")

    def __init__(self, kind: ItemKind, ids: list[bytes]) -> None:
        self.kind = kind
        self.ids = ids

    def encode_body(self) -> bytes:
        return Writer().u8(self.kind).hashes(self.ids).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> ItemsRequest:
        reader = Reader(body)
        kind = parse_enum(ItemKind, reader.u8())
        ids = reader.hashes()
        reader.finish()
        return cls(kind, ids)  # type: ignore[arg-type]


# --- PBFT -----------------------------------------------------------------------------------------


class PrePrepare(Message):
    """The leader's proposal for ``height`` in ``view``: an encoded block (header + item ids)."""

    TYPE = 20
    __slots__ = ("view", "height", "block")
    _HEAD = struct.Struct(">QQ")

    def __init__(self, view: int, height: int, block: bytes) -> None:
        self.view = view
        self.height = height
        self.block = block

    def encode_body(self) -> bytes:
        return self._HEAD.pack(self.view, self.height) + self.block

    @classmethod
    def decode_body(cls, body: Body) -> PrePrepare:
        if len(body) < cls._HEAD.size:
            raise ProtocolError("PrePrepare body too short")
        view, height = cls._HEAD.unpack_from(body)
        return cls(view, height, bytes(body[cls._HEAD.size :]))


class Prepare(StructMessage):
    """A validator's signed vote that it accepted the proposal ``block_hash`` for (view, height)."""

    TYPE = 21
    __slots__ = ("view", "height", "block_hash", "voter", "signature")
    LAYOUT = struct.Struct(f">QQ{HASH_BYTES}sI{SIGNATURE_BYTES}s")

    def __init__(self, view: int, height: int, block_hash: bytes, voter: int, signature: bytes) -> None:
        self.view = view
        self.height = height
        self.block_hash = block_hash
        self.voter = voter
        self.signature = signature


class Commit(Prepare):
    """A validator's signed vote to commit; 2f+1 of them form a block's commit certificate."""

    TYPE = 22
    __slots__ = ()


class PrepareShare(Prepare):
    """The collector vote path's PREPARE: the same fields, signed with a 96-byte BLS share (popbench/bls.py)."""

    TYPE = 25
    __slots__ = ()
    LAYOUT = struct.Struct(f">QQ{HASH_BYTES}sI{BLS_SIGNATURE_BYTES}s")


class CommitShare(PrepareShare):
    """The collector vote path's COMMIT, a BLS share."""

    TYPE = 26
    __slots__ = ()


class PrepareAggregate(Message):
    """A collector's certificate that n - f validators PREPAREd ``block_hash`` in (view, height): the
    signer bitmap (genesis order) and the aggregate of their shares."""

    TYPE = 27
    __slots__ = ("view", "height", "block_hash", "signers", "aggregate")
    _HEAD = struct.Struct(f">QQ{HASH_BYTES}s")

    def __init__(self, view: int, height: int, block_hash: bytes, signers: bytes, aggregate: bytes) -> None:
        self.view = view
        self.height = height
        self.block_hash = block_hash
        self.signers = signers
        self.aggregate = aggregate

    def encode_body(self) -> bytes:
        writer = Writer().pack(self._HEAD, self.view, self.height, self.block_hash).blob(self.signers)
        return writer.fixed(self.aggregate, BLS_SIGNATURE_BYTES).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> PrepareAggregate:
        reader = Reader(body)
        view, height, block_hash = reader.unpack(cls._HEAD)
        signers, aggregate = reader.blob(), reader.fixed(BLS_SIGNATURE_BYTES)
        reader.finish()
        return cls(view, height, block_hash, signers, aggregate)


class CommitAggregate(PrepareAggregate):
    """A collector's COMMIT certificate: with it a replica commits the block (it is the stored certificate)."""

    TYPE = 28
    __slots__ = ()


class Relayed(Message):
    """A consensus message flooded over the bounded mesh (docs/protocol.md, section 15): ``origin``'s
    ECDSA signature over the inner message stands in for the authenticated link it did not come over.

    ``inner_type`` and ``inner`` are the inner message's type and body, exactly as its own frame carries
    them; which types may travel this way is the receiver's rule, not the codec's.
    """

    TYPE = 29
    __slots__ = ("origin", "signature", "inner_type", "inner")
    _HEAD = struct.Struct(f">I{SIGNATURE_BYTES}sB")

    def __init__(self, origin: int, signature: bytes, inner_type: int, inner: bytes) -> None:
        self.origin = origin
        self.signature = signature
        self.inner_type = inner_type
        self.inner = inner

    def encode_body(self) -> bytes:
        return self._HEAD.pack(self.origin, self.signature, self.inner_type) + self.inner

    @classmethod
    def decode_body(cls, body: Body) -> Relayed:
        if len(body) < cls._HEAD.size:
            raise ProtocolError(f"Relayed body must be at least {cls._HEAD.size} bytes, got {len(body)}")
        origin, signature, inner_type = cls._HEAD.unpack_from(body)
        return cls(origin, signature, inner_type, bytes(body[cls._HEAD.size :]))


class Routed(Message):
    """A consensus message for one validator, passed hop by hop over the bounded mesh (docs/protocol.md,
    section 15.3): ``origin``'s ECDSA signature over the destination and the inner message stands in for
    the authenticated link it did not come over. Relays forward it unchanged; only ``destination`` checks it.
    """

    TYPE = 38
    __slots__ = ("destination", "origin", "signature", "inner_type", "inner")
    _HEAD = struct.Struct(f">II{SIGNATURE_BYTES}sB")

    def __init__(self, destination: int, origin: int, signature: bytes, inner_type: int, inner: bytes) -> None:
        self.destination = destination
        self.origin = origin
        self.signature = signature
        self.inner_type = inner_type
        self.inner = inner

    def encode_body(self) -> bytes:
        return self._HEAD.pack(self.destination, self.origin, self.signature, self.inner_type) + self.inner

    @classmethod
    def decode_body(cls, body: Body) -> Routed:
        if len(body) < cls._HEAD.size:
            raise ProtocolError(f"Routed body must be at least {cls._HEAD.size} bytes, got {len(body)}")
        destination, origin, signature, inner_type = cls._HEAD.unpack_from(body)
        return cls(destination, origin, signature, inner_type, bytes(body[cls._HEAD.size :]))


class ViewChange(Message):
    """A validator gives up on the current view and carries what it prepared into ``new_view``.

    ``prepared_block`` is empty when the sender prepared nothing at ``height``; otherwise
    ``prepared_votes`` is its lock's certificate: on the all-to-all path the concatenation of (u32
    voter, 64-byte signature) PREPARE votes, on the collector path an encoded PREPARE
    ``AggregateCertificate`` (popbench/model/block.py). Which one is the chain's choice, so the
    certificate is parsed where it is checked (a malformed one counts as no lock), not here.
    """

    TYPE = 23
    __slots__ = ("new_view", "height", "voter", "prepared_view", "prepared_block", "prepared_votes", "signature")
    _HEAD = struct.Struct(">QQIQ")

    def __init__(
        self,
        new_view: int,
        height: int,
        voter: int,
        prepared_view: int,
        prepared_block: bytes,
        prepared_votes: bytes,
        signature: bytes,
    ) -> None:
        self.new_view = new_view
        self.height = height
        self.voter = voter
        self.prepared_view = prepared_view
        self.prepared_block = prepared_block
        self.prepared_votes = prepared_votes
        self.signature = signature

    def encode_body(self) -> bytes:
        writer = Writer().pack(self._HEAD, self.new_view, self.height, self.voter, self.prepared_view)
        writer.blob(self.prepared_block).blob(self.prepared_votes)
        return writer.fixed(self.signature, SIGNATURE_BYTES).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> ViewChange:
        reader = Reader(body)
        new_view, height, voter, prepared_view = reader.unpack(cls._HEAD)
        block, votes = reader.blob(), reader.blob()
        signature = reader.fixed(SIGNATURE_BYTES)
        reader.finish()
        return cls(new_view, height, voter, prepared_view, block, votes, signature)


class NewView(Message):
    """The new leader's proof that 2f+1 validators moved to ``new_view``: their VIEW_CHANGE bodies."""

    TYPE = 24
    __slots__ = ("new_view", "height", "view_changes")
    _HEAD = struct.Struct(">QQ")

    def __init__(self, new_view: int, height: int, view_changes: list[bytes]) -> None:
        self.new_view = new_view
        self.height = height
        self.view_changes = view_changes

    def encode_body(self) -> bytes:
        return Writer().pack(self._HEAD, self.new_view, self.height).blobs(self.view_changes).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> NewView:
        reader = Reader(body)
        new_view, height = reader.unpack(cls._HEAD)
        changes = reader.blobs()
        reader.finish()
        return cls(new_view, height, changes)


# --- catch-up, snapshots, status, peer exchange ----------------------------------------------------


class BlockRequest(StructMessage):
    """Ask for up to ``count`` committed blocks (with certificates) from ``from_height``."""

    TYPE = 30
    __slots__ = ("from_height", "count")
    LAYOUT = struct.Struct(">QI")

    def __init__(self, from_height: int, count: int) -> None:
        self.from_height = from_height
        self.count = count


class BlockResponse(Message):
    """Committed blocks, each an encoded block followed by its commit certificate."""

    TYPE = 31
    __slots__ = ("blocks",)

    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks

    def encode_body(self) -> bytes:
        return Writer().blobs(self.blocks).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> BlockResponse:
        reader = Reader(body)
        blocks = reader.blobs()
        reader.finish()
        return cls(blocks)


class SnapshotRequest(StructMessage):
    """Ask for chunk ``chunk`` of the state snapshot at ``height`` (0: the latest committed)."""

    TYPE = 32
    __slots__ = ("height", "chunk")
    LAYOUT = struct.Struct(">QI")

    def __init__(self, height: int, chunk: int) -> None:
        self.height = height
        self.chunk = chunk


class SnapshotChunk(Message):
    """One chunk of a state snapshot taken at a committed ``height``."""

    TYPE = 33
    __slots__ = ("height", "chunk_index", "chunk_count", "data")
    _HEAD = struct.Struct(">QII")

    def __init__(self, height: int, chunk_index: int, chunk_count: int, data: bytes) -> None:
        self.height = height
        self.chunk_index = chunk_index
        self.chunk_count = chunk_count
        self.data = data

    def encode_body(self) -> bytes:
        return Writer().pack(self._HEAD, self.height, self.chunk_index, self.chunk_count).blob(self.data).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> SnapshotChunk:
        reader = Reader(body)
        height, index, count = reader.unpack(cls._HEAD)
        data = reader.blob()
        reader.finish()
        if count == 0 or index >= count:
            raise ProtocolError(f"SnapshotChunk index {index} outside count {count}")
        return cls(height, index, count, data)


class StatusRequest(EmptyMessage):
    TYPE = 34
    __slots__ = ()


class Status(Message):
    """A node's status and counters as an orjson object (fields listed in docs/protocol.md)."""

    TYPE = 35
    __slots__ = ("payload",)

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def encode_body(self) -> bytes:
        return orjson.dumps(self.payload, option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def decode_body(cls, body: Body) -> Status:
        try:
            payload = orjson.loads(bytes(body))
        except orjson.JSONDecodeError as err:
            raise ProtocolError(f"Status body is not JSON: {err}") from err
        if not isinstance(payload, dict):
            raise ProtocolError("Status body must be a JSON object")
        return cls(payload)


class PeersRequest(EmptyMessage):
    TYPE = 36
    __slots__ = ()


class PeerAddress(StructMessage):
    """Not a frame of its own: one entry of PEERS (node id, role, IPv4 address, port)."""

    TYPE = -1
    __slots__ = ("node_id", "role", "host", "port")
    LAYOUT = struct.Struct(">IB4sH")

    def __init__(self, node_id: int, role: int, host: bytes, port: int) -> None:
        self.node_id = node_id
        self.role = role
        self.host = host
        self.port = port


class Peers(Message):
    """Peer exchange: the listen addresses a node knows."""

    TYPE = 37
    __slots__ = ("peers",)

    def __init__(self, peers: list[PeerAddress]) -> None:
        self.peers = peers

    def encode_body(self) -> bytes:
        writer = Writer().u32(len(self.peers))
        for peer in self.peers:
            writer.raw(peer.encode_body())
        return writer.getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> Peers:
        reader = Reader(body)
        count = reader.u32()
        if count * PeerAddress.LAYOUT.size != len(body) - 4:
            raise ProtocolError(f"Peers count {count} does not match the body")
        return cls([PeerAddress(*reader.unpack(PeerAddress.LAYOUT)) for _ in range(count)])


# --- proof-of-work (Antimony) -----------------------------------------------------------------------


class PowAnnounce(Message):
    """A node tells its peers it has a new block: its hash, height and the chain's cumulative work."""

    TYPE = 40
    __slots__ = ("block_hash", "height", "total_work")
    _LAYOUT = struct.Struct(f">{HASH_BYTES}sQ{WORK_BYTES}s")

    def __init__(self, block_hash: bytes, height: int, total_work: int) -> None:
        self.block_hash = block_hash
        self.height = height
        self.total_work = total_work

    def encode_body(self) -> bytes:
        _check_lengths(self, block_hash=HASH_BYTES)
        try:
            work = self.total_work.to_bytes(WORK_BYTES, "big")
        except OverflowError as err:
            raise ProtocolError("PowAnnounce total_work over 128 bits") from err
        return self._LAYOUT.pack(self.block_hash, self.height, work)

    @classmethod
    def decode_body(cls, body: Body) -> PowAnnounce:
        if len(body) != cls._LAYOUT.size:
            raise ProtocolError(f"PowAnnounce body must be {cls._LAYOUT.size} bytes")
        block_hash, height, work = cls._LAYOUT.unpack(body)
        return cls(block_hash, height, int.from_bytes(work, "big"))


class PowGetBlock(StructMessage):
    """Fetch one block by hash (after an announce of a block the receiver lacks)."""

    TYPE = 41
    __slots__ = ("block_hash",)
    LAYOUT = struct.Struct(f">{HASH_BYTES}s")

    def __init__(self, block_hash: bytes) -> None:
        self.block_hash = block_hash


class PowBlock(Message):
    """One encoded proof-of-work block."""

    TYPE = 42
    __slots__ = ("block",)

    def __init__(self, block: bytes) -> None:
        self.block = block

    def encode_body(self) -> bytes:
        return self.block

    @classmethod
    def decode_body(cls, body: Body) -> PowBlock:
        if not len(body):
            raise ProtocolError("PowBlock body is empty")
        return cls(bytes(body))


class PowGetChain(Message):
    """Catch-up: blocks after the first locator hash the receiver knows, at most ``max_count``."""

    TYPE = 43
    __slots__ = ("locator", "max_count")

    def __init__(self, locator: list[bytes], max_count: int) -> None:
        self.locator = locator
        self.max_count = max_count

    def encode_body(self) -> bytes:
        return Writer().hashes(self.locator).u32(self.max_count).getvalue()

    @classmethod
    def decode_body(cls, body: Body) -> PowGetChain:
        reader = Reader(body)
        locator = reader.hashes()
        max_count = reader.u32()
        reader.finish()
        return cls(locator, max_count)


class PowChain(BlockResponse):
    """Answer to POW_GET_CHAIN: encoded blocks in height order."""

    TYPE = 44
    __slots__ = ()


# --- the type map ---------------------------------------------------------------------------------

MESSAGE_TYPES: tuple[type[Message], ...] = (
    Hello, HelloAck, Ping, Pong, Disconnect,
    Submit, SubmitResult, Subscribe, Committed, Gossip, ItemsRequest,
    PrePrepare, Prepare, Commit, ViewChange, NewView, PrepareShare, CommitShare, PrepareAggregate, CommitAggregate,
    Relayed, Routed, BlockRequest, BlockResponse, SnapshotRequest, SnapshotChunk,
    StatusRequest, Status, PeersRequest, Peers,
    PowAnnounce, PowGetBlock, PowBlock, PowGetChain, PowChain,
)  # fmt: skip


# what only validators exchange: the PBFT messages of both vote paths (docs/protocol.md, sections 4 and 14)
CONSENSUS_MESSAGES: tuple[type[Message], ...] = (
    PrePrepare, Prepare, Commit, ViewChange, NewView, PrepareShare, CommitShare, PrepareAggregate, CommitAggregate,
)  # fmt: skip


def _build_decoders() -> tuple[Callable[[Body], Message] | None, ...]:
    table: list[Callable[[Body], Message] | None] = [None] * 256
    for cls in MESSAGE_TYPES:
        if table[cls.TYPE] is not None:
            raise RuntimeError(f"message type {cls.TYPE} defined twice")
        table[cls.TYPE] = cls.decode_body
    return tuple(table)


DECODERS = _build_decoders()


def decode_message(message_type: int, body: Body) -> Message:
    """Decode one body of ``message_type``; every failure is a ProtocolError."""
    decoder = DECODERS[message_type]
    if decoder is None:
        raise ProtocolError(f"unknown message type {message_type}")
    try:
        return decoder(body)
    except ProtocolError:
        raise
    except (struct.error, ValueError, TypeError, IndexError) as err:
        raise ProtocolError(f"malformed {message_type}: {err}") from err


def _check_lengths(message: Message, **sizes: int) -> None:
    for name, size in sizes.items():
        value = getattr(message, name)
        if len(value) != size:
            raise ProtocolError(f"{type(message).__name__}.{name} must be {size} bytes, got {len(value)}")
