"""Network, clock, disk and leak faults as the nodes suffer them: in the kernel, or emulated by the nodes.

Every active fault contributes to each node's share of trouble; whenever a fault is applied or healed
the shares are recomputed and each node whose share changed is told. Two mechanisms (docs/faults.md):

- **kernel** (partitions and links, where the harness is root and every node has its own loopback
  address): iptables drops and tc netem shapes packets between node pairs (harness/faults/kernel.py);
- **transport** (everything else, and always for clocks, disks and leaks): the harness writes
  ``<data dir>/node-<id>.faults.json`` and sends the node SIGUSR1; its connections drop or hold frames,
  its clock and its database obey (popbench/faults.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.faults.kernel import KernelNet
from harness.host.deploy import PER_NODE, node_host
from harness.kinds import FaultKind, FaultMechanism
from harness.profile import Fault, Profile
from harness.run.fault_targets import Pair, cut_pairs, partition_sides
from popbench.faults import ANY_PEER, faults_path, write_faults

NET_KINDS = (FaultKind.PARTITION, FaultKind.LINK)
NODE_KINDS = (FaultKind.CLOCK_SKEW, FaultKind.DISK, FaultKind.LEAK)


class KernelLinks(Protocol):
    """What the kernel mechanism offers (harness/faults/kernel.py's KernelNet)."""

    def cut(self, pairs: list[Pair]) -> None: ...

    def uncut(self, pairs: list[Pair]) -> None: ...

    def shape(self, pairs: list[Pair], delay_ms: float, jitter_ms: float, loss: float, rate_kbit: float) -> int: ...

    def unshape(self, handle: int) -> None: ...

    def close(self) -> None: ...


@dataclass
class Active:
    fault: Fault
    nodes: list[int]
    mechanism: FaultMechanism
    pairs: list[Pair] = field(default_factory=list)
    handle: int | None = None


class NetFaults:
    """The partitions, shaped links, skewed clocks and failing disks in force, and who has been told."""

    def __init__(self, data_dir: Path, n: int, pids: Callable[[], dict[int, int]], kernel: KernelLinks | None,
                 kernel_unavailable: str | None, kernel_cannot_delay: str | None = None) -> None:  # fmt: skip
        self.data_dir = data_dir
        self.n = n
        self.pids = pids
        self.kernel = kernel
        self.kernel_unavailable = kernel_unavailable  # why the kernel mechanism cannot run here (None: it can)
        self.kernel_cannot_delay = kernel_cannot_delay  # why it cannot delay or jitter (no netem; None: it can)
        self.active: dict[int, Active] = {}
        self._told: dict[int, dict[str, Any]] = {}

    def mechanism_for(self, fault: Fault) -> FaultMechanism:
        """Kernel for partitions and links when asked for (or by default) and available; else transport."""
        return FaultMechanism.TRANSPORT if self._why_not_kernel(fault) else FaultMechanism.KERNEL

    def _why_not_kernel(self, fault: Fault) -> str:
        """Why ``fault`` is emulated by the nodes ("" when the kernel does it)."""
        if fault.kind not in NET_KINDS:
            return "only partitions and links can be done by the kernel"
        if fault.mechanism == FaultMechanism.TRANSPORT:
            return "the fault asks for the transport mechanism"
        if self.kernel is None:
            return self.kernel_unavailable or "no kernel mechanism"
        if fault.kind == FaultKind.LINK and (fault.delay_ms or fault.jitter_ms) and self.kernel_cannot_delay:
            return self.kernel_cannot_delay
        return ""

    def apply(self, index: int, fault: Fault, nodes: list[int]) -> dict[str, Any]:
        mechanism = self.mechanism_for(fault)
        entry = Active(fault, nodes, mechanism)
        if fault.kind == FaultKind.PARTITION:
            entry.pairs = cut_pairs(*partition_sides(fault, nodes, self.n))
        elif fault.kind == FaultKind.LINK:
            entry.pairs = cut_pairs(nodes, range(self.n))
        if mechanism == FaultMechanism.KERNEL:
            self._kernel_apply(entry)
        self.active[index] = entry
        self._publish()
        detail = {"mechanism": mechanism.value, "pairs": len(entry.pairs)}
        if fault.kind in NET_KINDS and fault.mechanism != FaultMechanism.TRANSPORT and mechanism != FaultMechanism.KERNEL:
            detail["note"] = f"kernel mechanism unavailable ({self._why_not_kernel(fault)}): emulated by the nodes"
        return detail

    def heal(self, index: int) -> bool:
        entry = self.active.pop(index, None)
        if entry is None:
            return False
        if entry.mechanism == FaultMechanism.KERNEL:
            self._kernel_heal(entry)
        self._publish()
        return True

    def heal_all(self) -> list[int]:
        healed = sorted(self.active)
        for index in healed:
            self.heal(index)
        return healed

    def close(self) -> None:
        self.heal_all()
        if self.kernel is not None:
            self.kernel.close()

    # -- kernel --------------------------------------------------------------------------------------
    def _kernel_apply(self, entry: Active) -> None:
        assert self.kernel is not None
        fault = entry.fault
        if fault.kind == FaultKind.PARTITION:
            self.kernel.cut(entry.pairs)
        else:
            entry.handle = self.kernel.shape(entry.pairs, fault.delay_ms, fault.jitter_ms, fault.loss, fault.rate_kbit)

    def _kernel_heal(self, entry: Active) -> None:
        assert self.kernel is not None
        if entry.fault.kind == FaultKind.PARTITION:
            self.kernel.uncut(entry.pairs)
        elif entry.handle is not None:
            self.kernel.unshape(entry.handle)

    # -- transport: each node's file ----------------------------------------------------------------
    def shares(self) -> dict[int, dict[str, Any]]:
        """What each node must emulate now, from every active fault it has a part in."""
        specs: dict[int, dict[str, Any]] = {node: {} for node in range(self.n)}
        for entry in self.active.values():
            fault = entry.fault
            if fault.kind == FaultKind.PARTITION and entry.mechanism == FaultMechanism.TRANSPORT:
                for a, b in entry.pairs:
                    specs[a].setdefault("blocked", set()).add(b)
                    specs[b].setdefault("blocked", set()).add(a)
            elif fault.kind == FaultKind.LINK and entry.mechanism == FaultMechanism.TRANSPORT:
                shape = {"delay_ms": fault.delay_ms, "jitter_ms": fault.jitter_ms, "loss": fault.loss, "rate_kbit": fault.rate_kbit}
                for node in entry.nodes:
                    specs[node].setdefault("links", {})[ANY_PEER] = shape
                    for other in range(self.n):
                        if other not in entry.nodes:
                            specs[other].setdefault("links", {})[str(node)] = shape
            elif fault.kind == FaultKind.CLOCK_SKEW:
                for node in entry.nodes:
                    specs[node]["clock"] = {"offset_ms": fault.offset_ms, "drift_ppm": fault.drift_ppm}
            elif fault.kind == FaultKind.DISK:
                for node in entry.nodes:
                    specs[node]["disk"] = {"mode": fault.mode, "delay_ms": fault.delay_ms}
            elif fault.kind == FaultKind.LEAK:
                for node in entry.nodes:
                    specs[node]["leak"] = {"mib_per_min": fault.mib_per_min}
        return {node: {**spec, "blocked": sorted(spec.get("blocked", ()))} for node, spec in specs.items()}

    def _publish(self) -> None:
        pids = self.pids()
        for node, spec in self.shares().items():
            if self._told.get(node, {"blocked": []}) == spec:
                continue
            write_faults(faults_path(self.data_dir, node), spec)
            self._told[node] = spec
            pid = pids.get(node)
            if pid:
                with contextlib.suppress(ProcessLookupError):  # down: it reads the file when it starts again
                    os.kill(pid, signal.SIGUSR1)


def wants_kernel(profile: Profile) -> bool:
    """Whether a partition or link fault of ``profile`` may use the kernel mechanism."""
    return any(f.kind in NET_KINDS and f.mechanism != FaultMechanism.TRANSPORT for f in profile.faults)


def kernel_loopback(profile: Profile) -> str | None:
    """``per-node`` (each node on its own loopback address, harness/host/deploy.py) when a fault of
    ``profile`` may use the kernel mechanism and it can run here; else None (the profile decides)."""
    if not wants_kernel(profile):
        return None
    return PER_NODE if KernelNet.unavailable_reason(_per_node_plan(profile), netem=False) is None else None


def _per_node_plan(profile: Profile) -> dict[int, str]:
    return {node: node_host(node) for node in range(profile.network.nodes)}


def net_faults(profile: Profile, data_dir: Path, pids: Callable[[], dict[int, int]], addresses: list[tuple[str, int]]) -> NetFaults:
    """The run's NetFaults, with the kernel mechanism when a partition or link fault may use it and it works here."""
    if not wants_kernel(profile):
        return NetFaults(data_dir, profile.network.nodes, pids, None, "no partition or link fault asks for it")
    hosts = dict(enumerate(host for host, _ in addresses))
    # only runs that shape the network need iptables and tc; why per-node addresses were not given (not
    # root, say) comes first, else the nodes sharing 127.0.0.1 would be all the note says
    reason = KernelNet.unavailable_reason(_per_node_plan(profile), netem=False) or KernelNet.unavailable_reason(hosts, netem=False)
    if reason is not None:
        return NetFaults(data_dir, profile.network.nodes, pids, None, reason)
    delays = any(f.kind == FaultKind.LINK and (f.delay_ms or f.jitter_ms) for f in profile.faults)
    cannot_delay = KernelNet.cannot_delay_reason() if delays else None
    kernel = KernelNet(hosts, f"{profile.run.seed % 100_000}")
    return NetFaults(data_dir, profile.network.nodes, pids, kernel, None, cannot_delay)
