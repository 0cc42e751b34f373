"""The authenticated handshake over real loopback TCP: acceptance and every rejection case.

A minimal host serves :class:`Connection` on a real socket; a raw client speaks frames by hand so it
can break every rule. Each refusal must end in DISCONNECT(reason) plus a counter, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import uvloop

from popbench import crypto
from popbench.client import NodeClient
from popbench.counters import NodeCounters
from popbench.errors import ClientError
from popbench.net import handshake
from popbench.net.connection import Connection, Identity
from popbench.wire import (
    PROTOCOL_VERSION,
    Disconnect,
    DisconnectReason,
    FrameDecoder,
    Hello,
    HelloAck,
    Message,
    Ping,
    Role,
    StatusRequest,
    encode_frame,
)

CHAIN = bytes(range(32))
SERVER_KEY = crypto.derive_key("handshake-test", 0)
PEER_KEY = crypto.derive_key("handshake-test", 1)
VALIDATORS = {0: SERVER_KEY.public_key, 1: PEER_KEY.public_key}
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class RecordingHost:
    """A ConnectionHost that records what reaches it."""

    def __init__(self) -> None:
        self.identity = Identity(CHAIN, 0, Role.VALIDATOR, SERVER_KEY, VALIDATORS, "127.0.0.1", 0)
        self.counters = NodeCounters()
        self.established: list[Connection] = []
        self.messages: list[Message] = []

    def connection_established(self, conn: Connection) -> bool:
        self.established.append(conn)
        return True

    def message_from(self, conn: Connection, message: Message) -> None:
        self.messages.append(message)

    def connection_closed(self, conn: Connection) -> None:
        pass


class RawPeer:
    """A hand-driven client: sends chosen frames, reads decoded answers until the server closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.received: list[Message] = []

    def send(self, message: Message) -> None:
        self.writer.write(encode_frame(message))

    async def next_message(self) -> Message:
        while not self.received:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed")
            self.received.extend(self.decoder.feed(data))
        return self.received.pop(0)

    async def until_closed(self) -> list[Message]:
        messages = list(self.received)
        while data := await self.reader.read(65536):
            messages.extend(self.decoder.feed(data))
        return messages


def hello(key: crypto.SigningKey = PEER_KEY, node_id: int = 1, chain: bytes = CHAIN, version: int = PROTOCOL_VERSION,
          role: Role = Role.VALIDATOR, nonce: bytes = b"n" * 32) -> Hello:  # fmt: skip
    return Hello(version, chain, node_id, role, key.public_key, nonce, 0, "127.0.0.1")


async def serve(host: RecordingHost) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(host, outbound=False), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def exchange(script: Any, timeout_s: float = 20.0) -> tuple[RecordingHost, list[Message]]:
    host = RecordingHost()
    server, port = await serve(host)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = RawPeer(reader, writer)
    try:
        messages = await asyncio.wait_for(script(peer), timeout_s)
    finally:
        writer.close()
        server.close()
    return host, messages


def run(loop_name: str, coro: Any) -> Any:
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def disconnect_reason(messages: list[Message]) -> DisconnectReason:
    reasons = [m.reason for m in messages if isinstance(m, Disconnect)]
    assert reasons, f"no DISCONNECT in {messages}"
    return reasons[-1]  # type: ignore[return-value]


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def test_a_peer_that_signs_our_nonce_is_established(loop_name: str) -> None:
    async def script(peer: RawPeer) -> list[Message]:
        server_hello = await peer.next_message()
        assert isinstance(server_hello, Hello)
        peer.send(hello())
        ack = await peer.next_message()
        assert isinstance(ack, HelloAck)
        assert handshake.ack_is_valid(ack.signature, CHAIN, b"n" * 32, SERVER_KEY.public_key)
        peer.send(HelloAck(handshake.sign_ack(PEER_KEY, CHAIN, server_hello.nonce)))
        peer.send(Ping(1, 2))
        peer.send(StatusRequest())
        peer.writer.write_eof()
        return await peer.until_closed()

    host, _ = run(loop_name, exchange(script))
    assert len(host.established) == 1 and host.established[0].peer_id == 1
    assert [type(m) for m in host.messages] == [Ping, StatusRequest]
    assert not host.counters.handshake_failures


@pytest.mark.parametrize(
    ("peer_hello", "reason"),
    [
        (hello(chain=bytes(32)), DisconnectReason.WRONG_CHAIN),
        (hello(version=PROTOCOL_VERSION + 1), DisconnectReason.WRONG_VERSION),
        (hello(key=crypto.derive_key("stranger", 0)), DisconnectReason.UNKNOWN_VALIDATOR),
        (hello(node_id=7), DisconnectReason.UNKNOWN_VALIDATOR),
    ],
    ids=["wrong-chain", "wrong-version", "unknown-key", "unknown-id"],
)
def test_a_bad_hello_is_refused_with_its_reason(loop_name: str, peer_hello: Hello, reason: DisconnectReason) -> None:
    async def script(peer: RawPeer) -> list[Message]:
        peer.send(peer_hello)
        return await peer.until_closed()

    host, messages = run(loop_name, exchange(script))
    assert disconnect_reason(messages) == reason
    assert host.counters.handshake_failures[reason.name] == 1
    assert not host.established


