"""Unexpected exceptions are counted: on the loop, in a node's message handler, and by the test clusters.

A message handler that raises is provoked through a test hook (the node's handler table, patched in the
test or, for a real node process, by a small launcher script), never by a switch in the node itself.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popbench.client import NodeClient
from popbench.genesis import ChainParams, make_genesis
from popbench.loop_exceptions import TALLY, install_exception_counter, unexpected_exceptions
from popbench.net.connection import Connection
from popbench.node_config import NodeConfig
from popbench.pop.node import Node
from popbench.wire import Ping
from tests.cluster import LocalCluster

WAIT_S = 30.0

# Runs `popbench ...` with the PoP node's PING handler replaced by one that raises.
RAISING_PING_LAUNCHER = """
import sys

from popbench.pop.node import Node
from popbench.wire import Ping

build_handlers = Node._build_handlers


def with_a_raising_ping_handler(self):
    handlers = build_handlers(self)

    def raise_on_ping(conn, message):
        raise RuntimeError("test hook: the PING handler raises")

    handlers[Ping] = raise_on_ping
    return handlers


Node._build_handlers = with_a_raising_ping_handler

from harness.cli.main import main

sys.argv[0] = "popbench"
main()
"""


class BrokenPingCluster(LocalCluster):
    """A LocalCluster whose nodes run through the launcher above."""

    def _spawn(self, node: int) -> subprocess.Popen[bytes]:
        launcher = self.root / "raising_ping.py"
        launcher.write_text(RAISING_PING_LAUNCHER)
        sock = self.sockets[node]
        args = [sys.executable, str(launcher), "node", "--genesis", str(self.genesis_path), "--node-id", str(node),
                "--data-dir", str(self.root / f"node-{node}"), "--listen-fd", str(sock.fileno())]  # fmt: skip
        log = open(self.root / f"node-{node}.log", "ab")  # noqa: SIM115 (the process owns it)
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),))


def test_an_exception_that_reaches_the_loop_is_counted_and_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        install_exception_counter()
        loop = asyncio.get_running_loop()
        ran: asyncio.Future[None] = loop.create_future()
        loop.call_soon(_raise, "a callback raised")
        loop.call_soon(ran.set_result, None)  # callbacks run in order: the raising one has run by then
        await asyncio.wait_for(ran, WAIT_S)

    before = unexpected_exceptions()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
    assert unexpected_exceptions() == before + 1
    assert TALLY.last is not None and "a callback raised" in TALLY.last
    assert any(record.exc_info is not None for record in caplog.records)


def test_a_message_handler_that_raises_is_counted_in_status_and_closes_only_that_link(tmp_path: Path) -> None:
    async def scenario() -> None:
        install_exception_counter()
        genesis, keys = make_genesis(4, seed="loop-exceptions", params=ChainParams(min_work_bits=4))
        node = Node(NodeConfig(node_id=0, genesis=genesis, key=keys[0], data_dir=tmp_path / "node"))
        node._handlers[Ping] = _raise_on_message  # the test hook
        await node.start()
        try:
            host, port = node.identity.listen_host, node.identity.listen_port
            before = node.status().unexpected_exceptions
            pinging = await NodeClient.connect(host, port, chain_id=genesis.chain_id)
            pinging.send(Ping(1, time.time_ns()))
            await asyncio.wait_for(pinging.closed, WAIT_S)  # the node closed the link whose handler raised
            asking = await NodeClient.connect(host, port, chain_id=genesis.chain_id)
            status = await asking.status(WAIT_S)  # the node still serves everyone else
            asking.close()
            assert status.unexpected_exceptions == before + 1
            assert TALLY.last is not None and "handler for Ping" in TALLY.last and "RuntimeError" in TALLY.last
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_the_cluster_check_fails_a_node_that_counted_an_exception_and_logged_its_traceback(tmp_path: Path) -> None:
    cluster = BrokenPingCluster(tmp_path, 1)
    cluster.start()

    async def provoke() -> None:
        client = await _connect_with_deadline(cluster)
        client.send(Ping(1, time.time_ns()))
        await asyncio.wait_for(client.closed, WAIT_S)
        await cluster.wait_until(lambda s: s[0] is not None and s[0].unexpected_exceptions == 1, WAIT_S, what="the count")

    try:
        asyncio.run(provoke())
        with pytest.raises(AssertionError) as failure:
            cluster.stop()
    finally:
        cluster.stop(check=False)
    assert "node 0 counted 1 unexpected exceptions" in str(failure.value)
    assert "node-0.log holds a traceback" in str(failure.value) and "test hook: the PING handler raises" in str(failure.value)


def test_the_cluster_check_passes_nodes_that_ran_clean(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 1)
    cluster.start()

    async def ping_and_ask() -> None:
        client = await _connect_with_deadline(cluster)
        client.send(Ping(1, time.time_ns()))
        status = await client.status(WAIT_S)
        client.close()
        assert status.unexpected_exceptions == 0

    try:
        asyncio.run(ping_and_ask())
    finally:
        cluster.stop()  # raises if the node counted an exception or logged a traceback
    assert cluster.unclean() == [] and cluster.exceptions_counted == {0: 0}


async def _connect_with_deadline(cluster: LocalCluster) -> NodeClient:
    """The node process is starting: connect as soon as it serves (the socket is already bound)."""
    return await NodeClient.connect(*cluster.address(0), chain_id=cluster.chain_id, timeout_s=WAIT_S)


def _raise(text: str) -> None:
    raise RuntimeError(text)


def _raise_on_message(conn: Connection, message: object) -> None:
    raise RuntimeError(f"test hook: the handler of {type(message).__name__} raises")
