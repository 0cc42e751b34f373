"""The supervisor: forks every child of a run, pins it, hears its reports, reaps it, and leaves nothing.

Parent side only (the child side is :mod:`harness.procs.child`). Children are forked from this warm process
after ``gc.freeze()``, so they share its pages; each reports over its own pipe as newline-delimited JSON,
read in the supervisor's event loop. Readiness is a message: :meth:`wait_for` waits for an event from a
set of children with a deadline and tells a dead child (exit status and its stderr tail) from a slow one.
No orphans: children die with the supervisor (PR_SET_PDEATHSIG), live in the run's own process group,
and :meth:`stop_all` / :meth:`kill_all` end every one of them. Details: docs/supervisor.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

from harness.kinds import ChildId, ChildKind
from harness.procs.child import ChildContext, Target, child_main
from popbench.errors import NodeStartError

STDERR_TAIL_BYTES = 2000
REAP_INTERVAL_S = 0.05


@dataclass
class Child:
    """One forked process and what the supervisor knows of it."""

    id: ChildId
    target: Target
    log_path: Path
    listen_socket: socket.socket | None = None
    options: dict[str, Any] = field(default_factory=dict)
    cpus: list[int] | None = None
    pid: int = 0
    pipe_fd: int = -1
    started_ns: int = 0
    exit_status: int | None = None  # waitpid status, decoded by ``describe_exit``
    exited_ns: int = 0
    stopping: bool = False
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # last fields of each event
    buffer: bytes = b""

    @property
    def name(self) -> str:
        return str(self.id)

    @property
    def kind(self) -> ChildKind:
        return self.id.kind

    @property
    def alive(self) -> bool:
        return self.pid > 0 and self.exit_status is None

    def stderr_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-STDERR_TAIL_BYTES:].decode(errors="replace")

    def describe_exit(self) -> str:
        status = self.exit_status
        if status is None:
            return "still running"
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit code {os.WEXITSTATUS(status)}"


@dataclass
class Crash:
    name: str
    kind: ChildKind
    index: int
    pid: int
    at_ns: int
    exit: str
    stderr_tail: str


class Supervisor:
    """Forks and tracks the children of one run. Use as an async context manager."""

    def __init__(self, run_dir: Path, on_event: Callable[[Child, dict[str, Any]], None] | None = None) -> None:
        self.run_dir = run_dir
        self.children: dict[ChildId, Child] = {}
        self.crashes: list[Crash] = []
        self.on_event = on_event or (lambda child, event: None)
        self._group = 0
        self._waiters: list[tuple[str, set[ChildId], asyncio.Future[None]]] = []
        self._reaper: asyncio.Task[None] | None = None
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    async def __aenter__(self) -> Supervisor:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop_all()
        finally:
            self.kill_all()
            if self._reaper is not None:
                self._reaper.cancel()

    # -- forking -----------------------------------------------------------------------------------
    def spawn(self, child_id: ChildId, target: Target, listen_socket: socket.socket | None = None,
              cpus: list[int] | None = None, options: dict[str, Any] | None = None) -> Child:  # fmt: skip
        log_path = self.run_dir / "logs" / f"{child_id}.log"
        child = Child(child_id, target, log_path, listen_socket, options or {}, cpus)
        self.children[child_id] = child
        self._fork(child)
        return child

    def restart(self, child_id: ChildId) -> Child:
        """Fork ``child_id`` again with the same target and listening socket (kept open here for this)."""
        old = self.children[child_id]
        if old.alive:
            raise NodeStartError(f"{child_id} is still running (pid {old.pid})")
        fresh = Child(old.id, old.target, old.log_path, old.listen_socket, old.options, old.cpus)
        self.children[child_id] = fresh
        self._fork(fresh)
        return fresh

    def _fork(self, child: Child) -> None:
        read_fd, write_fd = os.pipe()
        foreign_sockets = [c.listen_socket for c in self.children.values() if c is not child and c.listen_socket]
        foreign_fds = [c.pipe_fd for c in self.children.values() if c.pipe_fd >= 0] + [read_fd]
        gc.freeze()  # everything imported so far stays shared with the child instead of copied on write
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            ctx = ChildContext(child.name, write_fd, child.listen_socket, child.options)
            child_main(parent, self._group, ctx, child.target, str(child.log_path), foreign_sockets, foreign_fds)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        child.pid, child.pipe_fd, child.started_ns = pid, read_fd, time.time_ns()
        self._adopt_into_group(pid)
        self._pin(child)
        asyncio.get_running_loop().add_reader(read_fd, self._read_pipe, child)
        self._write_pids()

    def _write_pids(self) -> None:
        """``pids.json`` in the run directory: which pid is which child, for users and tests."""
        pids = {c.name: c.pid for c in self.children.values() if c.pid}
        partial = self.run_dir / "pids.tmp"
        partial.write_bytes(orjson.dumps(pids))
        partial.replace(self.run_dir / "pids.json")

    def _adopt_into_group(self, pid: int) -> None:
        # OSError: the child set it already, or exited already; the child's own setpgid covers the race
        with contextlib.suppress(OSError):
            os.setpgid(pid, self._group or pid)
        if not self._group:
            self._group = pid

    def _pin(self, child: Child) -> None:
        if child.cpus is None:
            return
        try:
            psutil.Process(child.pid).cpu_affinity(child.cpus)
        except (psutil.Error, AttributeError, OSError):
            child.cpus = None  # affinity unsupported here: the child runs unpinned

    # -- hearing children --------------------------------------------------------------------------
    def _read_pipe(self, child: Child) -> None:
        try:
            data = os.read(child.pipe_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe(child)
            return
        lines = (child.buffer + data).split(b"\n")
        child.buffer = lines.pop()
        for line in lines:
            self._on_line(child, line)

    def _on_line(self, child: Child, line: bytes) -> None:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict) or "event" not in event:
            return
        child.events[str(event["event"])] = event
        self.on_event(child, event)
        self._wake_waiters()

    def _close_pipe(self, child: Child) -> None:
        if child.pipe_fd >= 0:
            asyncio.get_running_loop().remove_reader(child.pipe_fd)
            os.close(child.pipe_fd)
            child.pipe_fd = -1

    async def wait_for(self, event: str, names: Iterable[ChildId], timeout_s: float) -> dict[ChildId, dict[str, Any]]:
        """Wait until every named child has reported ``event``; raise NodeStartError on death or timeout."""
        wanted = set(names)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((event, wanted, future))
        self._wake_waiters()
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            slow = sorted(n for n in wanted if event not in self.children[n].events)
            raise NodeStartError(f"{len(slow)} children still alive but did not report {event!r} within "
                                 f"{timeout_s} s: {', '.join(str(n) for n in slow[:10])}") from None  # fmt: skip
        finally:
            self._waiters = [w for w in self._waiters if w[2] is not future]
        return {name: self.children[name].events[event] for name in wanted}

    def _wake_waiters(self) -> None:
        for event, wanted, future in self._waiters:
            if future.done():
                continue
            dead = [self.children[n] for n in wanted if not self.children[n].alive and event not in self.children[n].events]
            if dead:
                first = dead[0]
                future.set_exception(NodeStartError(
                    f"{first.name} (pid {first.pid}) died before reporting {event!r}: {first.describe_exit()}\n"
                    f"--- its stderr ---\n{first.stderr_tail()}"))  # fmt: skip
            elif all(event in self.children[n].events for n in wanted):
                future.set_result(None)

    # -- reaping -----------------------------------------------------------------------------------
    async def _reap_forever(self) -> None:
        while True:
            self.reap()
            await asyncio.sleep(REAP_INTERVAL_S)  # waitpid polling period; exits are also reaped on stop

    def reap(self) -> None:
        for child in self.children.values():
            if not child.alive:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = child.pid, 0
            if pid:
                self._exited(child, status)

    def _exited(self, child: Child, status: int) -> None:
        child.exit_status, child.exited_ns = status, time.time_ns()
        if child.pipe_fd >= 0:
            self._read_pipe(child)  # the last words it wrote before dying
            self._close_pipe(child)
        if self._is_crash(child, status):
            self.crashes.append(
                Crash(child.name, child.kind, child.id.index, child.pid, child.exited_ns, child.describe_exit(), child.stderr_tail())
            )
        self._wake_waiters()

    @staticmethod
    def _is_crash(child: Child, status: int) -> bool:
        """Nodes never end on their own; drivers and miners may, but only with exit status 0."""
        if child.stopping:
            return False
        return child.kind == ChildKind.NODE or not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)

    # -- stopping ----------------------------------------------------------------------------------
    def signal(self, names: Iterable[ChildId], signum: int) -> None:
        for name in names:
            child = self.children[name]
            if child.alive:
                child.stopping = child.stopping or signum in (signal.SIGTERM, signal.SIGINT)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    def kill(self, name: ChildId) -> None:
        """Fault injection: SIGKILL one child; it is recorded as a crash."""
        self.signal([name], signal.SIGKILL)

    def wait_exited(self, names: Iterable[ChildId]) -> None:
        """Reap these children, blocking until each has exited (after a SIGKILL: at once)."""
        for name in names:
            child = self.children[name]
            if child.alive:
                try:
                    _, status = os.waitpid(child.pid, 0)
                except ChildProcessError:
                    status = 0
                self._exited(child, status)

    async def stop(self, names: Iterable[ChildId], grace_s: float = 10.0) -> None:
        chosen = [n for n in names if self.children[n].alive]
        self.signal(chosen, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(self.children[n].alive for n in chosen) and time.monotonic() < deadline:
            self.reap()
            await asyncio.sleep(REAP_INTERVAL_S)  # waiting for exits, bounded by the grace period
        for name in chosen:
            self.children[name].stopping = True
        self.signal([n for n in chosen if self.children[n].alive], signal.SIGKILL)
        self.reap()

    async def stop_all(self, grace_s: float = 10.0) -> None:
        await self.stop(list(self.children), grace_s)

    def kill_all(self) -> None:
        """Last resort, synchronous: SIGKILL the run's group and every child we know, then reap."""
        for child in self.children.values():
            child.stopping = True
        if self._group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._group, signal.SIGKILL)
        self.signal([c.id for c in self.children.values()], signal.SIGKILL)
        for child in self.children.values():
            if child.alive:
                try:
                    _, status = os.waitpid(child.pid, 0)
                except ChildProcessError:
                    status = 0
                child.exit_status = status

    def pids(self, kind: ChildKind | None = None) -> dict[ChildId, int]:
        return {c.id: c.pid for c in self.children.values() if c.alive and (kind is None or c.kind == kind)}
