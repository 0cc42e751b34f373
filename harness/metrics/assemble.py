"""All the metrics of one run, computed from its RunData after the run (docs/metrics.md defines each).

The result is a typed :class:`~harness.metrics.results.Metrics` tree, the ``metrics`` section of report.json.
"""

from __future__ import annotations

from typing import Any

from harness.kinds import RunPhase
from harness.host.calibrate import pop_ceiling
from harness.metrics import mining
from harness.metrics import network as net
from harness.metrics import throughput as tp
from harness.metrics.pow import pow_metrics
from harness.metrics.results import Metrics, Mining, Throughput
from harness.run.phases import RunData
from popbench.pow.node import CONFIRMATIONS as POW_CONFIRMATIONS
from popbench.wire.status import AnyStatus


def steady_window(data: RunData) -> tp.SteadyWindow | None:
    """The load window minus warm-up and cool-down, cut short where an interrupted run ended."""
    if data.window is None:
        return None
    run = data.profile.run
    start = data.window[0] + int(run.warmup_s * 1e9)
    end = min(data.window[1] - int(run.cooldown_s * 1e9), data.phases.get(RunPhase.STOPPING, data.window[1]))
    return tp.SteadyWindow(start, end) if end > start else None


def compute(data: RunData) -> Metrics:
    nodes = data.profile.network.nodes
    steady = steady_window(data)
    run_s = ((data.phases.get(RunPhase.STOPPED) or data.started_ns) - data.started_ns) / 1e9
    cores = data.calibration.cores if data.calibration else 1
    planned_kills = {f["node"] for f in data.faults_applied if f["kind"] == "kill"}
    latest = _latest_statuses(data, steady.end_ns if steady else None)
    return Metrics(
        connectivity=net.connectivity(
            latest, data.deployment.get("intended_links", 0), nodes, data.phases, data.started_ns, data.final_statuses
        ),
        throughput=_throughput(data, steady),
        invalid_proofs=tp.invalid_outcomes(tp.load_records(data.records_paths)),
        consensus=net.consensus(data.samples, (steady.start_ns, steady.end_ns) if steady else (0, 0), data.final_statuses),
        work=net.work_per_proof(data.final_statuses),
        stability=net.stability(data.final_statuses, data.crashes, planned_kills, nodes, _node_span_s(data), data.safety),
        resources=net.resources(data.samples, data.harness_cpu_s, run_s, cores),
        mining=_mining(data),
    )


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


def _throughput(data: RunData, steady: tp.SteadyWindow | None) -> Throughput | None:
    if steady is None or not data.records_paths:
        return None
    return tp.throughput(tp.load_records(data.records_paths), steady, _ceiling(data), _expected_commit_delay_ms(data))


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
