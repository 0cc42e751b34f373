"""Typed comparisons of two repeat sets: a verdict per figure, the like-for-like check, the exit status.

A figure regresses only when both hold (asv's rule): the Mann-Whitney test says the two sides differ
(p < alpha) AND the medians moved the worse way by more than the figure's threshold. With too few
repeats for any test, the figure is judged against its fixed fallback tolerance and says so: beyond it
the worse way is a regression all the same (a change that large needs no test), within it the figure is
inconclusive, and so is the comparison: too few runs to say "no regression" is not a pass.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from enum import IntEnum, StrEnum

import msgspec
import orjson

from harness.regress.figures import ADJUSTED_FIGURES, WATCHED_FIGURES, AdjustedFigure, Direction, FigureSpec
from harness.regress.stats import (
    ALPHA,
    PValueMethod,
    Spread,
    UTestResult,
    adjust_for_covariate,
    mann_whitney,
    median_change,
    spread,
    worse_percent,
)
from popbench.errors import HarnessError


class Verdict(StrEnum):
    """What a figure did. FASTER/SLOWER mean better/worse in the figure's own direction."""

    FASTER = "faster"
    SLOWER = "slower"
    NO_CHANGE = "no significant change"
    TOO_FEW_SAMPLES = "too few samples"


class Basis(StrEnum):
    """What the verdict rests on."""

    MANN_WHITNEY = "mann-whitney"
    FIXED_TOLERANCE = "fixed tolerance"


class ExitStatus(IntEnum):
    """The exit status of ``popbench compare``."""

    OK = 0
    REGRESSION = 1  # a gating figure is significantly worse beyond its threshold, or beyond its fixed tolerance
    NOT_LIKE_FOR_LIKE = 2  # the two sides ran different things or on different machines (and no --force)
    INCONCLUSIVE = 3  # a gating figure could not be tested with these sample sizes (and no --accept-inconclusive)


class Outcome(StrEnum):
    """What the comparison concluded; the exit status follows from it (an accepted INCONCLUSIVE exits 0)."""

    PASS = "no significant regression"
    REGRESSION = "regression"
    NOT_LIKE_FOR_LIKE = "not like for like"
    INCONCLUSIVE = "inconclusive"


