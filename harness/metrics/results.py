"""The typed results of the metric functions: the ``metrics`` section of report.json (schema version 3).

Each section of docs/metrics.md is one type here, and every field is defined there under its own name
(a test walks these types and checks). The types are frozen msgspec Structs; a crash and the safety
check are the harness's own dataclasses, embedded as they are so that each is defined once. The report
is encoded, decoded and described as JSON Schema from these definitions alone (docs/design.md, "Report
types"). Field order is the order the report prints them in.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from harness.procs.supervisor import Crash
from harness.run.safety import SafetyCheck


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The base of every report type: immutable, encoded in field order, decoded strictly (an unknown
    field is an error). Subclasses repeat ``frozen=True`` for mypy and say ``kw_only=True`` themselves:
    msgspec applies it only to the fields of the class that declares it."""


# -- connectivity --------------------------------------------------------------------------------------
class LinksPerNode(Record, frozen=True, kw_only=True):
    """Validator links each node reports (its ``peer_ids``): the mesh's degree as the nodes see it."""

    min: int
    median: int  # nearest rank
    max: int


class Connectivity(Record, frozen=True, kw_only=True):
    intended_links: int
    links_up: int
    links_ratio: float
    time_to_connected_s: float | None
    time_to_connected_from_fork_s: float | None
    handshake_failures: int
    handshake_failures_by_reason: dict[str, int]
    graph_connected: bool
    diameter_hops: int | None
    links_per_node: LinksPerNode | None = None  # None: no node answered (and in reports before version 7)
    client_connections: int = 0  # load drivers and other clients connected, apart from validator links


# -- throughput ----------------------------------------------------------------------------------------
class LatencySummary(Record, frozen=True, kw_only=True):
    """Nearest-rank order statistics of a set of latencies, in milliseconds (None when there are none)."""

    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None


class GeneratorLateness(Record, frozen=True, kw_only=True):
    """How late the load generator sent proofs against their due times."""

    send_late_p50_ms: float | None
    send_late_p99_ms: float | None
    send_late_max_ms: float | None
    fell_behind: bool


class Throughput(Record, frozen=True, kw_only=True):
    steady_window_s: float
    offered_per_s: float
    submitted_per_s: float
    admitted_per_s: float
    rejected_per_s: float
    committed_per_s: float
    valid_submitted: int
    valid_committed: int
    delivery_ratio: float | None
    commit_latency: LatencySummary
    ceiling_per_s: float
    fraction_of_ceiling: float | None
    generator: GeneratorLateness
    plan_exhausted: bool
    valid_rejected_by_reason: dict[str, int]
    expected_commit_delay_ms: float | None
    # schema 4: what makes offered and committed per second add up (None in older reports)
    valid_offered_per_s: float | None = None  # valid items due in the steady window / its length (offered_per_s counts invalid ones too)
    backlog_at_start: int | None = None  # valid items sent, not refused, not yet committed at the steady window's start
    backlog_at_end: int | None = None  # the same at its end: committed_per_s ~ valid sent per s + (start - end) / window


class InvalidProofs(Record, frozen=True, kw_only=True):
    sent: int
    by_kind: dict[str, int]
    answers: dict[str, int]
    committed: int
    accepted: int


# -- service: what the score judges (docs/metrics.md, "Service") ---------------------------------------
class CommitSource(StrEnum):
    """What the stall detector read commit times from."""

    RECORDS = "records"  # the drivers' COMMITTED notices, one per valid item (a run with submission load)
    HEIGHTS = "heights"  # the nodes' STATUS samples: when the highest height grew (no submission load)
    NONE = "none"  # nothing to read: a PoP run without load proposes no block, so stalls are not measured


class Stall(Record, frozen=True, kw_only=True):
    """A gap with no commit longer than the stall threshold, inside the steady window."""

    start_s: float  # seconds after the load window started (the origin of every offset in the report)
    length_s: float


