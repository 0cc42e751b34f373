"""/metrics in the Prometheus text format (harness/observe/prometheus.py): scraped from a live node and a
live run, parsed with prometheus_client's own parser; the monitor attaches to the same run by its
directory. And the exposition's arithmetic on samples with known answers."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import psutil
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from harness.observe.live import LiveState
from harness.observe.prometheus import SampleMetrics
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
    time.sleep(3.0)  # a few samples into the window
    families = scrape(port)
    assert listens_on_loopback_only(proc.pid, port)
    code, output = finish(proc)
    assert_passed(code, run_dir, "".join(seen) + output)
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
    report = orjson.loads((run_dir / "report.json").read_bytes())
    committed = report["metrics"]["throughput"]["commit_latency"]["count"]
    assert count <= committed + 1, (count, committed)  # a scrape mid-run saw part of what the report counts at the end
    assert (run_dir / "nodes.json").exists()  # where the nodes listen, for popbench monitor RUN_DIR


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
