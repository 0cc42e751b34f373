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
    """The production clock: ``time.monotonic_ns`` and the running asyncio (uvloop) loop's timers.

    ``drift_ppm`` (a clock-skew fault, popbench/faults.py) makes it run fast (+) or slow: its timers fire
    early or late and its elapsed times stretch by the same factor, as a drifting oscillator's would.
    """

    def __init__(self) -> None:
        self.drift_ppm = 0.0
        self._since_ns = 0  # monotonic time of the last drift change, and this clock's reading then
        self._read_then_ns = 0

    def now_ns(self) -> int:
        now = time.monotonic_ns()
        if not self._since_ns:  # never drifted: the plain monotonic clock
            return now
        return self._read_then_ns + round((now - self._since_ns) * (1 + self.drift_ppm / 1e6))

    def set_drift(self, drift_ppm: float) -> None:
        """Change the drift from now on; readings stay continuous and never go back."""
        self._read_then_ns = self.now_ns()
        self._since_ns = time.monotonic_ns()
        self.drift_ppm = drift_ppm

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay_s / (1 + self.drift_ppm / 1e6), callback)
