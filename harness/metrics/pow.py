"""Proof-of-work metrics (docs/metrics.md, "Mining and proof-of-work"), from the nodes' own databases.

- propagation: for each block, the time from its miner first holding it until 50 %, 90 % and 100 % of
  the nodes that were up had it; p50 and p90 over blocks;
- stale rate: blocks mined that are not on the final heaviest main chain, over all blocks mined; beside
  it the first-order race prediction p / (1 + p), p = 1 - exp(-d / T): a fork happens when another
  miner finds a block before this one reaches it, so d is a block's mean delay to the other nodes
  (median over blocks) and T the mean interval between any two blocks mined; each fork adds one block
  off the chain, hence p / (1 + p) of all blocks mined;
- block interval: mean and standard deviation of the main chain's timestamp gaps, against the target;
- hash rate: every node's hashes over its grinding seconds; efficiency against the calibrated core;
- tips: how long after the window every node reported one tip (mining goes on, so the tips at the
  very stop may differ by a block in flight); deepest reorg any node saw.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import NamedTuple

from harness.metrics.results import BlockInterval, PowMining, Propagation, PropagationShare
from harness.run.pow_chains import StoredChain, heaviest_main_chain
from harness.stats import mean_and_stdev, percentile
from popbench.pow.block import PowBlock
from popbench.wire.status import AnyStatus, PowStatus

HALF, NINE_TENTHS, ALL = 0.5, 0.9, 1.0  # the shares of the nodes a block's propagation is timed to


def block_timelines(chains: dict[int, StoredChain]) -> dict[bytes, tuple[int, list[int]]]:
    """hash -> (miner node, sorted first-seen times across nodes)."""
    seen: dict[bytes, list[int]] = {}
    miner_of: dict[bytes, int] = {}
    for chain in chains.values():
        for block_hash, at_ns in chain.arrivals.items():
            seen.setdefault(block_hash, []).append(at_ns)
        for block_hash, (_, height, _, block) in chain.blocks.items():
            if height > 0:
                miner_of[block_hash] = block.miner
    return {h: (miner_of[h], sorted(times)) for h, times in seen.items() if h in miner_of}


def propagation(timelines: dict[bytes, tuple[int, list[int]]], nodes_up: int) -> Propagation:
    return Propagation(blocks=len(timelines), p50_nodes=_share_reached(timelines, math.ceil(HALF * nodes_up)),
                       p90_nodes=_share_reached(timelines, math.ceil(NINE_TENTHS * nodes_up)),
                       all_nodes=_share_reached(timelines, math.ceil(ALL * nodes_up)))  # fmt: skip


def _share_reached(timelines: dict[bytes, tuple[int, list[int]]], nodes_needed: int) -> PropagationShare:
    """Over the blocks that reached ``nodes_needed`` nodes: how long after their first sighting they did."""
    needed = max(1, nodes_needed)
    delays = sorted((times[needed - 1] - times[0]) / 1e6 for _miner, times in timelines.values() if len(times) >= needed)
    return PropagationShare(blocks_reached=len(delays), p50_ms=percentile(delays, 0.5), p90_ms=percentile(delays, 0.9),
                            mean_ms=sum(delays) / len(delays) if delays else None)  # fmt: skip


def interval(blocks: dict[bytes, PowBlock], main: list[bytes], target_s: float) -> BlockInterval:
    stamps = [blocks[h].timestamp_ms for h in main if h in blocks and blocks[h].height > 0]
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(stamps)]
    mean, stdev = mean_and_stdev(gaps)
    return BlockInterval(mean_s=mean, stdev_s=stdev, target_s=target_s, gaps=len(gaps))


def _blocks_by_hash(chains: dict[int, StoredChain]) -> dict[bytes, PowBlock]:
    return {h: entry[3] for chain in chains.values() for h, entry in chain.blocks.items()}


class HashRate(NamedTuple):
    """Every node's grinding, added up (the PoW mining section carries these fields flat)."""

    hashes: int
    grinding_s: float
    per_grinding_s: float
    per_miner: dict[int, float]
    efficiency: float | None


