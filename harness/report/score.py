"""The score, formula version 2: points on the service level, a grade decided by conditions, the points
capped by the grade so the two never disagree (docs/scoring.md, which changes with this file).

PoP with load: pace 25 + latency 25 + within 15 + stability 20 + links 15 = 100.
PoW with load: pace 25 + latency 15 + within 10 + stability 20 + links 10 + block_interval 10 + stale_rate 10.
A dimension the run did not exercise (no submission load, nothing to time stalls by) is left out and the
rest are scaled to 100, and the score says so. The grade comes from conditions first (hard gates, fell
behind, stalled, links lost -> F; service level breached -> C; a caveat -> B; else A), then the total is
capped at the grade's ceiling. The verify-bound ceiling and the efficiencies are information only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from harness.metrics.results import Metrics, PowMining, Service
from harness.profile import Profile, Slo
from harness.report.schema import Condition, Grade, GradeReason, Invalidity, InvalidReason, Score, ScoreItem

SCORE_VERSION = 2
GRADE_ORDER = [Grade.A, Grade.B, Grade.C, Grade.F]  # best first
GRADE_CAP = {Grade.A: 100.0, Grade.B: 89.9, Grade.C: 79.9, Grade.F: 49.9}
GRADE_FLOOR = {Grade.A: 90.0, Grade.B: 80.0, Grade.C: 50.0, Grade.F: 0.0}
HARD_GATES = {GradeReason.SAFETY_FAILED, GradeReason.INVALID_COMMITTED, GradeReason.UNPLANNED_CRASH,
              GradeReason.NODE_NOT_REPORTING, GradeReason.RUN_FAILED}  # fmt: skip

# curves: (good, bad) of each item, or how they follow from the service level
DELIVERY_GOOD, DELIVERY_BAD = 0.99, 0.5
LATENCY_GOOD_X_L, LATENCY_BAD_X_L = 1.0, 4.0  # p99 over all due items, in multiples of slo.latency_ms
WITHIN_BAD_X_ALLOWED = 10.0  # the within item reaches 0 at 10 x the allowed miss share (at most all missed)
STALLED_GOOD, STALLED_BAD = 0.0, 0.25
LINKS_BAD_X_MIN = 0.5  # the links item reaches 0 at half of slo.min_links_share
INTERVAL_ERROR_GOOD, INTERVAL_ERROR_BAD = 0.25, 1.0  # |mean interval - target| / target (exponential: ~1/sqrt(n) noise)
STALE_GOOD, STALE_BAD = 0.05, 0.25
POP_POINTS = {"pace": 25.0, "latency": 25.0, "within": 15.0, "stability": 20.0, "links": 15.0}
POW_POINTS = {"pace": 25.0, "latency": 15.0, "within": 10.0, "stability": 20.0, "links": 10.0, "block_interval": 10.0, "stale_rate": 10.0}


@dataclass(frozen=True)
class RunOutcome:
    """What the score needs besides the metrics: how the run ended."""

    failed: str | None = None  # why the run failed (a node never came up, ...), or None
    ended_early: str | None = None  # why it was interrupted, or None


def clamp01(value: float) -> float:
    return max(0.0, min(1.0, value))


def linear(value: float, good: float, bad: float) -> float:
    """1 at ``good`` or better, 0 at ``bad`` or worse, linear between (either direction)."""
    if good == bad:
        return 1.0 if value == good else 0.0
    return clamp01((value - bad) / (good - bad))


# -- the items -----------------------------------------------------------------------------------------
def _item(name: str, points: float, value: float | None, good: float, bad: float, shown: str) -> ScoreItem:
    earned = points * linear(value, good, bad) if value is not None else 0.0
    formula = f"{points:g} x linear({shown}, good {good:.4g}, bad {bad:.4g})"
    return ScoreItem(name=name, points=earned, max_points=points, value=value, good=good, bad=bad, formula=formula)


def items(metrics: Metrics, profile: Profile) -> tuple[list[ScoreItem], list[str]]:
    """The scored items and, for each dimension left out, why."""
    pow_run = profile.network.consensus == "pow"
    weights = POW_POINTS if pow_run else POP_POINTS
    service, slo = metrics.service, profile.slo
    scored: list[ScoreItem] = []
    left_out: list[str] = []
    if service is not None and service.due and profile.workload.rate > 0:
        scored += _service_items(service, slo, weights)
    else:
        left_out.append("pace, latency, within: not exercised (no submission load, or no valid item due in the steady window)")
    if service is not None and service.stalled_share is not None:
        scored.append(_item("stability", weights["stability"], service.stalled_share, STALLED_GOOD, STALLED_BAD,
                            f"stalled share {service.stalled_share:.3f}"))  # fmt: skip
    else:
        left_out.append("stability: not exercised (no commits to time: a PoP network without load proposes no block)")
    if service is not None and service.least_links_share is not None:
        good = slo.min_links_share
        scored.append(_item("links", weights["links"], service.least_links_share, good, LINKS_BAD_X_MIN * good,
                            f"least links share {service.least_links_share:.3f}"))  # fmt: skip
    else:
        left_out.append("links: not measured (no status sample in the steady window, or no link intended)")
    if pow_run:
        scored += _pow_items(metrics, weights, left_out)
    return scored, left_out


def _service_items(service: Service, slo: Slo, weights: dict[str, float]) -> list[ScoreItem]:
    p99_x = service.p99_all_ms / slo.latency_ms if service.p99_all_ms is not None and not service.p99_unbounded else None
    allowed_miss = 1.0 - slo.within_share
    miss = 1.0 - (service.within_target_share or 0.0)
    p99_shown = "p99 unbounded" if service.p99_unbounded else f"p99 {service.p99_all_ms or 0.0:,.0f} ms / L {slo.latency_ms:g} ms"
    return [
        _item("pace", weights["pace"], service.delivery, DELIVERY_GOOD, DELIVERY_BAD, f"delivery {service.delivery or 0.0:.3f}"),
        _item("latency", weights["latency"], p99_x, LATENCY_GOOD_X_L, LATENCY_BAD_X_L, p99_shown),
        _item("within", weights["within"], miss, allowed_miss, min(1.0, WITHIN_BAD_X_ALLOWED * allowed_miss), f"miss share {miss:.4f}"),
    ]  # fmt: skip


def _pow_items(metrics: Metrics, weights: dict[str, float], left_out: list[str]) -> list[ScoreItem]:
    m = metrics.mining
    if not isinstance(m, PowMining) or not m.block_interval.mean_s or not m.block_interval.target_s:
        left_out.append("block_interval, stale_rate: not measured (fewer than two mined blocks on the main chain)")
        return []
    error = abs(m.block_interval.mean_s - m.block_interval.target_s) / m.block_interval.target_s
    stale = m.stale_rate or 0.0
    return [
        _item("block_interval", weights["block_interval"], error, INTERVAL_ERROR_GOOD, INTERVAL_ERROR_BAD, f"interval error {error:.3f}"),
        _item("stale_rate", weights["stale_rate"], stale, STALE_GOOD, STALE_BAD, f"stale rate {stale:.3f}"),
    ]  # fmt: skip


# -- the conditions ------------------------------------------------------------------------------------
def _condition(reason: GradeReason, grade: Grade, message: str) -> Condition:
    return Condition(reason=reason, grade=grade, hard_gate=reason in HARD_GATES, message=message)


def conditions(metrics: Metrics, profile: Profile, outcome: RunOutcome) -> list[Condition]:
    """Every condition the run met, worst grade first (empty: nothing keeps it from an A)."""
    found = [*_hard_gates(metrics, outcome), *_service_conditions(metrics, profile), *_caveats(metrics, profile, outcome)]
    return sorted(found, key=lambda c: -GRADE_ORDER.index(c.grade))


def _hard_gates(metrics: Metrics, outcome: RunOutcome) -> Iterator[Condition]:
    s = metrics.stability
    if s.safety is not None and not s.safety.agree:
        yield _condition(GradeReason.SAFETY_FAILED, Grade.F, "safety violation: nodes committed different blocks at one height")
    items = s.safety.accounting if s.safety is not None else None
    if items is not None and not items.ok:
        yield _condition(GradeReason.ITEMS_LOST, Grade.F, f"acknowledged items lost {items.lost}, committed twice "
                         f"{items.duplicated}, committed unsubmitted {items.unexpected}")  # fmt: skip
    if metrics.invalid_proofs.committed:
        yield _condition(GradeReason.INVALID_COMMITTED, Grade.F, f"{metrics.invalid_proofs.committed} invalid items were committed")
    if s.unplanned_crashes:
        yield _condition(GradeReason.UNPLANNED_CRASH, Grade.F, f"{s.unplanned_crashes} nodes crashed without a planned fault")
    missing = s.nodes - s.nodes_down_by_plan_at_end - s.nodes_reporting_at_end
    if missing > 0 and not outcome.ended_early:
        yield _condition(GradeReason.NODE_NOT_REPORTING, Grade.F, f"{missing} nodes that should be up sent no final STATUS")
    if outcome.failed:
        yield _condition(GradeReason.RUN_FAILED, Grade.F, f"the run failed: {outcome.failed.splitlines()[0]}")


def _service_conditions(metrics: Metrics, profile: Profile) -> Iterator[Condition]:
    service, slo = metrics.service, profile.slo
    if service is None:
        return
    if service.stalls:
        longest = max(stall.length_s for stall in service.stalls)
        yield _condition(GradeReason.STALLED, Grade.F, f"stalled: no commit for {longest:.1f} s with items waiting (threshold "
                         f"{service.stall_threshold_s:g} s; {len(service.stalls)} stalls, {service.stalled_s:.1f} s in all)")  # fmt: skip
    if service.least_links_share is not None and service.least_links_share < slo.min_links_share:
        yield _condition(
            GradeReason.LINKS_LOST, Grade.F, f"links lost: least share up {service.least_links_share:.1%} < {slo.min_links_share:.0%}"
        )
    if profile.workload.rate <= 0:
        return
    if not service.due:
        if service.interrupted_at_s is None:  # stopped before anything came due: nothing to judge, no failure
            yield _condition(GradeReason.NOTHING_DUE, Grade.F, "no valid item was due in the steady window of a run with load")
        return
    delivery = service.delivery or 0.0
    if delivery < slo.min_delivery:
        yield _condition(GradeReason.FELL_BEHIND, Grade.F, f"fell behind: delivery {delivery:.1%} < {slo.min_delivery:.0%}")
    if service.p99_unbounded or (service.p99_all_ms or 0.0) > slo.latency_ms:
        shown = "unbounded" if service.p99_unbounded else f"{service.p99_all_ms or 0.0:,.0f} ms"
        yield _condition(
            GradeReason.P99_OVER_TARGET, Grade.C, f"service level breached: p99 over all due items {shown} > L {slo.latency_ms:g} ms"
        )
    share = service.within_target_share or 0.0
    if share < slo.within_share:
        yield _condition(GradeReason.WITHIN_SHARE_SHORT, Grade.C, f"service level breached: {share:.2%} within L, < {slo.within_share:.0%}")


def _caveats(metrics: Metrics, profile: Profile, outcome: RunOutcome) -> Iterator[Condition]:
    service = metrics.service
    if profile.workload.rate <= 0:
        yield _condition(GradeReason.NO_LOAD, Grade.B, "no submission load: the service level was not tried")
    if service is not None and service.light_load:
        yield _condition(GradeReason.LIGHT_LOAD, Grade.B, f"light load: offered below {service.light_load_below_per_s or 0.0:,.1f}/s "
                         f"({profile.score.light_load_fraction:.0%} of the verify-bound ceiling)")  # fmt: skip
    views = metrics.stability.view_changes_total
    if views and not profile.faults:
        yield _condition(GradeReason.VIEW_CHANGES_UNPLANNED, Grade.B,
                         f"{views} view changes (the nodes' final counts, summed: the whole run) without a planned fault")  # fmt: skip
    if metrics.stability.unexpected_exceptions:
        yield _condition(
            GradeReason.UNEXPECTED_EXCEPTIONS, Grade.B, f"{metrics.stability.unexpected_exceptions} exceptions reached a node's loop"
        )


def invalidity(metrics: Metrics) -> list[Invalidity]:
    t = metrics.throughput
    if t is not None and t.generator.fell_behind:
        return [Invalidity(reason=InvalidReason.GENERATOR_FELL_BEHIND,
                           message=f"the load generator fell behind its schedule (p99 send lateness {t.generator.send_late_p99_ms or 0.0:.0f} ms)")]  # fmt: skip
    return []


# -- the total -----------------------------------------------------------------------------------------
def grade_of_points(total: float) -> Grade:
    return next(grade for grade in GRADE_ORDER if total >= GRADE_FLOOR[grade])


def score(metrics: Metrics, profile: Profile, outcome: RunOutcome | None = None) -> Score:
    outcome = outcome or RunOutcome()
    scored, left_out = items(metrics, profile)
    earned, possible = sum(i.points for i in scored), sum(i.max_points for i in scored)
    scale = 100.0 / possible if possible else 0.0
    scaled = round(earned * scale, 1)
    found = conditions(metrics, profile, outcome)
    grade = found[0].grade if found else Grade.A
    total = min(scaled, GRADE_CAP[grade])
    if grade_of_points(total) != grade and GRADE_ORDER.index(grade_of_points(total)) > GRADE_ORDER.index(grade):
        grade = grade_of_points(total)
        found.insert(0, _condition(GradeReason.POINTS_BELOW_GRADE, grade, f"{total:.1f} points are below the conditions' grade floor"))
    safety = metrics.stability.safety is None or metrics.stability.safety.agree
    lines = arithmetic(scored, earned, possible, scaled, total, grade, found)
    if outcome.ended_early:  # not graded: what ran gets a provisional grade, labelled as such (docs/scoring.md)
        lines[-1] = f"provisional: {lines[-1]}; no grade: the run was interrupted ({outcome.ended_early})"
    return Score(
        total=total, grade=None if outcome.ended_early else grade,
        provisional_grade=(grade if possible else None) if outcome.ended_early else None,
        earned=earned, possible=possible, scale=scale, scaled=scaled,
        cap=GRADE_CAP[grade] if total < scaled else None, items=scored, left_out=left_out, conditions=found,
        hard_gate=any(c.hard_gate for c in found), valid_measurement=not invalidity(metrics), invalid_because=invalidity(metrics),
        passed_safety=safety, arithmetic=lines,
        notes=[f"left out: {why}" for why in left_out] + (["the remaining items are scaled to 100"] if left_out and possible else []),
    )  # fmt: skip


def arithmetic(scored: list[ScoreItem], earned: float, possible: float, scaled: float, total: float,
               grade: Grade, found: list[Condition]) -> list[str]:  # fmt: skip
    """The lines that take the items to the total and the grade, each checkable by hand."""
    lines = [f"{i.name}: {i.formula} = {i.points:.2f}" for i in scored]
    lines.append(" + ".join(f"{i.points:.2f}" for i in scored) + f" = {earned:.2f} of {possible:g}" if scored else "nothing was scored")
    if possible and possible != 100:
        lines.append(f"scaled to 100: {earned:.2f} x 100 / {possible:g} = {scaled:.1f}")
    if total < scaled:
        lines.append(f"capped at {GRADE_CAP[grade]:g} (grade {grade}): {scaled:.1f} -> {total:.1f}")
    why = "; ".join(c.reason for c in found) or "no condition keeps it from an A"
    lines.append(f"total {total:.1f}, grade {grade} ({why})")
    return lines


# -- the exit status of `popbench run` -----------------------------------------------------------------
class ExitStatus(IntEnum):
    """`popbench run`'s exit statuses (README, docs/scoring.md)."""

    PASS = 0
    FAILED = 1  # grade F, a hard gate, a failed run, or a total below --min-score
    USAGE = 2  # bad flags or profile (raised before any process is forked)
    NOT_VALID = 3  # not valid as a measurement (the load generator fell behind)
    INTERRUPTED = 130


def exit_status(result: Score, min_score: float, interrupted: bool) -> tuple[ExitStatus, str | None]:
    """The status and the line to print on stderr, checked in this order: interrupted; failed (F or a
    hard gate, whatever ``min_score``); not valid as a measurement; below ``min_score``; else pass."""
    if interrupted:
        return ExitStatus.INTERRUPTED, None
    if result.hard_gate or result.grade == Grade.F:
        reasons = ", ".join(c.reason for c in result.conditions if c.grade == Grade.F)
        return ExitStatus.FAILED, f"grade F ({reasons})"
    if not result.valid_measurement:
        return ExitStatus.NOT_VALID, "not valid as a measurement: " + "; ".join(i.message for i in result.invalid_because)
    if result.total < min_score:
        return ExitStatus.FAILED, f"score {result.total:.1f} is below the minimum {min_score:g}"
    return ExitStatus.PASS, None
