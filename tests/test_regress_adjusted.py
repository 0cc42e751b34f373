"""The adjusted node CPU figure: node CPU per proof compared at a common load-generator CPU per proof
(analysis of covariance, docs/regression.md). Synthetic runs with known answers: the relation measured on
the 2-core host (node = 0.92 + 9.2 x load ms per proof), the load cost varying 10 % between runs as it does
there, and a small residual."""

from __future__ import annotations

import random

import pytest

from harness.regress.figures import ADJUSTED_FIGURES, WATCHED_FIGURES
from harness.regress.stats import adjust_for_covariate
from harness.regress.verdict import ExitStatus, RepeatSet, RunMetadata, compare_repeat_sets

INTERCEPT_MS, SLOPE = 0.92, 9.2
LOAD_MEAN_MS, LOAD_CV, RESIDUAL_CV = 0.19, 0.10, 0.015
SEED = 20261201


def test_the_adjustment_recovers_a_known_slope_and_a_known_shift() -> None:
    base = [(x, INTERCEPT_MS + SLOPE * x) for x in (0.16, 0.18, 0.20, 0.22, 0.24)]
    new = [(x, INTERCEPT_MS + SLOPE * x + 0.25) for x in (0.17, 0.19, 0.21, 0.23, 0.25)]  # +0.25 ms per proof
    moved = adjust_for_covariate(base, new)
    assert moved.slope == pytest.approx(SLOPE)  # within each side: the shift between the sides does not bias it
    assert moved.covariate_mean == pytest.approx(0.205)
    assert max(moved.base) - min(moved.base) == pytest.approx(0.0, abs=1e-12)  # every base run lands on one value
    assert moved.new[0] - moved.base[0] == pytest.approx(0.25)  # the shift, exactly


def test_a_covariate_that_never_varies_moves_nothing() -> None:
    moved = adjust_for_covariate([(0.2, 2.0), (0.2, 2.1)], [(0.2, 2.2), (0.2, 2.3)])
    assert moved.slope == 0.0 and moved.base == [2.0, 2.1] and moved.new == [2.2, 2.3]


def runs(rng: random.Random, count: int, extra_ms: float = 0.0) -> RepeatSet:
    loads = [LOAD_MEAN_MS * (1 + LOAD_CV * rng.gauss(0, 1)) for _ in range(count)]
    nodes = [(INTERCEPT_MS + SLOPE * x) * (1 + RESIDUAL_CV * rng.gauss(0, 1)) + extra_ms for x in loads]
    samples = {"load_cpu_ms_per_proof": loads, "node_cpu_ms_per_proof": nodes}
    return RepeatSet(metadata=RunMetadata(profile="ci"), run_ids=[f"run-{i}" for i in range(1, count + 1)], samples=samples)


def verdicts(extra_ms: float, comparisons: int = 10) -> tuple[int, int]:
    """(raw node CPU flagged, adjusted flagged) over seeded 5-vs-5 comparisons."""
    rng, raw, adjusted = random.Random(SEED), 0, 0
    for _ in range(comparisons):
        result = compare_repeat_sets(runs(rng, 5), runs(rng, 5, extra_ms), WATCHED_FIGURES)
        names = {figure.name for figure in result.regressions}
        raw += "node_cpu_ms_per_proof" in names
        adjusted += "node_cpu_ms_per_proof_adjusted" in names
    return raw, adjusted


def test_ten_percent_more_node_cpu_hidden_by_the_messaging_cost_is_caught_by_the_adjusted_figure() -> None:
    mean_ms = INTERCEPT_MS + SLOPE * LOAD_MEAN_MS  # 2.67 ms per proof
    raw, adjusted = verdicts(0.10 * mean_ms)
    assert adjusted >= 9, (raw, adjusted)
    assert raw < adjusted  # the raw figure's 10 % spread hides them (and it gates only at 30 %)


def test_a_a_comparisons_flag_nothing() -> None:
    assert verdicts(0.0) == (0, 0)


def test_the_adjusted_figure_says_what_it_was_adjusted_for() -> None:
    rng = random.Random(SEED)
    result = compare_repeat_sets(runs(rng, 5), runs(rng, 5, 0.3), WATCHED_FIGURES)
    (figure,) = [f for f in result.figures if f.name == "node_cpu_ms_per_proof_adjusted"]
    assert figure.covariate == "load_cpu_ms_per_proof" and figure.covariate_slope == pytest.approx(SLOPE, rel=0.3)
    assert "adjusted to load_cpu_ms_per_proof" in figure.why and result.exit_status is ExitStatus.REGRESSION


def test_a_side_without_the_covariate_in_every_run_is_skipped_with_its_reason() -> None:
    rng = random.Random(SEED)
    old = runs(rng, 5)
    baseline = RepeatSet(
        metadata=old.metadata, run_ids=old.run_ids, samples={"node_cpu_ms_per_proof": old.samples["node_cpu_ms_per_proof"]}
    )
    result = compare_repeat_sets(baseline, runs(rng, 5), WATCHED_FIGURES)
    (skipped,) = [s for s in result.skipped if s.name == ADJUSTED_FIGURES[0].spec.name]
    assert "not measured in every run of BASE" in skipped.reason
