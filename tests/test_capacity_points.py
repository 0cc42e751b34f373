"""A run's verdict under a service level: every shortfall is named with its figures."""

from __future__ import annotations

import msgspec
import pytest

from harness.capacity.points import RunKey, RunOutcome, Shortfall, Slo, failed_outcome, judge, round_rate, slo_from_profile
from harness.kinds import WorkloadMode
from harness.profile import load_profile
from popbench.errors import ConfigError

OPEN_KEY = RunKey(nodes=16, rate_per_s=100.0, mode=WorkloadMode.OPEN)
HEALTHY = RunOutcome(key=OPEN_KEY, offered_per_s=100.0, committed_per_s=99.0, p99_ms=800.0, within_target_share=1.0, stalled_share=0.0,
                     links_up_min_share=1.0)  # fmt: skip


def test_a_healthy_run_is_sustained() -> None:
    verdict = judge(HEALTHY, Slo())
    assert verdict.sustained and verdict.shortfalls == [] and verdict.why_not == []


@pytest.mark.parametrize(
    ("change", "shortfall", "words"),
    [
        ({"committed_per_s": 29.0}, Shortfall.BACKLOG, "committed 29.0/s < 95% of offered 100/s"),
        ({"p99_ms": 2400.0}, Shortfall.LATENCY, "p99 2400 ms > target 2000 ms"),
        ({"p99_ms": None}, Shortfall.LATENCY, "p99 unbounded"),
        ({"within_target_share": 0.9}, Shortfall.LATENCY, "90.0% within target < 99.0%"),
        ({"stalled_share": 0.4}, Shortfall.STALL, "no commit for 40% of the window"),
        ({"links_up_min_share": 0.5}, Shortfall.LINKS, "links up fell to 50%"),
        ({"crashed_nodes": 2}, Shortfall.CRASHED, "2 node(s) crashed"),
        ({"generator_fell_behind": True}, Shortfall.GENERATOR, "load generator fell behind"),
    ],
)
def test_each_broken_rule_is_named_with_its_figures(change: dict[str, object], shortfall: Shortfall, words: str) -> None:
    verdict = judge(msgspec.structs.replace(HEALTHY, **change), Slo())
    assert not verdict.sustained
    assert verdict.shortfalls == [shortfall]
    assert verdict.why_not[0].startswith(f"{shortfall.value}: ") and words in verdict.why_not[0]


def test_a_run_that_measured_nothing_says_only_that_it_failed() -> None:
    verdict = judge(failed_outcome(OPEN_KEY, "node 3 never came up"), Slo())
    assert verdict.shortfalls == [Shortfall.FAILED] and verdict.why_not == ["failed: node 3 never came up"]


def test_a_closed_loop_probe_is_judged_on_health_only() -> None:
    probe = msgspec.structs.replace(
        HEALTHY, key=RunKey(nodes=16, rate_per_s=5000.0, mode=WorkloadMode.CLOSED), committed_per_s=900.0, p99_ms=9000.0
    )
    assert judge(probe, Slo()).sustained
    assert judge(msgspec.structs.replace(probe, crashed_nodes=1), Slo()).shortfalls == [Shortfall.CRASHED]


def test_the_slo_is_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"slo\.p99_target_ms"):
        Slo(p99_target_ms=0.0)
    with pytest.raises(ConfigError, match=r"slo\.within_target_share"):
        Slo(within_target_share=1.5)


def test_the_slo_is_filled_from_a_profile() -> None:
    profile = load_profile("ci").slo
    slo = slo_from_profile(profile)
    assert (slo.p99_target_ms, slo.within_target_share, slo.min_keep_pace, slo.min_links_share) == (
        profile.latency_ms, profile.within_share, profile.min_delivery, profile.min_links_share)  # fmt: skip


def test_rates_keep_three_significant_digits() -> None:
    assert [round_rate(r) for r in (1234.5, 88.888, 0.71234, 100.0)] == [1230.0, 88.9, 0.712, 100.0]
    with pytest.raises(ValueError, match="positive"):
        round_rate(0.0)
