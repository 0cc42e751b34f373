"""report.html: the page is checked by parsing it (html.parser), never by looking at pixels; a second test
renders it in headless Chromium when the machine has it (Debian's ``chromium``) and skips otherwise."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure

from harness.load.records import ProofRecord, write_records
from harness.load.workload import Expect
from harness.metrics.results import Finding, FindingKind, Severity
from harness.metrics.service import ServiceInputs, service
from harness.metrics.throughput import SteadyWindow
from harness.metrics.timeline import NodeState, SampleRow, SecondRow, Timeline, TimelineHeader, write_timeline
from harness.profile import load_profile
from harness.report import html, html_plots
from harness.report.build import load_report, write_report
from harness.report.html_data import LatencyCurve, Marks, block_propagation, latency_curve, node_resources, per_second_from_timeline
from harness.report.schema import Files, Report, Score
from harness.report.score import RunOutcome, score
from popbench.genesis import make_genesis
from tests.chain_builder import PowNodeChain, pow_params

FIXTURES = Path(__file__).parent / "fixtures"
ORIGIN_NS = 1_700_000_000_000_000_000
WINDOW_S = 10
RATE_PER_S = 20
LATENCY_MS = 40.0
MISSED_EVERY = 10  # every tenth valid item never commits


# -- a parsed page -------------------------------------------------------------------------------------
class Page(HTMLParser):
    """Tables (by class, rows of cell texts), figures (id, has svg, caption) and every src/href."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.figures: dict[str, tuple[bool, str]] = {}
        self.references: list[str] = []
        self.list_items: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._figure: str | None = None
        self._caption: list[str] | None = None
        self._item: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.references += [value for name, value in attrs if name in ("src", "href") and value]
        if tag == "table":
            self.tables.append((found.get("class") or "", []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "figure":
            self._figure = found.get("id") or ""
            self.figures[self._figure] = (False, "")
        elif tag == "svg" and self._figure is not None:
            self.figures[self._figure] = (True, "")
        elif tag == "figcaption":
            self._caption = []
        elif tag == "li":
            self._item = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1][1].append(self._row)
            self._row = None
        elif tag == "figcaption" and self._figure is not None and self._caption is not None:
            self.figures[self._figure] = (self.figures[self._figure][0], "".join(self._caption))
            self._caption = None
        elif tag == "figure":
            self._figure = None
        elif tag == "li" and self._item is not None:
            self.list_items.append("".join(self._item).strip())
            self._item = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._caption, self._item):
            if sink is not None:
                sink.append(data)

    def table(self, css_class: str) -> list[list[str]]:
        return next(rows for name, rows in self.tables if name == css_class)


# -- a run directory -----------------------------------------------------------------------------------
def records() -> list[ProofRecord]:
    """RATE_PER_S items a second for WINDOW_S; each commits LATENCY_MS after it is due, but every tenth."""
    made = []
    for index in range(WINDOW_S * RATE_PER_S):
        due = ORIGIN_NS + index * 1_000_000_000 // RATE_PER_S
        committed = index % MISSED_EVERY != 0
        made.append(ProofRecord(index, index.to_bytes(32, "big"), Expect.COMMIT, due, due, due + 1000, 0,
                                due + int(LATENCY_MS * 1e6) if committed else 0, 1 if committed else 0))  # fmt: skip
    return made


