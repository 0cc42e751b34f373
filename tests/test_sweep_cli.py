"""`popbench sweep` end to end: on the fake network through the runner seam, and one real tiny sweep.

The fake runs (tests/capacity_fake.py: a known capacity curve) check the command's files, tables,
validation, planner, resume and flag errors in a second. The real sweep forks real nodes through
``popbench run`` children, so the reader of report.json is checked on real reports, and Ctrl-C is
delivered to a real sweep in the middle of a real run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import psutil
import pytest
from click.testing import CliRunner, Result

from harness.capacity.points import RunKey, Runner, RunOutcome, Shortfall, Slo, judge
from harness.capacity.runner import (
    CONSOLE_FILE,
    PROFILE_FILE,
    RUNS_DIR,
    RunSettings,
    point_profile,
    profile_dict,
    profile_from_toml,
    run_window,
)
from harness.capacity.search import SizeStatus
from harness.capacity.store import SWEEP_FILE, SweepStatus, load_sweep
from harness.capacity.sweep import PAGE_FILE
from harness.cli.main import PopbenchGroup
from harness.cli.sweep import make_sweep_command
from harness.kinds import WorkloadMode
from harness.profile import apply_overrides, list_profiles, load_profile
from harness.report.build import load_report
from tests.capacity_fake import FakeNetwork

SWEEP_TIMEOUT_S = 300.0
POLL_S = 0.1
FAKE_ARGS = ["--profile", "capacity", "--nodes", "4,8,16,64", "--target-rate", "50", "--fit-max-nodes", "16", "--plan", "1000@10,200@5"]

TINY_PROFILE = """
name = "tiny-sweep"
description = "test sweep"

[network]
nodes = 4

[workload]
rate = 100.0

