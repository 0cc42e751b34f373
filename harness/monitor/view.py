"""What each panel of the monitor says, as plain text and table rows (no widgets: the app lays them out).

Every figure is defined in docs/monitoring.md; the words here are the ones the tests read off the screen.
"""

from __future__ import annotations

import time

from rich.text import Text

from harness.monitor.chain import ChainReader, ranked
from harness.observe.health import Health, ServiceNow
from harness.observe.live import LiveFinding, LiveState, NodeLive
from popbench.wire.status import PowStatus

HEALTH_STYLE = {Health.HEALTHY: "bold green", Health.DEGRADED: "bold yellow", Health.CRITICAL: "bold white on red"}
MEDALS = ("★1", "★2", "★3")
# (header, width): fixed widths, so an update never re-measures a column (Textual measures every cell of
# a column whose width fits its content, and did so at each update: over 1 s of CPU a refresh at 100 nodes)
LEADERBOARD_COLUMNS = (("rank", 4), ("validator", 14), ("rounds", 7), ("proposed", 8), ("voted", 7), ("accuracy", 8), ("rewards", 9))
NODE_COLUMNS = (("node", 5), ("state", 6), ("height", 7), ("view", 5), ("peers", 5), ("mempool", 7), ("cpu", 5), ("memory", 8))
POW_COLUMNS = (("node", 5), ("state", 6), ("height", 7), ("tip", 10), ("mined", 6), ("hash rate", 11), ("reorgs", 6), ("stale", 6))
TABLE_ROWS = 24  # rows a table shows at most, whatever the network's size: the drawing cost stays bounded


def health_text(live: LiveState) -> Text:
    health, reasons = live.health()
    text = Text(f" {health.name} ", style=HEALTH_STYLE[health])
    text.append(f"\nactive nodes  {len(live.up)} / {len(live.nodes)}")
    if live.f is not None and live.consensus == "pbft":
        text.append(f"\ndown {len(live.down)} vs f = {live.f}  (quorum {len(live.nodes) - live.f})")
    else:
        text.append(f"\ndown {len(live.down)}  (PoW: no fault threshold)")
    for reason in reasons or ["all answer, blocks commit"]:
        text.append(f"\n· {reason}", style="dim" if health is Health.HEALTHY else "")
    return text


def consensus_text(live: LiveState, interval_s: float) -> str:
    if live.consensus == "pow":
        return pow_text(live)
    views = sorted({n.status.view for n in live.up if n.status is not None})
    leaders = sorted({n.status.leader for n in live.up if n.status is not None})
    return (f"rounds completed  {live.height:,}\n"
            f"view {short(views)}   leader {short(leaders)}\n"
            f"view changes just now  {live.recent_view_changes}\n"
            f"stall after  {live.stall_after_s:g} s quiet\n"
            f"refresh every  {interval_s:g} s")  # fmt: skip


def short(values: list[int], at_most: int = 3) -> str:
    """``0, 1, 2 +4``: a few values, then how many more."""
    if not values:
        return "-"
    more = f" +{len(values) - at_most}" if len(values) > at_most else ""
    return ", ".join(map(str, values[:at_most])) + more


def pow_text(live: LiveState) -> str:
    rate = "-" if live.hash_rate is None else f"{live.hash_rate / 1e6:,.2f} MH/s"
    return (f"tip height  {live.height:,}\n"
            f"tips  {len(live.tips)}   forks: reorgs {live.reorgs:,}  stale {live.stale_blocks:,}\n"
            f"hash rate  {rate}\n"
            f"stall after  {live.stall_after_s:g} s quiet")  # fmt: skip


def throughput_text(live: LiveState) -> str:
    item = "transfers" if live.consensus == "pow" else "proofs"
    now = "-" if live.throughput_now is None else f"{live.throughput_now:,.1f}/s"
    average = "-" if live.throughput_avg is None else f"{live.throughput_avg:,.1f}/s"
    answering = len(live.up) or 1
    return (f"{item} committed now  {now}\n"
            f"{item} committed avg  {average}\n"
            f"mempool  total {live.mempool_total:,}\n"
            f"  max {live.mempool_max:,}  mean {live.mempool_total / answering:,.1f}")  # fmt: skip


def service_text(service: ServiceNow) -> Text:
    """The service level now: HOLDS or MISSED, and each part it was judged on."""
    if service.holds is None:
        return Text("service level  -\nnothing to judge yet")
    text = Text("service level  ")
    text.append(" HOLDS " if service.holds else " MISSED ", style="bold green" if service.holds else "bold white on red")
    for part in service.parts:
        text.append(f"\n{part}")
    return text


