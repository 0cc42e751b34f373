"""One host of a multi-host run: popbench's own supervisor for validators [i*K, (i+1)*K), and its control channel.

The validators are forked exactly as on one host (harness/procs/supervisor.py: gc.freeze, fork,
copy-on-write, pinning, no orphans), from a deployment whose other addresses come from the plan. What
the one-host run does to its node children in-process (wait for readiness, read their kernel figures,
kill and restart them, stop them and keep their final STATUS) this host does on the coordinator's
request (harness/multihost/control.py). Load, sampling and the report are the coordinator's.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.host import limits, pinning
from harness.host.cputime import own_cpu_s, process_cpu_s
from harness.host.deploy import NetworkPlan
from harness.kinds import ChildId, ChildKind
from harness.multihost.control import (
    AnyRequest,
    DataFiles,
    Done,
    ExitRequest,
    FetchRequest,
    Figures,
    FiguresRequest,
    FilesRequest,
    HostState,
    KillRequest,
    NodeState,
    ProcessFigures,
    RemoteCrash,
    Reply,
    RestartRequest,
    SendFile,
    StateRequest,
    Stopped,
    StopRequest,
    serve,
)
from harness.multihost.deployment import PlannedDeployment, planned_deployment
from harness.multihost.plan import HostPlan
from harness.procs.supervisor import Child, Supervisor
from harness.procs.targets import node_target
from harness.profile import Profile
from popbench.errors import HarnessError, NodeStartError
from popbench.net.peers import bind_listener

PSUTIL_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
Console = Callable[[str], None]


@dataclass(frozen=True)
class HostSpec:
    profile: Profile
    plan: HostPlan  # resolved: numeric addresses only
    ordinal: int
    network: NetworkPlan
    run_dir: Path  # logs/ and pids.json of this host's validators
    data_dir: Path  # their databases and event logs
    bind: str  # the address this host's sockets listen on: its own entry in the plan, or a pod's IP


@dataclass
class Host:
    """This host's validators and the coordinator's requests about them."""

    spec: HostSpec
    deployment: PlannedDeployment
    console: Console
    supervisor: Supervisor | None = None
    exit_requested: asyncio.Event = field(default_factory=asyncio.Event)
    heard: dict[int, dict[str, int]] = field(default_factory=dict)  # node id -> event -> ns first heard
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def ids(self) -> range:
        return self.spec.plan.ids(self.spec.ordinal)

    def on_event(self, child: Child, event: dict[str, Any]) -> None:
        if child.kind == ChildKind.NODE:
            self.heard.setdefault(child.id.index, {}).setdefault(str(event.get("event")), time.time_ns())

    def fork_nodes(self) -> None:
        assert self.supervisor is not None
        pins = pinning.plan(pinning.available_cores())
        # the nodes keep this supervisor's niceness: it needs little CPU, and the load and the sampling
        # run in the coordinator, which takes its priority over the nodes as a one-host run's harness does
        for local_index, node_id in enumerate(self.ids):
            self.supervisor.spawn(ChildId(ChildKind.NODE, node_id), node_target(self.deployment.node_config(node_id)),
                                  self.deployment.listen_socket(node_id), cpus=pins.for_node(local_index))  # fmt: skip

    # -- requests ------------------------------------------------------------------------------------
    async def handle(self, request: AnyRequest) -> Reply | SendFile:
        assert self.supervisor is not None
        match request:
            case StateRequest():
                return self.state()
            case FiguresRequest(uss=uss):
                return Figures(nodes=self.figures(uss), supervisor_cpu_s=own_cpu_s())
            case KillRequest(node=node):
                self.supervisor.kill(self._name(node))
                return Done()
            case RestartRequest(node=node):
                return self.restart(node)
            case StopRequest(grace_s=grace_s):
                return await self.stop(grace_s)
            case FilesRequest():
                return DataFiles(files={path.name: path.stat().st_size for path in self.data_files()})
            case FetchRequest(name=name):
                return self.send(name)
            case ExitRequest():
                self.exit_requested.set()
                return Done()
        raise HarnessError(f"unknown request {request!r}")

    def _name(self, node_id: int) -> ChildId:
        if node_id not in self.ids:
            raise HarnessError(
                f"validator {node_id} does not run on host {self.spec.ordinal} (it runs {self.ids.start}-{self.ids.stop - 1})"
            )
        return ChildId(ChildKind.NODE, node_id)

    def state(self) -> HostState:
        assert self.supervisor is not None
        children = {n: NodeState(pid=c.pid, alive=c.alive, events=self.heard.get(n, {}))
                    for n in self.ids if (c := self.supervisor.children.get(ChildId(ChildKind.NODE, n))) is not None}  # fmt: skip
        plan = self.spec.plan
        return HostState(ordinal=self.spec.ordinal, hosts=plan.hosts, nodes=plan.nodes,
                         chain_id=self.deployment.genesis.chain_id.hex(), children=children)  # fmt: skip

    def figures(self, with_uss: bool) -> dict[int, ProcessFigures]:
        """What the one-host collector reads with psutil, read here for the coordinator (one instant per node)."""
        assert self.supervisor is not None
        found = {}
        for node_id, pid in ((c.index, p) for c, p in self.supervisor.pids(ChildKind.NODE).items()):
            try:
                proc = self._handle(node_id, pid)
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    switches = proc.num_ctx_switches()
                    found[node_id] = ProcessFigures(cpu_s=process_cpu_s(proc.cpu_times()), uss_bytes=proc.memory_full_info().uss if with_uss else None,
                                                    open_files=proc.num_fds(), ctx_switches=switches.voluntary + switches.involuntary)  # fmt: skip
            except PSUTIL_GONE:
                continue
        return found

    def _handle(self, node_id: int, pid: int) -> psutil.Process:
        proc = self._procs.get(node_id)
        if proc is None or proc.pid != pid:  # a restarted node is a new process
            proc = self._procs[node_id] = psutil.Process(pid)
        return proc

    def restart(self, node_id: int) -> Done:
        assert self.supervisor is not None
        name = self._name(node_id)
        self.supervisor.reap()
        try:
            child = self.supervisor.restart(name)
        except NodeStartError as err:
            return Done(error=str(err))
        return Done(pid=child.pid)

    async def stop(self, grace_s: float) -> Stopped:
        assert self.supervisor is not None
        names = [ChildId(ChildKind.NODE, n) for n in self.ids]
        await self.supervisor.stop(names, grace_s)
        final = {name.index: event["status"] for name in names if (event := self.supervisor.children[name].events.get("final")) is not None}
        crashes = [RemoteCrash(name=c.name, kind=str(c.kind), index=c.index, pid=c.pid, at_ns=c.at_ns, exit=c.exit, stderr_tail=c.stderr_tail)
                   for c in self.supervisor.crashes]  # fmt: skip
        return Stopped(final=final, crashes=crashes, supervisor_cpu_s=own_cpu_s())

    def data_files(self) -> list[Path]:
        """Each validator's files (its database and event log): ``node-<id>.*`` in the data directory."""
        data_dir = self.spec.data_dir
        return sorted(path for n in self.ids for path in data_dir.glob(f"node-{n}.*") if path.is_file())

    def send(self, name: str) -> SendFile:
        for path in self.data_files():
            if path.name == name:  # only a listed file: a request never names a path of its own
                return SendFile(path)
        raise HarnessError(f"no data file {name!r} on host {self.spec.ordinal}")


