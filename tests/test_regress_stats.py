"""The statistics of regression detection on synthetic samples with known answers, and simulated A/A and
slowdown experiments (seeded, so each run of the suite draws the same samples)."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from harness.regress.figures import Direction, FigureKind, FigureSpec, figure_spec
from harness.regress.stats import (
    ALPHA,
    PValueMethod,
    can_reach,
    mann_whitney,
    median_change,
    smallest_p_value,
    smallest_useful_repeats,
    spread,
    worse_percent,
)
from harness.regress.verdict import Basis, Verdict, compare_figure
from popbench.errors import ConfigError, HarnessError

# lower is better, gating; a 3 % threshold here whatever the shipped one is, so the rule is what is tested
CPU = msgspec.structs.replace(figure_spec("node_cpu_ms_per_proof"), threshold_percent=3.0, fallback_percent=9.0)
THROUGHPUT = FigureSpec(
    name="committed_per_s", label="committed proofs/s", unit="proofs/s", direction=Direction.HIGHER_IS_BETTER,
    kind=FigureKind.TIME, threshold_percent=5.0, fallback_percent=15.0, gating=True,
)  # fmt: skip
SEPARATED_BASE = [10.0, 10.1, 10.2, 10.3, 10.4]
SEPARATED_NEW = [11.0, 11.1, 11.2, 11.3, 11.4]  # every NEW above every BASE, ~+9.7 %
TWO_SIDED_SMALLEST_5_VS_5 = 2 / 252  # 2 of the C(10, 5) = 252 orderings are this extreme


# -- spread and medians --------------------------------------------------------------------------------
def test_spread_of_a_skewed_sample_has_known_median_mad_and_iqr() -> None:
    s = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.n, s.median, s.min, s.max) == (5, 3.0, 1.0, 100.0)
    assert s.mad == 1.0  # |x - 3| = 2, 1, 0, 1, 97: the outlier does not move it
    assert s.iqr == 2.0  # inclusive quartiles 2 and 4
    assert s.mad_percent == pytest.approx(100 / 3)
    assert s.cv_percent is not None and s.cv_percent > 100  # the outlier dominates the classical CV


def test_spread_of_one_value_has_no_iqr_or_cv() -> None:
    s = spread([7.5])
    assert (s.n, s.median, s.mad, s.iqr, s.cv_percent) == (1, 7.5, 0.0, None, None)


def test_median_change_is_new_over_base() -> None:
    change = median_change([10.0, 20.0, 30.0], [22.0, 11.0, 33.0])
    assert (change.base_median, change.new_median) == (20.0, 22.0)
    assert change.ratio == pytest.approx(1.1)
    assert change.percent == pytest.approx(10.0)


def test_median_change_from_zero_has_no_ratio_and_counts_as_infinitely_worse() -> None:
    change = median_change([0.0, 0.0], [1.0, 1.0])
    assert change.ratio is None and change.percent is None
    assert worse_percent(change, higher_is_better=False) == math.inf
    assert worse_percent(change, higher_is_better=True) == -math.inf
    assert median_change([0.0], [0.0]).percent == 0.0


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf]])
def test_empty_or_non_finite_samples_are_refused(bad: list[float]) -> None:
    with pytest.raises(HarnessError):
        mann_whitney([1.0, 2.0], bad)


# -- the test itself ---------------------------------------------------------------------------------
def test_smallest_two_sided_p_values_decide_which_sizes_can_be_tested() -> None:
    assert smallest_p_value(5, 5) == pytest.approx(TWO_SIDED_SMALLEST_5_VS_5)
    assert smallest_p_value(1, 1) == 1.0
    assert smallest_p_value(3, 3) == pytest.approx(0.1)
    assert [can_reach(k, k, ALPHA) for k in (1, 2, 3, 4, 5)] == [False, False, False, True, True]
    assert not can_reach(3, 4) and can_reach(3, 5)  # 2/35 = 0.057, 2/56 = 0.036


def test_the_smallest_useful_repeat_count_is_the_first_k_whose_k_vs_k_test_can_reach_alpha() -> None:
    assert smallest_useful_repeats() == 4  # 3 vs 3: at best p = 0.1
    for alpha in (0.2, 0.05, 0.01, 0.001):
        k = smallest_useful_repeats(alpha)
        assert can_reach(k, k, alpha) and not can_reach(k - 1, k - 1, alpha)
    with pytest.raises(HarnessError, match="alpha"):
        smallest_useful_repeats(0.0)


def test_clearly_separated_5_vs_5_has_the_smallest_exact_p() -> None:
    result = mann_whitney(SEPARATED_BASE, SEPARATED_NEW)
    assert result.method is PValueMethod.EXACT
    assert result.p_value == pytest.approx(TWO_SIDED_SMALLEST_5_VS_5)
    assert result.u_statistic == 0.0


def test_ties_use_the_exact_permutation_distribution() -> None:
    # scipy's plain exact method ignores ties and gives 0.0317 here; the permutation distribution of the
    # tied data is the exact answer: 12 of 252 splits are as extreme, p = 0.0476
    result = mann_whitney([10.0, 10.0, 10.0, 11.0, 11.0], [11.0, 11.0, 12.0, 12.0, 12.0])
    assert result.method is PValueMethod.PERMUTATION
    assert result.p_value == pytest.approx(12 / 252)


def test_a_counter_that_moved_as_a_whole_is_significant_despite_ties_within_each_side() -> None:
    result = mann_whitney([7.0] * 5, [8.0] * 5)
    assert result.p_value == pytest.approx(TWO_SIDED_SMALLEST_5_VS_5)


def test_too_few_samples_run_no_test() -> None:
    result = mann_whitney([1.0, 2.0, 3.0], [7.0, 8.0, 9.0])
    assert result.method is PValueMethod.NONE and result.p_value is None
    assert result.smallest_p == pytest.approx(0.1)


# -- verdicts ----------------------------------------------------------------------------------------
def test_clearly_separated_slower_is_a_regression() -> None:
    figure = compare_figure(CPU, SEPARATED_BASE, SEPARATED_NEW)
    assert figure.verdict is Verdict.SLOWER and figure.basis is Basis.MANN_WHITNEY
    assert figure.regression
    assert figure.change_percent == pytest.approx((11.2 / 10.2 - 1) * 100)  # medians 10.2 -> 11.2
    assert "beyond the 3 % threshold" in figure.why


def test_identical_distributions_show_no_significant_change() -> None:
    samples = [10.0, 10.3, 9.8, 10.1, 10.6]
    figure = compare_figure(CPU, samples, list(reversed(samples)))
    assert figure.verdict is Verdict.NO_CHANGE and not figure.regression
    assert figure.p_value == pytest.approx(1.0)


def test_a_big_change_in_a_noisy_figure_with_overlapping_samples_is_not_significant() -> None:
    base, new = [10.0, 14.0, 9.0, 16.0, 11.0], [12.0, 18.0, 10.5, 20.0, 13.0]  # medians 11 -> 13: +18 %
    figure = compare_figure(CPU, base, new)
    assert figure.change_percent == pytest.approx(200 / 11)
    assert figure.p_value is not None and figure.p_value >= ALPHA
    assert figure.verdict is Verdict.NO_CHANGE and not figure.regression
    assert figure.why.startswith("not significant")


def test_a_significant_change_below_the_threshold_is_no_regression() -> None:
    base = [10.00, 10.01, 10.02, 10.03, 10.04]
    new = [value + 0.10 for value in base]  # +1 %, every NEW above every BASE
    figure = compare_figure(CPU, base, new)
    assert figure.p_value == pytest.approx(TWO_SIDED_SMALLEST_5_VS_5)
    assert figure.verdict is Verdict.NO_CHANGE and not figure.regression
    assert "within the 3 % threshold" in figure.why


def test_higher_is_better_figures_regress_when_they_fall() -> None:
    base = [300.0, 301.0, 302.0, 303.0, 304.0]
    fell = compare_figure(THROUGHPUT, base, [270.0, 271.0, 272.0, 273.0, 274.0])
    rose = compare_figure(THROUGHPUT, base, [330.0, 331.0, 332.0, 333.0, 334.0])
    assert (fell.verdict, fell.regression) == (Verdict.SLOWER, True)
    assert (rose.verdict, rose.regression) == (Verdict.FASTER, False)


def test_lower_is_better_figures_that_fall_are_faster() -> None:
    figure = compare_figure(CPU, SEPARATED_NEW, SEPARATED_BASE)
    assert (figure.verdict, figure.regression) == (Verdict.FASTER, False)


def test_a_non_gating_figure_never_regresses() -> None:
    throughput = figure_spec("committed_per_s")
    assert not throughput.gating
    figure = compare_figure(throughput, [300.0, 301, 302, 303, 304], [200.0, 201, 202, 203, 204])
    assert figure.verdict is Verdict.SLOWER and not figure.regression


def test_one_against_one_falls_back_to_the_fixed_tolerance_and_says_so() -> None:
    within = compare_figure(CPU, [10.0], [10.5])  # +5 %, within 3 x 3 % = 9 %
    beyond = compare_figure(CPU, [10.0], [12.0])  # +20 %
    assert within.basis is Basis.FIXED_TOLERANCE and within.verdict is Verdict.TOO_FEW_SAMPLES
    assert within.tolerance_percent == CPU.fallback_percent == 9.0
    assert "too few samples for a test (1 vs 1" in within.why and "fixed 9 % tolerance" in within.why
    assert beyond.verdict is Verdict.SLOWER and beyond.basis is Basis.FIXED_TOLERANCE
    assert beyond.regression and not beyond.inconclusive  # beyond the tolerance no test is needed to fail it
    assert within.inconclusive and not within.regression  # within it nothing can be concluded


def test_a_spec_whose_threshold_exceeds_its_fallback_is_refused() -> None:
    with pytest.raises(ConfigError, match="bad_figure"):
        FigureSpec(name="bad_figure", label="x", unit="ms", direction=Direction.LOWER_IS_BETTER, kind=FigureKind.CPU,
                   threshold_percent=10.0, fallback_percent=5.0)  # fmt: skip


# -- simulated experiments ---------------------------------------------------------------------------
REPEATS = 5
CV_PERCENT = 2.0
SEED = 20261201


def skewed_runs(rng: random.Random, count: int, slowdown: float = 1.0) -> list[float]:
    """Node CPU-ms per proof of ``count`` whole runs: a floor plus an exponential tail (right-skewed, as
    host interference only ever adds time), CV about 2 %."""
    return [slowdown * 10.0 * (1.0 + CV_PERCENT / 100 * rng.expovariate(1.0)) for _ in range(count)]


def regressions_in(pairs: int, slowdown: float, seed: int = SEED) -> int:
    rng = random.Random(seed)
    comparisons = [compare_figure(CPU, skewed_runs(rng, REPEATS), skewed_runs(rng, REPEATS, slowdown)) for _ in range(pairs)]
    return sum(figure.regression for figure in comparisons)


def test_ten_a_a_comparisons_raise_no_false_alarm() -> None:
    # alpha 0.05 two-sided predicts at most 10 x 0.025 = 0.25 false "slower" calls in 10: i.e. none
    assert regressions_in(10, slowdown=1.0) == 0


def test_the_a_a_false_alarm_rate_stays_within_alpha_over_many_comparisons() -> None:
    rng = random.Random(SEED + 1)
    pairs = [(skewed_runs(rng, REPEATS), skewed_runs(rng, REPEATS)) for _ in range(1000)]
    significant = sum(mann_whitney(base, new).p_value < ALPHA for base, new in pairs)  # type: ignore[operator]
    # 5 vs 5 is discrete: the largest p below 0.05 is 8/252 = 0.032, so the true rate is 0.032
    assert significant / len(pairs) <= ALPHA


def test_a_ten_percent_slowdown_with_a_two_percent_cv_is_caught_at_least_nine_times_in_ten() -> None:
    assert regressions_in(10, slowdown=1.10) >= 9


def test_a_a_regressions_over_many_comparisons_stay_within_half_of_alpha() -> None:
    # a regression needs p < alpha AND the worse direction: at most half of the two-sided false positives
    assert regressions_in(1000, slowdown=1.0, seed=SEED + 2) / 1000 <= ALPHA / 2