class Service(Record, frozen=True, kw_only=True):
    """The service the network gave the items due in the steady window, against the profile's ``[slo]``.

    Every miss counts: a valid item due in the window that was never sent, was refused, or never
    committed is a miss with unbounded latency. Offsets are seconds after the load window started."""

    steady_start_s: float
    steady_end_s: float
    latency_target_ms: float  # slo.latency_ms (L)
    due: int  # valid items due in the steady window (the offered load the score judges)
    committed: int  # of those, committed at all (by the end of the drain)
    committed_within_target: int  # of those, committed with latency (commit seen - due) <= L
    within_target_share: float | None  # committed_within_target / due
    p99_all_ms: float | None  # nearest-rank p99 over all due items, misses sorting last; None if unbounded or none due
    p99_unbounded: bool  # the p99 rank falls on a miss: the p99 latency is infinite
    committed_in_window: int  # due items whose commit was seen before steady end + L (the delivery numerator)
    delivery: float | None  # committed_in_window / due
    commits_seen: int  # valid items (any due time) whose commit was seen inside the steady window
    commit_source: CommitSource
    stall_threshold_s: float  # PoP: consensus.view_timeout_ms; PoW: 10 target block intervals
    expected_commit_s: float = 0.0  # a waiting item counts toward a stall this long after its due (PoW: k + 1 intervals)
    stalls: list[Stall]
    stalled_s: float
    stalled_share: float | None  # stalled_s / steady window length; None when commit_source is none
    least_links_share: float | None  # min over steady-window samples of links up / intended (planned-down nodes left out)
    least_links_at_s: float | None  # the first sample where that least share was seen
    light_load: bool | None  # PoP with load: offered below score.light_load_fraction x ceiling_per_s; else None
    light_load_below_per_s: float | None  # that threshold, items/s
    # schema 4: an interrupted run is measured over what ran (docs/metrics.md, "An interrupted run")
    interrupted_at_s: float | None = None  # when the run was stopped (offset); None: it ran to the end
    in_flight_at_stop: int = 0  # valid items due in the window still in flight at the stop: left out of due and every figure


# -- findings: the report's issues (harness/metrics/findings.py) ---------------------------------------
class FindingKind(StrEnum):
    SAFETY = "safety"  # two nodes committed different blocks at one height
    ITEMS_LOST = "items_lost"  # an acknowledged item not committed, one committed twice, or one nobody submitted
    INVALID_COMMITTED = "invalid_committed"
    RUN_FAILED = "run_failed"
    INTERRUPTED = "interrupted"
    CRASH = "crash"  # a child ended unplanned
    NOT_REPORTING = "not_reporting"  # a node that should be up sent no final STATUS
    STALL = "stall"
    FELL_BEHIND = "fell_behind"  # delivery below slo.min_delivery
    NOTHING_DUE = "nothing_due"
    SLO_BREACHED = "slo_breached"
    LINK_LOST = "link_lost"
    BACKLOG_GROWING = "backlog_growing"
    VIEW_CHANGE = "view_change"
    FAULT_APPLIED = "fault_applied"  # a planned kill or restart of the profile's [[faults]]
    GENERATOR_SATURATED = "generator_saturated"
    PLAN_EXHAUSTED = "plan_exhausted"
    MEMORY_GROWTH = "memory_growth"
    RESOURCE_GROWTH = "resource_growth"  # the growth verdict flagged descriptors, database per block or CPU per block
    LIGHT_LOAD = "light_load"
    PROTOCOL_ERRORS = "protocol_errors"
    UNEXPECTED_EXCEPTIONS = "unexpected_exceptions"
    NOTE = "note"  # a free-text issue of a report older than schema version 3


class Severity(StrEnum):
    """How much a finding weighs, in the order findings are listed."""

    FAIL = "fail"  # the run fails (grade F) because of it
    INVALID = "invalid"  # the run is not valid as a measurement
    WARN = "warn"  # it costs the grade or points, or a reader should look
    INFO = "info"  # what happened, for the record


SEVERITY_ORDER = list(Severity)


class Finding(Record, frozen=True, kw_only=True):
    kind: FindingKind
    severity: Severity
    at_s: float | None  # seconds after the load window started; None: no single moment
    message: str
    figures: dict[str, float]


