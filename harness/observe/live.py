"""A network watched live: what the collector's samples say now, kept as they arrive (docs/monitoring.md).

The monitor (harness/monitor) and the Prometheus exposition (harness/observe/prometheus.py) both feed
each :class:`~harness.observe.collect.Sample` the collector takes into a :class:`LiveState`, so the
screen, ``/metrics`` and the report read the same typed samples (no second sampling path). It keeps
only bounded state (the latest answer per node, the last 60 latency measurements, a few counters), so
a monitor left running for a day does not grow.

Each node keeps its latest answer: a node that missed one sample's deadline keeps its height and
counters, as the status line does, but counts as down until it answers again. Differences (throughput,
view changes, hashes, CPU) are taken between two answers of one process (same pid, uptime growing), so
a restarted node's counters starting again from zero never read as negative work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.observe.collect import ProcessSample, Sample
from harness.observe.health import Health, HealthInputs, ServiceInputs, ServiceNow, judge, judge_service
from harness.observe.service_live import ServiceLive
from harness.profile import Slo
from popbench.wire.status import AnyStatus, PowStatus

LATENCY_POINTS = 60  # consensus latency measurements kept for the graph and its min/avg/max
STALL_INTERVALS = 2  # no new block for more than this many intervals while items wait: a stall
RECENT_INTERVALS = 2  # a view change this recent makes the network DEGRADED
POW_STALL_BLOCKS = 10  # PoW: a gap of 10 target intervals has probability e^-10 (docs/metrics.md, stall_threshold_s)
FINDINGS_KEPT = 200
MEMORY_WINDOW_S = 60.0  # memory growth: a node's RSS now against its RSS this long ago ...
MEMORY_GROWTH_SHARE = 0.25  # ... grown by more than a quarter (the report's rule, harness/metrics/findings.py)
MEMORY_GROWTH_MIN_MIB = 10.0  # ... and by more than this many MiB
MEMORY_WARMUP_S = 30.0  # a node younger than this is still filling its caches: not judged yet
DELIVERY_READINGS = 6  # delivery over the drivers' last 5 intervals
NAMED_AT_MOST = 6  # a finding names this many nodes or links, then says how many more


@dataclass(frozen=True)
class LiveFinding:
    """Something that happened, as it happened: a node down or back, a stall, a view change, a fork."""

    at_ns: int
    kind: str
    message: str


@dataclass
class NodeLive:
    """One node as the latest samples saw it."""

    node_id: int
    status: AnyStatus | None = None  # its latest answer (kept while it is down)
    answered_ns: int = 0
    up: bool = False  # answered the latest sample
    process_alive: bool | None = None  # its process runs (None: no pid known, a node on another host)
    cpu_percent: float | None = None  # over the last interval, 100 = one core
    rss_bytes: int | None = None
    uss_bytes: int | None = None  # read every few samples (it walks /proc/<pid>/smaps)
    previous: AnyStatus | None = None  # the answer before the latest, for differences
    previous_ns: int = 0
    _cpu: tuple[int, float] | None = None  # (at_ns, cpu_s) of the previous process reading

    @property
    def state(self) -> str:
        """``up``; ``silent`` (its process runs but it did not answer by the deadline); ``down``."""
        if self.up:
            return "up"
        return "silent" if self.process_alive else "down"


def same_process(before: AnyStatus | None, after: AnyStatus) -> bool:
    return before is not None and before.pid == after.pid and after.uptime_s >= before.uptime_s


def committed_items(status: AnyStatus) -> int:
    """Proofs (PoP) or transfers (PoW) the node has seen committed."""
    counters = status.counters
    return counters.transfers_committed if isinstance(status, PowStatus) else counters.proofs_committed


@dataclass
class LiveState:
    """The rolling state of one watched network, fed one sample at a time by :meth:`observe`."""

    node_ids: Iterable[int]
    consensus: str  # "pbft" | "pow"
    interval_s: float
    f: int | None = None  # the fault threshold (PBFT); None: PoW, or unknown
    pow_block_interval_s: float | None = None  # PoW target interval, when the genesis is known
    processes_known: set[int] = field(default_factory=set)  # nodes whose pid this host watches (their process can be seen gone)
    intended_links: dict[int, int] = field(default_factory=dict)  # validator links each node is meant to have
    nodes: dict[int, NodeLive] = field(init=False)
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_POINTS))
    findings: deque[LiveFinding] = field(default_factory=lambda: deque(maxlen=FINDINGS_KEPT))
    samples_seen: int = 0
    at_ns: int = 0
    hash_rate: float | None = None  # PoW: hashes per second over the last interval, all nodes
    throughput_now: float | None = None  # items committed per second over the last interval
    throughput_avg: float | None = None  # since the first sample
    stalled: bool = False
    _first: tuple[int, int] | None = None  # (at_ns, committed) at the first sample
    _last: tuple[int, int] | None = None
    _height_moved_ns: int = 0
    _max_height: int = -1
    _view_changes: deque[tuple[int, int]] = field(default_factory=deque)  # (at_ns, count) of recent samples
    _split_samples: int = 0
    _memory_base: dict[int, tuple[int, int]] = field(default_factory=dict)  # node -> (at_ns, rss) the growth is measured from
    _drivers: deque[ServiceLive] = field(default_factory=lambda: deque(maxlen=DELIVERY_READINGS))

    def __post_init__(self) -> None:
        self.nodes = {node_id: NodeLive(node_id) for node_id in sorted(self.node_ids)}

    # -- feeding -----------------------------------------------------------------------------------
    def observe(self, sample: Sample) -> list[LiveFinding]:
        """Take in one sample; returns the findings it raised (also kept in ``findings``)."""
        raised: list[LiveFinding] = []
        self.at_ns = sample.at_ns
        for node in self.nodes.values():
            raised += self._node(node, sample)
        self._throughput(sample.at_ns)
        self._latency()
        raised += self._views(sample.at_ns)
        raised += self._stall(sample.at_ns)
        raised += self._forks(sample.at_ns)
        raised += self._links(sample.at_ns)
        raised += self._memory(sample.at_ns)
        self.samples_seen += 1
        self.findings.extend(raised)
        return raised

    def _node(self, node: NodeLive, sample: Sample) -> list[LiveFinding]:
        status = sample.statuses.get(node.node_id)
        process = sample.processes.get(node.node_id)
        was_up = node.up if self.samples_seen else True  # the first sample reports every node already down
        node.up = status is not None
        node.process_alive = (process is not None) if node.node_id in self.processes_known else None
        self._process(node, process, sample.at_ns)
        if status is not None:
            node.previous, node.previous_ns = node.status, node.answered_ns
            node.status, node.answered_ns = status, sample.at_ns
        if was_up and not node.up:
            why = "its process is gone" if node.process_alive is False else "no answer by the deadline"
            return [LiveFinding(sample.at_ns, "node-down", f"node {node.node_id} down: {why}")]
        if node.up and not was_up:
            return [LiveFinding(sample.at_ns, "node-back", f"node {node.node_id} answers again")]
        return []

    def _process(self, node: NodeLive, process: ProcessSample | None, at_ns: int) -> None:
        if process is None:
            node.cpu_percent, node.rss_bytes, node._cpu = None, None, None
            return
        node.rss_bytes = process.rss_bytes
        node.uss_bytes = process.uss_bytes if process.uss_bytes is not None else node.uss_bytes
        if node._cpu is not None and at_ns > node._cpu[0] and process.cpu_s >= node._cpu[1]:
            node.cpu_percent = 100.0 * (process.cpu_s - node._cpu[1]) / ((at_ns - node._cpu[0]) / 1e9)
        node._cpu = (at_ns, process.cpu_s)

    def _fresh(self) -> list[NodeLive]:
        """Nodes that answered this sample with a previous answer of the same process to difference."""
        return [n for n in self.nodes.values() if n.up and n.status is not None and same_process(n.previous, n.status)]

    def _throughput(self, at_ns: int) -> None:
        committed = max((committed_items(n.status) for n in self.nodes.values() if n.status is not None), default=0)
        if self._first is None:
            self._first = (at_ns, committed)
        elif self._last is not None and at_ns > self._last[0]:
            self.throughput_now = max(0, committed - self._last[1]) / ((at_ns - self._last[0]) / 1e9)
            self.throughput_avg = max(0, committed - self._first[1]) / ((at_ns - self._first[0]) / 1e9)
        self._last = (at_ns, committed)
        hashes = [(n, n.status, n.previous) for n in self._fresh() if isinstance(n.status, PowStatus)]
        if hashes:
            self.hash_rate = sum(
                (s.pow.hashes - p.pow.hashes) / ((n.answered_ns - n.previous_ns) / 1e9)
                for n, s, p in hashes
                if isinstance(p, PowStatus) and n.answered_ns > n.previous_ns
            )

    def _latency(self) -> None:
        """One measurement per sample: the mean round time of every round the nodes committed since
        their previous answers (the difference of their cumulative round-time sums over that of counts)."""
        rounds, seconds = 0, 0.0
        for node in self._fresh():
            assert node.status is not None and node.previous is not None
            now, before = node.status.round_time_s, node.previous.round_time_s
            if now.count > before.count:
                rounds += now.count - before.count
                seconds += now.sum - before.sum
        if rounds:
            self.latency_s.append(max(0.0, seconds / rounds))

    def _views(self, at_ns: int) -> list[LiveFinding]:
        changes, views = 0, set()
        for node in self._fresh():
            assert node.status is not None and node.previous is not None
            step = node.status.counters.view_changes - node.previous.counters.view_changes
            if step > 0:
                changes += step
                views.add(node.status.view)
        self._view_changes.append((at_ns, changes))
        horizon = at_ns - int((RECENT_INTERVALS + 0.5) * self.interval_s * 1e9)
        while self._view_changes and self._view_changes[0][0] < horizon:
            self._view_changes.popleft()
        if not changes:
            return []
        return [
            LiveFinding(
                at_ns, "view-change", f"{changes} view change{'s' if changes > 1 else ''}: now view {', '.join(map(str, sorted(views)))}"
            )
        ]

    @property
    def stall_after_s(self) -> float:
        """PBFT: more than two intervals. PoW: also at least 10 target block intervals, since blocks come
        at random (a healthy PoW chain goes two seconds without a block all the time)."""
        floor = STALL_INTERVALS * self.interval_s
        if self.consensus == "pow" and self.pow_block_interval_s:
            return max(floor, POW_STALL_BLOCKS * self.pow_block_interval_s)
        return floor

    def _stall(self, at_ns: int) -> list[LiveFinding]:
        height = self.height
        if height > self._max_height:
            self._max_height, self._height_moved_ns = height, at_ns
        answering = [n.status for n in self.nodes.values() if n.up and n.status is not None]
        waiting = self.consensus == "pow" or any(s.mempool > 0 for s in answering)
        quiet_s = (at_ns - self._height_moved_ns) / 1e9
        stalled = bool(answering) and waiting and quiet_s > self.stall_after_s
        found: list[LiveFinding] = []
        if stalled and not self.stalled:
            found.append(
                LiveFinding(at_ns, "stall", f"stall: height {height} for {quiet_s:.1f} s with {self.mempool_total:,} items waiting")
            )
        elif self.stalled and not stalled:
            found.append(LiveFinding(at_ns, "stall-over", f"blocks again at height {height}"))
        self.stalled = stalled
        return found

    def _forks(self, at_ns: int) -> list[LiveFinding]:
        if self.consensus != "pow":
            return []
        split = len(self.tips) > 1
        self._split_samples = self._split_samples + 1 if split else 0
        if self._split_samples == STALL_INTERVALS + 1:
            return [LiveFinding(at_ns, "fork", f"{len(self.tips)} tips for {self._split_samples} samples")]
        return []

    def _links(self, at_ns: int) -> list[LiveFinding]:
        """Validator links a node had at its previous answer and has not now, between two nodes that both
        answer (a link to a node that is down is explained by its node-down finding)."""
        up = {n.node_id for n in self.up}
        lost: list[tuple[int, int]] = []
        for node in self._fresh():
            assert node.status is not None and node.previous is not None
            gone = set(node.previous.peer_ids) - set(node.status.peer_ids)
            lost += [(min(node.node_id, peer), max(node.node_id, peer)) for peer in gone if peer in up and peer in self.nodes]
        pairs = sorted(set(lost))
        if not pairs:
            return []
        named = ", ".join(f"{a}-{b}" for a, b in pairs[:NAMED_AT_MOST]) + (
            f" and {len(pairs) - NAMED_AT_MOST} more" if len(pairs) > NAMED_AT_MOST else ""
        )
        return [LiveFinding(at_ns, "link-lost", f"link{'s' if len(pairs) > 1 else ''} lost: {named}")]

    def _memory(self, at_ns: int) -> list[LiveFinding]:
        """A node's RSS grown by more than max(10 MiB, 25 %) over the last MEMORY_WINDOW_S (measured window by
        window from a baseline, so the state per node is one pair; a restarted process starts a new one)."""
        grown: list[str] = []
        for node in self.nodes.values():
            status = node.status
            if node.rss_bytes is None or status is None or not node.up or status.uptime_s < MEMORY_WARMUP_S:
                continue
            base = self._memory_base.get(node.node_id)
            if base is None or not same_process(node.previous, status):
                self._memory_base[node.node_id] = (at_ns, node.rss_bytes)
                continue
            if (at_ns - base[0]) / 1e9 < MEMORY_WINDOW_S:
                continue
            growth = node.rss_bytes - base[1]
            if growth > max(MEMORY_GROWTH_MIN_MIB * 2**20, MEMORY_GROWTH_SHARE * base[1]):
                grown.append(f"node {node.node_id} {base[1] / 2**20:,.0f} -> {node.rss_bytes / 2**20:,.0f} MiB")
            self._memory_base[node.node_id] = (at_ns, node.rss_bytes)
        if not grown:
            return []
        named = ", ".join(grown[:NAMED_AT_MOST]) + (f" and {len(grown) - NAMED_AT_MOST} more" if len(grown) > NAMED_AT_MOST else "")
        return [LiveFinding(at_ns, "memory-growth", f"memory growth in {MEMORY_WINDOW_S:g} s (RSS): {named}")]

    def drivers_said(self, reading: ServiceLive) -> None:
        """A run's drivers' latest figures (harness/observe/service_live.py), for the service level."""
        if not self._drivers or reading.at_ns > self._drivers[-1].at_ns:
            self._drivers.append(reading)

    # -- reading -----------------------------------------------------------------------------------
    @property
    def up(self) -> list[NodeLive]:
        return [n for n in self.nodes.values() if n.up]

    @property
    def down(self) -> list[NodeLive]:
        return [n for n in self.nodes.values() if not n.up]

    @property
    def height(self) -> int:
        """Blocks committed (PoW: the highest tip), each node by its latest answer."""
        return max((n.status.height for n in self.nodes.values() if n.status is not None), default=0)

    @property
    def mempool_total(self) -> int:
        return sum(n.status.mempool for n in self.up if n.status is not None)

    @property
    def mempool_max(self) -> int:
        return max((n.status.mempool for n in self.up if n.status is not None), default=0)

    @property
    def recent_view_changes(self) -> int:
        return sum(count for _, count in self._view_changes)

    @property
    def tips(self) -> set[str]:
        """PoW: the distinct tips the answering nodes report."""
        return {n.status.pow.tip_hash for n in self.up if isinstance(n.status, PowStatus)}

    @property
    def reorgs(self) -> int:
        return sum(n.status.pow.reorgs for n in self.nodes.values() if isinstance(n.status, PowStatus))

    @property
    def stale_blocks(self) -> int:
        return max((n.status.pow.stale_blocks for n in self.nodes.values() if isinstance(n.status, PowStatus)), default=0)

    @property
    def links_share(self) -> float | None:
        """The least share of its intended validator links any answering node has up (None: none known)."""
        shares = [len(set(n.status.peer_ids) & set(self.nodes)) / self.intended_links[n.node_id]
                  for n in self.up if n.status is not None and self.intended_links.get(n.node_id, 0) > 0]  # fmt: skip
        return min(1.0, min(shares)) if shares else None

    @property
    def delivery(self) -> float | None:
        """Committed over sent by a run's drivers over their last few readings (None: no drivers, or none sent)."""
        if len(self._drivers) < 2:
            return None
        first, last = self._drivers[0], self._drivers[-1]
        sent = last.sent - first.sent
        return (last.committed - first.committed) / sent if sent > 0 else None

    def service_now(self, slo: Slo | None = None) -> ServiceNow:
        """The service level now (docs/monitoring.md): a run's own (its drivers' p99 and delivery) when its
        drivers report; else the default service level on what the nodes say (consensus latency, links)."""
        drivers = self._drivers[-1] if self._drivers else None
        if drivers is not None and drivers.drivers:
            latency_ms, items = drivers.p99_ms, True
            target, min_delivery, min_links = drivers.latency_target_ms, drivers.min_delivery, drivers.min_links_share
        else:
            slo = slo or Slo()
            latency_ms = self.latency_s[-1] * 1000 if self.latency_s else None
            items, target, min_delivery, min_links = False, slo.latency_ms, slo.min_delivery, slo.min_links_share
        inputs = ServiceInputs(latency_ms=latency_ms, latency_is_items=items, latency_target_ms=target, delivery=self.delivery,
                               min_delivery=min_delivery, links_share=self.links_share if self.consensus == "pbft" else None,
                               min_links_share=min_links, stalled=self.stalled)  # fmt: skip
        return judge_service(inputs)

    def health(self) -> tuple[Health, list[str]]:
        inputs = HealthInputs(nodes=len(self.nodes), down=len(self.down), f=self.f if self.consensus == "pbft" else None,
                              stalled=self.stalled, recent_view_changes=self.recent_view_changes,
                              tips_split=self._split_samples > STALL_INTERVALS)  # fmt: skip
        return judge(inputs)
