"""The CPU cost model: node CPU per committed proof as a function of the network's size, and the planner.

Summed over all N validators, from the exact CPU counters:

- every validator verifies every proof, so verification costs ``a * N`` per proof;
- per block, PBFT's all-to-all votes cost ``b * N^2`` (each of N validators receives ~2N votes), the
  per-validator block work ``c * N`` and a fixed ``d``: ``cpu_per_block = b N^2 + c N + d``;
- so ``cpu_per_proof = a N + (b N^2 + c N + d) / batch``, batch being the proofs per block.

A linear protocol (votes collected by a leader) has no ``N^2`` term (``b = 0``). The model is linear in
(a, b, c, d), so it is fitted by least squares on the regressors ``[N, N^2/batch, N/batch, 1/batch]``,
with every coefficient non-negative (a negative cost is meaningless and would make extrapolation bend
down) and each row weighted by 1/observed, so the fit minimises relative error (CPU per proof spans
orders of magnitude across sizes; unweighted, the largest size would decide alone). The non-negative
fit is exact: with at most four terms, every subset of terms is fitted with ``numpy.linalg.lstsq`` and
the best one whose coefficients are all non-negative wins (that is the NNLS optimum, and needs no
solver beyond numpy). The prediction band is a residual bootstrap: refit on the fitted values times
resampled relative residuals, and add one resampled residual per refit for a new observation's noise.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping
from enum import StrEnum

import msgspec
import numpy as np
from numpy.typing import NDArray

from harness.capacity.points import CapacityRecord, RunRecord
from harness.kinds import WorkloadMode
from popbench.errors import HarnessError

BOOTSTRAP_SAMPLES = 400
BAND_LEVEL = 0.90  # the prediction band covers the middle 90 % of bootstrap predictions
DEFAULT_UTILISATION_CEILING = 0.7  # plan to run cores at most 70 % busy: queueing delay explodes near 100 %
TRUST_FACTOR = 2.0  # predictions beyond 2x the largest measured size are extrapolation we do not trust
MS_PER_S = 1000.0

Matrix = NDArray[np.float64]


class VoteGrowth(StrEnum):
    """How a protocol's per-block vote work grows with the number of validators."""

    QUADRATIC = "quadratic"  # PBFT: all-to-all prepare and commit votes
    LINEAR = "linear"  # votes collected and aggregated by a leader


class ModelError(HarnessError):
    """Raised when the cost model cannot be fitted (too few observations, or none usable)."""


class Observation(CapacityRecord, frozen=True, kw_only=True):
    """One run's exact counters: node CPU per committed proof (all nodes) at a size and a batch."""

    nodes: int
    proofs_per_block: float
    cpu_ms_per_proof: float


class Coefficients(CapacityRecord, frozen=True, kw_only=True):
    """The model's terms, in node-CPU milliseconds (summed over all validators)."""

    a_ms_per_proof_per_node: float  # verifying one proof at one validator
    b_ms_per_block_per_node2: float  # all-to-all votes (0 for a linear protocol)
    c_ms_per_block_per_node: float  # one validator's share of a block (its vote, the block's checks)
    d_ms_per_block: float  # fixed per block

    def cpu_ms_per_block(self, nodes: float) -> float:
        return self.b_ms_per_block_per_node2 * nodes * nodes + self.c_ms_per_block_per_node * nodes + self.d_ms_per_block

    def cpu_ms_per_proof(self, nodes: float, proofs_per_block: float) -> float:
        return self.a_ms_per_proof_per_node * nodes + self.cpu_ms_per_block(nodes) / proofs_per_block


class CostModel(CapacityRecord, frozen=True, kw_only=True):
    """A fitted model with what it was fitted on, how well, and its bootstrap samples for the band."""

    growth: VoteGrowth
    coefficients: Coefficients
    fitted_sizes: list[int]
    observations: int
    proofs_per_block: float  # the median batch observed: "batch as profiled" when a prediction names none
    rms_relative_error: float
    identifiable: bool  # False: the batches did not vary, so a (per proof) and c (per block) are not separable
    samples: list[Coefficients]
    sample_noise: list[float]  # one resampled relative residual per sample: a new observation's scatter
    notes: list[str] = msgspec.field(default_factory=list)

    @property
    def largest_measured_nodes(self) -> int:
        return max(self.fitted_sizes)


