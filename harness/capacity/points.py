"""One run of a capacity sweep: what it measured, the service level it is judged by, and the verdict.

A run is keyed by (nodes, offered rate, mode, repeat). The runner that performs it is a seam
(:class:`Runner`): the search and its tests do not care whether a run forks real validators or asks a
fake with a known capacity curve. A run's measurements (:class:`RunOutcome`) are kept apart from its
verdict (:class:`Verdict`), which :func:`judge` computes from the outcome and a :class:`Slo`, so a stored
sweep can be re-judged under another service level without running anything again.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Protocol

import msgspec

from harness.kinds import WorkloadMode
from harness.profile import Slo as ProfileSlo
from popbench.errors import ConfigError

RATE_SIGNIFICANT_DIGITS = 3  # candidate rates are rounded so keys stay readable and stable across a resume
MAX_STALLED_SHARE = 0.05  # a commit gap of 5 % of the window (1.5 s of 30 s) is a stall, not block-interval jitter


class CapacityRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The base of every stored capacity type: immutable, decoded strictly (an unknown field is an error)."""


class Shortfall(StrEnum):
    """Why a run did not sustain its offered rate; each is one rule of :func:`judge`."""

    FAILED = "failed"  # the run did not produce a measurement (a node never came up, the harness failed)
    CRASHED = "crashed"  # a node died during the run
    STALL = "stall"  # commits stopped for too long a share of the window
    BACKLOG = "backlog"  # committed fell behind offered
    GENERATOR = "generator"  # the load generator fell behind its own schedule: the offered rate was not offered
    LATENCY = "latency"  # p99 over the target, or too few items within it
    LINKS = "links"  # links between validators went down


class Slo(CapacityRecord, frozen=True, kw_only=True):
    """The service level a run must meet to count as sustained (a profile's ``[slo]`` fills it).

    ``p99_target_ms``: the 99th percentile of commit latency over all due items (an uncommitted item
    counts as infinitely late). ``within_target_share``: the least share of due items committed within
    the target. ``max_stalled_share``: the most of the steady window that may pass without a commit.
    ``min_keep_pace``: committed/s over offered/s at least this. ``min_links_share``: the least share of
    intended links up at any sample.
    """

    p99_target_ms: float = 2000.0
    within_target_share: float = 0.99
    max_stalled_share: float = MAX_STALLED_SHARE
    min_keep_pace: float = 0.95
    min_links_share: float = 1.0

    def __post_init__(self) -> None:
        if not (self.p99_target_ms > 0 and math.isfinite(self.p99_target_ms)):
            raise ConfigError(f"must be a positive number of milliseconds, not {self.p99_target_ms}", key="slo.p99_target_ms")
        for name in ("within_target_share", "max_stalled_share", "min_keep_pace", "min_links_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"must be a share between 0 and 1, not {value}", key=f"slo.{name}")


def slo_from_profile(slo: ProfileSlo, max_stalled_share: float = MAX_STALLED_SHARE) -> Slo:
    """The sweep's SLO from a profile's ``[slo]``: its latency target is the p99 target (with
    ``within_share`` 0.99 the two rules agree), its least delivery is the pace to keep."""
    return Slo(p99_target_ms=slo.latency_ms, within_target_share=slo.within_share, max_stalled_share=max_stalled_share,
               min_keep_pace=slo.min_delivery, min_links_share=slo.min_links_share)  # fmt: skip


class RunKey(CapacityRecord, frozen=True, kw_only=True):
    """Which run: a sweep never performs the same key twice (``--resume`` skips keys already stored)."""

    nodes: int
    rate_per_s: float
    mode: WorkloadMode
    repeat: int = 0


class RunOutcome(CapacityRecord, frozen=True, kw_only=True):
    """What one run measured in its steady window.

    ``offered_per_s`` is the valid items due per second in the steady window (what the network owes).
    ``p99_ms`` is over all due items with an uncommitted item counted as infinitely late, so it is None
    when more than 1 % of them never committed (unbounded). CPU figures are node CPU summed over all
    nodes (exact counters), None when nothing committed. ``messages_per_block`` maps a message kind to
    frames per committed block, empty when the runner does not count them. A share the run did not
    measure is None, and the verdict counts it as a shortfall, never as a pass; ``notes`` say what the
    run did not measure or warned of. ``error`` is set when the run produced no measurement at all (then
    the rates are zero and the shares None).
    """

    key: RunKey
    offered_per_s: float
    committed_per_s: float
    p99_ms: float | None
    within_target_share: float | None
    stalled_share: float | None
    links_up_min_share: float | None
    crashed_nodes: int = 0
    generator_fell_behind: bool = False
    proofs_per_block: float | None = None
    cpu_ms_per_proof: float | None = None
    cpu_ms_per_block: float | None = None
    messages_per_block: dict[str, float] = msgspec.field(default_factory=dict)
    wall_s: float = 0.0
    error: str | None = None
    notes: list[str] = msgspec.field(default_factory=list)


class Verdict(CapacityRecord, frozen=True, kw_only=True):
    """Whether a run sustained its rate within the SLO; every shortfall is named with its figures."""

    sustained: bool
    shortfalls: list[Shortfall]
    why_not: list[str]


class RunRecord(CapacityRecord, frozen=True, kw_only=True):
    """A finished run as stored: its measurements and the verdict under the sweep's SLO."""

    outcome: RunOutcome
    verdict: Verdict

    @property
    def key(self) -> RunKey:
        return self.outcome.key


class Runner(Protocol):
    """Performs one run. May raise KeyboardInterrupt (Ctrl-C): the sweep keeps what finished before it."""

    def run(self, nodes: int, rate: float, mode: WorkloadMode, repeat_index: int) -> RunOutcome: ...


def round_rate(rate_per_s: float) -> float:
    """A candidate rate rounded to RATE_SIGNIFICANT_DIGITS significant digits (never to zero)."""
    if rate_per_s <= 0 or not math.isfinite(rate_per_s):
        raise ValueError(f"a rate must be positive and finite, not {rate_per_s}")
    digits = RATE_SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(rate_per_s))
    return round(rate_per_s, digits)


