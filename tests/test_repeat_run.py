"""`popbench run --repeat 2` for real (two whole runs of a tiny profile into one directory), what it writes
(run-1, run-2, repeats.json, pyperf.json that pyperf itself reads), `popbench compare` of the set against
itself, and the repeat loop's stopping rule (an interrupted repeat ends the set and the finished ones stay)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from harness.cli.main import main
from harness.regress.figures import WATCHED_FIGURES
from harness.report.compare import load_runs, read_run
from harness.run.repeat import RepeatRun, run_repeats
from popbench.errors import ConfigError
from tests.test_harness_run import RUN_TIMEOUT_S, assert_ran_clean, popbench, write_profile


@pytest.fixture(scope="module")
def repeat_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real 2-repeat set, shared by the tests below (the runs are the expensive part)."""
    tmp = tmp_path_factory.mktemp("repeat")
    directory = tmp / "set"
    done = subprocess.run(popbench("run", "--profile", str(write_profile(tmp)), "--repeat", "2", "--output", str(directory)),
                          capture_output=True, text=True, timeout=2 * RUN_TIMEOUT_S)  # fmt: skip
    # 3: a run was not valid as a measurement because this shared test host starved the load generator
    # (harness.report.score.ExitStatus.NOT_VALID); the set itself is still complete and what is tested here
    assert done.returncode in (0, 3), done.stdout + done.stderr
    return directory, done.stdout


def test_a_repeat_set_holds_two_clean_runs_with_exact_cost_figures(repeat_set: tuple[Path, str]) -> None:
    directory, output = repeat_set
    assert sorted(p.name for p in directory.iterdir() if p.is_dir()) == ["run-1", "run-2"]
    for run_dir in (directory / "run-1", directory / "run-2"):
        assert_ran_clean(run_dir, output)
        report = orjson.loads((run_dir / "report.json").read_bytes())
        assert report["status"] == "complete"
        cost = report["metrics"]["cost"]
        assert cost["exact_edges"] is True and cost["nodes_measured"] == 4 and cost["load_processes_measured"] == 1
        assert cost["proofs_committed"] > 0 and cost["blocks_committed"] > 0 and "Status" not in cost["messages_per_block_by_type"]
        sample = read_run(run_dir)
        assert all(sample.figures[spec.name] is not None for spec in WATCHED_FIGURES), sample.figures
    assert "repeat 2/2" in output and "CV %" in output  # the spread table on the terminal


def test_repeats_json_summarises_every_watched_figure_across_the_runs(repeat_set: tuple[Path, str]) -> None:
    directory, _ = repeat_set
    summary = orjson.loads((directory / "repeats.json").read_bytes())
    assert summary["runs"] == ["run-1", "run-2"] and summary["left_out"] == [] and summary["wall_s"] > 0
    figures = {figure["name"]: figure for figure in summary["figures"]}
    assert set(figures) == {spec.name for spec in WATCHED_FIGURES}
    cpu = figures["node_cpu_ms_per_proof"]
    assert len(cpu["samples"]) == 2 and cpu["spread"]["median"] == pytest.approx(sum(cpu["samples"]) / 2)
    assert summary["metadata"]["profile"] == "tiny" and summary["metadata"]["nodes"] == 4


def test_pyperf_reads_the_suite_and_the_set_compares_equal_to_itself(repeat_set: tuple[Path, str]) -> None:
    directory, _ = repeat_set
    stats = subprocess.run([sys.executable, "-m", "pyperf", "stats", str(directory / "pyperf.json")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert stats.returncode == 0, stats.stderr
    assert "node_cpu_ms_per_proof" in stats.stdout and "Total number of values: 2" in stats.stdout, stats.stdout
    compared = subprocess.run(popbench("compare", str(directory), str(directory)), capture_output=True, text=True, timeout=60)
    assert compared.returncode == 3, compared.stdout + compared.stderr  # 2 vs 2: no test can judge it
    assert "exit 3: inconclusive: 2 vs 2 runs cannot reach p < 0.05" in compared.stdout
    assert len(load_runs(directory).repeat_set.run_ids) == 2


@pytest.mark.parametrize(
    ("args", "warned"), [(["--repeat", "3"], True), (["--repeat", "1"], True), (["--repeat", "4"], False), ([], False)]
)
def test_a_repeat_count_too_small_for_compare_is_warned_about_before_any_run(args: list[str], warned: bool) -> None:
    # a profile that does not exist stops the command right after the warning, before anything is forked
    done = CliRunner().invoke(main, ["run", *args, "--profile", "no-such-profile"])
    assert done.exit_code == 2
    warning = "is below 4, the fewest runs a side with which popbench compare's test (two-sided Mann-Whitney U) can reach p < 0.05"
    assert (warning in done.output) is warned, done.output
    if args == ["--repeat", "3"]:
        assert "3 vs 3 can do no better than p = 0.1, so a comparison of this set will be inconclusive (exit 3)" in done.output


# -- the loop's stopping rule (no processes: the run is a stand-in that records what it was asked) ----
def test_an_interrupted_repeat_ends_the_set_and_keeps_the_finished_ones(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    def run_once(run_dir: Path, run_id: str) -> RepeatRun:
        asked.append((run_dir.name, run_id))
        return RepeatRun(run_dir=run_dir, exit_status=0, interrupted=len(asked) == 2)

    outcome = run_repeats(tmp_path / "set", 5, "set", run_once, lambda line: None)
    assert asked == [("run-1", "set-1"), ("run-2", "set-2")] and outcome.interrupted
    assert [run.interrupted for run in outcome.runs] == [False, True]

    def ctrl_c_between_runs(run_dir: Path, run_id: str) -> RepeatRun:
        raise KeyboardInterrupt

    assert run_repeats(tmp_path / "other", 3, "other", ctrl_c_between_runs, lambda line: None).runs == []
    (tmp_path / "stale" / "run-1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already holds runs"):
        run_repeats(tmp_path / "stale", 2, "stale", run_once, lambda line: None)
