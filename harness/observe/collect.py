"""The collector: samples every node's STATUS and psutil figures, and the supervisor's own CPU.

It runs in the supervisor's event loop. STATUS travels over one client connection per node; CPU comes
from psutil's cumulative CPU times (differences between samples, so no blocking interval); USS is read
less often because it walks /proc/<pid>/smaps, which is costly for a hundred processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import psutil

from harness.host.cputime import own_cpu_s, process_cpu_s
from harness.profile import Run
from popbench.client import NodeClient
from popbench.errors import ClientError, ProtocolError
from popbench.wire.status import AnyStatus

STATUS_TIMEOUT_S = 5.0
USS_EVERY_SAMPLES = 10  # at most every 10th sample reads USS (it walks /proc/<pid>/smaps) ...
USS_SAMPLES_IN_WINDOW = 5  # ... but often enough that the steady window holds at least this many
Address = tuple[str, int]


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


@dataclass
class Sample:
    """One round of observations at wall-clock ``at_ns``."""

    at_ns: int
    statuses: dict[int, AnyStatus]  # node id -> its STATUS (missing: did not answer)
    processes: dict[int, ProcessSample]  # node id -> psutil figures (missing: process gone)
    supervisor_cpu_s: float  # cumulative CPU of the supervisor process (collector included)
    boundary: Boundary | None = None  # set on the samples taken at the steady window's start and end
    harness_cpu_s: dict[str, float] = field(default_factory=dict)  # driver/miner name -> its cumulative CPU seconds


def uss_every_samples(run: Run) -> int:
    """Every how many samples to read USS: every 10th in a long window, every one in a short window, so
    the steady window holds at least USS_SAMPLES_IN_WINDOW readings."""
    steady_samples = (run.duration_s - run.warmup_s - run.cooldown_s) / run.status_interval_s
    return max(1, min(USS_EVERY_SAMPLES, int(steady_samples // USS_SAMPLES_IN_WINDOW)))


@dataclass
class Collector:
    """Keeps a connection to every node and samples them on demand or every ``interval_s``."""

    nodes: dict[int, Address]
    chain_id: bytes
    pids: dict[int, int]
    uss_every: int = USS_EVERY_SAMPLES  # read USS on every n-th sample (uss_every_samples)
    samples: list[Sample] = field(default_factory=list)
    _clients: dict[int, NodeClient] = field(default_factory=dict)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _harness_procs: dict[str, psutil.Process] = field(default_factory=dict)  # drivers and miners (watch_harness)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _cpu_at_answer: dict[int, float | None] = field(default_factory=dict)  # node id -> CPU s when its STATUS arrived

    async def connect(self) -> None:
        await asyncio.gather(*(self._connect(node_id) for node_id in self.nodes))

    async def _connect(self, node_id: int) -> None:
        client = self._clients.get(node_id)
        if client is not None and client.conn is not None and client.conn.is_open:
            return
        try:
            self._clients[node_id] = await NodeClient.connect(*self.nodes[node_id], chain_id=self.chain_id)
        except ClientError:
            self._clients.pop(node_id, None)

    def node_restarted(self, node_id: int, pid: int) -> None:
        self.pids[node_id] = pid
        self._procs.pop(node_id, None)
        self._clients.pop(node_id, None)

    async def sample(self, boundary: Boundary | None = None) -> Sample:
        async with self._lock:  # one at a time, so a boundary sample never interleaves with a periodic one
            return await self._sample(boundary)

    async def sample_at(self, at_ns: int, boundary: Boundary) -> Sample:
        """A sample as soon as the wall clock reaches ``at_ns`` (a window edge), marked with ``boundary``."""
        await asyncio.sleep(max(0.0, (at_ns - time.time_ns()) / 1e9))  # waiting for a planned instant, not for an event
        return await self.sample(boundary)

    async def _sample(self, boundary: Boundary | None) -> Sample:
        statuses = await self._statuses()
        with_uss = len(self.samples) % self.uss_every == 0
        processes = {node_id: s for node_id in self.pids if (s := self._process(node_id, with_uss)) is not None}
        sample = Sample(time.time_ns(), statuses, processes, own_cpu_s(), boundary, self._harness_cpu())
        self.samples.append(sample)
        return sample

    async def run(self, interval_s: float, stop: asyncio.Event, on_sample: Callable[[Sample], None]) -> None:
        while not stop.is_set():
            on_sample(await self.sample())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def _statuses(self) -> dict[int, AnyStatus]:
        missing = [node_id for node_id in self.nodes if node_id not in self._clients]
        if missing:
            await asyncio.gather(*(self._connect(node_id) for node_id in missing))
        answers = await asyncio.gather(*(self._status(node_id, c) for node_id, c in self._clients.items()))
        return {node_id: status for node_id, status in answers if status is not None}

    async def _status(self, node_id: int, client: NodeClient) -> tuple[int, AnyStatus | None]:
        try:
            status = await client.status(STATUS_TIMEOUT_S)
            # the node's CPU read as its answer arrives, so its CPU and its counters describe one instant
            self._cpu_at_answer[node_id] = self._node_cpu_s(node_id)
            return node_id, status
        except (ClientError, ProtocolError):  # no answer, or none that decodes: the node counts as not answering
            self._clients.pop(node_id, None)
            client.close()
            return node_id, None

    def _node_cpu_s(self, node_id: int) -> float | None:
        try:
            return process_cpu_s(self._handle(node_id).cpu_times())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

    def _handle(self, node_id: int) -> psutil.Process:
        proc = self._procs.get(node_id)
        if proc is None:
            proc = self._procs[node_id] = psutil.Process(self.pids[node_id])
        return proc

    def _process(self, node_id: int, with_uss: bool) -> ProcessSample | None:
        answered_cpu_s = self._cpu_at_answer.pop(node_id, None)
        try:
            proc = self._handle(node_id)
            with proc.oneshot():
                times = proc.cpu_times()
                uss = proc.memory_full_info().uss if with_uss else None
                switches = proc.num_ctx_switches()
                cpu_s = process_cpu_s(times) if answered_cpu_s is None else answered_cpu_s
                return ProcessSample(cpu_s, uss, proc.num_fds(), switches.voluntary + switches.involuntary)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

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
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
