"""The timeline of a run: what happened second by second, stored beside the report as ``timeline.jsonl``.

Two kinds of rows, each a typed Struct tagged by ``row``:
- ``second``: one per interval of at most 1 s from the load window's start to the end of the drain,
  aligned on the steady window's start (so the steady window is whole rows: the row that reaches its end
  is cut there): items offered (due), submitted and committed in it, and the commit latency of what
  committed in it (from the drivers' records), with the nodes' state at the last status sample in it;
- ``sample``: one per status sample (``run.status_interval_s``): the nodes' state at that moment, CPU
  over the interval since the previous sample.

The file's first line is a ``header`` row (origin and window); :func:`load_timeline` reads it all back.
Every offset ``t_s`` is seconds after the load window started, as everywhere in the report.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from harness.load.records import ProofRecord
from harness.load.workload import Expect
from harness.metrics.results import Record
from harness.metrics.throughput import outstanding_at
from harness.observe.collect import Sample
from harness.stats import percentile
from popbench.errors import HarnessError
from popbench.wire.status import AnyStatus

TIMELINE_NAME = "timeline.jsonl"
TIMELINE_VERSION = 3  # 2: NodeState.nodes_alive and SampleRow.took_s (both None when read from version 1)
# 3: NodeState.uss_mib_median, open_fds_max, db_bytes_per_block, cpu_ms_per_block (None when read from older ones)
ROW_S = 1.0


class NodeState(Record, frozen=True, kw_only=True):
    """The nodes at one status sample; a figure no node reported is None."""

    nodes_up: int  # nodes that answered STATUS
    height: int | None  # highest committed height (PoW: tip height) among them
    view_changes: int | None  # cumulative view changes summed over every node, each by its latest answer (None: none yet)
    links_up: int  # distinct links either end lists in its peer_ids
    cpu_percent_mean: float | None  # per node, CPU since the previous sample (100 = one core): mean over nodes
    cpu_percent_max: float | None
    uss_mib_mean: float | None  # unique set size, where this sample read it
    uss_mib_max: float | None
    mempool_mean: float | None
    mempool_max: int | None
    nodes_alive: int | None = None  # node processes running (version 2; None in older timelines): alive, answering or not
    # version 3 (None in older timelines), what the growth verdict fits (harness/metrics/growth.py):
    uss_mib_median: float | None = None  # median over the nodes whose USS this sample read
    open_fds_max: int | None = None  # open file descriptors of the node with the most
    db_bytes_per_block: float | None = None  # database + WAL growth since the previous sample over blocks committed since (all nodes)
    cpu_ms_per_block: float | None = None  # CPU since the previous sample over the blocks committed since: median over nodes


class TimelineHeader(Record, frozen=True, kw_only=True, tag="header", tag_field="row"):
    version: int
    origin_ns: int  # wall clock of the load window start: t_s = 0
    steady_start_s: float
    steady_end_s: float
    end_s: float  # end of the drain (or of the run, if it ended earlier)


class SecondRow(Record, frozen=True, kw_only=True, tag="second", tag_field="row"):
    t_s: float  # the interval's start
    length_s: float  # 1.0, except where the interval was cut at the steady window's end or the run's end
    steady: bool  # inside the steady window
    offered: int  # items (valid and invalid) due in it
    submitted: int  # items sent in it
    committed: int  # valid items whose commit was seen in it
    outstanding: int  # at its end: valid items sent, not refused, and not yet seen committed (the backlog)
    latency_p50_ms: float | None  # commit seen - due, of the items committed in it (nearest rank)
    latency_p99_ms: float | None
    nodes: NodeState | None  # at the last status sample inside it; None when no sample fell in it


class SampleRow(Record, frozen=True, kw_only=True, tag="sample", tag_field="row"):
    t_s: float
    nodes: NodeState
    took_s: float | None = None  # how long the sample took, request to deadline (version 2): the observer's own lag


class Timeline(Record, frozen=True, kw_only=True):
    header: TimelineHeader
    seconds: list[SecondRow]
    samples: list[SampleRow]


TimelineLine = TimelineHeader | SecondRow | SampleRow


# -- building ------------------------------------------------------------------------------------------
def build_timeline(records: list[ProofRecord], samples: list[Sample], origin_ns: int,
                   steady: tuple[int, int], end_ns: int) -> Timeline:  # fmt: skip
    sample_rows = sample_states(samples, origin_ns)
    bounds = row_bounds(origin_ns, steady, end_ns)
    seconds = [_second(records, sample_rows, origin_ns, a, b, steady) for a, b in itertools.pairwise(bounds)]
    header = TimelineHeader(version=TIMELINE_VERSION, origin_ns=origin_ns, steady_start_s=_s(steady[0], origin_ns),
                            steady_end_s=_s(steady[1], origin_ns), end_s=_s(end_ns, origin_ns))  # fmt: skip
    return Timeline(header=header, seconds=seconds, samples=sample_rows)


def row_bounds(origin_ns: int, steady: tuple[int, int], end_ns: int) -> list[int]:
    """Interval edges every ROW_S, aligned on the steady start, plus the origin, the steady end and the end."""
    step = int(ROW_S * 1e9)
    first = steady[0] - ((steady[0] - origin_ns) // step) * step
    edges = {origin_ns, steady[0], steady[1], end_ns, *range(first, end_ns, step)}
    return sorted(edge for edge in edges if origin_ns <= edge <= end_ns)


def _second(records: list[ProofRecord], states: list[SampleRow], origin_ns: int, a: int, b: int,
            steady: tuple[int, int]) -> SecondRow:  # fmt: skip
    committed = sorted((r.commit_ns - r.due_ns) / 1e6 for r in records if r.expect == Expect.COMMIT and a <= r.commit_ns < b)
    inside = [row for row in states if _s(a, origin_ns) <= row.t_s < _s(b, origin_ns)]
    return SecondRow(
        t_s=_s(a, origin_ns), length_s=(b - a) / 1e9, steady=steady[0] <= a < steady[1],
        offered=sum(1 for r in records if a <= r.due_ns < b), submitted=sum(1 for r in records if r.sent_ns and a <= r.sent_ns < b),
        committed=len(committed), outstanding=outstanding_at(records, b), latency_p50_ms=percentile(committed, 0.5), latency_p99_ms=percentile(committed, 0.99),
        nodes=inside[-1].nodes if inside else None,
    )  # fmt: skip


class ViewChangeCount:
    """Every node's view changes so far, each by its latest answer. A node that misses a sample keeps its
    count (summing only the nodes that answered made the total fall and rise again, so the rises added to
    more than happened); a restarted node's counter starts again at zero, so the count before its restart
    is kept."""

    def __init__(self) -> None:
        self._latest: dict[int, tuple[int, int]] = {}  # node -> (pid, its counter at its latest answer)
        self._before_restarts = 0

    def update(self, statuses: Iterable[AnyStatus]) -> int | None:
        for status in statuses:
            previous = self._latest.get(status.node_id)
            if previous is not None and previous[0] != status.pid:
                self._before_restarts += previous[1]
            self._latest[status.node_id] = (status.pid, status.counters.view_changes)
        if not self._latest:
            return None
        return self._before_restarts + sum(count for _, count in self._latest.values())


def sample_states(samples: Sequence[Sample], origin_ns: int) -> list[SampleRow]:
    rows: list[SampleRow] = []
    views = ViewChangeCount()
    for before, sample in zip([None, *samples], samples, strict=False):
        state = node_state(sample, before, views.update(sample.statuses.values()))
        rows.append(SampleRow(t_s=_s(sample.at_ns, origin_ns), nodes=state, took_s=sample.took_s))
    return rows


def node_state(sample: Sample, before: Sample | None, view_changes: int | None) -> NodeState:
    statuses = list(sample.statuses.values())
    links = {frozenset((s.node_id, peer)) for s in statuses for peer in s.peer_ids if peer != s.node_id}
    cpu = _cpu_percent(sample, before)
    uss = [p.uss_bytes / 2**20 for p in sample.processes.values() if p.uss_bytes is not None]
    mempool = [s.mempool for s in statuses]
    fds = [p.open_files for p in sample.processes.values()]
    return NodeState(
        nodes_up=len(statuses), height=max((s.height for s in statuses), default=None),
        view_changes=view_changes, links_up=len(links),
        cpu_percent_mean=_mean(cpu), cpu_percent_max=max(cpu, default=None),
        uss_mib_mean=_mean(uss), uss_mib_max=max(uss, default=None),
        mempool_mean=_mean([float(m) for m in mempool]), mempool_max=max(mempool, default=None), nodes_alive=len(sample.processes),
        uss_mib_median=_median(uss), open_fds_max=max(fds, default=None), db_bytes_per_block=_db_per_block(sample, before),
        cpu_ms_per_block=_median(_cpu_ms_per_block(sample, before)),
    )  # fmt: skip


def _cpu_percent(sample: Sample, before: Sample | None) -> list[float]:
    """Per node present in both samples: CPU seconds over wall seconds; a restarted node (counter fell) is left out."""
    if before is None or sample.at_ns <= before.at_ns:
        return []
    span_s = (sample.at_ns - before.at_ns) / 1e9
    pairs = ((p, before.processes[n]) for n, p in sample.processes.items() if n in before.processes)
    return [(p.cpu_s - q.cpu_s) / span_s * 100 for p, q in pairs if p.cpu_s >= q.cpu_s]


def _db_per_block(sample: Sample, before: Sample | None) -> float | None:
    """Database + WAL growth since the previous sample over the blocks committed since, summed over the nodes
    that answered both from the same process: a ratio of sums, since SQLite grows its files in steps (a
    checkpoint copies up to 1000 pages of WAL at once) and a median of steps is mostly 0."""
    grown = blocks = 0
    for node, status in sample.statuses.items():
        earlier, now, then = (
            before.statuses.get(node) if before else None,
            sample.processes.get(node),
            before.processes.get(node) if before else None,
        )
        if earlier is None or now is None or then is None or earlier.pid != status.pid or now.db_bytes is None or then.db_bytes is None:
            continue
        grown += now.db_bytes - then.db_bytes
        blocks += status.height - earlier.height
    return grown / blocks if blocks > 0 else None


def _cpu_ms_per_block(sample: Sample, before: Sample | None) -> list[float]:
    """Per node that answered both samples, same process, and committed blocks between them: CPU ms per block."""
    if before is None:
        return []
    found = []
    for node, status in sample.statuses.items():
        earlier, now, then = before.statuses.get(node), sample.processes.get(node), before.processes.get(node)
        if earlier is None or now is None or then is None or earlier.pid != status.pid:
            continue
        blocks = status.height - earlier.height
        if blocks > 0 and now.cpu_s >= then.cpu_s:
            found.append((now.cpu_s - then.cpu_s) * 1000 / blocks)
    return found


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _s(at_ns: int, origin_ns: int) -> float:
    return (at_ns - origin_ns) / 1e9


# -- the file ------------------------------------------------------------------------------------------
def write_timeline(timeline: Timeline, run_dir: Path) -> Path:
    path = run_dir / TIMELINE_NAME
    lines = [timeline.header, *timeline.seconds, *timeline.samples]
    path.write_bytes(b"".join(msgspec.json.encode(line) + b"\n" for line in lines))
    return path


def load_timeline(path: Path) -> Timeline:
    """A stored timeline.jsonl (or the run directory holding one); HarnessError when it is not one."""
    target = path / TIMELINE_NAME if path.is_dir() else path
    decoder = msgspec.json.Decoder(TimelineLine)
    try:
        rows = [decoder.decode(line) for line in target.read_bytes().splitlines() if line.strip()]
    except (OSError, msgspec.MsgspecError) as err:
        raise HarnessError(f"cannot read a timeline from {target}: {err}") from err
    headers = [row for row in rows if isinstance(row, TimelineHeader)]
    if len(headers) != 1:
        raise HarnessError(f"{target}: a timeline has exactly one header row, found {len(headers)}")
    return Timeline(header=headers[0], seconds=[r for r in rows if isinstance(r, SecondRow)],
                    samples=[r for r in rows if isinstance(r, SampleRow)])  # fmt: skip
