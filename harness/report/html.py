"""report.html: one self-contained page per run that opens offline (docs/report.md).

Top to bottom: what ran and the verdict with the five figures a reader looks for first (score and grade,
committed per second, p99 against L, delivery, findings), then the plots, then the tables. Each section
is a function from typed data (the Report, the series of harness/report/html_data.py) to an HTML string;
every value is escaped. Figures are inline SVG (harness/report/html_plots.py), styles are inline, and
nothing is fetched: no script, font, image or stylesheet from anywhere.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.metrics.results import SEVERITY_ORDER, Service, Throughput
from harness.profile import Profile, load_profile
from harness.report import render
from harness.report.html_data import Marks, RunSeries, load_series
from harness.report.schema import AnyScore, Report, Score, ScoreV1
from popbench.errors import PopbenchError

if TYPE_CHECKING:
    from types import ModuleType


def _plots() -> ModuleType:
    """The figure module, imported on first use: matplotlib (and numpy) load only when a page is drawn,
    after the run, so the node processes forked before it never carry them."""
    from harness.report import html_plots

    return html_plots


HTML_NAME = "report.html"
HEADLINE_FINDINGS = 3  # the verdict names this many findings, the most serious first; the table has them all
OVERRIDDEN_KEYS = (("network", "nodes", ""), ("network", "consensus", ""), ("network", "topology", ""),
                   ("workload", "rate", "/s"), ("workload", "drivers", ""), ("run", "duration_s", " s"))  # fmt: skip
STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1300px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
p.ran { margin-top: 0; color: #444; } p.why { margin: 0.3em 0 0.8em; }
.tiles { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 0.5em 0 1em; }
.tile { flex: 1 1 200px; border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 0.9em; background: #fafafa; }
.tile .label { font-size: 0.85em; color: #555; } .tile .value { font-size: 1.6em; font-weight: bold; margin: 0.15em 0; }
.tile .note { font-size: 0.85em; color: #444; } .tile ul { margin: 0.2em 0 0; padding-left: 1.1em; font-size: 0.85em; }
.tile.ok { border-left: 6px solid #2a7d2a; } .tile.bad { border-left: 6px solid #c62828; } .tile.warn { border-left: 6px solid #b07000; }
.tile.none { border-left: 6px solid #888; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { padding: 2px 10px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #444; } .grade { font-size: 2em; font-weight: bold; }
.grade-A, .grade-B { color: #2a7d2a; } .grade-C, .grade-D { color: #b07000; } .grade-F { color: #c62828; } .grade-none { color: #666; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #444; max-width: 900px; } figure svg { width: 100%; height: auto; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = (), row_class: str = "") -> str:
    """A real table; columns whose index is in ``numeric`` are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table{f' class={row_class!r}' if row_class else ''}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(figure_id: str, svg: str, caption: str) -> str:
    return f'<figure id="{esc(figure_id)}">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


# -- what ran -----------------------------------------------------------------------------------------
def what_ran(report: Report) -> str:
    """One line from what the run actually did (the deployment and the applied profile), never from the
    profile's own prose, which describes the profile as shipped."""
    dep, load, run = report.deployment, report.profile.workload, report.profile.run
    network = f"{dep.nodes} {dep.consensus} nodes ({dep.topology})" if dep else f"{report.profile.network.nodes} nodes, not deployed"
    loop = f"closed loop, {load.in_flight:,} in flight" if load.mode == "closed" else f"open loop at {load.rate:g} items/s"
    return f"{network}, {loop if load.rate > 0 else 'no submission load'}, a {run.duration_s:g} s window, profile {report.profile.name}"


def overrides(profile: Profile) -> list[str]:
    """What the run changed from the shipped profile of its name (``--nodes 16``: "nodes 16, the profile's
    100"); empty when it changed nothing, or no shipped profile has that name."""
    try:
        shipped = load_profile(profile.name)
    except (PopbenchError, OSError):
        return []
    changed = []
    for section, key, unit in OVERRIDDEN_KEYS:
        ran, planned = getattr(getattr(profile, section), key), getattr(getattr(shipped, section), key)
        if ran != planned:
            changed.append(f"{key.removesuffix('_s')} {ran:g}{unit} (the profile's {planned:g}{unit})" if isinstance(ran, float)
                           else f"{key} {ran}{unit} (the profile's {planned}{unit})")  # fmt: skip
    return changed


def profile_text(profile: Profile) -> str:
    """The profile's name and description, saying so when the run overrode it (the description is then
    the shipped profile's, not this run's)."""
    changed = overrides(profile)
    if not changed:
        return f"{profile.name}: {profile.description}"
    return f"{profile.name}, run with {', '.join(changed)}; the profile's own description (for its own settings): {profile.description}"


