"""A host supervisor's control channel: what the coordinator asks of the hosts, and how.

One TCP connection per host, one request at a time: a request is one JSON line (a tagged msgspec
Struct), its reply one JSON line, ``{"reply": ...}`` or ``{"error": "..."}``; a fetched file's bytes
follow its reply line raw. Typed at both ends, so a coordinator and a host of different versions refuse
each other's messages instead of misreading them.

This is the only traffic between coordinator and hosts besides what the coordinator's drivers and
collector send the validators themselves (submissions, STATUS), which is the same as on one host. It
is not authenticated: it is meant for loopback or for a cluster network that a NetworkPolicy closes to
everything but the coordinator (docs/kubernetes.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from popbench.errors import HarnessError

LINE_LIMIT_BYTES = 64 * 2**20  # a stop's reply carries every node's final STATUS
CHUNK_BYTES = 2**20
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 60.0

R = TypeVar("R")


class ControlError(HarnessError):
    """Raised when a host cannot be reached, or refuses or fails a request."""


# -- requests ------------------------------------------------------------------------------------------
class Request(msgspec.Struct, frozen=True, kw_only=True, tag_field="op"):
    pass


class StateRequest(Request, frozen=True, kw_only=True, tag="state"):
    """Who the host is and what each of its validators has reported so far."""


class FiguresRequest(Request, frozen=True, kw_only=True, tag="figures"):
    """The kernel's figures for every validator process alive (USS only when asked: it walks smaps)."""

    uss: bool = False


class KillRequest(Request, frozen=True, kw_only=True, tag="kill"):
    node: int


class RestartRequest(Request, frozen=True, kw_only=True, tag="restart"):
    node: int


class StopRequest(Request, frozen=True, kw_only=True, tag="stop"):
    """Stop every validator (SIGTERM, then SIGKILL after ``grace_s``) and hand back what they reported."""

    grace_s: float = 15.0


class FilesRequest(Request, frozen=True, kw_only=True, tag="files"):
    """The validators' data files (databases, event logs), once they have stopped."""


class FetchRequest(Request, frozen=True, kw_only=True, tag="fetch"):
    name: str


class ExitRequest(Request, frozen=True, kw_only=True, tag="exit"):
    """The run is over: the host supervisor ends (or idles, in a pod that must not be restarted)."""


AnyRequest = StateRequest | FiguresRequest | KillRequest | RestartRequest | StopRequest | FilesRequest | FetchRequest | ExitRequest


# -- replies -------------------------------------------------------------------------------------------
class Reply(msgspec.Struct, frozen=True, kw_only=True):
    pass


class NodeState(Reply, frozen=True, kw_only=True):
    pid: int
    alive: bool
    events: dict[str, int]  # event name -> wall-clock ns the host first heard it


class HostState(Reply, frozen=True, kw_only=True):
    ordinal: int
    hosts: int
    nodes: int
    chain_id: str  # hex: the coordinator checks it computed the same genesis
    children: dict[int, NodeState]
    error: str = ""  # the host could not start its validators (it still answers, to say so)


class ProcessFigures(Reply, frozen=True, kw_only=True):
    cpu_s: float
    uss_bytes: int | None
    open_files: int
    ctx_switches: int


class Figures(Reply, frozen=True, kw_only=True):
    nodes: dict[int, ProcessFigures]  # the validators whose process runs
    supervisor_cpu_s: float


class Done(Reply, frozen=True, kw_only=True):
    pid: int = 0  # a restart: the new process
    error: str = ""  # a fault that could not be applied (as FaultScheduler records it)


class RemoteCrash(Reply, frozen=True, kw_only=True):
    """harness.procs.supervisor.Crash, as it crosses the wire."""

    name: str
    kind: str
    index: int
    pid: int
    at_ns: int
    exit: str
    stderr_tail: str


class Stopped(Reply, frozen=True, kw_only=True):
    final: dict[int, Any]  # node id -> its final STATUS (builtins; popbench.wire.status.decode_status)
    crashes: list[RemoteCrash]
    supervisor_cpu_s: float


class DataFiles(Reply, frozen=True, kw_only=True):
    files: dict[str, int]  # name -> size in bytes


class Fetched(Reply, frozen=True, kw_only=True):
    size: int  # this many raw bytes follow the line


class _Envelope(msgspec.Struct, frozen=True, kw_only=True):
    reply: msgspec.Raw = msgspec.Raw(b"")  # decoded once the caller says what it expects
    error: str | None = None


# -- the host's side -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendFile:
    """A handler's answer to a fetch: the file to stream after the reply line."""

    path: Path


