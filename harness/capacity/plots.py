"""The sweep's two figures as SVG text, for the self-contained HTML page.

matplotlib's object API (``Figure``, no pyplot): no global state and no display backend, so it renders the
same headless in CI. Text stays text in the SVG (``svg.fonttype: none``), and ids are salted with a
constant so the same sweep renders the same bytes.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.capacity.model import CostModel, effective_utilisation, predict_capacity
from harness.capacity.search import SizeCapacity
from harness.capacity.store import Point, Sweep
from harness.kinds import WorkloadMode
from harness.report import html_plots

FIGURE_SIZE_IN = (7.5, 4.3)
SVG_SALT = "popbench-capacity"  # a constant salt: the same sweep renders the same SVG ids
UNBOUNDED_FACTOR = 2.0  # an unbounded p99 is drawn this far above the highest finite one, marked x
MODEL_GRID_POINTS = 60


def figure_svg(figure: Figure) -> str:
    return html_plots.figure_svg(figure, SVG_SALT)


def throughput_latency_svg(sweep: Sweep) -> str:
    """Committed/s against p99 per size (open-loop points, median over repeats); the knee of each size
    (its highest sustained rate, where a higher one failed) starred, unbounded p99 drawn at the top with an x."""
    figure = Figure(figsize=FIGURE_SIZE_IN)
    axes = figure.subplots()
    points = [p for p in sweep.points if p.mode is WorkloadMode.OPEN]
    ceiling = UNBOUNDED_FACTOR * max((y for p in points if (y := median_p99(p)) is not None), default=sweep.slo.p99_target_ms)
    knees = knee_rates(sweep)
    for nodes in sorted({p.nodes for p in points}):
        plot_size_curve(axes, [p for p in points if p.nodes == nodes], nodes, ceiling, knees.get(nodes))
    axes.axhline(sweep.slo.p99_target_ms, color="grey", linestyle="--", linewidth=1, label=f"p99 target {sweep.slo.p99_target_ms:g} ms")
    axes.set(
        xlabel="committed proofs/s (steady window)",
        ylabel="p99 commit latency, ms",
        xscale="log",  # sizes differ in capacity by orders of magnitude; each curve gets the same width
        yscale="log",
        title="Throughput and p99 latency per size",
    )
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", ncols=2)
    axes.grid(True, which="both", alpha=0.3)
    return figure_svg(figure)


def plot_size_curve(axes: Axes, points: list[Point], nodes: int, ceiling: float, knee_rate: float | None) -> None:
    points = sorted(points, key=lambda p: p.rate_per_s)
    x = [statistics.median(r.outcome.committed_per_s for r in p.runs) for p in points]
    y = [median_p99(p) or ceiling for p in points]
    (line,) = axes.plot(x, y, marker="o", markersize=3, label=f"N={nodes}")
    unbounded = [i for i, p in enumerate(points) if median_p99(p) is None]
    if unbounded:
        axes.scatter([x[i] for i in unbounded], [y[i] for i in unbounded], marker="x", color=line.get_color())
    knee = [i for i, p in enumerate(points) if p.rate_per_s == knee_rate]
    if knee:
        axes.scatter([x[i] for i in knee], [y[i] for i in knee], marker="*", s=140, color=line.get_color(), edgecolors="black", zorder=3)


def knee_rates(sweep: Sweep) -> dict[int, float]:
    """Each size's knee: its highest sustained rate, only where a higher rate was run and failed. A size
    that sustained every rate tried has no knee on record, only a lower bound, and gets no star."""
    return {c.nodes: c.sustained_rate_per_s for c in sweep.findings.capacities
            if c.sustained_rate_per_s is not None and c.failed_rate_per_s is not None}  # fmt: skip


def median_p99(point: Point) -> float | None:
    median = statistics.median(math.inf if r.outcome.p99_ms is None else r.outcome.p99_ms for r in point.runs)
    return None if math.isinf(median) else median


def capacity_svg(sweep: Sweep, cores: float) -> str:
    """Highest sustained rate against N (the bar reaches the lowest failing rate), the model's prediction
    with its band (at the utilisation this host reached), the target rate and the largest N that sustains
    it (a knee only when a larger N failed it: :func:`plot_knee`)."""
    figure = Figure(figsize=FIGURE_SIZE_IN)
    axes = figure.subplots()
    measured = [c for c in sweep.findings.capacities if c.sustained_rate_per_s is not None]
    plot_measured_capacity(axes, measured)
    if sweep.model is not None and measured:
        plot_model(axes, sweep.model, {c.nodes: c.sustained_rate_per_s for c in measured if c.sustained_rate_per_s}, cores)
    plot_knee(axes, sweep)
    axes.set(
        xlabel="validators N",
        ylabel="highest sustained proofs/s",
        xscale="log",
        yscale="log",
        title="Capacity against size, with the fitted model",
    )
    if axes.get_legend_handles_labels()[0]:  # a sweep stopped before its first size finished has nothing to label
        axes.legend(fontsize="small")
    axes.grid(True, which="both", alpha=0.3)
    return figure_svg(figure)


def plot_measured_capacity(axes: Axes, measured: list[SizeCapacity]) -> None:
    if not measured:
        return
    nodes = [c.nodes for c in measured]
    rates = [c.sustained_rate_per_s or 0.0 for c in measured]
    above = [(c.failed_rate_per_s or c.sustained_rate_per_s or 0.0) - (c.sustained_rate_per_s or 0.0) for c in measured]
    axes.errorbar(
        nodes, rates, yerr=[[0.0] * len(rates), above], fmt="o", color="black", capsize=3, label="measured (bar: up to the failing rate)"
    )


def plot_model(axes: Axes, model: CostModel, capacities: dict[int, float], cores: float) -> None:
    utilisation = effective_utilisation(model, capacities, cores)
    grid = np.geomspace(min(capacities), max(capacities) * 2, MODEL_GRID_POINTS)
    predictions = [predict_capacity(model, float(n), cores, utilisation=utilisation) for n in grid]
    axes.plot(
        grid,
        [p.value for p in predictions],
        color="tab:blue",
        label=f"model ({model.growth.value} votes), {utilisation:.0%} of {cores:g} cores",
    )
    axes.fill_between(
        grid, [p.low for p in predictions], [p.high for p in predictions], color="tab:blue", alpha=0.2, label="model 90 % band"
    )
    axes.axvline(model.largest_measured_nodes, color="tab:blue", linestyle=":", linewidth=1, label="largest size fitted")


def plot_knee(axes: Axes, sweep: Sweep) -> None:
    """The target rate, and the largest size sustaining it: a knee (star) only when a larger size was run
    at the rate and failed; when none failed it is a lower bound (an upward triangle), since the curve
    may go on beyond the largest size measured."""
    largest = sweep.findings.largest
    if largest is None:
        return
    axes.axhline(largest.rate_per_s, color="tab:red", linestyle="--", linewidth=1, label=f"target {largest.rate_per_s:g}/s")
    if largest.nodes is None:
        return
    if largest.smallest_failing is not None:
        axes.scatter([largest.nodes], [largest.rate_per_s], marker="*", s=220, color="tab:red", edgecolors="black", zorder=3,
                     label=f"knee: largest N sustaining it = {largest.nodes} (N = {largest.smallest_failing} failed)")  # fmt: skip
    else:
        axes.scatter([largest.nodes], [largest.rate_per_s], marker="^", s=160, color="tab:red", edgecolors="black", zorder=3,
                     label=f"N >= {largest.nodes} sustains it: no size measured failed (no knee)")  # fmt: skip
