"""The growth verdict: did the nodes' memory, descriptors, database or per-block CPU grow over the steady window?

From the timeline's status samples inside the steady window (harness/metrics/timeline.py, ``NodeState``),
each quantity gets a least-squares line against time; its slope per hour has a 95 % confidence interval
from the slope's standard error and Student's t with points - 2 degrees of freedom. A quantity is
**flagged** when the interval's lower bound exceeds the threshold the profile declares (``[growth]``,
harness/profile.py): growth that is both real (the interval excludes anything at or under the threshold)
and large enough to matter. With fewer than ``min_points`` samples, or a steady window shorter than
``min_span_s``, the verdict is "not enough samples" and nothing is flagged (docs/metrics.md, "The growth
verdict").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.metrics.results import Growth, GrowthSlope, GrowthVerdict
from harness.metrics.timeline import NodeState, SampleRow
from harness.profile import GrowthThresholds

CONFIDENCE = 0.95
S_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Quantity:
    name: str
    unit: str
    read: Callable[[NodeState], float | None]
    threshold: Callable[[GrowthThresholds], float]
    per_interval: bool = False  # measured over the interval since the previous sample, not at the sample


QUANTITIES = (
    Quantity("uss_mib_median", "MiB", lambda n: n.uss_mib_median, lambda g: g.uss_mib_per_hour),
    Quantity("uss_mib_max", "MiB", lambda n: n.uss_mib_max, lambda g: g.uss_mib_per_hour),
    Quantity("open_fds_max", "fds", lambda n: None if n.open_fds_max is None else float(n.open_fds_max), lambda g: g.fds_per_hour),
    Quantity("db_bytes_per_block", "B/block", lambda n: n.db_bytes_per_block, lambda g: g.db_bytes_per_block_per_hour, True),
    Quantity("cpu_ms_per_block", "ms/block", lambda n: n.cpu_ms_per_block, lambda g: g.cpu_ms_per_block_per_hour, True),
)
USS_QUANTITIES = ("uss_mib_median", "uss_mib_max")


@dataclass(frozen=True)
class Fit:
    slope: float  # per second
    intercept: float  # at t = 0
    ci_half: float  # the 95 % interval's half width, per second


def fit(points: Sequence[tuple[float, float]]) -> Fit | None:
    """Least squares of value on time, with the slope's 95 % half interval; None under 3 points or no time spread."""
    n = len(points)
    if n < 3:
        return None
    t_mean = sum(t for t, _ in points) / n
    y_mean = sum(y for _, y in points) / n
    sxx = sum((t - t_mean) ** 2 for t, _ in points)
    if sxx <= 0:
        return None
    slope = sum((t - t_mean) * (y - y_mean) for t, y in points) / sxx
    intercept = y_mean - slope * t_mean
    residual = sum((y - intercept - slope * t) ** 2 for t, y in points)
    stderr = math.sqrt(residual / (n - 2) / sxx)
    from scipy import stats  # type: ignore[import-untyped]  # heavy: loaded only when a line is fitted

    t_crit = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 2))
    return Fit(slope, intercept, t_crit * stderr)


def growth(samples: Sequence[SampleRow], steady: tuple[float, float], limits: GrowthThresholds) -> Growth:
    """The verdict over the samples whose ``t_s`` lies in ``steady`` (seconds after the load window started);
    a per-interval quantity only from the samples whose interval lies wholly in it (the first sample in
    the window measured the warm-up's interval: start-up, when the WAL fills, is not the steady state)."""
    start_s, end_s = steady
    inside = [row for row in samples if start_s <= row.t_s <= end_s]
    intervals = [row for before, row in itertools.pairwise(samples) if before.t_s >= start_s and row.t_s <= end_s]
    window_s = max(0.0, end_s - start_s)
    short = window_s < limits.min_span_s
    slopes = [_slope(q, intervals if q.per_interval else inside, limits, short) for q in QUANTITIES]
    measured = max((s.points for s in slopes), default=0)
    if short or measured < limits.min_points:
        why = (f"the steady window is {window_s:.0f} s, under [growth] min_span_s = {limits.min_span_s:g} s" if short
               else f"{measured} samples in the steady window, under [growth] min_points = {limits.min_points}")  # fmt: skip
        return Growth(verdict=GrowthVerdict.NOT_ENOUGH_SAMPLES, reason=why, window_s=window_s,
                      min_points=limits.min_points, min_span_s=limits.min_span_s, slopes=slopes)  # fmt: skip
    flagged = [s for s in slopes if s.flagged]
    reason = ("; ".join(f"{s.quantity} grows {s.slope_per_hour:+.3g} {s.unit}/h (95 % CI {s.ci_low_per_hour:+.3g} to "
                        f"{s.ci_high_per_hour:+.3g}), over the threshold {s.threshold_per_hour:g}" for s in flagged)
              or "no quantity's slope is past its threshold with 95 % confidence")  # fmt: skip
    return Growth(verdict=GrowthVerdict.FLAGGED if flagged else GrowthVerdict.FLAT, reason=reason, window_s=window_s,
                  min_points=limits.min_points, min_span_s=limits.min_span_s, slopes=slopes)  # fmt: skip


def _slope(quantity: Quantity, rows: Sequence[SampleRow], limits: GrowthThresholds, short: bool) -> GrowthSlope:
    points = [(row.t_s, value) for row in rows if (value := quantity.read(row.nodes)) is not None]
    line = fit(points)
    threshold = quantity.threshold(limits)
    if line is None:
        return GrowthSlope(quantity=quantity.name, unit=quantity.unit, points=len(points), first=None, last=None, slope_per_hour=None,
                           ci_low_per_hour=None, ci_high_per_hour=None, threshold_per_hour=threshold, flagged=False)  # fmt: skip
    slope, half = line.slope * S_PER_HOUR, line.ci_half * S_PER_HOUR
    enough = not short and len(points) >= limits.min_points
    return GrowthSlope(
        quantity=quantity.name, unit=quantity.unit, points=len(points),
        first=line.intercept + line.slope * points[0][0], last=line.intercept + line.slope * points[-1][0],
        slope_per_hour=slope, ci_low_per_hour=slope - half, ci_high_per_hour=slope + half, threshold_per_hour=threshold,
        flagged=enough and slope - half > threshold,
    )  # fmt: skip
