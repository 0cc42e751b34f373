"""Shared pytest configuration for the test suite."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here rather than in pyproject.toml so the simulation's files stay in one place.
    config.addinivalue_line(
        "markers",
        "simulation: deterministic simulation of the PBFT engine (tests/sim); "
        "POPBENCH_SIM_SCHEDULES=N runs N schedules per family instead of the default",
    )