def latency_title(live: LiveState) -> str:
    what = "block interval" if live.consensus == "pow" else "consensus latency"
    points = list(live.latency_s)
    if not points:
        return f"{what}: no block committed yet"
    mean = sum(points) / len(points)
    return f"{what} (last {len(points)})  avg {ms(mean)}  min {ms(min(points))}  max {ms(max(points))}  now {ms(points[-1])}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def more_row(width: int, hidden: int, what: str) -> tuple[str, ...]:
    return ("…", f"+{hidden:,} {what}", *([""] * (width - 2)))


def leaderboard_rows(chain: ChainReader, limit: int = TABLE_ROWS) -> list[tuple[str, ...]]:
    """The top of the board; a last row says how many validators are below it."""
    rows: list[tuple[str, ...]] = []
    standings = ranked(chain.standings)
    shown = standings if len(standings) <= limit else standings[: limit - 1]
    for place, standing in enumerate(shown):
        mark = MEDALS[place] if place < len(MEDALS) and standing.rounds else f"{place + 1}"
        accuracy = "-" if standing.accuracy is None else f"{100 * standing.accuracy:.1f} %"
        rewards = "-" if standing.rewards is None else f"{standing.rewards:,}"
        rows.append((mark, f"validator {standing.node_id}", f"{standing.rounds:,}", f"{standing.proposed:,}", f"{standing.voted:,}",
                     accuracy, rewards))  # fmt: skip
    if len(shown) < len(standings):
        rows.append(more_row(len(LEADERBOARD_COLUMNS), len(standings) - len(shown), "more"))
    return rows


def leaderboard_title(chain: ChainReader) -> str:
    """Short: a border title longer than the table is cut."""
    skipped = f" ({chain.skipped:,} skipped)" if chain.skipped else ""
    rewards = f" · rewards at {chain.rewards_height:,}" if chain.rewards_height is not None else ""
    return f"leaderboard · {chain.blocks_read:,} blocks{skipped}{rewards}"


def node_rows(live: LiveState, limit: int = TABLE_ROWS) -> list[tuple[str, ...]]:
    """Nodes not answering first (down, then silent), then the answering ones, each by id; a last row
    says how many more there are when they do not all fit."""
    order = {"down": 0, "silent": 1, "up": 2}
    nodes = sorted(live.nodes.values(), key=lambda n: (order[n.state], n.node_id))
    if len(nodes) <= limit:
        return [node_row(node) for node in nodes]
    shown, hidden = nodes[: limit - 1], nodes[limit - 1 :]
    up = sum(1 for n in hidden if n.up)
    return [*(node_row(node) for node in shown), more_row(len(NODE_COLUMNS), len(hidden), f"more, {up:,} up")]


def node_row(node: NodeLive) -> tuple[str, ...]:
    status = node.status
    cpu = "-" if node.cpu_percent is None else f"{node.cpu_percent:.0f} %"
    memory = "-" if node.rss_bytes is None else f"{node.rss_bytes / 2**20:,.0f} MiB"
    if status is None:
        return (str(node.node_id), node.state, "-", "-", "-", "-", cpu, memory)
    return (str(node.node_id), node.state, f"{status.height:,}", str(status.view), str(status.peers), f"{status.mempool:,}", cpu, memory)


def pow_rows(live: LiveState) -> list[tuple[str, ...]]:
    """PoW: the nodes ranked by blocks mined (the chain's own leaderboard)."""
    rows: list[tuple[str, ...]] = []
    nodes = sorted(live.nodes.values(), key=lambda n: -(n.status.pow.blocks_mined if isinstance(n.status, PowStatus) else -1))
    for node in nodes[:TABLE_ROWS]:
        status = node.status
        if not isinstance(status, PowStatus):
            rows.append((str(node.node_id), node.state, "-", "-", "-", "-", "-", "-"))
            continue
        pow_ = status.pow
        rows.append((str(node.node_id), node.state, f"{pow_.height:,}", pow_.tip_hash[:10], f"{pow_.blocks_mined:,}",
                     f"{pow_.hash_rate / 1e6:,.2f} MH/s", f"{pow_.reorgs:,}", f"{pow_.stale_blocks:,}"))  # fmt: skip
    return rows


def finding_line(finding: LiveFinding) -> str:
    return f"{time.strftime('%H:%M:%S', time.localtime(finding.at_ns / 1e9))}  {finding.message}"
