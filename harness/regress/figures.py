"""The figures a regression check watches: what each measures, its unit, which way is better, how much
change counts.

Costs come first: exact work counters and kernel-accounted CPU per committed proof depend far less on
how busy the host is than times do, so their thresholds are tight. Times (throughput, latency) are
watched with wider thresholds; the open loop pins throughput to the offered rate, so it is shown but
does not fail a check. The reasoning is in docs/regression.md.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from popbench.errors import ConfigError


class Direction(StrEnum):
    """Which way a figure gets better."""

    LOWER_IS_BETTER = "lower_is_better"
    HIGHER_IS_BETTER = "higher_is_better"


class FigureKind(StrEnum):
    """Why a figure is trusted: an exact count, a kernel CPU account, or a wall-clock time."""

    COUNTER = "counter"
    CPU = "cpu"
    TIME = "time"


class FigureSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One watched figure.

    ``threshold_percent``: a significant change of the medians smaller than this is no regression.
    ``fallback_percent``: the fixed tolerance used when there are too few repeats for any test.
    ``gating``: a regression of this figure makes the check fail (exit 1); otherwise it is shown only.
    """

    name: str  # stable key, the same in baselines, JSON output and pyperf files
    label: str  # for people
    unit: str  # "ms", "frames", "bytes", "verifications", "messages", "proofs/s"
    direction: Direction
    kind: FigureKind
    threshold_percent: float
    fallback_percent: float
    gating: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold_percent <= self.fallback_percent:
            raise ConfigError(f"need 0 <= threshold ({self.threshold_percent}) <= fallback ({self.fallback_percent})", key=self.name)


# CPU per proof: well under the slowdowns worth catching (issue 12: a 9-10 % slowdown separated the builds
# cleanly) and above the 1-2 % run-to-run spread expected of a kernel CPU account (docs/regression.md).
CPU_THRESHOLD_PERCENT = 3.0
# Work counters are exact counts of what the protocol did; any real change is a change of the code.
COUNTER_THRESHOLD_PERCENT = 2.0
# Latency quantiles of a whole run move 5-7 % between identical runs on a shared host.
LATENCY_P50_THRESHOLD_PERCENT = 10.0
LATENCY_P99_THRESHOLD_PERCENT = 15.0
THROUGHPUT_THRESHOLD_PERCENT = 5.0
# With too few repeats for a test (e.g. one run a side) only a change this many times the threshold counts.
FALLBACK_MULTIPLIER = 3.0


def _spec(name: str, label: str, unit: str, direction: Direction, kind: FigureKind, threshold: float, gating: bool = True) -> FigureSpec:
    return FigureSpec(
        name=name, label=label, unit=unit, direction=direction, kind=kind, threshold_percent=threshold,
        fallback_percent=threshold * FALLBACK_MULTIPLIER, gating=gating,
    )  # fmt: skip


LOWER, HIGHER = Direction.LOWER_IS_BETTER, Direction.HIGHER_IS_BETTER
WATCHED_FIGURES: tuple[FigureSpec, ...] = (
    _spec("node_cpu_ms_per_proof", "node CPU-ms per committed proof", "ms", LOWER, FigureKind.CPU, CPU_THRESHOLD_PERCENT),
    _spec("node_cpu_ms_per_block", "node CPU-ms per block", "ms", LOWER, FigureKind.CPU, CPU_THRESHOLD_PERCENT),
    _spec("harness_cpu_ms_per_proof", "harness CPU-ms per proof", "ms", LOWER, FigureKind.CPU, CPU_THRESHOLD_PERCENT),
    _spec("frames_per_proof", "frames per proof", "frames", LOWER, FigureKind.COUNTER, COUNTER_THRESHOLD_PERCENT),
    _spec("bytes_per_proof", "bytes per proof", "bytes", LOWER, FigureKind.COUNTER, COUNTER_THRESHOLD_PERCENT),
    _spec("verifications_per_proof", "verifications per proof", "verifications", LOWER, FigureKind.COUNTER, COUNTER_THRESHOLD_PERCENT),
    _spec("messages_per_block", "messages per block", "messages", LOWER, FigureKind.COUNTER, COUNTER_THRESHOLD_PERCENT),
    _spec("commit_latency_p50_ms", "commit latency p50", "ms", LOWER, FigureKind.TIME, LATENCY_P50_THRESHOLD_PERCENT),
    _spec("commit_latency_p99_ms", "commit latency p99", "ms", LOWER, FigureKind.TIME, LATENCY_P99_THRESHOLD_PERCENT),
    _spec("committed_per_s", "committed proofs/s", "proofs/s", HIGHER, FigureKind.TIME, THROUGHPUT_THRESHOLD_PERCENT, gating=False),
)  # fmt: skip


def figure_spec(name: str, specs: tuple[FigureSpec, ...] = WATCHED_FIGURES) -> FigureSpec:
    """The spec called ``name``; a ConfigError names the unknown figure and the known ones."""
    for spec in specs:
        if spec.name == name:
            return spec
    raise ConfigError(f"unknown figure (known: {', '.join(s.name for s in specs)})", key=name)


# Where each watched figure is read in report.json: an attribute path from the report's root. The reader
# (harness/report/compare.py, ``report_figures``) follows it, so this package never imports the report's
# types; a path that meets None (a section the run did not have) means "not measured".
REPORT_FIELDS: dict[str, tuple[str, ...]] = {
    "node_cpu_ms_per_proof": ("metrics", "cost", "node_cpu_ms_per_proof"),
    "node_cpu_ms_per_block": ("metrics", "cost", "node_cpu_ms_per_block"),
    "harness_cpu_ms_per_proof": ("metrics", "cost", "harness_cpu_ms_per_proof"),
    "frames_per_proof": ("metrics", "work", "frames_per_proof"),
    "bytes_per_proof": ("metrics", "work", "bytes_per_proof"),
    "verifications_per_proof": ("metrics", "work", "verifications_per_proof"),
    "messages_per_block": ("metrics", "cost", "messages_per_block"),
    "commit_latency_p50_ms": ("metrics", "throughput", "commit_latency", "p50_ms"),
    "commit_latency_p99_ms": ("metrics", "throughput", "commit_latency", "p99_ms"),
    "committed_per_s": ("metrics", "throughput", "committed_per_s"),
}
