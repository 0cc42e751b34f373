"""Reports as regression samples: one run's report read as a ``RunSample`` (its watched figures and the
metadata two sides must share), a side of ``popbench compare`` resolved from a run directory, a repeat
directory or a named baseline, and the summary ``popbench run --repeat`` writes (repeats.json, pyperf.json).

The statistics and verdicts live in harness/regress (docs/regression.md); this module only reads reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import orjson

from harness.regress.baselines import (
    BASELINE_FILE,
    RunSample,
    load_baseline,
    repeat_set_from_runs,
    run_directories,
    units_changed,
)  # fmt: skip
from harness.regress.figures import REPORT_FIELDS, WATCHED_FIGURES
from harness.regress.pyperf_export import PyperfExport, export_pyperf_suite
from harness.regress.stats import Spread, spread
from harness.regress.verdict import RepeatSet, RunMetadata, plan_digest
from harness.report.build import load_report
from harness.report.schema import Report
from popbench.errors import HarnessError

REPEATS_FILE = "repeats.json"
PYPERF_FILE = "pyperf.json"
REPEATS_SCHEMA_VERSION = 1


# -- one report --------------------------------------------------------------------------------------
def report_figures(report: Report, fields: dict[str, tuple[str, ...]] = REPORT_FIELDS) -> dict[str, float | None]:
    """Each watched figure of ``report`` (None: the run did not measure it), read along figures.REPORT_FIELDS."""
    return {name: _follow(report, path) for name, path in fields.items()}


def _follow(record: object, path: tuple[str, ...]) -> float | None:
    for attribute in path:
        record = getattr(record, attribute, None)
        if record is None:
            return None
    return float(record) if isinstance(record, int | float) else None


def report_metadata(report: Report) -> RunMetadata:
    """What two sides must share (RunMetadata), filled from the report's profile, deployment, environment and score."""
    profile, deployment, environment = report.profile, report.deployment, report.environment
    return RunMetadata(
        profile=profile.name, profile_digest=plan_digest(profile),
        nodes=deployment.nodes if deployment else profile.network.nodes,
        consensus=str(deployment.consensus if deployment else profile.network.consensus),
        topology=str(deployment.topology if deployment else profile.network.topology),
        crypto_backend=deployment.crypto_backend if deployment else None,
        workload_mode=str(profile.workload.mode), workload_rate=profile.workload.rate, workload_in_flight=profile.workload.in_flight,
        cpu_model=environment.cpu_model, cores_logical=environment.cores_logical, python=environment.python,
        popbench_version=environment.packages.get("popbench"), score_version=report.score.version,
        git_commit=environment.git.commit, git_dirty=environment.git.dirty,
    )  # fmt: skip


def run_sample(report: Report) -> RunSample:
    return RunSample(run_id=report.run_id, metadata=report_metadata(report), figures=report_figures(report))


def read_run(run_dir: Path) -> RunSample:
    """A RunReader for harness/regress: the run directory's (or file's) report as a RunSample."""
    return run_sample(load_report(run_dir))


# -- a repeat set from disk --------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedSide:
    """One side of a comparison: its repeat set, where it came from, the runs left out of it (and why), and
    anything else a reader should know (a baseline saved in units that have changed since)."""

    label: str
    repeat_set: RepeatSet
    run_dirs: list[Path]
    left_out: list[str]
    notes: list[str] = field(default_factory=list)


def load_runs(directory: Path) -> LoadedSide:
    """The complete runs under ``directory`` (a run directory, a report.json, or a directory of runs) as one
    repeat set; a partial or failed run is left out and named, since a shortened window is another plan."""
    included, samples, left_out = [], [], []
    for run_dir in run_directories(directory) if not directory.is_file() else [directory]:
        report = load_report(run_dir)
        if report.status != "complete":
            left_out.append(f"{run_dir.name}: {report.status} ({report.ended_early or 'see its report'})")
            continue
        included.append(run_dir)
        samples.append(run_sample(report))
    if not samples:
        raise HarnessError(f"{directory}: no complete run ({'; '.join(left_out)})")
    return LoadedSide(label=str(directory), repeat_set=repeat_set_from_runs(samples), run_dirs=included, left_out=left_out)


def load_side(name_or_path: str, baselines_dir: Path | None = None) -> LoadedSide:
    """A side of ``popbench compare``: a run directory or report.json, a directory of repeats, a baseline
    file or a directory holding one, or the name of a baseline saved under ``baselines_dir`` (default:
    ``default_baselines_dir()``, the checkout's reports/baselines)."""
    path = Path(name_or_path)
    is_baseline = (path.is_file() and path.name == BASELINE_FILE) or (path.is_dir() and (path / BASELINE_FILE).is_file())
    if path.exists() and not is_baseline:
        return load_runs(path)
    baseline = load_baseline(name_or_path, baselines_dir)
    label = f"baseline {baseline.name}"
    changed = units_changed(baseline, {spec.name: spec for spec in WATCHED_FIGURES})
    notes = [f"{label}: {name} was saved in another unit ({baseline.units[name]})" for name in changed]
    return LoadedSide(label=label, repeat_set=baseline.repeat_set(), run_dirs=[], left_out=[], notes=notes)


# -- what `popbench run --repeat` writes -------------------------------------------------------------
class FigureSpread(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    label: str
    unit: str
    samples: list[float]  # one per run that measured it, in run order
    spread: Spread


class RepeatSummary(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """repeats.json: each watched figure's median and spread across the complete runs of one repeat set."""

    schema_version: int
    runs: list[str]  # run directories, relative to the set's directory
    run_ids: list[str]
    left_out: list[str]  # runs not in the set (partial or failed), with why
    wall_s: float | None  # from the first run's start to the last run's end, when the caller timed it
    metadata: RunMetadata
    figures: list[FigureSpread]


def repeat_summary(side: LoadedSide, directory: Path, wall_s: float | None = None) -> RepeatSummary:
    figures = [
        FigureSpread(name=spec.name, label=spec.label, unit=spec.unit, samples=values, spread=spread(values))
        for spec in WATCHED_FIGURES if (values := side.repeat_set.samples.get(spec.name))
    ]  # fmt: skip
    return RepeatSummary(
        schema_version=REPEATS_SCHEMA_VERSION, runs=[os.path.relpath(run, directory) for run in side.run_dirs],
        run_ids=side.repeat_set.run_ids, left_out=side.left_out, wall_s=wall_s, metadata=side.repeat_set.metadata, figures=figures,
    )  # fmt: skip


def write_repeat_files(directory: Path, wall_s: float | None = None) -> tuple[LoadedSide, Path, PyperfExport | str]:
    """Read every complete run under ``directory``; write repeats.json and the pyperf suite (pyperf.json).
    Returns the set, the summary's path, and the export (or why there is none)."""
    side = load_runs(directory)
    summary_path = directory / REPEATS_FILE
    scratch = summary_path.with_suffix(".json.tmp")
    summary = repeat_summary(side, directory, wall_s)
    scratch.write_bytes(orjson.dumps(msgspec.to_builtins(summary), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    os.replace(scratch, summary_path)
    try:
        exported: PyperfExport | str = export_pyperf_suite(side.repeat_set, directory / PYPERF_FILE)
    except HarnessError as err:
        exported = str(err)
    return side, summary_path, exported
