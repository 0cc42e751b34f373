"""The sweep's page and tables, read back by a parser: two inline SVG figures with their titles, nothing fetched."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.capacity.model import MeasuredCapacities, observations_from_runs, plan_deployment, validate_held_out
from harness.capacity.plots import knee_rates
from harness.capacity.points import Slo
from harness.capacity.render import largest_lines, points_table, terminal_report
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
    assert "knee: largest N sustaining it = 32 (N = 50 failed)" in labels


def test_the_page_and_the_terminal_say_the_findings_and_the_planner_caveat(sweep: tuple[Path, Sweep]) -> None:
    output, stored = sweep
    read_page(output, stored)
    page = (output / PAGE_FILE).read_text()
    assert "UNTRUSTWORTHY beyond N = 128" in page and "Held-out validation" in page
    assert stored.model is not None
    plan = plan_deployment(stored.model, nodes=1000, rate_per_s=10.0, cores_per_host=2)
    text = terminal_report(stored, plans=[plan])
    assert "largest size sustaining 90 proofs/s: N = 32, p99 514 ms at 90/s (N = 50 failed it)" in text
    assert "UNTRUSTWORTHY beyond N = 128" in text
    assert text.count(" found ") == 6
    table = points_table(stored)
    assert table.count("closed") == 6 and "backlog" in table


# -- the answer for a target rate says no more than was measured ---------------------------------------------
def sweep_of(output: Path, sizes: list[int], target: float, rates: list[float] | None = None) -> Sweep:
    fake = FakeNetwork()  # capacity 4000/N proofs/s
    plan = SearchPlan(sizes=sizes, target_rate_per_s=target, rates=rates or [])
    return run_sweep(output, plan, Slo(), fake, clock=fake.clock)


def svg_labels(output: Path, sweep: Sweep) -> str:
    reader = PageReader()
    reader.feed(write_page(output, sweep, CORES).read_text())
    return " | ".join(reader.svg_text)


def test_when_every_size_sustains_the_rate_the_answer_is_a_lower_bound_and_no_knee(tmp_path: Path) -> None:
    sweep = sweep_of(tmp_path, [4, 8], 100.0)  # N = 8 sustains up to 500/s: 100/s says nothing of N = 16
    answer = largest_lines(sweep)[0]
    assert answer == "largest size sustaining 100 proofs/s: N >= 8 (the largest size measured), p99 359 ms at 100/s"
    assert not any(line.startswith("smallest failing") for line in largest_lines(sweep))
    labels = svg_labels(tmp_path, sweep)
    assert "knee:" not in labels and "N >= 8 sustains it: no size measured failed (no knee)" in labels


def test_when_a_size_fails_the_knee_is_the_largest_that_sustained(tmp_path: Path) -> None:
    sweep = sweep_of(tmp_path, [16, 32, 64], 90.0)  # 4000/64 = 62.5/s < 90/s
    lines = largest_lines(sweep)
    assert lines[0].startswith("largest size sustaining 90 proofs/s: N = 32, p99 ") and lines[0].endswith(" at 90/s (N = 64 failed it)")
    assert lines[1].startswith("smallest failing: N = 64: backlog")
    assert "knee: largest N sustaining it = 32 (N = 64 failed)" in svg_labels(tmp_path, sweep)


def test_when_no_size_sustains_the_rate_the_answer_says_none_with_the_failing_p99(tmp_path: Path) -> None:
    sweep = sweep_of(tmp_path, [64, 128], 200.0)
    answer = largest_lines(sweep)[0]
    assert answer.startswith("largest size sustaining 200 proofs/s: none of the sizes measured (N = 64, the smallest, failed it: p99 ")
    assert answer.endswith(" ms at 200/s)")
    labels = svg_labels(tmp_path, sweep)
    assert "knee:" not in labels and "N >=" not in labels and "target 200/s" in labels


def test_a_size_that_sustained_every_rate_tried_has_no_knee_on_its_curve(tmp_path: Path) -> None:
    sweep = sweep_of(tmp_path, [40, 80], 10.0, rates=[20.0, 60.0])  # N = 40 (100/s) sustains both, N = 80 (50/s) fails 60
    assert knee_rates(sweep) == {80: 20.0}
