"""The service section: what the network did for the items due in the steady window (docs/metrics.md, "Service").

Computed from the drivers' raw per-item records (harness/load/records.py) and the status samples, the
same way for PoP proofs and PoW transfers (a transfer commits at k confirmations). Every valid item due
in the window counts: unsent, refused and never-committed items are misses with unbounded latency, so
nothing that failed vanishes from a percentile. Offsets are seconds after the load window started.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.load.records import ProofRecord
from harness.load.workload import Expect
from harness.metrics.results import CommitSource, Service, Stall
from harness.metrics.throughput import SteadyWindow, in_flight_at_stop
from harness.observe.collect import Sample

POW_STALL_INTERVALS = 10  # PoW stall threshold in target block intervals (6 would false-alarm ~7 % of 60 s runs)
RESTART_RECONNECT_GRACE_S = 5.0  # a restarted node's links count again this long after its restart


@dataclass(frozen=True)
class ServiceInputs:
    """What the service section needs besides the records: the run's settings and its planned faults."""

    origin_ns: int  # the load window start: offsets are measured from it
    steady: SteadyWindow
    latency_target_ms: float
    stall_threshold_s: float
    expected_commit_s: float  # how long a healthy network takes to commit an item (PoW: k + 1 intervals); see pending_since
    intended_edges: Sequence[tuple[int, int]]
    down_spans: dict[int, list[tuple[int, int]]]  # node -> [from_ns, to_ns) spans a planned kill kept it down
    light_load_below_per_s: float | None  # None: light load does not apply (PoW, or no ceiling)
    has_load: bool
    stopped_ns: int | None = None  # when an interrupted run was stopped; None: it ran to the end


def service(records: list[ProofRecord], samples: list[Sample], inputs: ServiceInputs) -> Service:
    steady, target_ns = inputs.steady, int(inputs.latency_target_ms * 1e6)
    in_flight = in_flight_at_stop(inputs.stopped_ns, target_ns)
    window_due = [r for r in records if r.expect == Expect.COMMIT and steady.holds(r.due_ns)]
    due = [r for r in window_due if not in_flight(r)]  # an interrupted run judges only the items it could
    latencies = sorted(r.commit_ns - r.due_ns for r in due if r.commit_ns)
    within = sum(1 for latency in latencies if latency <= target_ns)
    in_window = sum(1 for r in due if r.commit_ns and r.commit_ns < steady.end_ns + target_ns)
    p99_ns, unbounded = p99_with_misses(latencies, len(due))
    source, commits = commit_events(records, samples, steady, inputs.has_load)
    waiting = pending_since(records, int(inputs.expected_commit_s * 1e9)) if source == CommitSource.RECORDS else None
    stalls = find_stalls(commits, steady, inputs.stall_threshold_s, waiting) if source != CommitSource.NONE else []
    stalled_s = sum((length for _, length in stalls), 0.0)
    offered_per_s = sum(1 for r in records if steady.holds(r.due_ns)) / steady.seconds
    light = inputs.light_load_below_per_s
    least = least_links(samples, steady, inputs.intended_edges, inputs.down_spans)
    return Service(
        steady_start_s=_offset_s(steady.start_ns, inputs.origin_ns), steady_end_s=_offset_s(steady.end_ns, inputs.origin_ns),
        latency_target_ms=inputs.latency_target_ms, due=len(due), committed=len(latencies),
        committed_within_target=within, within_target_share=within / len(due) if due else None,
        p99_all_ms=p99_ns / 1e6 if p99_ns is not None else None, p99_unbounded=unbounded,
        committed_in_window=in_window, delivery=in_window / len(due) if due else None,
        commits_seen=sum(1 for r in records if r.expect == Expect.COMMIT and r.commit_ns and steady.holds(r.commit_ns)),
        commit_source=source, stall_threshold_s=inputs.stall_threshold_s, expected_commit_s=inputs.expected_commit_s,
        stalls=[Stall(start_s=_offset_s(start, inputs.origin_ns), length_s=length) for start, length in stalls],
        stalled_s=stalled_s, stalled_share=min(1.0, stalled_s / steady.seconds) if source != CommitSource.NONE else None,
        least_links_share=least[0] if least else None,
        least_links_at_s=_offset_s(least[1], inputs.origin_ns) if least else None,
        light_load=(offered_per_s < light) if light is not None and inputs.has_load else None,
        light_load_below_per_s=light if inputs.has_load else None,
        interrupted_at_s=_offset_s(inputs.stopped_ns, inputs.origin_ns) if inputs.stopped_ns is not None else None,
        in_flight_at_stop=len(window_due) - len(due),
    )  # fmt: skip


def p99_with_misses(sorted_latencies_ns: list[int], due: int) -> tuple[int | None, bool]:
    """Nearest-rank p99 over ``due`` items of which only ``sorted_latencies_ns`` committed; misses sort
    last (infinite latency). Returns (p99 in ns or None, whether the rank fell on a miss)."""
    if due == 0:
        return None, False
    rank = max(1, math.ceil(0.99 * due))
    if rank > len(sorted_latencies_ns):
        return None, True
    return sorted_latencies_ns[rank - 1], False


