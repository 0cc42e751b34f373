"""Named baselines: a repeat set saved as one small, versioned, text JSON file under
``reports/baselines/<name>/baseline.json`` at the checkout's root (tracked in git), loaded back by name
or path, listed. The directory is ``$POPBENCH_BASELINES`` when set, else found from the working
directory (:func:`default_baselines_dir`), so a CI step finds the baseline from anywhere in the checkout.

A baseline keeps only what a comparison needs: per watched figure one value per run, the units they were
measured in, the :class:`~harness.regress.verdict.RunMetadata`, and the run ids. Raw records stay in the
run directories.

Schema versions (bump BASELINE_SCHEMA_VERSION and note the change here; old versions are upgraded on load
by ``_UPGRADES``):
  1  schema_version, name, created_at, note, units, metadata, run_ids, samples.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from harness.regress.figures import WATCHED_FIGURES, FigureSpec
from harness.regress.verdict import RepeatSet, RunMetadata, check_like_for_like
from popbench.errors import ConfigError, HarnessError

BASELINE_SCHEMA_VERSION = 1
BASELINES_ENV = "POPBENCH_BASELINES"  # overrides where baselines live (a path, relative to the working directory)
BASELINES_SUBDIR = Path("reports") / "baselines"  # under the checkout's root
CHECKOUT_MARKERS = (".git", "pyproject.toml")  # what marks a checkout's root (.git is a file in a worktree)
BASELINE_FILE = "baseline.json"
RUN_REPORT_FILE = "report.json"  # what marks a directory as one run
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}  # version -> step to version + 1


class Baseline(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    schema_version: int
    name: str
    created_at: str  # UTC, ISO 8601
    note: str
    units: dict[str, str]  # figure -> unit when saved, so a later change of unit is visible
    metadata: RunMetadata
    run_ids: list[str]
    samples: dict[str, list[float]]

    def repeat_set(self) -> RepeatSet:
        return RepeatSet(metadata=self.metadata, run_ids=self.run_ids, samples=self.samples)


class BaselineInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One line of ``list_baselines``."""

    name: str
    path: str
    created_at: str
    runs: int
    profile: str
    git_commit: str | None


class RunSample(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a caller reads from one run's report: its id, its metadata and its figures (None: not measured)."""

    run_id: str
    metadata: RunMetadata
    figures: dict[str, float | None]


RunReader = Callable[[Path], RunSample]


# -- naming -------------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError("a baseline name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit", key=name)
    return name


def baseline_path(name: str, directory: Path | None = None) -> Path:
    return (directory or default_baselines_dir()) / check_name(name) / BASELINE_FILE


# -- where baselines live -----------------------------------------------------------------------------
def checkout_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: the working directory) that holds .git or
    pyproject.toml; ``start`` itself when none does (outside any checkout)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in CHECKOUT_MARKERS):
            return directory
    return here