Handler = Callable[[AnyRequest], Awaitable[Reply | SendFile]]
_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(AnyRequest)


class ControlServer:
    """The listening side; :meth:`close` also ends every open connection, so no handler outlives it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._on_client, sock=sock, limit=LINE_LIMIT_BYTES)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                await _answer(line, self.handler, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the coordinator went away or sent garbage: it dials again when it needs us
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # its handler's readline returns b"" and the handler ends on its own
        for _ in range(50):
            if not self._writers:
                break
            await asyncio.sleep(0.01)  # the handlers' last turn of the loop, bounded


async def serve(sock: socket.socket, handler: Handler) -> ControlServer:
    """Answer requests on the bound, listening ``sock`` until the returned server is closed."""
    server = ControlServer(handler)
    await server.start(sock)
    return server


async def _answer(line: bytes, handler: Handler, writer: asyncio.StreamWriter) -> None:
    try:
        answer = await handler(_request_decoder.decode(line))
    except (msgspec.DecodeError, HarnessError, OSError) as err:
        writer.write(_encoder.encode({"error": str(err)}) + b"\n")
        await writer.drain()
        return
    if isinstance(answer, SendFile):
        await _send_file(answer.path, writer)
        return
    writer.write(b'{"reply":' + _encoder.encode(answer) + b"}\n")
    await writer.drain()


async def _send_file(path: Path, writer: asyncio.StreamWriter) -> None:
    with path.open("rb") as source:
        size = path.stat().st_size
        writer.write(b'{"reply":' + _encoder.encode(Fetched(size=size)) + b"}\n")
        left = size
        while left > 0:
            chunk = source.read(min(CHUNK_BYTES, left))
            if not chunk:
                raise OSError(f"{path} shrank while being sent")
            writer.write(chunk)
            left -= len(chunk)
            await writer.drain()


# -- the coordinator's side ------------------------------------------------------------------------------
class HostClient:
    """One host's control channel: a kept connection, dialled again after any failure."""

    def __init__(self, ordinal: int, address: tuple[str, int]) -> None:
        self.ordinal = ordinal
        self.address = address
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"host {self.ordinal} ({self.address[0]}:{self.address[1]})"

    async def call(self, request: AnyRequest, reply_type: type[R], timeout_s: float = CALL_TIMEOUT_S) -> R:
        async with self._lock:
            try:
                reader, writer = await self._connected()
                writer.write(_encoder.encode(request) + b"\n")
                await writer.drain()
                return _decode_reply(await asyncio.wait_for(reader.readline(), timeout_s), reply_type, self)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
                self.close()
                raise ControlError(f"{self}: {type(request).__name__} failed: {err or type(err).__name__}") from None

    async def fetch(self, name: str, destination: Path, timeout_s: float = CALL_TIMEOUT_S) -> int:
        """Copy the host's data file ``name`` to ``destination``; returns its size."""
        async with self._lock:
            try:
                reader, writer = await self._connected()
                writer.write(_encoder.encode(FetchRequest(name=name)) + b"\n")
                await writer.drain()
                header = _decode_reply(await asyncio.wait_for(reader.readline(), timeout_s), Fetched, self)
                await _receive(reader, header.size, destination, timeout_s)
                return header.size
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
                self.close()
                raise ControlError(f"{self}: fetching {name} failed: {err or type(err).__name__}") from None

    async def _connected(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None or self._streams[1].is_closing():
            self._streams = await asyncio.wait_for(asyncio.open_connection(*self.address, limit=LINE_LIMIT_BYTES), CONNECT_TIMEOUT_S)
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            with contextlib.suppress(RuntimeError):  # the loop that opened it is gone
                self._streams[1].close()
            self._streams = None


def _decode_reply(line: bytes, reply_type: type[R], host: HostClient) -> R:
    if not line:
        raise ConnectionError("the host closed the connection")
    envelope = msgspec.json.decode(line, type=_Envelope)
    if envelope.error is not None or not envelope.reply:
        raise ControlError(f"{host} refused: {envelope.error or 'an empty reply'}")
    return msgspec.json.decode(envelope.reply, type=reply_type)


async def _receive(reader: asyncio.StreamReader, size: int, destination: Path, timeout_s: float) -> None:
    partial = destination.with_name(destination.name + ".partial")
    with partial.open("wb") as sink:
        left = size
        while left > 0:
            chunk = await asyncio.wait_for(reader.read(min(CHUNK_BYTES, left)), timeout_s)
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            sink.write(chunk)
            left -= len(chunk)
    partial.replace(destination)
