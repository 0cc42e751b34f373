"""``/metrics`` in the Prometheus text format, from the collector's samples (docs/monitoring.md).

``popbench run --metrics-port P`` feeds every sample its collector takes into a :class:`SampleMetrics`
(the collector's ``listeners`` hook); ``popbench node --metrics-port P`` feeds its own STATUS once a
second, as a one-node sample (:func:`own_sample`). Either way the numbers are the typed STATUS samples
the report and the monitor read: no second sampling path, and a scrape never asks a node anything
(it renders what the latest sample said, so scraping costs the network nothing).

The metric model and the text format are the official ``prometheus_client``'s (a custom collector of
metric families, rendered by ``generate_latest``); the transport is a small asyncio handler on the
process's own event loop, not the library's threaded server, because the supervisor forks after it
starts serving and a node is single-threaded by design (a thread holding a lock across a fork can
deadlock the child). It listens on 127.0.0.1 only.

Names follow Prometheus' conventions: base units (seconds, bytes), ``_total`` for counters, one
``node`` label per node (``node="3"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector as PrometheusCollector

from harness.host.cputime import own_cpu_s, process_cpu_s
from harness.observe.collect import ProcessSample, Sample
from harness.observe.live import LiveState, NodeLive, same_process
from harness.observe.progress import StatusLine
from harness.observe.service_live import service_live
from harness.profile import Profile, Slo
from harness.stats import LATENCY_BUCKETS_S, latency_bucket
from popbench.errors import ConfigError
from popbench.wire.status import AnyStatus, PowSection, PowStatus

METRICS_HOST = "127.0.0.1"  # never a public interface: the numbers describe this host's processes
REQUEST_TIMEOUT_S = 5.0  # a client that sends no request line in this long is dropped


@dataclass
class LatencyHistogram:
    """Cumulative bucket counts of one node's round times, built from its STATUS differences.

    STATUS carries only the count and sum of round times, so the rounds of one sample interval all go
    into the bucket of that interval's mean: ``_count`` and ``_sum`` are exact, the buckets are at the
    resolution of a sample."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    count: int = 0
    sum: float = 0.0

    def add(self, rounds: int, seconds: float) -> None:
        self.buckets[latency_bucket(seconds / rounds)] += rounds
        self.count += rounds
        self.sum += seconds

    def family_buckets(self) -> list[tuple[str, float]]:
        return cumulative(self.buckets)


