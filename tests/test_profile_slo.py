"""The [slo] section: every shipped profile declares one, and bad values are refused by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.profile import list_profiles, load_profile, profile_from_dict
from popbench.errors import ConfigError


@pytest.mark.parametrize("name", [name for name, _ in list_profiles()])
def test_every_shipped_profile_declares_its_service_level(name: str) -> None:
    profile = load_profile(name)
    assert "[slo]" in Path(profile.source).read_text(), f"{name} relies on the default service level"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("latency_ms", 0, "must be above 0"),
        ("within_share", 1.5, "must be in (0, 1], got 1.5"),
        ("min_delivery", 0.0, "must be in (0, 1], got 0"),
        ("min_links_share", -0.1, "must be in (0, 1], got -0.1"),
    ],
)
def test_a_bad_service_level_is_refused_with_its_key(key: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        profile_from_dict({"slo": {key: value}}, "test.toml")
    assert f"slo.{key}" in str(caught.value) and message in str(caught.value)


def test_an_unknown_service_level_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"slo\.latency_p99"):
        profile_from_dict({"slo": {"latency_p99": 100}}, "test.toml")