async def run_host(spec: HostSpec, console: Console) -> None:
    """Bind, fork this host's validators, answer the coordinator until it says the run is over (or SIGTERM)."""
    plan = spec.plan
    ids = plan.ids(spec.ordinal)
    deployment = planned_deployment(spec.profile, plan, spec.network, spec.data_dir, bind=(spec.bind, ids))
    note = limits.raise_open_files(limits.fds_needed(len(ids), 0))
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    host = Host(spec, deployment, console)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, host.exit_requested.set)
    try:
        async with Supervisor(spec.run_dir, host.on_event) as supervisor:
            host.supervisor = supervisor
            host.fork_nodes()  # before the control socket exists, so the validators do not inherit it
            server = await serve(_control_socket(spec), host.handle)
            console(f"host {spec.ordinal}: validators {ids.start}-{ids.stop - 1} on {spec.bind}, control on port {plan.control_port}"
                    + (f"; {note}" if note else ""))  # fmt: skip
            try:
                await host.exit_requested.wait()
            finally:
                await server.close()
    finally:
        deployment.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)  # uvloop would leave its own handler installed after the loop closes
    console(f"host {spec.ordinal}: done")


def _control_socket(spec: HostSpec) -> socket.socket:
    try:
        return bind_listener((spec.bind, spec.plan.control_port))
    except OSError as err:
        raise HarnessError(f"cannot listen on {spec.bind}:{spec.plan.control_port} for the control channel: {err}") from None
