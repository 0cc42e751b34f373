"""CPU time from the kernel's own counters, in one place.

User plus system seconds, exactly as the kernel accounts them (``/proc/<pid>/stat`` through psutil, or
``times(2)`` for this process): cumulative, so a difference over a window is the exact CPU spent in it,
with no sampling error.
"""

from __future__ import annotations

import os
from typing import Protocol


def own_cpu_s() -> float:
    """CPU seconds this process has used so far (its reaped children excluded)."""
    times = os.times()
    return times.user + times.system


class CpuTimes(Protocol):
    """What psutil's ``Process.cpu_times()`` returns, as far as CPU time is concerned."""

    @property
    def user(self) -> float: ...

    @property
    def system(self) -> float: ...


def process_cpu_s(times: CpuTimes) -> float:
    """CPU seconds of a psutil ``cpu_times()`` reading: user plus system, children excluded."""
    return float(times.user + times.system)
