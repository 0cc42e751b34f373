"""Compare two reports for CI: did this commit make the network slower, heavier or less stable?

Each watched figure has a direction (which way is worse) and a tolerance in percent. Work counters per
proof are counts, so their tolerance is tight; timings are noisy, so theirs is wider (the ``ci``
profile's committed/s spread over 5 runs was under 0.5 %, its p99 about 7 %). A figure worse than its
tolerance is a regression. Absent figures (a part not exercised) are skipped, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TIMING_TOLERANCE_PERCENT = 10.0
COUNTER_TOLERANCE_PERCENT = 5.0


@dataclass(frozen=True)
class Watched:
    label: str
    path: tuple[str, ...]  # keys into report["metrics"] (or the report itself for "score")
    higher_is_better: bool
    tolerance_percent: float


WATCHED: tuple[Watched, ...] = (
    Watched("committed proofs/s", ("metrics", "throughput", "committed_per_s"), True, TIMING_TOLERANCE_PERCENT),
    Watched("commit latency p50 ms", ("metrics", "throughput", "commit_latency", "p50_ms"), False, TIMING_TOLERANCE_PERCENT),
    Watched("commit latency p99 ms", ("metrics", "throughput", "commit_latency", "p99_ms"), False, TIMING_TOLERANCE_PERCENT),
    Watched("frames per proof", ("metrics", "work", "frames_per_proof"), False, COUNTER_TOLERANCE_PERCENT),
    Watched("bytes per proof", ("metrics", "work", "bytes_per_proof"), False, COUNTER_TOLERANCE_PERCENT),
    Watched("verifications per proof", ("metrics", "work", "verifications_per_proof"), False, COUNTER_TOLERANCE_PERCENT),
    Watched("time to connected s", ("metrics", "connectivity", "time_to_connected_s"), False, TIMING_TOLERANCE_PERCENT),
    Watched("hash efficiency", ("metrics", "mining", "hash_efficiency"), True, TIMING_TOLERANCE_PERCENT),
    Watched("score", ("score", "total"), True, TIMING_TOLERANCE_PERCENT),
)  # fmt: skip


@dataclass(frozen=True)
class Change:
    label: str
    baseline: float
    current: float
    change_percent: float
    regression: bool


def lookup(report: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = report
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(baseline: dict[str, Any], current: dict[str, Any], scale: float = 1.0) -> list[Change]:
    """Every watched figure both reports have; ``scale`` multiplies every tolerance."""
    changes = []
    for watched in WATCHED:
        before, after = lookup(baseline, watched.path), lookup(current, watched.path)
        if before is None or after is None:
            continue
        percent = (after - before) / abs(before) * 100 if before else 0.0
        worse = -percent if watched.higher_is_better else percent
        changes.append(Change(watched.label, before, after, percent, worse > watched.tolerance_percent * scale))
    return changes


def safety_regressed(current: dict[str, Any]) -> bool:
    return not current.get("score", {}).get("passed_safety", True)


def mismatches(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What makes two reports not comparable like for like (the comparison still runs)."""
    found = []
    for label, path in (("profile", ("profile", "name")), ("nodes", ("deployment", "nodes")),
                        ("consensus", ("deployment", "consensus")), ("cpu", ("environment", "cpu_model")),
                        ("cores", ("environment", "cores_logical"))):  # fmt: skip
        before, after = _get(baseline, path), _get(current, path)
        if before != after:
            found.append(f"{label} differs: {before} vs {after}")
    return found


def _get(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value

