"""Whole comparisons: the like-for-like refusal, skipped figures and the exit status."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from harness.regress.verdict import (
    LIKE_FOR_LIKE_REASONS,
    ExitStatus,
    Outcome,
    RepeatSet,
    RunMetadata,
    Verdict,
    check_like_for_like,
    compare_repeat_sets,
)

METADATA = RunMetadata(
    profile="ci", profile_digest="abc123", nodes=4, consensus="pbft", topology="full-mesh", crypto_backend="coincurve",
    workload_mode="open", workload_rate=300.0, workload_in_flight=None, cpu_model="AMD EPYC 7B13", cores_logical=2,
    python="3.11.7", popbench_version="0.1.0", score_version=1, git_commit="aaaa", git_dirty=False,
)  # fmt: skip
RUN_IDS = [f"run-{index}" for index in range(5)]
STEADY = {
    "node_cpu_ms_per_proof": [4.50, 4.52, 4.48, 4.51, 4.49],
    "load_cpu_ms_per_proof": [0.180, 0.182, 0.178, 0.181, 0.179],  # the messaging cost the node figure moves with
    "frames_per_proof": [12.0] * 5,
    "commit_latency_p99_ms": [77.0, 80.0, 79.0, 78.0, 81.0],
    "committed_per_s": [294.0, 295.0, 294.5, 295.0, 294.0],
}
# +10 % node CPU at the same messaging cost: the adjusted figure catches it; raw CPU only backstops at 30 %
SLOWER_CPU = {**STEADY, "node_cpu_ms_per_proof": [4.95, 4.97, 4.99, 4.96, 4.98]}
ADJUSTED = "node_cpu_ms_per_proof_adjusted"


def repeat_set(samples: dict[str, list[float]], metadata: RunMetadata = METADATA) -> RepeatSet:
    return RepeatSet(metadata=metadata, run_ids=RUN_IDS, samples=samples)


def test_identical_metadata_is_like_for_like_whatever_the_commit() -> None:
    other_commit = msgspec.structs.replace(METADATA, git_commit="bbbb", git_dirty=True)
    assert check_like_for_like(METADATA, other_commit) == []


def test_every_mismatch_is_listed_with_its_reason() -> None:
    other = msgspec.structs.replace(METADATA, nodes=8, cpu_model="Intel Xeon", cores_logical=4, crypto_backend="ecdsa", workload_rate=None)
    mismatches = check_like_for_like(METADATA, other)
    assert [m.field for m in mismatches] == ["nodes", "crypto_backend", "workload_rate", "cpu_model", "cores_logical"]
    by_field = {m.field: m for m in mismatches}
    assert (by_field["nodes"].base, by_field["nodes"].new) == (4, 8)
    assert by_field["cpu_model"].reason == LIKE_FOR_LIKE_REASONS["cpu_model"]
    assert by_field["workload_rate"].new is None  # known on one side only is a difference too


def test_every_metadata_field_is_either_compared_or_explicitly_not() -> None:
    from harness.regress.verdict import NOT_COMPARED

    assert set(LIKE_FOR_LIKE_REASONS) | set(NOT_COMPARED) == set(RunMetadata.__struct_fields__)


def test_not_like_for_like_exits_2_unless_forced() -> None:
    other = msgspec.structs.replace(METADATA, nodes=8)
    refused = compare_repeat_sets(repeat_set(STEADY), repeat_set(STEADY, other))
    forced = compare_repeat_sets(repeat_set(STEADY), repeat_set(STEADY, other), force=True)
    assert refused.exit_status is ExitStatus.NOT_LIKE_FOR_LIKE and [m.field for m in refused.mismatches] == ["nodes"]
    assert forced.exit_status is ExitStatus.OK and forced.forced


def test_a_mismatch_outranks_a_regression() -> None:
    other = msgspec.structs.replace(METADATA, cores_logical=4)
    assert compare_repeat_sets(repeat_set(STEADY), repeat_set(SLOWER_CPU, other)).exit_status is ExitStatus.NOT_LIKE_FOR_LIKE
    assert compare_repeat_sets(repeat_set(STEADY), repeat_set(SLOWER_CPU, other), force=True).exit_status is ExitStatus.REGRESSION


def test_a_significant_cpu_regression_exits_1_and_names_the_figure() -> None:
    comparison = compare_repeat_sets(repeat_set(STEADY), repeat_set(SLOWER_CPU))
    assert comparison.exit_status is ExitStatus.REGRESSION
    assert [figure.name for figure in comparison.regressions] == [ADJUSTED]
    verdicts = {figure.name: figure.verdict for figure in comparison.figures}
    assert verdicts["node_cpu_ms_per_proof"] is Verdict.NO_CHANGE  # significant, but +10 % is inside its 30 % backstop
    assert verdicts["frames_per_proof"] is Verdict.NO_CHANGE
    assert verdicts["commit_latency_p99_ms"] is Verdict.NO_CHANGE


def test_the_same_samples_exit_0() -> None:
    assert compare_repeat_sets(repeat_set(STEADY), repeat_set(STEADY)).exit_status is ExitStatus.OK


def test_figures_missing_on_either_side_are_skipped_with_the_side_named() -> None:
    without_latency = {name: values for name, values in STEADY.items() if name != "commit_latency_p99_ms"}
    comparison = compare_repeat_sets(repeat_set(STEADY), repeat_set(without_latency))
    skipped = {s.name: s.reason for s in comparison.skipped}
    assert skipped["commit_latency_p99_ms"] == "not measured in NEW"
    assert skipped["node_cpu_ms_per_block"] == "not measured in BASE and NEW"
    assert "commit_latency_p99_ms" not in {figure.name for figure in comparison.figures}


def first(samples: dict[str, list[float]], runs: int) -> RepeatSet:
    """The first ``runs`` runs of a set of samples."""
    return RepeatSet(metadata=METADATA, run_ids=RUN_IDS[:runs], samples={name: values[:runs] for name, values in samples.items()})


def scaled(samples: dict[str, list[float]], name: str, factor: float) -> dict[str, list[float]]:
    return {**samples, name: [value * factor for value in samples[name]]}


def test_single_runs_are_inconclusive_unless_a_figure_moved_beyond_its_fixed_tolerance() -> None:
    one = first(STEADY, 1)
    worse = first(scaled(STEADY, "node_cpu_ms_per_proof", 1.5), 1)  # +50 %: within raw CPU's 90 %, beyond the adjusted 9 %
    same = compare_repeat_sets(one, one)
    assert (same.outcome, same.exit_status) == (Outcome.INCONCLUSIVE, ExitStatus.INCONCLUSIVE)
    assert {f.name for f in same.inconclusive} == {f.name for f in same.figures if f.gating}
    accepted = compare_repeat_sets(one, one, accept_inconclusive=True)
    assert (accepted.outcome, accepted.exit_status) == (Outcome.INCONCLUSIVE, ExitStatus.OK)
    beyond = compare_repeat_sets(one, worse, accept_inconclusive=True)
    assert (beyond.outcome, beyond.exit_status) == (Outcome.REGRESSION, ExitStatus.REGRESSION)
    assert [f.name for f in beyond.regressions] == [ADJUSTED]


@pytest.mark.parametrize(("runs", "outcome"), [(3, Outcome.INCONCLUSIVE), (4, Outcome.PASS), (5, Outcome.PASS)])
def test_a_a_comparisons_pass_from_the_smallest_useful_repeat_count_on(runs: int, outcome: Outcome) -> None:
    assert compare_repeat_sets(first(STEADY, runs), first(STEADY, runs)).outcome is outcome


def test_three_against_three_is_inconclusive_within_the_tolerance_and_fails_beyond_it() -> None:
    five_percent = scaled(STEADY, "node_cpu_ms_per_proof", 1.05)  # real, but no test of 3 vs 3 can see it
    assert compare_repeat_sets(first(STEADY, 3), first(five_percent, 3)).exit_status is ExitStatus.INCONCLUSIVE
    assert compare_repeat_sets(first(STEADY, 5), first(five_percent, 5)).exit_status is ExitStatus.REGRESSION
    assert compare_repeat_sets(first(STEADY, 3), first(SLOWER_CPU, 3)).exit_status is ExitStatus.REGRESSION  # +10 % > 9 %


def test_nothing_gating_compared_is_inconclusive_and_a_mismatch_outranks_it() -> None:
    shown_only = {"committed_per_s": STEADY["committed_per_s"]}
    assert compare_repeat_sets(repeat_set(shown_only), repeat_set(shown_only)).outcome is Outcome.INCONCLUSIVE
    other = msgspec.structs.replace(METADATA, nodes=8)
    assert compare_repeat_sets(first(STEADY, 1), first(STEADY, 1), force=False).outcome is Outcome.INCONCLUSIVE
    assert compare_repeat_sets(first(STEADY, 1), RepeatSet(metadata=other, run_ids=["x"], samples={})).outcome is Outcome.NOT_LIKE_FOR_LIKE


def test_the_plan_digest_ignores_where_the_profile_came_from_but_not_its_settings() -> None:
    from harness.profile import load_profile
    from harness.regress.verdict import plan_digest

    ci = load_profile("ci")
    moved = dataclasses.replace(ci, source="/elsewhere/profiles/ci.toml", description="reworded")
    faster = dataclasses.replace(ci, workload=dataclasses.replace(ci.workload, rate=ci.workload.rate * 2))
    assert plan_digest(ci) == plan_digest(moved)
    assert plan_digest(ci) != plan_digest(faster)
    assert len(plan_digest(ci)) == 16
