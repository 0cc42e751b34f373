"""FramedProtocol over real loopback TCP, on asyncio and on uvloop.

Frames arrive whole and in order however they are sent; a malformed frame closes only its own
connection and is counted (by the protocol_error hook, and by Connection in the node's counters);
frames queued in one loop iteration leave in one transport write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ProtocolError
from popbench.net.connection import Connection, Identity
from popbench.wire import (
    HEADER,
    Disconnect,
    DisconnectReason,
    FrameDecoder,
    FramedProtocol,
    Gossip,
    Hello,
    ItemKind,
    Message,
    Ping,
    Role,
    encode_frame,
)

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
TEST_TIMEOUT_S = 30.0  # generous: a loaded 2-core CI machine must never time out a passing test
POLL_INTERVAL_S = 0.002
BURST_FRAMES = 500
UNKNOWN_TYPE = 255
GARBAGE_FRAME = HEADER.pack(3, UNKNOWN_TYPE) + b"bad"


class CountingTransport:
    """Wraps a transport and counts ``write`` calls; everything else goes to the real transport."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingProtocol(FramedProtocol):
    """Records every message; the server side echoes each one back; counts malformed frames."""

    def __init__(self, echo: bool = False) -> None:
        super().__init__()
        self.echo = echo
        self.messages: list[Message] = []
        self.protocol_errors: list[ProtocolError] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CountingTransport(transport))  # type: ignore[arg-type]

    def message_received(self, message: Message) -> None:
        self.messages.append(message)
        if self.echo:
            self.send(message)

    def protocol_error(self, error: ProtocolError) -> None:
        self.protocol_errors.append(error)
        super().protocol_error(error)  # the default closes the connection

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    @property
    def writes(self) -> int:
        return self.transport.writes  # type: ignore[union-attr]


class EchoServer:
    """An echoing FramedProtocol server on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.connections: list[RecordingProtocol] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._new_connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def _new_connection(self) -> RecordingProtocol:
        protocol = RecordingProtocol(echo=True)
        self.connections.append(protocol)
        return protocol

    async def connect(self) -> RecordingProtocol:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(RecordingProtocol, "127.0.0.1", self.port)
        return protocol

    def close(self) -> None:
        for protocol in self.connections:
            protocol.close()
        if self.server is not None:
            self.server.close()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition``; the caller's wait_for bounds the wait."""
    while not condition():
        await asyncio.sleep(POLL_INTERVAL_S)


