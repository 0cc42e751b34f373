"""The status line's PoW stale count is the report's (issue 17, item 2): blocks mined that are not on the
main chain, not the stale blocks one node happens to know (a node that already holds a block at a height
does not fetch a rival of equal work, so each node sees only some of the forks); and the stale rate the
report predicts beside it."""

from __future__ import annotations

import math

import pytest

from harness.metrics.pow import _predicted_stale, mean_delay_to_others_ms
from harness.observe.progress import stale_mined
from popbench.wire.status import PowSection


def section(height: int, work: int, mined: int, known_stale: int) -> PowSection:
    return PowSection(
        tip_hash=f"{height:064x}", height=height, total_work_hex=format(work, "x"), total_work_log2=work.bit_length() - 1,
        work_bits=16, next_work_bits=16, mining=True, blocks_mined=mined, hashes=0, mining_s=0.0, hash_rate=0.0,
        known_blocks=height + 1 + known_stale, stale_blocks=known_stale, orphans=0, reorgs=0, deepest_reorg=0,
        mempool=0, returned_to_mempool=0, confirmations=6, confirmed_height=0, chain_requests=0,
    )  # fmt: skip


def test_stale_counts_every_mined_block_off_the_heaviest_chain() -> None:
    # 9 blocks mined, the heaviest chain is 6 high: 3 are stale, though no node knows more than 1 of them.
    # Node 2 still sits on a lighter tip (its rival at height 6 lost): the heaviest tip decides, not the tallest.
    sections = [section(6, 6 << 16, 4, 1), section(6, 6 << 16, 3, 1), section(6, (5 << 16) + 1, 2, 1)]
    assert stale_mined(sections) == 3
    assert max(s.stale_blocks for s in sections) == 1  # what the line showed before


def test_no_stale_blocks_when_every_mined_block_is_on_the_chain() -> None:
    sections = [section(5, 5 << 16, 3, 0), section(4, 4 << 16, 2, 0)]  # node 1 has not yet heard of block 5
    assert stale_mined(sections) == 0


def test_the_predicted_stale_rate_races_one_node_and_counts_a_fork_once_among_all_blocks() -> None:
    """Each block reaches the other two nodes 100 and 300 ms after it was first seen: its mean delay to a
    competing miner is 200 ms, not the 300 ms to the last node; at 2 s between blocks p = 1 - e^-0.1, and
    a fork's extra block is one of 1 + p blocks mined."""
    timelines = {bytes([i]) * 32: (i % 3, [i * 10**9, i * 10**9 + 100_000_000, i * 10**9 + 300_000_000]) for i in range(1, 6)}
    timelines[b"\xff" * 32] = (0, [0, 5_000_000_000])  # reached two nodes only: left out of d
    assert mean_delay_to_others_ms(timelines, 3) == pytest.approx(200.0)
    p = 1 - math.exp(-0.1)
    assert _predicted_stale(200.0, 2.0, 3) == pytest.approx(p / (1 + p))
    assert _predicted_stale(200.0, 2.0, 1) == 0.0  # nobody to race
    assert _predicted_stale(None, 2.0, 3) is None
