"""`popbench monitor` against a real 4-validator network (harness/monitor): Textual's pilot drives the
app and the tests read its screen as a person would; a stopped and a killed node show as down without
holding up the refresh, and q quits."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from harness.monitor.app import MonitorApp
from harness.monitor.targets import from_addresses, from_run_dir
from popbench.wire import ItemKind
from tests.cluster import LocalCluster
from tests.test_harness_run import assert_passed, finish, popbench, wait_for_line, write_profile
from tests.test_pbft_network import make_proofs

pytestmark = pytest.mark.timeout(240)
INTERVAL_S = 0.5
SCREEN = (132, 44)


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:  # type: ignore[misc]
    made = LocalCluster(tmp_path, 4)
    made.start()
    yield made
    for proc in made.procs.values():
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a node a test stopped must be able to hear SIGTERM
    made.stop()


@contextlib.asynccontextmanager
async def steady_load(cluster: LocalCluster, per_tick: int = 40, tick_s: float = 0.2) -> AsyncIterator[None]:
    """Proofs submitted to node 1 at a steady pace, so the network keeps committing blocks."""
    client = await cluster.client(1)

    async def feed() -> None:
        for tick in range(10_000):
            for index, proof in enumerate(make_proofs(cluster, per_tick, start=tick * per_tick)):
                client.submit(tick * per_tick + index, ItemKind.PROOF, proof.encode())
            await asyncio.sleep(tick_s)  # the load's pace

    task = asyncio.ensure_future(feed())
    try:
        yield
    finally:
        task.cancel()
        client.close()


async def until(app: MonitorApp, pilot: object, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the screen:\n{app.screen_text()}")
        await pilot.pause(0.1)  # type: ignore[attr-defined]


def test_the_screen_shows_health_the_latency_and_a_ranked_leaderboard_with_rewards(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        await cluster.wait_connected()
        target = await from_addresses([cluster.address(0)], cluster.genesis)  # the rest found through PEERS
        assert sorted(target.nodes) == [0, 1, 2, 3]
        app = MonitorApp(target, INTERVAL_S)
        async with steady_load(cluster), app.run_test(size=SCREEN) as pilot:
            await until(app, pilot, lambda: app.chain.blocks_read >= 8 and len(app.live.latency_s) >= 3
                        and all(s.rewards for s in app.chain.standings.values()), 90, "blocks, latency and rewards")  # fmt: skip
            await pilot.pause(INTERVAL_S)
            screen = app.screen_text()
            assert "HEALTHY" in screen and "active nodes  4 / 4" in screen and "down 0 vs f = 1  (quorum 3)" in screen
            assert "consensus latency (last" in screen and " avg " in screen and " min " in screen and " max " in screen
            assert "service level   HOLDS " in screen and "<= L 2,000 ms" in screen and "links least 100 % >= 100 %" in screen, screen
            assert "mempool  total " in screen and "proofs committed now " in screen and "rounds completed " in screen
            board = [line for line in screen.splitlines() if re.search(r"│ \S+ +validator \d", line)]
            ranks = [line.split("│")[1].split()[0] for line in board]
            assert ranks[:3] == ["★1", "★2", "★3"] and ranks[3] == "4", screen
            rounds = [int(line.split("│")[1].split()[3].replace(",", "")) for line in board]
            assert rounds == sorted(rounds, reverse=True) and rounds[0] > 0
            rewards = [int(line.split("│")[1].split()[-1].replace(",", "")) for line in board]
            assert all(r > 0 for r in rewards)  # every validator earns validator_reward per block
            for node in range(4):
                assert re.search(rf"│ {node} +up ", screen), screen
            await pilot.press("q")
        assert not app.is_running and not app.collector._clients  # q quit and closed every connection

    asyncio.run(scenario())


def test_a_stopped_and_a_killed_node_show_as_down_and_never_hold_up_the_refresh(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        await cluster.wait_connected()
        target = await from_addresses([cluster.address(n) for n in range(4)], cluster.genesis)
        app = MonitorApp(target, INTERVAL_S)
        async with steady_load(cluster), app.run_test(size=SCREEN) as pilot:
            await until(app, pilot, lambda: len(app.live.up) == 4 and app.live.height > 0, 60, "every node up")
            cluster.procs[3].send_signal(signal.SIGSTOP)  # alive, but answers nothing: the worst case for a poller
            began, refreshes = time.monotonic(), app.refreshes
            await until(app, pilot, lambda: app.refreshes >= refreshes + 6, 20, "six refreshes")
            took = time.monotonic() - began
            assert took < 6 * INTERVAL_S + 2.0, f"6 refreshes took {took:.1f} s with a node stopped"
            screen = app.screen_text()
            assert "DEGRADED" in screen and "active nodes  3 / 4" in screen and "1 node down <= f = 1" in screen
            assert re.search(r"│ 3 +silent ", screen) and "node 3 down: no answer by the deadline" in screen, screen
            height = app.live.height
            await until(app, pilot, lambda: app.live.height > height, 30, "blocks from the three live nodes")
            cluster.kill(2)
            await until(app, pilot, lambda: "node 2 down: its process is gone" in app.screen_text(), 10, "node 2 down")
            screen = app.screen_text()
            assert "CRITICAL" in screen and "2 down > f = 1: no quorum" in screen and re.search(r"│ 2 +down ", screen)
            await pilot.press("ctrl+c")
        assert not app.is_running

    asyncio.run(scenario())


def test_the_monitor_attaches_to_a_run_by_its_directory_and_reads_cpu_and_memory_by_pid(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, duration=6.0, rate=150.0)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(popbench("run", "--profile", str(profile), "--output", str(run_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen = wait_for_line(proc, "load window:")

    async def watch() -> str:
        target = from_run_dir(run_dir)  # nodes.json, pids.json, genesis.json
        assert sorted(target.pids) == [0, 1, 2, 3] and target.f == 1
        app = MonitorApp(target, INTERVAL_S)
        async with app.run_test(size=SCREEN) as pilot:
            await until(app, pilot, lambda: app.refreshes >= 4 and app.live.height > 0 and len(app.live.up) == 4
                        and "p99 " in app.screen_text(), 20, "the run's nodes and its drivers' p99")  # fmt: skip
            screen = app.screen_text()
            await pilot.press("q")
        return screen

    screen = asyncio.run(watch())
    code, output = finish(proc)
    assert_passed(code, run_dir, "".join(seen) + output)
    assert "active nodes  4 / 4" in screen and "HEALTHY" in screen, screen
    assert re.search(r"│ 3 +up +\d+ .* \d+ % +\d+ MiB", screen), screen  # CPU and memory by pid, from pids.json
    assert re.search(r"p99 [\d,]+ ms (<=|>) L 2,000 ms", screen), screen  # the run's drivers' p99 (service-live.json)
    assert "delivery " in screen and "links least " in screen, screen
