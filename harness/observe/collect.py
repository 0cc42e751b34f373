"""The collector: samples every node's STATUS and psutil figures, and the supervisor's own CPU.

It runs in the supervisor's event loop and keeps its schedule whatever the nodes do (docs/metrics.md,
"The status line"): samples start on a fixed grid of ``run.status_interval_s``, and each waits for the
nodes' answers only until its deadline (a share of the interval), so a dead, slow or starved node costs
the others nothing. Each node has at most one STATUS request in flight, over one kept connection: a
node that has not answered by the deadline counts as not answering in that sample, and its request stays
in flight for the next sample instead of being sent again (a saturated node is not asked twice as often).
A node whose process is gone (a planned kill) is not dialled at all: the supervisor keeps its listening
socket open for the restart, so a dial would sit in the kernel's backlog until the handshake timed out.
CPU comes from psutil's cumulative CPU times (differences between samples, so no blocking interval);
USS is read less often because it walks /proc/<pid>/smaps (but at least every USS_MAX_GAP_S, so a soak's
growth verdict has a USS point per sample); each node's database size (its SQLite file and WAL, two
stats) is read from the supervisor's side every sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import psutil

from harness.host.cputime import own_cpu_s, process_cpu_s
from harness.profile import Run
from popbench.client import NodeClient
from popbench.errors import ClientError, ProtocolError
from popbench.wire.status import AnyStatus

SAMPLE_DEADLINE_S = 5.0  # a sample waits at most this long for the nodes' answers ...
SAMPLE_DEADLINE_SHARE = 0.8  # ... and at most this share of the status interval, so the next one starts on time
MIN_SAMPLE_SHARE = 0.25  # a sample squeezed before a boundary still waits this share of the deadline (else it is dropped)
SAMPLE_MARGIN_S = 0.05  # a sample ends this long before the next is due: reading the processes takes a moment
STATUS_GIVE_UP_S = 30.0  # a STATUS request unanswered this long: its connection is closed and dialled again
USS_EVERY_SAMPLES = 10  # at most every 10th sample reads USS (it walks /proc/<pid>/smaps) ...
USS_SAMPLES_IN_WINDOW = 5  # ... but often enough that the steady window holds at least this many
USS_MAX_GAP_S = 60.0  # ... and at least this often: a soak sampling every 5 minutes reads it every sample
Address = tuple[str, int]
Dial = Callable[[str, int, bytes], Awaitable[NodeClient]]
PSUTIL_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


class Boundary(StrEnum):
    """A sample taken on purpose at an edge of the steady window (harness/metrics/cost.py differences the
    cumulative counters between the two, so the cost figures cover exactly that window)."""

    STEADY_START = "steady_start"
    STEADY_END = "steady_end"


@dataclass
class ProcessSample:
    cpu_s: float  # cumulative user + system CPU seconds
    uss_bytes: int | None
    open_files: int
    ctx_switches: int
    rss_bytes: int | None = None  # resident set size, cheap to read every sample (popbench_node_resident_bytes)
    db_bytes: int | None = None  # the node's SQLite database plus its WAL (None: its path is not known here)


@dataclass
class Sample:
    """One round of observations at wall-clock ``at_ns`` (when its deadline passed or every node answered)."""

    at_ns: int
    statuses: dict[int, AnyStatus]  # node id -> its STATUS (missing: did not answer by the deadline)
    processes: dict[int, ProcessSample]  # node id -> psutil figures (missing: process gone): the nodes alive
    supervisor_cpu_s: float  # cumulative CPU of the supervisor process (collector included)
    boundary: Boundary | None = None  # set on the samples taken at the steady window's start and end
    harness_cpu_s: dict[str, float] = field(default_factory=dict)  # driver/miner name -> its cumulative CPU seconds
    took_s: float | None = None  # from the sample's start to its end: the observer's own lag


@dataclass(frozen=True)
class Answer:
    """A node's STATUS and its CPU seconds read the moment the answer arrived (one instant, even on a busy host)."""

    status: AnyStatus
    cpu_s: float | None


