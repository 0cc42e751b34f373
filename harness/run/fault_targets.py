"""Who a planned fault hits, and which links a partition cuts: pure functions of the fault, n and a seed.

Targets (docs/faults.md): ``node:N``; ``leader`` (the leader most nodes named in the last status
sample); ``random:K`` and ``fraction:F`` (drawn from the run's seed and the fault's index, so a rerun
hits the same nodes); and for partitions ``halves``, ``minority`` (f nodes drawn as above, cut from the
rest), ``bridge`` (two halves that cannot reach each other, and node 0 reaching both). A partition of
any other target isolates the targeted nodes from the rest.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable

from harness.kinds import FaultKind
from harness.profile import Fault

Pair = tuple[int, int]


def resolve_nodes(fault: Fault, index: int, n: int, seed: int, leaders: Iterable[int] = ()) -> list[int]:
    """The nodes ``fault`` acts on (for a partition: the side it cuts off; see ``partition_sides``)."""
    kind, _, value = fault.target.partition(":")
    rng = random.Random(f"popbench-fault-{seed}-{index}")
    if kind == "node":
        return [int(value)]
    if kind == "random":
        return sorted(rng.sample(range(n), min(int(value), n)))
    if kind == "fraction":
        return sorted(rng.sample(range(n), max(1, min(n, round(float(value) * n)))))
    if fault.target == "leader":
        named = Counter(leaders).most_common(1)
        return [named[0][0]] if named else [0]
    if fault.target == "minority":
        return sorted(rng.sample(range(n), max(1, (n - 1) // 3)))
    if fault.target == "halves":
        return list(range(n // 2))
    if fault.target == "bridge":
        return list(range(1, 1 + (n - 1) // 2))
    raise ValueError(f"unknown target {fault.target!r}")  # the profile loader refuses these first


def partition_sides(fault: Fault, nodes: list[int], n: int) -> tuple[list[int], list[int]]:
    """The two sides no packet may cross between; a bridge node (node 0) is on neither."""
    if fault.target == "bridge":
        return nodes, [node for node in range(1, n) if node not in nodes]
    return nodes, [node for node in range(n) if node not in nodes]


def cut_pairs(side_a: Iterable[int], side_b: Iterable[int]) -> list[Pair]:
    return [(min(a, b), max(a, b)) for a, b in itertools.product(side_a, side_b) if a != b]


def cut_off_nodes(fault: Fault, nodes: list[int], n: int) -> list[int]:
    """The nodes whose links a fault takes down by plan (left out of the links figure while it lasts)."""
    if fault.kind == FaultKind.PARTITION:
        side_a, side_b = partition_sides(fault, nodes, n)
        return sorted(side_a if len(side_a) <= len(side_b) else side_b)
    if fault.kind in (FaultKind.KILL, FaultKind.PAUSE, FaultKind.WIPE):
        return nodes
    return []
