"""sweep.json: the plan, every point with its runs, the findings and the cost model, saved after every run.

The file is rewritten whole after every finished run, atomically (written beside, flushed, fsynced, then
renamed over the old one), so an interrupted sweep never leaves a torn file and keeps every run that
finished. ``--resume`` reopens it and the search skips every run already stored, keyed by
(nodes, rate, mode, repeat). Versioned like report.json: version 1 is the first and only format.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

import msgspec

from harness.capacity.model import CostModel
from harness.capacity.points import CapacityRecord, RunKey, RunRecord, Slo
from harness.capacity.search import Findings, SearchPlan
from harness.kinds import WorkloadMode
from popbench.errors import ConfigError, HarnessError

SCHEMA_VERSION = 1  # 1: the first sweep.json (plan, slo, points with runs, findings, model)
SWEEP_FILE = "sweep.json"


class SweepStatus(StrEnum):
    RUNNING = "running"  # the sweep is under way, or its process died without a word
    COMPLETE = "complete"
    BUDGET = "budget"  # the budget stopped it; --resume with a larger budget continues
    INTERRUPTED = "interrupted"  # Ctrl-C; --resume continues


class Point(CapacityRecord, frozen=True, kw_only=True):
    """One (nodes, rate, mode) with every repeat run there; sustained per the plan's repeat rule."""

    nodes: int
    rate_per_s: float
    mode: WorkloadMode
    sustained: bool
    runs: list[RunRecord]


class Sweep(CapacityRecord, frozen=True, kw_only=True):
    """The whole of sweep.json."""

    schema_version: int
    status: SweepStatus
    plan: SearchPlan
    slo: Slo
    points: list[Point]
    findings: Findings
    model: CostModel | None = None

    def records(self) -> list[RunRecord]:
        return [record for point in self.points for record in point.runs]


class SweepStore:
    """The RunLog of a sweep on disk: finds stored runs, adds new ones and saves after each."""

    def __init__(self, path: Path, plan: SearchPlan, slo: Slo, records: list[RunRecord] | None = None,
                 findings: Findings | None = None) -> None:  # fmt: skip
        self.path, self.plan, self.slo = path, plan, slo
        self.records: dict[RunKey, RunRecord] = {r.key: r for r in records or []}
        self.findings = findings or Findings()
        self.status = SweepStatus.RUNNING
        self.model: CostModel | None = None

    @classmethod
    def create(cls, path: Path, plan: SearchPlan, slo: Slo) -> SweepStore:
        """A new sweep at ``path``; refuses to overwrite one (resume it, or choose another output)."""
        if path.exists():
            raise ConfigError(f"{path} already holds a sweep: pass --resume to continue it, or choose another --output", key="output")
        store = cls(path, plan, slo)
        store.save()
        return store

    @classmethod
    def resume(cls, path: Path, plan: SearchPlan, slo: Slo) -> SweepStore:
        """The sweep stored at ``path``, which must have the same plan and SLO as this invocation."""
        stored = load_sweep(path)
        _require_same("plan", stored.plan, plan, path)
        _require_same("slo", stored.slo, slo, path)
        return cls(path, plan, slo, stored.records(), stored.findings)

    # -- the RunLog protocol ------------------------------------------------------------------------
    def find(self, key: RunKey) -> RunRecord | None:
        return self.records.get(key)

    def add(self, record: RunRecord) -> None:
        self.records[record.key] = record
        self.save()

    def save_findings(self, findings: Findings) -> None:
        self.findings = findings
        self.save()

    # -- the file -----------------------------------------------------------------------------------
    def finish(self, status: SweepStatus, model: CostModel | None = None) -> Sweep:
        self.status, self.model = status, model
        return self.save()

    def snapshot(self) -> Sweep:
        return Sweep(schema_version=SCHEMA_VERSION, status=self.status, plan=self.plan, slo=self.slo,
                     points=group_points(list(self.records.values()), self.plan.sustained_repeats_needed),
                     findings=self.findings, model=self.model)  # fmt: skip

    def save(self) -> Sweep:
        sweep = self.snapshot()
        write_atomically(self.path, msgspec.json.format(msgspec.json.encode(sweep), indent=1))
        return sweep


def group_points(records: list[RunRecord], needed: int) -> list[Point]:
    """Runs grouped by (nodes, rate, mode), ordered by size, mode and rate; repeats in order. A point is
    sustained when ``needed`` of its runs were (a point cut short by Ctrl-C is not, yet)."""
    groups: dict[tuple[int, float, WorkloadMode], list[RunRecord]] = {}
    for record in sorted(records, key=lambda r: (r.key.nodes, r.key.mode, r.key.rate_per_s, r.key.repeat)):
        groups.setdefault((record.key.nodes, record.key.rate_per_s, record.key.mode), []).append(record)
    return [Point(nodes=nodes, rate_per_s=rate, mode=mode, runs=runs, sustained=sum(r.verdict.sustained for r in runs) >= needed)
            for (nodes, rate, mode), runs in groups.items()]  # fmt: skip


def load_sweep(path: Path) -> Sweep:
    """Decode sweep.json strictly; a newer or unknown version is refused by name."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise HarnessError(f"cannot read the sweep {path}: {err}") from err
    try:
        version = msgspec.json.decode(raw, type=_Versioned).schema_version
    except msgspec.DecodeError as err:
        raise HarnessError(f"{path} is not a sweep.json: {err}") from err
    if version != SCHEMA_VERSION:
        raise HarnessError(f"{path}: schema_version {version} is not one this popbench reads ({SCHEMA_VERSION})")
    try:
        return msgspec.json.decode(raw, type=Sweep)
    except msgspec.DecodeError as err:
        raise HarnessError(f"{path}: {err}") from err


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class _Versioned(msgspec.Struct):
    schema_version: int


def _require_same(name: str, stored: CapacityRecord, given: CapacityRecord, path: Path) -> None:
    before, now = msgspec.structs.asdict(stored), msgspec.structs.asdict(given)
    changed = sorted(key for key in before if before[key] != now.get(key))
    if changed:
        details = ", ".join(f"{key} {before[key]!r} -> {now[key]!r}" for key in changed)
        raise ConfigError(f"differs from the sweep stored in {path} ({details}): resume with the same settings, or start a new --output",
                          key=f"{name}.{changed[0]}")  # fmt: skip
