"""The safety check: every node's committed chain, read from its own database after the run, agrees.

Two nodes that committed different blocks at the same height is a safety violation, and fails the run
whatever its score. Nodes may be at different heights (a crashed node stops early); only heights that
several nodes hold are compared. Proof-of-work nodes are judged by their main chains' common prefix in
the PoW metrics instead, since forks there are expected and resolved by work.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from popbench.store import Store


@dataclass
class SafetyCheck:
    nodes_checked: int
    heights_checked: int
    agree: bool
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # height -> the distinct hashes seen
    heights: dict[int, int] = field(default_factory=dict)  # node id -> committed height on disk

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def node_database(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"node-{node_id}.sqlite"


def check_safety(data_dir: Path, nodes: int, consensus: str) -> SafetyCheck:
    by_height: dict[int, dict[bytes, list[int]]] = defaultdict(lambda: defaultdict(list))
    heights: dict[int, int] = {}
    for node_id in range(nodes):
        path = node_database(data_dir, node_id)
        if not path.exists():
            continue
        chain = _committed_chain(path, consensus)
        heights[node_id] = max((height for height, _ in chain), default=0)
        for height, block_hash in chain:
            by_height[height][block_hash].append(node_id)
    conflicts = [{"height": height, "hashes": {h.hex(): ids for h, ids in hashes.items()}}
                 for height, hashes in sorted(by_height.items()) if len(hashes) > 1]  # fmt: skip
    return SafetyCheck(len(heights), len(by_height), not conflicts, conflicts[:10], heights)


def _committed_chain(path: Path, consensus: str) -> list[tuple[int, bytes]]:
    with Store(path) as store:
        if consensus == "pow":
            return []  # PoW agreement is judged on the tips (metrics), not per height here
        return store.block_hashes()
