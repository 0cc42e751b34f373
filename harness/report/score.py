"""The score: connectivity 25 + throughput 25 + mining 25 + stability 25 = 100 (formula version 1).

Every curve and threshold is here and in docs/scoring.md, which must change with it (and the version
with both). A part that a run did not exercise (no mining load in a PoP run without miners) is left out
and the other parts are scaled up to 100, and the report says so. A safety violation (two nodes
committed different blocks at one height) fails the run: score 0, grade F, whatever else happened.
"""

from __future__ import annotations

import math

from harness.metrics.results import Metrics, PowMining, Throughput
from harness.report.schema import Score, ScoreItem, ScorePart

SCORE_VERSION = 1
PART_POINTS = 25.0
GRADES = ((90.0, "A"), (80.0, "B"), (70.0, "C"), (60.0, "D"), (0.0, "F"))

# connectivity
CONNECT_GOOD_S_BASE, CONNECT_GOOD_S_PER_NODE = 2.0, 0.05  # full marks within 2 s + 0.05 s per node
CONNECT_BAD_S_BASE, CONNECT_BAD_S_PER_NODE = 10.0, 0.5  # none beyond 10 s + 0.5 s per node
# throughput
LATENCY_GOOD_MS, LATENCY_BAD_MS = 500.0, 10_000.0  # p99 commit latency, log-scaled between
POW_LATENCY_GOOD_FACTOR, POW_LATENCY_BAD_FACTOR = 1.5, 4.0  # x (k confirmations x target interval)
CEILING_FRACTION_FULL = 0.10  # 10 % of the verify-bound ceiling earns the headroom points
# mining
HASH_EFFICIENCY_FULL = 0.80
INTERVAL_ERROR_ZERO = 1.0  # |mean interval / target - 1| at which the interval points reach zero
STALE_RATE_ZERO = 0.25
# stability
CRASH_PENALTY = 5.0
PROTOCOL_ERRORS_ZERO = 100


def clamp01(value: float) -> float:
    return max(0.0, min(1.0, value))


def linear(value: float, good: float, bad: float) -> float:
    """1 at ``good`` or better, 0 at ``bad`` or worse, linear between (either direction)."""
    if good == bad:
        return 1.0 if value == good else 0.0
    return clamp01((value - bad) / (good - bad))


def log_scaled(value: float, good: float, bad: float) -> float:
    return linear(math.log10(max(value, 1e-9)), math.log10(good), math.log10(bad))


def grade(total: float) -> str:
    return next(letter for floor, letter in GRADES if total >= floor)


# -- the four parts ------------------------------------------------------------------------------------
def part(name: str, items: dict[str, float], notes: list[str] | None = None) -> ScorePart:
    """An exercised part worth PART_POINTS, earning the sum of its items."""
    return ScorePart(name=name, points=sum(items.values()), max_points=PART_POINTS, exercised=True,
                     items=[ScoreItem(name=item, points=points) for item, points in items.items()], notes=notes or [])  # fmt: skip


def left_out(name: str, note: str, exercised: bool = False) -> ScorePart:
    """A part that earned nothing, with why (not exercised, or nothing to measure)."""
    return ScorePart(name=name, points=0.0, max_points=PART_POINTS, exercised=exercised, items=[], notes=[note])


def connectivity_part(metrics: Metrics, nodes: int) -> ScorePart:
    c = metrics.connectivity
    seconds = c.time_to_connected_s
    good = CONNECT_GOOD_S_BASE + CONNECT_GOOD_S_PER_NODE * nodes
    bad = CONNECT_BAD_S_BASE + CONNECT_BAD_S_PER_NODE * nodes
    return part("connectivity", {
        "links_up": 15 * clamp01(c.links_ratio),
        "graph_connected": 5.0 if c.graph_connected else 0.0,
        "time_to_connected": 5 * linear(seconds, good, bad) if seconds is not None else 0.0,
    })  # fmt: skip


def latency_thresholds_ms(throughput: Throughput) -> tuple[float, float]:
    """(good, bad) p99 commit latency. PoW commits k blocks deep, so its curve starts from that delay."""
    expected = throughput.expected_commit_delay_ms
    if expected:
        return max(LATENCY_GOOD_MS, POW_LATENCY_GOOD_FACTOR * expected), max(LATENCY_BAD_MS, POW_LATENCY_BAD_FACTOR * expected)
    return LATENCY_GOOD_MS, LATENCY_BAD_MS


def throughput_part(metrics: Metrics) -> ScorePart:
    t = metrics.throughput
    if t is None:
        return left_out("throughput", "not exercised: no submission load in this run")
    if not t.valid_submitted:
        return left_out("throughput", "no valid proof was submitted in the steady window", exercised=True)
    p99 = t.commit_latency.p99_ms
    items = {
        "delivery": 10 * clamp01(t.delivery_ratio or 0.0),
        "latency_p99": 10 * log_scaled(p99, *latency_thresholds_ms(t)) if p99 is not None else 0.0,
        "ceiling_headroom": 5 * clamp01((t.fraction_of_ceiling or 0.0) / CEILING_FRACTION_FULL),
    }
    return part("throughput", items, ["the load generator fell behind its schedule"] if t.generator.fell_behind else [])


def mining_part(metrics: Metrics) -> ScorePart:
    m = metrics.mining
    if m is None:
        return left_out("mining", "not exercised: no miners and no proof-of-work in this run")
    items = {"hash_efficiency": 10 * clamp01((m.hash_efficiency or 0.0) / HASH_EFFICIENCY_FULL)}
    if isinstance(m, PowMining) and m.block_interval.mean_s and m.block_interval.target_s:
        error = abs(m.block_interval.mean_s / m.block_interval.target_s - 1.0)
        items["block_interval"] = 10 * linear(error, 0.0, INTERVAL_ERROR_ZERO)
        items["stale_rate"] = 5 * linear(m.stale_rate or 0.0, 0.0, STALE_RATE_ZERO)
    else:
        items["hash_efficiency"] *= 2.5  # PoP mining load (or no block gaps yet): efficiency is the whole part
    return part("mining", items)


def stability_part(metrics: Metrics) -> ScorePart:
    s = metrics.stability
    success = s.consensus_success_rate
    return part("stability", {
        "uptime": 10 * clamp01(s.uptime_mean or 0.0),
        "no_unplanned_crashes": max(0.0, 5 - CRASH_PENALTY * s.unplanned_crashes),
        "protocol_errors": 5 * linear(s.protocol_errors, 0, PROTOCOL_ERRORS_ZERO),
        "consensus_success": 5 * clamp01(success) if success is not None else 0.0,
    })  # fmt: skip


# -- the total -----------------------------------------------------------------------------------------
def score(metrics: Metrics, nodes: int) -> Score:
    parts = [connectivity_part(metrics, nodes), throughput_part(metrics), mining_part(metrics), stability_part(metrics)]
    exercised = [p for p in parts if p.exercised]
    scale = 100.0 / sum(p.max_points for p in exercised)
    total = round(sum(p.points for p in exercised) * scale, 1)
    notes = [f"{p.name}: {note}" for p in parts for note in p.notes]
    if scale != 1.0:
        notes.append(f"parts not exercised are left out; the rest are scaled by {scale:.3f} to total 100")
    safety = metrics.stability.safety is None or metrics.stability.safety.agree
    if not safety:
        notes.append("SAFETY VIOLATION: nodes committed different blocks at the same height; the run fails")
        total = 0.0
    return Score(version=SCORE_VERSION, total=total, grade=grade(total), passed_safety=safety, parts=parts, notes=notes)
