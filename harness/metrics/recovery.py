"""How the network took each planned fault (docs/faults.md, "Reading the recovery figures").

For every fault applied in the window (paired with its heal by the fault's index):

- ``longest_gap_s``: the longest time without a commit seen by the drivers from the fault to its heal
  (to the end of the window for one that never healed): a crashed leader costs about a view timeout;
- ``committed_per_s_during`` against ``committed_per_s_before`` (the same length before the fault, or
  the whole window up to it): how much of its throughput the network kept;
- ``first_commit_after_heal_s``: from the heal to the next commit;
- ``converged_after_heal_s``: from the heal to the first status sample in which every node that
  answered stands at one height at least as high as the highest before the heal (None: not seen);
- ``view_changes``: the nodes' summed view changes from the last sample before the fault to the first
  sample ``CONVERGE_GRACE_S`` after its heal.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

from harness.metrics.results import FaultRecovery
from harness.observe.collect import Sample

CONVERGE_GRACE_S = 5.0


def fault_recoveries(applied: list[dict[str, Any]], commit_ns: Sequence[int], samples: list[Sample],
                     window_end_ns: int, origin_ns: int) -> list[FaultRecovery]:  # fmt: skip
    """``commit_ns``: every commit time the drivers saw, sorted."""
    heals = {f["fault"]: f for f in applied if f.get("action") == "heal" and "fault" in f}
    result = []
    for fault in applied:
        if fault.get("action", "apply") != "apply" or "fault" not in fault:
            continue
        heal = heals.get(fault["fault"])
        start = int(fault["at_ns"])
        end = int(heal["at_ns"]) if heal else window_end_ns
        result.append(_recovery(fault, start, end, heal is not None, commit_ns, samples, origin_ns))
    return result


def _recovery(fault: dict[str, Any], start: int, end: int, healed: bool, commit_ns: Sequence[int], samples: list[Sample],
              origin_ns: int) -> FaultRecovery:  # fmt: skip
    span_s = max((end - start) / 1e9, 1e-9)
    before_start = max(origin_ns, start - (end - start))
    before_s = max((start - before_start) / 1e9, 1e-9)
    first_after = _first_at_or_after(commit_ns, end) if healed else None
    return FaultRecovery(
        fault=int(fault["fault"]), kind=str(fault["kind"]), nodes=[int(n) for n in fault.get("nodes", [])],
        at_s=(start - origin_ns) / 1e9, healed_at_s=(end - origin_ns) / 1e9 if healed else None,
        longest_gap_s=_longest_gap_s(commit_ns, start, end),
        committed_per_s_before=_count(commit_ns, before_start, start) / before_s,
        committed_per_s_during=_count(commit_ns, start, end) / span_s,
        first_commit_after_heal_s=(first_after - end) / 1e9 if first_after is not None else None,
        converged_after_heal_s=_converged_s(samples, end) if healed else None,
        view_changes=_view_changes(samples, start, end),
    )  # fmt: skip


def _count(times: Sequence[int], start: int, end: int) -> int:
    return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)


def _first_at_or_after(times: Sequence[int], at: int) -> int | None:
    i = bisect.bisect_left(times, at)
    return times[i] if i < len(times) else None


def _longest_gap_s(times: Sequence[int], start: int, end: int) -> float:
    inside = [start, *times[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)], end]
    return max(later - earlier for earlier, later in itertools.pairwise(inside)) / 1e9


def _converged_s(samples: list[Sample], healed_ns: int) -> float | None:
    before = [s for s in samples if s.at_ns <= healed_ns and s.statuses]
    target = max((st.height for st in before[-1].statuses.values()), default=0) if before else 0
    for sample in samples:
        heights = {st.height for st in sample.statuses.values()}
        if sample.at_ns > healed_ns and len(heights) == 1 and min(heights) >= target:
            return (sample.at_ns - healed_ns) / 1e9
    return None


def _view_changes(samples: list[Sample], start: int, end: int) -> int | None:
    before = [s for s in samples if s.at_ns <= start and s.statuses]
    after = [s for s in samples if s.at_ns >= end + CONVERGE_GRACE_S * 1e9 and s.statuses]
    if not before or not after:
        return None
    total = {n: st.counters.view_changes for n, st in before[-1].statuses.items()}
    later = {n: st.counters.view_changes for n, st in after[0].statuses.items()}
    return sum(max(0, later[n] - total[n]) for n in later.keys() & total.keys())