class RunMetadata(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What two sides must share to be compared, filled from a report by the caller. ``None`` means unknown.

    ``profile_digest`` is a digest of the resolved profile, so an edited profile with the same name is
    noticed. ``git_commit`` and ``git_dirty`` are carried for the record and never compared: a different
    commit is the point of a comparison.
    """

    profile: str
    profile_digest: str | None = None
    nodes: int | None = None
    consensus: str | None = None
    topology: str | None = None
    crypto_backend: str | None = None
    workload_mode: str | None = None
    workload_rate: float | None = None
    workload_in_flight: int | None = None
    cpu_model: str | None = None
    cores_logical: int | None = None
    python: str | None = None
    popbench_version: str | None = None
    score_version: int | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None


# Profile keys that name or describe the plan without changing what runs: left out of its digest, so two
# checkouts in different folders (CI's clone, a developer's tree) agree.
DIGEST_IGNORED_KEYS = frozenset({"source", "description"})
DIGEST_HEX_CHARS = 16


def plan_digest(profile: object, ignored: frozenset[str] = DIGEST_IGNORED_KEYS) -> str:
    """A short digest of a resolved profile (a dataclass, Struct or dict) for ``RunMetadata.profile_digest``:
    equal for equal settings, whatever the key order."""
    data = msgspec.to_builtins(profile)
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key not in ignored}
    encoded = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(encoded).hexdigest()[:DIGEST_HEX_CHARS]


# Every compared field of RunMetadata and why a difference spoils the comparison.
LIKE_FOR_LIKE_REASONS: dict[str, str] = {
    "profile": "a different profile runs a different plan",
    "profile_digest": "the profile's settings changed under the same name",
    "nodes": "cost per proof grows with the number of nodes (quorum size, fan-out)",
    "consensus": "a different protocol does different work",
    "topology": "the links carry different traffic",
    "crypto_backend": "signature cost differs between crypto backends",
    "workload_mode": "open and closed loop load the nodes differently",
    "workload_rate": "a different offered rate changes batching and CPU per proof",
    "workload_in_flight": "a different closed-loop pool changes batching and CPU per proof",
    "cpu_model": "CPU time per proof depends on the processor",
    "cores_logical": "contention and scheduling depend on the core count",
    "python": "the interpreter's speed differs between versions",
    "popbench_version": "the harness that measured differs; a figure may be defined differently",
    "score_version": "the score formula differs",
}
NOT_COMPARED = ("git_commit", "git_dirty")


class Mismatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    field: str
    base: str | int | float | bool | None
    new: str | int | float | bool | None
    reason: str


def check_like_for_like(base: RunMetadata, new: RunMetadata) -> list[Mismatch]:
    """Every compared field that differs, with why it matters. A field known on one side only differs."""
    found = []
    for field, reason in LIKE_FOR_LIKE_REASONS.items():
        before, after = getattr(base, field), getattr(new, field)
        if before != after:
            found.append(Mismatch(field=field, base=before, new=after, reason=reason))
    return found


class RepeatSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """K whole runs of one plan: per figure, one value per run that measured it (a run that did not
    measure a figure, e.g. no block committed, contributes nothing to it)."""

    metadata: RunMetadata
    run_ids: list[str]
    samples: dict[str, list[float]]

    def __post_init__(self) -> None:
        for name, values in self.samples.items():
            if len(values) > len(self.run_ids):
                raise HarnessError(f"figure {name}: {len(values)} samples from {len(self.run_ids)} runs")


class FigureComparison(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One figure, BASE against NEW. ``change_percent`` is NEW's median against BASE's (signed, not
    direction-adjusted); ``regression`` is whether it fails the check; ``inconclusive`` whether it is a
    gating figure no test could judge that moved less than its fixed tolerance."""

    name: str
    label: str
    unit: str
    direction: Direction
    gating: bool
    base_samples: list[float]
    new_samples: list[float]
    base_spread: Spread
    new_spread: Spread
    base_median: float
    new_median: float
    ratio: float | None
    change_percent: float | None
    u_test: UTestResult
    threshold_percent: float
    tolerance_percent: float  # the threshold, or the fallback tolerance when there was no test
    basis: Basis
    verdict: Verdict
    regression: bool
    why: str
    inconclusive: bool = False
    covariate: str | None = None  # an adjusted figure: the watched figure it was adjusted for
    covariate_slope: float | None = None  # and the common slope it was moved along (figure units per covariate unit)

    @property
    def p_value(self) -> float | None:
        return self.u_test.p_value


class SkippedFigure(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    reason: str


class Comparison(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole comparison: every figure both sides measured, what was skipped, the like-for-like
    mismatches, the outcome they add up to and its exit status (``accept_inconclusive``: an
    inconclusive outcome exits 0, and still says inconclusive)."""

    base_label: str
    new_label: str
    base_metadata: RunMetadata
    new_metadata: RunMetadata
    alpha: float
    figures: list[FigureComparison]
    skipped: list[SkippedFigure]
    mismatches: list[Mismatch]
    forced: bool
    outcome: Outcome
    exit_status: ExitStatus
    accept_inconclusive: bool = False

    @property
    def regressions(self) -> list[FigureComparison]:
        return [figure for figure in self.figures if figure.regression]

    @property
    def inconclusive(self) -> list[FigureComparison]:
        return [figure for figure in self.figures if figure.inconclusive]


def compare_figure(spec: FigureSpec, base: Sequence[float], new: Sequence[float], alpha: float = ALPHA) -> FigureComparison:
    """BASE against NEW for one figure: the test, the change of the medians, the verdict and why.

    A SLOWER verdict of a gating figure is a regression, whether the test found it or the fixed fallback
    tolerance did (too few samples for a test, but a change beyond three times the threshold). A gating
    figure with too few samples whose change stays within the tolerance is inconclusive: no test could
    have told a real change from noise.
    """
    change = median_change(base, new)
    worse = worse_percent(change, spec.direction is Direction.HIGHER_IS_BETTER)
    test = mann_whitney(base, new, alpha)
    if test.method is PValueMethod.NONE:
        basis, tolerance = Basis.FIXED_TOLERANCE, spec.fallback_percent
        verdict, why = _judge_by_tolerance(worse, tolerance, len(base), len(new), test)
    else:
        basis, tolerance = Basis.MANN_WHITNEY, spec.threshold_percent
        verdict, why = _judge_by_test(worse, tolerance, test)
    return FigureComparison(
        name=spec.name, label=spec.label, unit=spec.unit, direction=spec.direction, gating=spec.gating,
        base_samples=[float(v) for v in base], new_samples=[float(v) for v in new],
        base_spread=spread(base), new_spread=spread(new), base_median=change.base_median, new_median=change.new_median,
        ratio=change.ratio, change_percent=change.percent, u_test=test, threshold_percent=spec.threshold_percent,
        tolerance_percent=tolerance, basis=basis, verdict=verdict, why=why,
        regression=spec.gating and verdict is Verdict.SLOWER, inconclusive=spec.gating and verdict is Verdict.TOO_FEW_SAMPLES,
    )  # fmt: skip


def _judge_by_test(worse: float, threshold: float, test: UTestResult) -> tuple[Verdict, str]:
    assert test.p_value is not None  # a test that ran has a p-value
    p, alpha = test.p_value, test.alpha
    moved = _describe_worse(worse)
    if p >= alpha:
        return Verdict.NO_CHANGE, f"not significant: p = {p:.3g} >= {alpha:g} ({moved})"
    if abs(worse) <= threshold:
        return Verdict.NO_CHANGE, f"significant (p = {p:.3g}) but {moved} is within the {threshold:g} % threshold"
    verdict = Verdict.SLOWER if worse > 0 else Verdict.FASTER
    return verdict, f"p = {p:.3g} < {alpha:g} and {moved}, beyond the {threshold:g} % threshold"


def _judge_by_tolerance(worse: float, tolerance: float, n_base: int, n_new: int, test: UTestResult) -> tuple[Verdict, str]:
    why = (
        f"too few samples for a test ({n_base} vs {n_new}: the smallest possible p is {test.smallest_p:.3g} >= {test.alpha:g});"
        f" judged by the fixed {tolerance:g} % tolerance: {_describe_worse(worse)}"
    )
    if abs(worse) <= tolerance:
        return Verdict.TOO_FEW_SAMPLES, why
    return (Verdict.SLOWER if worse > 0 else Verdict.FASTER), why


def _describe_worse(worse: float) -> str:
    if math.isinf(worse):
        return "worse from zero" if worse > 0 else "better from zero"
    return f"{abs(worse):.2f} % {'worse' if worse > 0 else 'better'}" if worse else "no change of the medians"


def compare_repeat_sets(
    base: RepeatSet,
    new: RepeatSet,
    specs: Sequence[FigureSpec] = WATCHED_FIGURES,
    *,
    alpha: float = ALPHA,
    force: bool = False,
    accept_inconclusive: bool = False,
    labels: tuple[str, str] = ("BASE", "NEW"),
    adjusted: Sequence[AdjustedFigure] = ADJUSTED_FIGURES,
) -> Comparison:
    """Every spec'd figure both sides measured, then every adjusted figure, the like-for-like check and
    the outcome (:func:`decide`); ``accept_inconclusive`` makes an inconclusive outcome exit 0."""
    figures, skipped = [], []
    for spec in specs:
        missing = _missing_side(spec.name, base.samples, new.samples, labels)
        if missing:
            skipped.append(SkippedFigure(name=spec.name, reason=missing))
        else:
            figures.append(compare_figure(spec, base.samples[spec.name], new.samples[spec.name], alpha))
    for wanted in adjusted:
        base_pairs, new_pairs = _paired(wanted, base), _paired(wanted, new)
        if base_pairs and new_pairs:
            figures.append(compare_adjusted(wanted, base_pairs, new_pairs, alpha))
        else:
            skipped.append(SkippedFigure(name=wanted.spec.name, reason=_unpaired_reason(wanted, (base_pairs, new_pairs), labels)))
    mismatches = check_like_for_like(base.metadata, new.metadata)
    outcome = decide(figures, mismatches, force)
    return Comparison(
        base_label=labels[0], new_label=labels[1], base_metadata=base.metadata, new_metadata=new.metadata, alpha=alpha,
        figures=figures, skipped=skipped, mismatches=mismatches, forced=force, outcome=outcome,
        exit_status=exit_status(outcome, accept_inconclusive), accept_inconclusive=accept_inconclusive,
    )  # fmt: skip


def compare_adjusted(wanted: AdjustedFigure, base: Sequence[tuple[float, float]], new: Sequence[tuple[float, float]],
                     alpha: float = ALPHA) -> FigureComparison:  # fmt: skip
    """One adjusted figure: (covariate, figure) per run on each side, moved to the pooled covariate mean
    along the common slope, then judged as any figure is (the test, the threshold, the verdict)."""
    moved = adjust_for_covariate(base, new)
    judged = compare_figure(wanted.spec, moved.base, moved.new, alpha)
    why = f"{judged.why}; adjusted to {wanted.covariate} = {moved.covariate_mean:.4g} along a slope of {moved.slope:.3g}"
    return msgspec.structs.replace(judged, why=why, covariate=wanted.covariate, covariate_slope=moved.slope)


def _paired(wanted: AdjustedFigure, side: RepeatSet) -> list[tuple[float, float]]:
    """(covariate, figure) run by run; empty unless every run of the side measured both."""
    xs, ys = side.samples.get(wanted.covariate, []), side.samples.get(wanted.figure, [])
    return list(zip(xs, ys, strict=True)) if len(xs) == len(ys) == len(side.run_ids) else []


def _unpaired_reason(wanted: AdjustedFigure, pairs: tuple[list[tuple[float, float]], list[tuple[float, float]]],
                     labels: tuple[str, str]) -> str:  # fmt: skip
    """Why the adjusted figure cannot be formed: a side lacks a run's value of the figure or of its
    covariate, so the two cannot be paired run by run (a baseline saved before the covariate was watched)."""
    short = [label for label, side in zip(labels, pairs, strict=True) if not side]
    return f"{wanted.figure} and {wanted.covariate} not measured in every run of {' and '.join(short)}: they cannot be paired"


def _missing_side(name: str, base: Mapping[str, list[float]], new: Mapping[str, list[float]], labels: tuple[str, str]) -> str:
    absent = [label for label, samples in zip(labels, (base, new), strict=True) if not samples.get(name)]
    return f"not measured in {' and '.join(absent)}" if absent else ""


def decide(figures: Sequence[FigureComparison], mismatches: Sequence[Mismatch], force: bool) -> Outcome:
    """Not like for like (unless ``force``) outranks a regression, which outranks inconclusive: a change
    beyond a figure's tolerance fails the check whatever else could not be tested. Inconclusive: a gating
    figure could not be tested, or no gating figure was compared at all (nothing to pass on)."""
    if mismatches and not force:
        return Outcome.NOT_LIKE_FOR_LIKE
    if any(figure.regression for figure in figures):
        return Outcome.REGRESSION
    if any(figure.inconclusive for figure in figures) or not any(figure.gating for figure in figures):
        return Outcome.INCONCLUSIVE
    return Outcome.PASS


OUTCOME_EXIT: dict[Outcome, ExitStatus] = {
    Outcome.PASS: ExitStatus.OK,
    Outcome.REGRESSION: ExitStatus.REGRESSION,
    Outcome.NOT_LIKE_FOR_LIKE: ExitStatus.NOT_LIKE_FOR_LIKE,
    Outcome.INCONCLUSIVE: ExitStatus.INCONCLUSIVE,
}


def exit_status(outcome: Outcome, accept_inconclusive: bool = False) -> ExitStatus:
    if outcome is Outcome.INCONCLUSIVE and accept_inconclusive:
        return ExitStatus.OK
    return OUTCOME_EXIT[outcome]
