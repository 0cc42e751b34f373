"""report.json as types: the report of one run, its score, and the run/host header around its metrics.

Schema versions (bump SCHEMA_VERSION and note the change here whenever a field changes meaning or moves;
:mod:`harness.report.upgrade` maps every older version to the current types):
  1  the report as nested dicts (popbench 0.1).
  2  typed: the same figures under the same names, except ``metrics.mining`` carries ``kind``
     ("pop" | "pow"), a score part's ``items`` is a list of ``{name, points}``, and a crash names its
     child ``kind`` and ``index``.
  3  score formula version 2 (``score`` is a :class:`Score`, tagged ``version: 2``; a stored version-1
     score is kept as it was, a :class:`ScoreV1`), ``metrics.service`` (None in upgraded reports),
     ``issues`` are typed :class:`~harness.metrics.results.Finding` (older free-text issues become
     findings of kind ``note``), ``files.timeline`` names timeline.jsonl, and new fields with defaults:
     ``stability.nodes_down_by_plan_at_end``, ``resources.uss_samples_in_window``,
     ``mining.wall_hash_efficiency`` (PoW).
  4  an interrupted run is measured over what ran and not graded: ``score.grade`` may be None, with
     ``score.provisional_grade`` (the ``ended_early`` condition is no longer produced);
     ``service.interrupted_at_s`` and ``service.in_flight_at_stop`` (items in flight at the stop are left
     out of every service figure); ``throughput.valid_offered_per_s``, ``backlog_at_start`` and
     ``backlog_at_end`` (what makes offered and committed per second add up). Each new field has a default,
     so a version-3 report reads unchanged.
  5  PoW ``mining.stale_rate_predicted`` is p / (1 + p), p = 1 - exp(-d / T), d a block's mean delay to
     the other nodes and T the interval between any two blocks mined (was 1 - exp(-d / T) with d the
     time to reach every node and T the main chain's interval, which overstated). A version-4 report
     keeps the figure it was written with.
  6  ``metrics.growth``, the growth verdict (harness/metrics/growth.py; None in upgraded reports: older
     timelines lack what it fits), the profile's ``[growth]`` thresholds and a fault's ``mib_per_min``
     (leak), both with their defaults in upgraded reports.
  7  ``connectivity.links_per_node`` (min, median and max of each node's validator links) and
     ``connectivity.client_connections`` (drivers and other clients, counted apart from the mesh);
     None and 0 in upgraded reports, whose samples are not kept.

The JSON Schema in docs/report.schema.json is generated from these types:
``python -m harness.report.schema`` rewrites it, ``--check`` exits 1 when it is stale.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import msgspec

from harness.host.calibrate import Calibration
from harness.kinds import FaultKind, Topology
from harness.metrics.results import Finding, Metrics, Record
from harness.profile import Profile
from popbench.kinds import ConsensusKind

SCHEMA_VERSION = 7
SCHEMA_PATH = Path(__file__).resolve().parent.parent.parent / "docs" / "report.schema.json"
RunStatus = Literal["complete", "partial", "failed"]


# -- the score (docs/scoring.md) -----------------------------------------------------------------------
class Grade(StrEnum):
    """What a grade promises (docs/scoring.md, "Grades"): A kept pace within the service level; B did too,
    with a caveat; C served but breached the service level; F failed (fell behind, stalled, lost links,
    or a hard gate)."""

    A = "A"
    B = "B"
    C = "C"
    F = "F"


class GradeReason(StrEnum):
    """A condition that decided the grade. Hard gates fail the run whatever ``--min-score`` says."""

    SAFETY_FAILED = "safety_failed"  # hard gate
    ITEMS_LOST = "items_lost"  # hard gate: Jepsen's accounting (harness/run/accounting.py) found a lost or unexpected item
    INVALID_COMMITTED = "invalid_committed"  # hard gate
    UNPLANNED_CRASH = "unplanned_crash"  # hard gate
    NODE_NOT_REPORTING = "node_not_reporting"  # hard gate
    RUN_FAILED = "run_failed"  # hard gate: the run did not complete (a node never came up, ...)
    FELL_BEHIND = "fell_behind"  # delivery < slo.min_delivery
    STALLED = "stalled"  # a gap with no commit longer than the stall threshold
    LINKS_LOST = "links_lost"  # least_links_share < slo.min_links_share
    NOTHING_DUE = "nothing_due"  # a run with load that had no valid item due in its steady window
    P99_OVER_TARGET = "p99_over_target"  # p99 over all due items > slo.latency_ms (or unbounded)
    WITHIN_SHARE_SHORT = "within_share_short"  # share committed within L < slo.within_share
    LIGHT_LOAD = "light_load"  # offered below score.light_load_fraction x the verify-bound ceiling
    VIEW_CHANGES_UNPLANNED = "view_changes_unplanned"  # views changed in a run without a planned fault
    NO_LOAD = "no_load"  # no submission load: the service level was not tried
    UNEXPECTED_EXCEPTIONS = "unexpected_exceptions"  # a node counted an exception at its event loop
    ENDED_EARLY = "ended_early"  # formula 2 before schema 4: an interrupted run was capped at B (now it is not graded)
    POINTS_BELOW_GRADE = "points_below_grade"  # the points fell below the floor of the grade the conditions allow


class InvalidReason(StrEnum):
    """Why a run is not valid as a measurement (``popbench run`` exits 3)."""

    GENERATOR_FELL_BEHIND = "generator_fell_behind"  # the load generator could not keep its schedule


class Condition(Record, frozen=True, kw_only=True):
    """One condition the run met, the best grade it allows, and whether it is a hard gate."""

    reason: GradeReason
    grade: Grade
    hard_gate: bool
    message: str


class Invalidity(Record, frozen=True, kw_only=True):
    reason: InvalidReason
    message: str


class ScoreItem(Record, frozen=True, kw_only=True):
    """One scored dimension: ``points = max_points x curve(value, good, bad)`` (docs/scoring.md)."""

    name: str
    points: float
    max_points: float
    value: float | None  # the measured figure the curve read (None: not measured, 0 points)
    good: float  # the value at which the item earns all its points
    bad: float  # the value at which it earns none
    formula: str  # the item's formula with the figures filled in


class Score(Record, frozen=True, kw_only=True, tag=2, tag_field="version"):
    """Score formula version 2: items on the service level, graded by conditions, points capped by the grade.

    ``total = min(cap, round(earned x scale, 1))`` with ``scale = 100 / possible``; ``arithmetic`` spells
    it out line by line so the parts visibly add up to the total shown."""

    total: float  # an interrupted run's total is provisional, like its grade
    grade: Grade | None  # None: not graded, the run was interrupted (provisional_grade says what ran earned)
    provisional_grade: Grade | None = None  # interrupted: the grade the conditions give over what ran (None: nothing judged)
    earned: float  # sum of the items' points
    possible: float  # sum of the items' max_points (100 when every dimension was exercised)
    scale: float  # 100 / possible
    scaled: float  # round(earned x scale, 1): the points before the grade's cap
    cap: float | None  # the grade's ceiling when it lowered the total, else None
    items: list[ScoreItem]
    left_out: list[str]  # dimensions the run did not exercise, each with why
    conditions: list[Condition]  # the conditions that decided the grade, worst first (empty: grade A)
    hard_gate: bool  # a hard gate failed: exit 1 whatever --min-score says
    valid_measurement: bool
    invalid_because: list[Invalidity]
    passed_safety: bool
    arithmetic: list[str]
    notes: list[str]

    @property
    def version(self) -> int:
        return 2


class ScoreItemV1(Record, frozen=True, kw_only=True):
    """Formula version 1: one term of a part, the points it earned."""

    name: str
    points: float


class ScorePartV1(Record, frozen=True, kw_only=True):
    """Formula version 1: one quarter of the score; a part the run did not exercise is left out."""

    name: str
    points: float
    max_points: float
    exercised: bool
    items: list[ScoreItemV1]
    notes: list[str]


class ScoreV1(Record, frozen=True, kw_only=True, tag=1, tag_field="version"):
    """A score of formula version 1, kept as it was stored (reports of schema versions 1 and 2)."""

    total: float
    grade: str
    passed_safety: bool
    parts: list[ScorePartV1]
    notes: list[str]

    @property
    def version(self) -> int:
        return 1


AnyScore = Score | ScoreV1


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
    votes: str = "all-to-all"  # the PBFT vote path (docs/consensus.md); reports before it were all-to-all


class AppliedFault(Record, frozen=True, kw_only=True):
    """A timed fault as applied (harness/run/faults.py): a restart names the new pid, or why it failed."""

    kind: FaultKind
    node: int  # the first node it hit (-1: none)
    at_ns: int
    planned_at_s: float
    pid: int | None = None
    error: str | None = None
    action: str = "apply"  # "apply" or "heal" (the heal of a kill or a wipe is recorded as a restart)
    nodes: list[int] = msgspec.field(default_factory=list)  # every node it hit
    target: str = ""  # as the profile said it: node:N, leader, random:K, fraction:F, halves, minority, bridge
    cut_off: list[int] = msgspec.field(default_factory=list)  # nodes whose links it takes down by plan (left out of the links figure)
    mechanism: str | None = None  # partition, link, clock-skew, disk: "kernel" or "transport"
    pairs: int | None = None  # partition and link: node pairs it cut or shaped
    note: str | None = None
    healed_at_window_end: bool = False
    fault: int | None = None  # its index in the profile's [[faults]]: pairs an apply with its heal


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
    timeline: str | None = None  # timeline.jsonl (harness/metrics/timeline.py); None: no load window, or an older report


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
    score: AnyScore  # a version-2 Score, or a version-1 one stored by an older popbench
    issues: list[Finding]  # what happened, most serious first (harness/metrics/findings.py)
    faults: list[AppliedFault]
    notes: list[str]
    environment: Environment
    files: Files


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of report.json, generated from the types above."""
    schema: dict[str, Any] = _str_keys(msgspec.json.schema(Report))
    return schema


def _str_keys(node: Any) -> Any:
    """The score's union is tagged by an integer ``version``, and msgspec writes the OpenAPI discriminator
    mapping with integer keys; JSON object keys are strings."""
    if isinstance(node, dict):
        return {str(key): _str_keys(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_str_keys(value) for value in node]
    return node


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
