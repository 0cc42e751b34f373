"""One benchmark run, start to finish: deploy, fork, connect, load, watch, stop, and keep every figure.

The phases, in order (each timestamped in ``RunData.phases``):
  calibrate -> deploy (genesis, topology, bound sockets) -> fork nodes -> all listening -> all connected
  -> fork drivers -> all prepared -> go (the window starts) -> window (status line, faults) -> drain
  -> final sample -> stop drivers and nodes -> safety check.
Whatever ends the run early (Ctrl-C, SIGTERM, a node that never came up), the stopping phases still
run, so a partial run still yields a report and leaves no process behind. The numbers are computed
afterwards from ``RunData`` by :mod:`harness.metrics.assemble`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.host import limits, pinning
from harness.host.calibrate import Calibration, calibrate
from harness.host.cputime import own_cpu_s
from harness.host.deploy import Deployment, deploy
from harness.host.nodes_file import write_nodes_file
from harness.kinds import ChildId, ChildKind, RunPhase
from harness.load import workload
from harness.load.drivers import PROGRESS_EVERY_S, DriverSpec
from harness.load.miners import MINER_PAYLOAD_BYTES, MinerSpec
from harness.observe.collect import Boundary, Collector, Sample, sample_deadline_s, uss_every_samples
from harness.observe.progress import StatusLine, StepProgress, stale_note
from harness.procs.supervisor import Crash, Supervisor
from harness.procs.targets import GO_SIGNAL, driver_target, miner_target, node_target, send_go
from harness.profile import Profile
from harness.run.accounting import account_run
from harness.run.fault_net import kernel_loopback, net_faults
from harness.run.faults import FaultScheduler
from harness.run.pow_chains import StoredChain, read_chains
from harness.run.safety import SafetyCheck, check_pow_safety, check_safety
from popbench.errors import HarnessError, NodeStartError
from popbench.loop_exceptions import install_exception_counter, unexpected_exceptions
from popbench.model.proof import HEAD as PROOF_HEAD
from popbench.net.ondemand import ON_DEMAND_LIMIT
from popbench.pow.block import PREFIX as POW_HEADER_PREFIX
from popbench.store import node_database
from popbench.wire import ItemKind
from popbench.wire.status import AnyStatus, PowStatus, decode_status

GO_MARGIN_S = 1.0  # between the go and the window start: drivers connect to the nodes in this time
PREPARE_TIMEOUT_FLOOR_S = 60.0
PREPARE_PROOFS_PER_S_FLOOR = 500.0  # a very slow host still grinds and signs this many proofs per second
STOP_GRACE_S = 15.0
TIP_POLL_S = 0.2
Console = Callable[[str], None]


@dataclass
class RunData:
    """Everything one run observed; metrics, score and report are computed from it afterwards."""

    run_id: str
    run_dir: Path
    profile: Profile
    started_ns: int
    phases: dict[RunPhase, int] = field(default_factory=dict)  # phase -> wall-clock ns it was reached
    notes: list[str] = field(default_factory=list)  # host limits, pinning, warnings
    calibration: Calibration | None = None
    deployment: dict[str, Any] = field(default_factory=dict)
    intended_edges: list[tuple[int, int]] = field(default_factory=list)  # the topology's intended links
    window: tuple[int, int] | None = None  # (start_ns, end_ns) of the load window
    samples: list[Sample] = field(default_factory=list)
    final_statuses: dict[int, AnyStatus] = field(default_factory=dict)
    connected_events: dict[int, int] = field(default_factory=dict)  # node id -> ns it reported "connected"
    driver_summaries: list[dict[str, Any]] = field(default_factory=list)
    miner_summaries: list[dict[str, Any]] = field(default_factory=list)
    records_paths: list[Path] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    faults_applied: list[dict[str, Any]] = field(default_factory=list)
    safety: SafetyCheck | None = None
    pow_chains: dict[int, StoredChain] = field(default_factory=dict)  # PoW: each node's stored chain
    harness_cpu_s: float = 0.0
    harness_unexpected_exceptions: int = 0  # supervisor, drivers and miners (popbench.loop_exceptions)
    interrupted: str | None = None  # why the run ended early, if it did
    error: str | None = None
    data_dir: Path | None = None

    def mark(self, phase: RunPhase) -> None:
        self.phases[phase] = time.time_ns()


class Run:
    """Drives one run of ``profile`` into ``run_dir``; :meth:`execute` always returns its RunData."""

    def __init__(self, profile: Profile, run_dir: Path, run_id: str, console: Console) -> None:
        self.profile = profile
        self.data = RunData(run_id, run_dir, profile, time.time_ns())
        self.console = console
        self.status_line = StatusLine(profile.run, console)
        self.readiness: dict[str, StepProgress] = {}  # "listening" / "connected" -> nodes that said so
        self.supervisor: Supervisor | None = None
        self.deployment: Deployment | None = None
        self.collector: Collector | None = None
        self.sample_listeners: list[Callable[[Sample], None]] = []  # told of every sample (popbench run --metrics-port)
        self.node_names: list[ChildId] = []
        self.driver_names: list[ChildId] = []
        self.miner_names: list[ChildId] = []
        self._body_task: asyncio.Future[None] | None = None
        self._enough_blocks = asyncio.Event()
        self.priorities: pinning.Priorities | None = None  # set after calibrating (harness/host/pinning.py)

    def interrupt(self, reason: str) -> None:
        """First call: stop the run's body (shut-down and report still happen). Second: kill everything now."""
        if self.data.interrupted and self.supervisor is not None:
            self.console("interrupted again: killing every process of the run")
            self.supervisor.kill_all()
            return
        self.data.interrupted = reason
        if self._body_task is not None and not self._body_task.done():
            self._body_task.cancel()

    async def execute(self) -> RunData:
        data = self.data
        data.run_dir.mkdir(parents=True, exist_ok=True)
        cpu_before = own_cpu_s()
        install_exception_counter()
        try:
            self._prepare_host()
            async with Supervisor(data.run_dir, self._on_event) as supervisor:
                self.supervisor = supervisor
                try:
                    self._body_task = asyncio.ensure_future(self._body())
                    await self._body_task
                except asyncio.CancelledError:
                    data.interrupted = data.interrupted or "interrupted (SIGINT/SIGTERM)"
                    self.console("interrupted: stopping every process and writing a partial report")
                except (NodeStartError, HarnessError) as err:
                    data.error = str(err)
                    self.console(f"run failed: {err}")
                finally:
                    await self._shut_down()
        finally:
            data.crashes = list(self.supervisor.crashes) if self.supervisor else []
            data.harness_cpu_s += own_cpu_s() - cpu_before
            self._count_harness_exceptions()
            if self.deployment is not None:
                self.deployment.close()
            if self.priorities is not None:
                self.priorities.restore()
            self._check_safety()
        return data

    # -- phases ------------------------------------------------------------------------------------
    def _prepare_host(self) -> None:
        net, load = self.profile.network, self.profile.workload
        cores = pinning.available_cores()
        self.pins = pinning.plan(cores)
        pinning.pin_harness(self.pins)
        miners = self.profile.miners.count if net.consensus == "pbft" else 0
        links = None if net.topology != "k-regular" else 2 * net.degree
        if net.consensus == "pbft" and links is not None:  # the bounded mesh, plus links opened on demand both ways
            links = net.degree + 2 * ON_DEMAND_LIMIT
        needs = limits.HostNeeds(net.nodes, load.drivers, miners, links)  # refused with the numbers before a fork
        self.data.notes += [*limits.check_host(needs), f"pinning: {self.pins.describe()}"]
        self.data.notes = [note for note in self.data.notes if note]
        self.console(f"calibrating this host ({len(cores)} cores) ...")
        self.data.calibration = calibrate(len(cores), self._hash_prefix_bytes())
        self.data.mark(RunPhase.CALIBRATED)
        self.priorities = pinning.set_priorities(self.pins)  # after calibrating, so calibration is measured as before
        self.data.notes.append(self.priorities.describe())
        self.deployment = self._deploy()
        write_nodes_file(self.deployment, self.data.run_dir)  # where the nodes listen, for popbench monitor RUN_DIR
        self.data.deployment = self.deployment.describe()
        self.data.intended_edges = sorted((min(edge), max(edge)) for edge in self.deployment.topology.intended)
        self.data.data_dir = self.deployment.data_dir
        self.data.mark(RunPhase.DEPLOYED)

    def _deploy(self) -> Deployment:
        """Genesis, topology and every node's socket; a multi-host coordinator overrides it (harness/multihost)."""
        return deploy(self.profile, self.data.run_dir, loopback=kernel_loopback(self.profile))  # per-node for kernel faults

    def _hash_prefix_bytes(self) -> int:
        """What the run's miners grind: a PoW block header, or a PoP proof (head + miner payload)."""
        if self.profile.network.consensus == "pow":
            return POW_HEADER_PREFIX.size
        return PROOF_HEAD.size + MINER_PAYLOAD_BYTES

    async def _body(self) -> None:
        await self._start_nodes()
        self._start_collector()
        if self._has_load():
            await self._start_drivers()
        if self.profile.network.consensus == "pbft" and self.profile.miners.count:
            await self._start_miners()
        await self._window()

    async def _start_nodes(self) -> None:
        assert self.supervisor is not None and self.deployment is not None
        deployment, run = self.deployment, self.profile.run
        self.console(f"forking {deployment.count} nodes ({deployment.topology.kind}) ...")
        self.data.mark(RunPhase.FORKING)
        forked = StepProgress("forked", deployment.count, self.console)
        self.readiness = {event: StepProgress(event, deployment.count, self.console) for event in ("listening", "connected")}
        for node_id in range(deployment.count):
            name = ChildId(ChildKind.NODE, node_id)
            self.supervisor.spawn(name, node_target(deployment.node_config(node_id), self.priorities.nodes if self.priorities else None),
                                  deployment.sockets[node_id], cpus=self.pins.for_node(node_id))  # fmt: skip
            self.node_names.append(name)
            forked.advance()
        self.data.mark(RunPhase.FORKED)
        await self.supervisor.wait_for("listening", self.node_names, run.ready_timeout_s)
        self.data.mark(RunPhase.LISTENING)
        if deployment.count > 1:
            await self.supervisor.wait_for("connected", self.node_names, run.ready_timeout_s)
        self.data.mark(RunPhase.CONNECTED)
        took = (self.data.phases[RunPhase.CONNECTED] - self.data.started_ns) / 1e9
        self.console(f"all {deployment.count} nodes connected {took:.2f} s after the command started")

    def _start_collector(self) -> None:
        assert self.supervisor is not None and self.deployment is not None
        pids = {child.index: pid for child, pid in self.supervisor.pids(ChildKind.NODE).items()}
        run = self.profile.run
        self.collector = Collector(dict(enumerate(self.deployment.addresses())), self.deployment.genesis.chain_id, pids,
                                   uss_every=uss_every_samples(run), deadline_s=sample_deadline_s(run.status_interval_s),
                                   listeners=self.sample_listeners,
                                   databases={n: node_database(self.deployment.data_dir, n) for n in pids})  # fmt: skip

    def _has_load(self) -> bool:
        load = self.profile.workload
        return load.rate > 0

    async def _start_drivers(self) -> None:
        assert self.supervisor is not None
        specs = self._driver_specs()
        for spec in specs:
            name = ChildId(ChildKind.DRIVER, spec.index)
            self.supervisor.spawn(name, driver_target(spec), cpus=self.pins.harness_cores)
            self.driver_names.append(name)
            self.data.records_paths.append(spec.records_path)
        total = sum(len(spec.slots) for spec in specs)
        self.console(f"drivers preparing {total:,} signed items before the window ...")
        timeout = max(PREPARE_TIMEOUT_FLOOR_S, total / PREPARE_PROOFS_PER_S_FLOOR)
        await self.supervisor.wait_for("prepared", self.driver_names, timeout)
        self.data.mark(RunPhase.PREPARED)

    async def _start_miners(self) -> None:
        assert self.supervisor is not None and self.deployment is not None
        miners = self.profile.miners
        for index in range(miners.count):
            spec = MinerSpec(index, self.deployment.addresses(), self.deployment.genesis.chain_id,
                             max(miners.work_bits, self.profile.consensus.min_work_bits), self.profile.run.seed, self.profile.run.seed)  # fmt: skip
            name = ChildId(ChildKind.MINER, index)
            self.supervisor.spawn(name, miner_target(spec, self.data.run_dir / "go"), cpus=self.pins.harness_cores)
            self.miner_names.append(name)
        await self.supervisor.wait_for("ready", self.miner_names, self.profile.run.ready_timeout_s)

    def _driver_specs(self) -> list[DriverSpec]:
        assert self.deployment is not None
        load, run = self.profile.workload, self.profile.run
        offsets = self._offsets()
        kinds = [workload.Expect[kind.upper()] for kind in load.invalid_kinds]
        closed = load.in_flight // load.drivers if load.mode == "closed" else 0
        pow_run = self.profile.network.consensus == "pow"
        return [DriverSpec(
            index=index, drivers=load.drivers, nodes=self.deployment.addresses(),
            chain_id=self.deployment.genesis.chain_id, slots=workload.driver_slots(offsets, index, load.drivers),
            start_ns=time.time_ns(), work_bits=max(load.work_bits, self.profile.consensus.min_work_bits),
            payload_bytes=load.payload_bytes, invalid_fraction=load.invalid_fraction, invalid_kinds=kinds,
            seed=run.seed, run_tag=run.seed & 0xFFFFFFFF, closed_loop_in_flight=max(1, closed) if closed else 0,
            window_s=run.duration_s, item_kind=ItemKind.TRANSFER if pow_run else ItemKind.PROOF,
            drain_s=run.drain_s, records_path=self.data.run_dir / f"records-{index}.bin",
            go_path=self.data.run_dir / "go", p99_window_s=max(PROGRESS_EVERY_S, run.status_interval_s),
        ) for index in range(load.drivers)]  # fmt: skip

    def _offsets(self) -> list[int]:
        load, run = self.profile.workload, self.profile.run
        if load.mode == "closed":
            # closed loop: a pool of proofs sent as fast as answers come back; ``rate`` sizes the pool
            # (the most proofs/s it can feed for the whole window; a pool that runs dry is reported)
            return [0] * int(load.rate * run.duration_s)
        return workload.schedule_offsets(load.shape, load.rate, run.duration_s, load.ramp_from, load.steps)

    async def _window(self) -> None:
        assert self.supervisor is not None and self.collector is not None
        run = self.profile.run
        start_ns = time.time_ns() + int(GO_MARGIN_S * 1e9)
        end_ns = start_ns + int(run.duration_s * 1e9)
        self.data.window = (start_ns, end_ns)
        self.collector.watch_harness({str(child): pid for child, pid in self.supervisor.pids().items() if child.kind != ChildKind.NODE})
        if self.driver_names or self.miner_names:
            send_go(self.data.run_dir / "go", start_ns)
            self.supervisor.signal(self.driver_names + self.miner_names, GO_SIGNAL)
        self.data.mark(RunPhase.GO)
        self.console(f"load window: {run.duration_s:g} s (warm-up {run.warmup_s:g} s, cool-down {run.cooldown_s:g} s)")
        await self._watch_until(end_ns)

    async def _watch_until(self, end_ns: int) -> None:
        assert self.supervisor is not None and self.collector is not None
        stop = asyncio.Event()
        faults = self._fault_scheduler()
        sampling = asyncio.ensure_future(
            self.collector.run(self.profile.run.status_interval_s, stop, self._on_sample, self._steady_edges())
        )
        faulting = asyncio.ensure_future(faults.run(self.data.window[0] if self.data.window else time.time_ns()))
        try:
            await self._wait_window_end(end_ns)
            self.data.mark(RunPhase.WINDOW_END)
            faulting.cancel()
            faults.heal_all()  # a partition or a pause still in force heals now, so the network can drain
            if self.driver_names:
                self._say_draining()
            if self.profile.network.consensus == "pow":
                await self._wait_tips_converge()
            await self._stop_miners()
            await self._wait_drivers_done()
            self.data.mark(RunPhase.DRAINED)
        finally:
            faulting.cancel()
            faults.net.close()  # no rule, shaped link or fault file outlives the run, however it ended
            stop.set()
            await asyncio.gather(sampling, return_exceptions=True)

    def _fault_scheduler(self) -> FaultScheduler:
        """Who applies the timed faults: this supervisor; a multi-host coordinator asks the hosts instead."""
        assert self.supervisor is not None and self.collector is not None
        supervisor = self.supervisor
        assert self.data.data_dir is not None
        net = net_faults(self.profile, self.data.data_dir, lambda: {c.index: pid for c, pid in supervisor.pids(ChildKind.NODE).items()},
                         self.deployment.addresses() if self.deployment is not None else [])  # fmt: skip
        return FaultScheduler(self.profile.faults, supervisor, self.collector, self.data.faults_applied, self.console, net,
                              self.profile.run.seed)  # fmt: skip

    def _say_draining(self) -> None:
        """The drain's start, with the drivers' backlog as of their last progress reports (and when that was,
        if it was a while ago: a figure must not read as current when it is not)."""
        line = self.status_line
        as_of = line.outstanding_as_of_ns()
        stale = stale_note(as_of, self.data.window) if as_of is not None else ""
        self.console(f"window over: draining up to {self.profile.run.drain_s:g} s for {line.outstanding:,} outstanding items{stale}")

    def _steady_edges(self) -> list[tuple[int, Boundary]]:
        """The steady window's start and end, sampled on purpose so the cost figures difference the kernel's
        CPU counters and the nodes' work counters over exactly that window (harness/metrics/cost.py); a
        run that ends early misses the end, and cost.py falls back to the periodic samples."""
        assert self.data.window is not None
        run = self.profile.run
        start_ns = self.data.window[0] + int(run.warmup_s * 1e9)
        end_ns = self.data.window[1] - int(run.cooldown_s * 1e9)
        return [(start_ns, Boundary.STEADY_START), (end_ns, Boundary.STEADY_END)] if end_ns > start_ns else []

    async def _wait_window_end(self, end_ns: int) -> None:
        """The window ends on time, or early once a PoW race has mined the blocks it was asked for."""
        remaining_s = max(0.0, (end_ns - time.time_ns()) / 1e9)
        try:
            await asyncio.wait_for(self._enough_blocks.wait(), remaining_s)  # never set without a block target
            self.data.notes.append("the window ended early: the PoW block target was reached")
        except TimeoutError:
            pass

    async def _wait_tips_converge(self) -> None:
        """PoW: poll the nodes until they all report one tip (or drain_s passes); record how long it took."""
        assert self.collector is not None
        deadline = time.monotonic() + self.profile.run.drain_s
        while time.monotonic() < deadline:
            sample = await self.collector.sample()
            tips = {s.pow.tip_hash for s in sample.statuses.values() if isinstance(s, PowStatus)}
            if len(tips) == 1 and len(sample.statuses) == self.profile.network.nodes:
                self.data.mark(RunPhase.TIPS_CONVERGED)
                return
            await asyncio.sleep(TIP_POLL_S)  # polling the nodes' tips, with a deadline
        self.data.notes.append(f"tips had not converged {self.profile.run.drain_s:g} s after the window")

    async def _wait_drivers_done(self) -> None:
        assert self.supervisor is not None
        if self.driver_names:
            await self.supervisor.wait_for("done", self.driver_names, self.profile.run.drain_s + STOP_GRACE_S)

    # -- stopping ----------------------------------------------------------------------------------
    async def _shut_down(self) -> None:
        """Stop drivers first (they write their records), sample once more, then stop the nodes."""
        assert self.supervisor is not None
        self.data.mark(RunPhase.STOPPING)
        await self.supervisor.stop(self.driver_names, STOP_GRACE_S)
        self._collect_driver_summaries()
        await self._stop_miners()
        if self.collector is not None:
            await self._final_sample()
        await self.supervisor.stop(self.node_names, STOP_GRACE_S)
        for name in self.node_names:
            final = self.supervisor.children[name].events.get("final")
            if final is not None:
                self.data.final_statuses[name.index] = decode_status(final["status"])
        self.data.mark(RunPhase.STOPPED)

    async def _final_sample(self) -> None:
        assert self.collector is not None
        try:
            await asyncio.wait_for(self.collector.sample(), STOP_GRACE_S)
        except TimeoutError:
            self.data.notes.append("the final status sample timed out")
        self.collector.close()
        self.data.samples = self.collector.samples

    async def _stop_miners(self) -> None:
        """Miners grind until told to stop; each reports its hashes and finds as it exits."""
        assert self.supervisor is not None
        if not self.miner_names or self.data.miner_summaries:
            return
        await self.supervisor.stop(self.miner_names, STOP_GRACE_S)
        for name in self.miner_names:
            done = self.supervisor.children[name].events.get("done")
            self.data.miner_summaries.append(done or {"miner": name.index, "missing": True})

    def _collect_driver_summaries(self) -> None:
        assert self.supervisor is not None
        for name in self.driver_names:
            done = self.supervisor.children[name].events.get("done")
            self.data.driver_summaries.append(done or {"driver": name.index, "missing": True})
            if done:
                self.data.harness_cpu_s += float(done.get("cpu_s", 0.0))

    def _count_harness_exceptions(self) -> None:
        """Exceptions that reached the supervisor's loop or a driver's or miner's (each reports its own count)."""
        children = self.data.driver_summaries + self.data.miner_summaries
        count = unexpected_exceptions() + sum(int(s.get("unexpected_exceptions", 0)) for s in children)
        self.data.harness_unexpected_exceptions = count
        if count:
            self.data.notes.append(f"harness processes counted {count} unexpected exceptions (tracebacks: console, logs/)")

    def _check_safety(self) -> None:
        """Read every node's chain back from its database (once: PoW metrics reuse the chains)."""
        data_dir, nodes = self.data.data_dir, self.profile.network.nodes
        if data_dir is None or not data_dir.exists() or self.deployment is None:
            return
        genesis = self.deployment.genesis
        if self.profile.network.consensus == "pow":
            self.data.pow_chains = read_chains(data_dir, nodes)
            self.data.safety = check_pow_safety(data_dir, nodes, genesis, self.data.pow_chains)
        else:
            self.data.safety = check_safety(data_dir, nodes, genesis)
            miners = [bytes.fromhex(i) for summary in self.data.miner_summaries for i in summary.get("accepted_ids", ())]
            self.data.safety.accounting = account_run(data_dir, self.data.safety.heights, self.data.records_paths, miners,
                                                      drained=self.data.interrupted is None)  # fmt: skip

    # -- events --------------------------------------------------------------------------------------
    def _on_event(self, child: Any, event: dict[str, Any]) -> None:
        name = event.get("event")
        if child.kind == ChildKind.NODE and name in self.readiness:
            self.readiness[name].mark(child.id.index)
        if child.kind == ChildKind.NODE and name == "connected":
            self.data.connected_events.setdefault(child.id.index, time.time_ns())
        elif child.kind == ChildKind.DRIVER and name == "progress":
            self.status_line.driver_progress(child.name, event)

    def _on_sample(self, sample: Sample) -> None:
        self.status_line.on_sample(sample, self.data.window)
        target = self._block_target()
        if target and max((s.height for s in sample.statuses.values()), default=0) >= target:
            self._enough_blocks.set()

    def _block_target(self) -> int:
        """concurrent-miners: stop after every mining node could have won ``blocks_per_miner`` blocks."""
        miners = self.profile.miners
        if self.profile.network.consensus != "pow" or not miners.blocks_per_miner:
            return 0
        mining = len(miners.mining_nodes) or self.profile.network.nodes
        return mining * miners.blocks_per_miner


def new_run_id(profile: Profile) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{profile.name}-n{profile.network.nodes}"
