"""Which cores each process of a run may use.

Nodes spread round-robin over the cores. With 4 or more cores, a quarter of them (at least one) is kept
for the harness (supervisor, load drivers, miners) and the nodes stay off it, so the generator does not
steal the network's CPU. With fewer cores there is nothing to spare: nodes share every core and the
harness runs unpinned; the report shows the harness's own CPU share so its cost stays visible.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil

MIN_CORES_TO_RESERVE = 4


@dataclass(frozen=True)
class PinPlan:
    node_cores: list[int]
    harness_cores: list[int] | None  # None: the harness is not pinned

    def for_node(self, index: int) -> list[int]:
        return [self.node_cores[index % len(self.node_cores)]]

    def describe(self) -> str:
        harness = "unpinned" if self.harness_cores is None else f"cores {self.harness_cores}"
        return f"nodes round-robin over cores {self.node_cores}; harness {harness}"


def available_cores() -> list[int]:
    try:
        return sorted(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):
        return list(range(psutil.cpu_count() or 1))


def plan(cores: list[int]) -> PinPlan:
    if len(cores) >= MIN_CORES_TO_RESERVE:
        reserved = max(1, len(cores) // 4)
        return PinPlan(cores[reserved:], cores[:reserved])
    return PinPlan(list(cores), None)


def pin_harness(pins: PinPlan) -> None:
    """Keep the supervisor (and so everything it forks until pinned) on the harness's cores, if any."""
    if pins.harness_cores is None:
        return
    # affinity unsupported: the report's pinning note still says what was planned
    with contextlib.suppress(AttributeError, psutil.Error, OSError):
        psutil.Process().cpu_affinity(pins.harness_cores)
