"""A comparison (or a repeat set's spread) for people and machines: a terminal table, JSON, Markdown.

Every renderer reads the same typed :class:`~harness.regress.verdict.Comparison`; none computes a figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
import orjson
from tabulate import tabulate

from harness.regress.figures import WATCHED_FIGURES, FigureSpec
from harness.regress.stats import smallest_useful_repeats, spread
from harness.regress.verdict import Basis, Comparison, FigureComparison, Outcome, RepeatSet, Verdict

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
COMPARISON_HEADERS = ("figure", "unit", "base median", "new median", "change", "p", "threshold", "verdict")
NUMERIC_HEADERS = frozenset({"base median", "new median", "change", "p", "threshold"})  # right-aligned in Markdown
SPREAD_HEADERS = ("figure", "unit", "n", "median", "min", "max", "MAD", "IQR", "CV %")
VERDICT_MARKS: dict[Verdict, str] = {
    Verdict.SLOWER: "▲ slower",
    Verdict.FASTER: "▼ faster",
    Verdict.NO_CHANGE: "no significant change",
    Verdict.TOO_FEW_SAMPLES: "too few samples",
}
OUTCOME_MEANINGS: dict[Outcome, str] = {
    Outcome.PASS: "no significant regression",
    Outcome.REGRESSION: "significant regression",  # or, by fixed tolerance alone, regression_meaning's words
    Outcome.NOT_LIKE_FOR_LIKE: "not like for like (use --force to compare anyway)",
    Outcome.INCONCLUSIVE: "inconclusive",
}
# Markdown's mark of each outcome: only a pass gets the tick; inconclusive has its own, whatever the exit status
OUTCOME_ICONS: dict[Outcome, str] = {
    Outcome.PASS: "✅",
    Outcome.REGRESSION: "❌",
    Outcome.NOT_LIKE_FOR_LIKE: "⚠️",
    Outcome.INCONCLUSIVE: "❔",
}


def format_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"


def format_change(figure: FigureComparison) -> str:
    if figure.change_percent is None:
        return "from 0"
    return f"{figure.change_percent:+.2f} %"


def format_p(figure: FigureComparison) -> str:
    return "-" if figure.p_value is None else f"{figure.p_value:.3g}"


def format_verdict(figure: FigureComparison) -> str:
    text = VERDICT_MARKS[figure.verdict]
    if figure.basis is Basis.FIXED_TOLERANCE and figure.verdict is not Verdict.TOO_FEW_SAMPLES:
        text += " (fixed tolerance)"
    if figure.regression:
        text += " REGRESSION"
    elif figure.inconclusive:
        text += " INCONCLUSIVE"
    elif not figure.gating and figure.verdict is Verdict.SLOWER:
        text += " (not gating)"
    return text


def comparison_rows(comparison: Comparison) -> list[list[str]]:
    return [
        [figure.label, figure.unit, format_value(figure.base_median), format_value(figure.new_median), format_change(figure),
         format_p(figure), f"{figure.tolerance_percent:g} %", format_verdict(figure)]
        for figure in comparison.figures
    ]  # fmt: skip


def outcome_line(comparison: Comparison) -> str:
    outcome = comparison.outcome
    meaning, detail = OUTCOME_MEANINGS[outcome], ""
    if outcome is Outcome.REGRESSION:
        meaning, detail = regression_meaning(comparison.regressions)
    elif outcome is Outcome.INCONCLUSIVE:
        detail = inconclusive_detail(comparison)
    forced = " (forced past like-for-like mismatches)" if comparison.forced and comparison.mismatches else ""
    return f"exit {int(comparison.exit_status)}: {meaning}{detail}{forced}"


def regression_meaning(regressions: list[FigureComparison]) -> tuple[str, str]:
    """The outcome's words and the figures: a regression is called significant only where a test found
    it; a figure failed by its fixed tolerance (too few runs for a test) is named as such."""
    tested = any(figure.basis is Basis.MANN_WHITNEY for figure in regressions)
    names = ", ".join(figure.label + ("" if figure.basis is Basis.MANN_WHITNEY else " (fixed tolerance)") for figure in regressions)
    return ("significant regression" if tested else "regression beyond the fixed tolerance (too few runs for a test)"), f": {names}"


def inconclusive_detail(comparison: Comparison) -> str:
    """Why nothing can be concluded and what would fix it: the sample sizes no test can judge, the
    repeat count that can, and the flag that accepts it (or that it was accepted)."""
    accepted = " (accepted with --accept-inconclusive)" if comparison.accept_inconclusive else ""
    figures = comparison.inconclusive
    if not figures:
        return f"{accepted}: no gating figure was measured on both sides"
    sizes = ", ".join(sorted({f"{len(f.base_samples)} vs {len(f.new_samples)}" for f in figures}))
    smallest_p = max(f.u_test.smallest_p for f in figures)
    needed = smallest_useful_repeats(comparison.alpha)
    advice = "" if comparison.accept_inconclusive else ", or pass --accept-inconclusive"
    return (f"{accepted}: {sizes} runs cannot reach p < {comparison.alpha:g} (the smallest possible p is {smallest_p:.3g}), "
            f"so {len(figures)} gating figure{'s' if len(figures) != 1 else ''} moved within {'their' if len(figures) != 1 else 'its'} "
            f"fixed tolerance untested; run at least {needed} a side (popbench run --repeat {needed}){advice}")  # fmt: skip


def notes_lines(comparison: Comparison) -> list[str]:
    """Mismatches, skipped figures and each non-trivial verdict's reason, one sentence a line."""
    lines = [f"not like for like: {m.field}: {m.base!r} vs {m.new!r} ({m.reason})" for m in comparison.mismatches]
    lines += [f"skipped {s.name}: {s.reason}" for s in comparison.skipped]
    lines += [f"{f.label}: {f.why}" for f in comparison.figures if f.verdict is not Verdict.NO_CHANGE or f.regression]
    return lines


