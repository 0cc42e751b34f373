"""The sweep's page and tables, read back by a parser: two inline SVG figures with their titles, nothing fetched."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.capacity.model import MeasuredCapacities, observations_from_runs, plan_deployment, validate_held_out
from harness.capacity.points import Slo
from harness.capacity.render import points_table, terminal_report
from harness.capacity.search import SearchPlan
from harness.capacity.store import Sweep
from harness.capacity.sweep import PAGE_FILE, run_sweep, write_page
from tests.capacity_fake import FakeNetwork

CORES = 2.0


class PageReader(HTMLParser):
    """Counts tags, collects the figure titles and every text inside the SVGs, and every fetching attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.open: list[str] = []
        self.captions: list[str] = []
        self.svg_text: list[str] = []
        self.fetches: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.open.append(tag)
        self.fetches += [
            f"{tag} {name}={value}" for name, value in attrs if name in ("src", "href", "xlink:href") and not (value or "").startswith("#")
        ]

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if "figcaption" in self.open:
            self.captions.append(data.strip())
        elif "svg" in self.open and data.strip():
            self.svg_text.append(data.strip())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Sweep]:
    output = tmp_path_factory.mktemp("sweep")
    fake = FakeNetwork()
    return output, run_sweep(output, SearchPlan(sizes=[4, 8, 16, 32, 50, 64], target_rate_per_s=90.0), Slo(), fake, clock=fake.clock)


def read_page(output: Path, sweep: Sweep) -> PageReader:
    measured = MeasuredCapacities(
        per_size={c.nodes: c.sustained_rate_per_s for c in sweep.findings.capacities if c.sustained_rate_per_s}, cores=CORES
    )
    validation = validate_held_out(observations_from_runs(sweep.records()), fit_max_nodes=32, measured=measured)
    assert sweep.model is not None
    plan = plan_deployment(sweep.model, nodes=1000, rate_per_s=10.0, cores_per_host=2)
    path = write_page(output, sweep, CORES, plans=[plan], validation=validation)
    assert path == output / PAGE_FILE
    reader = PageReader()
    reader.feed(path.read_text())
    reader.close()
    return reader


def test_the_page_holds_two_titled_inline_figures_and_fetches_nothing(sweep: tuple[Path, Sweep]) -> None:
    reader = read_page(*sweep)
    assert reader.tags.get("svg") == 2
    assert reader.captions == ["Throughput and p99 latency per size", "Capacity against size, with the fitted model"]
    assert reader.fetches == []
    assert "script" not in reader.tags and "img" not in reader.tags and "link" not in reader.tags


def test_the_figures_show_every_size_the_model_band_and_the_knee(sweep: tuple[Path, Sweep]) -> None:
    reader = read_page(*sweep)
    labels = " | ".join(reader.svg_text)
    for nodes in (4, 8, 16, 32, 50, 64):
        assert f"N={nodes}" in labels
    assert "p99 target 2000 ms" in labels
    assert "model 90 % band" in labels
    assert "knee: largest N sustaining it = 32" in labels


def test_the_page_and_the_terminal_say_the_findings_and_the_planner_caveat(sweep: tuple[Path, Sweep]) -> None:
    output, stored = sweep
    read_page(output, stored)
    page = (output / PAGE_FILE).read_text()
    assert "UNTRUSTWORTHY beyond N = 128" in page and "Held-out validation" in page
    assert stored.model is not None
    plan = plan_deployment(stored.model, nodes=1000, rate_per_s=10.0, cores_per_host=2)
    text = terminal_report(stored, plans=[plan])
    assert "largest size sustaining 90 proofs/s: N = 32" in text
    assert "UNTRUSTWORTHY beyond N = 128" in text
    assert text.count(" found ") == 6
    table = points_table(stored)
    assert table.count("closed") == 6 and "backlog" in table
