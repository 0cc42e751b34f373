"""The comparison rendered as a terminal table, JSON and Markdown, and appended to a step summary."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson

from harness.regress.render import append_step_summary, render_json, render_markdown, render_spread_table, render_table
from harness.regress.verdict import Comparison, compare_repeat_sets
from tests.test_regress_verdict import METADATA, SLOWER_CPU, STEADY, repeat_set


def regressed() -> Comparison:
    return compare_repeat_sets(repeat_set(STEADY), repeat_set(SLOWER_CPU), labels=("main", "pr-42"))


def test_the_table_shows_each_figure_its_verdict_and_the_outcome() -> None:
    text = render_table(regressed())
    assert "main -> pr-42" in text
    cpu_line = next(line for line in text.splitlines() if line.startswith("node CPU-ms per committed proof"))
    assert "4.5" in cpu_line and "4.97" in cpu_line and "+10.44 %" in cpu_line and "0.00794" in cpu_line
    assert "no significant change" in cpu_line and "30 %" in cpu_line  # the raw figure only backstops
    adjusted_line = next(line for line in text.splitlines() if line.startswith("node CPU-ms per proof at a common messaging cost"))
    assert "▲ slower REGRESSION" in adjusted_line and "3 %" in adjusted_line
    assert text.splitlines()[-1] == "exit 1: significant regression: node CPU-ms per proof at a common messaging cost"


def test_the_table_lists_mismatches_when_not_like_for_like() -> None:
    other = msgspec.structs.replace(METADATA, nodes=8)
    text = render_table(compare_repeat_sets(repeat_set(STEADY), repeat_set(STEADY, other)))
    assert "not like for like: nodes: 4 vs 8" in text
    assert text.splitlines()[-1].startswith("exit 2: not like for like")


def test_json_carries_every_figure_the_exit_status_and_the_regressions() -> None:
    data = orjson.loads(render_json(regressed()))
    assert data["exit_status"] == 1
    assert data["regressions"] == ["node_cpu_ms_per_proof_adjusted"]
    cpu = next(figure for figure in data["figures"] if figure["name"] == "node_cpu_ms_per_proof")
    assert cpu["verdict"] == "no significant change" and cpu["u_test"]["method"] == "exact"
    assert cpu["new_samples"] == SLOWER_CPU["node_cpu_ms_per_proof"]
    adjusted = next(figure for figure in data["figures"] if figure["name"] == "node_cpu_ms_per_proof_adjusted")
    assert adjusted["verdict"] == "slower" and adjusted["covariate"] == "load_cpu_ms_per_proof" and adjusted["covariate_slope"] > 0
    assert data["new_metadata"]["profile"] == "ci"


def test_markdown_is_a_table_with_the_outcome_first() -> None:
    markdown = render_markdown(regressed())
    lines = markdown.splitlines()
    assert lines[0] == "### popbench compare: ❌ exit 1: significant regression: node CPU-ms per proof at a common messaging cost"
    header = next(index for index, line in enumerate(lines) if line.startswith("| figure"))
    assert lines[header + 1].startswith("|---|---|---:")
    assert any(line.startswith("| node CPU-ms per committed proof |") for line in lines)
    assert markdown.endswith("\n")


def test_an_inconclusive_comparison_has_its_own_mark_never_the_tick() -> None:
    three = repeat_set({name: values[:3] for name, values in STEADY.items()})
    for accepted in (False, True):
        comparison = compare_repeat_sets(three, three, accept_inconclusive=accepted)
        title = render_markdown(comparison).splitlines()[0]
        assert title.startswith(f"### popbench compare: ❔ exit {0 if accepted else 3}: inconclusive") and "✅" not in render_markdown(
            comparison
        )
        assert "INCONCLUSIVE" in render_table(comparison)
    assert orjson.loads(render_json(comparison))["inconclusive"] == [f.name for f in comparison.figures if f.gating]
    assert render_markdown(compare_repeat_sets(repeat_set(STEADY), repeat_set(STEADY))).startswith("### popbench compare: ✅ exit 0")


def test_the_step_summary_is_appended_only_when_the_variable_is_set(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    assert append_step_summary("ours\n", environ={}) is None
    assert append_step_summary("ours\n", environ={"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    assert summary.read_text() == "# earlier step\nours\n"


def test_the_spread_table_shows_median_and_spread_per_figure() -> None:
    text = render_spread_table(repeat_set(STEADY))
    cpu_line = next(line for line in text.splitlines() if line.startswith("node CPU-ms per committed proof"))
    assert cpu_line.split()[-7:] == ["5", "4.5", "4.48", "4.52", "0.01", "0.02", "0.3514"]
