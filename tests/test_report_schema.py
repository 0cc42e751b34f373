"""report.json is a typed, versioned contract: the shipped JSON Schema is the types', a real run's report
passes both a strict decode and the schema, version-1 reports load, and docs/metrics.md defines every field.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import orjson
import pytest

from harness.metrics.results import FindingKind, LinksPerNode, Metrics, PopMining, PowMining
from harness.profile import GrowthThresholds
from harness.report.build import encode_report, load_report
from harness.report.schema import SCHEMA_PATH, SCHEMA_VERSION, Report, ScoreV1, json_schema, json_schema_text
from harness.report.upgrade import decode_report, v1_to_v2
from popbench.errors import HarnessError

FIXTURES = Path(__file__).parent / "fixtures"
V1_REPORTS = sorted(FIXTURES.glob("report_v1_*.json"))
METRICS_DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
RUN_TIMEOUT_S = 150.0
V4_FIELDS = {
    "service": {"interrupted_at_s", "in_flight_at_stop"},
    "throughput": {"valid_offered_per_s", "backlog_at_start", "backlog_at_end"},
}


def test_the_shipped_json_schema_is_the_one_the_types_generate() -> None:
    assert SCHEMA_PATH.read_text() == json_schema_text(), "stale: run `python -m harness.report.schema`"


@pytest.mark.parametrize("path", V1_REPORTS, ids=lambda p: p.stem)
def test_a_version_1_report_loads_with_every_figure_unchanged(path: Path) -> None:
    stored = orjson.loads(path.read_bytes())
    report = load_report(path)
    assert stored["schema_version"] == 1 and report.schema_version == SCHEMA_VERSION
    assert report.run_id == stored["run_id"] and report.profile.name == stored["profile"]["name"]
    metrics = orjson.loads(msgspec.json.encode(report.metrics))
    for section in ("connectivity", "throughput", "invalid_proofs", "consensus", "work", "resources"):
        assert without_v3_fields(metrics[section]) == stored["metrics"][section], section
    assert (metrics["mining"] and without_v3_fields(metrics["mining"], "kind")) == stored["metrics"]["mining"]
    assert metrics["service"] is None and report.files.timeline is None
    assert isinstance(report.score, ScoreV1) and report.score.version == 1  # the stored formula-1 score, kept as it was
    assert report.score.total == stored["score"]["total"]
    assert [issue.message for issue in report.issues] == stored["issues"]
    assert all(issue.kind == FindingKind.NOTE for issue in report.issues)
    for part, stored_part in zip(report.score.parts, stored["score"]["parts"], strict=True):
        assert {item.name: item.points for item in part.items} == stored_part["items"]
    mining = stored["metrics"]["mining"]
    expected_kind = None if mining is None else PowMining if "blocks_mined" in mining else PopMining
    assert (type(report.metrics.mining) if report.metrics.mining else None) is expected_kind


def without_v3_fields(section: dict[str, Any], *extra: str) -> dict[str, Any]:
    """A section without the fields schema versions 3, 4 and 7 added with defaults (and ``extra``)."""
    added = {"nodes_down_by_plan_at_end", "uss_samples_in_window", "wall_hash_efficiency", *V4_FIELDS["throughput"],
             "links_per_node", "client_connections", *extra}  # fmt: skip
    return {key: value for key, value in section.items() if key not in added}


@pytest.mark.parametrize("path", V1_REPORTS, ids=lambda p: p.stem)
def test_a_version_2_report_upgrades_keeping_its_score_and_its_issues_as_notes(path: Path) -> None:
    version_2 = v1_to_v2(orjson.loads(path.read_bytes()))
    version_2["issues"] = ["2 protocol errors (malformed frames) were counted"]
    report = decode_report(orjson.dumps(version_2))
    assert report.schema_version == SCHEMA_VERSION == 7
    assert isinstance(report.score, ScoreV1) and report.score.total == version_2["score"]["total"]
    assert [(i.kind, i.message) for i in report.issues] == [(FindingKind.NOTE, "2 protocol errors (malformed frames) were counted")]


def test_a_version_3_report_reads_with_its_grade_and_nothing_in_flight() -> None:
    current = orjson.loads(encode_report(load_report(V1_REPORTS[0])))
    for section, names in V4_FIELDS.items():
        if current["metrics"][section] is not None:
            current["metrics"][section] = {k: v for k, v in current["metrics"][section].items() if k not in names}
    current["schema_version"] = 3
    report = decode_report(orjson.dumps(current))
    assert report.schema_version == SCHEMA_VERSION and report.score.grade == current["score"]["grade"]
    assert report.metrics.throughput is not None and report.metrics.throughput.backlog_at_start is None


def test_a_version_4_pow_report_keeps_the_predicted_stale_rate_it_was_written_with() -> None:
    pow_report = next(path for path in V1_REPORTS if "pow" in path.stem)
    current = orjson.loads(encode_report(load_report(pow_report)))
    current["schema_version"] = 4
    report = decode_report(orjson.dumps(current))
    assert report.schema_version == SCHEMA_VERSION
    assert isinstance(report.metrics.mining, PowMining)
    assert report.metrics.mining.stale_rate_predicted == current["metrics"]["mining"]["stale_rate_predicted"]


def test_a_version_5_report_reads_with_no_growth_verdict_and_the_growth_defaults() -> None:
    current = orjson.loads(encode_report(load_report(V1_REPORTS[0])))
    current["metrics"]["growth"] = {"verdict": "flat"}  # what a version-5 report cannot hold: the upgrade must drop it
    del current["profile"]["growth"]
    current["schema_version"] = 5
    report = decode_report(orjson.dumps(current))
    assert report.schema_version == SCHEMA_VERSION and report.metrics.growth is None
    assert report.profile.growth == GrowthThresholds()


def test_a_version_6_report_reads_with_no_links_per_node_and_no_clients_counted() -> None:
    current = orjson.loads(encode_report(load_report(V1_REPORTS[0])))
    connectivity = current["metrics"]["connectivity"]
    del connectivity["links_per_node"], connectivity["client_connections"]
    current["schema_version"] = 6
    report = decode_report(orjson.dumps(current))
    assert report.schema_version == SCHEMA_VERSION
    assert report.metrics.connectivity.links_per_node is None and report.metrics.connectivity.client_connections == 0


@pytest.mark.parametrize("path", V1_REPORTS, ids=lambda p: p.stem)
def test_an_upgraded_report_is_written_as_a_valid_current_report(path: Path) -> None:
    report = load_report(path)
    written = encode_report(report)
    jsonschema.validate(orjson.loads(written), json_schema())
    assert decode_report(written) == report


def test_an_unknown_field_or_version_is_refused_with_the_file_named(tmp_path: Path) -> None:
    current = orjson.loads(encode_report(load_report(V1_REPORTS[0])))
    current["metrics"]["work"]["frames_per_prof"] = 1.0
    misspelt = tmp_path / "misspelt.json"
    misspelt.write_bytes(orjson.dumps(current))
    with pytest.raises(HarnessError, match=r"misspelt\.json.*frames_per_prof"):
        load_report(misspelt)
    future = tmp_path / "future.json"
    future.write_bytes(orjson.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(HarnessError, match="schema version"):
        load_report(future)


def test_a_real_smoke_run_writes_a_report_that_passes_the_types_and_the_schema(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "popbench"), "run", "--profile", "smoke", "--duration", "4", "--output", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode in (0, 3), done.stdout + done.stderr  # 3: the shared host starved the generator (still a report)
    raw = (run_dir / "report.json").read_bytes()
    report = msgspec.json.decode(raw, type=Report)  # strict: every field typed, no unknown field
    jsonschema.validate(orjson.loads(raw), orjson.loads(SCHEMA_PATH.read_bytes()))
    assert report.schema_version == SCHEMA_VERSION and report.status == "complete"
    assert report.metrics.throughput is not None and report.metrics.throughput.valid_committed > 0
    assert report.metrics.service is not None and report.metrics.service.due > 0
    assert report.files.timeline == "timeline.jsonl" and (run_dir / "timeline.jsonl").exists()
    full_mesh = report.deployment.nodes - 1 if report.deployment else None
    assert report.metrics.connectivity.links_per_node == LinksPerNode(min=full_mesh, median=full_mesh, max=full_mesh)
    assert report.metrics.connectivity.client_connections >= 1  # the driver, apart from the validator links


# -- docs/metrics.md -------------------------------------------------------------------------------------
def field_names(root: Any) -> dict[str, set[str]]:
    """Every type reachable from ``root`` (Structs and dataclasses, through unions and containers) -> its fields."""
    found: dict[str, set[str]] = {}
    pending = [root]
    while pending:
        kind = pending.pop()
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            names = set(kind.__struct_fields__)
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            names = {f.name for f in dataclasses.fields(kind)}
        else:
            pending += typing.get_args(kind)
            continue
        if kind.__name__ not in found:
            found[kind.__name__] = names
            pending += typing.get_type_hints(kind).values()
    return found


def documented_names(text: str) -> set[str]:
    """Every identifier inside a backtick span (`metrics.throughput`, `propagation.{p50_nodes,all_nodes}`)."""
    return {word for span in re.findall(r"`([^`]+)`", text) for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}


def test_docs_metrics_md_names_every_field_of_the_metrics_tree() -> None:
    documented = documented_names(METRICS_DOC.read_text())
    missing = {kind: sorted(names - documented) for kind, names in field_names(Metrics).items() if names - documented}
    assert not missing, f"docs/metrics.md does not name these fields (in backticks): {missing}"
    assert len(field_names(Metrics)) > 15  # the walk reached the nested types
