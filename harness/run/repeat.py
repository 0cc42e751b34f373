"""`popbench run --repeat K`: K whole runs of one plan, one after the other, into one directory.

Each repeat is a complete run (fresh processes, fresh databases, its own calibration) with the same
profile and seed, in ``DIR/run-1`` ... ``DIR/run-K``: whole runs are where a benchmark's variance lives
(docs/regression.md, "Method"). The caller says how to run one (``RunOnce``) and writes the set's summary
afterwards; this module owns the layout and the stopping rule: an interrupted run (Ctrl-C, SIGTERM) ends
the set, and the repeats finished before it are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from popbench.errors import ConfigError

RUN_DIR_PREFIX = "run-"


@dataclass(frozen=True)
class RepeatRun:
    """One finished repeat: where it is, the exit status ``popbench run`` would have given it, and whether
    it was interrupted (then the set stops after it)."""

    run_dir: Path
    exit_status: int
    interrupted: bool


RunOnce = Callable[[Path, str], RepeatRun]  # (run directory, run id) -> the finished repeat
Console = Callable[[str], None]


@dataclass(frozen=True)
class RepeatOutcome:
    runs: list[RepeatRun]  # in order; the last one may be interrupted
    interrupted: bool
    wall_s: float


def repeat_run_dirs(directory: Path, repeats: int) -> list[Path]:
    return [directory / f"{RUN_DIR_PREFIX}{index}" for index in range(1, repeats + 1)]


def check_fresh(directory: Path) -> None:
    """A repeat set starts in a directory without runs: stale runs of an earlier set would join this one."""
    stale = sorted(p.name for p in directory.glob(f"{RUN_DIR_PREFIX}*")) if directory.is_dir() else []
    if stale:
        raise ConfigError(f"already holds runs ({', '.join(stale[:5])}); choose a new --output directory", key=str(directory))


def run_repeats(directory: Path, repeats: int, set_id: str, run_once: RunOnce, console: Console) -> RepeatOutcome:
    """Run ``repeats`` whole runs into ``directory``; stop after an interrupted one (or a KeyboardInterrupt
    between runs), keeping those finished."""
    if repeats < 1:
        raise ConfigError("needs at least 1", key="--repeat")
    check_fresh(directory)
    directory.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    finished: list[RepeatRun] = []
    interrupted = False
    for index, run_dir in enumerate(repeat_run_dirs(directory, repeats), start=1):
        console(f"\n== repeat {index}/{repeats}: {run_dir}")
        try:
            run = run_once(run_dir, f"{set_id}-{index}")
        except KeyboardInterrupt:  # Ctrl-C outside a run's own handler (between runs, while writing a report)
            interrupted = True
            break
        finished.append(run)
        if run.interrupted:
            interrupted = True
            break
    if interrupted:
        console(f"interrupted: keeping the {sum(not run.interrupted for run in finished)} finished repeats")
    return RepeatOutcome(runs=finished, interrupted=interrupted, wall_s=time.monotonic() - began)
