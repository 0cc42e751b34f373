"""Faults a node emulates in itself when the harness asks (docs/faults.md, "Transport mechanism").

Where the kernel cannot be used (not root, no iptables/tc, nodes sharing one address) the harness
writes what a node should suffer to ``<data dir>/node-<id>.faults.json`` and sends it SIGUSR1; the
node reloads this file and applies it at once:

- ``blocked``: validator ids cut off both ways (each side of a partition lists the other): their HELLO
  is not answered, and an established link holds every frame each way until the heal, as TCP keeps
  retransmitting across a partition (a link cut off for more than ``CUT_OFF_LIMIT_FRAMES`` frames
  closes instead, as TCP gives up on a peer that stays unreachable);
- ``links``: per peer (``"*"``: every peer) a one-way ``delay_ms`` with uniform ``jitter_ms``, a ``loss``
  share, and a bandwidth cap ``rate_kbit``. Links are TCP, so a lost packet is not a lost message: the
  emulation holds a "lost" frame for a retransmission timeout (``RETRANSMIT_S``, Linux's minimum RTO)
  instead. Frames on one link are never reordered;
- ``clock``: the wall clock's ``offset_ms`` (block timestamps) and ``drift_ppm`` (the engine's timers
  run that much fast, or slow when negative);
- ``disk``: ``slow`` (each database write waits ``delay_ms`` first), ``fail`` (writes raise an I/O
  error) or ``full`` (writes fail as on a full disk). A failed write rolls back its transaction and
  leaves the database as it was; the node carries on serving and catches up once writes work again;
- ``leak``: ``mib_per_min``, memory the node allocates, fills (so every page is really resident) and
  holds at that rate from the moment it reads the file: an injected leak the soak's growth verdict must
  catch (docs/metrics.md, "The growth verdict"). A file without it stops the allocation; what was
  allocated stays held until the process ends, as a real leak's memory does.

An empty or missing file means no fault. The format is plain JSON so an operator can use it by hand.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from popbench.errors import ConfigError, StorageError

RETRANSMIT_S = 0.2  # Linux's minimum TCP retransmission timeout: what a lost packet costs on a live link
ANY_PEER = "*"


@dataclass(frozen=True)
class Shape:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_kbit: float = 0.0


@dataclass
class LinkFaults:
    """Which peers are cut off and how each link is shaped; ``rng`` decides jitter and loss."""

    blocked: frozenset[int] = frozenset()
    shapes: dict[str, Shape] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def active(self) -> bool:
        return bool(self.blocked or self.shapes)

    def blocks(self, peer_id: int) -> bool:
        return peer_id in self.blocked

    def hold_s(self, peer_id: int, size: int) -> float | None:
        """How long to hold a frame of ``size`` bytes to ``peer_id`` (None: until the heal; the peer is cut off)."""
        if peer_id in self.blocked:
            return None
        shape = self.shapes.get(str(peer_id)) or self.shapes.get(ANY_PEER)
        if shape is None:
            return 0.0
        hold = (shape.delay_ms + self.rng.uniform(0.0, shape.jitter_ms)) / 1000
        if shape.loss and self.rng.random() < shape.loss:
            hold += RETRANSMIT_S
        if shape.rate_kbit:
            hold += size * 8 / (shape.rate_kbit * 1000)
        return hold


@dataclass
class ClockFaults:
    offset_ms: float = 0.0
    drift_ppm: float = 0.0

    def wall_ns(self) -> int:
        return time.time_ns() + round(self.offset_ms * 1e6)

    def timer_s(self, delay_s: float) -> float:
        """A timer asked for ``delay_s`` fires after this long on a clock that drifts."""
        return delay_s / (1 + self.drift_ppm / 1e6)


@dataclass
class DiskFaults:
    mode: str = ""  # "", "slow", "fail", "full"
    delay_ms: float = 0.0
    sleep: Callable[[float], None] = time.sleep

    def before_write(self) -> None:
        """Called before each database transaction that writes: a slow disk blocks, a bad one raises."""
        if self.mode == "slow":
            self.sleep(self.delay_ms / 1000)  # blocking on purpose: a slow disk stalls the process
        elif self.mode == "fail":
            raise StorageError("disk fault: input/output error (emulated)")
        elif self.mode == "full":
            raise StorageError("disk fault: database or disk is full (emulated)")


LEAK_TICK_S = 1.0  # a leaking node tops its held memory up to the rate this often
LEAK_CHUNK_BYTES = 1 << 20  # ... in allocations of at most this much


@dataclass
class LeakFaults:
    """Memory allocated and held on purpose at ``mib_per_min`` since the rate was set (0: not leaking)."""

    mib_per_min: float = 0.0
    clock: Callable[[], float] = time.monotonic
    held: list[bytes] = field(default_factory=list)
    held_bytes: int = 0
    _since: float = 0.0  # clock() when the current rate began
    _base: int = 0  # bytes held then

    @property
    def active(self) -> bool:
        return self.mib_per_min > 0

    def set_rate(self, mib_per_min: float) -> None:
        if mib_per_min < 0:
            raise ConfigError(f"leak.mib_per_min must be at least 0, got {mib_per_min}")
        if mib_per_min != self.mib_per_min:
            self.top_up()  # what the old rate owed so far, then the new rate from now
            self.mib_per_min, self._since, self._base = mib_per_min, self.clock(), self.held_bytes

    def top_up(self) -> int:
        """Allocate and fill what the rate owes by now; the bytes added."""
        if not self.active:
            return 0
        due = self._base + int(self.mib_per_min * 2**20 / 60 * max(0.0, self.clock() - self._since))
        added = 0
        while self.held_bytes < due:
            chunk = min(due - self.held_bytes, LEAK_CHUNK_BYTES)
            self.held.append(b"\xa5" * chunk)  # written, not just reserved: the pages count in USS
            self.held_bytes += chunk
            added += chunk
        return added


@dataclass
class NodeFaults:
    """Everything the harness asked this node to suffer; reloaded from its file on SIGUSR1."""

    links: LinkFaults = field(default_factory=LinkFaults)
    clock: ClockFaults = field(default_factory=ClockFaults)
    disk: DiskFaults = field(default_factory=DiskFaults)
    leak: LeakFaults = field(default_factory=LeakFaults)

    @property
    def active(self) -> bool:
        return self.links.active or bool(self.clock.offset_ms or self.clock.drift_ppm or self.disk.mode) or self.leak.active

    def load(self, path: Path) -> None:
        """Replace the current faults with the file's (missing or empty: none)."""
        data = _read(path)
        links = data.get("links", {})
        self.links.blocked = frozenset(int(peer) for peer in data.get("blocked", ()))
        self.links.shapes = {str(peer): Shape(**shape) for peer, shape in links.items()}
        clock = data.get("clock", {})
        self.clock.offset_ms, self.clock.drift_ppm = float(clock.get("offset_ms", 0)), float(clock.get("drift_ppm", 0))
        disk = data.get("disk", {})
        self.disk.mode, self.disk.delay_ms = str(disk.get("mode", "")), float(disk.get("delay_ms", 0))
        self.leak.set_rate(float(data.get("leak", {}).get("mib_per_min", 0)))

    def describe(self) -> dict[str, Any]:
        return {"blocked": sorted(self.links.blocked), "links": sorted(self.links.shapes), "clock_offset_ms": self.clock.offset_ms,
                "drift_ppm": self.clock.drift_ppm, "disk": self.disk.mode, "leak_mib_per_min": self.leak.mib_per_min,
                "leaked_bytes": self.leak.held_bytes}  # fmt: skip


def faults_path(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"node-{node_id}.faults.json"


def write_faults(path: Path, spec: dict[str, Any]) -> None:
    """The harness's side: write atomically (a node reading mid-write must see the old or the new file)."""
    partial = path.with_suffix(".tmp")
    partial.write_bytes(orjson.dumps(spec))
    partial.replace(path)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"{path}: not JSON: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    return data
