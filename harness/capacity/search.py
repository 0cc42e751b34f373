"""The capacity search: for each size, the highest rate sustained within the SLO; then the largest size
that sustains a given rate.

Per size: a closed-loop probe (what the network commits when it is never short of work: an upper
estimate), then open-loop runs that bracket the knee (start at ``start_fraction`` x the probe, step by
``step_factor`` up after a pass or down after a fail until one rate passes and a higher one fails), then
bisection until the bracket is within ``tolerance``. Every rate is verified by real runs (``repeats`` per
rate; it counts as sustained when at least ``min_sustained_repeats`` of them are). The search is
deterministic given the outcomes, so a resumed sweep replays stored runs for free and continues where
it stopped. A budget (minutes on a clock, or runs) bounds the runs actually performed.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import msgspec

from harness.capacity.points import CapacityRecord, RunKey, Runner, RunRecord, Shortfall, Slo, judge, round_rate
from harness.kinds import WorkloadMode
from popbench.errors import ConfigError, HarnessError

DEFAULT_RUN_ESTIMATE_S = 60.0  # a run's wall time before the first run of this invocation has been timed
MONOTONE_ASSUMPTION = "monotone in size: if N validators fail a rate, every larger N is assumed to fail it too"


class BudgetExhausted(HarnessError):
    """Raised when the sweep's budget forbids another run; the search records where it stopped."""


class SizeStatus(StrEnum):
    """How far the search at one size got."""

    FOUND = "found"  # a sustained rate and a failing rate within the tolerance of each other
    RUNS_EXHAUSTED = "runs-exhausted"  # bracketed, but max_points_per_size came before the tolerance
    NO_UPPER = "no-upper"  # every rate tried was sustained: the highest is a lower bound only
    NONE_SUSTAINED = "none-sustained"  # not even min_rate_per_s was sustained
    PROBE_FAILED = "probe-failed"  # the closed-loop probe measured nothing or committed nothing
    BUDGET = "budget"  # the budget ran out during (or before) this size
    GRID = "grid"  # the plan listed its rates: the capacity lies between the highest sustained and the next one up


class Budget(CapacityRecord, frozen=True, kw_only=True):
    """Bounds the runs this invocation performs (stored runs replayed on resume are free)."""

    max_minutes: float | None = None
    max_runs: int | None = None
    run_estimate_s: float = DEFAULT_RUN_ESTIMATE_S


class SearchPlan(CapacityRecord, frozen=True, kw_only=True):
    """What to search; stored in sweep.json, and a resume must use the same plan."""

    sizes: list[int]
    target_rate_per_s: float | None = None  # the rate for "the largest size that sustains it"
    probe_rate_per_s: float = 5000.0  # the closed-loop probe's pool sizing (it offers what the network takes)
    start_fraction: float = 0.7
    step_factor: float = 1.5
    tolerance: float = 0.10
    min_rate_per_s: float = 1.0
    max_points_per_size: int = 10  # open-loop rates tried per size (each run `repeats` times)
    repeats: int = 1
    min_sustained_repeats: int | None = None  # None: every repeat must sustain
    rates: list[float] = msgspec.field(default_factory=list)  # given: each size runs exactly these open-loop rates
    run_settings: dict[str, str] = msgspec.field(default_factory=dict)  # how the runner performs a run (profile, overrides)

    def __post_init__(self) -> None:
        _require(bool(self.sizes) and all(n >= 1 for n in self.sizes), "sizes", f"must be node counts >= 1, not {self.sizes}")
        _require(0 < self.start_fraction <= 1, "start_fraction", f"must be in (0, 1], not {self.start_fraction}")
        _require(self.step_factor > 1, "step_factor", f"must be over 1, not {self.step_factor}")
        _require(0 < self.tolerance < self.step_factor - 1, "tolerance", f"must be in (0, step_factor - 1), not {self.tolerance}")
        _require(self.min_rate_per_s > 0, "min_rate_per_s", f"must be positive, not {self.min_rate_per_s}")
        _require(self.max_points_per_size >= 2, "max_points_per_size", f"must be at least 2, not {self.max_points_per_size}")
        _require(self.repeats >= 1, "repeats", f"must be at least 1, not {self.repeats}")
        _require(all(r > 0 and math.isfinite(r) for r in self.rates), "rates", f"must be positive rates, not {self.rates}")
        _require(
            1 <= self.sustained_repeats_needed <= self.repeats,
            "min_sustained_repeats",
            f"must be in 1..repeats, not {self.min_sustained_repeats}",
        )

    @property
    def sustained_repeats_needed(self) -> int:
        return self.repeats if self.min_sustained_repeats is None else self.min_sustained_repeats