class Prediction(CapacityRecord, frozen=True, kw_only=True):
    value: float
    low: float
    high: float


class DeploymentPlan(CapacityRecord, frozen=True, kw_only=True):
    """The planner's answer: cores and hosts for N validators at R proofs/s, with its assumptions and trust."""

    nodes: int
    rate_per_s: float
    cores_per_host: int
    proofs_per_block: float
    utilisation_ceiling: float
    cpu_ms_per_proof: Prediction
    cores_needed: Prediction
    hosts: int
    hosts_high: int  # at the band's upper end
    extrapolation: float  # nodes / the largest measured size
    trusted_up_to_nodes: int
    trustworthy: bool
    assumptions: list[str]


class HeldOut(CapacityRecord, frozen=True, kw_only=True):
    """A size left out of the fit: what the model predicted for it against what was measured."""

    nodes: int
    measured_cpu_ms_per_proof: float
    predicted_cpu_ms_per_proof: Prediction
    error_percent: float
    within_band: bool
    measured_capacity_per_s: float | None = None
    predicted_capacity_per_s: Prediction | None = None
    capacity_error_percent: float | None = None


class MeasuredCapacities(CapacityRecord, frozen=True, kw_only=True):
    """Measured highest sustained rates (nodes -> proofs/s) on ``cores`` cores, for validating capacity
    predictions; ``proofs_per_block`` is the batch at those rates (None: the model's median batch)."""

    per_size: dict[int, float]
    cores: float
    proofs_per_block: float | None = None
    none_sustained: list[int] = msgspec.field(default_factory=list)  # sizes whose search sustained no rate at all


class Validation(CapacityRecord, frozen=True, kw_only=True):
    fit_max_nodes: int
    model: CostModel
    utilisation: float | None  # fitted on the small sizes' capacities, when capacities were given
    held_out: list[HeldOut]
    # where the CPU-bound capacity prediction is not the binding limit: a held-out size measured far
    # below it, or one that sustained no rate at all (then it has no CPU observation to tabulate)
    not_cpu_bound: list[str] = msgspec.field(default_factory=list)


# -- observations ----------------------------------------------------------------------------------
def observations_from_runs(records: Iterable[RunRecord], sustained_only: bool = True) -> list[Observation]:
    """Open-loop runs with exact counters (sustained ones by default: an overloaded network's CPU per proof
    includes the cost of falling behind, which is not the cost the planner asks about)."""
    return [Observation(nodes=r.key.nodes, proofs_per_block=r.outcome.proofs_per_block, cpu_ms_per_proof=r.outcome.cpu_ms_per_proof)
            for r in records
            if r.key.mode is WorkloadMode.OPEN and (r.verdict.sustained or not sustained_only)
            and r.outcome.cpu_ms_per_proof is not None and r.outcome.cpu_ms_per_proof > 0
            and r.outcome.proofs_per_block is not None and r.outcome.proofs_per_block > 0]  # fmt: skip


# -- the fit ---------------------------------------------------------------------------------------
def term_count(growth: VoteGrowth) -> int:
    return 4 if growth is VoteGrowth.QUADRATIC else 3


def design_matrix(growth: VoteGrowth, nodes: Matrix, batch: Matrix) -> Matrix:
    """The regressors of each observation: [N, N^2/batch, N/batch, 1/batch] (no N^2 column for LINEAR)."""
    columns = [nodes, nodes * nodes / batch, nodes / batch, 1.0 / batch]
    if growth is VoteGrowth.LINEAR:
        del columns[1]
    return np.column_stack(columns)


def to_coefficients(growth: VoteGrowth, solution: Matrix) -> Coefficients:
    values = [float(v) for v in solution]
    if growth is VoteGrowth.LINEAR:
        values.insert(1, 0.0)
    return Coefficients(
        a_ms_per_proof_per_node=values[0], b_ms_per_block_per_node2=values[1], c_ms_per_block_per_node=values[2], d_ms_per_block=values[3]
    )


