"""Connectivity, consensus, work, stability and resource metrics from the nodes' STATUS samples.

Definitions are in docs/metrics.md; each function here computes one section of the report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from harness.kinds import ChildKind, RunPhase
from harness.metrics.results import Connectivity, Consensus, LinksPerNode, Resources, Stability, UssSummary, Work
from harness.observe.collect import ProcessSample, Sample
from harness.procs.supervisor import Crash
from harness.run.safety import SafetyCheck
from harness.stats import mean_and_stdev, percentile
from popbench.wire.status import AnyStatus

Edge = frozenset[int]


# -- connectivity --------------------------------------------------------------------------------------
def observed_links(statuses: dict[int, AnyStatus]) -> set[Edge]:
    """A link is up when either end lists the other among its validator links."""
    return {frozenset((node, peer)) for node, status in statuses.items() for peer in status.peer_ids
            if peer != node}  # fmt: skip


def diameter(nodes: set[int], links: set[Edge]) -> tuple[bool, int | None]:
    """(graph connected, its diameter in hops); BFS from every node, fine for a few hundred nodes."""
    neighbours: dict[int, list[int]] = {node: [] for node in nodes}
    for a, b in (tuple(edge) for edge in links):
        if a in neighbours and b in neighbours:
            neighbours[a].append(b)
            neighbours[b].append(a)
    longest = 0
    for origin in nodes:
        distances = distances_from(origin, neighbours)
        if len(distances) < len(nodes):
            return False, None
        longest = max(longest, max(distances.values()))
    return True, longest


def distances_from(origin: int, neighbours: Mapping[int, Iterable[int]]) -> dict[int, int]:
    """Hops from ``origin`` to every node it reaches (breadth first)."""
    distances, queue = {origin: 0}, deque([origin])
    while queue:
        node = queue.popleft()
        for peer in neighbours[node]:
            if peer not in distances:
                distances[peer] = distances[node] + 1
                queue.append(peer)
    return distances


def connectivity(statuses: dict[int, AnyStatus], intended: int, nodes: int, phases: dict[RunPhase, int], started_ns: int,
                 finals: dict[int, AnyStatus]) -> Connectivity:  # fmt: skip
    links = observed_links(statuses)
    connected, hops = diameter(set(range(nodes)), links) if statuses else (False, None)
    failures: dict[str, int] = {}
    for status in finals.values():
        for reason, count in status.counters.handshake_failures.items():
            failures[reason] = failures.get(reason, 0) + count
    return Connectivity(
        intended_links=intended, links_up=len(links),
        links_ratio=len(links) / intended if intended else 1.0,
        time_to_connected_s=_since(phases, RunPhase.CONNECTED, started_ns),
        time_to_connected_from_fork_s=_since(phases, RunPhase.CONNECTED, phases.get(RunPhase.FORKING)),
        handshake_failures=sum(failures.values()), handshake_failures_by_reason=failures,
        graph_connected=connected, diameter_hops=hops, links_per_node=links_per_node(statuses),
        client_connections=sum(status.clients for status in statuses.values()),
    )  # fmt: skip


def links_per_node(statuses: dict[int, AnyStatus]) -> LinksPerNode | None:
    """Each node's own count of its validator links; clients (drivers, monitors) are counted apart."""
    counts = sorted(len(set(status.peer_ids) - {node}) for node, status in statuses.items())
    if not counts:
        return None
    return LinksPerNode(min=counts[0], median=int(percentile(counts, 0.5) or 0), max=counts[-1])


def _since(phases: dict[RunPhase, int], phase: RunPhase, origin_ns: int | None) -> float | None:
    if phase not in phases or origin_ns is None:
        return None
    return (phases[phase] - origin_ns) / 1e9


# -- consensus and work --------------------------------------------------------------------------------
def consensus(samples: list[Sample], steady: tuple[int, int], finals: dict[int, AnyStatus]) -> Consensus:
    inside = [s for s in samples if steady[0] <= s.at_ns <= steady[1] and s.statuses]
    blocks, span_s = 0, 0.0
    if len(inside) >= 2:
        blocks = _max_height(inside[-1]) - _max_height(inside[0])
        span_s = (inside[-1].at_ns - inside[0].at_ns) / 1e9
    rounds = [s.round_time_s for s in finals.values() if s.round_time_s.count]
    count = sum(r.count for r in rounds)
    return Consensus(
        height=max((s.height for s in finals.values()), default=0),
        blocks_in_steady_window=blocks,
        block_interval_s=span_s / blocks if blocks else None,
        round_time_mean_s=sum(r.sum for r in rounds) / count if count else None,
        round_time_max_s=max((r.max for r in rounds), default=None),
    )  # fmt: skip


def _max_height(sample: Sample) -> int:
    return max(s.height for s in sample.statuses.values())


def work_per_proof(finals: dict[int, AnyStatus]) -> Work:
    """Network-wide counters divided by the proofs committed: counts, not timings, so CI can diff them."""
    committed = max((s.counters.proofs_committed for s in finals.values()), default=0)
    totals = {"frames": 0, "bytes": 0, "verifications": 0}
    for status in finals.values():
        counters = status.counters
        totals["frames"] += sum(counters.frames_out.values())
        totals["bytes"] += sum(counters.bytes_out.values())
        totals["verifications"] += counters.signature_verifications

    def per_proof(total: int) -> float | None:
        return total / committed if committed else None

    return Work(proofs_committed=committed, frames_total=totals["frames"], bytes_total=totals["bytes"],
                verifications_total=totals["verifications"], frames_per_proof=per_proof(totals["frames"]),
                bytes_per_proof=per_proof(totals["bytes"]), verifications_per_proof=per_proof(totals["verifications"]))  # fmt: skip