class SizeCapacity(CapacityRecord, frozen=True, kw_only=True):
    """The finding at one size: the highest verified sustained rate, and the rate above it that failed and why."""

    nodes: int
    status: SizeStatus
    probe_committed_per_s: float | None
    sustained_rate_per_s: float | None
    p99_ms_at_sustained: float | None
    failed_rate_per_s: float | None
    why_not_above: list[str]
    rates_tried: int
    note: str = ""


class LargestSize(CapacityRecord, frozen=True, kw_only=True):
    """The largest size of the plan that sustains ``rate_per_s``, under the monotone assumption, checked."""

    rate_per_s: float
    nodes: int | None  # None: not even the smallest size sustains it
    smallest_failing: int | None
    why_not_above: list[str]
    complete: bool  # False: the budget stopped the search before it converged
    assumption: str = MONOTONE_ASSUMPTION
    non_monotone: list[str] = msgspec.field(default_factory=list)


class Findings(CapacityRecord, frozen=True, kw_only=True):
    capacities: list[SizeCapacity] = msgspec.field(default_factory=list)
    largest: LargestSize | None = None
    stopped: str | None = None  # why the search ended early (the budget), None when it ran to the end


@dataclass(frozen=True)
class Progress:
    """Reported after every finished run (stored runs replayed on resume too, with ``stored`` set)."""

    record: RunRecord
    stored: bool
    runs_finished: int  # performed or replayed so far
    runs_expected: int  # an estimate of the whole search (grows if the search needs more)
    elapsed_s: float
    eta_s: float | None

    def line(self) -> str:
        key = self.record.key
        verdict = "sustained" if self.record.verdict.sustained else "not sustained: " + "; ".join(self.record.verdict.why_not)
        eta = f", ETA {format_duration(self.eta_s)}" if self.eta_s is not None else ""
        source = " (stored)" if self.stored else ""
        outcome = self.record.outcome
        p99 = "unbounded" if outcome.p99_ms is None else f"{outcome.p99_ms:.0f} ms"
        figures = "" if outcome.error else f"committed {outcome.committed_per_s:.4g}/s, p99 {p99}, {format_duration(outcome.wall_s)}: "
        notes = "".join(f" ({note})" for note in outcome.notes)
        return (f"[{self.runs_finished}/~{self.runs_expected} {format_duration(self.elapsed_s)}{eta}] N={key.nodes} "
                f"{key.mode.value} {key.rate_per_s:g}/s #{key.repeat}{source}: {figures}{verdict}{notes}")  # fmt: skip


class RunLog(Protocol):
    """Where finished runs are kept (sweep.json, or memory in tests); the search asks it before running."""

    def find(self, key: RunKey) -> RunRecord | None: ...

    def add(self, record: RunRecord) -> None: ...

    def save_findings(self, findings: Findings) -> None: ...


@dataclass
class MemoryRunLog:
    """A RunLog in memory: for tests, and for a search whose runs need not survive the process."""

    records: dict[RunKey, RunRecord] = field(default_factory=dict)
    findings: Findings = field(default_factory=Findings)

    def find(self, key: RunKey) -> RunRecord | None:
        return self.records.get(key)

    def add(self, record: RunRecord) -> None:
        self.records[record.key] = record

    def save_findings(self, findings: Findings) -> None:
        self.findings = findings