def nonnegative_least_squares(matrix: Matrix, target: Matrix) -> Matrix:
    """argmin ||matrix x - target|| subject to x >= 0, exactly, by fitting every subset of columns.

    The constrained optimum is the unconstrained least-squares fit on its own set of non-zero columns,
    and every non-negative subset fit is feasible, so the best non-negative subset fit is the optimum.
    2^k - 1 small fits: fine for the model's k <= 4, not for wide problems."""
    columns = matrix.shape[1]
    best, best_residual = np.zeros(columns), float(np.sum(target * target))
    for size in range(1, columns + 1):
        for subset in itertools.combinations(range(columns), size):
            chosen = list(subset)
            solution = np.linalg.lstsq(matrix[:, chosen], target, rcond=None)[0]
            if np.any(solution < 0):
                continue
            residual = float(np.sum((matrix[:, chosen] @ solution - target) ** 2))
            if residual < best_residual * (1 - 1e-12):
                best, best_residual = np.zeros(columns), residual
                best[chosen] = solution
    return best


def fit_coefficients(growth: VoteGrowth, nodes: Matrix, batch: Matrix, cpu: Matrix) -> Matrix:
    """The weighted non-negative fit: each row divided by its observation, so residuals are relative."""
    design = design_matrix(growth, nodes, batch)
    return nonnegative_least_squares(design / cpu[:, None], np.ones_like(cpu))


