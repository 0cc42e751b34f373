"""Unexpected exceptions of this process: every exception that reaches its event loop is counted and logged.

An exception reaches the loop when a callback, a protocol method or a task nobody awaits raises (a
message handler that raises is routed here by popbench.net.connection). That is always a bug, so each
node and harness process installs :func:`install_exception_counter` on its loop: the handler counts,
then logs as asyncio's default handler does (message and traceback to stderr, i.e. the process's log).
The count travels in STATUS (``unexpected_exceptions``) and in the harness children's reports; the
tests fail when it is not 0 or when a log holds a traceback (tests/cluster.py).

The count is per process (one process runs one loop); a forked child starts again from 0.
"""

from __future__ import annotations

import asyncio
from typing import Any


class ExceptionTally:
    """How many exceptions reached the loop in this process, and the last one's message."""

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.count += 1
        error = context.get("exception")
        self.last = f"{context.get('message', '')}: {error!r}" if error is not None else str(context.get("message"))
        loop.default_exception_handler(context)


TALLY = ExceptionTally()


def install_exception_counter(loop: asyncio.AbstractEventLoop | None = None) -> ExceptionTally:
    """Count (and log) every exception that reaches ``loop`` (default: the running loop)."""
    (loop or asyncio.get_running_loop()).set_exception_handler(TALLY.handle)
    return TALLY


def unexpected_exceptions() -> int:
    return TALLY.count


def forget_parent_exceptions() -> None:
    """After fork: the parent's count is not the child's."""
    TALLY.count = 0
    TALLY.last = None
