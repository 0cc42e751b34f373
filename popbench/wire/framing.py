"""Frames on a byte stream, and the asyncio Protocol that reads and writes them.

A frame is a 5-byte header, ``>IB`` (body length, message type), then the body. The body length is
checked against :data:`MAX_FRAME_BYTES` as soon as the header is complete, before any of the body is
buffered. :class:`FramedProtocol` decodes every whole frame in one ``data_received`` call, returns on a
partial frame, and coalesces outgoing frames into one write per event-loop iteration.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

from popbench.errors import FrameTooLarge, ProtocolError
from popbench.wire.messages import DECODERS, Message, decode_message

HEADER = struct.Struct(">IB")
HEADER_BYTES = HEADER.size
MAX_FRAME_BYTES = 8 * 1024 * 1024  # body bytes; a snapshot chunk or block response must fit
# A peer whose unsent output exceeds this is too slow to keep up; it is dropped, not buffered forever.
MAX_PENDING_WRITE_BYTES = 64 * 1024 * 1024


def encode_frame(message: Message) -> bytes:
    """Header + body of one message."""
    body = message.encode_body()
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"{type(message).__name__} body of {len(body)} bytes over {MAX_FRAME_BYTES}")
    return HEADER.pack(len(body), message.TYPE) + body


def check_header(length: int, message_type: int) -> None:
    if length > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {length} body bytes announced, maximum {MAX_FRAME_BYTES}")
    if DECODERS[message_type] is None:
        raise ProtocolError(f"unknown message type {message_type}")


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages. Used by the Protocol and by blocking clients."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Append ``data`` and return every message now complete; keep the partial tail."""
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data  # fast path: no copy when the previous call ended on a frame boundary
        messages, consumed = _decode_frames(view)
        if buffer:
            del buffer[:consumed]
        elif consumed < len(data):
            buffer += data[consumed:]
        return messages

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)


def _decode_frames(data: bytes | bytearray) -> tuple[list[Message], int]:
    messages: list[Message] = []
    append = messages.append
    unpack_header = HEADER.unpack_from
    total = len(data)
    offset = 0
    mv = memoryview(data)
    try:
        while total - offset >= HEADER_BYTES:
            length, message_type = unpack_header(data, offset)
            check_header(length, message_type)
            start = offset + HEADER_BYTES
            end = start + length
            if end > total:
                break
            append(decode_message(message_type, mv[start:end]))
            offset = end
    finally:
        mv.release()
    return messages, offset


def iter_frames(messages: list[Message]) -> Iterator[bytes]:
    for message in messages:
        yield encode_frame(message)


class FramedProtocol(asyncio.Protocol):
    """Reads and writes frames on one connection; subclasses implement :meth:`message_received`.

    A malformed frame calls :meth:`protocol_error` (which closes the connection by default) and
    stops decoding that connection's data; it never propagates into the event loop.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._broken = False
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        self.bytes_in += len(data)
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as err:
            self.protocol_error(err)  # may still send a DISCONNECT saying why
            self._broken = True
            return
        self.frames_in += len(messages)
        for message in messages:
            if self._broken:
                return
            self.message_received(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._broken = True
        self._outbox.clear()

    # -- for subclasses -----------------------------------------------------------------------
    def message_received(self, message: Message) -> None:
        raise NotImplementedError

    def protocol_error(self, error: ProtocolError) -> None:
        self.close()

    # -- sending ------------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Queue one frame; frames queued in the same loop iteration go out in one write."""
        self.send_frame(encode_frame(message))

    def send_frame(self, frame: bytes) -> None:
        """Queue an already encoded frame (a broadcast encodes once and sends to many)."""
        if self._broken or self.transport is None:
            return
        self._outbox.append(frame)
        self.frames_out += 1
        self.bytes_out += len(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if not self._outbox or transport is None or transport.is_closing():
            self._outbox.clear()
            return
        data = b"".join(self._outbox) if len(self._outbox) > 1 else self._outbox[0]
        self._outbox.clear()
        if not self._write(transport, data):
            return
        if transport.get_write_buffer_size() > MAX_PENDING_WRITE_BYTES:
            self.slow_consumer()

    def slow_consumer(self) -> None:
        """Called when the peer reads slower than we write; the default drops the connection."""
        self.close()

    def close(self) -> None:
        self._broken = True
        if self.transport is not None and not self.transport.is_closing():
            self.flush_now()
            self.transport.close()

    def flush_now(self) -> None:
        if self._outbox and self.transport is not None and not self.transport.is_closing():
            self._write(self.transport, b"".join(self._outbox))
        self._outbox.clear()

    def _write(self, transport: asyncio.Transport, data: bytes) -> bool:
        """Write, unless the socket is already gone: uvloop closes a stream's handle when the kernel
        reports the connection dead (a peer that was stopped, then reset) before ``is_closing()`` says so
        and before ``connection_lost`` runs, and a write in between raises RuntimeError ("the handler is
        closed"). The frames are lost either way; the connection counts as broken."""
        try:
            transport.write(data)
        except RuntimeError:
            self._broken = True
            return False
        return True

    @property
    def is_open(self) -> bool:
        return not self._broken and self.transport is not None and not self.transport.is_closing()
