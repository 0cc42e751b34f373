"""The real runner of ``popbench sweep``: one ``popbench run`` per point, read back into a RunOutcome.

Each point is a child process, ``popbench run --profile DIR/profile.toml --output DIR`` (of the sweep's
own interpreter), in its own session: the same command a user types, so the run builds its report exactly as ``popbench
run`` does, with a fresh set of node processes, file descriptors and memory per run, and a run whose
harness fails cannot take the sweep down with it. The profile it runs is the sweep's profile with this
point's settings written in (nodes, rate, open or closed loop, the closed loop's in-flight count, a seed
per repeat, the sweep's duration), saved beside the run as ``profile.toml`` so each run directory says
exactly what ran. The run's console goes to ``console.log`` there.

Ctrl-C: the child is in its own session, so the terminal's SIGINT reaches only the sweep; the runner
forwards one SIGINT (the run stops its body and still writes its partial report, as ``popbench run``
does), waits for it, and raises KeyboardInterrupt so the sweep keeps what finished. A second Ctrl-C is
forwarded too: ``popbench run`` then kills every process of the run at once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.capacity.points import RunKey, RunOutcome, failed_outcome
from harness.kinds import WorkloadMode
from harness.metrics.results import Cost, Metrics, Service
from harness.profile import Profile, apply_overrides, load_profile, profile_from_dict, profile_path
from harness.report.build import load_report
from harness.report.schema import Report
from popbench.errors import ConfigError, HarnessError

POPBENCH_MAIN = "from harness.cli.main import main; main(prog_name='popbench')"  # `popbench` of this interpreter
RUNS_DIR = "runs"
PROFILE_FILE = "profile.toml"
CONSOLE_FILE = "console.log"
IN_FLIGHT_S = 0.4  # closed loop: proofs outstanding = rate x 0.4 s (the shipped capacity profile: 2,000 for 5,000/s)
INTERRUPT_WAIT_S = 300.0  # after Ctrl-C, how long the run may take to stop and write its partial report
EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130  # harness/cli/run.py
CONSOLE_TAIL_LINES = 5
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class RunSettings:
    """What every run of a sweep shares: the profile and the sweep's own overrides of it."""

    profile: str  # a profile name in profiles/ or a TOML path
    duration_s: float | None = None  # the load window of every run (None: the profile's)
    seed: int | None = None  # the base seed; repeat k runs with seed + k (None: the profile's)

    def describe(self) -> dict[str, str]:
        """For sweep.json: a resume must run the same profile with the same overrides."""
        return {"profile": self.profile, "duration_s": _text(self.duration_s), "seed": _text(self.seed)}


@dataclass
class ProcessRunner:
    """A :class:`~harness.capacity.points.Runner` that performs every run as a ``popbench run`` child."""

    settings: RunSettings
    output: Path  # the sweep's directory; runs go to output/runs/n{N}-r{rate}-{mode}-{repeat}
    python: str = sys.executable
    console: Callable[[str], None] = field(default=lambda line: None)

    def __post_init__(self) -> None:
        self.base = profile_dict(self.settings.profile)
        self.window = run_window(self.settings)

    def run_dir(self, key: RunKey) -> Path:
        return self.output / RUNS_DIR / f"n{key.nodes}-r{key.rate_per_s:g}-{key.mode.value}-{key.repeat}"

    def run(self, nodes: int, rate: float, mode: WorkloadMode, repeat_index: int) -> RunOutcome:
        key = RunKey(nodes=nodes, rate_per_s=rate, mode=mode, repeat=repeat_index)
        run_dir = self.run_dir(key)
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a run cut short by an earlier Ctrl-C: it is run again from scratch
        run_dir.mkdir(parents=True)
        profile_file = run_dir / PROFILE_FILE
        text = point_profile(self.base, self.window, self.settings, key)
        profile_from_toml(text)  # refused here, naming the key, rather than by the child
        profile_file.write_text(text)
        began = time.monotonic()
        status = self._perform(profile_file, run_dir)
        wall_s = time.monotonic() - began
        if status == EXIT_INTERRUPTED:
            raise KeyboardInterrupt  # the run was interrupted: a partial run is no measurement of this point
        if status == EXIT_BAD_INPUT:
            raise ConfigError(f"popbench run refused the point's profile ({profile_file}): {console_tail(run_dir)}")
        return read_outcome(key, run_dir, status, wall_s)

    def _perform(self, profile_file: Path, run_dir: Path) -> int:
        command = [self.python, "-c", POPBENCH_MAIN, "run", "--profile", str(profile_file), "--output", str(run_dir)]
        with (run_dir / CONSOLE_FILE).open("wb") as log:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                return child.wait()
            except KeyboardInterrupt:
                self.console(f"interrupted: stopping the run under way ({run_dir.name}); it writes its partial report")
                return stop_child(child)
            except BaseException:
                child.kill()  # the sweep itself is failing: leave no run behind it
                child.wait()
                raise


