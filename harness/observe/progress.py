"""What a person watching a run sees: the status line each interval, and progress while forking and waiting.

Every status line starts with the time since the load window started, the window's length and the phase
the run is in (warm-up, steady, cool-down, then drain while the drivers wait for outstanding items):
``t+12.0s/60s  steady  height 153 ...``; in the drain it ends with the items still outstanding.
PoP example: ``t+12.0s/60s  steady  height 153  committed 412/s  p99 180 ms  peers 99.0  nodes 100 alive 97 answered  cpu nodes 181%``
- height: the highest committed height, each node by its latest answer;
- committed/s: growth since the previous sample of the most proofs any node has committed (each node by
  its latest answer), per second;
- p99: the worst driver's p99 commit latency over the commits it saw in the last status interval
  (``-``: none in it);
- peers: mean validator links per answering node;
- nodes: node processes alive, and of them the nodes that answered STATUS by the sample's deadline
  (a node busy past the deadline is alive but not answering: see harness/observe/collect.py);
- cpu nodes: the nodes' summed CPU over the interval (100% = one core).
In the drain the line ends with the drivers' outstanding items, with the time of their report when it
is more than STALE_AFTER_S old.
PoW example: ``t+30.0s/60s  steady  height 41  tips 1  hash rate 1.85 MH/s  work bits 21  stale 2  cpu nodes 190%  nodes 10 alive 10 answered``
- tips: distinct tips among the nodes; hash rate: hashes over the interval, all nodes together;
- stale: blocks mined (all nodes) that are not on the heaviest tip's chain, as the report counts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from harness.observe.collect import Sample
from harness.profile import Run
from popbench.wire.status import PowSection, PowStatus

PROGRESS_STEPS = 10  # forking and waiting print a line at every tenth of the nodes
PROGRESS_MIN_TOTAL = 20  # fewer nodes than this fork and connect in a moment: no progress lines
PROGRESS_EVERY_S = 1.0  # at most one progress line a second per step
STALE_AFTER_S = 2.0  # a driver's figure older than this is shown with its time (drivers report every second)


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


@dataclass
class DriverProgress:
    """A driver's latest progress report (harness/load/drivers.py): its p99 over the last status interval's
    commits (None: none in it), its items outstanding, and when it reported (wall-clock ns)."""

    p99_ms: float | None = None
    outstanding: int | None = None
    at_ns: int = 0
    sent: int = 0  # items sent so far (popbench monitor's delivery, harness/observe/service_live.py)
    committed: int = 0  # of them, seen committed
    latency_buckets: list[int] = field(default_factory=list)  # every commit's latency so far, per LATENCY_BUCKETS_S (/metrics)
    latency_sum_s: float = 0.0


class StatusLine:
    """Prints a line per periodic sample, from what the collector and the drivers last said.

    Nodes that did not answer a sample keep their last answer for the height and the committed count
    (so a node busy past the sample's deadline does not make the count jump), but only the nodes that
    answered count as answering: the line says how many answered and how many are alive as processes."""

    def __init__(self, run: Run, console: Callable[[str], None]) -> None:
        self.run = run
        self.interval_s = run.status_interval_s
        self.console = console
        self.previous: Sample | None = None
        self.drivers: dict[str, DriverProgress] = {}
        self._committed: dict[int, int] = {}  # node id -> its proofs_committed at its latest answer
        self._heights: dict[int, int] = {}  # node id -> its height at its latest answer
        self._committed_before = 0
        self._last_print = 0.0

    @property
    def outstanding(self) -> int:
        """Items the drivers wait for, as of their latest progress reports."""
        return sum(d.outstanding or 0 for d in self.drivers.values())

    def outstanding_as_of_ns(self) -> int | None:
        """When the oldest of those reports was made (None: no driver reported yet)."""
        return min((d.at_ns for d in self.drivers.values() if d.outstanding is not None), default=None)

    def driver_progress(self, driver: str, event: dict[str, Any]) -> None:
        progress = self.drivers.setdefault(driver, DriverProgress())
        progress.p99_ms = event.get("p99_ms")
        progress.at_ns = int(event.get("at_ns") or time.time_ns())
        if "outstanding" in event:
            progress.outstanding = int(event["outstanding"])
        progress.sent = int(event.get("sent") or progress.sent)
        progress.committed = int(event.get("committed") or progress.committed)
        if "latency_buckets" in event:
            progress.latency_buckets, progress.latency_sum_s = list(event["latency_buckets"]), float(event["latency_sum_s"])

    def on_sample(self, sample: Sample, window: tuple[int, int] | None) -> None:
        previous, self.previous = self.previous, sample
        self._remember(sample)
        if previous is None or time.monotonic() - self._last_print < self.interval_s * 0.5:
            self._committed_before = self.committed_count()
            return
        self._last_print = time.monotonic()
        self.console(self.render(previous, sample, window))
        self._committed_before = self.committed_count()

    def _remember(self, sample: Sample) -> None:
        for node_id, status in sample.statuses.items():
            self._heights[node_id] = status.height
            if not isinstance(status, PowStatus):
                self._committed[node_id] = status.counters.proofs_committed

    def committed_count(self) -> int:
        """The most proofs any node has committed, by its latest answer."""
        return max(self._committed.values(), default=0)

    def render(self, previous: Sample, sample: Sample, window: tuple[int, int] | None) -> str:
        elapsed_s = max(1e-9, (sample.at_ns - previous.at_ns) / 1e9)
        since = (sample.at_ns - window[0]) / 1e9 if window else 0.0
        head = clock(since, self.run) if window else f"t{since:+.1f}s"
        tail = self._drain_tail(since, window)
        nodes = f"nodes {len(sample.processes)} alive {len(sample.statuses)} answered"
        if any(isinstance(s, PowStatus) for s in sample.statuses.values()):
            return f"{head}  " + _pow_line(previous, sample, elapsed_s) + f"  {nodes}" + tail
        statuses = sample.statuses.values()
        rate = max(0, self.committed_count() - self._committed_before) / elapsed_s
        p99 = max((d.p99_ms for d in self.drivers.values() if d.p99_ms is not None), default=None)
        peers = sum(s.peers for s in statuses) / len(statuses) if statuses else 0.0
        cpu = _cpu_delta(previous, sample) / elapsed_s * 100
        p99_text = f"{p99:,.0f} ms" if p99 is not None else "-"
        return (f"{head}  height {max(self._heights.values(), default=0)}  committed {rate:,.0f}/s  p99 {p99_text}  "
                f"peers {peers:.1f}  {nodes}  cpu nodes {cpu:.0f}%{tail}")  # fmt: skip

    def _drain_tail(self, since_s: float, window: tuple[int, int] | None) -> str:
        """In the drain: how many items the drivers still wait for, and when they said so if that was a
        while ago (their reports come once a second)."""
        as_of = self.outstanding_as_of_ns()
        if phase_at(since_s, self.run) is not WindowPhase.DRAIN or as_of is None:
            return ""
        return f"  outstanding {self.outstanding:,}" + stale_note(as_of, window)


def stale_note(at_ns: int, window: tuple[int, int] | None, now_ns: int | None = None) -> str:
    """`` (as of t+58.2s)`` when a figure is more than STALE_AFTER_S old, else nothing."""
    now = time.time_ns() if now_ns is None else now_ns
    if (now - at_ns) / 1e9 <= STALE_AFTER_S:
        return ""
    return f" (as of t{(at_ns - window[0]) / 1e9:+.1f}s)" if window else f" (as of {(now - at_ns) / 1e9:.1f} s ago)"


def _pow_line(previous: Sample, sample: Sample, elapsed_s: float) -> str:
    """PoW: tip height, distinct tips, network hash rate over the interval, stale blocks, CPU."""
    sections = [s.pow for s in sample.statuses.values() if isinstance(s, PowStatus)]
    before = sum(s.pow.hashes for s in previous.statuses.values() if isinstance(s, PowStatus))
    rate = (sum(p.hashes for p in sections) - before) / elapsed_s
    cpu = _cpu_delta(previous, sample) / elapsed_s * 100
    return (f"height {max(p.height for p in sections)}  tips {len({p.tip_hash for p in sections})}  "
            f"hash rate {rate / 1e6:,.2f} MH/s  work bits {max(p.work_bits for p in sections)}  "
            f"stale {stale_mined(sections)}  cpu nodes {cpu:.0f}%")  # fmt: skip


def stale_mined(sections: list[PowSection]) -> int:
    """Blocks mined that are not on the heaviest tip's chain: every node's blocks mined (since its start)
    less that chain's height, which holds one mined block per height. The report's stale blocks, counted
    on the chain as it stands (docs/metrics.md), not the blocks off its own chain that one node knows."""
    heaviest = max(sections, key=lambda p: p.total_work)
    return max(0, sum(p.blocks_mined for p in sections) - heaviest.height)


def _cpu_delta(previous: Sample, sample: Sample) -> float:
    """CPU the nodes used between two samples. A node restarted in between (kill, wipe) counts from its new
    start: its cumulative figure fell, and the difference once printed `cpu nodes -328%`."""
    return sum(_used_since(previous.processes[n].cpu_s, p.cpu_s) for n, p in sample.processes.items() if n in previous.processes)


def _used_since(before_s: float, now_s: float) -> float:
    return now_s - before_s if now_s >= before_s else now_s
