"""`popbench run` (one run, or `--repeat K` whole runs), `profiles` and `report`: the main job and its outputs.

Exit status of `popbench run` (harness.report.score.ExitStatus): 0 pass; 1 failed (grade F, a hard
gate, a run that failed, or a total below --min-score); 2 usage or config error; 3 not valid as a
measurement (the load generator fell behind); 130 interrupted (a partial report is still written).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import uvloop
from click.core import ParameterSource

from harness.cli.numeric import integer, profile_key
from harness.kinds import Topology
from harness.metrics import assemble as metrics
from harness.metrics.findings import findings
from harness.metrics.timeline import write_timeline
from harness.nemesis import with_nemesis
from harness.observe.prometheus import run_metrics_server
from harness.observe.service_live import service_writer
from harness.profile import Profile, apply_overrides, list_profiles, load_profile, scaling_note
from harness.regress.pyperf_export import PyperfExport
from harness.regress.render import append_step_summary, render_spread_table
from harness.regress.stats import ALPHA, smallest_p_value, smallest_useful_repeats
from harness.report import html, render
from harness.report.build import build_report, load_report, write_report
from harness.report.compare import write_repeat_files
from harness.report.schema import Report, Score
from harness.report.score import RunOutcome, exit_status
from harness.report.score import score as compute_score
from harness.run.phases import Run, RunData, new_run_id
from harness.run.repeat import RepeatRun, run_repeats
from popbench import crypto
from popbench.kinds import ConsensusKind, values

DEFAULT_PROFILE = "testnet-100"
REPORTS_DIR = Path("reports")
EXIT_BELOW_MIN_SCORE = 1  # `popbench compare`: a regression


def register(group: click.Group) -> None:
    group.add_command(run_command)
    group.add_command(profiles_command)
    group.add_command(report_command)


@click.command("run")
@click.option("--profile", "profile_name", default=DEFAULT_PROFILE, show_default=True, help="Profile name in profiles/ or a TOML path.")
@click.option("--nodes", type=profile_key("network.nodes"), help="Number of validator (or PoW) nodes.")
@click.option(
    "--duration",
    "duration_s",
    type=profile_key("run.duration_s"),
    help="Load window in seconds (warm-up and cool-down included; they shrink to leave at least half steady).",
)
@click.option("--rate", type=profile_key("workload.rate"), help="AGGREGATE proofs/s offered across all drivers (open loop; 0: no load).")
@click.option("--drivers", type=profile_key("workload.drivers"), help="Load-driver processes sharing the rate.")
@click.option(
    "--in-flight", "in_flight", type=profile_key("workload.in_flight"), help="Closed loop: proofs outstanding across all drivers."
)
@click.option("--consensus", type=click.Choice(values(ConsensusKind)), help="Which network to run.")
@click.option("--topology", type=click.Choice(values(Topology)), help="How nodes find each other.")
@click.option("--seed", type=profile_key("run.seed"), help="Seed for keys, topology and the workload plan.")
@click.option("--output", type=click.Path(path_type=Path), help="Run directory (default: reports/<run-id>).")
@click.option("--min-score", type=profile_key("score.min_score"), help="Exit 1 when the score (0-100) is below this.")
@click.option("--metrics-port", type=integer(0, 65535), help="Serve /metrics (Prometheus text format) on 127.0.0.1:PORT while it runs.")
@click.option("--nemesis", "nemesis_kind", type=click.Choice(["none", "random"]),
              help="random: draw faults from the seed within the profile's [nemesis] tolerance (docs/faults.md).")  # fmt: skip
@click.option(
    "--repeat",
    "repeats",
    type=integer(1),
    default=1,
    show_default=True,
    help="Run K whole runs into OUTPUT/run-1 ... run-K and summarise their spread (docs/regression.md).",
)
def run_command(profile_name: str, output: Path | None, min_score: float | None, repeats: int, nemesis_kind: str | None,
                metrics_port: int | None, **overrides: Any) -> None:  # fmt: skip
    """Fork a real network on this host, load it, measure it, score it, and write a report."""
    warning = repeat_warning(repeats, click.get_current_context().get_parameter_source("repeats"))
    if warning:
        click.echo(f"warning: {warning}", err=True)
    loaded = load_profile(profile_name)
    profile = apply_overrides(loaded, **overrides)
    if nemesis_kind is not None:
        profile = dataclasses.replace(profile, nemesis=dataclasses.replace(profile.nemesis, kind=nemesis_kind))
    profile = with_nemesis(profile)
    note = scaling_note(loaded.run, profile.run)
    run_id = new_run_id(profile)
    run_dir = output or REPORTS_DIR / run_id
    crypto.set_backend(profile.consensus.crypto)
    click.echo(f"popbench run {run_id}: {profile.network.nodes} {profile.network.consensus} nodes, profile {profile.name}")
    if note:
        click.echo(note)
    if repeats > 1:
        sys.exit(_run_repeats(profile, run_dir, run_id, repeats, min_score, metrics_port))
    data = uvloop.run(_execute(profile, run_dir, run_id, metrics_port))
    report = _finish(data)
    click.echo(render.console(report))
    click.echo(f"\nreport: {run_dir / 'report.json'}  summary: {run_dir / 'summary.md'}  page: {run_dir / html.HTML_NAME}")
    sys.exit(_exit_status(report, data, profile, min_score))


def repeat_warning(repeats: int, source: ParameterSource | None) -> str | None:
    """What a user asking for a repeat set too small for ``popbench compare`` to judge must hear before
    the runs, not after: below the smallest useful count every comparison of it is inconclusive. Only
    when --repeat was given: the default single run is not meant as a repeat set."""
    needed = smallest_useful_repeats(ALPHA)
    if source is not ParameterSource.COMMANDLINE or repeats >= needed:
        return None
    return (f"--repeat {repeats} is below {needed}, the fewest runs a side with which popbench compare's test "
            f"(two-sided Mann-Whitney U) can reach p < {ALPHA:g}: {repeats} vs {repeats} can do no better than "
            f"p = {smallest_p_value(repeats, repeats):.2g}, so a comparison of this set will be inconclusive "
            f"(exit 3) unless a figure moves beyond its fixed tolerance")  # fmt: skip


@contextlib.contextmanager
def interrupts_stop(run: Run) -> Iterator[None]:
    """SIGINT and SIGTERM interrupt ``run`` while it goes, and get their default handlers back after: uvloop
    leaves its own installed when the loop closes, so a later in-process command (tests, a sweep) saw it."""
    loop = asyncio.get_running_loop()
    stops = (signal.SIGINT, signal.SIGTERM)
    for signum in stops:
        loop.add_signal_handler(signum, run.interrupt, f"interrupted by {signal.Signals(signum).name}")
    try:
        yield
    finally:
        for signum in stops:
            loop.remove_signal_handler(signum)


async def _execute(profile: Profile, run_dir: Path, run_id: str, metrics_port: int | None = None) -> RunData:
    run = Run(profile, run_dir, run_id, lambda line: click.echo(line, err=False))
    with interrupts_stop(run):
        return await _execute_run(run, profile, run_dir, metrics_port)


async def _execute_run(run: Run, profile: Profile, run_dir: Path, metrics_port: int | None) -> RunData:
    run.sample_listeners.append(service_writer(run_dir, run.status_line, profile.slo))  # for popbench monitor RUN_DIR
    if metrics_port is None:
        return await run.execute()
    server = run_metrics_server(metrics_port, profile, run.status_line)  # binds now: a port in use fails before anything is forked
    run.sample_listeners.append(server.metrics.observe)  # fed by the collector's samples, as the report is
    await server.start()
    click.echo(f"metrics: http://127.0.0.1:{server.port}/metrics")
    try:
        return await run.execute()
    finally:
        server.close()


def _finish(data: RunData, to_step_summary: bool = True) -> Report:
    figures = metrics.compute(data)
    timeline = metrics.timeline(data)
    timeline_path = write_timeline(timeline, data.run_dir) if timeline else None
    result = compute_score(figures, data.profile, RunOutcome(failed=data.error, ended_early=data.interrupted))
    report = build_report(data, figures, result, findings(data, figures, timeline), timeline_path)
    write_report(report, data.run_dir)
    summary = render.markdown(report)
    (data.run_dir / "summary.md").write_text(summary)
    html.write_html(report, data.run_dir)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY") if to_step_summary else None  # a repeat set sums up once
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as sink:
            sink.write(summary)
    return report


def _exit_status(report: Report, data: RunData, profile: Profile, min_score: float | None) -> int:
    assert isinstance(report.score, Score)  # a fresh run is scored with the current formula
    threshold = min_score if min_score is not None else profile.score.min_score
    status, why = exit_status(report.score, threshold, interrupted=bool(data.interrupted))
    if why:
        click.echo(why, err=True)
    return int(status)


REPEATS_INTERRUPTED = 130  # as an interrupted single run


def _run_repeats(profile: Profile, directory: Path, set_id: str, repeats: int, min_score: float | None,
                 metrics_port: int | None = None) -> int:  # fmt: skip
    """K whole runs into DIR/run-1 ... run-K, then repeats.json and pyperf.json; the worst exit status of
    the runs (130 when interrupted: the finished repeats are kept and summarised)."""

    def run_once(run_dir: Path, run_id: str) -> RepeatRun:
        data = uvloop.run(_execute(profile, run_dir, run_id, metrics_port))
        report = _finish(data, to_step_summary=False)
        status = _exit_status(report, data, profile, min_score)
        click.echo(f"{run_id}: {report.status}, exit {status}  ({run_dir / 'report.json'})")
        return RepeatRun(run_dir=run_dir, exit_status=status, interrupted=bool(data.interrupted))

    outcome = run_repeats(directory, repeats, set_id, run_once, click.echo)
    if any(not run.interrupted for run in outcome.runs):
        side, summary_path, exported = write_repeat_files(directory, outcome.wall_s)
        click.echo(f"\n{len(side.repeat_set.run_ids)} repeats of {profile.name} in {outcome.wall_s:.0f} s: median and spread across them")
        click.echo(render_spread_table(side.repeat_set))
        for why in side.left_out:
            click.echo(f"left out {why}")
        pyperf_line = f"pyperf: {exported.path}" if isinstance(exported, PyperfExport) else f"no pyperf file: {exported}"
        click.echo(f"\nsummary: {summary_path}  {pyperf_line}")
        append_step_summary(f"### popbench run --repeat {repeats}: {profile.name}\n\n```\n{render_spread_table(side.repeat_set)}\n```\n")
    return REPEATS_INTERRUPTED if outcome.interrupted else max(run.exit_status for run in outcome.runs)


@click.command("profiles")
def profiles_command() -> None:
    """List the shipped run profiles, one line each."""
    for name, description in list_profiles():
        click.echo(f"{name:<20} {description}")


@click.command("report")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--markdown", is_flag=True, help="Print the GitHub-ready Markdown summary instead of tables.")
@click.option("--html", "write_page", is_flag=True, help="Also (re)write report.html in the run directory (docs/report.md).")
def report_command(path: Path, markdown: bool, write_page: bool) -> None:
    """Re-render a stored report (a report.json or its run directory)."""
    report = load_report(path)
    if write_page:
        page = html.write_html(report, path if path.is_dir() else path.parent)
        click.echo(f"page: {page}", err=True)
    click.echo(render.markdown(report) if markdown else render.console(report))
