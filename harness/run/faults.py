"""Fault injection during the window: kill a node (SIGKILL) or fork it again, at planned times.

``kill`` ends a node abruptly; it shows in the report as a crash. ``restart`` forks a dead node again
with its own listening socket and data directory, so it recovers from disk and catches up from peers.
``byzantine`` faults are not timed: the node runs that behaviour from its start (see deploy.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.kinds import ChildId, ChildKind
from harness.profile import Fault
from popbench.errors import NodeStartError

if TYPE_CHECKING:
    from harness.observe.collect import Collector
    from harness.procs.supervisor import Supervisor


class FaultScheduler:
    """Applies the profile's timed faults relative to the window start and records each one."""

    def __init__(self, faults: list[Fault], supervisor: Supervisor, collector: Collector, applied: list[dict[str, Any]],
                 console: Callable[[str], None]) -> None:  # fmt: skip
        self.timed = sorted((f for f in faults if f.kind in ("kill", "restart")), key=lambda f: f.at_s)
        self.supervisor = supervisor
        self.collector = collector
        self.applied = applied  # RunData.faults_applied: each fault as it was applied
        self.console = console

    async def run(self, window_start_ns: int) -> None:
        for fault in self.timed:
            due_ns = window_start_ns + int(fault.at_s * 1e9)
            await asyncio.sleep(max(0.0, (due_ns - time.time_ns()) / 1e9))  # the fault's planned time
            self.apply(fault)

    def apply(self, fault: Fault) -> None:
        name = ChildId(ChildKind.NODE, fault.node)
        entry: dict[str, Any] = {"kind": fault.kind, "node": fault.node, "at_ns": time.time_ns(), "planned_at_s": fault.at_s}
        if fault.kind == "kill":
            self.supervisor.kill(name)
        else:
            entry.update(self._restart(name, fault.node))
        self.applied.append(entry)
        self.console(f"fault: {fault.kind} node {fault.node}" + (f" ({entry['error']})" if "error" in entry else ""))

    def _restart(self, name: ChildId, node_id: int) -> dict[str, Any]:
        self.supervisor.reap()
        try:
            child = self.supervisor.restart(name)
        except NodeStartError as err:
            return {"error": str(err)}
        self.collector.node_restarted(node_id, child.pid)
        return {"pid": child.pid}