def failed_outcome(key: RunKey, error: str, wall_s: float = 0.0) -> RunOutcome:
    """The outcome of a run that measured nothing: a runner returns it instead of raising."""
    return RunOutcome(key=key, offered_per_s=0.0, committed_per_s=0.0, p99_ms=None, within_target_share=None,
                      stalled_share=None, links_up_min_share=None, wall_s=wall_s, error=error)  # fmt: skip


def judge(outcome: RunOutcome, slo: Slo) -> Verdict:
    """Sustained when no rule of the SLO is broken. A closed-loop probe is judged on health only (failed,
    crashed, stall, links): it has no offered rate to keep pace with."""
    found = [(shortfall, why) for shortfall, why in _shortfalls(outcome, slo) if why]
    return Verdict(sustained=not found, shortfalls=[s for s, _ in found], why_not=[f"{s.value}: {why}" for s, why in found])


def _shortfalls(outcome: RunOutcome, slo: Slo) -> list[tuple[Shortfall, str]]:
    if outcome.error is not None:
        return [(Shortfall.FAILED, outcome.error)]
    healthy = [
        (Shortfall.CRASHED, f"{outcome.crashed_nodes} node(s) crashed" if outcome.crashed_nodes else ""),
        (Shortfall.STALL, _stall(outcome, slo)),
        (Shortfall.LINKS, _links(outcome, slo)),
    ]
    if outcome.key.mode is WorkloadMode.CLOSED:
        return healthy  # a closed loop offers what the network takes: pace and latency say nothing about a rate
    return [
        *healthy,
        (Shortfall.BACKLOG, _backlog(outcome, slo)),
        (Shortfall.GENERATOR, "the load generator fell behind its schedule" if outcome.generator_fell_behind else ""),
        (Shortfall.LATENCY, _latency(outcome, slo)),
    ]


def _stall(outcome: RunOutcome, slo: Slo) -> str:
    if outcome.stalled_share is None:
        return "stalls not measured (no commit times in the steady window)"
    if outcome.stalled_share <= slo.max_stalled_share:
        return ""
    return f"no commit for {outcome.stalled_share:.0%} of the window (at most {slo.max_stalled_share:.0%})"


def _backlog(outcome: RunOutcome, slo: Slo) -> str:
    wanted = slo.min_keep_pace * outcome.offered_per_s
    if outcome.offered_per_s > 0 and outcome.committed_per_s >= wanted:
        return ""
    if outcome.offered_per_s <= 0:
        return f"nothing was due in the steady window at {outcome.key.rate_per_s:g}/s"
    return f"committed {outcome.committed_per_s:.1f}/s < {slo.min_keep_pace:.0%} of offered {outcome.offered_per_s:.4g}/s"


def _latency(outcome: RunOutcome, slo: Slo) -> str:
    reasons = []
    if outcome.p99_ms is None:
        reasons.append("p99 unbounded (over 1 % of due items never committed)")
    elif outcome.p99_ms > slo.p99_target_ms:
        reasons.append(f"p99 {outcome.p99_ms:.0f} ms > target {slo.p99_target_ms:.0f} ms")
    if outcome.within_target_share is None:
        reasons.append("share within target not measured (nothing due)")
    elif outcome.within_target_share < slo.within_target_share:
        reasons.append(f"{outcome.within_target_share:.1%} within target < {slo.within_target_share:.1%}")
    return "; ".join(reasons)


def _links(outcome: RunOutcome, slo: Slo) -> str:
    if outcome.links_up_min_share is None:
        return "links not measured (no status sample in the steady window)"
    if outcome.links_up_min_share >= slo.min_links_share:
        return ""
    return f"links up fell to {outcome.links_up_min_share:.0%} (at least {slo.min_links_share:.0%})"
