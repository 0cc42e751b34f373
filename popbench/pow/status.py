"""The STATUS of a PoW node: the shared fields plus a ``pow`` section (fields: docs/pow.md).

``view`` is always 0 and ``leader`` -1 (no leaders in proof of work); ``proposals_refused`` counts
refused blocks by reason; ``round_time_s`` summarises the intervals between confirmed blocks.

The builder reads what :class:`PowStatusSource` names and nothing else (the node imports this module,
never the reverse), and reading changes nothing: the hashes counter is taken from the miner for the
report, not written back into the node's counters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Protocol

import msgspec

from popbench.node_config import NodeConfig
from popbench.pow.chain import BlockTree
from popbench.wire.status import PowSection, PowStatus, SeriesTally, SharedStatusFields


class MinerTally(Protocol):
    """What the miner counted (popbench.pow.miner.Miner)."""

    @property
    def blocks_found(self) -> int: ...

    @property
    def hashes(self) -> int: ...

    @property
    def mining_s(self) -> float: ...

    @property
    def hash_rate(self) -> float: ...


class RelayTally(Protocol):
    """What the block relay counted (popbench.pow.relay.BlockRelay)."""

    @property
    def blocks_fetched(self) -> int: ...

    @property
    def chain_requests(self) -> int: ...


class PoolTally(Sized, Protocol):
    """The transfer pool: its size and how many transfers a reorg gave back (popbench.pow.pool.TransferPool)."""

    @property
    def returned(self) -> int: ...


class PowStatusSource(Protocol):
    """What the PoW status builder reads of its node (popbench.pow.node.PowNode)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def tree(self) -> BlockTree: ...

    @property
    def miner(self) -> MinerTally: ...

    @property
    def relay(self) -> RelayTally: ...

    @property
    def pool(self) -> PoolTally: ...

    @property
    def blocks_refused(self) -> Mapping[str, int]: ...

    @property
    def reorgs(self) -> int: ...

    @property
    def deepest_reorg(self) -> int: ...

    @property
    def confirmations(self) -> int: ...

    @property
    def confirmed_height(self) -> int: ...

    @property
    def confirmed_intervals(self) -> SeriesTally: ...

    def shared_status_fields(self) -> SharedStatusFields: ...


def pow_node_status(node: PowStatusSource) -> PowStatus:
    shared = node.shared_status_fields()
    shared["counters"] = msgspec.structs.replace(shared["counters"], hashes=node.miner.hashes)
    tip = node.tree.tip
    return PowStatus(
        **shared,
        height=tip.height, head_hash=tip.hash.hex(), view=0, leader=-1, mempool=len(node.pool),
        round_time_s=node.confirmed_intervals.summary(), proposals_refused=dict(node.blocks_refused),
        blocks_fetched=node.relay.blocks_fetched, sync_failures=0, pow=pow_section(node),
    )  # fmt: skip


def pow_section(node: PowStatusSource) -> PowSection:
    tree, miner, tip = node.tree, node.miner, node.tree.tip
    return PowSection(
        tip_hash=tip.hash.hex(), height=tip.height, total_work_hex=format(tip.total_work, "x"),
        total_work_log2=tip.total_work.bit_length() - 1 if tip.total_work else 0,
        work_bits=tip.block.work_bits, next_work_bits=tree.expected_bits(tip), mining=node.config.mine,
        blocks_mined=miner.blocks_found, hashes=miner.hashes, mining_s=miner.mining_s, hash_rate=miner.hash_rate,
        known_blocks=len(tree), stale_blocks=tree.stale_blocks, orphans=tree.orphans,
        reorgs=node.reorgs, deepest_reorg=node.deepest_reorg, mempool=len(node.pool),
        returned_to_mempool=node.pool.returned, confirmations=node.confirmations,
        confirmed_height=node.confirmed_height, chain_requests=node.relay.chain_requests,
    )  # fmt: skip
