"""Renderings of a report: console tables and a GitHub-step-summary Markdown file.

Rendering only reads the report; ``popbench report PATH`` re-renders a stored one the same way.
"""

from __future__ import annotations

from tabulate import tabulate

from harness.metrics.results import Finding, Growth, InvalidProofs, LinksPerNode, Mining, Record, Service, Throughput
from harness.profile import Profile
from harness.report.schema import AnyScore, Report, Score, ScoreV1

V1_GRADE_FLOORS = {"A": 90.0, "B": 80.0, "C": 70.0, "D": 60.0, "F": 0.0}  # formula version 1 (docs/scoring.md of v1)


def _fmt(value: object, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def headline(report: Report) -> list[tuple[str, str]]:
    score, dep = report.score, report.deployment
    network = f"{dep.consensus}, {dep.nodes} nodes, {dep.topology}" if dep else "?, ? nodes, ?"
    return [
        ("run", report.run_id), ("status", report.status + (f" ({report.ended_early})" if report.ended_early else "")),
        ("network", network),
        ("score", score_text(report) + ("" if score.passed_safety else "  SAFETY FAILED")),
        *verdict(score),
    ]  # fmt: skip


def score_text(report: Report) -> str:
    """``97.0 / 100  grade A``; an interrupted run's says it has no grade, and what ran earned provisionally."""
    score = report.score
    if score.grade is not None:
        return f"{score.total:.1f} / 100  grade {score.grade}"
    return f"interrupted: no grade ({provisional_text(report)})"


def provisional_text(report: Report) -> str:
    """What an interrupted run earned over what ran, labelled as provisional (docs/scoring.md)."""
    score, service = report.score, report.metrics.service
    if service is None:
        return "stopped before the load window started: nothing was measured"
    stop = f"; stopped at t+{service.interrupted_at_s:.1f}s" if service.interrupted_at_s is not None else ""
    ran = f"the {service.steady_end_s - service.steady_start_s:.1f} s that ran (t+{service.steady_start_s:.1f}s to t+{service.steady_end_s:.1f}s{stop})"
    provisional = score.provisional_grade if isinstance(score, Score) else None
    if provisional is None:
        return f"nothing was judged over {ran}"
    return f"provisional {score.total:.1f} / 100, grade {provisional}, over {ran}"


def verdict(score: AnyScore) -> list[tuple[str, str]]:
    """Formula 2: what decided the grade, and whether the run is valid as a measurement."""
    if not isinstance(score, Score):
        return []
    why = "; ".join(c.message for c in score.conditions) or "kept pace within the service level, no stall, every link up"
    rows = [("grade because" if score.grade is not None else "provisionally, because", why)]
    if not score.valid_measurement:
        rows.append(("NOT VALID as a measurement", "; ".join(i.message for i in score.invalid_because)))
    return rows


def finding_line(finding: Finding) -> str:
    """One finding as a line: severity, kind, when, what."""
    at = f"t+{finding.at_s:.1f}s " if finding.at_s is not None else ""
    return f"[{finding.severity}] {finding.kind}: {at}{finding.message}"


def load_settings(profile: Profile) -> list[tuple[str, str]]:
    """What load the run applied: mode, rate, shape, drivers, in-flight, invalid fraction, window."""
    load, run = profile.workload, profile.run
    shape = str(load.shape) + (f" from {load.ramp_from:g}/s" if load.shape == "ramp" else "")
    shape += f" steps {', '.join(f'{s:g}' for s in load.steps)}/s" if load.shape == "steps" else ""
    pool = f"{load.in_flight:,} in flight" if load.mode == "closed" else "open loop (due times fixed in advance)"
    return [
        ("mode", f"{load.mode}: {pool}"),
        ("rate", f"{load.rate:g} items/s in all" + (" (closed loop: sizes the pool)" if load.mode == "closed" else "")),
        ("shape", shape), ("drivers", str(load.drivers)),
        ("invalid fraction", f"{load.invalid_fraction:g} ({', '.join(load.invalid_kinds) or 'none'})"),
        ("window", f"{run.duration_s:g} s: warm-up {run.warmup_s:g} s, steady {run.duration_s - run.warmup_s - run.cooldown_s:g} s, "
                   f"cool-down {run.cooldown_s:g} s, then a drain of up to {run.drain_s:g} s"),
    ]  # fmt: skip


def service_level(profile: Profile) -> list[tuple[str, str]]:
    """The profile's ``[slo]``: what the run is judged against."""
    slo = profile.slo
    return [
        ("latency target L", f"{slo.latency_ms:g} ms (due time to commit seen)"),
        ("share within L", f"{slo.within_share:.1%} of the valid items due in the steady window"),
        ("least delivery", f"{slo.min_delivery:.1%} of the offered items committed in the window"),
        ("least links up", f"{slo.min_links_share:.1%} of the intended links, at every sample"),
    ]  # fmt: skip


def score_arithmetic(score: AnyScore) -> list[str]:
    """The lines that take the parts to the total and the total to the grade, each checkable by hand."""
    if isinstance(score, Score):
        return list(score.arithmetic)
    return _v1_arithmetic(score)


def _v1_arithmetic(score: ScoreV1) -> list[str]:
    exercised = [p for p in score.parts if p.exercised]
    earned, possible = sum(p.points for p in exercised), sum(p.max_points for p in exercised)
    lines = [f"{p.name}: {' + '.join(f'{i.points:.2f}' for i in p.items) or '0'} = {p.points:.2f} of {p.max_points:g}" for p in exercised]
    lines.append(" + ".join(f"{p.points:.2f}" for p in exercised) + f" = {earned:.2f} of {possible:g}")
    if possible and possible != 100:
        lines.append(
            f"{earned:.2f} x 100 / {possible:g} = {earned * 100 / possible:.2f}, rounded {score.total:.1f} (parts not exercised are left out)"
        )
    if not score.passed_safety:
        lines.append("a safety violation sets the total to 0")
    floor = V1_GRADE_FLOORS.get(score.grade)
    lines.append(f"grade {score.grade}: total {score.total:.1f}" + (f" >= {floor:g}" if floor is not None else ""))
    return lines


def score_rows(report: Report) -> list[list[str]]:
    """Formula 2: one row per item (points of its max, and its formula); formula 1: one row per part."""
    score = report.score
    if isinstance(score, Score):
        rows = [[item.name, f"{item.points:.1f} / {item.max_points:g}", item.formula] for item in score.items]
        return rows + [["left out", "-", why] for why in score.left_out]
    rows = []
    for part in score.parts:
        detail = ", ".join(f"{item.name} {item.points:.1f}" for item in part.items) or "; ".join(part.notes)
        shown = f"{part.points:.1f} / {part.max_points:.0f}" if part.exercised else "not exercised"
        rows.append([part.name, shown, detail])
    return rows


def _links_per_node(links: LinksPerNode | None) -> str:
    return "-" if links is None else f"{links.min} / {links.median} / {links.max}"


def metric_rows(report: Report) -> list[list[str]]:
    m = report.metrics
    c, s, r, w, k = m.connectivity, m.stability, m.resources, m.work, m.consensus
    rows = [
        ["connectivity", "links up / intended", f"{c.links_up} / {c.intended_links}"],
        ["connectivity", "time to all connected", _fmt(c.time_to_connected_s, " s", 2)],
        ["connectivity", "graph connected, diameter", f"{_fmt(c.graph_connected)}, {_fmt(c.diameter_hops)} hops"],
        ["connectivity", "links per node (min / median / max)", _links_per_node(c.links_per_node)],
        ["connectivity", "client connections", _fmt(c.client_connections)],
        ["connectivity", "handshake failures", _fmt(c.handshake_failures)],
    ]
    rows += _service_rows(m.service)
    rows += _throughput_rows(m.throughput, m.invalid_proofs)
    rows += [
        ["consensus", "height, block interval", f"{k.height}, {_fmt(k.block_interval_s, ' s', 3)}"],
        ["consensus", "round time mean / max", f"{_fmt(k.round_time_mean_s, ' s', 3)} / {_fmt(k.round_time_max_s, ' s', 3)}"],
        ["work", "frames, bytes, verifications per proof",
         f"{_fmt(w.frames_per_proof)}, {_fmt(w.bytes_per_proof, '', 0)}, {_fmt(w.verifications_per_proof)}"],
        ["stability", "crashes (unplanned)", f"{len(s.crashes)} ({s.unplanned_crashes})"],
        ["stability", "view changes max / protocol errors", f"{s.view_changes_max} / {s.protocol_errors}"],
        ["stability", "chains agree (safety)", _fmt(s.safety.agree if s.safety else None)],
        ["resources", "USS per node median / max", f"{_fmt(r.uss_per_node_mib.median, ' MiB')} / {_fmt(r.uss_per_node_mib.max, ' MiB')}"],
        ["resources", "CPU per node mean", _fmt(r.cpu_per_node_percent_mean, " %")],
        ["resources", "harness CPU share", _fmt((r.harness_cpu_share or 0) * 100, " %")],
    ]  # fmt: skip
    rows += _mining_rows(m.mining)
    return rows


def _service_rows(v: Service | None) -> list[list[str]]:
    """What the score judges (metrics.service): the items due in the steady window and what became of them."""
    if v is None:
        return [["service", "not measured (no steady window, or a report older than schema 3)", "-"]]
    p99 = "unbounded" if v.p99_unbounded else _fmt(v.p99_all_ms, " ms", 0)
    stalls = ", ".join(f"t+{s.start_s:.1f}s for {s.length_s:.1f} s" for s in v.stalls[:5]) or "none"
    return [
        ["service", f"due / committed by the window's end + L (delivery){_in_flight(v)}",
         f"{v.due:,} / {v.committed_in_window:,} ({_fmt((v.delivery or 0) * 100, ' %')})"],
        ["service", f"within L = {v.latency_target_ms:g} ms, p99 over all due", f"{_fmt((v.within_target_share or 0) * 100, ' %', 2)}, {p99}"],
        ["service", f"stalls over {v.stall_threshold_s:g} s ({v.commit_source})", f"{_fmt(v.stalled_s, ' s')} ({stalls})"],
        ["service", "least links share, light load", f"{_fmt(v.least_links_share, '', 3)}, {_fmt(v.light_load)}"],
    ]  # fmt: skip


def _throughput_rows(t: Throughput | None, invalid: InvalidProofs) -> list[list[str]]:
    if not t:
        return [["throughput", "no load window", "-"]]
    lat = t.commit_latency
    return [
        ["throughput", "offered per s (all / valid)", f"{_fmt(t.offered_per_s)} / {_fmt(t.valid_offered_per_s)}"],
        ["throughput", "committed per s (commits seen in the window, whatever their due time)", _committed_text(t)],
        ["throughput", "fraction of ceiling", f"{_fmt((t.fraction_of_ceiling or 0) * 100, ' %', 2)} of {_fmt(t.ceiling_per_s, '/s', 0)}"],
        ["throughput", "valid sent / committed by the drain's end", f"{t.valid_submitted:,} / {t.valid_committed:,}"],
        ["throughput", "commit latency p50/p95/p99/max",
         " / ".join(_fmt(v, "", 0) for v in (lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.max_ms)) + " ms"],
        ["throughput", "generator send lateness p99", _fmt(t.generator.send_late_p99_ms, " ms")],
        ["throughput", "invalid sent / committed", f"{invalid.sent} / {invalid.committed}"],
    ]  # fmt: skip


def _in_flight(v: Service) -> str:
    """An interrupted run's service figures leave out what was still in flight at the stop: say so."""
    return f"; {v.in_flight_at_stop:,} in flight at the stop left out" if v.interrupted_at_s is not None else ""


def _committed_text(t: Throughput) -> str:
    """Commits seen per second, with the backlog at the window's edges that makes it differ from the
    valid offered rate (docs/metrics.md, ``committed_per_s``)."""
    shown = _fmt(t.committed_per_s)
    if t.backlog_at_start is None or t.backlog_at_end is None:
        return shown
    return f"{shown} (backlog {t.backlog_at_start:,} at the window's start, {t.backlog_at_end:,} at its end)"


def _mining_rows(mining: Mining | None) -> list[list[str]]:
    """Every single-number field of the mining section, in the order the type declares them."""
    if mining is None:
        return []
    values = ((name, getattr(mining, name)) for name in mining.__struct_fields__)
    return [["mining", name.replace("_", " "), _fmt(value, "", 3)] for name, value in values if not isinstance(value, (dict, list, Record))]


GROWTH_HEADERS = ["quantity", "slope per hour (95 % CI)", "threshold", "points", "flagged"]


def growth_rows(growth: Growth) -> list[list[str]]:
    """The growth verdict's table: one row per quantity (harness/metrics/growth.py)."""
    rows = []
    for s in growth.slopes:
        if s.slope_per_hour is None or s.ci_low_per_hour is None or s.ci_high_per_hour is None:
            slope = "-"
        else:
            slope = f"{s.slope_per_hour:+.3g} ± {(s.ci_high_per_hour - s.ci_low_per_hour) / 2:.3g} {s.unit}/h"
        rows.append([s.quantity, slope, f"{s.threshold_per_hour:g} {s.unit}/h", str(s.points), "FLAGGED" if s.flagged else "no"])
    return rows


def growth_text(growth: Growth) -> str:
    return f"growth verdict: {growth.verdict}: {growth.reason} (steady window {growth.window_s:.0f} s)"


def console(report: Report) -> str:
    parts = [tabulate(headline(report), tablefmt="plain"), "",
             tabulate(score_rows(report), headers=["part", "points", "detail"], tablefmt="simple"), "",
             tabulate(metric_rows(report), headers=["section", "metric", "value"], tablefmt="simple")]  # fmt: skip
    parts += ["", "score arithmetic:"] + [f"  {line}" for line in score_arithmetic(report.score)]
    parts += ["", "load applied:"] + [f"  {name:<17} {value}" for name, value in load_settings(report.profile)]
    parts += ["", "service level:"] + [f"  {name:<17} {value}" for name, value in service_level(report.profile)]
    if report.metrics.growth is not None:
        parts += ["", growth_text(report.metrics.growth), tabulate(growth_rows(report.metrics.growth), headers=GROWTH_HEADERS,
                                                                  tablefmt="simple")]  # fmt: skip
    if report.issues:
        parts += ["", "issues found:"] + [f"  - {finding_line(issue)}" for issue in report.issues]
    return "\n".join(parts)


def markdown(report: Report) -> str:
    lines = [f"## popbench: {report.run_id}", ""]
    lines += [f"- **{name}**: {value}" for name, value in headline(report)]
    lines += ["", "### Score", "", tabulate(score_rows(report), headers=["part", "points", "detail"], tablefmt="github")]
    lines += ["", "How the total is made:", ""] + [f"{i}. {line}" for i, line in enumerate(score_arithmetic(report.score), 1)]
    lines += ["", "### Load applied", "", tabulate(load_settings(report.profile), headers=["setting", "value"], tablefmt="github")]
    lines += ["", "### Service level", "", tabulate(service_level(report.profile), headers=["target", "value"], tablefmt="github")]
    lines += ["", "### Metrics", "", tabulate(metric_rows(report), headers=["section", "metric", "value"], tablefmt="github")]
    if report.metrics.growth is not None:
        lines += ["", "### Growth verdict", "", growth_text(report.metrics.growth), "",
                  tabulate(growth_rows(report.metrics.growth), headers=GROWTH_HEADERS, tablefmt="github")]  # fmt: skip
    if report.issues:
        lines += ["", "### Issues found", ""] + [f"- {finding_line(issue)}" for issue in report.issues]
    env = report.environment
    lines += ["", f"<sub>{env.cpu_model}, {env.cores_logical} cores, Python {env.python}, "
              f"commit {(env.git.commit or 'unknown')[:12]}; score formula v{report.score.version}</sub>", ""]  # fmt: skip
    return "\n".join(lines)
