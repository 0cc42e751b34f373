"""Fault injection during the window: each planned fault applied at its time and healed after its duration.

What each kind does (docs/faults.md): ``kill`` SIGKILLs the node (forked again when it heals);
``restart`` forks a dead node again on its own socket and data, so it recovers from disk and catches
up; ``pause`` SIGSTOPs it (SIGCONT when it heals); ``wipe`` kills it, empties its database and forks
it again at once (or when it heals), so it rejoins from its peers; ``partition``, ``link``,
``clock-skew`` and ``disk`` go through harness/run/fault_net.py (kernel or the nodes' own emulation).
``byzantine`` faults are not timed: the node runs that behaviour from its start (see deploy.py).

Every fault still in force when the window ends is healed then, before the drain: a partition that
never healed could not show recovery, and the nodes must be able to drain. Each apply and each heal
is recorded (RunData.faults_applied; the report's ``faults``) with its nodes and mechanism.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.kinds import ChildId, ChildKind, FaultKind
from harness.profile import Fault
from harness.run.fault_net import NET_KINDS, NODE_KINDS, NetFaults
from harness.run.fault_targets import cut_off_nodes, resolve_nodes
from popbench.errors import NodeStartError
from popbench.store import node_database

if TYPE_CHECKING:
    from harness.observe.collect import Collector
    from harness.procs.supervisor import Supervisor

UNTIMED = (FaultKind.BYZANTINE,)
HEALS = (FaultKind.KILL, FaultKind.PAUSE, FaultKind.WIPE, *NET_KINDS, *NODE_KINDS)


@dataclass(frozen=True)
class Step:
    at_s: float
    heal: bool
    index: int
    fault: Fault


def plan_steps(faults: list[Fault]) -> list[Step]:
    """Applies and heals in time order (a heal before an apply at the same instant)."""
    steps = []
    for index, fault in enumerate(faults):
        if fault.kind in UNTIMED:
            continue
        steps.append(Step(fault.at_s, False, index, fault))
        if fault.duration_s > 0 and fault.kind in HEALS:
            steps.append(Step(fault.at_s + fault.duration_s, True, index, fault))
    return sorted(steps, key=lambda s: (s.at_s, not s.heal, s.index))


class FaultScheduler:
    """Applies the profile's timed faults relative to the window start and records each step."""

    def __init__(self, faults: list[Fault], supervisor: Supervisor, collector: Collector, applied: list[dict[str, Any]],
                 console: Callable[[str], None], net: NetFaults, seed: int) -> None:  # fmt: skip
        self.steps = plan_steps(faults)
        self.supervisor = supervisor
        self.collector = collector
        self.applied = applied  # RunData.faults_applied: each step as it was taken
        self.console = console
        self.net = net
        self.seed = seed
        self._targets: dict[int, list[int]] = {}  # fault index -> the nodes it hit when applied
        self._in_force: set[int] = set()

    async def run(self, window_start_ns: int) -> None:
        for step in self.steps:
            due_ns = window_start_ns + int(step.at_s * 1e9)
            await asyncio.sleep(max(0.0, (due_ns - time.time_ns()) / 1e9))  # the fault's planned time
            self.heal(step.index, step.fault) if step.heal else self.apply(step.index, step.fault)

    def heal_all(self) -> None:
        """The window is over: heal whatever is still in force, so the network can drain; a kill or a wipe
        without a duration stays as planned (a node left down)."""
        for index in sorted(self._in_force):
            fault = next(s.fault for s in self.steps if s.index == index)
            if fault.kind in HEALS and fault.kind not in (FaultKind.KILL, FaultKind.WIPE):
                self.heal(index, fault, at_window_end=True)

    # -- applying --------------------------------------------------------------------------------------
    def apply(self, index: int, fault: Fault) -> None:
        nodes = resolve_nodes(fault, index, self.net.n, self.seed, self._leaders())
        self._targets[index] = nodes
        entry = self._entry(fault, "apply", nodes, index)
        entry["cut_off"] = cut_off_nodes(fault, nodes, self.net.n)
        if fault.kind in (FaultKind.KILL, FaultKind.PAUSE):
            self._signal(nodes, signal.SIGKILL if fault.kind == FaultKind.KILL else signal.SIGSTOP)
        elif fault.kind == FaultKind.RESTART:
            entry.update(self._restart(nodes))
            self._in_force -= {i for i in self._in_force if set(self._targets.get(i, ())) <= set(nodes)}  # a kill it ends
        elif fault.kind == FaultKind.WIPE:
            entry.update(self._wipe(nodes, restart=fault.duration_s == 0))
        else:
            entry.update(self.net.apply(index, fault, nodes))
        if fault.kind in HEALS:
            self._in_force.add(index)
        self._record(entry)

    def heal(self, index: int, fault: Fault, at_window_end: bool = False) -> None:
        if index not in self._in_force:
            return
        self._in_force.discard(index)
        nodes = self._targets.get(index, [])
        kind = FaultKind.RESTART if fault.kind in (FaultKind.KILL, FaultKind.WIPE) else fault.kind
        entry = self._entry(fault, "heal", nodes, index, kind=kind, at_window_end=at_window_end)
        entry["cut_off"] = cut_off_nodes(fault, nodes, self.net.n)
        if fault.kind in (FaultKind.KILL, FaultKind.WIPE):
            entry.update(self._restart(nodes))
        elif fault.kind == FaultKind.PAUSE:
            self._signal(nodes, signal.SIGCONT)
        else:
            self.net.heal(index)
        self._record(entry)

    def _entry(self, fault: Fault, action: str, nodes: list[int], index: int, kind: FaultKind | None = None,
               at_window_end: bool = False) -> dict[str, Any]:  # fmt: skip
        planned = fault.at_s + (fault.duration_s if action == "heal" else 0.0)
        entry: dict[str, Any] = {"kind": kind or fault.kind, "action": action, "node": nodes[0] if nodes else -1,
                                 "nodes": nodes, "target": fault.target, "at_ns": time.time_ns(), "planned_at_s": planned,
                                 "fault": index}  # fmt: skip
        if at_window_end:
            entry["healed_at_window_end"] = True
        return entry

    def _record(self, entry: dict[str, Any]) -> None:
        self.applied.append(entry)
        nodes = ", ".join(str(n) for n in entry["nodes"]) or "-"
        how = f" ({entry['mechanism']})" if "mechanism" in entry else ""
        error = f" ({entry['error']})" if "error" in entry else ""
        verb = "heal" if entry["action"] == "heal" else "fault"
        self.console(f"{verb}: {entry['kind']} node {nodes}{how}{error}")

    def _leaders(self) -> list[int]:
        samples = self.collector.samples
        statuses = samples[-1].statuses.values() if samples else ()
        return [leader for status in statuses if (leader := getattr(status, "leader", None)) is not None]

    # -- processes ---------------------------------------------------------------------------------------
    def _restart(self, nodes: list[int]) -> dict[str, Any]:
        self.supervisor.reap()
        pids, errors = [], []
        for node in nodes:
            try:
                child = self.supervisor.restart(ChildId(ChildKind.NODE, node))
            except NodeStartError as err:
                errors.append(str(err))
                continue
            self.collector.node_restarted(node, child.pid)
            pids.append(child.pid)
        result: dict[str, Any] = {"pid": pids[0] if pids else None}
        if errors:
            result["error"] = "; ".join(errors)
        return result

    def _signal(self, nodes: list[int], signum: int) -> None:
        self.supervisor.signal([ChildId(ChildKind.NODE, node) for node in nodes], signum)

    def _wipe(self, nodes: list[int], restart: bool) -> dict[str, Any]:
        self._signal(nodes, signal.SIGKILL)
        self.supervisor.wait_exited([ChildId(ChildKind.NODE, node) for node in nodes])
        for node in nodes:
            database = node_database(self.net.data_dir, node)
            for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
                path.unlink(missing_ok=True)
        return self._restart(nodes) if restart else {}
