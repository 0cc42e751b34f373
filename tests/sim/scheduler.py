"""The seeded adversary: when messages arrive (if at all), which links are cut, when timers fire.

Until the schedule stabilises it delays every message by a random amount (which reorders them),
makes some links ten times slower than the rest ("clogged"), drops and duplicates some, cuts the
network into two sides for a while, cuts off a node that has just committed (a nemesis reacting to
the run), and fires some timers early or late; every partition heals by stabilisation. From
``stable_at_ns`` on, the network is synchronous: every message arrives within
``STABLE_MAX_DELAY_NS`` and timers fire on time. Liveness is only judged in that stable phase.
Every decision comes from the schedule's one ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from popbench.wire import Message, Ping

NS_PER_MS = 1_000_000
STABLE_MIN_DELAY_NS = 1 * NS_PER_MS
STABLE_MAX_DELAY_NS = 10 * NS_PER_MS
EARLY_FACTOR = (0.05, 0.7)  # a skewed timer fires after this fraction of what was asked ...
LATE_FACTOR = (1.5, 4.0)  # ... or this multiple
CLOG_FACTOR = 10  # a clogged link (FoundationDB's term) is this much slower than the others
ISOLATION_NS = (100 * NS_PER_MS, 2000 * NS_PER_MS)
RECONNECT_MIN_NS = 50 * NS_PER_MS  # a broken link comes back after this long, or later if still cut
RECONNECT_MAX_NS = 500 * NS_PER_MS


@dataclass(frozen=True)
class Partition:
    """Between ``start_ns`` and ``end_ns`` no message crosses between ``side`` and the other nodes."""

    start_ns: int
    end_ns: int
    side: frozenset[int]

    def cuts(self, now_ns: int, src: int, dst: int) -> bool:
        return self.start_ns <= now_ns < self.end_ns and (src in self.side) != (dst in self.side)


@dataclass(frozen=True)
class Chaos:
    """How hostile the network is before ``stable_at_ns``."""

    drop_p: float
    duplicate_p: float
    max_delay_ns: int
    timer_skew_p: float
    partitions: tuple[Partition, ...]
    clogged: frozenset[tuple[int, int]]  # directed links that are CLOG_FACTOR times slower until stable
    isolate_after_commit_p: float  # chance that a node which just committed is cut off for a while
    stable_at_ns: int

    @classmethod
    def draw(cls, rng: random.Random, nodes: int, stable_at_ns: int) -> Chaos:
        drop_p = rng.choice((0.0, 0.0, 0.02, 0.1, 0.3))
        duplicate_p = rng.choice((0.0, 0.05, 0.2))
        max_delay_ns = rng.choice((2, 20, 100, 400)) * NS_PER_MS
        timer_skew_p = rng.choice((0.0, 0.2, 0.6))
        partitions = tuple(_draw_partition(rng, nodes, stable_at_ns) for _ in range(rng.choice((0, 0, 1, 2, 3))))
        clog_p = rng.choice((0.0, 0.0, 0.15, 0.4))
        clogged = frozenset((a, b) for a in range(nodes) for b in range(nodes) if a != b and rng.random() < clog_p)
        isolate_p = rng.choice((0.0, 0.0, 0.3, 0.8))
        return cls(drop_p, duplicate_p, max_delay_ns, timer_skew_p, partitions, clogged, isolate_p, stable_at_ns)

    def summary(self) -> str:
        cuts = ", ".join(f"{sorted(p.side)}|rest {p.start_ns / 1e9:.2f}-{p.end_ns / 1e9:.2f}s" for p in self.partitions)
        return (f"drop {self.drop_p:.2f}, duplicate {self.duplicate_p:.2f}, delay <= {self.max_delay_ns // NS_PER_MS} ms, "
                f"timer skew {self.timer_skew_p:.1f}, partitions [{cuts}], clogged {sorted(self.clogged)}, "
                f"isolate after commit {self.isolate_after_commit_p:.1f}, "
                f"stable at {self.stable_at_ns / 1e9:.2f}s")  # fmt: skip


def _draw_partition(rng: random.Random, nodes: int, stable_at_ns: int) -> Partition:
    start_ns = rng.randrange(0, stable_at_ns)
    end_ns = rng.randrange(start_ns, stable_at_ns + 1)  # healed by stabilisation at the latest
    side = frozenset(rng.sample(range(nodes), rng.randint(1, nodes // 2)))
    return Partition(start_ns, end_ns, side)


class RandomAdversary:
    """Carries out a ``Chaos`` with the schedule's random generator."""

    def __init__(self, rng: random.Random, chaos: Chaos, now_ns: Callable[[], int]) -> None:
        self.rng = rng
        self.chaos = chaos
        self.now_ns = now_ns
        self.partitions: list[Partition] = []  # drawn as the schedule runs (isolations after commits)

    @property
    def stable(self) -> bool:
        return self.now_ns() >= self.chaos.stable_at_ns

    def delivery_delays_ns(self, src: int, dst: int, message: Message) -> list[int]:
        rng = self.rng
        if self.stable:
            return [rng.randint(STABLE_MIN_DELAY_NS, STABLE_MAX_DELAY_NS)]
        if rng.random() < self.chaos.drop_p:
            return []
        delays = [rng.randint(STABLE_MIN_DELAY_NS // 10, self.chaos.max_delay_ns)]
        if (src, dst) in self.chaos.clogged:
            delays[0] *= CLOG_FACTOR
        if rng.random() < self.chaos.duplicate_p:
            delays.append(rng.randint(STABLE_MIN_DELAY_NS, 4 * self.chaos.max_delay_ns))
        return delays

    def link_up(self, src: int, dst: int) -> bool:
        now_ns = self.now_ns()
        if any(partition.cuts(now_ns, src, dst) for partition in self.partitions):
            return False
        return not any(partition.cuts(now_ns, src, dst) for partition in self.chaos.partitions)

    def node_committed(self, node: int) -> None:
        """Sometimes cut off a node that has just committed: its peers must finish the height without it."""
        now_ns = self.now_ns()
        if self.stable or self.rng.random() >= self.chaos.isolate_after_commit_p:
            return
        end_ns = min(now_ns + self.rng.randint(*ISOLATION_NS), self.chaos.stable_at_ns)
        self.partitions.append(Partition(now_ns, end_ns, frozenset((node,))))

    def timer_delay_ns(self, node: int, delay_s: float) -> int:
        asked_ns = round(delay_s * 1e9)
        if self.stable or self.rng.random() >= self.chaos.timer_skew_p:
            return asked_ns
        low, high = EARLY_FACTOR if self.rng.random() < 0.5 else LATE_FACTOR
        return round(asked_ns * self.rng.uniform(low, high))

    def reconnect_delay_ns(self) -> int:
        return self.rng.randint(RECONNECT_MIN_NS, RECONNECT_MAX_NS)


LinkRule = Callable[[int, int, int, Message], bool]  # (now_ns, src, dst, message) -> deliver?


class ScriptedAdversary:
    """A hand-written schedule: fixed delay, timers on time, and a rule that says which messages pass.

    With ``reconnect_ns`` a lost message breaks its link, which comes back that long after (retried
    while ``rule`` would still lose a message on it); without, a scripted loss is for good.
    """

    def __init__(self, rule: LinkRule, now_ns: Callable[[], int], delay_ns: int = 2 * NS_PER_MS, reconnect_ns: int | None = None) -> None:
        self.rule = rule
        self.now_ns = now_ns
        self.delay_ns = delay_ns
        self.reconnect_ns = reconnect_ns

    def delivery_delays_ns(self, src: int, dst: int, message: Message) -> list[int]:
        return [self.delay_ns] if self.rule(self.now_ns(), src, dst, message) else []

    def link_up(self, src: int, dst: int) -> bool:
        return self.reconnect_ns is None or self.rule(self.now_ns(), src, dst, Ping(0, 0))  # up if a PING would pass

    def timer_delay_ns(self, node: int, delay_s: float) -> int:
        return round(delay_s * 1e9)

    def reconnect_delay_ns(self) -> int | None:
        return self.reconnect_ns

    def node_committed(self, node: int) -> None:
        return None
