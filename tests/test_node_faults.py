"""What a node emulates in itself (popbench/faults.py): partitions, shaped links, clocks and disks."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from popbench.errors import ConfigError, StorageError
from popbench.faults import RETRANSMIT_S, NodeFaults, Shape, faults_path, write_faults
from popbench.pop.clock import LoopClock
from popbench.store import Store, node_database


def test_a_blocked_peer_gets_nothing_and_a_shaped_link_holds_by_delay_jitter_loss_and_rate() -> None:
    faults = NodeFaults()
    faults.links.blocked = frozenset({2})
    faults.links.shapes = {"*": Shape(delay_ms=100.0), "3": Shape(delay_ms=10.0, jitter_ms=5.0, loss=1.0, rate_kbit=8.0)}
    faults.links.rng = random.Random(1)
    assert faults.links.hold_s(2, 100) is None
    assert faults.links.hold_s(1, 100) == pytest.approx(0.1)
    held = faults.links.hold_s(3, 1000)  # 10-15 ms, a retransmission (loss 1.0), 1000 bytes at 8 kbit/s = 1 s
    assert held is not None and 0.010 + RETRANSMIT_S + 1.0 <= held <= 0.015 + RETRANSMIT_S + 1.0


def test_the_file_the_harness_writes_is_what_the_node_applies_and_garbage_is_refused(tmp_path: Path) -> None:
    path = faults_path(tmp_path, 4)
    write_faults(path, {"blocked": [1, 2], "clock": {"offset_ms": -5000, "drift_ppm": 1000}, "disk": {"mode": "slow", "delay_ms": 5}})
    faults = NodeFaults()
    faults.load(path)
    assert faults.links.blocked == {1, 2} and faults.clock.offset_ms == -5000 and faults.disk.mode == "slow" and faults.active
    assert abs(faults.clock.wall_ns() - (time.time_ns() - 5_000_000_000)) < 1_000_000_000
    path.write_text("[1, 2")
    with pytest.raises(ConfigError):
        faults.load(path)


@pytest.mark.parametrize("mode", ["fail", "full"])
def test_a_failing_disk_refuses_the_write_and_leaves_the_database_as_it_was(tmp_path: Path, mode: str) -> None:
    faults = NodeFaults()
    with Store(node_database(tmp_path, 0)) as store:
        store.before_write = faults.disk.before_write
        store.save_committed(1, bytes(32), 0, b"block 1", [b"i" * 32], [], bytes(32))
        faults.disk.mode = mode
        with pytest.raises(StorageError, match="disk fault"):
            store.save_committed(2, b"\x01" * 32, 0, b"block 2", [b"j" * 32], [], bytes(32))
        assert store.head() == (1, bytes(32)) and not store.has_item(b"j" * 32)
        faults.disk.mode = ""
        store.save_committed(2, b"\x01" * 32, 0, b"block 2", [b"j" * 32], [], bytes(32))
        assert store.head() == (2, b"\x01" * 32)


def test_a_slow_disk_waits_before_each_write(tmp_path: Path) -> None:
    faults = NodeFaults()
    waited: list[float] = []
    faults.disk.sleep = waited.append
    faults.disk.mode, faults.disk.delay_ms = "slow", 50.0
    with Store(node_database(tmp_path, 0)) as store:
        store.before_write = faults.disk.before_write
        store.save_committed(1, bytes(32), 0, b"block 1", [], [], bytes(32))
    assert waited == [0.05]


def test_a_drifting_clock_never_goes_back_when_its_drift_changes() -> None:
    clock = LoopClock()
    readings = [clock.now_ns()]
    for drift in (500_000.0, -400_000.0, 0.0):
        clock.set_drift(drift)
        readings.append(clock.now_ns())
        time.sleep(0.01)
        readings.append(clock.now_ns())
    assert readings == sorted(readings)
