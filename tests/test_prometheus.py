"""/metrics in the Prometheus text format (harness/observe/prometheus.py): scraped from a live node and a
live run, parsed with prometheus_client's own parser; the monitor attaches to the same run by its
directory. And the exposition's arithmetic on samples with known answers."""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from harness.load.records import read_records
from harness.load.workload import Expect
from harness.observe.live import LiveState
from harness.observe.prometheus import SampleMetrics, cumulative
from harness.stats import LATENCY_BUCKETS_S, latency_bucket
from tests.cluster import POPBENCH, LocalCluster
from tests.test_harness_run import assert_passed, finish, popbench, write_profile
from tests.test_live_state import pop, sample
from tests.test_pbft_network import make_proofs, submit_all

pytestmark = pytest.mark.timeout(240)
METRICS_LINE = re.compile(r"metrics: http://127\.0\.0\.1:(\d+)/metrics")


def scrape(port: int) -> dict[str, list[PromSample]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[PromSample]], name: str, node: str, sample_name: str | None = None) -> float:
    wanted = sample_name or name
    found = [s.value for s in families[name] if s.name == wanted and s.labels.get("node") == node]
    assert len(found) == 1, (name, node, families.get(name))
    return found[0]


def listens_on_loopback_only(pid: int, port: int) -> bool:
    listening = [c for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    return bool(listening) and all(c.laddr.ip == "127.0.0.1" for c in listening)


def test_the_histogram_keeps_count_and_sum_exact_and_a_node_down_exports_only_up() -> None:
    metrics = SampleMetrics(LiveState(range(2), "pbft", 1.0, f=0, processes_known={0, 1}))
    metrics.observe(sample(1.0, [pop(0, 10, rounds=10, round_s=0.5, uptime_s=1), pop(1, 10, rounds=10, round_s=0.5, uptime_s=1)]))
    metrics.observe(sample(2.0, [pop(0, 30, rounds=30, round_s=1.5, uptime_s=2)], alive=[0]))
    text = generate_latest(metrics.registry()).decode()
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    assert value(families, "popbench_round_seconds", "0", "popbench_round_seconds_count") == 30  # the node's own totals
    assert value(families, "popbench_round_seconds", "0", "popbench_round_seconds_sum") == pytest.approx(1.5)
    buckets = {
        s.labels["le"]: s.value for s in families["popbench_round_seconds"] if s.name.endswith("_bucket") and s.labels["node"] == "0"
    }
    assert buckets["0.025"] == 0 and buckets["0.05"] == 30 and buckets["+Inf"] == 30  # 10, then 20 more, rounds at a 50 ms mean
    assert value(families, "popbench_up", "1") == 0 and value(families, "popbench_up", "0") == 1
    assert not [s for s in families["popbench_height"] if s.labels["node"] == "1"]  # nothing stale about a node down
    assert families["popbench_nodes_down"][0].value == 1 and families["popbench_health"][0].value == 2  # f = 0: one down is below quorum


def test_a_live_node_serves_its_own_status_on_loopback(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 4)
    sock = cluster.sockets[0]
    args = [POPBENCH, "node", "--genesis", str(cluster.genesis_path), "--node-id", "0", "--data-dir", str(tmp_path / "node-0"),
            "--listen-fd", str(sock.fileno()), "--metrics-port", "0"]  # fmt: skip
    log = open(tmp_path / "node-0.log", "ab")  # noqa: SIM115 (the process owns it)
    cluster.procs[0] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),))
    for node in (1, 2, 3):
        cluster.start(node)
    try:
        port = wait_for_port(tmp_path / "node-0.log")

        async def load() -> None:
            await cluster.wait_connected()
            client = await cluster.client(1)
            await submit_all(client, make_proofs(cluster, 200))
            client.close()
            await cluster.wait_until(lambda s: all(x is not None and x.counters.proofs_committed >= 200 for x in s.values()), 60)

        asyncio.run(load())
        time.sleep(1.5)  # the node feeds /metrics from its once-a-second status
        families = scrape(port)
        assert value(families, "popbench_blocks_committed", "0", "popbench_blocks_committed_total") >= 1
        assert value(families, "popbench_proofs_committed", "0", "popbench_proofs_committed_total") >= 200
        assert value(families, "popbench_node_resident_bytes", "0") > 10 * 2**20
        assert value(families, "popbench_round_seconds", "0", "popbench_round_seconds_count") >= 1
        assert value(families, "popbench_peers", "0") == 3 and value(families, "popbench_up", "0") == 1
        assert listens_on_loopback_only(cluster.procs[0].pid, port)
    finally:
        cluster.stop()