# -- consensus and work --------------------------------------------------------------------------------
class Consensus(Record, frozen=True, kw_only=True):
    height: int
    blocks_in_steady_window: int
    block_interval_s: float | None
    round_time_mean_s: float | None
    round_time_max_s: float | None


class Work(Record, frozen=True, kw_only=True):
    proofs_committed: int
    frames_total: int
    bytes_total: int
    verifications_total: int
    frames_per_proof: float | None
    bytes_per_proof: float | None
    verifications_per_proof: float | None


class Cost(Record, frozen=True, kw_only=True):
    """The steady window's exact cost: cumulative kernel CPU counters and node counters differenced between
    the samples at the window's edges (harness/metrics/cost.py). Per-proof and per-block figures are None
    when nothing committed in the window."""

    window_start_s: float  # the first edge sample, seconds after the load window started
    window_span_s: float  # wall seconds between the two edge samples
    exact_edges: bool  # both edges were sampled on purpose; False: the nearest periodic samples outside them
    nodes_measured: int  # nodes read at both edges by the same process
    node_cpu_s: float
    supervisor_cpu_s: float
    load_cpu_s: float  # drivers and miners
    load_processes_measured: int
    proofs_committed: int  # PoW: transfers
    blocks_committed: int
    messages_sent: int
    node_cpu_ms_per_proof: float | None
    node_cpu_ms_per_block: float | None
    harness_cpu_ms_per_proof: float | None
    messages_per_block: float | None
    messages_per_block_by_type: dict[str, float]

    @property
    def load_cpu_ms_per_proof(self) -> float | None:
        """The load generator's CPU-ms per committed proof: the covariate of the adjusted node CPU figure
        (docs/regression.md). Derived from two stored fields, so reports of any version have it."""
        if not self.proofs_committed or not self.load_processes_measured:
            return None
        return self.load_cpu_s * 1e3 / self.proofs_committed


# -- stability -----------------------------------------------------------------------------------------
class FaultRecovery(Record, frozen=True, kw_only=True):
    """How the network took one planned fault (harness/metrics/recovery.py; docs/faults.md)."""

    fault: int  # its index in the profile's [[faults]]
    kind: str
    nodes: list[int]
    at_s: float
    healed_at_s: float | None  # None: it never healed (a kill left down)
    longest_gap_s: float  # the longest time without a commit from the fault to its heal (or the window's end)
    committed_per_s_before: float
    committed_per_s_during: float
    first_commit_after_heal_s: float | None
    converged_after_heal_s: float | None  # every answering node at one height, at least the pre-heal highest
    view_changes: int | None  # summed over nodes, from before the fault to CONVERGE_GRACE_S after its heal


class Stability(Record, frozen=True, kw_only=True):
    nodes_reporting_at_end: int
    nodes: int
    uptime_mean: float | None
    crashes: list[Crash]
    unplanned_crashes: int
    view_changes_max: int
    view_changes_total: int
    protocol_errors: int
    equivocations_seen: int
    consensus_success_rate: float | None
    safety: SafetyCheck | None
    unexpected_exceptions: int = 0  # summed over the nodes' final STATUS (popbench.loop_exceptions)
    nodes_down_by_plan_at_end: int = 0  # nodes a planned kill left down (no later restart): not expected to report
    recovery: list[FaultRecovery] = msgspec.field(default_factory=list)  # one per timed fault applied in the window


# -- resources -----------------------------------------------------------------------------------------
class UssSummary(Record, frozen=True, kw_only=True):
    median: float | None
    max: float | None
    nodes_measured: int


class Resources(Record, frozen=True, kw_only=True):
    uss_per_node_mib: UssSummary
    uss_samples_in_window: int = 0  # status samples inside the steady window that read USS
    cpu_per_node_percent_mean: float | None
    open_files_per_node_max: int | None
    context_switches_per_s_per_node_mean: float | None
    harness_cpu_s: float
    supervisor_cpu_percent_in_window: float | None
    harness_cpu_share: float | None