def default_baselines_dir(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``$POPBENCH_BASELINES`` when set, else ``reports/baselines`` at the root of the checkout holding
    ``start``: a baseline is committed once at the root and must be found whichever directory a CI step
    (or a developer) runs in, which a path relative to the working directory is not."""
    override = (os.environ if environ is None else environ).get(BASELINES_ENV)
    return Path(override) if override else checkout_root(start) / BASELINES_SUBDIR


# -- repeat sets from run directories -----------------------------------------------------------------
def run_directories(directory: Path) -> list[Path]:
    """The runs of a repeat set: the directory itself when it holds a report, else its subdirectories
    that do, in name order with numbers compared as numbers (``run-2`` before ``run-10``)."""
    if (directory / RUN_REPORT_FILE).is_file():
        return [directory]
    runs = (
        sorted((child for child in directory.iterdir() if (child / RUN_REPORT_FILE).is_file()), key=_natural_key)
        if directory.is_dir()
        else []
    )
    if not runs:
        raise HarnessError(f"{directory}: no {RUN_REPORT_FILE} in it or in any of its subdirectories")
    return runs


def _natural_key(path: Path) -> list[int | str]:
    """``run-2`` before ``run-10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def repeat_set_from_runs(runs: Sequence[RunSample]) -> RepeatSet:
    """One repeat set from K runs of one plan; a HarnessError names every way a run differs from the first."""
    if not runs:
        raise HarnessError("a repeat set needs at least one run")
    first = runs[0]
    for run in runs[1:]:
        mismatches = check_like_for_like(first.metadata, run.metadata)
        if mismatches:
            what = "; ".join(f"{m.field}: {m.base!r} vs {m.new!r}" for m in mismatches)
            raise HarnessError(f"run {run.run_id} is not like run {first.run_id}: {what}")
    return RepeatSet(metadata=first.metadata, run_ids=[run.run_id for run in runs], samples=_gather_samples(runs))


def _gather_samples(runs: Iterable[RunSample]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.figures.items():
            if value is not None:
                samples.setdefault(name, []).append(float(value))
    return samples


def collect_repeat_set(directory: Path, read_run: RunReader) -> RepeatSet:
    """Read every run under ``directory`` with ``read_run`` (the caller knows how to read a report)."""
    return repeat_set_from_runs([read_run(run_dir) for run_dir in run_directories(directory)])


# -- save, load, list ---------------------------------------------------------------------------------
def make_baseline(name: str, repeat_set: RepeatSet, specs: Sequence[FigureSpec] = WATCHED_FIGURES, note: str = "") -> Baseline:
    """A baseline of the watched figures of ``repeat_set`` (figures no spec names are left out)."""
    watched = {spec.name: spec.unit for spec in specs if repeat_set.samples.get(spec.name)}
    return Baseline(
        schema_version=BASELINE_SCHEMA_VERSION, name=check_name(name), created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        note=note, units=watched, metadata=repeat_set.metadata, run_ids=list(repeat_set.run_ids),
        samples={figure: list(repeat_set.samples[figure]) for figure in watched},
    )  # fmt: skip


def save_baseline(baseline: Baseline, directory: Path | None = None) -> Path:
    """Write ``<directory>/<name>/baseline.json`` atomically (a reader never sees half a file); the
    directory defaults to :func:`default_baselines_dir`."""
    path = baseline_path(baseline.name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".json.tmp")
    scratch.write_bytes(orjson.dumps(msgspec.to_builtins(baseline), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    os.replace(scratch, path)
    return path


def resolve_baseline(name_or_path: str | Path, directory: Path | None = None) -> Path:
    """A path to a baseline file: an existing file, a directory holding one, or a name under ``directory``."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        return candidate / BASELINE_FILE
    return baseline_path(str(name_or_path), directory)


def load_baseline(name_or_path: str | Path, directory: Path | None = None) -> Baseline:
    directory = directory or default_baselines_dir()
    path = resolve_baseline(name_or_path, directory)
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError as err:
        known = ", ".join(info.name for info in list_baselines(directory)) or "none"
        raise HarnessError(f"{path}: no such baseline (saved under {directory}: {known})") from err
    except orjson.JSONDecodeError as err:
        raise HarnessError(f"{path}: not valid JSON: {err}") from err
    return decode_baseline(data, str(path))


def decode_baseline(data: object, source: str) -> Baseline:
    """A baseline from parsed JSON of any known schema version, upgraded to the current one."""
    if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
        raise HarnessError(f"{source}: not a baseline (no integer schema_version)")
    data = _upgrade(data, source)
    try:
        return msgspec.convert(data, Baseline)
    except msgspec.ValidationError as err:
        raise HarnessError(f"{source}: {err}") from err


def _upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    version = data["schema_version"]
    if version > BASELINE_SCHEMA_VERSION or (version < BASELINE_SCHEMA_VERSION and version not in _UPGRADES):
        raise HarnessError(f"{source}: cannot read baseline schema version {version} (this popbench reads 1-{BASELINE_SCHEMA_VERSION})")
    while data["schema_version"] < BASELINE_SCHEMA_VERSION:
        data = _UPGRADES[data["schema_version"]](data)
    return data


def list_baselines(directory: Path | None = None) -> list[BaselineInfo]:
    """Every readable baseline under ``directory`` (default: :func:`default_baselines_dir`), by name;
    unreadable ones are left out."""
    directory = directory or default_baselines_dir()
    found = []
    for path in sorted(directory.glob(f"*/{BASELINE_FILE}")) if directory.is_dir() else []:
        try:
            baseline = load_baseline(path)
        except HarnessError:
            continue
        found.append(_info(baseline, path))
    return found


def _info(baseline: Baseline, path: Path) -> BaselineInfo:
    return BaselineInfo(
        name=baseline.name, path=str(path), created_at=baseline.created_at, runs=len(baseline.run_ids),
        profile=baseline.metadata.profile, git_commit=baseline.metadata.git_commit,
    )  # fmt: skip


def units_changed(baseline: Baseline, specs: Mapping[str, FigureSpec]) -> list[str]:
    """Figures whose unit differs between the baseline and today's spec (their samples are not comparable)."""
    return [name for name, unit in baseline.units.items() if name in specs and specs[name].unit != unit]


def save_named_baseline(
    name: str, source: RepeatSet | Path, read_run: RunReader | None = None, *, directory: Path | None = None, note: str = ""
) -> Path:
    """``popbench baseline save NAME DIR`` in one call: ``source`` is a repeat set, or a directory of runs
    read with ``read_run``."""
    if isinstance(source, Path):
        if read_run is None:
            raise HarnessError(f"{source}: reading a directory of runs needs a run reader")
        source = collect_repeat_set(source, read_run)
    return save_baseline(make_baseline(name, source, note=note), directory)