@dataclass(frozen=True)
class RatePoint:
    """One rate verified at one size: its runs (repeats) and whether enough of them sustained."""

    rate_per_s: float
    records: list[RunRecord]
    sustained: bool

    @property
    def p99_ms(self) -> float | None:
        """Median p99 over the repeats; None (unbounded) counts as infinite."""
        median = statistics.median(math.inf if r.outcome.p99_ms is None else r.outcome.p99_ms for r in self.records)
        return None if math.isinf(median) else median

    @property
    def why_not(self) -> list[str]:
        return [why for r in self.records for why in r.verdict.why_not]


@dataclass
class Bracket:
    """The search's state at one size: what passed, what failed, how many rates were tried."""

    nodes: int
    probe_committed_per_s: float | None = None
    low: RatePoint | None = None  # the highest sustained rate so far
    high: RatePoint | None = None  # the lowest failed rate so far
    rates_tried: int = 0

    def add(self, point: RatePoint) -> None:
        self.rates_tried += 1
        if point.sustained and (self.low is None or point.rate_per_s > self.low.rate_per_s):
            self.low = point
        elif not point.sustained and (self.high is None or point.rate_per_s < self.high.rate_per_s):
            self.high = point

    def finding(self, status: SizeStatus, note: str = "") -> SizeCapacity:
        return SizeCapacity(nodes=self.nodes, status=status, probe_committed_per_s=self.probe_committed_per_s,
                            sustained_rate_per_s=self.low.rate_per_s if self.low else None,
                            p99_ms_at_sustained=self.low.p99_ms if self.low else None,
                            failed_rate_per_s=self.high.rate_per_s if self.high else None,
                            why_not_above=self.high.why_not if self.high else [], rates_tried=self.rates_tried, note=note)  # fmt: skip


