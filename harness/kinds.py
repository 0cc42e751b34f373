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

    KILL = "kill"  # SIGKILL; with duration_s, forked again when it heals
    RESTART = "restart"
    BYZANTINE = "byzantine"
    PAUSE = "pause"  # SIGSTOP, SIGCONT when it heals
    PARTITION = "partition"  # no packet crosses between the target's sides until it heals
    LINK = "link"  # delay, jitter, loss, bandwidth on the target's links
    CLOCK_SKEW = "clock-skew"  # the target's wall clock offset and its timers' drift
    DISK = "disk"  # the target's database writes slow, failing, or the disk full
    WIPE = "wipe"  # killed, its data directory emptied, forked again: it rejoins from its peers
    LEAK = "leak"  # the target allocates and holds memory at mib_per_min: the soak's growth verdict must catch it


class LeaderRotation(StrEnum):
    """Who leads a view (docs/consensus.md, "Leader reputation"); the genesis's params.leader_reputation."""

    REPUTATION = "reputation"
    ROUND_ROBIN = "round-robin"


class FaultMechanism(StrEnum):
    """How a network fault is carried out (docs/faults.md); the report names the one that ran."""

    AUTO = "auto"  # kernel where the harness is root and iptables/tc work, else transport
    KERNEL = "kernel"  # iptables and tc netem on each node's own loopback address
    TRANSPORT = "transport"  # the nodes' own connections drop, hold or lose frames


class DiskMode(StrEnum):
    SLOW = "slow"  # every commit's write waits delay_ms first
    FAIL = "fail"  # writes fail with an I/O error
    FULL = "full"  # writes fail as on a full disk


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
