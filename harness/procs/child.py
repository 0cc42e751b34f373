"""The child side of a forked process: what runs between ``os.fork()`` and the child's own work.

Only the child runs this module (pyperf's _manager/_worker split). It makes the child safe to live on
its own: it dies with the supervisor (PR_SET_PDEATHSIG), joins the run's process group, forgets the
parent's event loop and signal wiring, sends its stderr to its log file, and reports to the parent as
newline-delimited JSON over a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from popbench.loop_exceptions import forget_parent_exceptions

PR_SET_PDEATHSIG = 1
EXIT_TARGET_FAILED = 70


class ChildContext:
    """What a child's target gets: its name, its listening socket if any, and a way to report."""

    def __init__(self, name: str, report_fd: int, listen_socket: socket.socket | None, options: dict[str, Any]) -> None:
        self.name = name
        self.listen_socket = listen_socket
        self.options = options
        self._report_fd = report_fd

    def report(self, event: str, **fields: Any) -> None:
        """One JSON line to the supervisor: ``{"event": ..., **fields}``."""
        line = orjson.dumps({"event": event, **fields}, default=_plain, option=orjson.OPT_NON_STR_KEYS) + b"\n"
        view = memoryview(line)
        while view:
            written = os.write(self._report_fd, view)
            view = view[written:]


def _plain(value: object) -> object:
    """What orjson cannot encode itself: typed records (a node's final STATUS) as plain JSON values."""
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


Target = Callable[[ChildContext], None]


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the supervisor dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def join_group(group: int) -> None:
    try:
        os.setpgid(0, group or 0)
    except OSError:
        os.setpgid(0, 0)  # the group's last member is gone: start a new one (the supervisor tracks pids too)


def forget_parent_loop() -> None:
    """The parent's loop, its signal wake-up fd and handlers are not ours: reset them before building our own."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    # SIGUSR1 asks a node to reload its emulated faults (popbench/faults.py); until the node's loop handles
    # it, ignore it rather than die of it (the default action), so a fault sent to a restarting node is safe
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop_policy(None)
    forget_parent_exceptions()  # the supervisor's count of loop exceptions is not ours


def redirect_output(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(fd)
    os.close(devnull)
    # whatever sys.stderr was in the parent (a test runner may have swapped it), the child writes to fd 2
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115


def close_inherited(sockets: list[socket.socket], fds: list[int]) -> None:
    """Close what the supervisor opened for other children (their listening sockets and pipes).

    Sockets are detached before closing, so their Python objects can never close a reused fd later.
    """
    for sock in sockets:
        if sock.fileno() >= 0:
            os.close(sock.detach())
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def child_main(parent_pid: int, group: int, ctx: ChildContext, target: Target, log_path: str,
               foreign_sockets: list[socket.socket], foreign_fds: list[int]) -> None:  # fmt: skip
    """Never returns: runs ``target`` and exits the process with 0, or 70 after an exception."""
    status = 0
    try:
        die_with_parent(parent_pid)
        join_group(group)
        redirect_output(log_path)
        forget_parent_loop()
        close_inherited(foreign_sockets, foreign_fds)
        target(ctx)
    except BaseException:
        traceback.print_exc()
        status = EXIT_TARGET_FAILED
    finally:
        sys.stderr.flush()
        os._exit(status)
