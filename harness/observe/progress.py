"""What a person watching a run sees: the status line each interval, and progress while forking and waiting.

Every status line starts with the time since the load window started, the window's length and the phase
the run is in (warm-up, steady, cool-down, then drain while the drivers wait for outstanding items):
``t+12.0s/60s  steady  height 153 ...``; in the drain it ends with the items still outstanding.
PoP example: ``t+12.0s/60s  steady  height 153  committed 412/s  p99 180 ms  peers 99.0  nodes up 100  cpu nodes 181%``
- height: the highest committed height among nodes that answered;
- committed/s: proofs committed since the previous line, by the node that committed most, per second;
- p99: the worst per-driver p99 commit latency over the drivers' last progress second;
- peers: mean validator links per answering node; nodes up: nodes that answered STATUS in time;
- cpu nodes: the nodes' summed CPU over the interval (100% = one core).
PoW example: ``t+30.0s/60s  steady  height 41  tips 1  hash rate 1.85 MH/s  work bits 21  stale 2  nodes up 10  cpu nodes 190%``
- tips: distinct tips among the nodes; hash rate: hashes over the interval, all nodes together;
- stale: the most stale (off-main-chain) blocks any one node knows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from harness.observe.collect import Sample
from harness.profile import Run
from popbench.wire.status import PowStatus

PROGRESS_STEPS = 10  # forking and waiting print a line at every tenth of the nodes
PROGRESS_MIN_TOTAL = 20  # fewer nodes than this fork and connect in a moment: no progress lines
PROGRESS_EVERY_S = 1.0  # at most one progress line a second per step


class WindowPhase(StrEnum):
    """Where in the load window a moment falls (docs/report.md, "The terminal")."""

    STARTING = "starting"  # before the window's start (drivers connect in the go margin)
    WARM_UP = "warm-up"
    STEADY = "steady"
    COOL_DOWN = "cool-down"
    DRAIN = "drain"  # after the window: drivers wait for outstanding items


def phase_at(since_s: float, run: Run) -> WindowPhase:
    """The phase ``since_s`` seconds after the window started, under the profile's run settings."""
    if since_s < 0:
        return WindowPhase.STARTING
    if since_s < run.warmup_s:
        return WindowPhase.WARM_UP
    if since_s < run.duration_s - run.cooldown_s:
        return WindowPhase.STEADY
    return WindowPhase.COOL_DOWN if since_s < run.duration_s else WindowPhase.DRAIN


def clock(since_s: float, run: Run) -> str:
    """``t+12.0s/60s  steady``: time since the window started, its length, and the phase."""
    return f"t{since_s:+.1f}s/{run.duration_s:g}s  {phase_at(since_s, run)}"


class StepProgress:
    """Counts toward a total and prints ``  listening 40/100`` at each tenth reached, at most once every
    PROGRESS_EVERY_S, while a large step runs; once it has printed, it also prints the end. A step that is
    over within PROGRESS_EVERY_S, or counts fewer than PROGRESS_MIN_TOTAL, prints nothing."""

    def __init__(self, label: str, total: int, console: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.console, self.clock = label, total, console, clock
        self.quiet = total < PROGRESS_MIN_TOTAL
        self.count = 0
        self._next_step = 1
        self._last_print = clock()
        self._printed = False
        self._marked: set[int] = set()

    def mark(self, key: int) -> None:
        """Count ``key`` once, however often it reports (a restarted node says "listening" again)."""
        if key not in self._marked:
            self._marked.add(key)
            self.advance()

    def advance(self, by: int = 1) -> None:
        self.count += by
        if self.quiet or self._next_step > PROGRESS_STEPS:
            return
        reached = self.count * PROGRESS_STEPS // self.total
        if reached < self._next_step:
            return
        self._next_step = reached + 1
        finished = self.count >= self.total
        if (finished and self._printed) or self.clock() - self._last_print >= PROGRESS_EVERY_S:
            self._last_print, self._printed = self.clock(), True
            self.console(f"  {self.label} {self.count}/{self.total}")


class StatusLine:
    def __init__(self, run: Run, console: Callable[[str], None]) -> None:
        self.run = run
        self.interval_s = run.status_interval_s
        self.console = console
        self.previous: Sample | None = None
        self.p99_ms: dict[str, float | None] = {}
        self.outstanding: dict[str, int] = {}
        self._last_print = 0.0

    def driver_progress(self, driver: str, event: dict[str, Any]) -> None:
        self.p99_ms[driver] = event.get("p99_ms")
        if "outstanding" in event:
            self.outstanding[driver] = int(event["outstanding"])

    def on_sample(self, sample: Sample, window: tuple[int, int] | None) -> None:
        previous, self.previous = self.previous, sample
        if previous is None or time.monotonic() - self._last_print < self.interval_s * 0.5:
            return
        self._last_print = time.monotonic()
        self.console(self.render(previous, sample, window))

    def render(self, previous: Sample, sample: Sample, window: tuple[int, int] | None) -> str:
        elapsed_s = max(1e-9, (sample.at_ns - previous.at_ns) / 1e9)
        since = (sample.at_ns - window[0]) / 1e9 if window else 0.0
        head = clock(since, self.run) if window else f"t{since:+.1f}s"
        tail = self._drain_tail(since)
        if any(isinstance(s, PowStatus) for s in sample.statuses.values()):
            return f"{head}  " + _pow_line(previous, sample, elapsed_s) + tail
        statuses = sample.statuses.values()
        height = max((s.height for s in statuses), default=0)
        rate = (_committed(sample) - _committed(previous)) / elapsed_s
        p99 = max((v for v in self.p99_ms.values() if v is not None), default=None)
        peers = sum(s.peers for s in statuses) / len(statuses) if statuses else 0.0
        cpu = _cpu_delta(previous, sample) / elapsed_s * 100
        p99_text = f"{p99:,.0f} ms" if p99 is not None else "-"
        return (f"{head}  height {height}  committed {rate:,.0f}/s  p99 {p99_text}  "
                f"peers {peers:.1f}  nodes up {len(sample.statuses)}  cpu nodes {cpu:.0f}%{tail}")  # fmt: skip

    def _drain_tail(self, since_s: float) -> str:
        """In the drain: how many items the drivers still wait for (their last progress report)."""
        if phase_at(since_s, self.run) is not WindowPhase.DRAIN or not self.outstanding:
            return ""
        return f"  outstanding {sum(self.outstanding.values()):,}"


def _pow_line(previous: Sample, sample: Sample, elapsed_s: float) -> str:
    """PoW: tip height, distinct tips, network hash rate over the interval, stale blocks, CPU."""
    sections = [s.pow for s in sample.statuses.values() if isinstance(s, PowStatus)]
    before = sum(s.pow.hashes for s in previous.statuses.values() if isinstance(s, PowStatus))
    rate = (sum(p.hashes for p in sections) - before) / elapsed_s
    cpu = _cpu_delta(previous, sample) / elapsed_s * 100
    return (f"height {max(p.height for p in sections)}  tips {len({p.tip_hash for p in sections})}  "
            f"hash rate {rate / 1e6:,.2f} MH/s  work bits {max(p.work_bits for p in sections)}  "
            f"stale {max(p.stale_blocks for p in sections)}  nodes up {len(sections)}  cpu nodes {cpu:.0f}%")  # fmt: skip


def _committed(sample: Sample) -> int:
    return max((s.counters.proofs_committed for s in sample.statuses.values()), default=0)


def _cpu_delta(previous: Sample, sample: Sample) -> float:
    return sum(p.cpu_s - previous.processes[n].cpu_s for n, p in sample.processes.items() if n in previous.processes)
