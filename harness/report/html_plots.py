"""The HTML report's figures as inline SVG text, from typed series (harness/report/html_data.py).

matplotlib's object API (``Figure``, no pyplot): no global state and no display, so it renders the same
headless. Text stays text in the SVG (``svg.fonttype: none``: no embedded glyphs, no font files) and ids
are salted with a constant so the same run renders the same bytes. Every SVG takes the width of the
page it sits in (its fixed size is replaced by the width of its container, the aspect kept by its
viewBox), legends sit outside the axes so they never cover a line, a count (the backlog) gets its own
axis beside a rate, and log axes are labelled in plain numbers (70, 100, 200 ms, not 7x10^1).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from functools import partial

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from harness.report.html_data import BlockPropagation, LatencyCurve, Marks, NodeResources, PerSecond

WIDE_IN, TALL_IN = 12.0, 3.0  # one panel; stacked figures add TALL_IN per panel
LEGEND_X, TWIN_LEGEND_X = 1.01, 1.09  # where a legend starts, in axes widths from the left
SIZE_ATTRIBUTES = re.compile(r'\s(width|height)="[^"]*"')
LOG_SUBS = (2.0, 5.0)  # minor ticks labelled on a log axis: 20, 50, 200, 500, ...
SVG_SALT = "popbench-report"
STALL_COLOUR, VIEW_CHANGE_COLOUR, STEADY_COLOUR, FAULT_COLOUR = "#d62728", "#9467bd", "#2ca02c", "#7f7f7f"
SHARE_LABELS = {0.5: "50 % of nodes", 0.9: "90 % of nodes", 1.0: "all nodes"}


def figure_svg(figure: Figure, salt: str = SVG_SALT) -> str:
    """The figure as an ``<svg>`` element (no XML prolog, so it sits inside HTML); ids salted with a
    constant so the same data renders the same bytes."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    return responsive(text[text.index("<svg") :])


def responsive(svg: str) -> str:
    """Drop the root element's fixed width and height (its viewBox keeps the aspect): the figure then
    takes the width of what holds it, on a wide page as on a narrow one."""
    head_end = svg.index(">")
    return SIZE_ATTRIBUTES.sub("", svg[:head_end]) + ' width="100%"' + svg[head_end:]


def plain_number(value: float, _position: object = None) -> str:
    """A tick label as a plain number: 0.5, 70, 1,000."""
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def plain_log_axis(axes: Axes, which: str = "y") -> None:
    """A log axis whose ticks read 20, 50, 100, 200 ... instead of 2x10^1."""
    axis = axes.yaxis if which == "y" else axes.xaxis
    axis.set_major_locator(LogLocator(base=10.0))
    axis.set_minor_locator(LogLocator(base=10.0, subs=LOG_SUBS))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(FuncFormatter(plain_number))


def legend_outside(axes: Axes, *more: Axes) -> None:
    """One legend for ``axes`` (and a twin's lines), to the right of the plot, off the data."""
    handles, labels = axes.get_legend_handles_labels()
    for twin in more:
        extra_handles, extra_labels = twin.get_legend_handles_labels()
        handles, labels = handles + extra_handles, labels + extra_labels
    if handles:  # past a twin's tick labels and axis label when there is one
        beside = TWIN_LEGEND_X if more else LEGEND_X
        axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(beside, 1.0), borderaxespad=0.0, fontsize="small")


def mark(axes: Axes, marks: Marks) -> None:
    if marks.steady:
        axes.axvspan(*marks.steady, color=STEADY_COLOUR, alpha=0.06, label="steady window")
    for index, (applied, healed) in enumerate(marks.faults):  # hatched, so a stall inside one still shows
        axes.axvspan(applied, healed, facecolor="none", edgecolor=FAULT_COLOUR, hatch="//", linewidth=0, alpha=0.5,
                     label="fault (applied to healed)" if index == 0 else None)  # fmt: skip
    for index, (start, length) in enumerate(marks.stalls):
        axes.axvspan(start, start + length, color=STALL_COLOUR, alpha=0.25, label="stall" if index == 0 else None)
    for index, at in enumerate(marks.view_changes):
        axes.axvline(at, color=VIEW_CHANGE_COLOUR, linestyle=":", linewidth=1, label="view change" if index == 0 else None)