class CapacitySearch:
    """Runs the search of a plan against a runner, keeping every finished run in a RunLog."""

    def __init__(self, plan: SearchPlan, slo: Slo, runner: Runner, runs: RunLog, budget: Budget | None = None,
                 clock: Callable[[], float] = time.monotonic, progress: Callable[[Progress], None] | None = None) -> None:  # fmt: skip
        self.plan, self.slo, self.runner, self.runs = plan, slo, runner, runs
        self.budget = budget or Budget()
        self.clock, self.progress = clock, progress
        self.started_s = clock()
        self.performed_wall_s: list[float] = []  # wall time of each run performed by this invocation
        self.finished = 0  # runs performed or replayed
        self.expected = expected_runs(plan)

    # -- the whole search ---------------------------------------------------------------------------
    def run(self) -> Findings:
        """Capacity at every size (smallest first), then the largest size for the target rate, if any."""
        findings = Findings()
        for nodes in sorted(set(self.plan.sizes)):
            smaller = findings.capacities[-1] if findings.capacities else None
            findings = Findings(capacities=[*findings.capacities, self.capacity_of(nodes, smaller)])
            self.runs.save_findings(findings)
        largest = self.largest_size(self.plan.target_rate_per_s, findings.capacities) if self.plan.target_rate_per_s else None
        stopped = next((c.note for c in findings.capacities if c.status is SizeStatus.BUDGET), None)
        if largest is not None and not largest.complete and stopped is None:
            stopped = "the budget ran out during the largest-size search"
        findings = Findings(capacities=findings.capacities, largest=largest, stopped=stopped)
        self.runs.save_findings(findings)
        return findings

    # -- one size -----------------------------------------------------------------------------------
    def capacity_of(self, nodes: int, smaller: SizeCapacity | None = None) -> SizeCapacity:
        """The highest rate ``nodes`` validators sustain: probe, bracket, bisect. ``smaller`` is the
        next smaller size's finding, where the open-loop runs start when the probe committed nothing."""
        bracket = Bracket(nodes)
        try:
            return self._search_size(bracket, smaller)
        except BudgetExhausted as stop:
            return bracket.finding(SizeStatus.BUDGET, note=str(stop))

    def _search_size(self, bracket: Bracket, smaller: SizeCapacity | None) -> SizeCapacity:
        if self.plan.rates:
            return self._grid(bracket)
        probe = self.record(RunKey(nodes=bracket.nodes, rate_per_s=round_rate(self.plan.probe_rate_per_s), mode=WorkloadMode.CLOSED))
        bracket.probe_committed_per_s = probe.outcome.committed_per_s
        if Shortfall.FAILED in probe.verdict.shortfalls:
            return SizeCapacity(nodes=bracket.nodes, status=SizeStatus.PROBE_FAILED, probe_committed_per_s=probe.outcome.committed_per_s,
                                sustained_rate_per_s=None, p99_ms_at_sustained=None, failed_rate_per_s=None,
                                why_not_above=probe.verdict.why_not, rates_tried=0)  # fmt: skip
        # A saturated network may stall, crash or commit nothing where a lower rate would not: the open-loop runs decide.
        probe_note = "; ".join(f"probe: {why}" for why in probe.verdict.why_not)
        if probe.outcome.committed_per_s > 0:
            start = max(self.plan.start_fraction * probe.outcome.committed_per_s, self.plan.min_rate_per_s)
        else:
            start, origin = self._start_without_probe(smaller)
            probe_note = _join(probe_note, f"the probe committed nothing, so the open-loop runs started at {start:g}/s ({origin})")
        self._bracket(bracket, round_rate(start))
        if bracket.low is None:
            lowest = bracket.high.rate_per_s if bracket.high else start
            return bracket.finding(
                SizeStatus.NONE_SUSTAINED, note=_join(f"no rate sustained: the lowest tried, {lowest:g}/s, failed", probe_note)
            )
        if bracket.high is None:
            return bracket.finding(SizeStatus.NO_UPPER, note=_join("every rate tried was sustained: a lower bound only", probe_note))
        return self._bisect(bracket, probe_note)

    def _start_without_probe(self, smaller: SizeCapacity | None) -> tuple[float, str]:
        """Where the open-loop runs start when the closed-loop probe committed nothing (a closed loop of
        thousands in flight can starve a large network into silence): the next smaller size's highest
        sustained rate, since capacity falls with N, else the plan's lowest rate."""
        if smaller is not None and smaller.sustained_rate_per_s:
            return max(smaller.sustained_rate_per_s, self.plan.min_rate_per_s), f"what N = {smaller.nodes} sustained"
        return self.plan.min_rate_per_s, "the lowest rate of the plan"

    def _grid(self, bracket: Bracket) -> SizeCapacity:
        """Every listed rate, lowest first: no probe, no bisection; the answer is as fine as the list."""
        points = []
        for rate in sorted({round_rate(r) for r in self.plan.rates}):
            points.append(self.verify(bracket.nodes, rate))
            bracket.add(points[-1])
        low = bracket.low
        bracket.high = min((p for p in points if not p.sustained and (low is None or p.rate_per_s > low.rate_per_s)),
                           key=lambda p: p.rate_per_s, default=None)  # fmt: skip
        below = [f"{p.rate_per_s:g}/s" for p in points if low is not None and not p.sustained and p.rate_per_s < low.rate_per_s]
        note = _join("the listed rates only", f"non-monotone: failed at {', '.join(below)} below the highest sustained" if below else "")
        if low is None:
            return bracket.finding(SizeStatus.NONE_SUSTAINED, note=_join("no listed rate sustained", note))
        if bracket.high is None:
            return bracket.finding(SizeStatus.NO_UPPER, note=_join("every listed rate was sustained: a lower bound only", note))
        return bracket.finding(SizeStatus.GRID, note)

    def _bracket(self, bracket: Bracket, rate: float) -> None:
        """Step up after a pass, down after a fail, until one rate passed and a higher one failed."""
        while bracket.rates_tried < self.plan.max_points_per_size:
            point = self.verify(bracket.nodes, rate)
            bracket.add(point)
            if bracket.low is not None and bracket.high is not None:
                return
            if point.sustained:
                rate = round_rate(rate * self.plan.step_factor)
            elif rate <= self.plan.min_rate_per_s:
                return
            else:
                rate = round_rate(max(rate / self.plan.step_factor, self.plan.min_rate_per_s))

    def _bisect(self, bracket: Bracket, note: str) -> SizeCapacity:
        """Halve the bracket until the failing rate is within the tolerance of the sustained one."""
        assert bracket.low is not None and bracket.high is not None
        while bracket.high.rate_per_s > bracket.low.rate_per_s * (1 + self.plan.tolerance):
            middle = round_rate((bracket.low.rate_per_s + bracket.high.rate_per_s) / 2)
            if bracket.rates_tried >= self.plan.max_points_per_size:
                return bracket.finding(
                    SizeStatus.RUNS_EXHAUSTED, note=_join(f"{bracket.rates_tried} rates tried before the tolerance", note)
                )
            if middle in (bracket.low.rate_per_s, bracket.high.rate_per_s):
                break  # the rounding cannot split the bracket further
            bracket.add(self.verify(bracket.nodes, middle))
        return bracket.finding(SizeStatus.FOUND, note)

    # -- the largest size for a rate ----------------------------------------------------------------
    def largest_size(self, rate_per_s: float, capacities: list[SizeCapacity]) -> LargestSize:
        """Bisect the plan's sizes at ``rate_per_s`` (monotone assumption), then check it against the capacities."""
        rate = round_rate(rate_per_s)
        sizes = sorted(set(self.plan.sizes))
        best: int | None = None
        failing: tuple[int, list[str]] | None = None
        verified: dict[int, bool] = {}
        low, high, complete = 0, len(sizes) - 1, True
        try:
            while low <= high:
                middle = (low + high) // 2
                point = self.verify(sizes[middle], rate)
                verified[sizes[middle]] = point.sustained
                if point.sustained:
                    best, low = sizes[middle], middle + 1
                else:
                    failing, high = (sizes[middle], point.why_not), middle - 1
        except BudgetExhausted:
            complete = False
        notes = non_monotone_notes(capacities, self.plan.tolerance) + disagreement_notes(capacities, verified, rate)
        return LargestSize(rate_per_s=rate, nodes=best, smallest_failing=failing[0] if failing else None,
                           why_not_above=failing[1] if failing else [], complete=complete, non_monotone=notes)  # fmt: skip

    # -- one rate, one run --------------------------------------------------------------------------
    def verify(self, nodes: int, rate_per_s: float) -> RatePoint:
        """Run (or replay) the repeats of one open-loop rate until the verdict cannot change."""
        needed, records = self.plan.sustained_repeats_needed, []
        for repeat in range(self.plan.repeats):
            records.append(self.record(RunKey(nodes=nodes, rate_per_s=rate_per_s, mode=WorkloadMode.OPEN, repeat=repeat)))
            passed = sum(r.verdict.sustained for r in records)
            if passed >= needed or len(records) - passed > self.plan.repeats - needed:
                break
        return RatePoint(rate_per_s, records, sum(r.verdict.sustained for r in records) >= needed)

    def record(self, key: RunKey) -> RunRecord:
        """The stored run of ``key`` (re-judged under this SLO), or a new run if the budget allows one."""
        stored = self.runs.find(key)
        if stored is not None:
            record = RunRecord(outcome=stored.outcome, verdict=judge(stored.outcome, self.slo))
        else:
            self._check_budget()
            began = self.clock()
            outcome = self.runner.run(key.nodes, key.rate_per_s, key.mode, key.repeat)
            self.performed_wall_s.append(self.clock() - began)
            record = RunRecord(outcome=outcome, verdict=judge(outcome, self.slo))
            self.runs.add(record)
        self.finished += 1
        self.expected = max(self.expected, self.finished + 1)
        if self.progress is not None:
            self.progress(Progress(record, stored is not None, self.finished, self.expected, self.elapsed_s(), self.eta_s()))
        return record

    # -- budget and ETA -----------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        return self.clock() - self.started_s

    def run_estimate_s(self) -> float:
        """The mean wall time of the runs this invocation performed, or the budget's estimate before the first."""
        return statistics.fmean(self.performed_wall_s) if self.performed_wall_s else self.budget.run_estimate_s

    def eta_s(self) -> float | None:
        remaining = max(self.expected - self.finished, 0) * self.run_estimate_s()
        if self.budget.max_minutes is not None:
            remaining = min(remaining, max(self.budget.max_minutes * 60 - self.elapsed_s(), 0.0))
        return remaining

    def _check_budget(self) -> None:
        performed = len(self.performed_wall_s)
        if self.budget.max_runs is not None and performed >= self.budget.max_runs:
            raise BudgetExhausted(f"budget spent: {performed} runs performed (--max-runs {self.budget.max_runs})")
        if self.budget.max_minutes is not None:
            elapsed, next_run = self.elapsed_s(), self.run_estimate_s()
            if elapsed + next_run > self.budget.max_minutes * 60:
                raise BudgetExhausted(f"budget spent: {elapsed / 60:.1f} of {self.budget.max_minutes:g} minutes used and a run "
                                      f"takes about {next_run:.0f} s")  # fmt: skip


