"""report.json: the versioned record of one run (schema below), written beside its raw records.

Schema version 1 (bump it and note the change here whenever a key changes meaning or moves):
  schema_version, run_id, status (complete | partial | failed), ended_early (why, or null),
  started_at (UTC ISO 8601), duration_s, phases (seconds after the command started),
  profile, deployment, calibration, metrics (docs/metrics.md), score (docs/scoring.md),
  issues (what the run found wrong, one sentence each), faults, notes, environment, files.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson

from harness.host.envinfo import environment
from harness.run.phases import RunData
from harness.report.score import Score
from popbench.errors import HarnessError

SCHEMA_VERSION = 1
REPORT_NAME = "report.json"


def build_report(data: RunData, metrics: dict[str, Any], score: Score) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": data.run_id,
        "status": _status(data),
        "ended_early": data.interrupted or data.error,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(data.started_ns / 1e9)),
        "duration_s": (data.phases.get("stopped", time.time_ns()) - data.started_ns) / 1e9,
        "phases": {name: (ns - data.started_ns) / 1e9 for name, ns in data.phases.items()},
        "profile": dataclasses.asdict(data.profile),
        "deployment": data.deployment,
        "calibration": data.calibration.as_dict() if data.calibration else None,
        "metrics": metrics,
        "score": score.as_dict(),
        "issues": issues_found(data, metrics, score),
        "faults": data.faults_applied,
        "notes": data.notes,
        "environment": environment(),
        "files": {"records": [p.name for p in data.records_paths], "logs": "logs/", "genesis": "genesis.json"},
    }  # fmt: skip


def _status(data: RunData) -> str:
    if data.error:
        return "failed"
    return "partial" if data.interrupted else "complete"


def issues_found(data: RunData, metrics: dict[str, Any], score: Score) -> list[str]:
    """What a reader must not miss, most serious first."""
    found: list[str] = []
    stability, throughput = metrics["stability"], metrics["throughput"]
    if not score.passed_safety:
        found.append("safety violation: nodes committed different blocks at the same height")
    if metrics["invalid_proofs"]["committed"]:
        found.append(f"{metrics['invalid_proofs']['committed']} invalid proofs were committed")
    if data.error:
        found.append(f"the run failed: {data.error.splitlines()[0]}")
    if data.interrupted:
        found.append(f"the run ended early ({data.interrupted}): figures cover only what ran")
    for crash in stability["crashes"]:
        found.append(f"{crash['name']} exited unexpectedly ({crash['exit']})")
    if stability["protocol_errors"]:
        found.append(f"{stability['protocol_errors']} protocol errors (malformed frames) were counted")
    if throughput and throughput["generator"]["fell_behind"]:
        found.append("the load generator fell behind its schedule: p99 send lateness "
                     f"{throughput['generator']['send_late_p99_ms']:.0f} ms")  # fmt: skip
    if throughput and throughput["plan_exhausted"] and data.profile.workload.mode == "closed":
        found.append("the closed-loop pool of proofs ran dry before the window ended: raise workload.rate")
    if metrics["connectivity"]["links_ratio"] < 1.0:
        c = metrics["connectivity"]
        found.append(f"only {c['links_up']} of {c['intended_links']} intended links were up at the end of the window")
    return found


def write_report(report: dict[str, Any], run_dir: Path) -> Path:
    path = run_dir / REPORT_NAME
    partial = path.with_suffix(".tmp")
    partial.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    partial.replace(path)
    return path


def load_report(path: Path) -> dict[str, Any]:
    target = path / REPORT_NAME if path.is_dir() else path
    try:
        report = orjson.loads(target.read_bytes())
    except (OSError, orjson.JSONDecodeError) as err:
        raise HarnessError(f"cannot read a report from {target}: {err}") from err
    if not isinstance(report, dict) or report.get("schema_version") != SCHEMA_VERSION:
        raise HarnessError(f"{target} is not a popbench report of schema version {SCHEMA_VERSION}")
    return report