def wait_for_port(log: Path, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = METRICS_LINE.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return int(found.group(1))
        time.sleep(0.1)  # polling a log another process writes
    raise AssertionError(f"no metrics line in {log}")


def test_a_live_run_serves_metrics_from_its_collectors_samples(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, duration=6.0, rate=150.0)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(popbench("run", "--profile", str(profile), "--output", str(run_dir), "--metrics-port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen = read_until(proc, "load window:")
    port = int(next(m.group(1) for line in seen if (m := METRICS_LINE.search(line))))
    scraper = Scraper(port)
    scraper.start()
    assert listens_on_loopback_only(proc.pid, port)
    code, output = finish(proc)
    scraper.stop.set()
    scraper.join(30)
    assert_passed(code, run_dir, "".join(seen) + output)
    assert len(scraper.scrapes) >= 5, f"only {len(scraper.scrapes)} scrapes of a run of about 12 s; errors: {scraper.errors[-3:]}"
    families = scraper.scrapes[-1][1]  # near the end of the run: the last scrape before /metrics closed
    assert families["popbench_nodes"][0].value == 4 and families["popbench_fault_threshold"][0].value == 1
    for node in "0123":
        assert value(families, "popbench_up", node) == 1
        assert value(families, "popbench_blocks_committed", node, "popbench_blocks_committed_total") > 0
        assert value(families, "popbench_node_resident_bytes", node) > 0
        assert value(families, "popbench_round_seconds", node, "popbench_round_seconds_count") > 0
    latency = {
        (s.name, s.labels.get("le")): s.value for s in families["popbench_commit_latency_seconds"] if s.labels["driver"] == "driver-0"
    }
    count = latency[("popbench_commit_latency_seconds_count", None)]
    assert count > 0 and latency[("popbench_commit_latency_seconds_bucket", "+Inf")] == count  # items' latency, from the driver
    assert latency[("popbench_commit_latency_seconds_bucket", "0.005")] <= latency[("popbench_commit_latency_seconds_bucket", "5")]
    assert families["popbench_service_level_holds"][0].value in (0, 1)
    assert (run_dir / "nodes.json").exists()  # where the nodes listen, for popbench monitor RUN_DIR
    report = orjson.loads((run_dir / "report.json").read_bytes())
    check_counters_only_grow(scraper.scrapes)
    check_against_the_timeline(scraper.scrapes, run_dir)
    check_against_the_final_report(families, report)
    check_commit_latency_against_the_records(scraper.scrapes, run_dir, report)


class Scraper(threading.Thread):
    """Scrapes /metrics every 0.2 s until told to stop; keeps (wall time, families) of each answer."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.scrapes: list[tuple[float, dict[str, list[PromSample]]]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.2):  # a scrape interval, not a wait for anything
            try:
                self.scrapes.append((time.time(), scrape(self.port)))
            except OSError as err:  # refused before the server starts or after it closed
                self.errors.append(str(err))


def by_node(families: dict[str, list[PromSample]], name: str, sample_name: str | None = None) -> dict[str, float]:
    wanted = sample_name or name
    return {s.labels["node"]: s.value for s in families.get(name, []) if s.name == wanted}


def total(families: dict[str, list[PromSample]], counter: str) -> float:
    return sum(by_node(families, counter, counter + "_total").values())


def check_counters_only_grow(scrapes: list[tuple[float, dict[str, list[PromSample]]]]) -> None:
    """No counter of one node (no restarts in this run) and no histogram count ever goes down between scrapes."""
    counters = ["popbench_blocks_committed", "popbench_proofs_committed", "popbench_view_changes"]
    for (t0, before), (t1, after) in itertools.pairwise(scrapes):
        for name in counters:
            old, new = by_node(before, name, name + "_total"), by_node(after, name, name + "_total")
            assert all(new[n] >= old[n] for n in old if n in new), (name, t0, old, t1, new)
        old_rounds = by_node(before, "popbench_round_seconds", "popbench_round_seconds_count")
        new_rounds = by_node(after, "popbench_round_seconds", "popbench_round_seconds_count")
        assert all(new_rounds[n] >= old_rounds[n] for n in old_rounds if n in new_rounds), (t0, old_rounds, t1, new_rounds)


def check_against_the_timeline(scrapes: list[tuple[float, dict[str, list[PromSample]]]], run_dir: Path) -> None:
    """Every scrape renders one collector sample, the one its popbench_sample_timestamp_seconds names; the
    report's timeline has a row for every sample, made from the same Sample object: they must agree exactly."""
    lines = [orjson.loads(line) for line in (run_dir / "timeline.jsonl").read_bytes().splitlines()]
    origin_s = lines[0]["origin_ns"] / 1e9
    rows = {round(line["t_s"], 4): line["nodes"] for line in lines if line["row"] == "sample"}
    matched = 0
    for _, families in scrapes:
        if "popbench_sample_timestamp_seconds" not in families:
            continue
        t_s = round(families["popbench_sample_timestamp_seconds"][0].value - origin_s, 4)
        row = rows.get(t_s)
        assert row is not None, f"no timeline sample at t = {t_s} s; the timeline has {sorted(rows)}"
        up = [n for n, v in by_node(families, "popbench_up").items() if v == 1]
        heights = by_node(families, "popbench_height")
        mempool = by_node(families, "popbench_mempool_items")
        views = by_node(families, "popbench_view_changes", "popbench_view_changes_total")
        cpu = by_node(families, "popbench_node_cpu_percent")
        scraped = {
            "nodes_up": len(up),
            "height": max(heights.values(), default=None),
            "mempool_max": max(mempool.values(), default=None),
            "mempool_mean": sum(mempool.values()) / len(mempool) if mempool else None,
            # a link either end lists: in this full mesh of 4 both ends list it once all are linked
            "links_up": sum(by_node(families, "popbench_peers").values()) / 2,
        }
        reported = {key: row[key] for key in scraped}
        if len(up) == 4:  # the timeline counts a node that missed this sample by its previous answer; /metrics leaves it out
            scraped["view_changes"], reported["view_changes"] = sum(views.values()), row["view_changes"] or 0
        if row["cpu_percent_max"] is not None and len(cpu) == 4:
            scraped["cpu_percent_max"], reported["cpu_percent_max"] = max(cpu.values()), row["cpu_percent_max"]
        assert scraped == pytest.approx(reported), f"t = {t_s} s: /metrics {scraped} vs timeline.jsonl {reported}"
        matched += 1
    assert matched >= 5, f"only {matched} scrapes named their sample"


def check_against_the_final_report(families: dict[str, list[PromSample]], report: dict[str, Any]) -> None:
    """The last scrape against report.json, which reads the nodes' final STATUS after the drain: the scrape
    saw an earlier sample, so every count it shows is at most the report's (and the same where nothing moved)."""
    metrics, deployment = report["metrics"], report["deployment"]
    blocks = by_node(families, "popbench_blocks_committed", "popbench_blocks_committed_total")
    proofs = by_node(families, "popbench_proofs_committed", "popbench_proofs_committed_total")
    sides = {
        "nodes": (families["popbench_nodes"][0].value, deployment["nodes"]),
        "f": (families["popbench_fault_threshold"][0].value, deployment["f"]),
        "height": (max(by_node(families, "popbench_height").values()), metrics["consensus"]["height"]),
        "blocks committed (most of any node)": (max(blocks.values()), metrics["consensus"]["height"]),
        "proofs committed (most of any node)": (max(proofs.values()), metrics["work"]["proofs_committed"]),
        "view changes": (total(families, "popbench_view_changes"), metrics["stability"]["view_changes_total"]),
        "protocol errors": (total(families, "popbench_protocol_errors"), metrics["stability"]["protocol_errors"]),
        "unexpected exceptions": (total(families, "popbench_unexpected_exceptions"), metrics["stability"]["unexpected_exceptions"]),
    }
    print("/metrics (last scrape) vs report.json:", sides)
    assert all(scraped <= final for scraped, final in sides.values()), sides
    assert sides["nodes"][0] == sides["nodes"][1] and sides["f"][0] == sides["f"][1], sides
    assert sum(by_node(families, "popbench_peers").values()) / 2 == metrics["connectivity"]["links_up"] == 6, metrics["connectivity"]
    stalled = families["popbench_stalled"][0].value
    assert stalled == 0 or metrics["service"]["stalls"], (stalled, metrics["service"]["stalls"])  # a live stall the report saw too


def check_commit_latency_against_the_records(scrapes: list[tuple[float, dict[str, list[PromSample]]]], run_dir: Path,
                                             report: dict[str, Any]) -> None:  # fmt: skip
    """The driver's histogram counts every valid item's first commit it saw, in the order it saw them, and
    its records file keeps each one's due and commit times: the first N commits of the records (by the
    time seen) must give the scrape's N, its sum and every bucket exactly. The report's own
    ``commit_latency.count`` is another quantity (only items due in the steady window), so it is at most
    the records' total."""
    records = sorted((r for r in read_records(run_dir / "records-0.bin") if r.expect == Expect.COMMIT and r.commit_ns),
                     key=lambda r: r.commit_ns)  # fmt: skip
    assert report["metrics"]["throughput"]["commit_latency"]["count"] <= len(records)
    for _, families in scrapes:
        latency = [s for s in families["popbench_commit_latency_seconds"] if s.labels["driver"] == "driver-0"]
        if not latency:
            continue
        count = int(next(s.value for s in latency if s.name.endswith("_count")))
        seen = records[:count]
        buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        for record in seen:
            buckets[latency_bucket((record.commit_ns - record.due_ns) / 1e9)] += 1
        expected = dict(cumulative(buckets))
        scraped = {s.labels["le"]: s.value for s in latency if s.name.endswith("_bucket")}
        total_s = sum(r.commit_ns - r.due_ns for r in seen) / 1e9
        scraped_sum = next(s.value for s in latency if s.name.endswith("_sum"))
        assert count <= len(records), (count, len(records))
        assert scraped == expected and scraped_sum == pytest.approx(total_s), (count, scraped, expected, scraped_sum, total_s)


def read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    while not seen or needle not in seen[-1]:
        line = proc.stdout.readline()
        assert line, "".join(seen)
        seen.append(line)
    return seen


def test_every_metric_the_grafana_dashboard_queries_is_one_metrics_serves() -> None:
    root = Path(__file__).resolve().parent.parent
    dashboard = orjson.loads((root / "docs" / "grafana" / "popbench.json").read_bytes())
    queried = {m for panel in dashboard["panels"] for t in panel["targets"] for m in re.findall(r"popbench_\w+", t["expr"])}
    served = set(re.findall(r'"(popbench_\w+)"', (root / "harness" / "observe" / "prometheus.py").read_text()))
    suffixes = ("_total", "_sum", "_count", "_bucket")
    unknown = {m for m in queried if m not in served and not any(m.endswith(s) and m[: -len(s)] in served for s in suffixes)}
    assert not unknown, unknown
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Health", "Active nodes", "Nodes down vs f", "Rounds (blocks) completed", "Mempool"} <= titles