def timeline() -> Timeline:
    state = NodeState(nodes_up=4, height=10, view_changes=0, links_up=6, cpu_percent_mean=20.0, cpu_percent_max=30.0,
                      uss_mib_mean=8.0, uss_mib_max=9.0, mempool_mean=1.0, mempool_max=2)  # fmt: skip
    seconds = [SecondRow(t_s=float(s), length_s=1.0, steady=2 <= s < 9, offered=RATE_PER_S, submitted=RATE_PER_S, committed=18,
                         outstanding=2 * s, latency_p50_ms=LATENCY_MS, latency_p99_ms=LATENCY_MS, nodes=state) for s in range(WINDOW_S)]  # fmt: skip
    samples = [SampleRow(t_s=float(s), nodes=msgspec.structs.replace(state, height=10 * s, view_changes=1 if s >= 5 else 0))
               for s in range(WINDOW_S)]  # fmt: skip
    header = TimelineHeader(version=1, origin_ns=ORIGIN_NS, steady_start_s=2.0, steady_end_s=9.0, end_s=float(WINDOW_S))
    return Timeline(header=header, seconds=seconds, samples=samples)


FINDINGS = [
    Finding(kind=FindingKind.STALL, severity=Severity.FAIL, at_s=4.0, message="stall: no commit for 9.5 s from t+4.0 s", figures={"length_s": 9.5}),
    Finding(kind=FindingKind.VIEW_CHANGE, severity=Severity.WARN, at_s=5.0, message="the view changed <to 1> & moved on", figures={}),
]  # fmt: skip


def v2_report(run_dir: Path, made: list[ProofRecord] | None = None) -> Report:
    """The stored smoke report with the service section of the records above, its formula-2 score, typed
    findings, and this directory's files."""
    stored = load_report(FIXTURES / "report_v1_smoke.json")
    steady = SteadyWindow(ORIGIN_NS + 2_000_000_000, ORIGIN_NS + 9_000_000_000)
    inputs = ServiceInputs(origin_ns=ORIGIN_NS, steady=steady, latency_target_ms=stored.profile.slo.latency_ms, stall_threshold_s=2.0, expected_commit_s=0.0,
                           intended_edges=[], down_spans={}, light_load_below_per_s=None, has_load=True)  # fmt: skip
    metrics = msgspec.structs.replace(stored.metrics, service=service(made or records(), [], inputs))
    files = Files(records=["records-0.bin"], logs="logs/", genesis="genesis.json", timeline="timeline.jsonl")
    return msgspec.structs.replace(stored, metrics=metrics, score=score(metrics, stored.profile), issues=FINDINGS, files=files)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    write_records(tmp_path / "records-0.bin", records())
    write_timeline(timeline(), tmp_path)
    return tmp_path


def rendered(report: Report, run_dir: Path) -> Page:
    return Page(html.write_html(report, run_dir).read_text(encoding="utf-8"))


# -- the score -----------------------------------------------------------------------------------------
def test_the_score_table_has_every_item_and_its_points_add_up_to_the_total(run_dir: Path) -> None:
    report = v2_report(run_dir)
    assert isinstance(report.score, Score) and len(report.score.items) >= 3
    page = rendered(report, run_dir)
    rows = page.table("score-items")[1:]
    by_item = {row[0]: row for row in rows}
    for item in report.score.items:
        assert float(by_item[item.name][4]) == pytest.approx(item.points, abs=0.005)
    items_sum = sum(float(row[4]) for row in rows if row[0] != "sum")
    assert float(by_item["sum"][4]) == pytest.approx(items_sum, abs=0.005 * len(rows))
    scaled = round(float(by_item["sum"][4]) * 100 / float(by_item["sum"][5]), 1)
    assert report.score.total == pytest.approx(min(scaled, report.score.cap or math.inf), abs=0.1)
    for line in report.score.arithmetic:
        assert line in page.list_items


def test_a_version_1_score_shows_each_part_as_the_sum_of_its_items(tmp_path: Path) -> None:
    report = load_report(FIXTURES / "report_v1_smoke.json")
    page = rendered(report, tmp_path)
    rows = page.table("score-items")[1:]
    for part in (p for p in report.score.parts if p.exercised):  # type: ignore[union-attr]
        mine = [row for row in rows if row[0] == part.name]
        items = sum(float(row[2]) for row in mine if row[1] != "part total")
        total = next(row[2] for row in mine if row[1] == "part total")
        assert float(total.split("/")[0]) == pytest.approx(items, abs=0.01)
    assert f"grade {report.score.grade}: total {report.score.total:.1f} >= 90" in page.list_items


