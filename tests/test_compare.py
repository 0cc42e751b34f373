"""`popbench compare` and `popbench baseline` through the real CLI, on stored reports: a report read as a
RunSample, the like-for-like refusal (exit 2, --force compares), too few runs for a test (exit 3,
inconclusive, unless accepted), a regression beyond the fixed tolerance (exit 1 however few the runs),
5 against 5 (exit 1 on a regression, 0 A/A), baselines saved, listed and compared by name, JSON, Markdown
and $GITHUB_STEP_SUMMARY output. A real repeat set is in tests/test_repeat_run.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from harness.cli.main import main
from harness.regress.figures import REPORT_FIELDS, WATCHED_FIGURES
from harness.report.build import load_report
from harness.report.compare import load_runs, load_side, run_sample

FIXTURES = Path(__file__).parent / "fixtures"
SMOKE_V1 = FIXTURES / "report_v1_smoke.json"


def write_run(directory: Path, edit: dict[tuple[str, ...], Any] | None = None, source: Path = SMOKE_V1) -> Path:
    """A run directory holding ``source`` with each (path -> value) edit applied to its JSON."""
    report = orjson.loads(source.read_bytes())
    for path, value in (edit or {}).items():
        target = report
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    directory.mkdir(parents=True)
    (directory / "report.json").write_bytes(orjson.dumps(report))
    return directory


def popbench(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_a_stored_report_reads_as_a_run_sample_with_its_figures_and_metadata() -> None:
    sample = run_sample(load_report(SMOKE_V1))
    assert set(REPORT_FIELDS) == {spec.name for spec in WATCHED_FIGURES}  # every watched figure has a place in the report
    assert sample.figures["frames_per_proof"] == pytest.approx(6.976878612716763)
    assert sample.figures["commit_latency_p99_ms"] == pytest.approx(63.62825)
    assert sample.figures["committed_per_s"] == pytest.approx(190.71428571428572)
    assert sample.figures["node_cpu_ms_per_proof"] is None  # a version-1 report has no cost section
    meta = sample.metadata
    assert (meta.profile, meta.nodes, meta.consensus, meta.topology, meta.workload_mode) == ("smoke", 4, "pbft", "full-mesh", "open")
    assert (meta.cpu_model, meta.cores_logical, meta.popbench_version, meta.score_version) == ("AMD EPYC", 2, "0.1.0", 1)
    assert meta.profile_digest and len(meta.profile_digest) == 16


def test_a_run_against_itself_is_inconclusive_not_a_pass(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    done = popbench("compare", str(run), str(run))
    assert done.exit_code == 3, done.output
    assert "too few samples INCONCLUSIVE" in done.output and "no significant regression" not in done.output
    assert done.output.splitlines()[-1].startswith("exit 3: inconclusive: 1 vs 1 runs cannot reach p < 0.05")


def test_runs_that_differ_in_nodes_are_refused_with_exit_2_unless_forced(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base")
    new = write_run(tmp_path / "new", {("deployment", "nodes"): 8})
    refused = popbench("compare", str(base), str(new))
    assert refused.exit_code == 2, refused.output
    assert "not like for like: nodes: 4 vs 8 (cost per proof grows with the number of nodes" in refused.output
    forced = popbench("compare", "--force", "--accept-inconclusive", str(base), str(new))
    assert forced.exit_code == 0, forced.output
    assert "forced past like-for-like mismatches" in forced.output and "frames per proof" in forced.output


def test_one_run_against_one_fails_on_a_change_beyond_the_fixed_tolerance(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base")
    heavier = write_run(tmp_path / "new", {("metrics", "work", "frames_per_proof"): 6.976878612716763 * 1.2})
    failed = popbench("compare", "--accept-inconclusive", str(base), str(heavier))  # what is untested cannot hide it
    assert failed.exit_code == 1, failed.output
    assert "slower (fixed tolerance) REGRESSION" in failed.output
    last = failed.output.splitlines()[-1]  # no test ran, so nothing is called significant
    assert last == "exit 1: regression beyond the fixed tolerance (too few runs for a test): frames per proof (fixed tolerance)"


FRAMES = ("metrics", "work", "frames_per_proof")
P50 = ("metrics", "throughput", "commit_latency", "p50_ms")
P99 = ("metrics", "throughput", "commit_latency", "p99_ms")


def write_set(directory: Path, runs: int, scale: dict[tuple[str, ...], float] | None = None) -> Path:
    """``runs`` run directories whose exact counters and latencies spread a little from run to run, each
    figure at ``path`` multiplied by ``scale[path]`` (a change of the code)."""
    report = orjson.loads(SMOKE_V1.read_bytes())
    for index in range(runs):
        edits = {}
        for path in (FRAMES, P50, P99):
            value = report
            for key in path:
                value = value[key]
            edits[path] = value * (1 + index * 0.002) * (scale or {}).get(path, 1.0)
        write_run(directory / f"run-{index + 1}", edits)
    return directory


def test_three_runs_a_side_are_inconclusive_exit_3_and_no_tick(tmp_path: Path) -> None:
    base, new = write_set(tmp_path / "base", 3), write_set(tmp_path / "new", 3, {FRAMES: 1.01})
    summary = tmp_path / "step-summary.md"
    done = popbench("compare", str(base), str(new), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.exit_code == 3, done.output
    last = done.output.splitlines()[-1]
    assert last.startswith("exit 3: inconclusive: 3 vs 3 runs cannot reach p < 0.05 (the smallest possible p is 0.1)")
    assert "run at least 4 a side (popbench run --repeat 4), or pass --accept-inconclusive" in last
    markdown = summary.read_text()
    assert markdown.startswith("### popbench compare: ❔ exit 3: inconclusive") and "✅" not in markdown
    accepted = popbench("compare", "--accept-inconclusive", "--markdown", str(base), str(new))
    assert accepted.exit_code == 0, accepted.output
    assert accepted.output.startswith("### popbench compare: ❔ exit 0: inconclusive (accepted with --accept-inconclusive): 3 vs 3")
    assert "✅" not in accepted.output and "no significant regression" not in accepted.output


def test_few_runs_with_a_giant_change_fail_with_exit_1(tmp_path: Path) -> None:
    base, new = write_set(tmp_path / "base", 3), write_set(tmp_path / "new", 3, {P99: 676.0})  # +67,500 %: smoke against pow
    done = popbench("compare", "--json", str(base), str(new))
    assert done.exit_code == 1, done.output
    result = orjson.loads(done.stdout)
    assert result["outcome"] == "regression" and result["regressions"] == ["commit_latency_p99_ms"]
    p99 = next(f for f in result["figures"] if f["name"] == "commit_latency_p99_ms")
    assert p99["basis"] == "fixed tolerance" and p99["verdict"] == "slower" and p99["change_percent"] > 60_000


def test_five_runs_a_side_of_the_same_code_pass_with_exit_0(tmp_path: Path) -> None:
    done = popbench("compare", "--markdown", str(write_set(tmp_path / "base", 5)), str(write_set(tmp_path / "new", 5)))
    assert done.exit_code == 0, done.output
    assert done.output.startswith("### popbench compare: ✅ exit 0: no significant regression")


def test_five_runs_a_side_flag_a_significant_regression_with_exit_1(tmp_path: Path) -> None:
    for index in range(5):
        frames = 7.0 + index * 0.01
        write_run(tmp_path / "base" / f"run-{index + 1}", {("metrics", "work", "frames_per_proof"): frames})
        write_run(tmp_path / "new" / f"run-{index + 1}", {("metrics", "work", "frames_per_proof"): frames * 1.1})
    done = popbench("compare", "--json", str(tmp_path / "base"), str(tmp_path / "new"))
    assert done.exit_code == 1, done.output
    result = orjson.loads(done.stdout)
    assert result["regressions"] == ["frames_per_proof"] and result["exit_status"] == 1
    frames = next(f for f in result["figures"] if f["name"] == "frames_per_proof")
    assert frames["basis"] == "mann-whitney" and frames["u_test"]["p_value"] == pytest.approx(2 / 252)


def test_partial_runs_are_left_out_of_a_set_and_named(tmp_path: Path) -> None:
    write_run(tmp_path / "set" / "run-1")
    write_run(tmp_path / "set" / "run-2", {("status",): "partial", ("ended_early",): "interrupted by SIGINT"})
    side = load_runs(tmp_path / "set")
    assert len(side.repeat_set.run_ids) == 1 and side.left_out == ["run-2: partial (interrupted by SIGINT)"]


def test_baseline_save_list_and_compare_by_name_with_markdown_in_the_step_summary(tmp_path: Path) -> None:
    run, baselines = write_run(tmp_path / "run"), tmp_path / "baselines"
    saved = popbench("baseline", "save", "main", str(run), "--baselines-dir", str(baselines))
    assert saved.exit_code == 0 and (baselines / "main" / "baseline.json").is_file(), saved.output
    listed = popbench("baseline", "list", "--baselines-dir", str(baselines))
    assert listed.output.startswith("main") and "1 runs" in listed.output and "smoke" in listed.output
    assert load_side("main", baselines).label == "baseline main"
    summary = tmp_path / "step-summary.md"
    done = popbench("compare", "--baseline", "main", "--markdown", "--baselines-dir", str(baselines), str(run),
                    env={"GITHUB_STEP_SUMMARY": str(summary)})  # fmt: skip
    assert done.exit_code == 3, done.output  # one run a side: inconclusive
    assert done.output.startswith("### popbench compare: ❔ exit 3") and "| frames per proof | frames |" in done.output
    assert summary.read_text() == done.output  # the same Markdown went to the job's summary page
    unknown = popbench("compare", "--baselines-dir", str(baselines), "nosuch", str(run))
    assert unknown.exit_code == 2 and "no such baseline" in unknown.output and "main" in unknown.output


def checkout(root: Path) -> Path:
    """A checkout's root as the baselines finder knows it: a directory holding pyproject.toml."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def test_a_baseline_saved_at_the_root_is_found_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POPBENCH_BASELINES", raising=False)
    root = checkout(tmp_path / "repo")
    run = write_run(root / "reports" / "main-run")
    monkeypatch.chdir(root)
    saved = popbench("baseline", "save", "main", str(run))
    assert saved.exit_code == 0, saved.output
    assert (root / "reports" / "baselines" / "main" / "baseline.json").is_file()
    deeper = root / "harness" / "cli"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)  # a CI step that runs in a subdirectory of the checkout
    done = popbench("compare", "--baseline", "main", str(run))
    assert "no such baseline" not in done.output and "baseline main ->" in done.output, done.output
    assert popbench("baseline", "list").output.startswith("main")


def test_the_environment_and_the_option_say_where_baselines_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, elsewhere = checkout(tmp_path / "repo"), tmp_path / "shared-baselines"
    run = write_run(root / "run")
    monkeypatch.chdir(root)
    monkeypatch.setenv("POPBENCH_BASELINES", str(elsewhere))
    assert popbench("baseline", "save", "main", str(run)).exit_code == 0
    assert (elsewhere / "main" / "baseline.json").is_file() and not (root / "reports").exists()
    assert "no baselines under" in popbench("baseline", "list", "--baselines-dir", str(tmp_path / "other")).output  # the option wins
    monkeypatch.delenv("POPBENCH_BASELINES")
    assert popbench("baseline", "list").output == f"no baselines under {root / 'reports' / 'baselines'}\n"
