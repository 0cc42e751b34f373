"""The STATUS a node reports: identity, chain head, consensus position, peers and exact counters.

The harness's collector, ``popbench status`` and the node's own status line all read this one dict;
its keys are listed in docs/protocol.md (STATUS).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from popbench import crypto

if TYPE_CHECKING:
    from popbench.pop.node import Node


def node_status(node: Node) -> dict[str, Any]:
    engine = node.engine
    ledger = node.ledger
    return {
        "node_id": node.node_id,
        "role": node.config.role.name.lower(),
        "pid": os.getpid(),
        "uptime_s": (time.time_ns() - node.started_ns) / 1e9,
        "height": ledger.height,
        "head_hash": ledger.head_hash.hex(),
        "view": engine.view,
        "leader": engine.leader(),
        "peers": len(node.peers.links),
        "peer_ids": sorted(node.peers.links),
        "clients": len(node.peers.clients),
        "mempool": len(node.mempool),
        "crypto_backend": crypto.backend_name(),
        "round_time_s": _summary(node.round_times_s),
        "last_commit_ns": node.commit_times_ns[-1] if node.commit_times_ns else 0,
        "proposals_refused": dict(engine.proposals_refused),
        "blocks_fetched": node.catchup.blocks_fetched,
        "sync_failures": node.catchup.sync_failures,
        "counters": node.counters.as_dict(),
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "sum": 0.0, "max": 0.0}
    return {"count": len(values), "sum": sum(values), "max": max(values)}
