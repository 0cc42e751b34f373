"""The difficulty rule, as pure functions: every k blocks, move work bits toward the target interval.

At a retarget height h (a multiple of k whose window does not start at genesis, see
:func:`is_retarget_height`), the window is the k block intervals that end at the parent:
``actual_ms = timestamp(h - 1) - timestamp(h - 1 - k)``. The new bits are

    bits + clamp(round(log2(k * target_ms / actual_ms)), -MAX_STEP_BITS, +MAX_STEP_BITS), floor MIN_WORK_BITS

Blocks that came twice too fast add one bit (twice the expected hashes); twice too slow remove one.
Between retarget heights a block carries its parent's bits. The genesis block's timestamp is fixed at 0,
so windows never start there.
"""

from __future__ import annotations

import math

from popbench.pow.block import MAX_WORK_BITS

MAX_STEP_BITS = 2
MIN_WORK_BITS = 1


def is_retarget_height(height: int, interval_blocks: int) -> bool:
    """Whether the block at ``height`` gets new bits: a multiple of k whose window avoids genesis."""
    return height % interval_blocks == 0 and height - 1 - interval_blocks >= 1


def window_start_height(height: int, interval_blocks: int) -> int:
    """Height of the block whose timestamp opens the window of a retarget at ``height``."""
    return height - 1 - interval_blocks


def retarget_bits(bits: int, actual_ms: int, interval_blocks: int, target_interval_ms: int) -> int:
    """The bits after one retarget, given how long the last ``interval_blocks`` blocks really took."""
    expected_ms = interval_blocks * target_interval_ms
    step = round(math.log2(expected_ms / max(actual_ms, 1)))
    step = max(-MAX_STEP_BITS, min(MAX_STEP_BITS, step))
    return max(MIN_WORK_BITS, min(MAX_WORK_BITS, bits + step))


def next_work_bits(height: int, parent_bits: int, window_ms: int | None, interval_blocks: int, target_interval_ms: int) -> int:
    """Bits the block at ``height`` must carry; ``window_ms`` is the window's duration at a retarget height."""
    if not is_retarget_height(height, interval_blocks) or window_ms is None:
        return parent_bits
    return retarget_bits(parent_bits, window_ms, interval_blocks, target_interval_ms)