def test_an_ack_that_does_not_verify_is_refused(loop_name: str) -> None:
    async def script(peer: RawPeer) -> list[Message]:
        await peer.next_message()
        peer.send(hello())
        await peer.next_message()
        peer.send(HelloAck(PEER_KEY.sign(b"something else")))
        return await peer.until_closed()

    host, messages = run(loop_name, exchange(script))
    assert disconnect_reason(messages) == DisconnectReason.BAD_SIGNATURE
    assert host.counters.handshake_failures["BAD_SIGNATURE"] == 1


def test_a_message_before_the_handshake_is_refused(loop_name: str) -> None:
    async def script(peer: RawPeer) -> list[Message]:
        peer.send(StatusRequest())
        return await peer.until_closed()

    host, messages = run(loop_name, exchange(script))
    assert disconnect_reason(messages) == DisconnectReason.UNEXPECTED_MESSAGE
    assert not host.messages


def test_a_silent_peer_is_dropped_when_the_handshake_times_out(loop_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handshake, "HANDSHAKE_TIMEOUT_S", 0.2)

    async def script(peer: RawPeer) -> list[Message]:
        return await peer.until_closed()  # says nothing; the server must give up on its own

    host, messages = run(loop_name, exchange(script))
    assert disconnect_reason(messages) == DisconnectReason.HANDSHAKE_TIMEOUT
    assert host.counters.handshake_failures["HANDSHAKE_TIMEOUT"] == 1


def test_a_malformed_frame_closes_the_connection_and_is_counted(loop_name: str) -> None:
    async def script(peer: RawPeer) -> list[Message]:
        peer.writer.write(b"\x00\x00\x00\x02\xfe\x00\x00")  # unknown message type 254
        return await peer.until_closed()

    host, messages = run(loop_name, exchange(script))
    assert disconnect_reason(messages) == DisconnectReason.PROTOCOL_ERROR
    assert host.counters.protocol_errors == 1


def test_a_chain_agnostic_client_adopts_the_nodes_chain(loop_name: str) -> None:
    async def scenario() -> Connection:
        host = RecordingHost()
        server, port = await serve(host)
        client_host = RecordingHost()
        client_host.identity = Identity(None, 0, Role.CLIENT, crypto.SigningKey.generate(), None)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Connection(client_host, outbound=True), "127.0.0.1", port)
        await asyncio.wait_for(conn.established, 10)
        server.close()
        conn.close()
        return conn

    conn = run(loop_name, scenario())
    assert conn.peer is not None and conn.peer.chain_id == CHAIN


def test_handshake_signatures_bind_the_chain_and_the_signer() -> None:
    signature = handshake.sign_ack(PEER_KEY, CHAIN, b"x" * 32)
    assert handshake.ack_is_valid(signature, CHAIN, b"x" * 32, PEER_KEY.public_key)
    assert not handshake.ack_is_valid(signature, bytes(32), b"x" * 32, PEER_KEY.public_key)
    assert not handshake.ack_is_valid(signature, CHAIN, b"y" * 32, PEER_KEY.public_key)
    assert not handshake.ack_is_valid(signature, CHAIN, b"x" * 32, SERVER_KEY.public_key)


def test_a_handshake_finished_after_the_client_gave_up_closes_the_link_and_raises_nothing(loop_name: str) -> None:
    """A node slow to answer (a restarted one replaying its database) completed the handshake after
    NodeClient.connect's timeout: the late HELLO_ACK raised InvalidStateError on the cancelled
    ``established`` future in the harness's loop (a CI failure of test_planned_kill_and_restart), and
    the half-open connection stayed. Now the client closes it, and a late ACK is ignored."""

    async def scenario() -> tuple[bool, list[dict[str, Any]]]:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        answered_late = asyncio.Event()
        closed_by_client = asyncio.Event()

        async def slow_node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = RawPeer(reader, writer)
            client_hello = await peer.next_message()
            assert isinstance(client_hello, Hello)
            await asyncio.sleep(0.5)  # stands in for a node busy replaying: the client's timeout is 0.1 s
            peer.send(Hello(PROTOCOL_VERSION, CHAIN, 0, Role.VALIDATOR, SERVER_KEY.public_key, b"s" * 32, 0, "127.0.0.1"))
            peer.send(HelloAck(handshake.sign_ack(SERVER_KEY, CHAIN, client_hello.nonce)))
            answered_late.set()
            with contextlib.suppress(ConnectionError):
                await peer.until_closed()
            closed_by_client.set()

        server = await asyncio.start_server(slow_node, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ClientError):
            await NodeClient.connect("127.0.0.1", port, chain_id=CHAIN, timeout_s=0.1)
        await asyncio.wait_for(answered_late.wait(), 20)
        await asyncio.wait_for(closed_by_client.wait(), 20)  # the client's side of the connection is closed
        server.close()
        return closed_by_client.is_set(), errors

    closed, errors = run(loop_name, scenario())
    assert closed and not errors, errors
