"""All the metrics of one run, computed from its RunData after the run (docs/metrics.md defines each).

The result is a typed :class:`~harness.metrics.results.Metrics` tree, the ``metrics`` section of report.json.
"""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from harness.host.calibrate import pop_ceiling
from harness.kinds import RunPhase
from harness.load.records import ProofRecord
from harness.metrics import mining
from harness.metrics import network as net
from harness.metrics import throughput as tp
from harness.metrics.cost import cost as window_cost
from harness.metrics.growth import growth
from harness.metrics.pow import pow_metrics
from harness.metrics.recovery import fault_recoveries
from harness.metrics.results import Growth, Metrics, Mining, PowMining, Service, Throughput
from harness.metrics.service import POW_STALL_INTERVALS, ServiceInputs, planned_deaths, planned_down_spans, service
from harness.metrics.timeline import Timeline, build_timeline, sample_states
from harness.run.phases import RunData
from popbench.pow.rules import CONFIRMATIONS as POW_CONFIRMATIONS
from popbench.wire.status import AnyStatus


def steady_window(data: RunData) -> tp.SteadyWindow | None:
    """The load window minus warm-up and cool-down, cut short where an interrupted run stopped. A run
    interrupted before its steady window began is measured over the part of the load window that ran
    (warm-up and all): what elapsed, rather than nothing (docs/metrics.md, "An interrupted run")."""
    if data.window is None:
        return None
    run = data.profile.run
    stop = data.phases.get(RunPhase.STOPPING, data.window[1])
    start = data.window[0] + int(run.warmup_s * 1e9)
    end = min(data.window[1] - int(run.cooldown_s * 1e9), stop)
    if end > start:
        return tp.SteadyWindow(start, end)
    ran_until = min(data.window[1], stop)
    return tp.SteadyWindow(data.window[0], ran_until) if data.interrupted and ran_until > data.window[0] else None


def stopped_ns(data: RunData) -> int | None:
    """When an interrupted run was stopped (None: it ran to the end, or failed): what was in flight then
    is left out of the figures, not counted as lost."""
    return data.phases.get(RunPhase.STOPPING) if data.interrupted else None


def compute(data: RunData) -> Metrics:
    nodes = data.profile.network.nodes
    steady = steady_window(data)
    bounds = (steady.start_ns, steady.end_ns) if steady else (0, 0)
    run_s = ((data.phases.get(RunPhase.STOPPED) or data.started_ns) - data.started_ns) / 1e9
    cores = data.calibration.cores if data.calibration else 1
    planned_kills = planned_deaths(data.faults_applied)
    latest = _latest_statuses(data, steady.end_ns if steady else None)
    records = tp.load_records(data.records_paths)
    throughput = _throughput(data, records, steady)
    stability = net.stability(data.final_statuses, data.crashes, planned_kills, nodes, _node_span_s(data), data.safety,
                              len(_down_at_end(data)))  # fmt: skip
    if data.faults_applied and data.window:
        commits = sorted(r.commit_ns for r in records if r.commit_ns)
        recovery = fault_recoveries(data.faults_applied, commits, data.samples, data.window[1], data.window[0])
        stability = msgspec.structs.replace(stability, recovery=recovery)
    return Metrics(
        connectivity=net.connectivity(
            latest, data.deployment.get("intended_links", 0), nodes, data.phases, data.started_ns, data.final_statuses
        ),
        service=_service(data, records, steady, throughput),
        throughput=throughput,
        invalid_proofs=tp.invalid_outcomes(records),
        consensus=net.consensus(data.samples, bounds, data.final_statuses),
        work=net.work_per_proof(data.final_statuses),
        cost=window_cost(data.samples, steady, data.window[0] if data.window else 0),
        stability=stability,
        resources=net.resources(data.samples, bounds, data.harness_cpu_s, run_s, cores),
        mining=_with_wall_efficiency(_mining(data), data),
        growth=_growth(data, steady),
    )


def _growth(data: RunData, steady: tp.SteadyWindow | None) -> Growth | None:
    """The growth verdict over the steady window's status samples (harness/metrics/growth.py)."""
    if steady is None or data.window is None:
        return None
    origin = data.window[0]
    rows = sample_states(data.samples, origin)
    return growth(rows, ((steady.start_ns - origin) / 1e9, (steady.end_ns - origin) / 1e9), data.profile.growth)


def timeline(data: RunData) -> Timeline | None:
    """The run second by second, from the load window's start to the end of the drain (None: no window)."""
    steady = steady_window(data)
    if data.window is None or steady is None:
        return None
    end_ns = data.phases.get(RunPhase.DRAINED) or data.phases.get(RunPhase.STOPPING) or data.window[1]
    records = tp.load_records(data.records_paths)
    return build_timeline(records, data.samples, data.window[0], (steady.start_ns, steady.end_ns), end_ns)


# -- service -------------------------------------------------------------------------------------------
def _service(data: RunData, records: list[ProofRecord], steady: tp.SteadyWindow | None, throughput: Throughput | None) -> Service | None:
    if steady is None or data.window is None:
        return None
    profile = data.profile
    end_ns = data.phases.get(RunPhase.STOPPING) or data.window[1]
    inputs = ServiceInputs(
        origin_ns=data.window[0], steady=steady, latency_target_ms=profile.slo.latency_ms,
        stall_threshold_s=stall_threshold_s(data), expected_commit_s=expected_commit_s(data), intended_edges=data.intended_edges,
        down_spans=planned_down_spans(data.faults_applied, end_ns),
        light_load_below_per_s=_light_load_below(data, throughput), has_load=bool(records) and profile.workload.rate > 0,
        stopped_ns=stopped_ns(data),
    )  # fmt: skip
    return service(records, data.samples, inputs)


