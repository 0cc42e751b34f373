"""report.json as types: the report of one run, its score, and the run/host header around its metrics.

Schema versions (bump SCHEMA_VERSION and note the change here whenever a field changes meaning or moves;
:mod:`harness.report.upgrade` maps every older version to the current types):
  1  the report as nested dicts (popbench 0.1).
  2  typed: the same figures under the same names, except ``metrics.mining`` carries ``kind``
     ("pop" | "pow"), a score part's ``items`` is a list of ``{name, points}``, and a crash names its
     child ``kind`` and ``index``.

The JSON Schema in docs/report.schema.json is generated from these types:
``python -m harness.report.schema`` rewrites it, ``--check`` exits 1 when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import msgspec

from harness.host.calibrate import Calibration
from harness.kinds import FaultKind, Topology
from harness.metrics.results import Metrics, Record
from harness.profile import Profile
from popbench.kinds import ConsensusKind

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).resolve().parent.parent.parent / "docs" / "report.schema.json"
RunStatus = Literal["complete", "partial", "failed"]


# -- the score (docs/scoring.md) -----------------------------------------------------------------------
class ScoreItem(Record, frozen=True, kw_only=True):
    """One term of a part: the points it earned."""

    name: str
    points: float


class ScorePart(Record, frozen=True, kw_only=True):
    """One quarter of the score; a part the run did not exercise is left out of the total."""

    name: str
    points: float
    max_points: float
    exercised: bool
    items: list[ScoreItem]
    notes: list[str]


class Score(Record, frozen=True, kw_only=True):
    version: int
    total: float
    grade: str
    passed_safety: bool
    parts: list[ScorePart]
    notes: list[str]


# -- the header: where and on what the run ran ---------------------------------------------------------
class DeploymentSummary(Record, frozen=True, kw_only=True):
    """What the run deployed (harness/host/deploy.py, ``Deployment.describe``)."""

    consensus: ConsensusKind
    nodes: int
    topology: Topology
    intended_links: int
    discover_by_peer_exchange: bool
    regions: list[str]
    chain_id: str
    quorum: int
    f: int
    crypto_backend: str


class AppliedFault(Record, frozen=True, kw_only=True):
    """A timed fault as applied (harness/run/faults.py): a restart names the new pid, or why it failed."""

    kind: FaultKind
    node: int
    at_ns: int
    planned_at_s: float
    pid: int | None = None
    error: str | None = None


class GitState(Record, frozen=True, kw_only=True):
    commit: str | None
    dirty: bool | None


class Environment(Record, frozen=True, kw_only=True):
    """The machine, the software and the code that produced the numbers (harness/host/envinfo.py)."""

    cpu_model: str
    cores_logical: int | None
    cores_physical: int | None
    memory_gib: float
    os: str
    python: str
    python_implementation: str
    packages: dict[str, str]
    git: GitState


class Files(Record, frozen=True, kw_only=True):
    """The run directory's other files, relative to it."""

    records: list[str]
    logs: str
    genesis: str


class Report(Record, frozen=True, kw_only=True):
    """One run: header, metrics (docs/metrics.md), score (docs/scoring.md), and what went wrong."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    status: RunStatus
    ended_early: str | None  # why the run ended early, or None
    started_at: str  # UTC, ISO 8601
    duration_s: float
    phases: dict[str, float]  # phase -> seconds after the command started
    profile: Profile
    deployment: DeploymentSummary | None  # None when the run failed before it deployed
    calibration: Calibration | None
    metrics: Metrics
    score: Score
    issues: list[str]  # what the run found wrong, one sentence each, most serious first
    faults: list[AppliedFault]
    notes: list[str]
    environment: Environment
    files: Files


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of report.json, generated from the types above."""
    return msgspec.json.schema(Report)


def json_schema_text() -> str:
    return msgspec.json.format(msgspec.json.encode(json_schema(), order="sorted"), indent=2).decode() + "\n"


def main(argv: list[str]) -> int:
    """Rewrite docs/report.schema.json; with ``--check``, only say whether it is up to date."""
    wanted = json_schema_text()
    if "--check" in argv:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
        if current != wanted:
            print(f"{SCHEMA_PATH} is stale: run python -m harness.report.schema", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(wanted)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: where two types share a name (a profile's
    # Score and the report's), the schema tells them apart by module, which must read harness.report.schema.
    from harness.report import schema

    sys.exit(schema.main(sys.argv[1:]))
