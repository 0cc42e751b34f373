"""The coordinator of a multi-host run: the one-host run's phases, with the validators on other hosts.

:class:`CoordinatedRun` is :class:`harness.run.phases.Run` with four phases done through the hosts'
control channels (harness/multihost/control.py) instead of in-process: the deployment has the plan's
addresses and no sockets; "forking" is waiting until every host's validators listen and connect; the
collector reads each validator's kernel figures from its host; timed faults are asked of the host that
runs the node; stopping collects each host's final STATUS, crashes and data files. Everything else is the
one-host run's own code: calibration, the drivers and miners (forked here), the status line, the
window, the drain, the safety check (on the databases fetched from the hosts), and so the same
RunData, metrics and report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.host.deploy import Deployment, write_network
from harness.kinds import ChildKind, FaultKind, RunPhase
from harness.multihost.control import (
    ControlError,
    DataFiles,
    Done,
    ExitRequest,
    Figures,
    FiguresRequest,
    FilesRequest,
    HostClient,
    HostState,
    KillRequest,
    ProcessFigures,
    RestartRequest,
    StateRequest,
    Stopped,
    StopRequest,
)
from harness.multihost.deployment import load_network, planned_deployment
from harness.multihost.plan import HostPlan
from harness.observe.collect import Collector, ProcessSample, Sample, uss_every_samples
from harness.observe.progress import StepProgress
from harness.procs.supervisor import Crash, Supervisor
from harness.profile import Fault, Profile
from harness.run.fault_net import NetFaults
from harness.run.fault_targets import cut_off_nodes, resolve_nodes
from harness.run.faults import FaultScheduler
from harness.run.phases import STOP_GRACE_S, Console, Run, RunData
from popbench.errors import ConfigError, NodeStartError
from popbench.wire.status import decode_status

READY_POLL_S = 0.2  # how often the coordinator asks the hosts how far their validators have come
FIGURES_TIMEOUT_S = 1.0  # a sample waits at most this long for the hosts' kernel figures ...
FIGURES_SHARE = 0.25  # ... and at most this share of the status interval
T = TypeVar("T")


@dataclass
class Fleet:
    """The hosts of a run, as the coordinator reaches them: one control channel each."""

    plan: HostPlan
    clients: list[HostClient]

    @classmethod
    def of(cls, plan: HostPlan) -> Fleet:
        return cls(plan, [HostClient(i, plan.control(i)) for i in range(plan.hosts)])

    def client_of(self, node_id: int) -> HostClient:
        return self.clients[self.plan.host_of(node_id)]

    async def each(self, ask: Callable[[HostClient], Awaitable[T]]) -> list[T | ControlError]:
        """``ask`` every host at once; a host that failed gives its ControlError in its place."""
        answers = await asyncio.gather(*(ask(client) for client in self.clients), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, ControlError):
                raise answer
        return answers  # type: ignore[return-value]  # narrowed above: every exception left is a ControlError

    async def figures(self, with_uss: bool, timeout_s: float) -> tuple[dict[int, ProcessFigures], set[int]]:
        """Every running validator's kernel figures, and the hosts that did not answer within ``timeout_s``."""
        answers = await self.each(lambda c: c.call(FiguresRequest(uss=with_uss), Figures, timeout_s))
        found: dict[int, ProcessFigures] = {}
        silent = set()
        for ordinal, answer in enumerate(answers):
            if isinstance(answer, ControlError):
                silent.add(ordinal)
            else:
                found.update(answer.nodes)
        return found, silent

    def close(self) -> None:
        for client in self.clients:
            client.close()