def stop_child(child: subprocess.Popen[bytes]) -> int:
    """Forward SIGINT to the run and wait for it to write its partial report; a second Ctrl-C is
    forwarded too (the run then kills all its processes at once) and the wait goes on."""
    child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + INTERRUPT_WAIT_S
    while True:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.0))
            return EXIT_INTERRUPTED
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            return EXIT_INTERRUPTED


# -- the point's profile ----------------------------------------------------------------------------------
def profile_dict(name_or_path: str) -> dict[str, Any]:
    """The profile's TOML as data (validated once as a profile, so a bad one is refused before any run)."""
    load_profile(name_or_path)
    path = profile_path(name_or_path)
    data = tomllib.loads(path.read_text())
    data.setdefault("name", path.stem)
    return data


def run_window(settings: RunSettings) -> dict[str, float]:
    """The run section's window under the sweep's --duration, scaled as ``popbench run --duration`` scales
    it (warm-up and cool-down shrink with a shorter window); empty when the profile's window stands."""
    if settings.duration_s is None:
        return {}
    run = apply_overrides(load_profile(settings.profile), duration_s=settings.duration_s).run
    return {"duration_s": run.duration_s, "warmup_s": run.warmup_s, "cooldown_s": run.cooldown_s}


def point_profile(base: dict[str, Any], window: dict[str, float], settings: RunSettings, key: RunKey) -> str:
    """The sweep's profile with this point's settings and the sweep's window written in, as TOML text."""
    data = {name: dict(value) if isinstance(value, dict) else value for name, value in base.items()}
    data.setdefault("network", {})["nodes"] = key.nodes
    load = data.setdefault("workload", {})
    load["mode"] = key.mode.value
    load["rate"] = key.rate_per_s  # open loop: the offered rate; closed loop: sizes the pool of proofs
    if key.mode is WorkloadMode.CLOSED:
        load["in_flight"] = max(math.ceil(key.rate_per_s * IN_FLIGHT_S), 1)
    run = data.setdefault("run", {})
    run.update(window)
    run["seed"] = (run.get("seed", 1) if settings.seed is None else settings.seed) + key.repeat
    text = to_toml(data)
    if tomllib.loads(text) != data:
        raise HarnessError(f"the point's profile does not survive its TOML round trip: {data}")
    return text


def profile_from_toml(text: str) -> Profile:
    return profile_from_dict(tomllib.loads(text), "sweep point")


def to_toml(data: dict[str, Any]) -> str:
    """A profile's data as TOML: top-level values first (faults as an array of inline tables), then one
    table per section; nested tables (the latency matrix) inline."""
    top = [f"{_key(name)} = {_value(value)}" for name, value in data.items() if not isinstance(value, dict)]
    tables = [f"\n[{_key(name)}]\n" + "".join(f"{_key(k)} = {_value(v)}\n" for k, v in value.items())
              for name, value in data.items() if isinstance(value, dict)]  # fmt: skip
    return "\n".join(top) + "\n" + "".join(tables)