def run(loop_name: str, script: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``script`` under a timeout on a fresh loop; fail on any error that reached the loop."""
    loop = LOOPS[loop_name]()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    try:
        result = loop.run_until_complete(asyncio.wait_for(script(), TEST_TIMEOUT_S))
        loop.run_until_complete(asyncio.sleep(0))  # let closing transports finish their callbacks
    finally:
        loop.close()
    assert not loop_errors, loop_errors
    return result


async def with_echo_server(body: Callable[[EchoServer], Awaitable[Any]]) -> Any:
    server = EchoServer()
    await server.start()
    try:
        return await body(server)
    finally:
        server.close()


def pings(count: int) -> list[Message]:
    return [Ping(index, index * 7) for index in range(count)]


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


# -- order -----------------------------------------------------------------------------------------


def test_frames_sent_one_by_one_arrive_in_order(loop_name: str) -> None:
    async def body(server: EchoServer) -> tuple[list[Message], list[Message]]:
        client = await server.connect()
        for index, message in enumerate(pings(20)):
            client.send(message)
            await wait_until(lambda index=index: len(client.messages) > index)  # the echo: a round trip per frame
        client.close()
        return server.connections[0].messages, client.messages

    received, echoed = run(loop_name, lambda: with_echo_server(body))
    assert received == pings(20)
    assert echoed == pings(20)


def test_frames_sent_in_a_burst_arrive_in_order(loop_name: str) -> None:
    burst = [*pings(BURST_FRAMES), Gossip(ItemKind.PROOF, [bytes(100)] * 50), *pings(3)]

    async def body(server: EchoServer) -> list[Message]:
        client = await server.connect()
        for message in burst:
            client.send(message)
        await wait_until(lambda: len(client.messages) == len(burst))
        client.close()
        return client.messages

    assert run(loop_name, lambda: with_echo_server(body)) == burst


def test_a_frame_larger_than_a_socket_read_arrives_whole(loop_name: str) -> None:
    big = Gossip(ItemKind.TRANSFER, [bytes([index % 256]) * 4096 for index in range(256)])  # ~1 MiB

    async def body(server: EchoServer) -> list[Message]:
        client = await server.connect()
        client.send(big)
        client.send(Ping(1, 1))
        await wait_until(lambda: len(client.messages) == 2)
        client.close()
        return client.messages

    assert run(loop_name, lambda: with_echo_server(body)) == [big, Ping(1, 1)]


# -- malformed frames ------------------------------------------------------------------------------


def test_a_malformed_frame_closes_only_its_connection_and_is_counted(loop_name: str) -> None:
    async def body(server: EchoServer) -> tuple[list[RecordingProtocol], list[Message]]:
        bad, good = await server.connect(), await server.connect()
        await wait_until(lambda: len(server.connections) == 2)
        bad.send_frame(encode_frame(Ping(1, 1)) + GARBAGE_FRAME + encode_frame(Ping(2, 2)))
        await bad.lost  # the server closed it
        good.send(Ping(3, 3))
        await wait_until(lambda: len(good.messages) == 1)
        good.close()
        return server.connections, good.messages

    server_sides, echoed = run(loop_name, lambda: with_echo_server(body))
    good_side, bad_side = sorted(server_sides, key=lambda side: len(side.protocol_errors))
    assert len(bad_side.protocol_errors) == 1 and not bad_side.is_open
    assert Ping(2, 2) not in bad_side.messages  # nothing after the malformed frame is delivered
    assert not good_side.protocol_errors
    assert echoed == [Ping(3, 3)]


def test_an_oversize_header_closes_the_connection_before_its_body(loop_name: str) -> None:
    async def body(server: EchoServer) -> RecordingProtocol:
        client = await server.connect()
        client.send_frame(HEADER.pack(2**32 - 1, Ping.TYPE))  # the body never comes
        await client.lost
        return server.connections[0]

    server_side = run(loop_name, lambda: with_echo_server(body))
    assert [type(error).__name__ for error in server_side.protocol_errors] == ["FrameTooLarge"]


# -- the connection layer counts protocol errors in the node's counters ---------------------------

CHAIN = bytes(range(32))
SERVER_KEY = crypto.derive_key("framing-test", 0)


class CountingHost:
    """The least a Connection needs: an identity and counters."""

    def __init__(self) -> None:
        self.identity = Identity(CHAIN, 0, Role.VALIDATOR, SERVER_KEY, {0: SERVER_KEY.public_key}, "127.0.0.1", 0)
        self.counters = NodeCounters()

    def connection_established(self, conn: Connection) -> bool:
        return True

    def message_from(self, conn: Connection, message: Message) -> None:
        pass

    def connection_closed(self, conn: Connection) -> None:
        pass


async def read_until_closed(port: int, payload: bytes) -> list[Message]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    decoder, messages = FrameDecoder(), []
    try:
        while data := await reader.read(65536):
            messages.extend(decoder.feed(data))
    finally:
        writer.close()
    return messages


def test_a_connection_answers_a_malformed_frame_with_disconnect_and_counts_it(loop_name: str) -> None:
    host = CountingHost()

    async def script() -> tuple[list[Message], list[Message]]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Connection(host, outbound=False), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            first = await read_until_closed(port, GARBAGE_FRAME)
            second = await read_until_closed(port, GARBAGE_FRAME)  # the server still accepts and serves
        finally:
            server.close()
        return first, second

    first, second = run(loop_name, script)
    for messages in (first, second):
        assert isinstance(messages[0], Hello)
        assert [m.reason for m in messages if isinstance(m, Disconnect)] == [DisconnectReason.PROTOCOL_ERROR]
    assert host.counters.protocol_errors == 2


# -- coalescing ------------------------------------------------------------------------------------


def test_frames_queued_in_one_iteration_leave_in_one_write(loop_name: str) -> None:
    async def body(server: EchoServer) -> tuple[int, int, list[Message]]:
        client = await server.connect()
        writes_before = client.writes
        for message in pings(BURST_FRAMES):
            client.send(message)
        await wait_until(lambda: len(client.messages) == BURST_FRAMES)
        client_writes = client.writes - writes_before
        server_writes = server.connections[0].writes
        client.close()
        return client_writes, server_writes, client.messages

    client_writes, server_writes, echoed = run(loop_name, lambda: with_echo_server(body))
    assert client_writes == 1
    assert server_writes < BURST_FRAMES  # echoes of one received chunk also leave together
    assert echoed == pings(BURST_FRAMES)


def test_frames_queued_in_separate_iterations_leave_in_separate_writes(loop_name: str) -> None:
    async def body(server: EchoServer) -> int:
        client = await server.connect()
        for message in pings(5):
            client.send(message)
            await asyncio.sleep(0)  # a yield, not a wait: the flush scheduled by send runs before we resume
        await wait_until(lambda: len(client.messages) == 5)
        client.close()
        return client.writes

    assert run(loop_name, lambda: with_echo_server(body)) == 5


def test_a_closed_protocol_sends_nothing(loop_name: str) -> None:
    async def body(server: EchoServer) -> int:
        client = await server.connect()
        client.close()
        client.send(Ping(1, 1))
        await client.lost
        return client.frames_out

    assert run(loop_name, lambda: with_echo_server(body)) == 0
