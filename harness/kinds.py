"""The harness's vocabulary, defined once: topologies, load shapes, faults, run phases, child kinds.

Profiles validate against these enums and the CLI builds its choices from them. The node's own kinds
(consensus, Byzantine behaviour, crypto backend) live in :mod:`popbench.kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Topology(StrEnum):
    """How nodes find and dial each other (harness/host/topology.py)."""

    FULL_MESH = "full-mesh"
    HIERARCHY = "hierarchy"
    K_REGULAR = "k-regular"


class WorkloadMode(StrEnum):
    """Open loop: proofs due on a schedule. Closed loop: a fixed number in flight."""

    OPEN = "open"
    CLOSED = "closed"


class LoadShape(StrEnum):
    """How the open-loop rate changes over the window."""

    CONSTANT = "constant"
    RAMP = "ramp"
    STEPS = "steps"


class InvalidKind(StrEnum):
    """The ways a driver makes a proof invalid on purpose; every one must be refused."""

    BAD_SIGNATURE = "bad_signature"
    LOW_WORK = "low_work"
    REPLAY = "replay"


class FaultKind(StrEnum):
    """What a profile's ``[[faults]]`` entry does to a node."""

    KILL = "kill"
    RESTART = "restart"
    BYZANTINE = "byzantine"


class RunPhase(StrEnum):
    """The moments a run records, in the order they happen (docs/supervisor.md)."""

    CALIBRATED = "calibrated"
    DEPLOYED = "deployed"
    FORKING = "forking"
    FORKED = "forked"
    LISTENING = "listening"
    CONNECTED = "connected"
    PREPARED = "prepared"
    GO = "go"
    WINDOW_END = "window_end"
    DRAINED = "drained"
    TIPS_CONVERGED = "tips_converged"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ChildKind(StrEnum):
    """What a supervised child process is."""

    NODE = "node"
    DRIVER = "driver"
    MINER = "miner"
    OTHER = "other"


@dataclass(frozen=True, order=True)
class ChildId:
    """A supervised child: its kind and its index among children of that kind (``node-3``)."""

    kind: ChildKind
    index: int

    def __str__(self) -> str:
        return f"{self.kind}-{self.index}"
