"""sweep.json: saved after every run, resumed without repeating a run, kept whole across Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from harness.capacity.points import Slo
from harness.capacity.search import SearchPlan, SizeStatus
from harness.capacity.store import SCHEMA_VERSION, SWEEP_FILE, SweepStatus, SweepStore, load_sweep
from harness.capacity.sweep import run_sweep
from harness.kinds import WorkloadMode
from popbench.errors import ConfigError, HarnessError
from tests.capacity_fake import FakeNetwork

PLAN = SearchPlan(sizes=[4, 16, 64], target_rate_per_s=50.0)


def test_every_finished_run_is_on_disk_with_its_verdict(tmp_path: Path) -> None:
    fake = FakeNetwork()
    sweep = run_sweep(tmp_path, PLAN, Slo(), fake, clock=fake.clock)
    stored = load_sweep(tmp_path / SWEEP_FILE)
    assert stored == sweep
    assert stored.schema_version == SCHEMA_VERSION and stored.status is SweepStatus.COMPLETE
    assert {r.key for r in stored.records()} == set(fake.calls) and len(stored.records()) == len(fake.calls)
    probe = next(p for p in stored.points if p.mode is WorkloadMode.CLOSED and p.nodes == 4)
    assert probe.runs[0].outcome.committed_per_s > 0
    assert [c.status for c in stored.findings.capacities] == [SizeStatus.FOUND] * 3
    assert stored.findings.largest is not None and stored.findings.largest.nodes == 64
    assert not (tmp_path / (SWEEP_FILE + ".tmp")).exists()


def test_resume_skips_every_run_already_stored(tmp_path: Path) -> None:
    first = FakeNetwork()
    done = run_sweep(tmp_path, PLAN, Slo(), first, clock=first.clock)
    again = FakeNetwork()
    resumed = run_sweep(tmp_path, PLAN, Slo(), again, resume=True, clock=again.clock)
    assert again.calls == []
    assert resumed.findings == done.findings


def test_an_interrupted_sweep_keeps_what_finished_and_resume_completes_it(tmp_path: Path) -> None:
    whole_fake = FakeNetwork()
    whole = run_sweep(tmp_path / "whole", PLAN, Slo(), whole_fake, clock=whole_fake.clock)

    interrupted = FakeNetwork(interrupt_after=6)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tmp_path / "cut", PLAN, Slo(), interrupted, clock=interrupted.clock)
    kept = load_sweep(tmp_path / "cut" / SWEEP_FILE)
    assert kept.status is SweepStatus.INTERRUPTED
    assert {r.key for r in kept.records()} == set(interrupted.calls)
    assert len(interrupted.calls) == 6
    assert [c.nodes for c in kept.findings.capacities] == [4]  # the first size had finished before Ctrl-C

    rest = FakeNetwork()
    resumed = run_sweep(tmp_path / "cut", PLAN, Slo(), rest, resume=True, clock=rest.clock)
    assert len(rest.calls) == len(whole_fake.calls) - 6
    assert not set(rest.calls) & set(interrupted.calls)
    assert resumed.findings == whole.findings
    assert resumed.status is SweepStatus.COMPLETE


def test_a_budget_stopped_sweep_is_marked_and_resumes_with_a_larger_budget(tmp_path: Path) -> None:
    from harness.capacity.search import Budget

    fake = FakeNetwork()
    stopped = run_sweep(tmp_path, PLAN, Slo(), fake, budget=Budget(max_runs=4), clock=fake.clock)
    assert stopped.status is SweepStatus.BUDGET and stopped.findings.stopped is not None
    more = FakeNetwork()
    done = run_sweep(tmp_path, PLAN, Slo(), more, resume=True, budget=Budget(max_runs=100), clock=more.clock)
    assert done.status is SweepStatus.COMPLETE and done.findings.stopped is None
    assert len(more.calls) == len(done.records()) - 4


def test_a_new_sweep_refuses_to_overwrite_a_stored_one(tmp_path: Path) -> None:
    SweepStore.create(tmp_path / SWEEP_FILE, PLAN, Slo())
    with pytest.raises(ConfigError, match="--resume"):
        SweepStore.create(tmp_path / SWEEP_FILE, PLAN, Slo())


def test_resume_refuses_a_different_plan_naming_what_changed(tmp_path: Path) -> None:
    SweepStore.create(tmp_path / SWEEP_FILE, PLAN, Slo())
    with pytest.raises(ConfigError, match=r"plan\.tolerance.*0\.1 -> 0\.05"):
        SweepStore.resume(tmp_path / SWEEP_FILE, msgspec.structs.replace(PLAN, tolerance=0.05), Slo())
    with pytest.raises(ConfigError, match=r"slo\.p99_target_ms"):
        SweepStore.resume(tmp_path / SWEEP_FILE, PLAN, Slo(p99_target_ms=500.0))


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SWEEP_FILE
    SweepStore.create(path, PLAN, Slo())
    path.write_bytes(path.read_bytes().replace(f'"schema_version": {SCHEMA_VERSION}'.encode(), b'"schema_version": 99'))
    with pytest.raises(HarnessError, match="schema_version 99"):
        load_sweep(path)
    path.write_bytes(b"not json")
    with pytest.raises(HarnessError, match=r"not a sweep\.json"):
        load_sweep(path)
