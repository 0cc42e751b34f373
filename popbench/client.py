"""A client connection to one node: submit items, follow commits, ask for status, blocks, snapshots.

Load drivers, the harness's collector, ``popbench status`` and ``popbench join`` all speak to nodes
through this one class. It authenticates like any peer (role CLIENT, or FOLLOWER for a joining node).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import TypeVar

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ClientError
from popbench.net.connection import Connection, Identity
from popbench.wire import (
    BlockRequest,
    BlockResponse,
    Committed,
    ItemKind,
    Message,
    Peers,
    PeersRequest,
    Role,
    SnapshotChunk,
    SnapshotRequest,
    Status,
    StatusRequest,
    Submit,
    SubmitResult,
    Subscribe,
)
from popbench.wire.status import AnyStatus, decode_status

CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
ResponseT = TypeVar("ResponseT", bound=Message)

# Which answer each request expects; answers come back in order on one connection.
ANSWERS: dict[type[Message], type[Message]] = {
    StatusRequest: Status,
    BlockRequest: BlockResponse,
    SnapshotRequest: SnapshotChunk,
    PeersRequest: Peers,
}


class NodeClient:
    """One authenticated connection to a node, with request/response helpers and push callbacks."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.counters = NodeCounters()
        self.conn: Connection | None = None
        self.on_result: Callable[[SubmitResult], None] = lambda result: None
        self.on_committed: Callable[[Committed], None] = lambda note: None
        self._waiting: dict[type[Message], deque[asyncio.Future[Message]]] = {}
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        chain_id: bytes | None = None,
        validators: Mapping[int, bytes] | None = None,
        role: Role = Role.CLIENT,
        key: crypto.SigningKey | None = None,
        node_id: int = 0,
        timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> NodeClient:
        identity = Identity(chain_id, node_id, role, key or crypto.SigningKey.generate(), validators)
        client = cls(identity)
        loop = asyncio.get_running_loop()
        conn: Connection | None = None
        try:
            _, made = await asyncio.wait_for(loop.create_connection(lambda: Connection(client, outbound=True), host, port), timeout_s)
            conn = made
            await asyncio.wait_for(made.established, timeout_s)
        except (TimeoutError, OSError, ConnectionError) as err:
            if conn is not None:
                conn.close()  # a node slow to answer (a restarted one replaying) must not finish a handshake nobody awaits
            raise ClientError(f"cannot connect to node at {host}:{port}: {err or type(err).__name__}") from err
        client.conn = conn
        return client

    # -- ConnectionHost ----------------------------------------------------------------------------
    def connection_established(self, conn: Connection) -> bool:
        return True

    def message_from(self, conn: Connection, message: Message) -> None:
        kind = type(message)
        if kind is SubmitResult:
            self.on_result(message)  # type: ignore[arg-type]
        elif kind is Committed:
            self.on_committed(message)  # type: ignore[arg-type]
        else:
            self._answer(message)

    def connection_closed(self, conn: Connection) -> None:
        for queue in self._waiting.values():
            for future in queue:
                if not future.done():
                    future.set_exception(ClientError("connection closed by the node"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _answer(self, message: Message) -> None:
        queue = self._waiting.get(type(message))
        if queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(message)

    # -- requests ----------------------------------------------------------------------------------
    async def request(self, message: Message, timeout_s: float = REQUEST_TIMEOUT_S) -> Message:
        answer_type = ANSWERS[type(message)]
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(answer_type, deque()).append(future)
        self.send(message)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as err:
            raise ClientError(f"no {answer_type.__name__} within {timeout_s} s") from err

    async def status(self, timeout_s: float = REQUEST_TIMEOUT_S) -> AnyStatus:
        """The node's typed STATUS (a PopStatus or a PowStatus); ProtocolError if it is malformed."""
        answer = await self.request(StatusRequest(), timeout_s)
        assert isinstance(answer, Status)
        return decode_status(answer.payload)

    def subscribe(self, topics: int) -> None:
        self.send(Subscribe(topics))

    def submit(self, request_id: int, kind: ItemKind, item: bytes) -> None:
        self.send(Submit(request_id, kind, item))

    def send(self, message: Message) -> None:
        if self.conn is None or not self.conn.is_open:
            raise ClientError("not connected")
        self.conn.send(message)

    def send_encoded(self, frame: bytes, name: str) -> None:
        if self.conn is not None:
            self.conn.send_encoded(frame, name)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
