"""A sweep for people: tables on the terminal, and one self-contained HTML page (inline SVG, no scripts,
no links: it opens offline and can be mailed as one file)."""

from __future__ import annotations

import html
import math

from tabulate import tabulate

from harness.capacity.model import DeploymentPlan, Prediction, Validation
from harness.capacity.plots import capacity_svg, median_p99, throughput_latency_svg
from harness.capacity.search import LargestSize
from harness.capacity.store import Sweep
from harness.kinds import WorkloadMode

PAGE_STYLE = "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}table{border-collapse:collapse}" \
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#eee}pre{white-space:pre-wrap}"  # fmt: skip


# -- tables (rows shared by the terminal and the page) ---------------------------------------------
def points_rows(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    headers = ["N", "mode", "rate/s", "runs", "sustained", "committed/s", "p99 ms", "within target", "why not"]
    rows = [[str(p.nodes), p.mode.value, f"{p.rate_per_s:g}", str(len(p.runs)), "yes" if p.sustained else "no",
             " ".join(f"{r.outcome.committed_per_s:.1f}" for r in p.runs), _ms(median_p99(p)),
             " ".join(_share(r.outcome.within_target_share) for r in p.runs),
             "; ".join(dict.fromkeys(why for r in p.runs for why in r.verdict.why_not))]
            for p in sweep.points]  # fmt: skip
    return headers, rows


def findings_rows(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    headers = ["N", "status", "probe committed/s", "highest sustained/s", "p99 ms there", "failed at/s", "why it failed above", "note"]
    rows = [[str(c.nodes), c.status.value, _rate(c.probe_committed_per_s), _rate(c.sustained_rate_per_s), _ms(c.p99_ms_at_sustained),
             _rate(c.failed_rate_per_s), "; ".join(c.why_not_above), c.note]
            for c in sweep.findings.capacities]  # fmt: skip
    return headers, rows


def validation_rows(validation: Validation) -> tuple[list[str], list[list[str]]]:
    headers = [
        "N (held out)",
        "CPU ms/proof measured",
        "predicted [90 % band]",
        "error",
        "in band",
        "capacity measured/s",
        "predicted/s",
        "error",
    ]
    rows = [[str(h.nodes), f"{h.measured_cpu_ms_per_proof:.3g}", _band(h.predicted_cpu_ms_per_proof), f"{h.error_percent:+.1f} %",
             "yes" if h.within_band else "no", _rate(h.measured_capacity_per_s),
             _band(h.predicted_capacity_per_s) if h.predicted_capacity_per_s else "-",
             f"{h.capacity_error_percent:+.1f} %" if h.capacity_error_percent is not None else "-"]
            for h in validation.held_out]  # fmt: skip
    return headers, rows


def largest_lines(sweep: Sweep) -> list[str]:
    """The answer for the target rate, saying no more than was measured: a size is "the largest" only
    when a larger one failed; when none did, the answer is a lower bound. With the p99 it ran at."""
    largest = sweep.findings.largest
    if largest is None:
        return []
    lines = [f"largest size sustaining {largest.rate_per_s:g} proofs/s: {largest_answer(sweep, largest)}"]
    if largest.smallest_failing is not None:
        lines.append(f"smallest failing: N = {largest.smallest_failing}: {'; '.join(largest.why_not_above)}")
    lines.append(f"assumption: {largest.assumption}")
    lines.extend(largest.non_monotone or ["monotone check: no contradiction found"])
    return lines


def largest_answer(sweep: Sweep, largest: LargestSize) -> str:
    """The answer itself: N = 32 with a larger size failing, N >= 8 when no size measured failed, or none."""
    cut = "" if largest.complete else " (search cut short by the budget)"
    if largest.nodes is None:
        if largest.smallest_failing is None:
            return f"not known: no size was run at this rate{cut}"
        return f"none of the sizes measured (N = {largest.smallest_failing}, the smallest, failed it: {_p99_at(sweep, largest.smallest_failing, largest)}){cut}"
    p99 = _p99_at(sweep, largest.nodes, largest)
    if largest.smallest_failing is not None:
        return f"N = {largest.nodes}, {p99} (N = {largest.smallest_failing} failed it){cut}"
    measured = max(sweep.plan.sizes)
    why = "the largest size measured" if largest.nodes == measured else f"no larger size was run, though the plan goes to N = {measured}"
    return f"N >= {largest.nodes} ({why}), {p99}{cut}"


def _p99_at(sweep: Sweep, nodes: int, largest: LargestSize) -> str:
    """The median p99 of the open-loop runs at that size and the target rate, as "p99 412 ms at 100/s"."""
    point = next((p for p in sweep.points if p.nodes == nodes and p.rate_per_s == largest.rate_per_s and p.mode is WorkloadMode.OPEN), None)
    if point is None:
        return f"p99 not stored at {largest.rate_per_s:g}/s"
    p99 = median_p99(point)
    return f"p99 {'unbounded' if p99 is None else f'{p99:.0f} ms'} at {largest.rate_per_s:g}/s"


def model_lines(sweep: Sweep) -> list[str]:
    model = sweep.model
    if model is None:
        return ["cost model: not fitted (too few sustained runs with CPU counters)"]
    c = model.coefficients
    return [f"cost model ({model.growth.value} votes), fitted on N = {', '.join(map(str, model.fitted_sizes))} ({model.observations} runs, "
            f"rms error {model.rms_relative_error:.1%}):",
            f"  CPU ms per proof = {c.a_ms_per_proof_per_node:.4g} N + ({c.b_ms_per_block_per_node2:.4g} N^2 + {c.c_ms_per_block_per_node:.4g} N "
            f"+ {c.d_ms_per_block:.4g}) / batch   (batch as profiled: {model.proofs_per_block:.3g})",
            *(f"  note: {note}" for note in model.notes)]  # fmt: skip


def plan_lines(plan: DeploymentPlan) -> list[str]:
    trust = (f"within the trusted range (up to N = {plan.trusted_up_to_nodes})" if plan.trustworthy else
             f"UNTRUSTWORTHY beyond N = {plan.trusted_up_to_nodes}: N = {plan.nodes} is {plan.extrapolation:.1f}x the largest measured size")  # fmt: skip
    return [f"{plan.nodes} validators at {plan.rate_per_s:g} proofs/s: {plan.cores_needed.value:.1f} cores "
            f"[90 % band {plan.cores_needed.low:.1f} to {plan.cores_needed.high:.1f}], {plan.hosts} host(s) of {plan.cores_per_host} cores "
            f"({plan.hosts_high} at the band's top); CPU {_band(plan.cpu_ms_per_proof)} ms per proof",
            f"  trust: {trust}",
            *(f"  assumes: {a}" for a in plan.assumptions)]  # fmt: skip


def terminal_report(sweep: Sweep, plans: list[DeploymentPlan] | None = None, validation: Validation | None = None) -> str:
    """Everything the page says except the figures, as plain text for the terminal."""
    sections = [f"sweep: {sweep.status.value}" + (f" ({sweep.findings.stopped})" if sweep.findings.stopped else ""),
                _text_table(*findings_rows(sweep)), "\n".join(largest_lines(sweep)),
                "\n".join(model_lines(sweep))]  # fmt: skip
    if validation is not None:
        sections.append(
            f"held-out validation (fitted on N <= {validation.fit_max_nodes}):\n"
            + _text_table(*validation_rows(validation))
            + "".join(f"\n  {note}" for note in validation.not_cpu_bound)
        )
    sections.extend("\n".join(plan_lines(plan)) for plan in plans or [])
    return "\n\n".join(s for s in sections if s)


def points_table(sweep: Sweep) -> str:
    return _text_table(*points_rows(sweep))


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers, tablefmt="simple", disable_numparse=True)


# -- the page --------------------------------------------------------------------------------------
def html_page(sweep: Sweep, cores: float, plans: list[DeploymentPlan] | None = None, validation: Validation | None = None) -> str:
    """sweep.html: findings, the two figures, the model, validation, planner answers and every point."""
    body = [f"<h1>Capacity sweep ({html.escape(sweep.status.value)})</h1>",
            _paragraph(f"Service level: p99 at most {sweep.slo.p99_target_ms:g} ms, {sweep.slo.within_target_share:.1%} of due items within it, "
                       f"committed at least {sweep.slo.min_keep_pace:.0%} of offered, no commit gap over {sweep.slo.max_stalled_share:.0%} "
                       f"of the window, at least {sweep.slo.min_links_share:.0%} of links up."),
            "<h2>Highest sustained rate per size</h2>", _table(*findings_rows(sweep)), _pre(largest_lines(sweep)),
            _figure("Throughput and p99 latency per size", throughput_latency_svg(sweep)),
            _figure("Capacity against size, with the fitted model", capacity_svg(sweep, cores)),
            "<h2>Cost model</h2>", _pre(model_lines(sweep))]  # fmt: skip
    if validation is not None:
        body += [
            f"<h2>Held-out validation (fitted on N &le; {validation.fit_max_nodes})</h2>",
            _table(*validation_rows(validation)),
            *(f"<p>{html.escape(note)}</p>" for note in validation.not_cpu_bound),
        ]
    if plans:
        body += ["<h2>Planner</h2>", *(_pre(plan_lines(plan)) for plan in plans)]
    body += ["<h2>Every point</h2>", _table(*points_rows(sweep))]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>popbench capacity sweep</title>'
            f"<style>{PAGE_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def _figure(title: str, svg: str) -> str:
    return f"<figure><figcaption><h2>{html.escape(title)}</h2></figcaption>{svg}</figure>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pre(lines: list[str]) -> str:
    return f"<pre>{html.escape(chr(10).join(lines))}</pre>" if lines else ""


def _paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "unbounded" if value is None or math.isinf(value) else f"{value:.0f}"


def _band(prediction: Prediction) -> str:
    return f"{prediction.value:.3g} [{prediction.low:.3g}, {prediction.high:.3g}]"
