"""Small order statistics used by the metrics (nearest-rank percentiles, no interpolation)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary_ms(latencies_ns: list[int]) -> dict[str, float | int | None]:
    values = sorted(latencies_ns)
    as_ms = [v / 1e6 for v in values]
    return {
        "count": len(values),
        "p50_ms": percentile(as_ms, 0.50), "p95_ms": percentile(as_ms, 0.95),
        "p99_ms": percentile(as_ms, 0.99), "max_ms": as_ms[-1] if as_ms else None,
        "mean_ms": sum(as_ms) / len(as_ms) if as_ms else None,
    }  # fmt: skip


def mean_and_stdev(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
