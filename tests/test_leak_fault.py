"""The injected leak (popbench/faults.py, ``[[faults]] kind = "leak"``): memory allocated, written and held
at a rate, in the unit and in a real node process told by SIGUSR1, as the harness tells it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from harness.kinds import FaultKind
from harness.profile import profile_from_dict
from harness.run.fault_net import NetFaults
from popbench.errors import ConfigError
from popbench.events import events_path
from popbench.faults import LeakFaults, NodeFaults, faults_path, write_faults
from tests.cluster import LocalCluster

LEAK_TEST_MIB_PER_MIN = 60.0  # 1 MiB/s: a real node's USS must show it within a slow CI machine's patience
LEAK_TEST_GROWTH_MIB = 10.0  # an idle one-node network grows far less than this in the deadline
LEAK_DEADLINE_S = 120.0


def test_a_leak_allocates_at_its_rate_and_stops_when_the_rate_is_cleared() -> None:
    now = [0.0]
    leak = LeakFaults(clock=lambda: now[0])
    leak.set_rate(2.0)  # MiB/min
    now[0] = 30.0
    assert leak.top_up() == 2**20 and leak.held_bytes == 2**20
    now[0] = 45.0
    leak.top_up()
    assert leak.held_bytes == 2**20 * 3 // 2
    leak.set_rate(0.0)
    now[0] = 600.0
    assert leak.top_up() == 0 and leak.held_bytes == 2**20 * 3 // 2  # what leaked stays held
    assert all(chunk.count(0xA5) == len(chunk) for chunk in leak.held)  # written, so really resident


def test_a_leak_in_the_profile_is_the_targets_share_until_it_heals(tmp_path: Path) -> None:
    profile = profile_from_dict({"network": {"nodes": 4}, "faults": [{"at_s": 5.0, "kind": "leak", "node": 2, "mib_per_min": 3.0}]}, "t")
    (leak,) = profile.faults
    assert (leak.kind, leak.node, leak.mib_per_min) == (FaultKind.LEAK, 2, 3.0)
    default = profile_from_dict({"faults": [{"at_s": 5.0, "kind": "leak", "node": 0}]}, "t").faults[0]
    assert default.mib_per_min == 1.0
    with pytest.raises(ConfigError) as refused:
        profile_from_dict({"faults": [{"at_s": 5.0, "kind": "leak", "node": 0, "mib_per_min": 0}]}, "t")
    assert refused.value.key == "faults[0].mib_per_min", refused.value
    net = NetFaults(tmp_path, 4, dict, None, "not root")
    assert net.apply(0, leak, [2])["mechanism"] == "transport"
    node = NodeFaults()
    node.load(faults_path(tmp_path, 2))  # what node 2 reads from the file the harness wrote
    assert node.leak.mib_per_min == 3.0 and node.active
    bystander = NodeFaults()
    bystander.load(faults_path(tmp_path, 1))
    assert not bystander.leak.active
    assert net.heal(0)
    node.load(faults_path(tmp_path, 2))
    assert not node.leak.active


def test_the_leak_fault_makes_a_real_nodes_uss_grow(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 1)
    cluster.start()
    try:
        proc = psutil.Process(cluster.procs[0].pid)
        data_dir = tmp_path / "node-0"
        events = events_path(data_dir, 0)
        _wait_for(lambda: asyncio.run(cluster.status(0)) is not None, "the node to answer STATUS", cluster)
        before_mib = _uss_mib(proc)
        write_faults(faults_path(data_dir, 0), {"leak": {"mib_per_min": LEAK_TEST_MIB_PER_MIN}})
        told = time.monotonic()
        cluster.procs[0].send_signal(signal.SIGUSR1)
        _wait_for(lambda: events.exists() and _loaded(events), "the node's faults-loaded event", cluster)
        _wait_for(lambda: _uss_mib(proc) - before_mib >= LEAK_TEST_GROWTH_MIB, f"USS to grow {LEAK_TEST_GROWTH_MIB} MiB", cluster)
        elapsed_s = time.monotonic() - told
        grown = _uss_mib(proc) - before_mib
        implied = LEAK_TEST_MIB_PER_MIN * elapsed_s / 60
        # loosely: not far beyond what the rate allows in that time (the node's own growth is a few MiB at most)
        assert grown <= implied + 8.0, f"USS grew {grown:.1f} MiB in {elapsed_s:.1f} s; the rate implies {implied:.1f} MiB"
    finally:
        cluster.stop()


def _loaded(events: Path) -> bool:
    return any(json.loads(line).get("event") == "faults-loaded" for line in events.read_text().splitlines() if line.strip())


def _uss_mib(proc: psutil.Process) -> float:
    return float(proc.memory_full_info().uss) / 2**20


def _wait_for(condition: Callable[[], bool], what: str, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + LEAK_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {LEAK_DEADLINE_S:.0f} s for {what}; node log:\n{cluster.log(0)[-3000:]}")
        time.sleep(0.2)  # polling a condition with a deadline, not standing in for one
