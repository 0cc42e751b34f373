"""The status line's PoW stale count is the report's (issue 17, item 2): blocks mined that are not on the
main chain, not the stale blocks one node happens to know (a node that already holds a block at a height
does not fetch a rival of equal work, so each node sees only some of the forks)."""

from __future__ import annotations

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
