"""The safety check: every node's committed chain, read from its own database after the run, agrees.

Two nodes that committed different blocks at the same height is a safety violation, and fails the run
whatever its score. Nodes may be at different heights (a crashed node stops early); only heights that
several nodes hold are compared. Proof-of-work nodes fork by design, so there the check is on the
confirmed part of every node's main chain: all but its last POW_CONFIRMATIONS blocks must agree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.metrics.pow_chains import StoredChain
from popbench.store import Store, node_database

POW_CONFIRMATIONS = 6  # blocks below a PoW tip that every node must agree on


@dataclass
class SafetyCheck:
    nodes_checked: int
    heights_checked: int
    agree: bool
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # height -> the distinct hashes seen
    heights: dict[int, int] = field(default_factory=dict)  # node id -> committed height on disk

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_safety(data_dir: Path, nodes: int) -> SafetyCheck:
    """PBFT: no two nodes' databases hold different blocks at one height."""
    by_height: dict[int, dict[bytes, list[int]]] = defaultdict(lambda: defaultdict(list))
    heights: dict[int, int] = {}
    for node_id in range(nodes):
        path = node_database(data_dir, node_id)
        if not path.exists():
            continue
        with Store(path) as store:
            chain = store.block_hashes()
        heights[node_id] = max((height for height, _ in chain), default=0)
        for height, block_hash in chain:
            by_height[height][block_hash].append(node_id)
    return _verdict(by_height, heights)


def check_pow_prefix(chains: dict[int, StoredChain]) -> SafetyCheck:
    """PoW: every node's main chain agrees below its last POW_CONFIRMATIONS blocks (the confirmed part)."""
    by_height: dict[int, dict[bytes, list[int]]] = defaultdict(lambda: defaultdict(list))
    mains = {node_id: chain.main_chain() for node_id, chain in chains.items()}
    heights = {node_id: len(main) - 1 for node_id, main in mains.items()}
    confirmed = min(heights.values(), default=0) - POW_CONFIRMATIONS
    for node_id, main in mains.items():
        for height, block_hash in enumerate(main[: max(0, confirmed + 1)]):
            by_height[height][block_hash].append(node_id)
    return _verdict(by_height, heights)


def _verdict(by_height: dict[int, dict[bytes, list[int]]], heights: dict[int, int]) -> SafetyCheck:
    conflicts = [{"height": height, "hashes": {h.hex(): ids for h, ids in hashes.items()}}
                 for height, hashes in sorted(by_height.items()) if len(hashes) > 1]  # fmt: skip
    return SafetyCheck(len(heights), len(by_height), not conflicts, conflicts[:10], heights)