def _nan(values: Sequence[float | int | None]) -> list[float]:
    return [float(v) if v is not None else float("nan") for v in values]


def _known(xs: Sequence[float], ys: Sequence[float | None]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def timeline_svg(rates: PerSecond, marks: Marks, nodes: NodeResources | None = None) -> str:
    return figure_svg(timeline_figure(rates, marks, nodes))


def timeline_figure(rates: PerSecond, marks: Marks, nodes: NodeResources | None = None) -> Figure:
    """Stacked panels over the run: offered vs committed per second (and the backlog), latency
    percentiles of what committed in each second, and the highest height; a run without submission
    load (PoW mining alone) has only the height panel."""
    drawers: list[Callable[[Axes], list[Axes]]] = []  # each draws a panel and returns its twin axes
    if any(rates.offered) or any(rates.committed):
        drawers += [partial(_rates_panel, rates=rates), partial(_latency_panel, rates=rates)]
    if nodes is not None:
        drawers.append(partial(_height_panel, nodes=nodes))
    if not drawers:
        drawers.append(partial(_rates_panel, rates=rates))  # nothing else to draw: an honest empty panel
    figure = Figure(figsize=(WIDE_IN, TALL_IN * len(drawers)))
    panels = list(figure.subplots(len(drawers), 1, sharex=True, squeeze=False)[:, 0])
    for draw, panel in zip(drawers, panels, strict=True):
        twins = draw(panel)
        mark(panel, marks)
        panel.grid(True, alpha=0.3)
        legend_outside(panel, *twins)
    panels[-1].set_xlabel("seconds after the load window started")
    return figure


def _rates_panel(axes: Axes, rates: PerSecond) -> list[Axes]:
    """Offered and committed per second; the backlog, a count, on an axis of its own to the right."""
    edges = [*rates.start_s, rates.start_s[-1] + rates.length_s[-1]] if rates.start_s else [0.0]
    axes.stairs(rates.offered, edges, label="offered (items due)", color="#7f7f7f")
    axes.stairs(rates.committed, edges, label="committed", color="#1f77b4")
    axes.set(ylabel="items per second", title="Offered and committed per second, and the backlog")
    axes.set_ylim(bottom=0)
    if rates.outstanding is None:
        return []
    backlog = axes.twinx()
    ends = [start + length for start, length in zip(rates.start_s, rates.length_s, strict=True)]
    backlog.plot(ends, rates.outstanding, color="#ff7f0e", linestyle="--", linewidth=1, label="backlog (outstanding items, right axis)")
    backlog.set_ylabel("backlog, items", color="#ff7f0e")
    backlog.set_ylim(bottom=0)
    backlog.yaxis.set_major_locator(MaxNLocator(integer=True))
    return [backlog]


def _latency_panel(axes: Axes, rates: PerSecond) -> list[Axes]:
    middles = [start + length / 2 for start, length in zip(rates.start_s, rates.length_s, strict=True)]
    for values, label in ((rates.p50_ms, "p50"), (rates.p99_ms, "p99")):
        axes.plot(middles, _nan(values), marker=".", markersize=3, label=label)
    axes.set(ylabel="commit latency, ms", yscale="log", title="Latency of what committed in each second")
    plain_log_axis(axes)
    return []


def _height_panel(axes: Axes, nodes: NodeResources) -> list[Axes]:
    axes.plot(nodes.at_s, _nan(nodes.height), color="#8c564b", label="height")
    axes.set(ylabel="height", title="Highest height among the nodes (status samples)")
    return []


def latency_cdf_svg(curve: LatencyCurve, target_ms: float, within_share: float) -> str:
    return figure_svg(latency_cdf_figure(curve, target_ms, within_share))


def latency_cdf_figure(curve: LatencyCurve, target_ms: float, within_share: float) -> Figure:
    """Share of the due items committed within x ms; misses keep the curve below 1."""
    figure = Figure(figsize=(WIDE_IN, TALL_IN * 1.3))
    axes = figure.subplots()
    due = max(1, curve.due)
    xs = curve.latencies_ms
    axes.step(xs, [(i + 1) / due for i in range(len(xs))], where="post", label="committed items")
    if xs and curve.committed_share < 1:
        axes.hlines(curve.committed_share, xs[-1], xs[-1] * 1.5, color=STALL_COLOUR, linestyle="--",
                    label=f"never committed: {1 - curve.committed_share:.1%}")  # fmt: skip
    axes.axvline(target_ms, color="grey", linestyle="--", linewidth=1, label=f"latency target L = {target_ms:g} ms")
    axes.axhline(within_share, color="grey", linestyle=":", linewidth=1, label=f"required share {within_share:.0%}")
    axes.set(xlabel="commit latency (due to commit seen), ms", ylabel="share of items due", ylim=(0, 1.02), title="Latency CDF")
    if xs and xs[0] > 0:
        axes.set_xscale("log")
        plain_log_axis(axes, "x")
    axes.grid(True, which="both", alpha=0.3)
    legend_outside(axes)
    return figure


def resources_svg(nodes: NodeResources, marks: Marks) -> str:
    """Per node, at each status sample: CPU (the average node and the busiest) and USS memory."""
    figure = Figure(figsize=(WIDE_IN, TALL_IN * 2))
    cpu, memory = figure.subplots(2, 1, sharex=True)
    cpu.plot(nodes.at_s, _nan(nodes.cpu_mean), label="mean node", color="#1f77b4")
    cpu.plot(nodes.at_s, _nan(nodes.cpu_max), label="busiest node", color="#d62728", linewidth=0.8)
    cpu.set(ylabel="CPU, % of one core", title="CPU per node since the previous sample")
    # USS is read at some samples only (it walks smaps): join the samples that read it
    memory.plot(*_known(nodes.at_s, nodes.uss_mean), marker=".", label="mean node", color="#1f77b4")
    memory.plot(*_known(nodes.at_s, nodes.uss_max), marker=".", label="largest node", color="#d62728", linewidth=0.8)
    memory.set(ylabel="USS, MiB", title="Memory per node (unique set size, where sampled)", xlabel="seconds after the load window started")
    for panel in (cpu, memory):
        mark(panel, marks)
        panel.grid(True, alpha=0.3)
        legend_outside(panel)
    return figure_svg(figure)


def propagation_cdf_svg(propagation: BlockPropagation) -> str:
    """Per share of the nodes, the CDF over blocks of the time to reach it."""
    figure = Figure(figsize=(WIDE_IN, TALL_IN * 1.3))
    axes = figure.subplots()
    for share, delays in sorted(propagation.delays_ms.items()):
        if delays:
            axes.step(delays, [(i + 1) / len(delays) for i in range(len(delays))], where="post",
                      label=f"{SHARE_LABELS.get(share, f'{share:.0%}')} ({len(delays)} blocks)")  # fmt: skip
    axes.set(xlabel="time from a block's first sighting, ms", ylabel="share of blocks", ylim=(0, 1.02),
             title=f"Block propagation across {propagation.nodes} nodes")  # fmt: skip
    axes.grid(True, alpha=0.3)
    legend_outside(axes)
    return figure_svg(figure)


def forks_svg(forks_by_height: dict[int, int]) -> str:
    """Blocks beyond the one per height that the nodes stored: each is a fork (a stale block)."""
    figure = Figure(figsize=(WIDE_IN, TALL_IN))
    axes = figure.subplots()
    heights = list(forks_by_height)
    axes.bar(heights, [forks_by_height[h] for h in heights], width=0.8, color=STALL_COLOUR)
    axes.set(xlabel="height", ylabel="forks (extra blocks)", title=f"Forks per height: {sum(forks_by_height.values())} in all")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    return figure_svg(figure)