# -- figures, findings, no external resources ---------------------------------------------------------
def test_every_expected_figure_is_an_svg_with_a_caption(run_dir: Path) -> None:
    page = rendered(v2_report(run_dir), run_dir)
    for figure_id in ("timeline", "latency-cdf", "resources"):
        has_svg, caption = page.figures[figure_id]
        assert has_svg and caption, figure_id
    assert "90.0% within L" in page.figures["latency-cdf"][1]  # the missed tenth is counted, not dropped


def test_a_stall_is_named_in_the_timeline_caption(run_dir: Path) -> None:
    """Items due from 4 s to 8 s are held until 8.5 s; those due after 8 s commit 40 ms after their due time
    again, so no commit is seen from 3.99 s (the last before the hold) to 8.09 s: one stall of 4.1 s."""
    held = [dataclasses.replace(r, commit_ns=ORIGIN_NS + 8_500_000_000) if 4e9 <= r.due_ns - ORIGIN_NS < 8e9 and r.commit_ns else r
            for r in records()]  # fmt: skip
    write_records(run_dir / "records-0.bin", held)
    report = v2_report(run_dir, held)
    assert report.metrics.service is not None and len(report.metrics.service.stalls) == 1
    caption = rendered(report, run_dir).figures["timeline"][1]
    found = re.search(r"Stalls: (\d+\.\d) s from t\+(\d+\.\d) s", caption)
    assert found, caption
    assert float(found[1]) == pytest.approx(4.1, abs=0.05) and float(found[2]) == pytest.approx(4.0, abs=0.05)


def test_the_page_references_nothing_outside_itself(run_dir: Path) -> None:
    text = html.write_html(v2_report(run_dir), run_dir).read_text(encoding="utf-8")
    assert not [ref for ref in Page(text).references if not ref.startswith("#")]
    assert not re.search(r"<script|@import|url\(\s*['\"]?https?:|<link\b|<img\b", text, re.IGNORECASE)


def test_findings_are_listed_with_their_time_and_escaped(run_dir: Path) -> None:
    text = html.write_html(v2_report(run_dir), run_dir).read_text(encoding="utf-8")
    rows = Page(text).table("findings")[1:]
    assert [row[3] for row in rows] == [f.message for f in FINDINGS]
    assert rows[0][:3] == ["fail", "t+4.0s", "stall"]
    assert "<to 1>" not in text and "&lt;to 1&gt; &amp; moved on" in text


def test_header_shows_load_settings_and_service_level(run_dir: Path) -> None:
    report = v2_report(run_dir)
    page = rendered(report, run_dir)
    cells = {cell for _, rows in page.tables for row in rows for cell in row}
    assert f"{report.profile.slo.latency_ms:g} ms (due time to commit seen)" in cells
    assert {"mode", "rate", "shape", "drivers", "invalid fraction", "window"} <= cells


def test_a_pow_run_shows_propagation_cdfs_and_the_fork_count(tmp_path: Path) -> None:
    genesis, _ = make_genesis(3, seed="html-pow", params=pow_params())
    chains = [PowNodeChain(genesis, tmp_path / "data", node) for node in range(3)]
    shared = chains[0].extend(4)
    for other in chains[1:]:
        other.copy_from(chains[0], shared)
    chains[0].extend(1, miner=0)
    chains[1].extend(1, miner=1)  # a fork at height 5
    stored = load_report(FIXTURES / "report_v1_pow.json")
    assert stored.deployment is not None and stored.deployment.consensus == "pow"
    report = msgspec.structs.replace(stored, deployment=msgspec.structs.replace(stored.deployment, nodes=3))
    page = rendered(report, tmp_path)
    assert page.figures["propagation-cdf"][0] and page.figures["forks"][0]
    assert "Fork count: 1 block was stored" in page.figures["forks"][1]
    prop = block_propagation(tmp_path / "data", 3, [])
    assert prop is not None and prop.forks_by_height == {1: 0, 2: 0, 3: 0, 4: 0, 5: 1}
    assert len(prop.delays_ms[1.0]) == 4  # only the shared blocks reached every node