# -- the verdict and the figures a reader looks for first -----------------------------------------------
def tile(label: str, value: str, note: str, state: str, extra: str = "") -> str:
    """One headline figure: ``state`` is ok, warn, bad or none (not measured)."""
    return (f'<div class="tile {esc(state)}"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            f'<div class="note">{esc(note)}</div>{extra}</div>')  # fmt: skip


def verdict_section(report: Report) -> str:
    """The grade (or why there is none), what decided it, and the five headline figures."""
    score = report.score
    grade = f"grade {score.grade}" if score.grade is not None else "interrupted: no grade"
    css = f"grade-{score.grade}" if score.grade is not None else "grade-none"
    status = "" if report.status == "complete" else f" ({report.status}: {report.ended_early})"
    why = "; ".join(value for _, value in render.verdict(score)) if isinstance(score, Score) else ""
    tiles = [score_tile(report), committed_tile(report.metrics.throughput), p99_tile(report.metrics.service, report.profile),
             delivery_tile(report.metrics.service, report.profile), findings_tile(report)]  # fmt: skip
    return "\n".join([
        f'<h1>popbench report: {esc(report.run_id)}</h1><p class="ran">{esc(what_ran(report))}{esc(status)}</p>',
        f'<p class="verdict"><span class="grade {css}">{esc(grade)}</span></p>',
        f'<p class="why">{esc(why)}</p>' if why else "", f'<div class="tiles">{"".join(tiles)}</div>',
    ])  # fmt: skip


def score_tile(report: Report) -> str:
    score = report.score
    if score.grade is None:
        return tile("score", "no grade", render.provisional_text(report), "none")
    state = "bad" if score.grade == "F" else "warn" if score.grade in ("C", "D") else "ok"
    return tile("score", f"{score.total:.1f} / 100", f"grade {score.grade}" + ("" if score.passed_safety else ", SAFETY FAILED"), state)


def committed_tile(t: Throughput | None) -> str:
    if t is None:
        return tile("committed per second", "-", "no load window", "none")
    offered = f"offered {t.offered_per_s:,.1f}/s" + (f" ({t.valid_offered_per_s:,.1f} valid)" if t.valid_offered_per_s is not None else "")
    return tile("committed per second", f"{t.committed_per_s:,.1f}", f"commits seen in the steady window; {offered}", "none")


def p99_tile(v: Service | None, profile: Profile) -> str:
    target = profile.slo.latency_ms
    if v is None or not v.due:
        return tile("p99 latency against L", "-", f"nothing due to judge; L = {target:g} ms", "none")
    value = "unbounded" if v.p99_unbounded else _ms(v.p99_all_ms or 0.0)
    within = not v.p99_unbounded and (v.p99_all_ms or 0.0) <= target
    note = f"over all {v.due:,} due items, misses counted; L = {_ms(target)}, {v.within_target_share or 0.0:.1%} within it"
    return tile("p99 latency against L", value, note, "ok" if within else "warn")


def delivery_tile(v: Service | None, profile: Profile) -> str:
    least = profile.slo.min_delivery
    if v is None or v.delivery is None:
        return tile("delivery", "-", f"nothing due to judge; the service level asks {least:.0%}", "none")
    note = f"{v.committed_in_window:,} of {v.due:,} due committed by the window's end + L; asks {least:.0%}"
    if v.interrupted_at_s is not None:
        note += f"; {v.in_flight_at_stop:,} in flight at the stop left out"
    return tile("delivery", f"{v.delivery:.1%}", note, "ok" if v.delivery >= least else "bad")


def findings_tile(report: Report) -> str:
    issues = report.issues
    counts = {sev: sum(1 for f in issues if f.severity == sev) for sev in SEVERITY_ORDER}
    value = ", ".join(f"{n} {sev}" for sev, n in counts.items() if n) or "none"
    top = "".join(f"<li>{esc(render.finding_line(f))}</li>" for f in issues[:HEADLINE_FINDINGS])
    state = "bad" if counts.get(SEVERITY_ORDER[0]) else "warn" if issues else "ok"
    note = "most serious first; all of them under Findings below" if issues else "nothing went wrong that the harness checks for"
    return tile("findings", value, note, state, f"<ul>{top}</ul>" if top else "")


def _ms(value: float) -> str:
    return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.0f} ms"


