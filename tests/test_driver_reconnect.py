"""A load driver keeps its nodes through kills, wipes and restarts (harness/load/drivers.py).

The chaos profile wiped both nodes a driver had subscribed to for commit notifications; from then on it
saw no commit, so a network committing 99 blocks a second was reported stalled for 245 s with 58 %
delivery. Real node processes: the driver must move its subscription to a live node, settle the items a
dead node never answered, and take the node back once it restarts.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from harness.load import workload
from harness.load.drivers import SUBSCRIPTIONS, Driver, DriverSpec
from harness.load.records import NO_ANSWER
from popbench import crypto
from popbench.model.proof import Proof
from popbench.wire import RejectReason
from tests.cluster import LocalCluster

pytestmark = pytest.mark.timeout(180)
TIMEOUT_S = 45.0
OWNER = crypto.derive_key("driver-reconnect", 0)


def make_driver(cluster: LocalCluster, items: int) -> Driver:
    bits = cluster.genesis.params.min_work_bits
    proofs = [Proof.create(OWNER, cluster.chain_id, i.to_bytes(8, "big"), bits, 7, time.time_ns()) for i in range(items)]
    plan = [workload.Planned(0, p.encode(), p.id, workload.Expect.COMMIT) for p in proofs]
    spec = DriverSpec(index=0, drivers=1, nodes=[cluster.address(n) for n in range(cluster.n)], chain_id=cluster.chain_id,
                      slots=[0] * items, start_ns=time.time_ns(), work_bits=bits, payload_bytes=0, invalid_fraction=0.0,
                      invalid_kinds=[], seed=1, run_tag=1)  # fmt: skip
    return Driver(spec, plan)


async def until(condition, what: str, driver: Driver) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {len(driver.clients)} clients, subscribed to "
                                 f"{driver.subscribed_to}, outstanding {driver.outstanding}")  # fmt: skip
        await asyncio.sleep(0.1)  # polling period of a condition with a deadline


def test_a_driver_moves_its_subscription_off_a_killed_node_and_takes_it_back_after_a_restart(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 4)
    cluster.start()
    subscribed_nodes: list[set[int]] = []
    port_of = {cluster.ports[n]: n for n in range(4)}

    def subscribed(driver: Driver) -> set[int]:
        return {port_of[port] for _, port in driver.subscribed_to}

    async def scenario() -> Driver:
        await cluster.wait_connected()
        driver = make_driver(cluster, 3)
        await driver.connect()
        subscribed_nodes.append(subscribed(driver))
        for index in range(3):
            driver._send(index)
        await until(lambda: driver.outstanding == 0, "the three items committed", driver)
        first = sorted(subscribed(driver))
        for node in first:  # the chaos run's case: every subscribed node goes down
            cluster.kill(node)
        await until(lambda: len(driver.clients) == 2, "the driver to notice both kills", driver)
        subscribed_nodes.append(subscribed(driver))
        for node in first:
            cluster.start(node)
        await until(lambda: len(driver.clients) == 4, "the driver to take both restarted nodes back", driver)
        subscribed_nodes.append(subscribed(driver))
        driver.close()
        return driver

    driver = run_scenario(cluster, scenario)
    first, after_kill, after_restart = subscribed_nodes
    assert len(first) == SUBSCRIPTIONS and len(after_kill) == SUBSCRIPTIONS and not first & after_kill, subscribed_nodes
    assert len(after_restart) == SUBSCRIPTIONS, subscribed_nodes
    assert [r.reason for r in driver.records] == [RejectReason.ACCEPTED] * 3 and all(r.commit_ns for r in driver.records)


def test_items_a_dead_node_never_answered_are_settled_as_unanswered(tmp_path: Path) -> None:
    """Node 0 runs alone and is killed with items sent to it: they are settled as NO_ANSWER, so a drain
    does not wait for them, and they were never acknowledged."""
    cluster = LocalCluster(tmp_path, 4)
    cluster.start(0)

    async def scenario() -> Driver:
        await cluster.wait_until(lambda s: s[0] is not None, TIMEOUT_S, [0], "node 0 up")
        driver = make_driver(cluster, 2)
        driver.spec.nodes = [cluster.address(0)]
        await driver.connect()
        cluster.procs[0].send_signal(signal.SIGSTOP)  # the node cannot answer
        for index in range(2):
            driver._send(index)
        cluster.kill(0)
        await until(lambda: driver.outstanding == 0, "the unanswered items settled", driver)
        driver.close()
        return driver

    driver = run_scenario(cluster, scenario)
    assert [r.reason for r in driver.records] == [NO_ANSWER, NO_ANSWER]


def run_scenario(cluster: LocalCluster, scenario: Callable[[], Coroutine[Any, Any, Driver]]) -> Driver:
    try:
        return asyncio.run(scenario())
    finally:
        cluster.stop(check=False)
