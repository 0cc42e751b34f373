"""Who dials whom: full mesh, the 3-tier bootstrap hierarchy, random k-regular; and regions.

An edge (a, b) is always dialled by the higher id, matching the node's link rule. For the PoP network
on all-to-all votes every validator is linked to every other, so a topology decides how nodes *find*
each other (all addresses up front, or bootstrap tiers plus peer exchange), and the intended graph is the
full mesh. PoP on collector votes may instead run over a k-regular graph, the bounded mesh: floods over
its edges, direct links to collectors opened on demand (docs/protocol.md, section 15). The proof-of-work
network keeps exactly the topology's edges.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from popbench.errors import ConfigError

MAX_REGULAR_ATTEMPTS = 200
MAX_STUCK_PASSES = 20  # passes in a row that pair nothing: what is left cannot be paired


@dataclass(frozen=True)
class Topology:
    """Dial lists per node, whether nodes discover the rest by peer exchange, and the intended links."""

    kind: str
    dial: dict[int, list[int]]
    discover: bool
    intended: frozenset[frozenset[int]]
    tier: dict[int, int] = field(default_factory=dict)  # 0 primary, 1 bootstrap, 2 leaf (hierarchy)
    _adjacent: dict[int, set[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        adjacent: dict[int, set[int]] = {}
        for a, b in self.intended:
            adjacent.setdefault(a, set()).add(b)
            adjacent.setdefault(b, set()).add(a)
        object.__setattr__(self, "_adjacent", adjacent)

    def expected_links(self, node: int) -> int:
        return len(self._adjacent.get(node, ()))

    def neighbours(self, node: int) -> frozenset[int]:
        """The nodes ``node`` shares an intended link with."""
        return frozenset(self._adjacent.get(node, ()))

    def graph(self) -> dict[int, frozenset[int]]:
        """Every node's neighbours: what a node on a bounded mesh routes by (popbench/pop/routing.py)."""
        return {node: frozenset(peers) for node, peers in self._adjacent.items()}


def full_mesh_edges(n: int) -> frozenset[frozenset[int]]:
    return frozenset(frozenset((a, b)) for a in range(n) for b in range(a))


def full_mesh(n: int) -> Topology:
    dial = {node: list(range(node)) for node in range(n)}
    return Topology("full-mesh", dial, False, full_mesh_edges(n))


def hierarchy(n: int, bootstrap_nodes: int, full_mesh_goal: bool) -> Topology:
    """Node 0 is the primary; nodes 1..b the bootstrap tier dialling it; leaves spread beneath them."""
    b = max(1, min(bootstrap_nodes, n - 1)) if n > 1 else 0
    tier = {0: 0, **dict.fromkeys(range(1, b + 1), 1), **dict.fromkeys(range(b + 1, n), 2)}
    dial: dict[int, list[int]] = {0: []}
    for node in range(1, n):
        dial[node] = [0] if tier[node] == 1 else [1 + (node - b - 1) % b]
    tree = frozenset(frozenset((node, parent)) for node, parents in dial.items() for parent in parents)
    intended = full_mesh_edges(n) if full_mesh_goal else tree
    return Topology("hierarchy", dial, full_mesh_goal, intended, tier)


def k_regular(n: int, k: int, seed: int) -> Topology:
    """A random k-regular graph (pairing model, retried until simple); needs n*k even and k < n."""
    if k >= n or (n * k) % 2:
        raise ConfigError(f"no {k}-regular graph on {n} nodes (need k < n and n*k even)", key="network.degree")
    rng = random.Random(seed)
    for _ in range(MAX_REGULAR_ATTEMPTS):
        edges = _try_pairing(n, k, rng)
        if edges is not None:
            dial = {node: sorted(min(e) for e in edges if max(e) == node) for node in range(n)}
            return Topology("k-regular", dial, False, frozenset(edges))
    raise ConfigError(f"could not draw a simple {k}-regular graph on {n} nodes", key="network.degree")


def _try_pairing(n: int, k: int, rng: random.Random) -> set[frozenset[int]] | None:
    """Pair the k stubs of every node at random, keeping each suitable pair (two nodes, no edge yet) and
    pairing the rest again (Steger and Wormald's way: rejecting the whole pairing on any loop or double
    edge, as the plain pairing model does, almost never succeeds at k = 8); None when stuck."""
    stubs = [node for node in range(n) for _ in range(k)]
    edges: set[frozenset[int]] = set()
    stuck = 0
    while stubs and stuck < MAX_STUCK_PASSES:
        rng.shuffle(stubs)
        left: list[int] = []
        for a, b in zip(stubs[::2], stubs[1::2], strict=True):
            edge = frozenset((a, b))
            if a == b or edge in edges:
                left += (a, b)
            else:
                edges.add(edge)
        stuck = stuck + 1 if len(left) == len(stubs) else 0
        stubs = left
    return None if stubs else edges


def build(kind: str, n: int, consensus: str, degree: int = 4, bootstrap_nodes: int = 3, seed: int = 0) -> Topology:
    pbft = consensus == "pbft"
    if kind == "full-mesh":
        return full_mesh(n)
    if kind == "hierarchy":
        return hierarchy(n, bootstrap_nodes, full_mesh_goal=pbft)
    if kind == "k-regular":
        return k_regular(n, degree, seed)  # PBFT: a bounded mesh, collector votes only (harness/profile.py)
    raise ConfigError(f"unknown topology {kind!r}", key="network.topology")


def assign_regions(n: int, regions: list[str]) -> dict[int, str]:
    """Round-robin: node i lives in regions[i % len(regions)]."""
    return {node: regions[node % len(regions)] for node in range(n)} if regions else {}
