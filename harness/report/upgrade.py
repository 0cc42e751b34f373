"""Reading report.json of any schema version: each older version is upgraded, step by step, to the next.

A stored report is decoded by its ``schema_version``: the current version straight into the types of
:mod:`harness.report.schema`; an older one as plain JSON, passed through the upgrade steps below (each
maps version n to n + 1 and nothing else), then converted to the types with the same strict check.
Figures are never recomputed: an upgrade only renames, moves and tags (pyperf and asv load their old
formats the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from harness.report.schema import SCHEMA_VERSION, Report
from popbench.errors import HarnessError

JsonObject = dict[str, Any]


class _Versioned(msgspec.Struct):
    """Just enough of any report to tell its version."""

    schema_version: int


def decode_report(raw: bytes) -> Report:
    """The report in ``raw`` (JSON), as the current types; HarnessError when it is not one."""
    try:
        version = msgspec.json.decode(raw, type=_Versioned).schema_version
        if version == SCHEMA_VERSION:
            return msgspec.json.decode(raw, type=Report)
        if version not in UPGRADES:
            raise HarnessError(f"report schema version {version} is not one this popbench reads (1 to {SCHEMA_VERSION})")
        return msgspec.convert(upgrade(msgspec.json.decode(raw), version), Report, str_keys=True)
    except msgspec.MsgspecError as err:
        raise HarnessError(f"not a popbench report: {err}") from err


def upgrade(report: JsonObject, version: int) -> JsonObject:
    """Apply every upgrade step from ``version`` to the current one."""
    while version < SCHEMA_VERSION:
        report = UPGRADES[version](report)
        version += 1
    return report


# -- version 1 -> 2 ------------------------------------------------------------------------------------
def v1_to_v2(report: JsonObject) -> JsonObject:
    """Tag the mining section, list score items, name each crash's child kind and index."""
    metrics = dict(report["metrics"])
    metrics["mining"] = _tag_mining(metrics.get("mining"))
    metrics["stability"] = {**metrics["stability"], "crashes": [_crash_v2(c) for c in metrics["stability"]["crashes"]]}
    score = {**report["score"], "parts": [_part_v2(part) for part in report["score"]["parts"]]}
    return {**report, "schema_version": 2, "metrics": metrics, "score": score, "deployment": report["deployment"] or None}


def _tag_mining(mining: JsonObject | None) -> JsonObject | None:
    """Version 1 told the two mining sections apart only by their keys: PoW ones count blocks."""
    if not mining:
        return None
    return {"kind": "pow" if "blocks_mined" in mining else "pop", **mining}


def _part_v2(part: JsonObject) -> JsonObject:
    return {**part, "items": [{"name": name, "points": points} for name, points in part["items"].items()]}


def _crash_v2(crash: JsonObject) -> JsonObject:
    """Version 1 named a crashed child only as ``<kind>-<index>``."""
    kind, _, index = crash["name"].rpartition("-")
    return {"kind": kind, "index": int(index), **crash}


# -- version 2 -> 3 ------------------------------------------------------------------------------------
def v2_to_v3(report: JsonObject) -> JsonObject:
    """Keep the stored formula-1 score as it was (tagged ``version: 1``, which it already carries); free-text
    issues become findings of kind ``note``; no service section and no timeline (neither was measured)."""
    issues = [{"kind": "note", "severity": "warn", "at_s": None, "message": issue, "figures": {}} for issue in report["issues"]]
    metrics = {**report["metrics"], "service": None}
    files = {**report["files"], "timeline": None}
    return {**report, "schema_version": 3, "metrics": metrics, "issues": issues, "files": files}


# -- version 3 -> 4 ------------------------------------------------------------------------------------
def v3_to_v4(report: JsonObject) -> JsonObject:
    """Nothing moves: every field version 4 added has a default (no provisional grade, nothing in flight at
    a stop, no backlog figures), and a version-3 score keeps the grade it was given."""
    return {**report, "schema_version": 4}


def v4_to_v5(report: JsonObject) -> JsonObject:
    """Nothing moves: a version-4 PoW report keeps the predicted stale rate of its day's formula (the
    measurements it came from are not in the report, so it cannot be recomputed)."""
    return {**report, "schema_version": 5}


def v5_to_v6(report: JsonObject) -> JsonObject:
    """No growth verdict: a version-5 run's samples did not size the databases, and the report does not
    hold its samples, so it cannot be computed. The profile's ``[growth]`` table and a fault's
    ``mib_per_min`` decode to their defaults (the run used neither)."""
    return {**report, "schema_version": 6, "metrics": {**report["metrics"], "growth": None}}


def v6_to_v7(report: JsonObject) -> JsonObject:
    """Links per node and client connections were not reported: their defaults (None, 0) say so."""
    return {**report, "schema_version": 7}


UPGRADES: dict[int, Callable[[JsonObject], JsonObject]] = {
    1: v1_to_v2, 2: v2_to_v3, 3: v3_to_v4, 4: v4_to_v5, 5: v5_to_v6, 6: v6_to_v7,
}  # fmt: skip