@dataclass
class RemoteCollector(Collector):
    """The one-host collector (STATUS over the wire, on its grid and deadlines) over validators it has no
    pids for, with each sample's kernel figures read by the validators' own hosts just before it.

    Only the public ``sample`` is extended: the figures are fetched first and put into the sample the
    base made (which, with no pids, has none of its own), so the STATUS answers and the CPU figures
    are at most the hosts' reply time apart, as close as the one-host collector's reading at the answer."""

    fleet: Fleet | None = None
    figures_timeout_s: float = FIGURES_TIMEOUT_S
    _remote_taken: int = 0

    async def sample(self, *args: Any, **kwargs: Any) -> Sample:
        assert self.fleet is not None
        with_uss = self._remote_taken % self.uss_every == 0  # the base's cadence: one in uss_every samples
        self._remote_taken += 1
        figures, _silent = await self.fleet.figures(with_uss, self.figures_timeout_s)
        sample = await super().sample(*args, **kwargs)
        # a validator of a host that did not answer has no figures in this sample: not measured, never stale
        sample.processes = {n: ProcessSample(f.cpu_s, f.uss_bytes, f.open_files, f.ctx_switches) for n, f in sorted(figures.items())}
        return sample

    def _node_cpu_s(self, node_id: int) -> float | None:
        return None  # not here: a validator's CPU is its host's to read (the figures above)


REMOTE_KINDS = (FaultKind.KILL, FaultKind.RESTART)  # what the hosts apply on request (KillRequest, RestartRequest)


def refuse_timed_faults(profile: Profile) -> None:
    """A multi-host run applies kills and restarts through the hosts (:class:`HostFaults`); the other
    timed kinds (pause, wipe, partitions, links, clock skew, disk) act on a supervisor's own children or
    on this machine's kernel, so they are refused here (docs/kubernetes.md: chaos-mesh applies them in a
    cluster). A byzantine node is part of its config, so it runs."""
    timed = sorted({str(f.kind) for f in profile.faults if f.kind not in (FaultKind.BYZANTINE, *REMOTE_KINDS)})
    if timed:
        raise ConfigError(f"a multi-host run applies only kill and restart faults ({', '.join(timed)} asked): run the profile on one "
                          "host, or render it for Kubernetes, where chaos-mesh applies them (popbench deploy k8s)", key="faults")  # fmt: skip