def expected_runs(plan: SearchPlan) -> int:
    """A typical search's run count: per size a probe, two bracketing rates and the bisection steps."""
    bisections = max(math.ceil(math.log2((plan.step_factor - 1) / plan.tolerance)), 0)
    per_size = 1 + min(2 + bisections, plan.max_points_per_size) * plan.repeats
    if plan.rates:
        per_size = len({round_rate(r) for r in plan.rates}) * plan.repeats
    largest = math.ceil(math.log2(len(set(plan.sizes)) + 1)) * plan.repeats if plan.target_rate_per_s else 0
    return per_size * len(set(plan.sizes)) + largest


def non_monotone_notes(capacities: list[SizeCapacity], tolerance: float) -> list[str]:
    """Sizes whose sustained rate rises beyond the tolerance over a smaller size's: the monotone assumption fails there."""
    measured = sorted(
        (c.nodes, c.sustained_rate_per_s) for c in capacities if c.sustained_rate_per_s is not None and c.status is SizeStatus.FOUND
    )
    return [f"non-monotone: N={big} sustains {big_rate:g}/s, more than N={small} ({small_rate:g}/s)"
            for (small, small_rate), (big, big_rate) in itertools.pairwise(measured)
            if big_rate > small_rate * (1 + tolerance)]  # fmt: skip


def disagreement_notes(capacities: list[SizeCapacity], verified: dict[int, bool], rate_per_s: float) -> list[str]:
    """Sizes where the capacity search and a direct run at ``rate_per_s`` disagree."""
    notes = []
    for capacity in capacities:
        if capacity.nodes not in verified:
            continue
        said_pass = capacity.sustained_rate_per_s is not None and capacity.sustained_rate_per_s >= rate_per_s
        said_fail = capacity.failed_rate_per_s is not None and capacity.failed_rate_per_s <= rate_per_s
        if (said_pass and not verified[capacity.nodes]) or (said_fail and verified[capacity.nodes]):
            outcome = "sustained" if verified[capacity.nodes] else "failed"
            notes.append(f"non-monotone: N={capacity.nodes} {outcome} {rate_per_s:g}/s against its capacity search "
                         f"(sustained {capacity.sustained_rate_per_s}, failed {capacity.failed_rate_per_s})")  # fmt: skip
    return notes


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h12m``: for progress lines."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _join(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(message, key=f"sweep.{key}")