# -- stalls --------------------------------------------------------------------------------------------
def commit_events(records: list[ProofRecord], samples: list[Sample], steady: SteadyWindow,
                  has_load: bool) -> tuple[CommitSource, list[int]]:  # fmt: skip
    """Commit times inside the steady window: the drivers' COMMITTED notices under load; without load,
    the samples at which the highest height grew (PoW mines without load; PoP proposes no empty block)."""
    if has_load:
        seen = {r.commit_ns for r in records if r.expect == Expect.COMMIT and r.commit_ns and steady.holds(r.commit_ns)}
        return CommitSource.RECORDS, sorted(seen)
    heights = [(s.at_ns, max(st.height for st in s.statuses.values())) for s in samples if s.statuses]
    grew = [at for (at, height), (_, before) in zip(heights[1:], heights, strict=False) if height > before]
    if not grew:
        return CommitSource.NONE, []
    return CommitSource.HEIGHTS, [at for at in grew if steady.holds(at)]


PendingSince = Callable[[int, int], int | None]


def find_stalls(commits_ns: Iterable[int], steady: SteadyWindow, threshold_s: float,
                waiting: PendingSince | None = None) -> list[tuple[int, float]]:  # fmt: skip
    """Gaps longer than ``threshold_s`` between consecutive commits, counting the window's start to the
    first commit and the last commit to its end: (stall start ns, length s). No commit: one whole stall.

    With ``waiting`` (a run with load), a gap counts only from when an item was waiting in it: under a
    light load the network has nothing to commit between items, and an idle network has not stalled."""
    edges = [steady.start_ns, *sorted(commits_ns), steady.end_ns]
    stalls = []
    for a, b in itertools.pairwise(edges):
        if (b - a) / 1e9 <= threshold_s:
            continue  # short enough whatever waited in it
        start = a if waiting is None else waiting(a, b)
        if start is not None and (b - start) / 1e9 > threshold_s:
            stalls.append((start, (b - start) / 1e9))
    return stalls


def pending_since(records: list[ProofRecord], expected_commit_ns: int = 0) -> PendingSince:
    """For a gap (a, b) with no commit: from when a valid item was waiting in it and overdue, i.e. the
    earliest (due time + ``expected_commit_ns``) of an item due before b and not committed before b, but
    no earlier than a; None if none was.

    ``expected_commit_ns`` is how long a healthy network takes to commit an item (PoW: mined into a block,
    then k blocks on top). Without it a PoW run whose steady window opens before the first items could be
    confirmed counts the pipeline filling as a stall; in steady state the oldest waiting item is older
    than that, so it changes nothing there."""
    valid = sorted((r.due_ns, r.commit_ns) for r in records if r.expect == Expect.COMMIT)

    def since(a: int, b: int) -> int | None:
        for due_ns, commit_ns in valid:
            if due_ns >= b:
                return None
            if commit_ns == 0 or commit_ns >= b:
                return max(a, due_ns + expected_commit_ns)
        return None

    return since


# -- links ---------------------------------------------------------------------------------------------
def least_links(samples: list[Sample], steady: SteadyWindow, intended: Sequence[tuple[int, int]],
                down_spans: dict[int, list[tuple[int, int]]]) -> tuple[float, int] | None:  # fmt: skip
    """The least share, over status samples in the steady window, of intended links up, and the first
    sample (ns) that saw it; links of a node a planned kill has down are left out (until
    RESTART_RECONNECT_GRACE_S after its restart). None when no sample fell in the window."""
    shares = [(share, s.at_ns) for s in samples if steady.holds(s.at_ns) and (share := links_share_at(s, intended, down_spans)) is not None]
    return min(shares, key=lambda pair: (pair[0], pair[1])) if shares else None


def links_share_at(sample: Sample, intended: Sequence[tuple[int, int]], down_spans: dict[int, list[tuple[int, int]]]) -> float | None:
    """The share of the intended links the sample saw up. A link is seen through either end's STATUS, so
    a link whose two ends both missed the sample's deadline is unknown, not down, and is left out (on a
    saturated host a fifth of the nodes may answer late, which is no lost link)."""
    down = {node for node, spans in down_spans.items() if any(a <= sample.at_ns < b for a, b in spans)}
    expected = [edge for edge in intended if not down.intersection(edge) and sample.statuses.keys() & set(edge)]
    if not expected:
        return None
    up = {frozenset((node, peer)) for node, status in sample.statuses.items() for peer in status.peer_ids if peer != node}
    return sum(1 for edge in expected if frozenset(edge) in up) / len(expected)


KILLING_KINDS = ("kill", "wipe")  # planned faults a node dies of (its exit is no unplanned crash)


def planned_deaths(applied: list[dict[str, Any]]) -> set[int]:
    """Nodes a planned fault killed."""
    return {int(node) for f in applied if f["kind"] in KILLING_KINDS for node in f.get("nodes") or [f["node"]]}


def planned_down_spans(applied: list[dict[str, Any]], end_ns: int) -> dict[int, list[tuple[int, int]]]:
    """From the applied faults: each node a planned fault cuts off (a kill, a pause, a wipe, the smaller
    side of a partition: ``cut_off``) is down by plan from the fault until it heals (a kill: until the
    node's next restart), plus the reconnect grace, or to ``end_ns``."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for fault in sorted(applied, key=lambda f: int(f["at_ns"])):
        at_ns = int(fault["at_ns"])
        healing = fault.get("action") == "heal" or fault["kind"] == "restart"
        nodes = [int(n) for n in fault.get("cut_off", [fault["node"]] if fault["kind"] in (*KILLING_KINDS, "restart") else [])]
        for node in nodes:
            if not healing:
                spans.setdefault(node, []).append((at_ns, end_ns))
            elif spans.get(node):
                began, _ = spans[node][-1]
                spans[node][-1] = (began, at_ns + int(RESTART_RECONNECT_GRACE_S * 1e9))
    return spans


def _offset_s(at_ns: int, origin_ns: int) -> float:
    return (at_ns - origin_ns) / 1e9
