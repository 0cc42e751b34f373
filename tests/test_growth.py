"""The soak's growth verdict (harness/metrics/growth.py) on synthetic timelines, its [growth] thresholds,
its finding and its table. The leak it must catch is tests/test_leak_fault.py."""

from __future__ import annotations

import random

import msgspec
import pytest
from scipy import stats  # type: ignore[import-untyped]

from harness.metrics.growth import fit, growth
from harness.metrics.results import FindingKind, GrowthVerdict
from harness.metrics.timeline import NodeState, SampleRow
from harness.profile import GrowthThresholds, profile_from_dict
from harness.report.render import growth_rows
from popbench.errors import ConfigError

INTERVAL_S = 60.0


def state(uss_median: float, uss_max: float, fds: int = 40, db_per_block: float = 3000.0, cpu_per_block: float = 20.0) -> NodeState:
    return NodeState(nodes_up=16, height=100, view_changes=0, links_up=120, cpu_percent_mean=30.0, cpu_percent_max=40.0,
                     uss_mib_mean=uss_median, uss_mib_max=uss_max, mempool_mean=0.0, mempool_max=0, nodes_alive=16,
                     uss_mib_median=uss_median, open_fds_max=fds, db_bytes_per_block=db_per_block,
                     cpu_ms_per_block=cpu_per_block)  # fmt: skip


def series(minutes: int, uss_per_min: float, noise_mib: float = 0.5, seed: int = 1) -> list[SampleRow]:
    """A sample a minute from t = 0: USS from 12 MiB growing ``uss_per_min`` MiB a minute, with uniform noise."""
    rng = random.Random(seed)
    rows = []
    for minute in range(minutes + 1):
        uss = 12.0 + uss_per_min * minute + rng.uniform(-noise_mib, noise_mib)
        rows.append(SampleRow(t_s=minute * INTERVAL_S, nodes=state(uss, uss + 1.0 + rng.uniform(0, noise_mib),
                                                                  db_per_block=3000 + rng.uniform(-500, 500),
                                                                  cpu_per_block=20 + rng.uniform(-3, 3))))  # fmt: skip
    return rows


def test_a_flat_noisy_soak_is_not_flagged() -> None:
    rows = series(30, 0.0, noise_mib=1.0)
    verdict = growth(rows, (0.0, 30 * INTERVAL_S), GrowthThresholds())
    assert verdict.verdict == GrowthVerdict.FLAT, verdict
    assert not any(s.flagged for s in verdict.slopes)
    uss = next(s for s in verdict.slopes if s.quantity == "uss_mib_median")
    assert uss.points == 31 and uss.ci_low_per_hour is not None and uss.ci_high_per_hour is not None
    assert uss.ci_low_per_hour < 0 < uss.ci_high_per_hour  # the interval holds the true slope, 0


def test_one_mib_per_minute_of_growth_is_flagged_with_its_slope() -> None:
    rows = series(20, 1.0, noise_mib=1.0)
    verdict = growth(rows, (0.0, 20 * INTERVAL_S), GrowthThresholds())
    assert verdict.verdict == GrowthVerdict.FLAGGED, verdict
    flagged = {s.quantity for s in verdict.slopes if s.flagged}
    assert flagged == {"uss_mib_median", "uss_mib_max"}, verdict
    uss = next(s for s in verdict.slopes if s.quantity == "uss_mib_median")
    assert uss.ci_low_per_hour is not None and uss.ci_high_per_hour is not None
    assert uss.ci_low_per_hour < 60.0 < uss.ci_high_per_hour  # 1 MiB/min = 60 MiB/h, inside its interval
    assert "uss_mib_median" in verdict.reason


def test_only_the_steady_window_is_fitted() -> None:
    rows = series(20, 0.0)
    warm = [SampleRow(t_s=-INTERVAL_S * k, nodes=state(1.0 + k * 30, 2.0 + k * 30)) for k in range(1, 5)]  # steep, before t = 0
    verdict = growth(warm + rows, (0.0, 20 * INTERVAL_S), GrowthThresholds())
    assert verdict.verdict == GrowthVerdict.FLAT, verdict


