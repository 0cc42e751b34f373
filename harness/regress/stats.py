"""The statistics of one figure across whole-run repeats: its spread, the change of its median, and a
two-sample test that suits a handful of skewed samples.

The test is the two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu): it assumes no distribution
shape, and its exact null distribution is known for small samples, so a p-value from 5 runs a side is
a real probability, not an approximation. As in asv (``asv/statistics.py``, ``is_different``), the
test is run only when it could reach the significance level at all: the smallest two-sided p-value of
``m`` against ``n`` samples is ``2 / C(m + n, m)`` (5 vs 5: 2/252 = 0.0079; 3 vs 3: 0.1), and below
that there are "too few samples". Ties (exact counters often repeat a value) are handled by the exact
permutation distribution, which is what the exact U distribution becomes when values tie; scipy's
plain ``method="exact"`` ignores ties and would overstate significance.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from enum import StrEnum

import msgspec

from popbench.errors import HarnessError

ALPHA = 0.05
# Beyond this many distinct ways to split the pooled samples, an exact permutation test takes seconds
# (8 vs 8 is 12,870 splits, ~0.2 s; 10 vs 10 is 184,756, ~3 s): ties then use the tie-corrected normal
# approximation, which is good at those sizes.
EXACT_PERMUTATION_LIMIT = 20_000
# Without ties the exact U distribution is cheap; scipy computes it well past any repeat count we run.
EXACT_SAMPLE_LIMIT = 50


class PValueMethod(StrEnum):
    """How a p-value was found."""

    EXACT = "exact"  # the exact null distribution of U (no ties)
    PERMUTATION = "exact-permutation"  # every split of the pooled samples enumerated (ties present)
    ASYMPTOTIC = "normal-approximation"  # large samples: tie-corrected normal approximation
    NONE = "none"  # too few samples: no test could reach the significance level


class Spread(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One figure across K repeats. ``mad`` is the raw median absolute deviation (not scaled to a
    normal sigma); ``iqr`` uses inclusive quartiles; ``cv_percent`` is stdev / mean (None below 2 values
    or when the mean is 0); ``mad_percent`` is the robust counterpart, MAD / median."""

    n: int
    median: float
    min: float
    max: float
    mad: float
    iqr: float | None
    cv_percent: float | None
    mad_percent: float | None


class MedianChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """NEW against BASE by their medians; ratio and percent are None when BASE's median is 0 and NEW's
    is not (no finite ratio exists)."""

    base_median: float
    new_median: float
    ratio: float | None
    percent: float | None


class UTestResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A two-sided Mann-Whitney U test of BASE against NEW. ``p_value`` and ``u_statistic`` are None when
    the method is NONE; ``smallest_p`` is the best p-value these sample sizes could ever give."""

    method: PValueMethod
    p_value: float | None
    u_statistic: float | None
    smallest_p: float
    alpha: float


def check_samples(samples: Sequence[float], side: str) -> list[float]:
    """The samples as floats; a HarnessError when there are none or one is not a finite number."""
    if not samples:
        raise HarnessError(f"{side}: no samples")
    values = [float(value) for value in samples]
    if not all(math.isfinite(value) for value in values):
        raise HarnessError(f"{side}: samples must be finite numbers, got {values}")
    return values


def spread(samples: Sequence[float]) -> Spread:
    values = check_samples(samples, "spread")
    median = statistics.median(values)
    mad = statistics.median(abs(value - median) for value in values)
    return Spread(
        n=len(values), median=median, min=min(values), max=max(values), mad=mad,
        iqr=_iqr(values), cv_percent=_cv_percent(values), mad_percent=mad / abs(median) * 100 if median else None,
    )  # fmt: skip


def _iqr(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    lower, _, upper = statistics.quantiles(values, n=4, method="inclusive")
    return upper - lower


def _cv_percent(values: list[float]) -> float | None:
    mean = statistics.fmean(values)
    if len(values) < 2 or mean == 0:
        return None
    return statistics.stdev(values) / abs(mean) * 100


def median_change(base: Sequence[float], new: Sequence[float]) -> MedianChange:
    before = statistics.median(check_samples(base, "BASE"))
    after = statistics.median(check_samples(new, "NEW"))
    ratio = _ratio(before, after)
    percent = None if ratio is None else (ratio - 1.0) * 100
    return MedianChange(base_median=before, new_median=after, ratio=ratio, percent=percent)


def _ratio(before: float, after: float) -> float | None:
    if before == 0:
        return 1.0 if after == 0 else None
    return after / before


def smallest_p_value(n_base: int, n_new: int) -> float:
    """The smallest two-sided p-value an exact test of these sizes can give: both extreme orderings
    out of C(m + n, m) equally likely ones."""
    return min(1.0, 2.0 / math.comb(n_base + n_new, n_base))


def can_reach(n_base: int, n_new: int, alpha: float = ALPHA) -> bool:
    """Whether a test of these sample sizes could ever call a change significant at ``alpha``."""
    return smallest_p_value(n_base, n_new) < alpha


def smallest_useful_repeats(alpha: float = ALPHA) -> int:
    """The fewest runs a side (K vs K) with which the test can call a change significant at ``alpha``:
    4 at 0.05 (2/70 = 0.029; 3 vs 3 can do no better than 2/20 = 0.1). With fewer, every figure is judged
    by its fixed tolerance alone and a comparison is inconclusive unless something moved beyond it."""
    if not 0 < alpha < 1:
        raise HarnessError(f"alpha must lie in (0, 1), not {alpha:g}")
    return next(k for k in itertools.count(1) if can_reach(k, k, alpha))


def mann_whitney(base: Sequence[float], new: Sequence[float], alpha: float = ALPHA) -> UTestResult:
    """The two-sided Mann-Whitney U test, exact where the sizes allow; method NONE when it cannot reach
    ``alpha`` (then nothing can be concluded from a test, whatever the samples)."""
    before, after = check_samples(base, "BASE"), check_samples(new, "NEW")
    smallest = smallest_p_value(len(before), len(after))
    if smallest >= alpha:
        return UTestResult(method=PValueMethod.NONE, p_value=None, u_statistic=None, smallest_p=smallest, alpha=alpha)
    method = _choose_method(before, after)
    from scipy import stats as scipy_stats  # type: ignore[import-untyped]  # heavy: loaded only to test

    result = scipy_stats.mannwhitneyu(before, after, alternative="two-sided", method=_scipy_method(method, before, after))
    return UTestResult(method=method, p_value=float(result.pvalue), u_statistic=float(result.statistic), smallest_p=smallest, alpha=alpha)


def _choose_method(before: list[float], after: list[float]) -> PValueMethod:
    pooled = before + after
    tied = len(set(pooled)) < len(pooled)
    if not tied:
        return PValueMethod.EXACT if max(len(before), len(after)) <= EXACT_SAMPLE_LIMIT else PValueMethod.ASYMPTOTIC
    splits = math.comb(len(pooled), len(before))
    return PValueMethod.PERMUTATION if splits <= EXACT_PERMUTATION_LIMIT else PValueMethod.ASYMPTOTIC


def _scipy_method(method: PValueMethod, before: list[float], after: list[float]) -> object:
    from scipy import stats as scipy_stats  # heavy: loaded only to test

    if method is PValueMethod.PERMUTATION:
        # n_resamples at least the number of distinct splits makes scipy enumerate them all: exact, no randomness
        return scipy_stats.PermutationMethod(n_resamples=math.comb(len(before) + len(after), len(before)))
    return "exact" if method is PValueMethod.EXACT else "asymptotic"


def worse_percent(change: MedianChange, higher_is_better: bool) -> float:
    """How much worse NEW is than BASE, in percent of BASE (negative: better); +-inf when BASE's median is
    0 and NEW's is not."""
    if change.percent is None:
        grew = change.new_median > change.base_median
        return math.inf if grew != higher_is_better else -math.inf
    return -change.percent if higher_is_better else change.percent


# -- adjusting for a covariate --------------------------------------------------------------------------
class CovariateAdjustment(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Each run's figure moved along a common slope to the pooled covariate mean (analysis of covariance
    with one covariate). ``slope`` is the within-side least-squares slope of figure on covariate, pooled
    over both sides, so a difference between the sides does not enter it."""

    slope: float
    covariate_mean: float
    base: list[float]
    new: list[float]


def adjust_for_covariate(base: Sequence[tuple[float, float]], new: Sequence[tuple[float, float]]) -> CovariateAdjustment:
    """``base`` and ``new`` are (covariate, figure) per run. Each figure becomes
    ``figure - slope * (covariate - pooled covariate mean)``: what the run would have measured at the
    common covariate. With no spread in the covariate the slope is 0 and nothing moves."""
    sides = [_checked_pairs(base, "BASE"), _checked_pairs(new, "NEW")]
    slope = _within_slope(sides)
    mean_x = statistics.fmean(x for side in sides for x, _ in side)
    moved = [[y - slope * (x - mean_x) for x, y in side] for side in sides]
    return CovariateAdjustment(slope=slope, covariate_mean=mean_x, base=moved[0], new=moved[1])


def _within_slope(sides: list[list[tuple[float, float]]]) -> float:
    """The least-squares slope of y on x with each side centred on its own means (0 when x never varies)."""
    sxx = sxy = 0.0
    for side in sides:
        mean_x, mean_y = statistics.fmean(x for x, _ in side), statistics.fmean(y for _, y in side)
        sxx += sum((x - mean_x) ** 2 for x, _ in side)
        sxy += sum((x - mean_x) * (y - mean_y) for x, y in side)
    return sxy / sxx if sxx > 0 else 0.0


def _checked_pairs(pairs: Sequence[tuple[float, float]], side: str) -> list[tuple[float, float]]:
    xs = check_samples([x for x, _ in pairs], f"{side} covariate")
    ys = check_samples([y for _, y in pairs], side)
    return list(zip(xs, ys, strict=True))
