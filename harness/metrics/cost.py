"""Exact cost of the steady window: CPU from the kernel's own counters and work from the nodes' counters,
each differenced between two samples that bracket the window (docs/metrics.md, "Cost").

Every figure here is a difference of cumulative counters, never a sampled percentage: a node's user +
system CPU seconds as the kernel accounts them (psutil, ``/proc/<pid>/stat``), the supervisor's own
``os.times()``, each driver's and miner's CPU read the same way, and each node's STATUS counters
(commits, frames by message type). The run samples at the steady window's start and end on purpose
(``Boundary`` in harness/observe/collect.py); a run without those samples (it ended early) falls back
to the last sample at or before the start and the first at or after the end, and says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from harness.metrics.results import Cost
from harness.metrics.throughput import SteadyWindow
from harness.observe.collect import Boundary, Sample
from popbench.wire.status import AnyStatus, PowStatus

# STATUS answers go to the harness's collector: they count how often the harness looked, not what the
# protocol did, and would make messages per block depend on the sampling interval.
OBSERVATION_MESSAGES = frozenset({"Status"})


def window_edges(samples: list[Sample], steady: SteadyWindow) -> tuple[Sample, Sample, bool] | None:
    """The samples to difference: the marked boundary samples when the run took both (exact: True), else
    the last sample at or before the window's start and the first at or after its end (a wider span)."""
    marked_start = next((s for s in samples if s.boundary is Boundary.STEADY_START), None)
    marked_end = next((s for s in samples if s.boundary is Boundary.STEADY_END), None)
    if marked_start is not None and marked_end is not None:
        return marked_start, marked_end, True
    start = next((s for s in reversed(samples) if s.at_ns <= steady.start_ns), None)
    end = next((s for s in samples if s.at_ns >= steady.end_ns), None)
    if start is None or end is None or end.at_ns <= start.at_ns:
        return None
    return start, end, False


def same_process_nodes(start: Sample, end: Sample) -> list[int]:
    """Nodes whose STATUS and CPU were read at both edges by the same process (a restarted node's counters
    began again at zero, so its difference would mean nothing)."""
    return sorted(
        node for node, status in end.statuses.items()
        if node in start.statuses and start.statuses[node].pid == status.pid and node in start.processes and node in end.processes
    )  # fmt: skip


def committed_items(status: AnyStatus) -> int:
    """Proofs a PoP node committed; a PoW node's items are transfers."""
    return status.counters.transfers_committed if isinstance(status, PowStatus) else status.counters.proofs_committed


def _largest_growth(values: Iterable[tuple[int, int]]) -> int:
    """The most any node's counter grew (each node commits the same chain; a lagging node counts less)."""
    return max((after - before for before, after in values), default=0)


def messages_by_type(start: Sample, end: Sample, nodes: list[int]) -> Counter[str]:
    """Frames sent in the window by message type, summed over ``nodes``; the harness's own STATUS
    answers are left out (OBSERVATION_MESSAGES)."""
    sent: Counter[str] = Counter()
    for node in nodes:
        before, after = start.statuses[node].counters.frames_out, end.statuses[node].counters.frames_out
        for kind, count in after.items():
            if kind not in OBSERVATION_MESSAGES and count - before.get(kind, 0):
                sent[kind] += count - before.get(kind, 0)
    return sent


def _per(total: float, count: int, scale: float = 1.0) -> float | None:
    return total * scale / count if count else None


def cost(samples: list[Sample], steady: SteadyWindow | None, window_start_ns: int) -> Cost | None:
    """The steady window's cost, or None when no two samples bracket it."""
    edges = window_edges(samples, steady) if steady is not None else None
    if edges is None:
        return None
    start, end, exact = edges
    nodes = same_process_nodes(start, end)
    node_cpu_s = sum(end.processes[n].cpu_s - start.processes[n].cpu_s for n in nodes)
    load = [name for name in end.harness_cpu_s if name in start.harness_cpu_s]
    load_cpu_s = sum(end.harness_cpu_s[name] - start.harness_cpu_s[name] for name in load)
    supervisor_cpu_s = end.supervisor_cpu_s - start.supervisor_cpu_s
    proofs = _largest_growth((committed_items(start.statuses[n]), committed_items(end.statuses[n])) for n in nodes)
    blocks = _largest_growth((start.statuses[n].counters.blocks_committed, end.statuses[n].counters.blocks_committed) for n in nodes)
    messages = messages_by_type(start, end, nodes)
    total_messages = sum(messages.values())
    return Cost(
        window_start_s=(start.at_ns - window_start_ns) / 1e9, window_span_s=(end.at_ns - start.at_ns) / 1e9,
        exact_edges=exact, nodes_measured=len(nodes), node_cpu_s=node_cpu_s, supervisor_cpu_s=supervisor_cpu_s,
        load_cpu_s=load_cpu_s, load_processes_measured=len(load), proofs_committed=proofs, blocks_committed=blocks,
        messages_sent=total_messages,
        node_cpu_ms_per_proof=_per(node_cpu_s, proofs, 1e3), node_cpu_ms_per_block=_per(node_cpu_s, blocks, 1e3),
        harness_cpu_ms_per_proof=_per(supervisor_cpu_s + load_cpu_s, proofs, 1e3),
        messages_per_block=_per(total_messages, blocks),
        messages_per_block_by_type={kind: count / blocks for kind, count in sorted(messages.items())} if blocks else {},
    )  # fmt: skip