class HostFaults(FaultScheduler):
    """The run's fault scheduler (harness/run/faults.py: its steps, targets and records), with each kill and
    restart asked of the host that runs the validator instead of done by this process's supervisor."""

    def __init__(self, fleet: Fleet, faults: list[Fault], supervisor: Supervisor, collector: Collector,
                 applied: list[dict[str, Any]], console: Console, net: NetFaults, seed: int) -> None:  # fmt: skip
        super().__init__(faults, supervisor, collector, applied, console, net, seed)
        self.fleet = fleet
        self._pending: list[asyncio.Future[None]] = []

    async def run(self, window_start_ns: int) -> None:
        for step in self.steps:
            due_ns = window_start_ns + int(step.at_s * 1e9)
            await asyncio.sleep(max(0.0, (due_ns - time.time_ns()) / 1e9))  # the fault's planned time
            await self._take(step.index, step.fault, step.heal)

    def heal_all(self) -> None:
        """The window is over: every kill still in force is restarted (asked of its host; awaited by :meth:`settle`)."""
        for index in sorted(self._in_force):
            fault = next(s.fault for s in self.steps if s.index == index)
            if fault.kind == FaultKind.KILL:
                self._pending.append(asyncio.ensure_future(self._take(index, fault, heal=True, at_window_end=True)))

    async def settle(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _take(self, index: int, fault: Fault, heal: bool, at_window_end: bool = False) -> None:
        if heal:
            if index not in self._in_force:
                return
            self._in_force.discard(index)
            nodes = self._targets.get(index, [])
            entry = self._entry(fault, "heal", nodes, index, kind=FaultKind.RESTART, at_window_end=at_window_end)
        else:
            nodes = resolve_nodes(fault, index, self.net.n, self.seed, self._leaders())
            self._targets[index] = nodes
            entry = self._entry(fault, "apply", nodes, index)
            self._in_force.add(index)
        entry["cut_off"] = cut_off_nodes(fault, nodes, self.net.n)
        entry["mechanism"] = "host supervisor"
        if fault.kind == FaultKind.KILL and not heal:
            errors = [await self._ask(KillRequest(node=node)) for node in nodes]
        else:
            errors = [await self._ask(RestartRequest(node=node)) for node in nodes]
        if any(errors):
            entry["error"] = "; ".join(e for e in errors if e)
        self._record(entry)

    async def _ask(self, request: KillRequest | RestartRequest) -> str:
        client = self.fleet.client_of(request.node)
        try:
            done = await client.call(request, Done)
        except ControlError as err:
            return f"{client}: {err}"
        if done.pid:
            self.collector.node_restarted(request.node, done.pid)
        return done.error


class CoordinatedRun(Run):
    """One run whose validators live on the plan's hosts; it drives the load and writes the one report."""

    def __init__(
        self, profile: Profile, run_dir: Path, run_id: str, console: Console, fleet: Fleet, genesis_dir: Path | None = None
    ) -> None:
        refuse_timed_faults(profile)
        super().__init__(profile, run_dir, run_id, console)
        self.fleet = fleet
        self.genesis_dir = genesis_dir
        self.remote_crashes: list[Crash] = []
        self.faults: HostFaults | None = None

    async def execute(self) -> RunData:
        try:
            data = await super().execute()
        finally:
            self.fleet.close()
        data.crashes += self.remote_crashes
        return data

    def _deploy(self) -> Deployment:
        network = load_network(self.profile, self.genesis_dir)
        write_network(network, self.data.run_dir)
        self.data.notes.append(f"multi-host: {self.fleet.plan.describe()}")
        return planned_deployment(self.profile, self.fleet.plan, network, self.data.run_dir / "data")

    # -- the validators come up on their hosts ----------------------------------------------------------
    async def _start_nodes(self) -> None:
        assert self.deployment is not None
        plan, run = self.fleet.plan, self.profile.run
        self.console(f"waiting for {plan.hosts} host supervisors ({plan.describe()}) ...")
        self.data.mark(RunPhase.FORKING)
        self.readiness = {event: StepProgress(event, plan.nodes, self.console) for event in ("listening", "connected")}
        wanted = [RunPhase.FORKED, RunPhase.LISTENING, RunPhase.CONNECTED]
        deadline = time.monotonic() + run.ready_timeout_s
        while True:
            states = await self._states(deadline)
            self._take_events(states)
            while wanted and self._reached(wanted[0], states):
                self.data.mark(wanted.pop(0))
            if not wanted:
                break
            if time.monotonic() > deadline:
                raise NodeStartError(
                    f"validators did not reach {wanted[0].value} within {run.ready_timeout_s:g} s: {self._laggards(states)}"
                )
            await asyncio.sleep(READY_POLL_S)  # polling the hosts, bounded by ready_timeout_s
        took = (self.data.phases[RunPhase.CONNECTED] - self.data.started_ns) / 1e9
        self.console(f"all {plan.nodes} validators on {plan.hosts} hosts connected {took:.2f} s after the command started")

    async def _states(self, deadline: float) -> list[HostState]:
        """Every host's state; a host not answering yet is retried until the deadline (it may still be starting)."""
        assert self.deployment is not None
        answers = await self.fleet.each(lambda c: c.call(StateRequest(), HostState, 5.0))
        states = []
        for client, answer in zip(self.fleet.clients, answers, strict=True):
            if isinstance(answer, ControlError):
                if time.monotonic() > deadline:
                    raise NodeStartError(f"{client} never answered: {answer}")
                continue
            self._check_host(client, answer)
            states.append(answer)
        return states

    def _check_host(self, client: HostClient, state: HostState) -> None:
        assert self.deployment is not None
        ours = self.deployment.genesis.chain_id.hex()
        if state.error:
            raise NodeStartError(f"{client} could not start its validators: {state.error}")
        if (state.ordinal, state.hosts, state.nodes) != (client.ordinal, self.fleet.plan.hosts, self.fleet.plan.nodes):
            raise NodeStartError(f"{client} says it is host {state.ordinal} of {state.hosts} for {state.nodes} validators: "
                                 f"another plan than this run's ({self.fleet.plan.describe()})")  # fmt: skip
        if state.chain_id != ours:
            raise NodeStartError(
                f"{client} runs chain {state.chain_id[:16]}..., this run's profile gives {ours[:16]}...: another profile or genesis"
            )
        for node_id, node in state.children.items():
            if not node.alive and "connected" not in node.events:
                raise NodeStartError(
                    f"validator {node_id} on {client} exited before it connected (its log: the host's logs/node-{node_id}.log)"
                )

    def _take_events(self, states: list[HostState]) -> None:
        for state in states:
            for node_id, node in state.children.items():
                for event, progress in self.readiness.items():
                    if event in node.events:
                        progress.mark(node_id)
                if "connected" in node.events:
                    self.data.connected_events.setdefault(node_id, node.events["connected"])

    def _reached(self, phase: RunPhase, states: list[HostState]) -> bool:
        if len(states) < self.fleet.plan.hosts:
            return False
        children = {n: node for state in states for n, node in state.children.items()}
        if len(children) < self.fleet.plan.nodes:
            return False
        event = {RunPhase.LISTENING: "listening", RunPhase.CONNECTED: "connected" if len(children) > 1 else None}.get(phase)
        return event is None or all(event in node.events for node in children.values())

    def _laggards(self, states: list[HostState]) -> str:
        slow = [f"{n} ({'connected' if 'listening' in node.events else 'listening'})" for state in states
                for n, node in sorted(state.children.items()) if "connected" not in node.events]  # fmt: skip
        answered = {state.ordinal for state in states}
        silent = [str(client) for client in self.fleet.clients if client.ordinal not in answered]
        return "; ".join(part for part in (", ".join(slow[:10]), f"silent: {', '.join(silent)}" if silent else "") if part)

    # -- sampling and faults through the hosts --------------------------------------------------------
    def _fault_scheduler(self) -> FaultScheduler:
        """The one-host scheduler's steps and records, with kills and restarts asked of the hosts."""
        assert self.supervisor is not None and self.collector is not None and self.data.data_dir is not None
        net = NetFaults(self.data.data_dir, self.profile.network.nodes, dict, None, "a multi-host run applies no network faults")
        self.faults = HostFaults(self.fleet, self.profile.faults, self.supervisor, self.collector, self.data.faults_applied,
                                 self.console, net, self.profile.run.seed)  # fmt: skip
        return self.faults

    def _start_collector(self) -> None:
        assert self.deployment is not None
        run = self.profile.run
        self.collector = RemoteCollector(dict(enumerate(self.deployment.addresses())), self.deployment.genesis.chain_id, {},
                                         uss_every=uss_every_samples(run), fleet=self.fleet,
                                         figures_timeout_s=min(FIGURES_TIMEOUT_S, FIGURES_SHARE * run.status_interval_s))  # fmt: skip

    # -- stopping ------------------------------------------------------------------------------------
    async def _shut_down(self) -> None:
        """The one-host shut-down (drivers, miners, the final sample), then the hosts' validators."""
        if self.faults is not None:
            await self.faults.settle()  # a restart asked at the window's end has its answer before the stop
        try:
            await super()._shut_down()
        finally:  # whatever failed here, the hosts must stop their validators and end
            await self._stop_hosts()
            self.data.mark(RunPhase.STOPPED)

    async def _stop_hosts(self) -> None:
        answers = await self.fleet.each(lambda c: c.call(StopRequest(grace_s=STOP_GRACE_S), Stopped, STOP_GRACE_S + 30))
        for client, answer in zip(self.fleet.clients, answers, strict=True):
            if isinstance(answer, ControlError):
                self.data.notes.append(f"{client} did not stop cleanly: {answer}")
                continue
            self.data.final_statuses.update({n: decode_status(status) for n, status in answer.final.items()})
            self.data.harness_cpu_s += answer.supervisor_cpu_s  # the host supervisors are harness processes too
            self.remote_crashes += [
                Crash(c.name, ChildKind(c.kind), c.index, c.pid, c.at_ns, c.exit, c.stderr_tail) for c in answer.crashes
            ]
        await self._fetch_data()
        await self.fleet.each(lambda c: c.call(ExitRequest(), Done, 10.0))

    async def _fetch_data(self) -> None:
        """Each validator's database and event log, into this run's data directory, for the safety check."""
        assert self.deployment is not None
        data_dir = self.deployment.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        for client in self.fleet.clients:
            try:
                listing = await client.call(FilesRequest(), DataFiles)
                for name in sorted(listing.files):
                    await client.fetch(name, data_dir / name)
            except ControlError as err:
                self.data.notes.append(f"data files of {client} not fetched: {err}")
