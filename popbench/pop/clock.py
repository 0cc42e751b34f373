"""Time as the PBFT engine sees it: a monotonic clock and one-shot timers.

The engine never reads the system clock or the event loop directly, so the deterministic simulation
(tests/sim) can drive the real engine under virtual time, firing timers early, late or in any order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled before it fires."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic nanoseconds and ``call_later``: all the engine needs of time."""

    def now_ns(self) -> int: ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The production clock: ``time.monotonic_ns`` and the running asyncio (uvloop) loop's timers."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay_s, callback)
