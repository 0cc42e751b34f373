"""``popbench monitor``: a live terminal dashboard of a running network (docs/monitoring.md).

Built on Textual: it redraws only the cells that changed (no flicker, whatever the refresh rate), runs
on asyncio like the collector it drives, and its test pilot (``App.run_test``) lets the tests read the
real screen. Each refresh is one collector sample (concurrent STATUS requests, one deadline for all:
a dead or stalled node costs the others nothing) fed into a LiveState; the leaderboard's chain reads
run beside it, never in the way of the next refresh.
"""

from __future__ import annotations

import asyncio
import io
from typing import ClassVar

from rich.console import Console
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, RichLog, Sparkline, Static

from harness.monitor import view
from harness.monitor.chain import ChainReader
from harness.monitor.targets import Target
from harness.observe.collect import Collector, Sample, next_tick, sample_deadline_s
from harness.observe.live import LiveFinding, LiveState
from harness.observe.service_live import read_service_live
from popbench.client import NodeClient

SAMPLES_KEPT = 2  # the collector keeps only the latest samples: LiveState holds the history that matters


class MonitorApp(App[None]):
    """The dashboard; ``refreshes`` counts completed refreshes (the tests wait on it)."""

    TITLE = "popbench monitor"
    CSS = """
    Screen { layout: vertical; }
    #top { height: 9; }
    .panel { border: round $primary; padding: 0 1; width: 1fr; }
    #latency-box { height: 5; border: round $primary; padding: 0 1; }
    #latency { height: 2; }
    #tables { height: auto; max-height: 60%; }
    DataTable { width: 1fr; height: auto; max-height: 100%; border: round $primary; }
    #findings { height: 1fr; min-height: 4; border: round $primary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, target: Target, interval_s: float) -> None:
        super().__init__()
        self.target = target
        self.interval_s = interval_s
        deadline_s = sample_deadline_s(interval_s)
        self.collector = Collector(dict(target.nodes), target.chain_id or b"", dict(target.pids), uss_every=10, deadline_s=deadline_s,
                                   dial=self._dial, keep=SAMPLES_KEPT)  # fmt: skip
        pow_interval = target.genesis.params.pow_block_interval_ms / 1000 if target.genesis is not None else None
        self.live = LiveState(target.nodes, target.consensus, interval_s, f=target.f, pow_block_interval_s=pow_interval,
                              processes_known=set(target.pids), intended_links=dict(target.links))  # fmt: skip
        self.collector.listeners.append(self._observe)
        self.chain = ChainReader(dict(target.nodes), target.chain_id, target.genesis, deadline_s)
        self.refreshes = 0
        self._chain_task: asyncio.Task[None] | None = None
        self._pending: list[LiveFinding] = []  # raised since the screen last showed findings

    def _observe(self, sample: Sample) -> None:
        self._pending += self.live.observe(sample)

    async def _dial(self, host: str, port: int, chain_id: bytes) -> NodeClient:
        # the handshake may outlast one sample's deadline on a busy host: the request stays in flight
        return await NodeClient.connect(host, port, chain_id=self.target.chain_id)

    # -- layout ------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(f"popbench monitor  {self.target.label}  ({self.target.consensus}, every {self.interval_s:g} s)", id="title")
        with Horizontal(id="top"):
            yield Static(id="health", classes="panel")
            yield Static(id="consensus", classes="panel")
            yield Static(id="throughput", classes="panel")
            yield Static(id="service", classes="panel")
        with Vertical(id="latency-box"):
            yield Static(id="latency-title")
            yield Sparkline([], id="latency")
        with Horizontal(id="tables"):
            yield DataTable(id="board", show_cursor=False, zebra_stripes=True)
            yield DataTable(id="nodes", show_cursor=False)
        yield RichLog(id="findings", wrap=False, markup=False, max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        board, nodes = self.query_one("#board", DataTable), self.query_one("#nodes", DataTable)
        for header, width in view.POW_COLUMNS if self.target.consensus == "pow" else view.LEADERBOARD_COLUMNS:
            board.add_column(header, width=width)
        for header, width in view.NODE_COLUMNS:
            nodes.add_column(header, width=width)
        self.query_one("#findings", RichLog).border_title = "findings"
        self.run_worker(self._watch(), exclusive=True, name="watch")

    # -- refreshing --------------------------------------------------------------------------------
    async def _watch(self) -> None:
        """Sample on the grid of ``interval_s`` until the app quits (a late sample skips missed ticks)."""
        loop = asyncio.get_running_loop()
        first = loop.time()
        while True:
            self._pids_changed()
            await self.collector.sample()
            self._drivers()
            self._show()
            if self.target.consensus == "pbft" and (self._chain_task is None or self._chain_task.done()):
                self._chain_task = asyncio.ensure_future(self._read_chain())
            self.refreshes += 1
            now = loop.time()
            await asyncio.sleep(next_tick(first, self.interval_s, now) - now)  # the refresh period

    def _pids_changed(self) -> None:
        """A run's restarted node has a new pid (pids.json): watch the new process."""
        for node_id, pid in self.target.refresh_pids().items():
            self.collector.node_restarted(node_id, pid)
            self.live.processes_known.add(node_id)

    def _drivers(self) -> None:
        """A run's drivers' latest figures (service-live.json, one small file): the service level's p99 and delivery."""
        if self.target.run_dir is not None:
            reading = read_service_live(self.target.run_dir)
            if reading is not None:
                self.live.drivers_said(reading)

    async def _read_chain(self) -> None:
        await self.chain.refresh(self.live)
        self._show_board()

    def _show(self) -> None:
        live = self.live
        self.query_one("#health", Static).update(view.health_text(live))
        self.query_one("#consensus", Static).update(view.consensus_text(live, self.interval_s))
        self.query_one("#throughput", Static).update(view.throughput_text(live))
        self.query_one("#service", Static).update(view.service_text(live.service_now()))
        self.query_one("#latency-title", Static).update(view.latency_title(live))
        self.query_one("#latency", Sparkline).data = [s * 1000 for s in live.latency_s]
        fill(self.query_one("#nodes", DataTable), view.node_rows(live))
        if self.target.consensus == "pow":
            fill(self.query_one("#board", DataTable), view.pow_rows(live))
            self.query_one("#board", DataTable).border_title = "miners by blocks mined"
        log = self.query_one("#findings", RichLog)
        for finding in self._pending:
            log.write(view.finding_line(finding))
        self._pending.clear()

    def _show_board(self) -> None:
        board = self.query_one("#board", DataTable)
        fill(board, view.leaderboard_rows(self.chain))
        board.border_title = view.leaderboard_title(self.chain)

    async def on_unmount(self) -> None:
        if self._chain_task is not None:
            self._chain_task.cancel()
        self.collector.close()
        self.chain.close()

    def screen_text(self) -> str:
        """The screen as plain text, as a person sees it (tests and docs; Textual's own SVG screenshot
        renders the same compositor update, here exported as text instead)."""
        width, height = self.size
        console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None, record=True,
                          legacy_windows=False)  # fmt: skip
        console.print(self.screen._compositor.render_update(full=True))
        return console.export_text()


def fill(table: DataTable[str], rows: list[tuple[str, ...]]) -> None:
    """Update the table in place, row by row (keyed by position), so nothing flickers; only the cells
    whose text changed are updated (the columns have fixed widths: nothing is re-measured); rows
    beyond the new count are removed."""
    for index, row in enumerate(rows):
        key = str(index)
        if key in table.rows:
            before = table.get_row(key)
            for column, old, value in zip(table.columns, before, row, strict=True):
                if old != value:
                    table.update_cell(key, column, value)
        else:
            table.add_row(*row, key=key)
    for stale in [k for k in table.rows if int(str(k.value)) >= len(rows)]:
        table.remove_row(stale)
