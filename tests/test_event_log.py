"""The node's structured event log (popbench/events.py): what a stall's post-mortem reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from popbench import events as events_module
from popbench.events import EventLog, events_path, read_events


def test_each_event_is_one_json_line_with_the_wall_clock_and_its_fields(tmp_path: Path) -> None:
    log = EventLog(events_path(tmp_path, 3), wall_ns=lambda: 42)
    log.emit("view-entered", height=7, view=2, leader=1, carries_lock=False)
    log.emit("timer-fired", height=7, view=2, asked_for=None)
    log.close()
    rows = read_events(tmp_path / "node-3.events.jsonl")
    assert rows == [
        {"t_ns": 42, "event": "view-entered", "height": 7, "view": 2, "leader": 1, "carries_lock": False},
        {"t_ns": 42, "event": "timer-fired", "height": 7, "view": 2, "asked_for": None},
    ]


def test_a_line_cut_short_by_a_kill_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "node-0.events.jsonl"
    path.write_bytes(b'{"t_ns":1,"event":"commit","height":1}\n{"t_ns":2,"ev')
    assert [row["event"] for row in read_events(path)] == ["commit"]


def test_a_full_log_says_so_once_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "MAX_EVENTS", 2)
    log = EventLog(tmp_path / "e.jsonl", wall_ns=lambda: 0)
    for height in range(5):
        log.emit("commit", height=height)
    assert [row["event"] for row in read_events(tmp_path / "e.jsonl")] == ["commit", "commit", "log-full"]


def test_a_failing_disk_stops_the_log_not_the_caller(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.jsonl", wall_ns=lambda: 0)
    assert log._file is not None
    log._file.close()
    log._file = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - every write to it fails with ENOSPC
    log.emit("commit", height=1)
    log.emit("commit", height=2)
    assert log._file is None and log.written == 0
