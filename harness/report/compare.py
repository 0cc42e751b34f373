"""Compare two reports for CI: did this commit make the network slower, heavier or less stable?

Each watched figure has a direction (which way is worse) and a tolerance in percent. Work counters per
proof are counts, so their tolerance is tight; timings are noisy, so theirs is wider (the ``ci``
profile's committed/s spread over 5 runs was under 0.5 %, its p99 about 7 %). A figure worse than its
tolerance is a regression. Absent figures (a part not exercised) are skipped, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.report.schema import Report

TIMING_TOLERANCE_PERCENT = 10.0
COUNTER_TOLERANCE_PERCENT = 5.0
Figure = Callable[[Report], float | None]  # one figure of a report, None where the run did not measure it


@dataclass(frozen=True)
class Watched:
    label: str
    figure: Figure
    higher_is_better: bool
    tolerance_percent: float


def committed_per_s(report: Report) -> float | None:
    return report.metrics.throughput.committed_per_s if report.metrics.throughput else None


def latency_p50_ms(report: Report) -> float | None:
    return report.metrics.throughput.commit_latency.p50_ms if report.metrics.throughput else None


def latency_p99_ms(report: Report) -> float | None:
    return report.metrics.throughput.commit_latency.p99_ms if report.metrics.throughput else None


def hash_efficiency(report: Report) -> float | None:
    return report.metrics.mining.hash_efficiency if report.metrics.mining else None


WATCHED: tuple[Watched, ...] = (
    Watched("committed proofs/s", committed_per_s, True, TIMING_TOLERANCE_PERCENT),
    Watched("commit latency p50 ms", latency_p50_ms, False, TIMING_TOLERANCE_PERCENT),
    Watched("commit latency p99 ms", latency_p99_ms, False, TIMING_TOLERANCE_PERCENT),
    Watched("frames per proof", lambda r: r.metrics.work.frames_per_proof, False, COUNTER_TOLERANCE_PERCENT),
    Watched("bytes per proof", lambda r: r.metrics.work.bytes_per_proof, False, COUNTER_TOLERANCE_PERCENT),
    Watched("verifications per proof", lambda r: r.metrics.work.verifications_per_proof, False, COUNTER_TOLERANCE_PERCENT),
    Watched("time to connected s", lambda r: r.metrics.connectivity.time_to_connected_s, False, TIMING_TOLERANCE_PERCENT),
    Watched("hash efficiency", hash_efficiency, True, TIMING_TOLERANCE_PERCENT),
    Watched("score", lambda r: r.score.total, True, TIMING_TOLERANCE_PERCENT),
)  # fmt: skip


@dataclass(frozen=True)
class Change:
    label: str
    baseline: float
    current: float
    change_percent: float
    regression: bool


def compare(baseline: Report, current: Report, scale: float = 1.0) -> list[Change]:
    """Every watched figure both reports have; ``scale`` multiplies every tolerance."""
    changes = []
    for watched in WATCHED:
        before, after = watched.figure(baseline), watched.figure(current)
        if before is None or after is None:
            continue
        percent = (after - before) / abs(before) * 100 if before else 0.0
        worse = -percent if watched.higher_is_better else percent
        changes.append(Change(watched.label, float(before), float(after), percent, worse > watched.tolerance_percent * scale))
    return changes


def safety_regressed(current: Report) -> bool:
    return not current.score.passed_safety


def mismatches(baseline: Report, current: Report) -> list[str]:
    """What makes two reports not comparable like for like (the comparison still runs)."""
    found = []
    for label, facet in (("profile", _profile_name), ("nodes", _nodes), ("consensus", _consensus),
                         ("cpu", _cpu_model), ("cores", _cores)):  # fmt: skip
        before, after = facet(baseline), facet(current)
        if before != after:
            found.append(f"{label} differs: {before} vs {after}")
    return found


def _profile_name(report: Report) -> str:
    return report.profile.name


def _nodes(report: Report) -> int | None:
    return report.deployment.nodes if report.deployment else None


def _consensus(report: Report) -> str | None:
    return report.deployment.consensus if report.deployment else None


def _cpu_model(report: Report) -> str:
    return report.environment.cpu_model


def _cores(report: Report) -> int | None:
    return report.environment.cores_logical