def hash_rate(finals: dict[int, AnyStatus], hashes_per_s_per_core: float) -> HashRate:
    sections = {n: s.pow for n, s in finals.items() if isinstance(s, PowStatus)}
    hashes = sum(p.hashes for p in sections.values())
    seconds = sum(p.mining_s for p in sections.values())
    per_node = {n: p.hash_rate for n, p in sections.items() if p.mining}
    rate = hashes / seconds if seconds else 0.0  # per grinding second, i.e. per busy core
    return HashRate(hashes, seconds, rate, per_node, rate / hashes_per_s_per_core if hashes_per_s_per_core else None)


def _predicted_stale(d_ms: float | None, t_s: float | None, miners: int) -> float | None:
    """p / (1 + p), p = 1 - exp(-d/T): the chance another miner finds a block while one travels to it, and
    the share of all blocks mined that such forks leave off the chain. With a single miner there is no
    other miner to race, so the prediction is 0.

    It was 1 - exp(-d/T) with d the median time to reach *every* node and T the main chain's interval,
    which overstated: 0.18-0.19 against 0.12-0.18 measured in three pow-antimony runs. A competing miner
    is one node, not the last one reached, and a fork's extra block is one of 1 + p blocks, not of 1."""
    if miners <= 1:
        return 0.0
    if d_ms is None or not t_s:
        return None
    p = 1 - math.exp(-(d_ms / 1000) / t_s)
    return p / (1 + p)


def mean_delay_to_others_ms(timelines: dict[bytes, tuple[int, list[int]]], nodes_up: int) -> float | None:
    """Median over the blocks that reached every node of a block's mean delay from its first sighting to
    each other node. The median keeps a stale block's late spread (fetched with a reorg) from dominating."""
    per_block = sorted(sum(t - times[0] for t in times[1:]) / (len(times) - 1) / 1e6
                       for _miner, times in timelines.values() if len(times) >= max(2, nodes_up))  # fmt: skip
    return percentile(per_block, 0.5)


def pow_metrics(chains: dict[int, StoredChain], finals: dict[int, AnyStatus], target_s: float,
                hashes_per_s_per_core: float, converged_after_s: float | None) -> PowMining:  # fmt: skip
    timelines = block_timelines(chains)
    main = heaviest_main_chain(chains)
    on_main = set(main)
    mined = list(timelines)
    stale = sum(1 for h in mined if h not in on_main)
    prop = propagation(timelines, len(chains))
    blocks = _blocks_by_hash(chains)
    spacing = interval(blocks, main, target_s)
    d_ms = mean_delay_to_others_ms(timelines, len(chains))
    t_s = spacing.mean_s * (len(main) - 1) / len(mined) if spacing.mean_s and mined and main else None  # any block, stale ones too
    sections = [s.pow for s in finals.values() if isinstance(s, PowStatus)]
    tips = {p.tip_hash for p in sections}
    won = Counter(blocks[h].miner for h in main if h in blocks and blocks[h].height > 0)
    won_or_mining = {n for n, s in finals.items() if isinstance(s, PowStatus) and s.pow.mining} | set(won)
    rate = hash_rate(finals, hashes_per_s_per_core)
    return PowMining(
        hashes=rate.hashes, grinding_s=rate.grinding_s, hash_rate_per_grinding_s=rate.per_grinding_s,
        hash_rate_per_miner=rate.per_miner, hash_efficiency=rate.efficiency,
        blocks_mined=len(mined), main_chain_height=len(main) - 1 if main else 0,
        stale_blocks=stale, stale_rate=stale / len(mined) if mined else None,
        stale_rate_predicted=_predicted_stale(d_ms, t_s, len(won_or_mining)),
        propagation=prop, block_interval=spacing,
        blocks_won_per_miner=dict(sorted(won.items())),
        deepest_reorg=max((p.deepest_reorg for p in sections), default=0),
        reorgs_total=sum(p.reorgs for p in sections),
        distinct_tips_at_stop=len(tips), tips_converged_after_window_s=converged_after_s,
    )  # fmt: skip