def test_a_per_block_figure_starts_with_the_first_interval_wholly_in_the_window() -> None:
    rows = series(20, 0.0)
    start_up = msgspec.structs.replace(rows[1].nodes, db_bytes_per_block=-50_000.0, cpu_ms_per_block=-200.0)  # a WAL filling
    rows = [SampleRow(t_s=-1.0, nodes=rows[0].nodes), SampleRow(t_s=0.0, nodes=start_up), *rows[2:]]  # t = 0: the warm-up's interval
    verdict = growth(rows, (0.0, 20 * INTERVAL_S), GrowthThresholds())
    db = next(s for s in verdict.slopes if s.quantity == "db_bytes_per_block")
    uss = next(s for s in verdict.slopes if s.quantity == "uss_mib_median")
    assert db.points == uss.points - 1 == 19 and not db.flagged and verdict.verdict == GrowthVerdict.FLAT, verdict


def test_a_slope_over_the_threshold_is_not_flagged_unless_its_whole_interval_is() -> None:
    rows = series(12, 0.3, noise_mib=4.0, seed=2)  # 18 MiB/h under noise of +-4 MiB: suggestive, not shown
    verdict = growth(rows, (0.0, 12 * INTERVAL_S), GrowthThresholds())
    uss = next(s for s in verdict.slopes if s.quantity == "uss_mib_median")
    assert uss.slope_per_hour is not None and uss.ci_low_per_hour is not None
    assert uss.slope_per_hour > uss.threshold_per_hour > uss.ci_low_per_hour, uss
    assert not uss.flagged and verdict.verdict == GrowthVerdict.FLAT


@pytest.mark.parametrize(("minutes", "span_s"), [(4, 600.0), (30, 300.0)], ids=["too-few-points", "too-short-a-window"])
def test_too_few_samples_say_so_and_flag_nothing(minutes: int, span_s: float) -> None:
    rows = [row for row in series(minutes, 5.0) if row.t_s <= span_s]  # steep growth, but too little evidence
    verdict = growth(rows, (0.0, span_s), GrowthThresholds())
    assert verdict.verdict == GrowthVerdict.NOT_ENOUGH_SAMPLES, verdict
    assert not any(s.flagged for s in verdict.slopes)
    assert ("min_points" if minutes < 6 else "min_span_s") in verdict.reason


def test_the_interval_is_the_slopes_standard_error_times_students_t() -> None:
    rng = random.Random(3)
    points = [(float(t), 2.0 * t + rng.gauss(0, 5)) for t in range(12)]
    line = fit(points)
    assert line is not None
    expected = stats.linregress([t for t, _ in points], [y for _, y in points])
    assert line.slope == pytest.approx(expected.slope)
    assert line.ci_half == pytest.approx(expected.stderr * stats.t.ppf(0.975, len(points) - 2))
    assert fit(points[:2]) is None and fit([(1.0, 1.0)] * 5) is None


def test_thresholds_come_from_the_profile_and_a_typo_is_refused_by_name() -> None:
    profile = profile_from_dict({"growth": {"uss_mib_per_hour": 30, "min_points": 8}}, "test")
    assert profile.growth.uss_mib_per_hour == 30.0 and profile.growth.min_points == 8
    with pytest.raises(ConfigError, match=r"growth\.uss_mib_per_hr.*uss_mib_per_hour"):
        profile_from_dict({"growth": {"uss_mib_per_hr": 30}}, "test")
    with pytest.raises(ConfigError, match=r"growth\.fds_per_hour"):
        profile_from_dict({"growth": {"fds_per_hour": -1}}, "test")
    rows = series(20, 1.0, noise_mib=1.0)
    lenient = growth(rows, (0.0, 20 * INTERVAL_S), GrowthThresholds(uss_mib_per_hour=100.0))
    assert lenient.verdict == GrowthVerdict.FLAT  # 60 MiB/h is under a 100 MiB/h threshold


def test_a_flagged_uss_is_a_memory_growth_finding_and_a_row_of_the_table() -> None:
    from harness.metrics.findings import _growth

    verdict = growth(series(20, 1.0), (0.0, 20 * INTERVAL_S), GrowthThresholds())
    found = list(_growth(verdict))
    assert [f.kind for f in found] == [FindingKind.MEMORY_GROWTH, FindingKind.MEMORY_GROWTH]
    assert "uss_mib_max" in found[1].message
    rows = {row[0]: row for row in growth_rows(verdict)}
    assert rows["uss_mib_median"][4] == "FLAGGED" and rows["open_fds_max"][4] == "no"
    assert rows["uss_mib_median"][1].startswith("+6") and "MiB/h" in rows["uss_mib_median"][1]
    assert not list(_growth(growth(series(20, 0.0), (0.0, 20 * INTERVAL_S), GrowthThresholds())))