# -- mining --------------------------------------------------------------------------------------------
class PopMining(Record, frozen=True, kw_only=True, tag="pop", tag_field="kind"):
    """The PoP miners' load: hash rate, efficiency and what became of the proofs they found."""

    miners: int
    miners_reporting: int
    hash_rate_total: float
    hash_rate_per_miner: list[float]
    hash_efficiency: float | None
    wall_efficiency: float | None
    proofs_found: int
    proofs_accepted: int
    proofs_rejected: int
    proofs_committed: int
    mined_commit_latency_p50_ms: float | None
    mined_commit_latency_p99_ms: float | None


class PropagationShare(Record, frozen=True, kw_only=True):
    """Delays for blocks to reach one share of the nodes, over the blocks that reached it."""

    blocks_reached: int
    p50_ms: float | None
    p90_ms: float | None
    mean_ms: float | None


class Propagation(Record, frozen=True, kw_only=True):
    blocks: int
    p50_nodes: PropagationShare
    p90_nodes: PropagationShare
    all_nodes: PropagationShare


class BlockInterval(Record, frozen=True, kw_only=True):
    mean_s: float | None
    stdev_s: float | None
    target_s: float
    gaps: int


class PowMining(Record, frozen=True, kw_only=True, tag="pow", tag_field="kind"):
    """A proof-of-work chain's behaviour, read back from every node's database."""

    hashes: int
    grinding_s: float
    hash_rate_per_grinding_s: float
    hash_rate_per_miner: dict[int, float]
    hash_efficiency: float | None
    wall_hash_efficiency: float | None = None  # hashes / (steady window s x cores x calibrated hashes/s/core)
    blocks_mined: int
    main_chain_height: int
    stale_blocks: int
    stale_rate: float | None
    stale_rate_predicted: float | None
    propagation: Propagation
    block_interval: BlockInterval
    blocks_won_per_miner: dict[int, int]
    deepest_reorg: int
    reorgs_total: int
    distinct_tips_at_stop: int
    tips_converged_after_window_s: float | None


Mining = PopMining | PowMining


# -- all of them ---------------------------------------------------------------------------------------
# -- growth (harness/metrics/growth.py) ----------------------------------------------------------------
class GrowthVerdict(StrEnum):
    FLAT = "flat"  # every quantity measured, none flagged
    FLAGGED = "flagged"  # at least one quantity's slope is past its threshold with 95 % confidence
    NOT_ENOUGH_SAMPLES = "not enough samples"  # too few points or too short a steady window: nothing is flagged


class GrowthSlope(Record, frozen=True, kw_only=True):
    """One quantity's least-squares line over the steady window's samples, per hour, with its 95 % interval."""

    quantity: str  # uss_mib_median, uss_mib_max, open_fds_max, db_bytes_per_block, cpu_ms_per_block (NodeState fields)
    unit: str  # of the quantity; the slope is that unit per hour
    points: int  # samples in the steady window that measured it
    first: float | None  # the fitted line at the first point and at the last: where it went from and to
    last: float | None
    slope_per_hour: float | None  # None: fewer than 3 points, or every point at one instant
    ci_low_per_hour: float | None  # slope -/+ t(0.975, points - 2) x its standard error
    ci_high_per_hour: float | None
    threshold_per_hour: float  # the profile's [growth] threshold for it
    flagged: bool  # ci_low_per_hour > threshold_per_hour (never when the verdict is "not enough samples")


class Growth(Record, frozen=True, kw_only=True):
    """Whether the nodes' memory, descriptors, database and per-block CPU grew over the steady window."""

    verdict: GrowthVerdict
    reason: str  # one line: what was flagged, or why there were not enough samples
    window_s: float  # the steady window's length
    min_points: int  # the profile's [growth] minimums the verdict was held to
    min_span_s: float
    slopes: list[GrowthSlope]


class Metrics(Record, frozen=True, kw_only=True):
    """Every figure of one run; a section is None when the run did not exercise it."""

    connectivity: Connectivity
    service: Service | None = None  # None when there is no steady window (a run that failed early) or a v2 report
    throughput: Throughput | None
    invalid_proofs: InvalidProofs
    consensus: Consensus
    work: Work
    cost: Cost | None = None  # None when no two samples bracket the steady window, or a report before it existed
    stability: Stability
    resources: Resources
    mining: Mining | None
    growth: Growth | None = None  # None: no steady window, or a report before schema version 6