def cumulative(buckets: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (LATENCY_BUCKETS_S, then +Inf) as the histogram's cumulative ``le`` rows."""
    bounds = [*(f"{b:g}" for b in LATENCY_BUCKETS_S), "+Inf"]
    running, rows = 0, []
    for bound, count in zip(bounds, buckets, strict=True):
        running += count
        rows.append((bound, float(running)))
    return rows


class SampleMetrics(PrometheusCollector):
    """The metric families of the latest sample, rendered on each scrape from a :class:`LiveState`."""

    def __init__(self, live: LiveState, line: StatusLine | None = None, slo: Slo | None = None) -> None:
        self.live = live
        self.rounds: dict[int, LatencyHistogram] = {}
        self.line = line  # a run's status line: its drivers' latest reports (items' commit latency, the service level)
        self.slo = slo

    def observe(self, sample: Sample) -> None:
        """A collector listener: take in one sample."""
        self.live.observe(sample)
        if self.line is not None and self.line.drivers:
            self.live.drivers_said(service_live(self.line, self.slo or Slo(), sample.at_ns))
        for node in self.live.nodes.values():
            if not node.up or node.status is None:
                continue
            now = node.status.round_time_s
            if same_process(node.previous, node.status):
                assert node.previous is not None
                before = node.previous.round_time_s
                if now.count > before.count:
                    self.rounds.setdefault(node.node_id, LatencyHistogram()).add(now.count - before.count, max(0.0, now.sum - before.sum))
            elif now.count > 0:  # a process first seen: its rounds so far, in the bucket of their mean, so _count and _sum are its totals
                self.rounds.setdefault(node.node_id, LatencyHistogram()).add(now.count, now.sum)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry

    def collect(self) -> Iterator[Metric]:
        yield from self._network()
        answering = [n for n in self.live.nodes.values() if n.up and n.status is not None]
        yield from self._node_families(answering)
        yield from self._process_families(self.live.nodes.values())
        yield self._rounds_family()
        yield self._commit_latency_family()
        yield from self._service_family()
        if self.live.consensus == "pow":
            yield from self._pow_families(answering)

    def _network(self) -> Iterator[Metric]:
        live = self.live
        if live.at_ns:
            yield gauge("popbench_sample_timestamp_seconds", "Wall-clock time of the sample these figures are from (Unix seconds)",
                        live.at_ns / 1e9)  # fmt: skip
        health, _ = live.health()
        yield gauge("popbench_health", "0 healthy, 1 degraded, 2 critical (docs/monitoring.md)", health.value)
        yield gauge("popbench_nodes", "Nodes watched", len(live.nodes))
        yield gauge("popbench_nodes_down", "Nodes that did not answer STATUS in the latest sample", len(live.down))
        if live.f is not None and live.consensus == "pbft":
            yield gauge("popbench_fault_threshold", "The Byzantine fault threshold f = floor((n - 1) / 3)", live.f)
        yield gauge(
            "popbench_stalled", "1 while no block commits for longer than the stall threshold with items waiting", int(live.stalled)
        )
        up = GaugeMetricFamily("popbench_up", "1 when the node answered STATUS in the latest sample", labels=["node"])
        for node in live.nodes.values():
            up.add_metric([str(node.node_id)], int(node.up))
        yield up

    def _node_families(self, nodes: list[NodeLive]) -> Iterator[Metric]:
        statuses = [(str(n.node_id), n.status) for n in nodes if n.status is not None]
        yield per_node(GaugeMetricFamily, "popbench_height", "Committed height (PoW: the tip's height)", statuses, lambda s: s.height)
        yield per_node(GaugeMetricFamily, "popbench_view", "PBFT view the node is in", statuses, lambda s: s.view)
        yield per_node(GaugeMetricFamily, "popbench_peers", "Validator and follower links", statuses, lambda s: s.peers)
        yield per_node(GaugeMetricFamily, "popbench_mempool_items", "Items waiting in the mempool", statuses, lambda s: s.mempool)
        yield per_node(CounterMetricFamily, "popbench_blocks_committed", "Blocks committed (PoW: confirmed)", statuses,
                       lambda s: s.counters.blocks_committed)  # fmt: skip
        yield per_node(CounterMetricFamily, "popbench_proofs_committed", "Proofs committed (PoP)", statuses,
                       lambda s: s.counters.proofs_committed)  # fmt: skip
        yield per_node(CounterMetricFamily, "popbench_transfers_committed", "Transfers committed (PoW: 6 blocks deep)", statuses,
                       lambda s: s.counters.transfers_committed)  # fmt: skip
        yield per_node(CounterMetricFamily, "popbench_view_changes", "View changes", statuses, lambda s: s.counters.view_changes)
        yield per_node(CounterMetricFamily, "popbench_protocol_errors", "Protocol errors", statuses, lambda s: s.counters.protocol_errors)
        yield per_node(CounterMetricFamily, "popbench_unexpected_exceptions", "Exceptions that reached the node's loop", statuses,
                       lambda s: s.unexpected_exceptions)  # fmt: skip

    def _process_families(self, nodes: Iterable[NodeLive]) -> Iterator[Metric]:
        seen = [n for n in nodes if n.process_alive is not False]
        resident = GaugeMetricFamily("popbench_node_resident_bytes", "Resident set size of the node's process", labels=["node"])
        unique = GaugeMetricFamily("popbench_node_unique_bytes", "Unique set size (USS) at its latest reading", labels=["node"])
        cpu = GaugeMetricFamily("popbench_node_cpu_percent", "CPU over the latest interval, 100 = one core", labels=["node"])
        for node in seen:
            label = [str(node.node_id)]
            if node.rss_bytes is not None:
                resident.add_metric(label, node.rss_bytes)
            if node.uss_bytes is not None:
                unique.add_metric(label, node.uss_bytes)
            if node.cpu_percent is not None:
                cpu.add_metric(label, node.cpu_percent)
        yield from (resident, unique, cpu)

    def _rounds_family(self) -> Metric:
        family = HistogramMetricFamily("popbench_round_seconds", "Consensus round time, round start to commit (PoW: interval between "
                                       "confirmed blocks), bucketed at the sample's mean (count and sum exact)", labels=["node"])  # fmt: skip
        for node_id, histogram in sorted(self.rounds.items()):
            family.add_metric([str(node_id)], histogram.family_buckets(), histogram.sum)
        return family

    def _commit_latency_family(self) -> Metric:
        """Items' commit latency, due time to the commit seen by the driver that sent it (a run's drivers only)."""
        family = HistogramMetricFamily("popbench_commit_latency_seconds", "Items' commit latency: due time to the commit the "
                                       "driver saw, every commit so far", labels=["driver"])  # fmt: skip
        drivers = self.line.drivers if self.line is not None else {}
        for name, progress in sorted(drivers.items()):
            if len(progress.latency_buckets) == len(LATENCY_BUCKETS_S) + 1:
                family.add_metric([name], cumulative(progress.latency_buckets), progress.latency_sum_s)
        return family

    def _service_family(self) -> Iterator[Metric]:
        service = self.live.service_now(self.slo)
        if service.holds is not None:
            yield gauge("popbench_service_level_holds", "1 while the service level holds now (docs/monitoring.md), 0 while not",
                        int(service.holds))  # fmt: skip

    def _pow_families(self, nodes: list[NodeLive]) -> Iterator[Metric]:
        pows = [(str(n.node_id), n.status) for n in nodes if isinstance(n.status, PowStatus)]
        yield gauge("popbench_pow_tips", "Distinct tips among the answering nodes", len(self.live.tips))
        if self.live.hash_rate is not None:
            yield gauge("popbench_pow_hash_rate", "Hashes per second over the latest interval, all nodes", self.live.hash_rate)
        yield per_node(CounterMetricFamily, "popbench_pow_hashes", "Hashes tried", pows, lambda s: pow_of(s).hashes)
        yield per_node(CounterMetricFamily, "popbench_pow_blocks_mined", "Blocks mined", pows, lambda s: pow_of(s).blocks_mined)
        yield per_node(CounterMetricFamily, "popbench_pow_reorgs", "Tip switches", pows, lambda s: pow_of(s).reorgs)
        yield per_node(
            GaugeMetricFamily, "popbench_pow_stale_blocks", "Known blocks off the main chain", pows, lambda s: pow_of(s).stale_blocks
        )
        yield per_node(
            GaugeMetricFamily, "popbench_pow_work_bits", "Current difficulty in leading zero bits", pows, lambda s: pow_of(s).work_bits
        )


def pow_of(status: AnyStatus) -> PowSection:
    assert isinstance(status, PowStatus)
    return status.pow


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def per_node(kind: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, documentation: str,
             statuses: Sequence[tuple[str, AnyStatus]], value: Callable[[AnyStatus], float]) -> Metric:  # fmt: skip
    family = kind(name, documentation, labels=["node"])
    for label, status in statuses:
        family.add_metric([label], float(value(status)))
    return family


# -- one node's own figures (popbench node --metrics-port) ------------------------------------------
@dataclass
class OwnProcess:
    """The node process reading itself, as the collector reads a node from outside."""

    process: psutil.Process = field(default_factory=psutil.Process)

    def sample(self, status: AnyStatus) -> Sample:
        with self.process.oneshot():
            memory = self.process.memory_info()
            switches = self.process.num_ctx_switches()
            figures = ProcessSample(process_cpu_s(self.process.cpu_times()), None, self.process.num_fds(),
                                    switches.voluntary + switches.involuntary, memory.rss)  # fmt: skip
        return Sample(time.time_ns(), {status.node_id: status}, {status.node_id: figures}, own_cpu_s())


def own_live_state(status: AnyStatus, interval_s: float) -> LiveState:
    """The LiveState of a single node serving its own /metrics (f unknown: it sees one node)."""
    consensus = "pow" if isinstance(status, PowStatus) else "pbft"
    return LiveState([status.node_id], consensus, interval_s, processes_known={status.node_id})


# -- serving ----------------------------------------------------------------------------------------
def bind_metrics_socket(port: int) -> socket.socket:
    """Bind 127.0.0.1:``port`` now, so a port in use fails the command before anything starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((METRICS_HOST, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot serve metrics on {METRICS_HOST}:{port}: {os.strerror(err.errno or 0)}", key="--metrics-port") from err
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def serve_metrics(registry: CollectorRegistry, sock: socket.socket) -> asyncio.Server:
    """Answer ``GET /metrics`` with the registry's text exposition, one request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, kind = await _answer(reader, registry)
            head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that went away or never asked: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, sock=sock)


