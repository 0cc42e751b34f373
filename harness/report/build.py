"""report.json: the versioned record of one run, written beside its raw records, and read back.

The types and the list of schema versions are in :mod:`harness.report.schema`; older versions are
upgraded on load by :mod:`harness.report.upgrade`.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from harness.kinds import RunPhase
from harness.host.envinfo import environment
from harness.metrics.results import Metrics
from harness.report.schema import SCHEMA_VERSION, AppliedFault, DeploymentSummary, Environment, Files, Report, RunStatus, Score
from harness.report.upgrade import decode_report
from harness.run.phases import RunData
from popbench.errors import HarnessError

REPORT_NAME = "report.json"
JSON_INDENT = 2


def build_report(data: RunData, metrics: Metrics, score: Score) -> Report:
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
        issues=issues_found(data, metrics, score),
        faults=[msgspec.convert(fault, AppliedFault) for fault in data.faults_applied],
        notes=data.notes,
        environment=msgspec.convert(environment(), Environment),
        files=Files(records=[p.name for p in data.records_paths], logs="logs/", genesis="genesis.json"),
    )


def _status(data: RunData) -> RunStatus:
    if data.error:
        return "failed"
    return "partial" if data.interrupted else "complete"


def issues_found(data: RunData, metrics: Metrics, score: Score) -> list[str]:
    """What a reader must not miss, most serious first."""
    found: list[str] = []
    stability, throughput, connectivity = metrics.stability, metrics.throughput, metrics.connectivity
    if not score.passed_safety:
        found.append("safety violation: nodes committed different blocks at the same height")
    if metrics.invalid_proofs.committed:
        found.append(f"{metrics.invalid_proofs.committed} invalid proofs were committed")
    if data.error:
        found.append(f"the run failed: {data.error.splitlines()[0]}")
    if data.interrupted:
        found.append(f"the run ended early ({data.interrupted}): figures cover only what ran")
    found += [f"{crash.name} exited unexpectedly ({crash.exit})" for crash in stability.crashes]
    if stability.protocol_errors:
        found.append(f"{stability.protocol_errors} protocol errors (malformed frames) were counted")
    if throughput and throughput.generator.fell_behind:
        found.append("the load generator fell behind its schedule: p99 send lateness "
                     f"{throughput.generator.send_late_p99_ms:.0f} ms")  # fmt: skip
    if throughput and throughput.plan_exhausted and data.profile.workload.mode == "closed":
        found.append("the closed-loop pool of proofs ran dry before the window ended: raise workload.rate")
    if connectivity.links_ratio < 1.0:
        found.append(f"only {connectivity.links_up} of {connectivity.intended_links} intended links were up at the end of the window")
    return found


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
