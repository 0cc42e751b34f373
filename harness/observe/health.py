"""The health rule: HEALTHY, DEGRADED or CRITICAL from what the latest samples say (docs/monitoring.md).

One rule, in one place, for everything that watches a network live: the monitor shows it and /metrics
exposes it as ``popbench_health``. A pure function of a few counts, so the rule reads as it is written:

- CRITICAL: no node answered; or more than f nodes are down (PBFT: fewer than a quorum n - f answer, so
  no block can commit); or the network stalled (the highest height has not moved for longer than the
  stall threshold while items wait).
- DEGRADED: at least one node down (PBFT: at most f, so the quorum still stands); or a view change
  within the last two intervals (a leader failed or was slow); or, PoW, the nodes' tips disagreed for
  more than two intervals in a row (a fork that is not resolving at once).
- HEALTHY: none of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Health(IntEnum):
    """Ordered, so the worse of two is ``max``; the value is what ``popbench_health`` exposes."""

    HEALTHY = 0
    DEGRADED = 1
    CRITICAL = 2


@dataclass(frozen=True)
class HealthInputs:
    """What the rule looks at, counted by harness/observe/live.py from the samples."""

    nodes: int  # nodes watched
    down: int  # of them, not answering STATUS in the latest sample
    f: int | None  # the Byzantine fault threshold (PBFT); None for PoW, which has none
    stalled: bool
    recent_view_changes: int  # view changes counted in the last two intervals
    tips_split: bool  # PoW: distinct tips for more than two intervals in a row


def judge(inputs: HealthInputs) -> tuple[Health, list[str]]:
    """The health and every reason for it (empty when healthy), worst first."""
    critical, degraded = [], []
    if inputs.nodes and inputs.down >= inputs.nodes:
        critical.append("no node answers")
    elif inputs.f is not None and inputs.down > inputs.f:
        critical.append(f"{inputs.down} down > f = {inputs.f}: no quorum")
    elif inputs.down:
        bound = f" <= f = {inputs.f}" if inputs.f is not None else ""
        degraded.append(f"{inputs.down} node{'s' if inputs.down > 1 else ''} down{bound}")
    if inputs.stalled:
        critical.append("stalled: items wait, no block")
    if inputs.recent_view_changes:
        degraded.append(f"{inputs.recent_view_changes} view change{'s' if inputs.recent_view_changes > 1 else ''} just now")
    if inputs.tips_split:
        degraded.append("tips disagree (fork lasting)")
    if critical:
        return Health.CRITICAL, critical + degraded
    return (Health.DEGRADED, degraded) if degraded else (Health.HEALTHY, [])


@dataclass(frozen=True)
class ServiceInputs:
    """The service level's parts as they can be measured live (docs/monitoring.md, "Service level now");
    None for a part that cannot be measured from where the watcher stands."""

    latency_ms: float | None  # the drivers' p99 commit latency over the last interval; else the latest consensus latency
    latency_is_items: bool  # True: items' commit latency (a run's drivers); False: consensus rounds only
    latency_target_ms: float  # L
    delivery: float | None  # committed over sent by the drivers over the last few intervals
    min_delivery: float
    links_share: float | None  # the least share of its intended validator links any answering node has up
    min_links_share: float
    stalled: bool


@dataclass(frozen=True)
class ServiceNow:
    """Whether the service level holds now (None: nothing to judge it on yet) and each part as a line."""

    holds: bool | None
    parts: list[str]


def judge_service(inputs: ServiceInputs) -> ServiceNow:
    """Every measurable part must hold: latency within L, delivery at least the floor, every node with at
    least the least share of its intended links, no stall."""
    verdicts: list[bool] = []
    parts: list[str] = []
    if inputs.latency_ms is not None:
        ok = inputs.latency_ms <= inputs.latency_target_ms
        what = "p99" if inputs.latency_is_items else "round"
        parts.append(f"{what} {inputs.latency_ms:,.0f} ms {'<=' if ok else '>'} L {inputs.latency_target_ms:,.0f} ms")
        verdicts.append(ok)
    if inputs.delivery is not None:
        ok = inputs.delivery >= inputs.min_delivery
        parts.append(f"delivery {100 * inputs.delivery:.1f} % {'>=' if ok else '<'} {100 * inputs.min_delivery:g} %")
        verdicts.append(ok)
    if inputs.links_share is not None:
        ok = inputs.links_share >= inputs.min_links_share
        parts.append(f"links least {100 * inputs.links_share:.0f} % {'>=' if ok else '<'} {100 * inputs.min_links_share:g} %")
        verdicts.append(ok)
    if verdicts:
        parts.append("stalled" if inputs.stalled else "no stall")
        verdicts.append(not inputs.stalled)
    return ServiceNow(all(verdicts) if verdicts else None, parts)