# -- stability -----------------------------------------------------------------------------------------
def stability(finals: dict[int, AnyStatus], crashes: list[Crash], planned_kills: set[int],
              nodes: int, node_span_s: float, safety: SafetyCheck | None, down_by_plan_at_end: int = 0) -> Stability:  # fmt: skip
    unplanned = [c for c in crashes if c.kind == ChildKind.NODE and c.index not in planned_kills]
    views = [s.counters.view_changes for s in finals.values()]
    height = max((s.height for s in finals.values()), default=0)
    uptime = [min(1.0, s.uptime_s / node_span_s) for s in finals.values()] if node_span_s > 0 else []
    return Stability(
        nodes_reporting_at_end=len(finals), nodes=nodes,
        uptime_mean=sum(uptime) / nodes if nodes else None,
        crashes=crashes, unplanned_crashes=len(unplanned),
        view_changes_max=max(views, default=0), view_changes_total=sum(views),
        protocol_errors=sum(s.counters.protocol_errors for s in finals.values()),
        equivocations_seen=sum(s.counters.equivocations_seen for s in finals.values()),
        consensus_success_rate=height / (height + max(views, default=0)) if height else None,
        safety=safety,
        unexpected_exceptions=sum(s.unexpected_exceptions for s in finals.values()),
        nodes_down_by_plan_at_end=down_by_plan_at_end,
    )  # fmt: skip


# -- resources -----------------------------------------------------------------------------------------
def resources(samples: list[Sample], steady: tuple[int, int], harness_cpu_s: float, run_s: float, cores: int) -> Resources:
    """CPU, context switches and supervisor CPU over the steady window only: the difference of the
    cumulative counters between the first and last sample inside it. USS and open files: the latest."""
    inside = [s for s in samples if steady[0] <= s.at_ns <= steady[1]]
    uss = _latest_uss(samples)
    cpu = _node_cpu_share(inside)
    fds = [p.open_files for p in samples[-1].processes.values()] if samples else []
    uss_mib = sorted(v / 2**20 for v in uss.values())
    mean_cpu, _ = mean_and_stdev(list(cpu.values()))
    return Resources(
        uss_per_node_mib=UssSummary(median=percentile(uss_mib, 0.5), max=uss_mib[-1] if uss_mib else None,
                                    nodes_measured=len(uss_mib)),
        uss_samples_in_window=sum(1 for s in inside if any(p.uss_bytes is not None for p in s.processes.values())),
        cpu_per_node_percent_mean=mean_cpu,
        open_files_per_node_max=max(fds, default=None),
        context_switches_per_s_per_node_mean=_mean_rate(inside, lambda p: p.ctx_switches),
        harness_cpu_s=harness_cpu_s,
        supervisor_cpu_percent_in_window=_supervisor_cpu(inside),
        harness_cpu_share=harness_cpu_s / (run_s * cores) if run_s > 0 and cores else None,
    )  # fmt: skip


def _supervisor_cpu(samples: list[Sample]) -> float | None:
    """The supervisor's own CPU (collector, status line, event handling) between first and last sample."""
    if len(samples) < 2 or samples[-1].at_ns <= samples[0].at_ns:
        return None
    return (samples[-1].supervisor_cpu_s - samples[0].supervisor_cpu_s) / ((samples[-1].at_ns - samples[0].at_ns) / 1e9) * 100


def _mean_rate(samples: list[Sample], counter: Callable[[ProcessSample], float]) -> float | None:
    """Per node, a cumulative counter's growth between its first and last sample per second; the mean."""
    if len(samples) < 2 or samples[-1].at_ns <= samples[0].at_ns:
        return None
    first, last = samples[0], samples[-1]
    span_s = (last.at_ns - first.at_ns) / 1e9
    grown = [counter(p) - counter(first.processes[n]) for n, p in last.processes.items() if n in first.processes]
    rates = [growth / span_s for growth in grown if growth >= 0]  # a counter that fell: the node restarted in between
    return sum(rates) / len(rates) if rates else None


def _latest_uss(samples: list[Sample]) -> dict[int, int]:
    latest: dict[int, int] = {}
    for sample in samples:
        for node, proc in sample.processes.items():
            if proc.uss_bytes is not None:
                latest[node] = proc.uss_bytes
    return latest


def _node_cpu_share(samples: list[Sample]) -> dict[int, float]:
    """Per node: CPU seconds over wall seconds between its first and last sample, in percent of a core."""
    if len(samples) < 2:
        return {}
    first, last = samples[0], samples[-1]
    span_s = (last.at_ns - first.at_ns) / 1e9
    return {n: (p.cpu_s - first.processes[n].cpu_s) / span_s * 100 for n, p in last.processes.items()
            if n in first.processes and span_s > 0 and p.cpu_s >= first.processes[n].cpu_s}  # a restarted node's CPU began again  # fmt: skip
