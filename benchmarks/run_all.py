"""Run every benchmarks/bench_*.py with ``--fast``, one after another, and say where each result went.

Each benchmark's stdout and stderr go to ``reports/runs/bench-<UTC time>/<name>.log``, and a pyperf
benchmark also writes its results to ``<name>.json`` there (for ``python -m pyperf compare_to``); its
figures (the last lines of the log) are echoed here. A benchmark that fails or overruns its time limit is
reported and the next one still runs; the exit status is 1 if any failed. ``make bench`` calls this.

    .venv/bin/python benchmarks/run_all.py [--only wire] [--timeout-s 900]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPORTS_DIR = BENCHMARKS_DIR.parent / "reports" / "runs"
DEFAULT_TIMEOUT_S = 900.0  # per benchmark; a hung one is killed, with its children
ECHO_LINES = 40


@dataclass
class Outcome:
    name: str
    log_path: Path
    json_path: Path | None
    returncode: int | None  # None: killed at the time limit
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def discover(only: list[str] | None) -> list[Path]:
    """Every bench_*.py, by name; other helpers add theirs, so nothing is listed by hand."""
    scripts = sorted(BENCHMARKS_DIR.glob("bench_*.py"))
    if only:
        scripts = [script for script in scripts if any(word in script.stem for word in only)]
    return scripts


def uses_pyperf_runner(script: Path) -> bool:
    # Only a pyperf Runner understands -o; plain scripts would refuse the option.
    return "pyperf.Runner(" in script.read_text(errors="replace")


def command_for(script: Path, json_path: Path | None) -> list[str]:
    command = [sys.executable, str(script), "--fast"]
    return [*command, "-o", str(json_path)] if json_path else command


def run_one(script: Path, run_dir: Path, timeout_s: float) -> Outcome:
    log_path = run_dir / f"{script.stem}.log"
    json_path = run_dir / f"{script.stem}.json" if uses_pyperf_runner(script) else None
    start_s = time.monotonic()
    with log_path.open("w") as log:
        # A new session, so a benchmark that overruns is killed with every process it started.
        child = subprocess.Popen(command_for(script, json_path), stdout=log, stderr=subprocess.STDOUT,
                                 cwd=BENCHMARKS_DIR.parent, start_new_session=True)  # fmt: skip
        returncode = wait_or_kill(child, timeout_s)
    json_path = json_path if json_path and json_path.exists() else None
    return Outcome(script.stem, log_path, json_path, returncode, time.monotonic() - start_s)


def wait_or_kill(child: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return child.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as err:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if isinstance(err, KeyboardInterrupt):
            raise
        return None


def print_outcome(outcome: Outcome) -> None:
    status = {0: "ok", None: "KILLED at the time limit"}.get(outcome.returncode, f"FAILED ({outcome.returncode})")
    print(f"== {outcome.name}: {status} in {outcome.elapsed_s:.1f} s -> {outcome.log_path}")
    if outcome.json_path:
        print(f"   pyperf results -> {outcome.json_path}")
    lines = outcome.log_path.read_text(errors="replace").splitlines()
    for line in lines[-ECHO_LINES:]:
        print(f"   {line}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only benchmarks whose name contains this")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="time limit per benchmark")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    scripts = discover(args.only)
    run_dir = REPORTS_DIR / time.strftime("bench-%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"{len(scripts)} benchmarks, logs in {run_dir}")
    outcomes = []
    for script in scripts:
        outcomes.append(run_one(script, run_dir, args.timeout_s))
        print_outcome(outcomes[-1])
    failed = [outcome.name for outcome in outcomes if not outcome.ok]
    print(f"done: {len(outcomes) - len(failed)} ok, {len(failed)} failed {failed if failed else ''}".rstrip())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
