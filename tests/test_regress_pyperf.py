"""A repeat set exported as a pyperf suite, read back by pyperf's API and by its command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyperf
import pytest

from harness.regress.pyperf_export import export_pyperf_suite
from harness.regress.verdict import RepeatSet
from popbench.errors import HarnessError
from tests.test_regress_verdict import METADATA, RUN_IDS, SLOWER_CPU, STEADY, repeat_set

PYPERF_TIMEOUT_S = 60.0


def pyperf_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pyperf", *args], capture_output=True, text=True, timeout=PYPERF_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"pyperf {' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def test_each_figure_is_a_benchmark_with_one_value_per_repeat(tmp_path: Path) -> None:
    export = export_pyperf_suite(repeat_set(STEADY), tmp_path / "base.json")
    suite = pyperf.BenchmarkSuite.load(export.path)
    assert sorted(suite.get_benchmark_names()) == sorted(STEADY)
    cpu = suite.get_benchmark("node_cpu_ms_per_proof")
    assert cpu.get_unit() == "second"
    assert cpu.get_values() == pytest.approx([value / 1000 for value in STEADY["node_cpu_ms_per_proof"]])
    assert cpu.get_nrun() == len(RUN_IDS)
    assert suite.get_benchmark("frames_per_proof").get_unit() == "integer"
    assert cpu.get_metadata()["popbench_direction"] == "lower_is_better"


def test_figures_pyperf_cannot_hold_are_skipped_and_named(tmp_path: Path) -> None:
    samples = {**STEADY, "bytes_per_proof": [0.0, 1.0, 2.0, 3.0, 4.0]}
    export = export_pyperf_suite(repeat_set(samples), tmp_path / "x.json")
    skipped = {s.name: s.reason for s in export.skipped}
    assert skipped["bytes_per_proof"] == "pyperf needs values > 0, got 0"
    assert skipped["node_cpu_ms_per_block"] == "not measured"
    with pytest.raises(HarnessError, match="no figure to export"):
        export_pyperf_suite(RepeatSet(metadata=METADATA, run_ids=[], samples={}), tmp_path / "empty.json")


def test_pyperf_stats_hist_and_compare_to_read_the_files(tmp_path: Path) -> None:
    base = export_pyperf_suite(repeat_set(STEADY), tmp_path / "base.json").path
    new = export_pyperf_suite(repeat_set(SLOWER_CPU), tmp_path / "new.json").path
    stats = pyperf_cli("stats", base)
    assert "node_cpu_ms_per_proof" in stats and "Total number of values: 5" in stats
    assert "Median +- MAD:   4.50 ms +- 0.01 ms" in stats
    assert "node_cpu_ms_per_proof" in pyperf_cli("hist", base)
    compared = pyperf_cli("compare_to", base, new)
    assert "node_cpu_ms_per_proof: Mean +- std dev: [base] 4.50 ms +- 0.02 ms -> [new] 4.97 ms +- 0.02 ms: 1.10x slower" in compared
