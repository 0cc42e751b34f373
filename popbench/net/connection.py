"""One authenticated TCP connection of a node: the handshake, then messages to the node.

The connection knows nothing of consensus. It runs the handshake of docs/protocol.md, counts what
crosses it, applies the emulated one-way WAN delay of its link, and hands every message of an
established connection to its :class:`ConnectionHost`.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from typing import Protocol, TypeVar

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ProtocolError
from popbench.faults import LinkFaults
from popbench.net import handshake
from popbench.wire import (
    PROTOCOL_VERSION,
    Disconnect,
    DisconnectReason,
    FramedProtocol,
    Hello,
    HelloAck,
    Message,
    Role,
    encode_frame,
)


class Identity:
    """Who this endpoint is on the network: what goes into its HELLO.

    A client that does not know the chain (``popbench status HOST:PORT``) has ``chain_id`` None: it
    waits for the node's HELLO and answers on the node's chain (docs/protocol.md, "Handshake").
    """

    __slots__ = ("chain_id", "node_id", "role", "key", "listen_host", "listen_port", "validators")

    def __init__(
        self,
        chain_id: bytes | None,
        node_id: int,
        role: Role,
        key: crypto.SigningKey,
        validators: Mapping[int, bytes] | None,
        listen_host: str = "",
        listen_port: int = 0,
    ) -> None:
        self.chain_id = chain_id
        self.node_id = node_id
        self.role = role
        self.key = key
        self.validators = validators
        self.listen_host = listen_host
        self.listen_port = listen_port


class ConnectionHost(Protocol):
    """What a connection reports to: the node (or a client)."""

    identity: Identity
    counters: NodeCounters

    def connection_established(self, conn: Connection) -> bool: ...

    def message_from(self, conn: Connection, message: Message) -> None: ...

    def connection_closed(self, conn: Connection) -> None: ...


_Held = TypeVar("_Held", bytes, Message)

# What a cut-off link holds for its peer, each way, before it gives up and closes (as TCP gives up on a
# peer that stays unreachable): a partition longer than this loses the link, and its items come back by
# the mempool sync a new link starts with (docs/protocol.md, section 6, "mempool sync").
CUT_OFF_LIMIT_FRAMES = 65_536


class HandshakeState(enum.Enum):
    AWAIT_HELLO = 1
    AWAIT_ACK = 2
    ESTABLISHED = 3
    CLOSED = 4


class Connection(FramedProtocol):
    """A framed connection that authenticates its peer before passing on any message."""

    def __init__(self, host: ConnectionHost, outbound: bool, delay_s: float = 0.0, faults: LinkFaults | None = None) -> None:
        super().__init__()
        self.host = host
        self.outbound = outbound
        self.delay_s = delay_s
        self.faults = faults  # emulated partition and link shaping (popbench/faults.py); None: a plain link
        self._held_until = 0.0  # loop time the last held frame goes out: shaped frames never reorder
        self.state = HandshakeState.AWAIT_HELLO
        self.peer: Hello | None = None
        self.established = asyncio.get_running_loop().create_future()
        self._nonce = handshake.new_nonce()
        self._ack_sent = False
        self._ack_verified = False
        self._timer: asyncio.TimerHandle | None = None
        self._delayed: list[bytes] | None = None
        self._stalled_out: list[bytes] = []  # frames for a peer an emulated partition cuts off, sent at the heal
        self._stalled_in: list[Message] = []  # messages from it that arrived as the cut began, read at the heal

    # -- identity of the peer --------------------------------------------------------------------
    @property
    def peer_id(self) -> int:
        return self.peer.node_id if self.peer else -1

    @property
    def peer_proven(self) -> bool:
        """The peer's HELLO_ACK verified here: it holds the key its HELLO announced (even if the link was
        then refused as a duplicate)."""
        return self._ack_verified

    @property
    def peer_role(self) -> Role | None:
        return self.peer.role if self.peer else None

    @property
    def is_validator_link(self) -> bool:
        """Established, and the peer proved the key the genesis gives the validator id it claims."""
        validators = self.host.identity.validators
        if self.state is not HandshakeState.ESTABLISHED or self.peer is None or validators is None:
            return False
        return handshake.is_genesis_validator(self.peer, validators)

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.host.identity.chain_id is not None:
            self._send_hello()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(handshake.HANDSHAKE_TIMEOUT_S, self._handshake_timed_out)

    def _send_hello(self) -> None:
        me = self.host.identity
        assert me.chain_id is not None
        hello = Hello(PROTOCOL_VERSION, me.chain_id, me.node_id, me.role, me.key.public_key,
                      self._nonce, me.listen_port, me.listen_host)  # fmt: skip
        self._send_now(hello)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        was_established = self.state is HandshakeState.ESTABLISHED
        self.state = HandshakeState.CLOSED
        self._cancel_timer()
        if not self.established.done():
            self.established.set_exception(ConnectionError("closed before the handshake completed"))
            self.established.exception()  # mark retrieved: nobody may be waiting
        if was_established:
            self.host.connection_closed(self)

    def protocol_error(self, error: ProtocolError) -> None:
        self.host.counters.protocol_errors += 1
        self.disconnect(DisconnectReason.PROTOCOL_ERROR, str(error))

    # -- receiving -------------------------------------------------------------------------------
    def message_received(self, message: Message) -> None:
        counters = self.host.counters
        name = type(message).__name__
        counters.frames_in[name] += 1
        if self.state is HandshakeState.ESTABLISHED:
            if self._cut_off(self.peer):
                self._stall(self._stalled_in, message)  # TCP would deliver it once packets flow again
                return
            self._deliver(message)
            return
        self._handshake_step(message)

    def _deliver(self, message: Message) -> None:
        if type(message) is Disconnect:
            self._peer_disconnected(message)
        else:
            self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        """Hand a message to the host. A handler that raises is a bug, not the peer's fault: the exception goes
        to the loop's exception handler (counted: popbench.loop_exceptions) and the link closes, as it would if
        the exception had escaped ``data_received``."""
        try:
            self.host.message_from(self, message)
        except Exception as err:  # reported to the loop, never swallowed
            asyncio.get_running_loop().call_exception_handler({
                "message": f"handler for {type(message).__name__} from peer {self.peer_id} raised",
                "exception": err, "protocol": self, "transport": self.transport,
            })  # fmt: skip
            self.close()

    def _handshake_step(self, message: Message) -> None:
        if type(message) is Hello and self.state is HandshakeState.AWAIT_HELLO:
            self._on_hello(message)
        elif type(message) is HelloAck and self.state is HandshakeState.AWAIT_ACK:
            self._on_ack(message)
        elif type(message) is Disconnect:
            self._peer_disconnected(message)
        else:
            self._refuse(DisconnectReason.UNEXPECTED_MESSAGE, f"{type(message).__name__} during handshake")

    def _on_hello(self, hello: Hello) -> None:
        if self._cut_off(hello):
            return  # unanswered, as across a real partition: the dialler's handshake times out
        me = self.host.identity
        if me.chain_id is None:  # a chain-agnostic client adopts the node's chain, then says HELLO
            me.chain_id = hello.chain_id
            self._send_hello()
        refusal = handshake.refuse_hello(hello, me.chain_id, me.validators)
        if refusal is not None:
            self._refuse(*refusal)
            return
        self.peer = hello
        self.state = HandshakeState.AWAIT_ACK
        self._send_now(HelloAck(handshake.sign_ack(me.key, me.chain_id, hello.nonce)))
        self._ack_sent = True

    def _on_ack(self, ack: HelloAck) -> None:
        assert self.peer is not None
        self.host.counters.signature_verifications += 1
        chain_id = self.host.identity.chain_id
        assert chain_id is not None
        if not handshake.ack_is_valid(ack.signature, chain_id, self._nonce, self.peer.pubkey):
            self._refuse(DisconnectReason.BAD_SIGNATURE, "HELLO_ACK signature does not verify")
            return
        self._ack_verified = True
        self._cancel_timer()
        if self.established.cancelled():  # the dialler's wait timed out first: nobody will use this link
            self.close()
            return
        self.state = HandshakeState.ESTABLISHED
        if not self.host.connection_established(self):
            self.state = HandshakeState.AWAIT_HELLO  # not registered: closing must not report it
            self.disconnect(DisconnectReason.DUPLICATE_PEER, "a connection to this peer exists")
            return
        self.established.set_result(self)

    def _peer_disconnected(self, message: Disconnect) -> None:
        self.host.counters.disconnects_received[message.reason.name] += 1
        self.close()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.state in (HandshakeState.AWAIT_HELLO, HandshakeState.AWAIT_ACK):
            self._refuse(DisconnectReason.HANDSHAKE_TIMEOUT, f"no handshake in {handshake.HANDSHAKE_TIMEOUT_S} s")

    def _refuse(self, reason: DisconnectReason, detail: str) -> None:
        self.host.counters.handshake_failures[reason.name] += 1
        self.disconnect(reason, detail)

    # -- sending ---------------------------------------------------------------------------------
    def disconnect(self, reason: DisconnectReason, detail: str = "") -> None:
        if self.is_open:
            self._send_now(Disconnect(reason, detail))
        self.close()

    def send(self, message: Message) -> None:
        self.send_encoded(encode_frame(message), type(message).__name__)

    def send_encoded(self, frame: bytes, name: str) -> None:
        """Send a frame encoded once for many receivers (broadcast), after the link's WAN delay."""
        if self.state is not HandshakeState.ESTABLISHED:
            return
        counters = self.host.counters
        counters.frames_out[name] += 1
        counters.bytes_out[name] += len(frame)
        self._transmit(frame)

    def _transmit(self, frame: bytes) -> None:
        if self.faults is not None and self.faults.active and self.peer_role == Role.VALIDATOR:
            self._send_shaped(frame)
            return
        if self.delay_s <= 0:
            self.send_frame(frame)
            return
        if self._delayed is None:
            # One batch per loop iteration, each held for the full delay (WAN emulation, see docs).
            batch: list[bytes] = []
            self._delayed = batch
            loop = asyncio.get_running_loop()
            loop.call_later(self.delay_s, self._release, batch)
            loop.call_soon(self._close_batch)
        self._delayed.append(frame)

    def _close_batch(self) -> None:
        self._delayed = None

    def _cut_off(self, peer: Hello | None) -> bool:
        """An emulated partition cuts validator links only: clients (drivers, monitors) keep their node."""
        return self.faults is not None and peer is not None and peer.role == Role.VALIDATOR and self.faults.blocks(peer.node_id)

    def _stall(self, stalled: list[_Held], item: _Held) -> None:
        """Hold what crosses a cut link for the heal, as TCP retransmits across a partition; a cut longer
        than CUT_OFF_LIMIT_FRAMES frames closes the link instead, as TCP gives up on a dead peer."""
        stalled.append(item)
        if len(stalled) > CUT_OFF_LIMIT_FRAMES:
            self._stalled_out.clear()
            self._stalled_in.clear()
            self.close()

    def faults_changed(self) -> None:
        """The harness changed this node's faults: a healed link sends and reads what it held, in order."""
        if self._cut_off(self.peer) or not (self._stalled_out or self._stalled_in):
            return
        frames, self._stalled_out = self._stalled_out, []
        messages, self._stalled_in = self._stalled_in, []
        for frame in frames:
            self._transmit(frame)
        for message in messages:
            if self.state is HandshakeState.ESTABLISHED:
                self._deliver(message)

    def _send_shaped(self, frame: bytes) -> None:
        """An emulated fault is on: hold the frame until the heal (partition) or for its delay, jitter, loss
        and bandwidth on top of the WAN delay, never letting it overtake an earlier frame, as TCP would not."""
        assert self.faults is not None
        hold_s = self.faults.hold_s(self.peer_id, len(frame))
        if hold_s is None:
            self._stall(self._stalled_out, frame)
            return
        loop = asyncio.get_running_loop()
        self._held_until = max(loop.time() + self.delay_s + hold_s, self._held_until)
        loop.call_at(self._held_until, self.send_frame, frame)

    def _release(self, batch: list[bytes]) -> None:
        for frame in batch:
            self.send_frame(frame)

    def _send_now(self, message: Message) -> None:
        frame = encode_frame(message)
        name = type(message).__name__
        self.host.counters.frames_out[name] += 1
        self.host.counters.bytes_out[name] += len(frame)
        self.send_frame(frame)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
