"""Small order statistics used by the metrics (nearest-rank percentiles, no interpolation)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


# the upper bounds of the latency histograms /metrics serves (harness/observe/prometheus.py): PBFT rounds
# on one host take milliseconds to seconds, items' commit latency and PoW block intervals up to a minute
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def latency_bucket(seconds: float) -> int:
    """The index of the first bucket whose upper bound is at least ``seconds`` (len(LATENCY_BUCKETS_S): +Inf)."""
    return bisect.bisect_left(LATENCY_BUCKETS_S, seconds)


def mean_and_stdev(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
