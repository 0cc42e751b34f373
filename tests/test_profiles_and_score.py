"""Profiles are validated at the edge; the score follows its published formula (docs/scoring.md)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.profile import apply_overrides, list_profiles, load_profile, profile_from_dict
from popbench.errors import ConfigError


@pytest.mark.parametrize("name", [name for name, _ in list_profiles()])
def test_every_shipped_profile_loads_and_describes_itself(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name and profile.description


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"network": {"nodez": 4}}, "network.nodez"),
        ({"netwrok": {}}, "netwrok"),
        ({"workload": {"rate": "fast"}}, "workload.rate"),
        ({"network": {"topology": "star"}}, "network.topology"),
        ({"workload": {"mode": "closed", "rate": 0.0}}, "workload.rate"),
        ({"run": {"duration_s": 2.0, "warmup_s": 1.0, "cooldown_s": 1.0}}, "run.warmup_s"),
        ({"faults": [{"at_s": 1.0, "kind": "explode", "node": 0}]}, "faults[0].kind"),
        ({"faults": [{"kind": "kill", "node": 0}]}, "faults[0].at_s"),
        ({"network": {"regions": ["a", "b"], "latency_ms": {"a": {"c": 5}}}}, "network.latency_ms.a.c"),
    ],
)
def test_bad_profile_input_is_refused_with_the_key_and_the_file(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        profile_from_dict(data, "bad.toml")
    assert caught.value.key == key and "bad.toml" in str(caught.value)


def test_command_line_overrides_are_validated_like_the_file() -> None:
    profile = apply_overrides(load_profile("smoke"), nodes=7, rate=50.0)
    assert profile.network.nodes == 7 and profile.workload.rate == 50.0
    with pytest.raises(ConfigError):
        apply_overrides(load_profile("smoke"), nodes=0)


# The score (formula version 2) is tested from hand-built metrics in tests/test_score_v2.py.
