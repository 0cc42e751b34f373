"""What the HTML report plots, read from a run directory: typed series, no rendering.

- per interval: items offered and committed, the backlog, and the commit latency of what committed in
  it, from the run's timeline (``timeline.jsonl``, harness/metrics/timeline.py); a run stored without
  one (schema version 2 or older) gets the same rows per whole second from the drivers' raw records;
- per status sample: the nodes' CPU and USS (average and busiest node), the highest height, and the
  samples at which the view-change counter grew, from the timeline;
- the latency CDF of the valid items due in the steady window, from the drivers' raw records
  (harness/load/records.py): an item that never committed is a miss, so the curve stops short of 1;
- for a proof-of-work run, each block's time to reach 50 %, 90 % and 100 % of the nodes and the forks
  per height, read back from the nodes' databases (harness/run/pow_chains.py).

Times are seconds after the load window started: the timeline's origin, or, for a run without a
timeline, the earliest due time of any item (the first item of an open-loop plan is due at the start).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.load.records import ProofRecord, read_records
from harness.load.workload import Expect
from harness.metrics.pow import block_timelines
from harness.metrics.timeline import Timeline, load_timeline
from harness.report.schema import Report
from harness.run.pow_chains import StoredChain, read_chains
from popbench.errors import HarnessError, StorageError

SHARES = (0.5, 0.9, 1.0)  # the shares of the nodes a block's propagation is timed to (as harness/metrics/pow.py)
DATA_DIR_NAME = "data"  # the nodes' databases inside a run directory (harness/host/deploy.py)


@dataclass(frozen=True)
class LatencyCurve:
    """Sorted commit latencies of the committed items among ``due`` valid items of the steady window."""

    latencies_ms: list[float]
    due: int

    @property
    def committed_share(self) -> float:
        return len(self.latencies_ms) / self.due if self.due else 0.0


@dataclass(frozen=True)
class PerSecond:
    """One row per interval (a second, or less where the steady window cuts it) after the window start:
    items due and items committed per second in it, latency percentiles (ms, None when nothing committed
    in it) of what committed in it, and the backlog at its end (None when the source does not say)."""

    start_s: list[float]
    length_s: list[float]
    offered: list[float]
    committed: list[float]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    outstanding: list[int] | None = None


@dataclass(frozen=True)
class NodeResources:
    """The nodes at each status sample: seconds after the window start, CPU (% of one core) and USS (MiB)
    of the average node and of the busiest one, the highest height, and when views changed."""

    at_s: list[float]
    cpu_mean: list[float | None]
    cpu_max: list[float | None]
    uss_mean: list[float | None]
    uss_max: list[float | None]
    height: list[float | None]
    view_changes_at_s: list[float]


@dataclass(frozen=True)
class BlockPropagation:
    """Per block, the delay (ms) from its first sighting until each share of the nodes had it; and per
    height, how many blocks beyond one were seen there (forks)."""

    delays_ms: dict[float, list[float]]
    nodes: int
    forks_by_height: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSeries:
    """Everything the page plots besides the report itself; a part is None when the run has no data for it."""

    origin_ns: int | None
    latency: LatencyCurve | None
    per_second: PerSecond | None
    resources: NodeResources | None
    propagation: BlockPropagation | None
    notes: list[str] = field(default_factory=list)  # what could not be read, and why


def load_series(report: Report, run_dir: Path) -> RunSeries:
    notes: list[str] = []
    records = _records(run_dir, report.files.records, notes)
    timeline = _timeline(run_dir, report.files.timeline, notes)
    origin = timeline.header.origin_ns if timeline else min((r.due_ns for r in records), default=None)
    latency = per_second = None
    if records and origin is not None:
        start, end = _steady_ns(report, origin)
        latency = latency_curve(records, start, end)
        per_second = per_second_from_records(records, origin)
    if timeline is not None:
        per_second = per_second_from_timeline(timeline)
    resources = node_resources(timeline) if timeline is not None and timeline.samples else None
    propagation = None
    if report.deployment is not None and report.deployment.consensus == "pow":
        propagation = block_propagation(run_dir / DATA_DIR_NAME, report.deployment.nodes, notes)
    return RunSeries(origin, latency, per_second, resources, propagation, notes)


def _timeline(run_dir: Path, name: str | None, notes: list[str]) -> Timeline | None:
    if name is None:
        return None
    try:
        return load_timeline(run_dir / name)
    except HarnessError as err:
        notes.append(f"timeline not read: {err}")
        return None


def _records(run_dir: Path, names: list[str], notes: list[str]) -> list[ProofRecord]:
    records: list[ProofRecord] = []
    for name in names:
        try:
            records.extend(read_records(run_dir / name))
        except (OSError, HarnessError) as err:
            notes.append(f"records {name} not read: {err}")
    return records


def _steady_ns(report: Report, origin_ns: int) -> tuple[int, int]:
    """The steady window in ns: from the service section when the report has one, else from the profile."""
    service = report.metrics.service
    if service is not None:
        return origin_ns + int(service.steady_start_s * 1e9), origin_ns + int(service.steady_end_s * 1e9)
    run = report.profile.run
    return origin_ns + int(run.warmup_s * 1e9), origin_ns + int((run.duration_s - run.cooldown_s) * 1e9)


def latency_curve(records: list[ProofRecord], start_ns: int, end_ns: int) -> LatencyCurve:
    due = [r for r in records if r.expect == Expect.COMMIT and start_ns <= r.due_ns < end_ns]
    return LatencyCurve(sorted((r.commit_ns - r.due_ns) / 1e6 for r in due if r.commit_ns), len(due))


def per_second_from_timeline(timeline: Timeline) -> PerSecond:
    rows = timeline.seconds
    return PerSecond(start_s=[r.t_s for r in rows], length_s=[r.length_s for r in rows], offered=[r.offered / r.length_s for r in rows],
                     committed=[r.committed / r.length_s for r in rows],
                     p50_ms=[r.latency_p50_ms for r in rows], p99_ms=[r.latency_p99_ms for r in rows],
                     outstanding=[r.outstanding for r in rows])  # fmt: skip


def per_second_from_records(records: list[ProofRecord], origin_ns: int) -> PerSecond:
    """For a run without a timeline (a report older than schema version 3): the same rows, whole seconds."""
    offered = Counter(_second(r.due_ns, origin_ns) for r in records)
    latencies: dict[int, list[float]] = {}
    for r in records:
        if r.expect == Expect.COMMIT and r.commit_ns:
            latencies.setdefault(_second(r.commit_ns, origin_ns), []).append((r.commit_ns - r.due_ns) / 1e6)
    known = [*offered, *latencies]
    seconds = list(range(max(0, min(known, default=0)), max(known, default=-1) + 1))
    ordered = {s: sorted(latencies.get(s, [])) for s in seconds}
    return PerSecond(start_s=[float(s) for s in seconds], length_s=[1.0] * len(seconds), offered=[float(offered.get(s, 0)) for s in seconds],
                     committed=[float(len(ordered[s])) for s in seconds], p50_ms=[_rank(ordered[s], 0.5) for s in seconds],
                     p99_ms=[_rank(ordered[s], 0.99) for s in seconds])  # fmt: skip


def node_resources(timeline: Timeline) -> NodeResources:
    rows = timeline.samples
    views = [r.nodes.view_changes for r in rows]
    changed = [row.t_s for row, before, now in zip(rows[1:], views, views[1:], strict=False)
               if before is not None and now is not None and now > before]  # fmt: skip
    return NodeResources(at_s=[r.t_s for r in rows], cpu_mean=[r.nodes.cpu_percent_mean for r in rows],
                         cpu_max=[r.nodes.cpu_percent_max for r in rows], uss_mean=[r.nodes.uss_mib_mean for r in rows],
                         uss_max=[r.nodes.uss_mib_max for r in rows],
                         height=[float(r.nodes.height) if r.nodes.height is not None else None for r in rows],
                         view_changes_at_s=changed)  # fmt: skip


def _second(at_ns: int, origin_ns: int) -> int:
    return math.floor((at_ns - origin_ns) / 1e9)


def _rank(ordered: list[float], share: float) -> float | None:
    """Nearest-rank percentile (harness/stats.py uses the same rule)."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def block_propagation(data_dir: Path, nodes: int, notes: list[str]) -> BlockPropagation | None:
    if not data_dir.exists():
        notes.append(f"no node databases at {data_dir}: propagation and forks are not plotted")
        return None
    try:
        chains = read_chains(data_dir, nodes)
    except (OSError, StorageError) as err:
        notes.append(f"node databases not read: {err}")
        return None
    timelines = block_timelines(chains)
    reached = len(chains)
    delays = {share: sorted((times[need - 1] - times[0]) / 1e6 for _, times in timelines.values() if len(times) >= need)
              for share in SHARES if (need := max(1, math.ceil(share * reached)))}  # fmt: skip
    return BlockPropagation(delays, reached, forks_by_height(chains))


def forks_by_height(chains: dict[int, StoredChain]) -> dict[int, int]:
    """Per height above genesis: the distinct blocks any node stored there, less the one that can stay."""
    blocks_at = Counter(height for height, _ in {(entry[1], h) for chain in chains.values() for h, entry in chain.blocks.items()})
    return {height: count - 1 for height, count in sorted(blocks_at.items()) if height > 0}


@dataclass(frozen=True)
class Marks:
    """What the timeline marks on every panel: the steady window, stalls, view changes and the planned faults
    from apply to heal (s after the window start)."""

    steady: tuple[float, float] | None = None
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (start, length)
    view_changes: list[float] = field(default_factory=list)
    faults: list[tuple[float, float]] = field(default_factory=list)  # (applied, healed) of each planned fault
