"""The STATUS of a PoW node: the PoP node's frame shape plus a ``pow`` section (keys: docs/pow.md).

``view`` is always 0 and ``leader`` -1 (no leaders in proof of work); ``proposals_refused`` counts
refused blocks by reason; ``round_time_s`` summarises the intervals between confirmed blocks.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from popbench import crypto

if TYPE_CHECKING:
    from popbench.pow.node import PowNode


def pow_node_status(node: PowNode) -> dict[str, Any]:
    node.counters.hashes = node.miner.hashes
    tip = node.tree.tip
    return {
        "node_id": node.node_id,
        "role": node.config.role.name.lower(),
        "consensus": "pow",
        "pid": os.getpid(),
        "uptime_s": (time.time_ns() - node.started_ns) / 1e9,
        "height": tip.height,
        "head_hash": tip.hash.hex(),
        "view": 0,
        "leader": -1,
        "peers": len(node.peers.links),
        "peer_ids": sorted(node.peers.links),
        "clients": len(node.peers.clients),
        "mempool": len(node.pool),
        "crypto_backend": crypto.backend_name(),
        "round_time_s": _summary(node.confirmed_intervals_s),
        "last_commit_ns": node.commit_times_ns[-1] if node.commit_times_ns else 0,
        "proposals_refused": dict(node.blocks_refused),
        "blocks_fetched": node.relay.blocks_fetched,
        "sync_failures": 0,
        "counters": node.counters.as_dict(),
        "pow": pow_section(node),
    }


def pow_section(node: PowNode) -> dict[str, Any]:
    tree, miner, tip = node.tree, node.miner, node.tree.tip
    return {
        "tip_hash": tip.hash.hex(),
        "height": tip.height,
        "total_work_hex": format(tip.total_work, "x"),  # exact; may pass 64 bits, which JSON numbers do not hold
        "total_work_log2": tip.total_work.bit_length() - 1 if tip.total_work else 0,
        "work_bits": tip.block.work_bits,
        "next_work_bits": tree.expected_bits(tip),
        "mining": node.config.mine,
        "blocks_mined": miner.blocks_found,
        "hashes": miner.hashes,
        "mining_s": miner.mining_s,
        "hash_rate": miner.hash_rate,
        "known_blocks": len(tree),
        "stale_blocks": tree.stale_blocks,
        "orphans": tree.orphans,
        "reorgs": node.reorgs,
        "deepest_reorg": node.deepest_reorg,
        "mempool": len(node.pool),
        "returned_to_mempool": node.pool.returned,
        "confirmations": node.confirmations,
        "confirmed_height": node.confirmed_height,
        "chain_requests": node.relay.chain_requests,
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "sum": 0.0, "max": 0.0}
    return {"count": len(values), "sum": sum(values), "max": max(values)}