async def _answer(reader: asyncio.StreamReader, registry: CollectorRegistry) -> tuple[str, bytes, str]:
    request = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
    while (await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)).strip():
        pass  # headers: nothing in them changes the answer
    parts = request.decode("latin-1").split()
    if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
        return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
    if parts[1].split("?")[0] != "/metrics":
        return "404 Not Found", b"see /metrics\n", "text/plain"
    body = generate_latest(registry)
    return "200 OK", b"" if parts[0] == "HEAD" else body, CONTENT_TYPE_LATEST


class MetricsServer:
    """``/metrics`` on 127.0.0.1:``port`` for one :class:`SampleMetrics`: bound at once (a port in use
    fails the command before anything starts), served from the event loop once :meth:`start` runs."""

    def __init__(self, port: int, metrics: SampleMetrics) -> None:
        self.metrics = metrics
        self.sock = bind_metrics_socket(port)
        self.port: int = self.sock.getsockname()[1]
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await serve_metrics(self.metrics.registry(), self.sock)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.sock.close()


def run_metrics_server(port: int, profile: Profile, line: StatusLine | None = None) -> MetricsServer:
    """``popbench run --metrics-port``: the run's nodes as its collector samples them (the collector's
    listener is ``server.metrics.observe``); f as the run's genesis has it, (n - 1) // 3."""
    net = profile.network
    pow_run = net.consensus == "pow"
    live = LiveState(range(net.nodes), str(net.consensus), profile.run.status_interval_s, f=None if pow_run else (net.nodes - 1) // 3,
                     pow_block_interval_s=profile.miners.block_interval_ms / 1000 if pow_run else None,
                     processes_known=set(range(net.nodes)))  # fmt: skip
    live.intended_links = {} if pow_run else dict.fromkeys(range(net.nodes), net.nodes - 1)  # PBFT intends a full validator mesh
    return MetricsServer(port, SampleMetrics(live, line, profile.slo))


class NodeMetricsServer:
    """``popbench node --metrics-port``: the node's own STATUS, once a second as the runner reports it,
    as a one-node sample with the process's own CPU and memory."""

    def __init__(self, port: int, interval_s: float) -> None:
        self.sock = bind_metrics_socket(port)
        self.port: int = self.sock.getsockname()[1]
        self.interval_s = interval_s
        self.metrics: SampleMetrics | None = None
        self._own = OwnProcess()
        self._serving: asyncio.Task[asyncio.Server] | None = None

    def on_status(self, status: AnyStatus) -> None:
        """The runner's status callback (it runs on the node's loop): the first call starts serving."""
        if self.metrics is None:
            self.metrics = SampleMetrics(own_live_state(status, self.interval_s))
            self._serving = asyncio.get_running_loop().create_task(serve_metrics(self.metrics.registry(), self.sock))
        self.metrics.observe(self._own.sample(status))