def fit_cost_model(observations: list[Observation], growth: VoteGrowth = VoteGrowth.QUADRATIC,
                   samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> CostModel:  # fmt: skip
    """Fit the model to runs' counters; the band comes from ``samples`` residual-bootstrap refits."""
    terms = term_count(growth)
    sizes = sorted({o.nodes for o in observations})
    if len(observations) <= terms or len(sizes) < 2:
        raise ModelError(f"the {growth.value} model needs more than {terms} observations over at least 2 sizes "
                         f"(got {len(observations)} over {len(sizes)})")  # fmt: skip
    nodes, batch, cpu = (np.array(values, dtype=np.float64) for values in
                         zip(*((o.nodes, o.proofs_per_block, o.cpu_ms_per_proof) for o in observations), strict=True))  # fmt: skip
    solution = fit_coefficients(growth, nodes, batch, cpu)
    design = design_matrix(growth, nodes, batch)
    fitted = design @ solution
    residuals = cpu / fitted - 1.0
    # Residuals of a fit are smaller than the noise by the parameters it spent; inflate them back.
    residuals *= math.sqrt(len(cpu) / (len(cpu) - terms))
    rng = np.random.default_rng(seed)
    bootstrap = [to_coefficients(growth, fit_coefficients(growth, nodes, batch, fitted * np.maximum(1 + rng.choice(residuals, len(cpu)), 1e-6)))
                 for _ in range(samples)]  # fmt: skip
    identifiable = bool(np.linalg.matrix_rank(design / cpu[:, None]) == terms)
    notes = [] if identifiable else ["the batch size did not vary enough to separate per-proof from per-block costs; "
                                     "predictions at other batch sizes are unreliable"]  # fmt: skip
    return CostModel(growth=growth, coefficients=to_coefficients(growth, solution), fitted_sizes=sizes, observations=len(observations),
                     proofs_per_block=statistics.median(batch.tolist()), rms_relative_error=float(np.sqrt(np.mean((cpu / fitted - 1) ** 2))),
                     identifiable=identifiable, samples=bootstrap, sample_noise=[float(x) for x in rng.choice(residuals, samples)], notes=notes)  # fmt: skip


# -- predictions -----------------------------------------------------------------------------------
def predict_cpu_ms_per_proof(model: CostModel, nodes: float, proofs_per_block: float | None = None) -> Prediction:
    """Node CPU ms per committed proof (all nodes) at ``nodes``, with the bootstrap prediction band."""
    batch = proofs_per_block or model.proofs_per_block
    spread = [c.cpu_ms_per_proof(nodes, batch) * (1 + noise) for c, noise in zip(model.samples, model.sample_noise, strict=True)]
    low, high = (float(q) for q in np.quantile(spread, [(1 - BAND_LEVEL) / 2, (1 + BAND_LEVEL) / 2])) if spread else (math.nan, math.nan)
    return Prediction(value=model.coefficients.cpu_ms_per_proof(nodes, batch), low=low, high=high)


def predict_capacity(model: CostModel, nodes: float, cores: float, proofs_per_block: float | None = None,
                     utilisation: float = DEFAULT_UTILISATION_CEILING) -> Prediction:  # fmt: skip
    """Proofs/s that ``nodes`` validators commit on ``cores`` cores kept at most ``utilisation`` busy."""
    cpu = predict_cpu_ms_per_proof(model, nodes, proofs_per_block)
    budget_ms_per_s = cores * MS_PER_S * utilisation
    return Prediction(value=budget_ms_per_s / cpu.value, low=budget_ms_per_s / cpu.high, high=budget_ms_per_s / cpu.low)


def effective_utilisation(model: CostModel, capacities: Mapping[int, float], cores: float, proofs_per_block: float | None = None) -> float:
    """The share of ``cores`` the measured capacities used, by the model (median over sizes): the ceiling
    this host reached in practice, with the load generator and the harness sharing it."""
    batch = proofs_per_block or model.proofs_per_block
    return statistics.median(
        rate * model.coefficients.cpu_ms_per_proof(nodes, batch) / (cores * MS_PER_S) for nodes, rate in capacities.items()
    )


def plan_deployment(model: CostModel, nodes: int, rate_per_s: float, cores_per_host: int, proofs_per_block: float | None = None,
                    utilisation: float = DEFAULT_UTILISATION_CEILING, trust_factor: float = TRUST_FACTOR) -> DeploymentPlan:  # fmt: skip
    """Cores and hosts for ``nodes`` validators committing ``rate_per_s`` proofs/s, per the model."""
    batch = proofs_per_block or model.proofs_per_block
    cpu = predict_cpu_ms_per_proof(model, nodes, batch)

    def cores_for(ms_per_proof: float) -> float:
        return rate_per_s * ms_per_proof / (MS_PER_S * utilisation)

    cores = Prediction(value=cores_for(cpu.value), low=cores_for(cpu.low), high=cores_for(cpu.high))
    trusted = int(model.largest_measured_nodes * trust_factor)
    return DeploymentPlan(nodes=nodes, rate_per_s=rate_per_s, cores_per_host=cores_per_host, proofs_per_block=batch, utilisation_ceiling=utilisation,
                          cpu_ms_per_proof=cpu, cores_needed=cores, hosts=math.ceil(cores.value / cores_per_host),
                          hosts_high=math.ceil(cores.high / cores_per_host), extrapolation=nodes / model.largest_measured_nodes,
                          trusted_up_to_nodes=trusted, trustworthy=nodes <= trusted,
                          assumptions=assumptions(model, batch, utilisation, batch_given=proofs_per_block is not None))  # fmt: skip


def assumptions(model: CostModel, batch: float, utilisation: float, batch_given: bool = False) -> list[str]:
    """What every prediction of this model takes for granted, in words for the page and the terminal."""
    growth = "every validator receives ~2N votes per block (PBFT)" if model.growth is VoteGrowth.QUADRATIC else "votes grow linearly with N"
    return [
        "CPU-bound: node CPU is the only limit (memory, disk and sockets are not modelled)",
        "one host's CPU: cores on several hosts add network cost beyond loopback, which is not modelled",
        f"{batch:g} proofs per block, {'as asked' if batch_given else 'the median of the fitted runs'}; {growth}",
        f"cores kept at most {utilisation:.0%} busy",
        f"CPU speed of the host measured (fitted on N = {', '.join(str(n) for n in model.fitted_sizes)})",
        *model.notes,
    ]  # fmt: skip


# -- validation ------------------------------------------------------------------------------------
def validate_held_out(observations: list[Observation], fit_max_nodes: int, growth: VoteGrowth = VoteGrowth.QUADRATIC,
                      measured: MeasuredCapacities | None = None, seed: int = 0) -> Validation:  # fmt: skip
    """Fit on sizes up to ``fit_max_nodes``, predict every larger size, and report the error per size.

    CPU per proof is predicted at each held-out run's own batch (the batch is an input the profile
    sets). With ``measured`` capacities, the capacity of each held-out size is predicted too, at the
    utilisation this host reached on the small sizes."""
    model = fit_cost_model([o for o in observations if o.nodes <= fit_max_nodes], growth, seed=seed)
    small = {n: rate for n, rate in measured.per_size.items() if n <= fit_max_nodes} if measured else {}
    utilisation = effective_utilisation(model, small, measured.cores, measured.proofs_per_block) if measured and small else None
    held_out = [held_out_error(model, [o for o in observations if o.nodes == nodes], measured, utilisation)
                for nodes in sorted({o.nodes for o in observations if o.nodes > fit_max_nodes})]  # fmt: skip
    notes = [note for note in map(_slower_than_cpu, held_out) if note]
    if measured and utilisation:
        notes += [_nothing_sustained(model, nodes, measured, utilisation) for nodes in measured.none_sustained if nodes > fit_max_nodes]
    return Validation(fit_max_nodes=fit_max_nodes, model=model, utilisation=utilisation, held_out=held_out, not_cpu_bound=notes)


# A held-out size measured at under 1 / this of its CPU-bound capacity prediction is bound by something else.
NOT_CPU_BOUND_FACTOR = 2.0


def _slower_than_cpu(held: HeldOut) -> str:
    predicted, measured = held.predicted_capacity_per_s, held.measured_capacity_per_s
    if predicted is None or not measured or predicted.low < NOT_CPU_BOUND_FACTOR * measured:
        return ""
    cpu = "within" if held.within_band else "outside"
    return (f"N = {held.nodes}: CPU per proof {cpu} the predicted band, but the capacity measured ({measured:.3g}/s) is "
            f"{predicted.value / measured:.1f}x below the CPU-bound prediction ({predicted.value:.3g}/s): a limit the model "
            f"does not have binds here (see why the rates above it failed)")  # fmt: skip


def _nothing_sustained(model: CostModel, nodes: int, measured: MeasuredCapacities, utilisation: float) -> str:
    predicted = predict_capacity(model, nodes, measured.cores, measured.proofs_per_block, utilisation)
    return (
        f"N = {nodes}: no rate sustained within the service level, where the CPU-bound model predicts "
        f"{predicted.value:.3g}/s [{predicted.low:.3g}, {predicted.high:.3g}]: a limit the model does not have binds here"
    )


def held_out_error(
    model: CostModel, observed: list[Observation], measured: MeasuredCapacities | None, utilisation: float | None
) -> HeldOut:
    """One held-out size: CPU per proof (mean over its runs) and, when measured, its capacity."""
    nodes = observed[0].nodes
    cpu = statistics.fmean(o.cpu_ms_per_proof for o in observed)
    predictions = [predict_cpu_ms_per_proof(model, nodes, o.proofs_per_block) for o in observed]
    predicted = Prediction(value=statistics.fmean(p.value for p in predictions), low=statistics.fmean(p.low for p in predictions),
                           high=statistics.fmean(p.high for p in predictions))  # fmt: skip
    capacity = measured.per_size.get(nodes) if measured else None
    capacity_prediction = None
    if measured and capacity and utilisation:
        capacity_prediction = predict_capacity(model, nodes, measured.cores, measured.proofs_per_block, utilisation)
    return HeldOut(nodes=nodes, measured_cpu_ms_per_proof=cpu, predicted_cpu_ms_per_proof=predicted,
                   error_percent=percent_error(predicted.value, cpu), within_band=predicted.low <= cpu <= predicted.high,
                   measured_capacity_per_s=capacity, predicted_capacity_per_s=capacity_prediction,
                   capacity_error_percent=percent_error(capacity_prediction.value, capacity) if capacity_prediction and capacity else None)  # fmt: skip


def percent_error(predicted: float, measured: float) -> float:
    """Signed: positive when the prediction is over the measurement."""
    return (predicted - measured) / measured * 100.0
