"""Baselines: saved as small versioned JSON, loaded by name or path, listed; repeat sets from run directories."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson
import pytest

from harness.regress.baselines import (
    BASELINE_SCHEMA_VERSION,
    RunSample,
    checkout_root,
    collect_repeat_set,
    default_baselines_dir,
    list_baselines,
    load_baseline,
    make_baseline,
    save_baseline,
    save_named_baseline,
)
from harness.regress.verdict import ExitStatus, compare_repeat_sets
from popbench.errors import ConfigError, HarnessError
from tests.test_regress_verdict import METADATA, STEADY, repeat_set


def test_a_baseline_round_trips_through_its_file(tmp_path: Path) -> None:
    original = make_baseline("main", repeat_set(STEADY), note="main at aaaa")
    path = save_baseline(original, tmp_path)
    assert path == tmp_path / "main" / "baseline.json"
    loaded = load_baseline("main", tmp_path)
    assert loaded == original
    assert loaded.repeat_set().samples == STEADY
    assert compare_repeat_sets(loaded.repeat_set(), repeat_set(STEADY)).exit_status is ExitStatus.OK


def test_the_file_is_small_indented_text_with_a_schema_version(tmp_path: Path) -> None:
    path = save_baseline(make_baseline("main", repeat_set(STEADY)), tmp_path)
    text = path.read_text()
    data = orjson.loads(text)
    assert data["schema_version"] == BASELINE_SCHEMA_VERSION
    assert data["units"]["node_cpu_ms_per_proof"] == "ms"
    assert "\n  " in text and len(text) < 4000


def test_only_watched_figures_are_kept(tmp_path: Path) -> None:
    baseline = make_baseline("main", repeat_set({**STEADY, "not_a_watched_figure": [1.0] * 5}))
    assert set(baseline.samples) == set(STEADY)


def test_a_baseline_loads_by_directory_or_file_path(tmp_path: Path) -> None:
    path = save_baseline(make_baseline("nightly", repeat_set(STEADY)), tmp_path)
    assert load_baseline(path).name == "nightly"
    assert load_baseline(path.parent).name == "nightly"


def test_baselines_are_listed_by_name(tmp_path: Path) -> None:
    for name in ("main", "release-0.1"):
        save_baseline(make_baseline(name, repeat_set(STEADY)), tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "baseline.json").write_text("{not json")
    listed = list_baselines(tmp_path)
    assert [(info.name, info.runs, info.profile, info.git_commit) for info in listed] == [
        ("main", 5, "ci", "aaaa"),
        ("release-0.1", 5, "ci", "aaaa"),
    ]
    assert list_baselines(tmp_path / "absent") == []


def test_an_unknown_name_says_which_baselines_exist(tmp_path: Path) -> None:
    save_baseline(make_baseline("main", repeat_set(STEADY)), tmp_path)
    with pytest.raises(HarnessError, match=r"no such baseline .*: main\)"):
        load_baseline("mian", tmp_path)


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 101])
def test_a_name_that_is_not_a_plain_word_is_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        make_baseline(name, repeat_set(STEADY))


def test_a_newer_schema_version_is_refused_by_number(tmp_path: Path) -> None:
    path = save_baseline(make_baseline("main", repeat_set(STEADY)), tmp_path)
    data = orjson.loads(path.read_bytes())
    data["schema_version"] = BASELINE_SCHEMA_VERSION + 1
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(HarnessError, match=f"schema version {BASELINE_SCHEMA_VERSION + 1}"):
        load_baseline("main", tmp_path)


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    path = save_baseline(make_baseline("main", repeat_set(STEADY)), tmp_path)
    data = orjson.loads(path.read_bytes())
    data["surprise"] = 1
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(HarnessError, match="surprise"):
        load_baseline("main", tmp_path)


# -- repeat sets from a directory of runs -------------------------------------------------------------
def write_runs(root: Path, values: list[float | None]) -> None:
    """K run directories, each with a report.json the fake reader below understands."""
    for index, value in enumerate(values):
        run_dir = root / f"2026-12-01T13-0{index}-ci"
        run_dir.mkdir(parents=True)
        (run_dir / "report.json").write_bytes(orjson.dumps({"run_id": run_dir.name, "cpu": value, "nodes": 4}))
    (root / "not-a-run").mkdir()


def read_fake_run(run_dir: Path) -> RunSample:
    report = orjson.loads((run_dir / "report.json").read_bytes())
    metadata = msgspec.structs.replace(METADATA, nodes=report["nodes"])
    return RunSample(run_id=report["run_id"], metadata=metadata, figures={"node_cpu_ms_per_proof": report["cpu"]})


def test_a_directory_of_runs_becomes_a_repeat_set_in_run_order(tmp_path: Path) -> None:
    write_runs(tmp_path, [4.5, None, 4.6])
    collected = collect_repeat_set(tmp_path, read_fake_run)
    assert collected.run_ids == [f"2026-12-01T13-0{index}-ci" for index in range(3)]
    assert collected.samples == {"node_cpu_ms_per_proof": [4.5, 4.6]}  # the run without the figure adds nothing


def test_a_single_run_directory_is_a_repeat_set_of_one(tmp_path: Path) -> None:
    write_runs(tmp_path, [4.5])
    only = next(path for path in tmp_path.iterdir() if (path / "report.json").exists())
    assert collect_repeat_set(only, read_fake_run).run_ids == [only.name]


def test_runs_that_are_not_alike_do_not_make_a_repeat_set(tmp_path: Path) -> None:
    write_runs(tmp_path, [4.5, 4.6])
    odd = next(iter(sorted(tmp_path.glob("*/report.json"))))
    odd.write_bytes(orjson.dumps({"run_id": "odd", "cpu": 4.4, "nodes": 8}))
    with pytest.raises(HarnessError, match="nodes: 8 vs 4"):
        collect_repeat_set(tmp_path, read_fake_run)


def test_a_directory_without_runs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"no report\.json"):
        collect_repeat_set(tmp_path, read_fake_run)


def test_save_named_baseline_reads_a_directory_of_runs(tmp_path: Path) -> None:
    runs, baselines = tmp_path / "runs", tmp_path / "baselines"
    write_runs(runs, [4.5, 4.6, 4.4])
    path = save_named_baseline("main", runs, read_fake_run, directory=baselines)
    assert load_baseline(path).samples == {"node_cpu_ms_per_proof": [4.5, 4.6, 4.4]}
    with pytest.raises(HarnessError, match="run reader"):
        save_named_baseline("main", runs, directory=baselines)


def test_the_checkout_root_is_the_nearest_directory_holding_git_or_pyproject(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    assert checkout_root(tmp_path / "repo" / "a" / "b") == (tmp_path / "repo").resolve()
    assert default_baselines_dir(tmp_path / "repo" / "a", environ={}) == (tmp_path / "repo").resolve() / "reports" / "baselines"
    assert default_baselines_dir(tmp_path / "repo", environ={"POPBENCH_BASELINES": "/x/y"}) == Path("/x/y")


def test_outside_any_checkout_baselines_live_under_the_working_directory(tmp_path: Path) -> None:
    if any((parent / marker).exists() for parent in tmp_path.resolve().parents for marker in (".git", "pyproject.toml")):
        pytest.skip("the temporary directory lies inside a checkout")
    assert checkout_root(tmp_path) == tmp_path.resolve()
