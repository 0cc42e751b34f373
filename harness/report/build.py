"""report.json: the versioned record of one run, written beside its raw records, and read back.

The types and the list of schema versions are in :mod:`harness.report.schema`; older versions are
upgraded on load by :mod:`harness.report.upgrade`.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from harness.host.envinfo import environment
from harness.kinds import RunPhase
from harness.metrics.results import Finding, Metrics
from harness.report.schema import SCHEMA_VERSION, AppliedFault, DeploymentSummary, Environment, Files, Report, RunStatus, Score
from harness.report.upgrade import decode_report
from harness.run.phases import RunData
from popbench.errors import HarnessError

REPORT_NAME = "report.json"
JSON_INDENT = 2


def build_report(data: RunData, metrics: Metrics, score: Score, issues: list[Finding], timeline: Path | None = None) -> Report:
    """The report of one run; ``issues`` from :func:`harness.metrics.findings.findings`, ``timeline`` the
    timeline.jsonl written beside it (None when the run had no load window)."""
    return Report(
        schema_version=SCHEMA_VERSION,
        run_id=data.run_id,
        status=_status(data),
        ended_early=data.interrupted or data.error,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(data.started_ns / 1e9)),
        duration_s=(data.phases.get(RunPhase.STOPPED, time.time_ns()) - data.started_ns) / 1e9,
        phases={name: (ns - data.started_ns) / 1e9 for name, ns in data.phases.items()},
        profile=data.profile,
        deployment=msgspec.convert(data.deployment, DeploymentSummary) if data.deployment else None,
        calibration=data.calibration,
        metrics=metrics,
        score=score,
        issues=issues,
        faults=[msgspec.convert(fault, AppliedFault) for fault in data.faults_applied],
        notes=data.notes,
        environment=msgspec.convert(environment(), Environment),
        files=Files(
            records=[p.name for p in data.records_paths], logs="logs/", genesis="genesis.json", timeline=timeline.name if timeline else None
        ),
    )


def _status(data: RunData) -> RunStatus:
    if data.error:
        return "failed"
    return "partial" if data.interrupted else "complete"


def encode_report(report: Report) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=JSON_INDENT)


def write_report(report: Report, run_dir: Path) -> Path:
    path = run_dir / REPORT_NAME
    partial = path.with_suffix(".tmp")
    partial.write_bytes(encode_report(report))
    partial.replace(path)
    return path


def load_report(path: Path) -> Report:
    """A stored report of any schema version, as the current types (older versions are upgraded)."""
    target = path / REPORT_NAME if path.is_dir() else path
    try:
        raw = target.read_bytes()
    except OSError as err:
        raise HarnessError(f"cannot read a report from {target}: {err}") from err
    try:
        return decode_report(raw)
    except HarnessError as err:
        raise HarnessError(f"{target}: {err}") from err