# -- the details, after the figures -----------------------------------------------------------------------
def header_section(report: Report) -> str:
    dep, env = report.deployment, report.environment
    network = f"{dep.consensus}, {dep.nodes} nodes, {dep.topology}, quorum {dep.quorum} (f = {dep.f})" if dep else "not deployed"
    rows: list[tuple[str, str]] = [
        ("run", report.run_id), ("status", report.status + (f" ({report.ended_early})" if report.ended_early else "")),
        ("started", report.started_at), ("profile", profile_text(report.profile)),
        ("network", network), ("consensus", f"{dep.consensus}" if dep else report.profile.network.consensus),
        ("host", f"{env.cpu_model}, {env.cores_logical} logical cores, {env.memory_gib:.1f} GiB, {env.os}, Python {env.python}"),
        ("commit", f"{env.git.commit or 'unknown'}{' (dirty)' if env.git.dirty else ''}"),
    ]  # fmt: skip
    parts = ["<h2>The run</h2>", table(["", ""], rows)]
    parts += ["<h2>Load applied</h2>", table(["setting", "value"], render.load_settings(report.profile))]
    parts += ["<h2>Service level</h2>", table(["target", "value"], render.service_level(report.profile))]
    return "\n".join(parts)


def score_section(score: AnyScore) -> str:
    """Every scored item, the arithmetic from the items to the total, and the conditions that set the grade."""
    shown = f"{score.total:.1f} / 100, grade {score.grade}" if score.grade is not None else f"provisional {score.total:.1f} / 100: no grade"
    headline = f"<p>Score <strong>{esc(shown)}</strong>" + ("" if score.passed_safety else " <strong>SAFETY FAILED</strong>")
    body = score_items_v2(score) if isinstance(score, Score) else score_items_v1(score)
    arithmetic = "".join(f"<li>{esc(line)}</li>" for line in render.score_arithmetic(score))
    return "\n".join([
        "<h2>Score</h2>", headline + "</p>", body,
        f'<h3>How the total is made</h3><ol class="arithmetic">{arithmetic}</ol>',
        grade_conditions(score) if isinstance(score, Score) else "",
        f"<p>Formula version {score.version} (docs/scoring.md).</p>",
    ])  # fmt: skip


def score_items_v2(score: Score) -> str:
    rows = [(i.name, _value(i.value), _value(i.good), _value(i.bad), f"{i.points:.2f}", f"{i.max_points:g}", i.formula)
            for i in score.items]  # fmt: skip
    rows.append(("sum", "", "", "", f"{score.earned:.2f}", f"{score.possible:g}", "the items' points, added"))
    left = "".join(f"<li>{esc(note)}</li>" for note in score.left_out)
    return (table(["item", "value", "good", "bad", "points", "of", "formula"], rows, numeric=(1, 2, 3, 4, 5), row_class="score-items")
            + (f"<p>Left out (not exercised):</p><ul>{left}</ul>" if left else ""))  # fmt: skip


def score_items_v1(score: ScoreV1) -> str:
    rows: list[tuple[str, str, str]] = []
    for part in score.parts:
        if not part.exercised:
            rows.append((part.name, "(not exercised)", "left out"))
            continue
        rows += [(part.name, item.name, f"{item.points:.2f}") for item in part.items]
        rows.append((part.name, "part total", f"{part.points:.2f} / {part.max_points:g}"))
    return table(["part", "item", "points"], rows, numeric=(2,), row_class="score-items")


def grade_conditions(score: Score) -> str:
    """The conditions that decided the grade (none: grade A), and whether the run is valid as a measurement."""
    if score.conditions:
        rows = [(c.reason, c.grade, "yes" if c.hard_gate else "no", c.message) for c in score.conditions]
        decided = "<h3>What decided the grade</h3>" + table(["condition", "best grade it allows", "hard gate", "what happened"], rows)
    else:
        decided = "<h3>What decided the grade</h3><p>No condition lowered it: the network kept pace within its service level.</p>"
    if not score.valid_measurement:
        reasons = "".join(f"<li>{esc(i.message)}</li>" for i in score.invalid_because)
        decided += f"<p><strong>Not valid as a measurement:</strong></p><ul>{reasons}</ul>"
    return decided


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4g}"


def findings_section(report: Report) -> str:
    if not report.issues:
        return "<h2>Findings</h2><p>Nothing went wrong that the harness checks for.</p>"
    rows = [(f.severity, "-" if f.at_s is None else f"t{f.at_s:+.1f}s", f.kind, f.message) for f in report.issues]
    return "<h2>Findings</h2>" + table(["severity", "when", "kind", "what happened"], rows, row_class="findings")


def metrics_section(report: Report) -> str:
    return "<h2>Metrics</h2>" + table(["section", "metric", "value"], render.metric_rows(report))


def notes_section(report: Report, series: RunSeries) -> str:
    notes = [*report.notes, *report.score.notes, *series.notes]
    if not notes:
        return ""
    return "<h2>Notes</h2><ul>" + "".join(f"<li>{esc(note)}</li>" for note in notes) + "</ul>"