def stall_threshold_s(data: RunData) -> float:
    """PoP: the view timeout (a live leader commits well within it). PoW: POW_STALL_INTERVALS target intervals."""
    if data.profile.network.consensus == "pow":
        return POW_STALL_INTERVALS * data.profile.miners.block_interval_ms / 1000
    return data.profile.consensus.view_timeout_ms / 1000


def expected_commit_s(data: RunData) -> float:
    """How long a healthy network takes to commit an item, in expectation: a waiting item counts toward a
    stall only after it. PoW: (k + 1) target intervals, mined into a block and then k blocks on top
    (7 x 300 ms = 2.1 s in a test profile whose steady window opens 1 s in). PoP: 0; a round is far
    shorter than the view timeout the stall threshold already is."""
    if data.profile.network.consensus == "pow":
        return (POW_CONFIRMATIONS + 1) * data.profile.miners.block_interval_ms / 1000
    return 0.0


def _light_load_below(data: RunData, throughput: Throughput | None) -> float | None:
    """PoP only: the offered rate under which the run is light load (a share of the verify-bound ceiling)."""
    if data.profile.network.consensus == "pow" or throughput is None or not throughput.ceiling_per_s:
        return None
    return data.profile.score.light_load_fraction * throughput.ceiling_per_s


def _down_at_end(data: RunData) -> set[int]:
    """Nodes whose last planned fault was a kill: they are not expected to report at the end."""
    down: set[int] = set()
    for fault in sorted(data.faults_applied, key=lambda f: int(f["at_ns"])):
        nodes = {int(node) for node in fault.get("nodes") or [fault["node"]]}
        if fault["kind"] == "kill" or (fault["kind"] == "wipe" and fault.get("pid") is None):
            down |= nodes
        elif fault["kind"] in ("restart", "wipe") and not fault.get("error"):
            down -= nodes
    return down


def _with_wall_efficiency(mining: Mining | None, data: RunData) -> Mining | None:
    """PoW: hashes over what the cores could have hashed while the nodes ran (connected to stopping)."""
    if not isinstance(mining, PowMining) or data.calibration is None:
        return mining
    began, ended = data.phases.get(RunPhase.CONNECTED), data.phases.get(RunPhase.STOPPING)
    if not began or not ended or ended <= began:
        return mining
    possible = (ended - began) / 1e9 * data.calibration.cores * data.calibration.hashes_per_s_per_core
    return replace(mining, wall_hash_efficiency=mining.hashes / possible if possible else None)


def _mining(data: RunData) -> Mining | None:
    """PoW chain metrics, or the PoP mining load when miners ran; None when nothing mined."""
    if data.calibration is None:
        return None
    if data.profile.network.consensus == "pow":
        target_s = data.profile.miners.block_interval_ms / 1000
        converged = data.phases.get(RunPhase.TIPS_CONVERGED)
        after_s = (converged - data.phases[RunPhase.WINDOW_END]) / 1e9 if converged and RunPhase.WINDOW_END in data.phases else None
        return pow_metrics(data.pow_chains, data.final_statuses, target_s, data.calibration.hashes_per_s_per_core, after_s)
    if not data.miner_summaries:
        return None
    cores = min(len(data.miner_summaries), data.calibration.cores)
    return mining.pop_mining(data.miner_summaries, data.calibration.hashes_per_s_per_core, cores)


def _node_span_s(data: RunData) -> float:
    """How long nodes should have been up: from the first fork to the start of shut-down."""
    began, ended = data.phases.get(RunPhase.FORKING), data.phases.get(RunPhase.STOPPING)
    return (ended - began) / 1e9 if began and ended else 0.0


def _throughput(data: RunData, records: list[ProofRecord], steady: tp.SteadyWindow | None) -> Throughput | None:
    if steady is None or not data.records_paths:
        return None
    slo = data.profile.slo
    in_flight = tp.in_flight_at_stop(stopped_ns(data), int(slo.latency_ms * 1e6))
    return tp.throughput(
        records, steady, _ceiling(data), _expected_commit_delay_ms(data), tp.generator_late_limit_ms(slo.latency_ms), in_flight
    )


def _ceiling(data: RunData) -> float:
    """PBFT: the verify-bound ceiling. PoW: the chain's capacity, a full block per target interval."""
    if data.profile.network.consensus == "pow":
        return data.profile.consensus.batch_size / (data.profile.miners.block_interval_ms / 1000)
    return pop_ceiling(data.calibration, data.profile.network.nodes) if data.calibration else 0.0


def _expected_commit_delay_ms(data: RunData) -> float | None:
    """PoW: a transfer commits k blocks deep, so k target intervals is the least latency to expect."""
    if data.profile.network.consensus != "pow":
        return None
    return POW_CONFIRMATIONS * data.profile.miners.block_interval_ms


def _latest_statuses(data: RunData, end_ns: int | None) -> dict[int, AnyStatus]:
    """Each node's last STATUS up to the end of the steady window (a busy node may miss a sample)."""
    latest: dict[int, AnyStatus] = {}
    for sample in data.samples:
        if end_ns is None or sample.at_ns <= end_ns:
            latest.update(sample.statuses)
    return latest
