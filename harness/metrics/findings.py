"""Findings: what happened in a run, each named, timed and with its numbers (the report's ``issues``).

Derived after the run from the metrics (docs/metrics.md), the timeline and what the run recorded
(crashes, applied faults, an error). Each :class:`Finding` has a kind (an enum), a severity, the offset
in seconds after the load window started where it began (None when it has no moment), a one-line
message and its figures. The list is ordered most serious first, then by time. The score decides the
grade separately (harness/report/score.py); findings say what a reader must look at.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from harness.kinds import ChildKind
from harness.metrics.growth import USS_QUANTITIES
from harness.metrics.results import SEVERITY_ORDER, Finding, FindingKind, Growth, Metrics, Service, Severity
from harness.metrics.service import planned_deaths
from harness.metrics.timeline import Timeline
from harness.profile import Slo
from harness.run.phases import RunData

MAX_PER_KIND = 10  # a 400-node run can change views hundreds of times: list the first ten and count the rest
BACKLOG_GROWTH_S = 2.0  # backlog growth worth more than this many seconds of offered load is "growing"
BACKLOG_GROWTH_MIN_ITEMS = 10
MEMORY_GROWTH_SHARE = 0.25  # USS growing by more than a quarter over the steady window ...
MEMORY_GROWTH_MIN_MIB = 10.0  # ... and by more than this many MiB


def findings(data: RunData, metrics: Metrics, timeline: Timeline | None) -> list[Finding]:
    origin_ns = data.window[0] if data.window else data.started_ns
    found = [*_hard(data, metrics, origin_ns), *_service(metrics.service, data.profile.slo), *_load(data, metrics)]
    found += _faults(data, origin_ns)
    found += _growth(metrics.growth)
    if timeline is not None:
        found += [*_view_changes(timeline, metrics.stability.view_changes_total), *_backlog(timeline), *_memory(timeline)]
    return sorted(found, key=lambda f: (SEVERITY_ORDER.index(f.severity), f.at_s if f.at_s is not None else -1.0))


def _finding(kind: FindingKind, severity: Severity, at_s: float | None, message: str, **figures: float) -> Finding:
    return Finding(kind=kind, severity=severity, at_s=at_s, message=message, figures=figures)


# -- hard gates ----------------------------------------------------------------------------------------
def _hard(data: RunData, metrics: Metrics, origin_ns: int) -> Iterator[Finding]:
    s = metrics.stability
    if s.safety is not None and not s.safety.agree:
        yield _finding(FindingKind.SAFETY, Severity.FAIL, None, "safety violation: nodes committed different blocks "
                       "at the same height (or a chain failed verification)", conflicts=s.safety.conflicts_total)  # fmt: skip
    items = s.safety.accounting if s.safety is not None else None
    if items is not None and not items.ok:
        yield _finding(FindingKind.ITEMS_LOST, Severity.FAIL, None,
                       f"of {items.acknowledged:,} acknowledged items {items.lost} were lost, {items.duplicated} committed "
                       f"twice; {items.unexpected} committed items no driver or miner submitted (ids in stability.safety.accounting)",
                       lost=items.lost, duplicated=items.duplicated, unexpected=items.unexpected)  # fmt: skip
    if metrics.invalid_proofs.committed:
        yield _finding(FindingKind.INVALID_COMMITTED, Severity.FAIL, None,
                       f"{metrics.invalid_proofs.committed} invalid items were committed", committed=metrics.invalid_proofs.committed)  # fmt: skip
    if data.error:
        yield _finding(FindingKind.RUN_FAILED, Severity.FAIL, None, f"the run failed: {data.error.splitlines()[0]}")
    if data.interrupted:
        yield _finding(
            FindingKind.INTERRUPTED, Severity.WARN, None, f"the run ended early ({data.interrupted}): figures cover only what ran"
        )
    planned = planned_deaths(data.faults_applied)
    for crash in s.crashes:
        if crash.kind == ChildKind.NODE and crash.index in planned:
            continue
        yield _finding(
            FindingKind.CRASH, Severity.FAIL, (crash.at_ns - origin_ns) / 1e9, f"{crash.name} exited unexpectedly ({crash.exit})"
        )
    missing = s.nodes - s.nodes_down_by_plan_at_end - s.nodes_reporting_at_end
    if missing > 0 and not data.error and not data.interrupted:
        yield _finding(FindingKind.NOT_REPORTING, Severity.FAIL, None,
                       f"{missing} nodes that should have been up sent no final STATUS", nodes=missing)  # fmt: skip


# -- the service level ---------------------------------------------------------------------------------
def _service(service: Service | None, slo: Slo) -> Iterator[Finding]:
    if service is None:
        return
    yield from _stalls(service)
    if service.delivery is not None and service.delivery < slo.min_delivery:
        yield _finding(FindingKind.FELL_BEHIND, Severity.FAIL, service.steady_start_s,
                       f"fell behind: {service.committed_in_window:,} of {service.due:,} items due in the steady window committed "
                       f"in it ({service.delivery:.1%}; the service level asks {slo.min_delivery:.0%})",
                       delivery=service.delivery, due=service.due, committed_in_window=service.committed_in_window)  # fmt: skip
    if service.least_links_share is not None and service.least_links_share < slo.min_links_share:
        yield _finding(FindingKind.LINK_LOST, Severity.FAIL, service.least_links_at_s,
                       f"links lost: only {service.least_links_share:.1%} of the intended links were up "
                       f"(the service level asks {slo.min_links_share:.0%})", least_links_share=service.least_links_share)  # fmt: skip
    yield from _slo(service, slo)


def _stalls(service: Service) -> Iterator[Finding]:
    for stall in service.stalls[:MAX_PER_KIND]:
        yield _finding(FindingKind.STALL, Severity.FAIL, stall.start_s,
                       f"stall: no commit for {stall.length_s:.1f} s from t+{stall.start_s:.1f}s "
                       f"(threshold {service.stall_threshold_s:g} s)", length_s=stall.length_s)  # fmt: skip
    if len(service.stalls) > MAX_PER_KIND:
        yield _finding(FindingKind.STALL, Severity.FAIL, None, f"{len(service.stalls) - MAX_PER_KIND} more stalls",
                       stalls=len(service.stalls))  # fmt: skip


def _slo(service: Service, slo: Slo) -> Iterator[Finding]:
    if not service.due:
        return
    p99 = "unbounded (more than 1 % never committed)" if service.p99_unbounded else f"{service.p99_all_ms:,.0f} ms"
    share = service.within_target_share or 0.0
    if service.p99_unbounded or (service.p99_all_ms or 0.0) > slo.latency_ms or share < slo.within_share:
        yield _finding(FindingKind.SLO_BREACHED, Severity.WARN, None,
                       f"service level breached: p99 over all due items {p99}, {share:.1%} committed within "
                       f"{slo.latency_ms:g} ms (target: p99 <= {slo.latency_ms:g} ms and {slo.within_share:.0%} within it)",
                       within_target_share=share, **({} if service.p99_all_ms is None else {"p99_all_ms": service.p99_all_ms}))  # fmt: skip


# -- the load ------------------------------------------------------------------------------------------
def _load(data: RunData, metrics: Metrics) -> Iterator[Finding]:
    t, service = metrics.throughput, metrics.service
    if service is not None and data.profile.workload.rate > 0 and service.due == 0:
        yield _finding(FindingKind.NOTHING_DUE, Severity.FAIL, None, "no valid item was due in the steady window of a run with load")
    if t is not None and t.generator.fell_behind:
        yield _finding(FindingKind.GENERATOR_SATURATED, Severity.INVALID, None,
                       f"the load generator fell behind its schedule (p99 send lateness {t.generator.send_late_p99_ms:.0f} ms): "
                       "not valid as a measurement", send_late_p99_ms=t.generator.send_late_p99_ms or 0.0)  # fmt: skip
    if t is not None and t.plan_exhausted and data.profile.workload.mode == "closed":
        yield _finding(
            FindingKind.PLAN_EXHAUSTED,
            Severity.WARN,
            None,
            "the closed-loop pool of items ran dry before the window ended: raise workload.rate",
        )
    if service is not None and service.light_load and t is not None:
        yield _finding(FindingKind.LIGHT_LOAD, Severity.WARN, None,
                       f"light load: {t.offered_per_s:,.1f} items/s offered, below {service.light_load_below_per_s or 0.0:,.1f}/s "
                       f"({data.profile.score.light_load_fraction:.0%} of the verify-bound ceiling {t.ceiling_per_s:,.0f}/s)",
                       offered_per_s=t.offered_per_s, ceiling_per_s=t.ceiling_per_s)  # fmt: skip
    s = metrics.stability
    if s.protocol_errors:
        yield _finding(FindingKind.PROTOCOL_ERRORS, Severity.WARN, None, f"{s.protocol_errors} protocol errors (malformed frames) were counted",
                       protocol_errors=s.protocol_errors)  # fmt: skip
    if s.unexpected_exceptions:
        yield _finding(FindingKind.UNEXPECTED_EXCEPTIONS, Severity.WARN, None,
                       f"{s.unexpected_exceptions} exceptions reached a node's event loop (a bug: see logs/)",
                       unexpected_exceptions=s.unexpected_exceptions)  # fmt: skip


def _faults(data: RunData, origin_ns: int) -> Iterator[Finding]:
    for fault in data.faults_applied:
        error = f" ({fault['error']})" if fault.get("error") else ""
        nodes = ", ".join(str(n) for n in fault.get("nodes") or [fault["node"]])
        how = f" by {fault['mechanism']}" if fault.get("mechanism") else ""
        verb = "healed" if fault.get("action") == "heal" else "planned fault"
        yield _finding(FindingKind.FAULT_APPLIED, Severity.INFO, (int(fault["at_ns"]) - origin_ns) / 1e9,
                       f"{verb}: {fault['kind']} node {nodes}{how}{error}", node=int(fault["node"]))  # fmt: skip


# -- the growth verdict (harness/metrics/growth.py) ----------------------------------------------------
def _growth(verdict: Growth | None) -> Iterator[Finding]:
    """Each quantity the growth verdict flagged: USS as memory growth, the others as resource growth."""
    for slope in verdict.slopes if verdict is not None else ():
        if not slope.flagged or slope.slope_per_hour is None or slope.ci_low_per_hour is None or slope.ci_high_per_hour is None:
            continue
        kind = FindingKind.MEMORY_GROWTH if slope.quantity in USS_QUANTITIES else FindingKind.RESOURCE_GROWTH
        yield _finding(kind, Severity.WARN, None,
                       f"growth verdict: {slope.quantity} grows {slope.slope_per_hour:+.3g} {slope.unit}/h over the steady window "
                       f"(95 % CI {slope.ci_low_per_hour:+.3g} to {slope.ci_high_per_hour:+.3g}; threshold {slope.threshold_per_hour:g})",
                       slope_per_hour=slope.slope_per_hour, ci_low_per_hour=slope.ci_low_per_hour,
                       threshold_per_hour=slope.threshold_per_hour)  # fmt: skip


# -- from the timeline ---------------------------------------------------------------------------------
def _view_changes(timeline: Timeline, total: int) -> Iterator[Finding]:
    """Each sample interval in which the nodes' view changes rose (the first MAX_PER_KIND, then the rest
    in one line), and those the samples did not see (before the first, after the last), so the findings
    add up to ``total``, the count the grade reads (the nodes' final STATUS, summed)."""
    states = [(row.t_s, row.nodes.view_changes) for row in timeline.samples if row.nodes.view_changes is not None]
    rose = [(t_s, after - before, after) for (_, before), (t_s, after) in itertools.pairwise(states) if after > before]
    for t_s, added, running in rose[:MAX_PER_KIND]:
        yield _finding(FindingKind.VIEW_CHANGE, Severity.WARN, t_s, f"view changes: +{added} by t+{t_s:.1f}s ({running} since the start)",
                       added=added, total=running)  # fmt: skip
    if len(rose) > MAX_PER_KIND:
        more = sum(added for _, added, _ in rose[MAX_PER_KIND:])
        yield _finding(FindingKind.VIEW_CHANGE, Severity.WARN, None,
                       f"view changes: +{more} more in {len(rose) - MAX_PER_KIND} more sample intervals", added=more)  # fmt: skip
    yield from _unsampled_view_changes(states, total)


def _unsampled_view_changes(states: list[tuple[float, int]], total: int) -> Iterator[Finding]:
    """View changes before the first status sample (while connecting) and after the last (the stop)."""
    if not states:
        return
    (first_s, first), (last_s, last) = states[0], states[-1]
    if first > 0:
        yield _finding(FindingKind.VIEW_CHANGE, Severity.WARN, first_s, f"view changes: +{first} before the first status sample",
                       added=first)  # fmt: skip
    if total > last:  # a killed node's count is in the samples, not in a final STATUS: then nothing is left over
        yield _finding(FindingKind.VIEW_CHANGE, Severity.WARN, last_s,
                       f"view changes: +{total - last} after the last status sample (in the nodes' final STATUS)", added=total - last)  # fmt: skip


def _backlog(timeline: Timeline) -> Iterator[Finding]:
    """Outstanding items (sent, not refused, not committed) at the steady window's end against its start."""
    steady = [row for row in timeline.seconds if row.steady]
    if not steady:
        return
    span_s = sum(row.length_s for row in steady)
    offered_per_s = sum(row.offered for row in steady) / span_s if span_s else 0.0
    first, last = steady[0].outstanding, steady[-1].outstanding
    growth = last - first
    if growth > max(BACKLOG_GROWTH_MIN_ITEMS, BACKLOG_GROWTH_S * offered_per_s):
        yield _finding(FindingKind.BACKLOG_GROWING, Severity.WARN, steady[0].t_s,
                       f"backlog growing: {first:,} items outstanding at the steady window's start, {last:,} at its end "
                       f"(+{growth / span_s:,.1f}/s)", start=first, end=last, per_s=growth / span_s)  # fmt: skip


def _memory(timeline: Timeline) -> Iterator[Finding]:
    """USS (mean over nodes) at the last steady-window sample that read it against the first."""
    h = timeline.header
    uss = [(row.t_s, row.nodes.uss_mib_mean) for row in timeline.samples
           if h.steady_start_s <= row.t_s < h.steady_end_s and row.nodes.uss_mib_mean is not None]  # fmt: skip
    if len(uss) < 2:
        return
    (t0, first), (t1, last) = uss[0], uss[-1]
    assert first is not None and last is not None
    if last - first > max(MEMORY_GROWTH_MIN_MIB, MEMORY_GROWTH_SHARE * first):
        yield _finding(FindingKind.MEMORY_GROWTH, Severity.WARN, t0,
                       f"memory growth: USS per node (mean) {first:.1f} MiB at t+{t0:.1f}s, {last:.1f} MiB at t+{t1:.1f}s",
                       start_mib=first, end_mib=last, per_s=(last - first) / (t1 - t0) if t1 > t0 else 0.0)  # fmt: skip
