"""A local network of real ``popbench node`` processes for tests.

Each node is its own OS process started from the console script, serving on a listening socket the test
bound first and passed down (``--listen-fd``), so ports are known before any process starts and cannot
race. Readiness and progress are read from the nodes' STATUS over the wire, polled with a deadline.

Stopping checks that the nodes ran clean, as asyncpg's test base fails a test on any exception that
reached the loop and Bitcoin Core's ``stop_node`` fails on unexpected stderr: every STATUS read records the
node's ``unexpected_exceptions``, and :meth:`LocalCluster.stop` fails when any node counted one or any
node log holds a ``Traceback``.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from popbench.client import NodeClient
from popbench.errors import ClientError
from popbench.genesis import ChainParams, make_genesis, write_genesis, write_keys
from popbench.store import node_database
from popbench.wire.status import AnyStatus, PowStatus

POPBENCH = str(Path(sys.executable).with_name("popbench"))
POLL_S = 0.1
Statuses = dict[int, AnyStatus | None]


class LocalCluster:
    """N validators on loopback: start, kill -9, restart, stop; ask them for status."""

    def __init__(self, root: Path, n: int, params: ChainParams | None = None, byzantine: dict[int, str] | None = None) -> None:
        self.root = root
        self.n = n
        self.byzantine = byzantine or {}
        self.genesis, self.keys = make_genesis(n, seed="test-cluster", params=params)
        self.genesis_path = root / "genesis.json"
        write_genesis(self.genesis, self.genesis_path)
        write_keys(self.keys, root / "genesis.keys.json")
        self.sockets = [_listening_socket() for _ in range(n)]
        self.ports = [s.getsockname()[1] for s in self.sockets]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.exceptions_counted: dict[int, int] = {}  # node -> most unexpected exceptions any STATUS reported
        self._clean_checked = False

    @property
    def chain_id(self) -> bytes:
        return self.genesis.chain_id

    def address(self, node: int) -> tuple[str, int]:
        return ("127.0.0.1", self.ports[node])

    def start(self, node: int | None = None) -> None:
        for index in range(self.n) if node is None else [node]:
            self.procs[index] = self._spawn(index)

    def _spawn(self, node: int) -> subprocess.Popen[bytes]:
        sock = self.sockets[node]
        args = [POPBENCH, "node", "--genesis", str(self.genesis_path), "--node-id", str(node),
                "--data-dir", str(self.root / f"node-{node}"), "--listen-fd", str(sock.fileno())]  # fmt: skip
        for peer in range(node):
            args += ["--peer", f"127.0.0.1:{self.ports[peer]}"]
        if node in self.byzantine:
            args += ["--byzantine", self.byzantine[node]]
        log = open(self.root / f"node-{node}.log", "ab")  # noqa: SIM115 (the process owns it)
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),))

    def kill(self, node: int) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, check: bool = True) -> None:
        """SIGTERM every node and wait; then (``check``) fail if any node did not run clean (see :meth:`unclean`)."""
        if self.procs:
            asyncio.run(self.statuses())  # records each live node's last count of unexpected exceptions
        self._terminate()
        if check and not self._clean_checked:
            self._clean_checked = True  # report once: a test that calls stop() is stopped again by its fixture
            problems = self.unclean()
            if problems:
                raise AssertionError("a node did not run clean:\n" + "\n".join(problems))

    def unclean(self) -> list[str]:
        """Why the nodes did not run clean: unexpected exceptions they counted, tracebacks in their logs."""
        problems = [
            f"node {node} counted {count} unexpected exceptions" for node, count in sorted(self.exceptions_counted.items()) if count
        ]
        for log in sorted(self.root.glob("node-*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                problems.append(f"{log.name} holds a traceback:\n{text[text.index('Traceback') :][:3000]}")
        return problems

    def _terminate(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
        for sock in self.sockets:
            sock.close()

    def log(self, node: int) -> str:
        return (self.root / f"node-{node}.log").read_text(errors="replace")

    # -- talking to nodes --------------------------------------------------------------------------
    async def client(self, node: int) -> NodeClient:
        return await NodeClient.connect(*self.address(node), chain_id=self.chain_id)

    async def status(self, node: int) -> AnyStatus | None:
        try:
            client = await self.client(node)
        except ClientError:
            return None
        try:
            status = await client.status(5.0)
        except ClientError:
            return None
        finally:
            client.close()
        counted = max(self.exceptions_counted.get(node, 0), status.unexpected_exceptions)
        self.exceptions_counted[node] = counted
        return status

    async def statuses(self, nodes: list[int] | None = None) -> Statuses:
        chosen = list(self.procs) if nodes is None else nodes
        answers = await asyncio.gather(*(self.status(node) for node in chosen))
        return dict(zip(chosen, answers, strict=True))

    async def wait_until(self, condition: Callable[[Statuses], bool], timeout_s: float,
                         nodes: list[int] | None = None, what: str = "condition") -> Statuses:  # fmt: skip
        """Poll STATUS until ``condition`` holds; on timeout fail with the last statuses and node logs."""
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = await self.statuses(nodes)
            if condition(statuses):
                return statuses
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {_brief(statuses)}")
            await asyncio.sleep(POLL_S)  # polling period of a condition with a deadline

    def _check_alive(self) -> None:
        for node, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"node {node} exited with {proc.returncode}:\n{self.log(node)[-3000:]}")

    async def wait_connected(self, timeout_s: float = 60.0, nodes: list[int] | None = None) -> None:
        expected = self.n - 1
        await self.wait_until(lambda s: all(x is not None and x.peers >= expected for x in s.values()),
                              timeout_s, nodes, "every node linked to every other")  # fmt: skip


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _brief(statuses: Statuses) -> str:
    return ", ".join(f"{node}: " + ("down" if s is None else _brief_one(s)) for node, s in statuses.items())


def _brief_one(status: AnyStatus) -> str:
    """Height, view, peers, mempool; for a PoW node also its tip, total work and reorgs, what its waits are about."""
    line = f"h={status.height} v={status.view} peers={status.peers} mempool={status.mempool}"
    if isinstance(status, PowStatus):
        line += f" tip={status.pow.tip_hash[:8]} work=2^{status.pow.total_work_log2} reorgs={status.pow.reorgs}"
    return line


def chains_agree(paths: list[Path]) -> tuple[bool, int]:
    """Whether every database holds the same block hash at every height they share; and the max height."""
    from popbench.store import Store

    hashes: dict[int, bytes] = {}
    top = 0
    for path in paths:
        with Store(path) as store:
            for height, block_hash in store.block_hashes():
                top = max(top, height)
                if hashes.setdefault(height, block_hash) != block_hash:
                    return False, top
    return True, top


def node_db(root: Path, node: int) -> Path:
    return node_database(root / f"node-{node}", node)
