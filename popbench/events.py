"""A node's structured event log: one JSON line per consensus event, so a stall explains itself.

The engine reports what it decided and why (view entered, timer fired, VIEW-CHANGE sent and received,
NEW-VIEW sent, received or refused, commit, proposal refused); the node writes each as a line
``{"t_ns": <wall clock>, "event": <name>, ...fields}`` to ``<data dir>/node-<id>.events.jsonl``, which
the run keeps beside the node's database and the report links. The format is docs/monitoring.md's.

Events are rare next to messages (a few per block), so each is written at once: a node killed with
SIGKILL loses none of what it logged before it died. A log is bounded by ``MAX_EVENTS`` lines; past it
the log says so once and stops, rather than fill the disk on a 24-hour run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

import orjson

MAX_EVENTS = 2_000_000  # about 200 MB of lines: a day at ~20 events per second

Field = int | float | str | bool | None | list[int]


class EventSink(Protocol):
    """Where the engine's events go."""

    def emit(self, event: str, **fields: Field) -> None: ...


class NoEvents:
    """The sink of an engine nobody listens to (tests, the simulation unless it asks)."""

    def emit(self, event: str, **fields: Field) -> None:
        return None


class EventLog:
    """Appends each event to a JSON-lines file as it happens."""

    def __init__(self, path: Path, wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._wall_ns = wall_ns
        self._file: IO[bytes] | None = path.open("ab", buffering=0)
        self.written = 0

    def emit(self, event: str, **fields: Field) -> None:
        if self._file is None:
            return
        if self.written >= MAX_EVENTS:
            self._write({"t_ns": self._wall_ns(), "event": "log-full", "max_events": MAX_EVENTS})
            self.close()
            return
        self._write({"t_ns": self._wall_ns(), "event": event, **fields})

    def _write(self, row: dict[str, Field]) -> None:
        assert self._file is not None
        try:
            self._file.write(orjson.dumps(row) + b"\n")
        except OSError:
            self.close()  # a full or failing disk stops the log, never the node
            return
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MemoryEvents:
    """Keeps events in a list (the simulation's and tests' sink); ``clock_ns`` stamps them."""

    def __init__(self, clock_ns: Callable[[], int]) -> None:
        self._clock_ns = clock_ns
        self.rows: list[dict[str, Field]] = []

    def emit(self, event: str, **fields: Field) -> None:
        self.rows.append({"t_ns": self._clock_ns(), "event": event, **fields})


def events_path(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"node-{node_id}.events.jsonl"


def read_events(path: Path) -> list[dict[str, Field]]:
    """A log's rows; a last line cut short by a kill is skipped."""
    rows: list[dict[str, Field]] = []
    if not path.exists():
        return rows
    for line in path.read_bytes().splitlines():
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return rows
