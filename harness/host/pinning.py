"""Which cores each process of a run may use, and at what priority.

Nodes spread round-robin over the cores. With 4 or more cores, a quarter of them (at least one) is kept
for the harness (supervisor, load drivers, miners) and the nodes stay off it, so the generator does not
steal the network's CPU. With fewer cores there is nothing to spare: nodes share every core and the
harness runs unpinned; the report shows the harness's own CPU share so its cost stays visible.

Sharing the cores, the harness would also share the scheduler's attention: a hundred busy nodes on two
cores left the supervisor (the collector, the status line) so little of them that its samples and lines
came tens of seconds late, though it needs about 1 % of a core. So where the harness has no cores of its
own, :func:`set_priorities` puts PRIORITY_GAP nice levels between it and the nodes: the harness raises its
own priority where it may (root, CAP_SYS_NICE or RLIMIT_NICE), and each node, forked from it, sets itself
back to the niceness the harness started with; where the harness may not, each node lowers its own
priority instead (raising one's niceness needs no privilege). The nodes keep equal shares among
themselves either way; the first keeps them level with the rest of the host, the fallback lets any
other work on the host go before them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import psutil

MIN_CORES_TO_RESERVE = 4
# Nice levels between the harness and nodes that share its cores. The scheduler (EEVDF, Linux 6.6+) gives
# a waking task little precedence for a few levels: against 100 busy processes on 2 cores, 100 psutil
# reads (10 ms of CPU) took 0.63 s median at equal niceness, 0.19 s 10 levels apart, 0.01 s 19-20 apart.
PRIORITY_GAP = 19
NICE_MIN, NICE_MAX = -20, 19


@dataclass(frozen=True)
class PinPlan:
    node_cores: list[int]
    harness_cores: list[int] | None  # None: the harness is not pinned

    def for_node(self, index: int) -> list[int]:
        return [self.node_cores[index % len(self.node_cores)]]

    def describe(self) -> str:
        harness = "unpinned" if self.harness_cores is None else f"cores {self.harness_cores}"
        return f"nodes round-robin over cores {self.node_cores}; harness {harness}"


@dataclass(frozen=True)
class Priorities:
    """The niceness the harness runs at and the one each node sets itself to as it starts."""

    harness: int
    nodes: int
    started: int  # the harness's niceness before: restore() returns to it when the run is over

    def restore(self) -> None:
        """Back to the niceness the harness started with (always permitted: it lowers the priority)."""
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, self.started)

    def describe(self) -> str:
        if self.harness == self.nodes:
            return f"priority: nodes and harness at nice {self.nodes}"
        return f"priority: harness at nice {self.harness}, nodes at nice {self.nodes} (they share its cores)"


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


def set_priorities(pins: PinPlan) -> Priorities:
    """Where the harness shares the nodes' cores, put PRIORITY_GAP nice levels between them: raise the
    harness's priority if this process may, else leave it and have the nodes lower theirs."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if pins.harness_cores is not None:
        return Priorities(base, base, base)  # the harness has cores of its own
    raised = max(NICE_MIN, base - PRIORITY_GAP)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, raised)
    except OSError:  # not permitted: the nodes step down instead
        return Priorities(base, min(NICE_MAX, base + PRIORITY_GAP), base)
    return Priorities(raised, base, base)


def set_own_niceness(nice: int) -> None:
    """A node child, as it starts: take the niceness the plan gives nodes (never higher than the harness's,
    which it inherited, so this needs no privilege)."""
    with contextlib.suppress(OSError):  # a platform without priorities: the node runs at the harness's
        os.setpriority(os.PRIO_PROCESS, 0, nice)