# -- terminal -----------------------------------------------------------------------------------------
def render_table(comparison: Comparison) -> str:
    title = f"{comparison.base_label} -> {comparison.new_label}  (two-sided Mann-Whitney U, alpha {comparison.alpha:g})"
    table = tabulate(comparison_rows(comparison), headers=COMPARISON_HEADERS, tablefmt="simple", disable_numparse=True)
    return "\n".join([title, "", table, "", *notes_lines(comparison), outcome_line(comparison)])


def spread_rows(samples: Mapping[str, Sequence[float]], specs: Sequence[FigureSpec] = WATCHED_FIGURES) -> list[list[str]]:
    rows = []
    for spec in specs:
        values = samples.get(spec.name)
        if values:
            s = spread(values)
            rows.append([spec.label, spec.unit, str(s.n), format_value(s.median), format_value(s.min), format_value(s.max),
                         format_value(s.mad), format_value(s.iqr), format_value(s.cv_percent)])  # fmt: skip
    return rows


def render_spread_table(repeat_set: RepeatSet, specs: Sequence[FigureSpec] = WATCHED_FIGURES) -> str:
    """Each figure's median and spread across the repeats of one set (what ``run --repeat`` reports)."""
    rows = spread_rows(repeat_set.samples, specs)
    return tabulate(rows, headers=SPREAD_HEADERS, tablefmt="simple", disable_numparse=True)


# -- JSON ---------------------------------------------------------------------------------------------
def comparison_to_builtins(comparison: Comparison) -> dict[str, object]:
    data: dict[str, object] = msgspec.to_builtins(comparison)
    data["regressions"] = [figure.name for figure in comparison.regressions]
    data["inconclusive"] = [figure.name for figure in comparison.inconclusive]
    return data


def render_json(comparison: Comparison) -> bytes:
    """The whole comparison as indented JSON (infinite or NaN values become null, as orjson does)."""
    return orjson.dumps(comparison_to_builtins(comparison), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


# -- Markdown -----------------------------------------------------------------------------------------
def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparison: Comparison) -> str:
    """A GitHub-flavoured Markdown section: outcome first, the table, then the reasons."""
    icon = OUTCOME_ICONS[comparison.outcome]
    header = "| " + " | ".join(COMPARISON_HEADERS) + " |"
    rule = "|" + "|".join("---:" if h in NUMERIC_HEADERS else "---" for h in COMPARISON_HEADERS) + "|"
    rows = ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in comparison_rows(comparison)]
    notes = [f"- {_markdown_cell(line)}" for line in notes_lines(comparison)]
    intro = f"`{comparison.base_label}` → `{comparison.new_label}`: two-sided Mann-Whitney U at α = {comparison.alpha:g}."
    parts = [f"### popbench compare: {icon} {outcome_line(comparison)}", "", intro, "", header, rule, *rows]
    return "\n".join([*parts, "", *notes, ""] if notes else [*parts, ""])


def append_step_summary(markdown: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append ``markdown`` to the file named by ``$GITHUB_STEP_SUMMARY``; None (and nothing written) when
    the variable is unset or empty, as outside GitHub Actions."""
    target = (os.environ if environ is None else environ).get(STEP_SUMMARY_ENV)
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as summary:
        summary.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