# -- figures -------------------------------------------------------------------------------------------
def marks(report: Report, series: RunSeries) -> Marks:
    views = series.resources.view_changes_at_s if series.resources else []
    run = report.profile.run
    faults = [(r.at_s, run.duration_s if r.healed_at_s is None else r.healed_at_s) for r in report.metrics.stability.recovery]
    service = report.metrics.service
    if service is not None:
        return Marks((service.steady_start_s, service.steady_end_s), [(s.start_s, s.length_s) for s in service.stalls], views, faults)
    return Marks((run.warmup_s, run.duration_s - run.cooldown_s), [], views, faults)


def timeline_figure(report: Report, series: RunSeries) -> str:
    if series.per_second is None:
        return ""
    shown = marks(report, series)
    stall_text = "; ".join(f"{length:.1f} s from t+{start:.1f} s" for start, length in shown.stalls) or "none"
    source = "the run's timeline" if series.resources is not None else "the drivers' records (no timeline stored)"
    loaded = any(series.per_second.offered) or any(series.per_second.committed)
    shows = ("items due (offered) and committed per second with the backlog, the p50/p99 commit latency of what "
             "committed in each second, and the highest height" if loaded else "the highest height (no submission load)")  # fmt: skip
    caption = (f"Timeline, from {source}: {shows}. The steady window is shaded green, stalls (no commit for longer than "
               f"the stall threshold) red, view changes dotted purple. Stalls: {stall_text}. "
               f"View changes seen at {len(shown.view_changes)} samples.")  # fmt: skip
    return figure("timeline", _plots().timeline_svg(series.per_second, shown, series.resources), caption)


def resources_figure(report: Report, series: RunSeries) -> str:
    if series.resources is None:
        return ""
    caption = ("Per-node CPU (% of one core, since the previous status sample) and memory (USS, MiB, where the sample "
               "read it): the average node and the busiest or largest one, at each status sample.")  # fmt: skip
    return figure("resources", _plots().resources_svg(series.resources, marks(report, series)), caption)


def latency_figure(report: Report, series: RunSeries) -> str:
    curve = series.latency
    if curve is None:
        return ""
    slo = report.profile.slo
    within = sum(1 for v in curve.latencies_ms if v <= slo.latency_ms)
    caption = (f"Latency CDF over the {curve.due:,} valid items due in the steady window: {len(curve.latencies_ms):,} committed "
               f"({curve.committed_share:.1%}); {within / max(1, curve.due):.1%} within L = {slo.latency_ms:g} ms "
               f"(required {slo.within_share:.0%}). Items that never committed are misses: the curve stops short of 1 by their share.")  # fmt: skip
    return figure("latency-cdf", _plots().latency_cdf_svg(curve, slo.latency_ms, slo.within_share), caption)


def propagation_figures(series: RunSeries) -> str:
    prop = series.propagation
    if prop is None:
        return ""
    blocks = len(prop.delays_ms.get(0.5, []))
    caption = (f"Propagation CDFs over {blocks} blocks: time from a block's first sighting by any node until 50 %, 90 % "
               f"and all of the {prop.nodes} nodes had it (from each node's stored arrival times).")  # fmt: skip
    if prop.delays_ms.get(0.9) == prop.delays_ms.get(1.0):
        caption += f" With {prop.nodes} nodes, 90 % of them is all of them: those two curves coincide."
    forks = sum(prop.forks_by_height.values())
    fork_caption = (f"Fork count: {forks} {'block was' if forks == 1 else 'blocks were'} stored beyond one per height "
                    "(stale blocks), by height.")  # fmt: skip
    forks_figure = figure("forks", _plots().forks_svg(prop.forks_by_height), fork_caption)
    return figure("propagation-cdf", _plots().propagation_cdf_svg(prop), caption) + forks_figure


def figures_section(report: Report, series: RunSeries) -> str:
    body = timeline_figure(report, series) + latency_figure(report, series) + resources_figure(report, series) + propagation_figures(series)
    return "<h2>Figures</h2>" + (body or "<p>This run left no records to plot.</p>")


# -- the page ------------------------------------------------------------------------------------------
def page(report: Report, series: RunSeries) -> str:
    sections = [verdict_section(report), figures_section(report, series), findings_section(report), score_section(report.score),
                header_section(report), metrics_section(report), notes_section(report, series)]  # fmt: skip
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>popbench {esc(report.run_id)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(sections) + "\n</body></html>\n")  # fmt: skip


def write_html(report: Report, run_dir: Path) -> Path:
    """Render the page for a run directory (its records and databases are read for the figures)."""
    path = run_dir / HTML_NAME
    partial = path.with_suffix(".tmp")
    partial.write_text(page(report, load_series(report, run_dir)), encoding="utf-8")
    partial.replace(path)
    return path