def test_the_latency_curve_counts_items_that_never_committed() -> None:
    curve = latency_curve(records(), ORIGIN_NS, ORIGIN_NS + WINDOW_S * 1_000_000_000)
    assert curve.due == WINDOW_S * RATE_PER_S
    assert curve.committed_share == pytest.approx(1 - 1 / MISSED_EVERY)


def test_an_interval_cut_by_the_steady_windows_end_is_plotted_as_a_rate() -> None:
    whole = timeline()
    cut = msgspec.structs.replace(whole.seconds[-1], t_s=9.0, length_s=0.25, offered=5, committed=4)
    rates = per_second_from_timeline(msgspec.structs.replace(whole, seconds=[*whole.seconds[:-1], cut]))
    assert (rates.offered[-1], rates.committed[-1], rates.length_s[-1]) == (20.0, 16.0, 0.25)
    assert rates.offered[0] == RATE_PER_S  # a whole second: its count is its rate


def test_popbench_report_html_writes_the_page_for_a_stored_run(run_dir: Path) -> None:
    from harness.cli.main import main as cli  # the whole command tree: imported where it is used

    write_report(v2_report(run_dir), run_dir)
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--html"])
    assert result.exit_code == 0, result.output
    assert Page((run_dir / "report.html").read_text(encoding="utf-8")).figures["timeline"][0]


# -- a real browser ------------------------------------------------------------------------------------
BROWSER = shutil.which("chromium") or shutil.which("chromium-headless-shell")  # Debian ships both packages


@pytest.mark.skipif(BROWSER is None, reason="no chromium on this machine (apt-get install chromium-headless-shell)")
def test_headless_chromium_renders_the_page(run_dir: Path) -> None:
    page = html.write_html(v2_report(run_dir), run_dir)
    shot = run_dir / "page.png"
    assert BROWSER is not None
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), f"chromium wrote no screenshot (exit {done.returncode}):\n{done.stderr[-2000:]}"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000  # a blank page is a few kB


# -- what a reader sees first (issue 17, item C) -------------------------------------------------------
HEADLINE_LABELS = ("score", "committed per second", "p99 latency against L", "delivery", "findings")


def test_the_verdict_and_the_five_headline_figures_come_before_any_plot_or_table(run_dir: Path) -> None:
    text = html.write_html(v2_report(run_dir), run_dir).read_text(encoding="utf-8")
    first_plot, first_table = text.index("<figure"), text.index("<table")
    assert text.index('class="verdict"') < first_plot
    for label in HEADLINE_LABELS:
        assert text.index(f'<div class="label">{label}</div>') < min(first_plot, first_table), label
    assert first_plot < text.index("class='findings'") and first_plot < text.index("class='score-items'")


def test_an_interrupted_run_says_it_has_no_grade(run_dir: Path) -> None:
    report = v2_report(run_dir)
    assert report.metrics.service is not None
    metrics = msgspec.structs.replace(report.metrics, service=msgspec.structs.replace(report.metrics.service, interrupted_at_s=9.0))
    stopped = msgspec.structs.replace(report, status="partial", ended_early="interrupted by SIGINT", metrics=metrics,
                                      score=score(metrics, report.profile, RunOutcome(ended_early="interrupted by SIGINT")))  # fmt: skip
    text = html.write_html(stopped, run_dir).read_text(encoding="utf-8")
    verdict = text[: text.index("<figure")]
    assert "interrupted: no grade" in verdict and "provisional" in verdict and "grade A" not in verdict