def uss_every_samples(run: Run) -> int:
    """Every how many samples to read USS: every 10th in a long window, every one in a short window, so
    the steady window holds at least USS_SAMPLES_IN_WINDOW readings, and never less often than every
    USS_MAX_GAP_S (the growth verdict fits a line through these points)."""
    steady_samples = (run.duration_s - run.warmup_s - run.cooldown_s) / run.status_interval_s
    by_gap = int(USS_MAX_GAP_S // run.status_interval_s)
    return max(1, min(USS_EVERY_SAMPLES, int(steady_samples // USS_SAMPLES_IN_WINDOW), by_gap))


def sample_deadline_s(interval_s: float) -> float:
    """How long a sample waits for answers: never so long that the next sample would start late."""
    return min(SAMPLE_DEADLINE_S, SAMPLE_DEADLINE_SHARE * interval_s)


@dataclass
class Schedule:
    """When to sample: on the grid ``first + k x interval_s`` and at each boundary (a steady-window edge,
    which the cost figures difference exactly). Times are the event loop's clock. A grid tick closer to
    a boundary than ``min_gap_s`` is dropped (the boundary's sample stands for it), and every sample
    must end before the next one is due, so no sample ever waits for another."""

    first: float
    interval_s: float
    boundaries: list[tuple[float, Boundary]]  # sorted; consumed as they are sampled
    min_gap_s: float
    last: float = -math.inf  # when the last sample was due (the run's first sample is at ``first``)

    def __post_init__(self) -> None:
        self.last = max(self.last, self.first)

    def next(self, after: float) -> tuple[float, Boundary | None]:
        """The first instant after ``after``: a grid tick a sample overran by less than ``min_gap_s`` is
        sampled at once, late; one overran by more is skipped, not caught up; a boundary a sample overran is
        sampled at once (late, rather than not at all).

        A boundary's sample takes the room up to the next tick, and reading 100 processes after its
        deadline made it end 0.2 s past that tick: skipping it left 9 s between status lines at a 5 s
        interval in a 100-validator run (issue 17, item 5)."""
        tick = next_tick(self.first, self.interval_s, after)
        while any(abs(tick - at) < self.min_gap_s for at, _ in self.boundaries):
            tick += self.interval_s
        missed = tick - self.interval_s
        if after - missed < self.min_gap_s and missed - self.last >= self.min_gap_s and not self._near_boundary(missed):
            tick = after
        if self.boundaries and self.boundaries[0][0] <= tick:
            self.last = self.boundaries[0][0]
            return self.boundaries.pop(0)
        self.last = tick
        return tick, None

    def _near_boundary(self, at: float) -> bool:
        return any(abs(at - boundary) < self.min_gap_s for boundary, _ in self.boundaries)

    def room_after(self, at: float) -> float:
        """How long a sample starting at ``at`` may take before the next one is due."""
        following = [t for t, _ in self.boundaries if t > at]
        return min([next_tick(self.first, self.interval_s, at), *following]) - at


def next_tick(first: float, interval_s: float, now: float) -> float:
    """The first instant of the grid ``first + k x interval_s`` after ``now``: a sample that overran
    skips the ticks it missed instead of sampling in a burst to catch up."""
    return first + (math.floor((now - first) / interval_s + 1e-9) + 1) * interval_s  # 1e-9: a tick is not after itself


async def _dial(host: str, port: int, chain_id: bytes) -> NodeClient:
    return await NodeClient.connect(host, port, chain_id=chain_id)


@dataclass
class Collector:
    """Keeps a connection to every node and samples them on demand or every ``interval_s``."""

    nodes: dict[int, Address]
    chain_id: bytes
    pids: dict[int, int]  # a node without a pid (started on another host) is always asked and has no process figures
    uss_every: int = USS_EVERY_SAMPLES  # read USS on every n-th sample (uss_every_samples)
    deadline_s: float = SAMPLE_DEADLINE_S  # how long a sample waits for the nodes' answers (sample_deadline_s)
    dial: Dial = field(default=_dial)  # how to reach a node (tests give a fake)
    samples: list[Sample] = field(default_factory=list)
    keep: int | None = None  # keep only the latest this many samples (None: all; a monitor runs for hours)
    databases: dict[int, Path] = field(default_factory=dict)  # node id -> its SQLite file, sized every sample
    listeners: list[Callable[[Sample], None]] = field(default_factory=list)  # told of every sample (monitor, /metrics)
    _taken: int = 0  # samples taken, kept or not
    _clients: dict[int, NodeClient] = field(default_factory=dict)
    _probes: dict[int, asyncio.Task[Answer | None]] = field(default_factory=dict)  # node id -> its request in flight
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _harness_procs: dict[str, psutil.Process] = field(default_factory=dict)  # drivers and miners (watch_harness)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def node_restarted(self, node_id: int, pid: int) -> None:
        self.pids[node_id] = pid
        self._procs.pop(node_id, None)
        self._forget(node_id)

    async def sample(self, boundary: Boundary | None = None, deadline_s: float | None = None) -> Sample:
        async with self._lock:  # one at a time: two would share each node's one request in flight
            return await self._sample(boundary, self.deadline_s if deadline_s is None else deadline_s)

    async def run(self, interval_s: float, stop: asyncio.Event, on_sample: Callable[[Sample], None],
                  boundaries: Sequence[tuple[int, Boundary]] = ()) -> None:  # fmt: skip
        """Sample on the grid of ``interval_s`` from now until ``stop``, and at each boundary (wall-clock ns)
        as the clock reaches it; ``on_sample`` hears every sample, boundaries included."""
        loop = asyncio.get_running_loop()
        now, now_ns = loop.time(), time.time_ns()
        edges = sorted((now + (at_ns - now_ns) / 1e9, boundary) for at_ns, boundary in boundaries)
        schedule = Schedule(now, interval_s, edges, min_gap_s=MIN_SAMPLE_SHARE * self.deadline_s)
        at, boundary = now, None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):  # waiting for the scheduled instant, or the stop
                await asyncio.wait_for(stop.wait(), max(0.0, at - loop.time()))
            if stop.is_set():
                return
            room = schedule.room_after(at) - (loop.time() - at) - SAMPLE_MARGIN_S
            on_sample(await self.sample(boundary, max(MIN_SAMPLE_SHARE * self.deadline_s, min(self.deadline_s, room))))
            at, boundary = schedule.next(loop.time())

    async def _sample(self, boundary: Boundary | None, deadline_s: float) -> Sample:
        began = time.perf_counter()
        alive = self._alive()
        answers = await self._answers(alive, deadline_s)
        with_uss = self._taken % self.uss_every == 0
        self._taken += 1
        processes = {n: s for n in sorted(alive) if (s := self._process(n, with_uss, answers.get(n))) is not None}
        statuses = {node_id: answer.status for node_id, answer in sorted(answers.items())}
        sample = Sample(time.time_ns(), statuses, processes, own_cpu_s(), boundary, self._harness_cpu(), time.perf_counter() - began)
        self.samples.append(sample)
        if self.keep is not None and len(self.samples) > self.keep:
            del self.samples[: -self.keep]
        for listener in self.listeners:
            listener(sample)
        return sample

    # -- STATUS: one request in flight per node, a deadline per sample ---------------------------------
    async def _answers(self, alive: set[int], deadline_s: float) -> dict[int, Answer]:
        """The answers that arrive by the deadline; a request still in flight then stays in flight, and an
        answer that came after its sample's deadline is dropped (a fresh request goes out instead)."""
        for node_id in alive:
            probe = self._probes.get(node_id)
            if probe is None or probe.done():
                self._probes[node_id] = asyncio.ensure_future(self._probe(node_id))
        waiting = {node_id: self._probes[node_id] for node_id in alive}
        if waiting:
            await asyncio.wait(waiting.values(), timeout=deadline_s)
        answers: dict[int, Answer] = {}
        for node_id, probe in waiting.items():
            if not probe.done() or probe.cancelled():  # still in flight, or forgotten meanwhile (a restart)
                continue
            if self._probes.get(node_id) is probe:
                del self._probes[node_id]
            if (answer := probe.result()) is not None:
                answers[node_id] = answer
        return answers

    async def _probe(self, node_id: int) -> Answer | None:
        """Dial the node if need be, then ask for its STATUS; None when it cannot be reached or answers garbage."""
        client = self._clients.get(node_id)
        if client is None or client.conn is None or not client.conn.is_open:
            try:
                client = self._clients[node_id] = await self.dial(*self.nodes[node_id], self.chain_id)
            except ClientError:
                return None
        try:
            status = await client.status(STATUS_GIVE_UP_S)
        except (ClientError, ProtocolError):  # no answer at all, or none that decodes: dial again next time
            if self._clients.get(node_id) is client:
                del self._clients[node_id]
            client.close()
            return None
        return Answer(status, self._node_cpu_s(node_id))

    def _forget(self, node_id: int) -> None:
        """Drop a node's request in flight and its connection (its process is gone, or was replaced)."""
        probe = self._probes.pop(node_id, None)
        if probe is not None:
            probe.cancel()
        client = self._clients.pop(node_id, None)
        if client is not None:
            client.close()

    # -- processes -------------------------------------------------------------------------------------
    def _alive(self) -> set[int]:
        """Nodes whose process runs (a killed one is a zombie until reaped, then gone); the rest are forgotten."""
        alive = set()
        for node_id in self.nodes:
            if node_id not in self.pids:  # a node this host cannot see: only its answer tells
                alive.add(node_id)
                continue
            try:
                if self._handle(node_id).status() != psutil.STATUS_ZOMBIE:
                    alive.add(node_id)
                    continue
            except PSUTIL_GONE:
                pass
            self._forget(node_id)
        return alive

    def _node_cpu_s(self, node_id: int) -> float | None:
        if node_id not in self.pids:
            return None
        try:
            return process_cpu_s(self._handle(node_id).cpu_times())
        except PSUTIL_GONE:
            return None

    def _handle(self, node_id: int) -> psutil.Process:
        proc = self._procs.get(node_id)
        if proc is None:
            proc = self._procs[node_id] = psutil.Process(self.pids[node_id])
        return proc

    def _process(self, node_id: int, with_uss: bool, answer: Answer | None) -> ProcessSample | None:
        if node_id not in self.pids:
            return None
        try:
            proc = self._handle(node_id)
            with proc.oneshot():
                times = proc.cpu_times()
                full = proc.memory_full_info() if with_uss else None
                rss = full.rss if full is not None else proc.memory_info().rss
                switches = proc.num_ctx_switches()
                cpu_s = answer.cpu_s if answer is not None and answer.cpu_s is not None else process_cpu_s(times)
                uss = full.uss if full is not None else None
                fds = proc.num_fds()
            return ProcessSample(cpu_s, uss, fds, switches.voluntary + switches.involuntary, rss, self._db_bytes(node_id))
        except PSUTIL_GONE:
            return None

    def _db_bytes(self, node_id: int) -> int | None:
        """The node's database file plus its write-ahead log, as the file system has them now."""
        path = self.databases.get(node_id)
        if path is None:
            return None
        total = 0
        for part in (path, Path(f"{path}-wal")):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(part).st_size
        return total

    def watch_harness(self, pids: dict[str, int]) -> None:
        """Also read the CPU of these harness children (drivers, miners) in every sample from now on."""
        for name, pid in pids.items():
            try:
                self._harness_procs[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue

    def _harness_cpu(self) -> dict[str, float]:
        found = {}
        for name, proc in self._harness_procs.items():
            try:
                found[name] = process_cpu_s(proc.cpu_times())
            except PSUTIL_GONE:
                continue
        return found

    def close(self) -> None:
        for node_id in list(self._probes) + list(self._clients):
            self._forget(node_id)