[run]
duration_s = 4.0
warmup_s = 1.0
cooldown_s = 0.5
status_interval_s = 0.5
drain_s = 3.0
seed = 3
"""


class FakeFactory:
    """The seam: hands the command a fake network instead of real runs, and remembers what it made."""

    def __init__(self, fake: Runner) -> None:
        self.fake = fake
        self.settings: list[RunSettings] = []

    def __call__(self, settings: RunSettings, output: Path, console: object) -> Runner:
        self.settings.append(settings)
        return self.fake


def sweep(fake: Runner, *args: str) -> Result:
    """``popbench sweep ARGS`` through the same group as the shipped command (its error handling too)."""
    group = PopbenchGroup("popbench")
    group.add_command(make_sweep_command(FakeFactory(fake)))
    return CliRunner().invoke(group, ["sweep", *args], catch_exceptions=False)


# -- on the fake network -----------------------------------------------------------------------------------
def test_a_fake_sweep_writes_its_files_tables_validation_and_plan(tmp_path: Path) -> None:
    fake = FakeNetwork()
    result = sweep(fake, *FAKE_ARGS, "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    stored = load_sweep(tmp_path / SWEEP_FILE)
    assert stored.status is SweepStatus.COMPLETE
    assert {r.key for r in stored.records()} == set(fake.calls)
    assert [c.status for c in stored.findings.capacities] == [SizeStatus.FOUND] * 4
    assert stored.findings.largest is not None and stored.findings.largest.nodes == 64  # the fake's 4000/N keeps 50/s up to N=80
    assert stored.model is not None and stored.plan.run_settings["profile"] == "capacity"
    page = (tmp_path / PAGE_FILE).read_text()
    assert page.count("<svg") == 2 and "Held-out validation" in page and "Planner" in page
    out = result.output
    assert "running N=4 closed 5000/s #0" in out and "ETA" in out  # the announcement before a run, progress after it
    assert "highest sustained/s" in out and "held-out validation (fitted on N <= 16)" in out
    assert "1000 validators at 10 proofs/s" in out and "UNTRUSTWORTHY beyond N = 128" in out
    assert "largest size sustaining 50 proofs/s: N >= 64 (the largest size measured), p99 " in out  # 64 sustains 62.5/s: no knee seen


def test_a_finished_sweep_answers_new_questions_on_resume_without_running_anything(tmp_path: Path) -> None:
    assert sweep(FakeNetwork(), *FAKE_ARGS, "--output", str(tmp_path)).exit_code == 0
    again = FakeNetwork()
    result = sweep(again, *FAKE_ARGS[:-2], "--plan", "500@20", "--fit-max-nodes", "8", "--resume", "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert again.calls == [] and "500 validators at 20 proofs/s" in result.output and "fitted on N <= 8" in result.output


def test_the_planner_answers_at_the_batch_asked_for(tmp_path: Path) -> None:
    result = sweep(FakeNetwork(), *FAKE_ARGS, "--plan-batch", "5", "--cores-per-host", "16", "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "5 proofs per block, as asked" in result.output and "host(s) of 16 cores" in result.output


def test_a_listed_rate_grid_runs_exactly_those_rates(tmp_path: Path) -> None:
    fake = FakeNetwork()
    result = sweep(fake, "--profile", "capacity", "--nodes", "40,80", "--rates", "50,80,120", "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert {(k.nodes, k.rate_per_s, k.mode) for k in fake.calls} == {
        (n, r, WorkloadMode.OPEN) for n in (40, 80) for r in (50.0, 80.0, 120.0)
    }
    capacities = {c.nodes: c for c in load_sweep(tmp_path / SWEEP_FILE).findings.capacities}
    assert (capacities[40].status, capacities[40].sustained_rate_per_s, capacities[40].failed_rate_per_s) == (SizeStatus.GRID, 80.0, 120.0)
    assert (capacities[80].status, capacities[80].sustained_rate_per_s, capacities[80].failed_rate_per_s) == (SizeStatus.GRID, 50.0, 80.0)


def test_an_interrupted_sweep_exits_130_and_resume_completes_it_without_rerunning(tmp_path: Path) -> None:
    whole = FakeNetwork()
    assert sweep(whole, *FAKE_ARGS, "--output", str(tmp_path / "whole")).exit_code == 0

    cut = FakeNetwork(interrupt_after=7)
    interrupted = sweep(cut, *FAKE_ARGS, "--output", str(tmp_path / "cut"))
    assert interrupted.exit_code == 130, interrupted.output
    assert "continue with --resume" in interrupted.output
    kept = load_sweep(tmp_path / "cut" / SWEEP_FILE)
    assert kept.status is SweepStatus.INTERRUPTED and len(kept.records()) == 7
    assert (tmp_path / "cut" / PAGE_FILE).exists()  # the page shows what finished

    refused = sweep(FakeNetwork(), *FAKE_ARGS, "--output", str(tmp_path / "cut"))
    assert refused.exit_code == 2 and "--resume" in refused.output

    rest = FakeNetwork()
    resumed = sweep(rest, *FAKE_ARGS, "--resume", "--output", str(tmp_path / "cut"))
    assert resumed.exit_code == 0, resumed.output
    assert "(stored)" in resumed.output
    assert not set(rest.calls) & set(cut.calls) and len(rest.calls) == len(whole.calls) - 7
    assert load_sweep(tmp_path / "cut" / SWEEP_FILE).findings == load_sweep(tmp_path / "whole" / SWEEP_FILE).findings


class TerminatedAfter:
    """Sends this process SIGTERM (a CI job's timeout) at the start of run number ``after`` + 1."""

    def __init__(self, fake: FakeNetwork, after: int) -> None:
        self.fake, self.after = fake, after

    def run(self, nodes: int, rate: float, mode: WorkloadMode, repeat_index: int) -> RunOutcome:
        if len(self.fake.calls) == self.after:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises KeyboardInterrupt here, as Ctrl-C would
        return self.fake.run(nodes, rate, mode, repeat_index)


def test_sigterm_stops_a_sweep_like_ctrl_c_and_leaves_the_default_handler(tmp_path: Path) -> None:
    fake = FakeNetwork()
    result = sweep(TerminatedAfter(fake, after=4), *FAKE_ARGS, "--output", str(tmp_path))
    assert result.exit_code == 130, result.output
    assert load_sweep(tmp_path / SWEEP_FILE).status is SweepStatus.INTERRUPTED and len(fake.calls) == 4
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_budget_stops_the_search_and_says_so(tmp_path: Path) -> None:
    fake = FakeNetwork()
    result = sweep(fake, *FAKE_ARGS, "--max-runs", "3", "--output", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert len(fake.calls) == 3
    stored = load_sweep(tmp_path / SWEEP_FILE)
    assert stored.status is SweepStatus.BUDGET and "--max-runs 3" in (stored.findings.stopped or "")
    assert "sweep: budget" in result.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--nodes", "4,x"], "--nodes"),
        (["--nodes", "0,4"], "--nodes"),
        (["--rates", "50,-1"], "--rates"),
        (["--plan", "1000at10"], "--plan"),
        (["--tolerance", "0.9"], "--tolerance"),
        (["--repeats", "0"], "--repeats"),
        (["--max-minutes", "0"], "--max-minutes"),
        (["--profile", "no-such-profile"], "--profile"),
        (["--duration", "0"], "--duration"),
    ],
)
def test_bad_input_exits_2_naming_the_flag(tmp_path: Path, args: list[str], flag: str) -> None:
    defaults = {"--profile": "capacity", "--nodes": "4,8"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [item for key, value in {**defaults, **given}.items() for item in (key, value)]
    fake = FakeNetwork()
    result = sweep(fake, *argv, "--output", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert flag in result.output
    assert fake.calls == [] and not (tmp_path / SWEEP_FILE).exists()


def test_resume_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    assert sweep(FakeNetwork(), "--profile", "capacity", "--nodes", "4,8", "--output", str(tmp_path)).exit_code == 0
    refused = sweep(FakeNetwork(), "--profile", "capacity", "--nodes", "4,8", "--duration", "12", "--resume", "--output", str(tmp_path))
    assert refused.exit_code == 2 and "plan.run_settings" in refused.output


# -- one real tiny sweep ------------------------------------------------------------------------------------
def popbench(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "popbench"), *args]


def wait_for_text(path: Path, needle: str, proc: subprocess.Popen[str], timeout_s: float = SWEEP_TIMEOUT_S) -> None:
    """Poll a run's console.log until it holds ``needle`` (the run announces each phase there)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(POLL_S)  # polling a file another process writes; the deadline bounds it
    text = path.read_text(errors="replace") if path.exists() else "(no console.log)"
    raise AssertionError(f"never saw {needle!r} in {path} (sweep exit {proc.poll()}):\n{text[-3000:]}")


def test_a_real_tiny_sweep_reads_real_reports_and_ctrl_c_keeps_what_finished(tmp_path: Path) -> None:
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_PROFILE)
    output = tmp_path / "sweep"
    common = ["sweep", "--profile", str(profile), "--nodes", "4", "--probe-rate", "3000", "--output", str(output)]
    done = subprocess.run(popbench(*common, "--max-runs", "2"), capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    stored = load_sweep(output / SWEEP_FILE)
    assert stored.status is SweepStatus.BUDGET and len(stored.records()) == 2, done.stdout
    probe, first = sorted(stored.records(), key=lambda r: r.key.mode is WorkloadMode.OPEN)
    assert probe.key.mode is WorkloadMode.CLOSED and first.key.mode is WorkloadMode.OPEN
    for record in (probe, first):
        outcome = record.outcome
        run_dir = output / RUNS_DIR / f"n4-r{record.key.rate_per_s:g}-{record.key.mode.value}-0"
        assert outcome.error is None and outcome.committed_per_s > 0, outcome
        assert load_profile(str(run_dir / PROFILE_FILE)).workload.mode is record.key.mode
        metrics = load_report(run_dir).metrics
        assert metrics.service is not None and metrics.throughput is not None
        assert outcome.committed_per_s == metrics.throughput.committed_per_s
        assert (outcome.p99_ms, outcome.within_target_share) == (metrics.service.p99_all_ms, metrics.service.within_target_share)
        assert outcome.stalled_share == metrics.service.stalled_share is not None and outcome.links_up_min_share == 1.0
        assert outcome.wall_s > 0
        cost = metrics.cost
        assert cost is not None and not [note for note in outcome.notes if note.startswith("not measured")], outcome
        assert outcome.cpu_ms_per_proof == cost.node_cpu_ms_per_proof and outcome.cpu_ms_per_proof is not None
        assert outcome.cpu_ms_per_block == cost.node_cpu_ms_per_block and outcome.messages_per_block == cost.messages_per_block_by_type
        assert outcome.proofs_per_block == cost.proofs_committed / cost.blocks_committed and outcome.proofs_per_block >= 1
        assert outcome.messages_per_block.get("Prepare", 0) > 0
    assert load_profile(str(output / RUNS_DIR / "n4-r3000-closed-0" / PROFILE_FILE)).workload.in_flight == 1200
    assert first.key.rate_per_s == pytest.approx(0.7 * probe.outcome.committed_per_s, rel=0.01)
    assert first.outcome.offered_per_s > 0 and first.outcome.within_target_share is not None
    assert first.outcome.notes == []  # an open loop measured everything and its plan running out is by design
    assert (output / PAGE_FILE).exists() and "highest sustained/s" in done.stdout

    # Resume; Ctrl-C in the middle of the next run's window: that run writes its partial report, the sweep keeps both runs.
    sweeping = subprocess.Popen(
        popbench(*common, "--resume", "--max-runs", "3"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    known = {path.name for path in (output / RUNS_DIR).iterdir()}
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while not (fresh := {path.name for path in (output / RUNS_DIR).iterdir()} - known) and time.monotonic() < deadline:
        assert sweeping.poll() is None, sweeping.communicate()[0]
        time.sleep(POLL_S)  # waiting for the sweep to create the next run's directory; the deadline bounds it
    assert fresh, "the resumed sweep started no run"
    third = output / RUNS_DIR / fresh.pop()
    wait_for_text(third / CONSOLE_FILE, "load window", sweeping)
    sweeping.send_signal(signal.SIGINT)
    out, _ = sweeping.communicate(timeout=SWEEP_TIMEOUT_S)
    assert sweeping.returncode == 130, out
    assert "continue with --resume" in out and "Traceback" not in out
    kept = load_sweep(output / SWEEP_FILE)
    assert kept.status is SweepStatus.INTERRUPTED and {r.key for r in kept.records()} == {probe.key, first.key}
    assert load_report(third).status == "partial"
    assert not processes_of(third)


def processes_of(run_dir: Path) -> list[psutil.Process]:
    """Live processes of a run: its children are forks of `popbench run`, so they carry its --output."""
    return [proc for proc in psutil.process_iter(["cmdline", "status"])
            if str(run_dir) in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE]  # fmt: skip


# -- the runner's pieces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [name for name, _ in list_profiles()])
def test_every_shipped_profile_becomes_a_point_profile_with_the_points_settings(name: str) -> None:
    settings = RunSettings(profile=name, duration_s=12.0, seed=40)
    base, window = profile_dict(name), run_window(settings)
    key = RunKey(nodes=max(load_profile(name).network.nodes, 8), rate_per_s=250.0, mode=WorkloadMode.CLOSED, repeat=2)
    point = profile_from_toml(point_profile(base, window, settings, key))
    original = apply_overrides(load_profile(name), duration_s=12.0)
    assert (point.network.nodes, point.workload.mode, point.workload.rate, point.workload.in_flight) == (
        key.nodes,
        WorkloadMode.CLOSED,
        250.0,
        100,
    )
    assert (point.run.duration_s, point.run.warmup_s, point.run.cooldown_s, point.run.seed) == (
        12.0,
        original.run.warmup_s,
        original.run.cooldown_s,
        42,
    )
    assert (point.consensus, point.slo, point.faults, point.network.latency_ms) == (
        original.consensus,
        original.slo,
        original.faults,
        original.network.latency_ms,
    )


@pytest.mark.parametrize(
    ("missing", "shortfall"),
    [
        ({"within_target_share": None}, Shortfall.LATENCY),
        ({"stalled_share": None}, Shortfall.STALL),
        ({"links_up_min_share": None}, Shortfall.LINKS),
    ],
)
def test_a_share_the_run_did_not_measure_is_a_shortfall_never_a_pass(missing: dict[str, object], shortfall: Shortfall) -> None:
    measured = RunOutcome(key=RunKey(nodes=4, rate_per_s=100.0, mode=WorkloadMode.OPEN), offered_per_s=95.0, committed_per_s=95.0,
                          p99_ms=80.0, within_target_share=1.0, stalled_share=0.0, links_up_min_share=1.0)  # fmt: skip
    assert judge(measured, Slo()).sustained
    verdict = judge(msgspec.structs.replace(measured, **missing), Slo())
    assert verdict.shortfalls == [shortfall] and "not measured" in verdict.why_not[0]