def test_the_header_describes_what_ran_not_the_profile_as_shipped(run_dir: Path) -> None:
    shipped = load_profile("testnet-100")
    ran = dataclasses.replace(shipped, network=dataclasses.replace(shipped.network, nodes=16),
                              run=dataclasses.replace(shipped.run, duration_s=30.0))  # fmt: skip
    report = msgspec.structs.replace(v2_report(run_dir), profile=ran)
    assert report.deployment is not None
    report = msgspec.structs.replace(report, deployment=msgspec.structs.replace(report.deployment, nodes=16))
    page = rendered(report, run_dir)
    text = html.write_html(report, run_dir).read_text(encoding="utf-8")
    assert "16 pbft nodes" in text[: text.index("<figure")] and "a 30 s window" in text
    profile_row = next(row[1] for _, rows in page.tables for row in rows if row[:1] == ["profile"])
    assert "run with nodes 16 (the profile's 100), duration 30 s (the profile's 60 s)" in profile_row
    assert "(for its own settings)" in profile_row


def test_plots_fill_their_container_and_keep_legends_off_the_data(run_dir: Path) -> None:
    svg = html_plots.timeline_svg(per_second_from_timeline(timeline()), html_data_marks(), node_resources(timeline()))
    root = svg[: svg.index(">")]
    assert 'width="100%"' in root and "pt" not in root.split("viewBox")[0]
    figure = html_plots.timeline_figure(per_second_from_timeline(timeline()), html_data_marks(), node_resources(timeline()))
    renderer = drawn(figure)
    for axes in figure.axes:
        legend = axes.get_legend()
        if legend is not None:
            assert legend.get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1  # beside the plot, not on it
    assert any(a.get_ylabel() == "backlog, items" for a in figure.axes)  # the backlog has its own axis ...
    assert not any("backlog" in a.get_ylabel() and "per second" in a.get_ylabel() for a in figure.axes)  # ... not the rates'


def test_log_axes_read_plain_numbers() -> None:
    curve = LatencyCurve(sorted([60.0 + i for i in range(150)] + [400.0]), 151)
    figure = html_plots.latency_cdf_figure(curve, 1000.0, 0.99)
    drawn(figure)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels(minor=True) + figure.axes[0].get_xticklabels()]
    assert {"50", "100", "200", "500"} <= set(labels), labels
    assert not [label for label in labels if "^" in label or "times" in label]


def drawn(figure: Figure) -> RendererAgg:
    """Lay the figure out as the SVG writer does, so extents and tick labels are final."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def html_data_marks() -> Marks:
    return Marks((2.0, 9.0), [(4.0, 1.0)], [5.0])


def test_every_planned_fault_is_drawn_from_its_apply_to_its_heal() -> None:
    """docs/faults.md promised faults 'drawn on the HTML timeline'; the panels showed stalls and view
    changes but no fault (the chaos run's 25 faults were only rows of the findings table)."""
    marks = dataclasses.replace(html_data_marks(), faults=[(2.0, 5.0), (6.0, 9.0)])
    figure = html_plots.timeline_figure(per_second_from_timeline(timeline()), marks, node_resources(timeline()))
    drawn(figure)
    for axes in figure.axes:
        legend = axes.get_legend()
        if legend is not None and any(t.get_text() == "stall" for t in legend.get_texts()):
            assert "fault (applied to healed)" in [t.get_text() for t in legend.get_texts()]
    hatched = [span(p) for p in figure.axes[0].patches if p.get_hatch() == "//"]
    assert hatched == [(2.0, 3.0), (6.0, 3.0)], hatched


def span(patch: Any) -> tuple[float, float]:
    """(start, width) in data units of an axvspan: a Rectangle from matplotlib 3.9, a Polygon before."""
    if hasattr(patch, "get_width"):
        return round(patch.get_x(), 1), round(patch.get_width(), 1)
    xs = [x for x, _ in patch.get_xy()]
    return round(min(xs), 1), round(max(xs) - min(xs), 1)