def _key(name: str) -> str:
    return name if BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise HarnessError(f"cannot write {value!r} ({type(value).__name__}) as TOML")


# -- reading the run back -----------------------------------------------------------------------------------
def read_outcome(key: RunKey, run_dir: Path, exit_status: int, wall_s: float) -> RunOutcome:
    """The run's report.json as a RunOutcome; a run without a report, or that failed, measured nothing."""
    try:
        report = load_report(run_dir)
    except HarnessError as err:
        return failed_outcome(key, f"no report (exit status {exit_status}): {console_tail(run_dir) or err}", wall_s)
    if report.status == "failed":
        return failed_outcome(key, f"the run failed: {report.ended_early or console_tail(run_dir)}", wall_s)
    if not report.score.passed_safety:
        return failed_outcome(key, "safety violated: nodes committed different blocks at one height", wall_s)
    return outcome_from_report(key, report, wall_s)


def outcome_from_report(key: RunKey, report: Report, wall_s: float) -> RunOutcome:
    """The figures the verdict and the model read, from the report's service, cost and stability sections.

    Offered is the valid items due per second in the steady window (an invalid proof is refused by
    design, so it is no work the network owes); a figure the report does not hold stays None."""
    metrics = report.metrics
    service, cost, throughput = metrics.service, metrics.cost, metrics.throughput
    window_s = service.steady_end_s - service.steady_start_s if service is not None else 0.0
    return RunOutcome(
        key=key,
        offered_per_s=service.due / window_s if service is not None and window_s > 0 else 0.0,
        committed_per_s=throughput.committed_per_s if throughput is not None else 0.0,
        p99_ms=service.p99_all_ms if service is not None else None,
        within_target_share=service.within_target_share if service is not None else None,
        stalled_share=service.stalled_share if service is not None else None,
        links_up_min_share=service.least_links_share if service is not None else None,
        crashed_nodes=metrics.stability.unplanned_crashes,
        generator_fell_behind=throughput.generator.fell_behind if throughput is not None else False,
        proofs_per_block=proofs_per_block(cost),
        cpu_ms_per_proof=cost.node_cpu_ms_per_proof if cost is not None else None,
        cpu_ms_per_block=cost.node_cpu_ms_per_block if cost is not None else None,
        messages_per_block=dict(cost.messages_per_block_by_type) if cost is not None else {},
        wall_s=wall_s,
        notes=run_notes(key.mode, metrics, service, cost),
    )


def proofs_per_block(cost: Cost | None) -> float | None:
    if cost is None or cost.blocks_committed <= 0:
        return None
    return cost.proofs_committed / cost.blocks_committed


def run_notes(mode: WorkloadMode, metrics: Metrics, service: Service | None, cost: Cost | None) -> list[str]:
    """What the report left unmeasured, or warned of, that bears on the verdict or the fit."""
    notes = []
    if service is None:
        notes.append("not measured: service (no steady window)")
    elif service.stalled_share is None:
        notes.append("not measured: stalls (no commit times)")
    if metrics.throughput is None:
        notes.append("not measured: throughput")
    elif mode is WorkloadMode.CLOSED and metrics.throughput.plan_exhausted:  # an open loop sends its whole plan by design
        notes.append("the closed-loop pool ran dry before the window ended: committed/s is a floor (raise --probe-rate)")
    if cost is None:
        notes.append("not measured: CPU cost (no samples bracket the steady window)")
    return notes


def console_tail(run_dir: Path) -> str:
    """The last lines of the run's console, for an error message."""
    try:
        lines = (run_dir / CONSOLE_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-CONSOLE_TAIL_LINES:])


def _text(value: float | int | None) -> str:
    return "" if value is None else f"{value:g}"
